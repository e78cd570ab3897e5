//! `strait`: parse arguments, load and validate the configuration (printing every problem and exiting
//! non-zero before any socket is bound), then run until SIGTERM/SIGINT and drain.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strait::config::Config;

/// Strait relays gRPC calls between Temporal clients, workers and servers at the HTTP/2 frame level.
/// It needs no generated stubs: any method, known or new, is relayed by its path, and every message
/// byte it does not have to change is copied verbatim.
#[derive(Parser)]
#[command(name = "strait", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM or SIGINT, then drain in-flight calls and exit.
    Run {
        /// Path of the TOML configuration (see config/relay.toml for a commented example).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration: print every problem with its key and exit non-zero; binds nothing.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Temporal descriptor sets: dump one from a server over gRPC reflection, or show what one holds.
    Descriptors {
        #[command(subcommand)]
        command: DescriptorsCommand,
    },
}

#[derive(Subcommand)]
enum DescriptorsCommand {
    /// Dump a descriptor set from a Temporal frontend over gRPC server reflection.
    ///
    /// Asks for WorkflowService, OperatorService and AdminService and everything they import, over
    /// plaintext HTTP/2, and writes FILE (canonical order: two dumps of one server are identical)
    /// and, when the version is known, FILE with the extension .version.
    Dump {
        /// The Temporal frontend's gRPC address.
        #[arg(long, value_name = "HOST:PORT")]
        address: String,
        /// Where to write the FileDescriptorSet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Record this Temporal version instead of the one the server reports in GetSystemInfo.
        #[arg(long, value_name = "VERSION")]
        temporal_version: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
    },
    /// Print what a descriptor set holds: services, method counts, Temporal version.
    Show {
        /// A descriptor set file (default: the one embedded in this binary).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Also list how every field that names a namespace, search attribute or query is handled:
        /// edited (and as what), descended into, or deliberately left alone (with the reason).
        #[arg(long)]
        fields: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(loaded) => check(&config, &loaded),
            Err(err) => {
                eprintln!("{}: {err}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let loaded = match Config::load(&config) {
                Ok(loaded) => loaded,
                Err(err) => {
                    eprintln!("{}: {err}", config.display());
                    return ExitCode::from(2);
                }
            };
            run(loaded)
        }
        Command::Descriptors { command } => descriptors(command),
    }
}

/// Prints what a valid configuration will run: upstreams, listeners, the descriptor set and, for each
/// translating listener, how many methods have messages to edit.
fn check(path: &std::path::Path, config: &Config) -> ExitCode {
    println!("{}: OK", path.display());
    for upstream in &config.upstreams {
        let tls = if upstream.tls.is_some() {
            "TLS"
        } else {
            "plaintext"
        };
        println!(
            "  upstream {:?} -> {} ({tls}, {} connection(s))",
            upstream.name, upstream.address, upstream.connections
        );
    }
    let descriptors = match strait::descriptor_set::Descriptors::embedded_or_load(
        config.descriptors.file.as_deref(),
    ) {
        Ok(descriptors) => descriptors,
        Err(err) => {
            eprintln!("{}: descriptors: {err}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut plans = strait::rewrite::PlanCache::default();
    for listener in &config.listeners {
        let tls = match &listener.tls {
            Some(t) if t.client_ca.is_some() => "TLS, client certificates required",
            Some(_) => "TLS",
            None => "h2c",
        };
        println!(
            "  listener {:?} on {} ({tls}) -> upstream {:?}",
            listener.name, listener.listen, listener.upstream
        );
        let Some(rewriter) =
            strait::rewrite::Rewriter::new(&listener.translate, descriptors.pool(), &mut plans)
        else {
            println!("    pass-through: no translation");
            continue;
        };
        let translate = &listener.translate;
        let (mut requests, mut responses, mut methods) = (0, 0, 0);
        for service in descriptors.pool().services() {
            for method in service.methods() {
                methods += 1;
                let (request, response) =
                    rewriter.method(&format!("/{}/{}", service.full_name(), method.name()));
                requests += usize::from(request.is_some());
                responses += usize::from(response.is_some());
            }
        }
        println!(
            "    translates {} namespace(s), search attributes for {} namespace(s), UTF-8 repair {}, \
             upstream-side names {}; edits requests of {requests} and responses of {responses} of \
             {methods} methods",
            translate.namespaces.len(),
            translate.search_attributes.len(),
            if translate.repair_utf8 { "on" } else { "off" },
            if translate.expose_upstream_names == Some(true) {
                "exposed"
            } else {
                "hidden"
            },
        );
    }
    for connection in &config.cluster_connections {
        let remote = match &connection.remote {
            strait::config::RemoteSideConfig::Tcp {
                listen, address, ..
            } => {
                format!("tcp: accepts on {listen}, calls go to {address}")
            }
            strait::config::RemoteSideConfig::MuxClient {
                address,
                sessions,
                tls,
                ..
            } => format!(
                "mux-client: {sessions} session(s) to {address}{}",
                if tls.is_some() { " over TLS" } else { "" }
            ),
            strait::config::RemoteSideConfig::MuxServer { listen, tls } => format!(
                "mux-server: accepts sessions on {listen}{}",
                if tls.is_some() { " (mutual TLS)" } else { "" }
            ),
        };
        println!(
            "  cluster connection {:?}: local cluster dials {}, frontend {}; remote {remote}",
            connection.name, connection.local.listen, connection.local.upstream
        );
        if let Some(acl) = &connection.acl {
            let namespaces = match &acl.allowed_namespaces {
                Some(names) => format!("namespaces {names:?}"),
                None => "every namespace".to_owned(),
            };
            println!(
                "    acl: methods {:?}, {namespaces}, for calls from the remote{}",
                acl.allowed_methods,
                if acl.apply_to_local {
                    " and the local cluster"
                } else {
                    ""
                }
            );
        }
        if let Some(address) = &connection.local.advertised_address {
            println!("    advertises {address} in AddOrUpdateRemoteCluster calls from the remote");
        }
    }
    println!("  admin on {}", config.admin.listen);
    println!("  {}", descriptors.summary());
    ExitCode::SUCCESS
}

fn descriptors(command: DescriptorsCommand) -> ExitCode {
    use strait::descriptor_set::{self, Descriptors, Origin};
    match command {
        DescriptorsCommand::Show { file, fields } => {
            match Descriptors::embedded_or_load(file.as_deref()) {
                Ok(set) => {
                    println!("{}", set.summary());
                    if fields {
                        let classification = strait::rewrite::plan::classify(set.pool());
                        for (message, field, kind) in &classification.edited {
                            println!("edit   {message}.{field}: {kind:?}");
                        }
                        for (message, field, reason) in &classification.left_alone {
                            println!("leave  {message}.{field}: {reason}");
                        }
                        for (message, field) in &classification.unclassified {
                            println!("UNCLASSIFIED {message}.{field}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("{err}");
                    ExitCode::from(2)
                }
            }
        }
        DescriptorsCommand::Dump {
            address,
            out,
            temporal_version,
            timeout,
        } => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let options = strait::reflection::Options {
                timeout: std::time::Duration::from_secs(timeout),
                ..Default::default()
            };
            let dump = match runtime.block_on(strait::reflection::dump(
                &address,
                &strait::reflection::SYMBOLS,
                &options,
            )) {
                Ok(dump) => dump,
                Err(err) => {
                    eprintln!("descriptors dump from {address}: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let version = temporal_version.or_else(|| dump.server_version.clone());
            let bytes = dump.encode();
            let written =
                Descriptors::from_bytes(&bytes, version.clone(), Origin::File(out.clone()))
                    .and_then(|set| {
                        descriptor_set::write(&out, &bytes, version.as_deref())?;
                        Ok(set)
                    });
            match written {
                Ok(set) => {
                    println!(
                        "dumped from {address} over {} (server version {})",
                        dump.protocol.trim_start_matches('/'),
                        dump.server_version.as_deref().unwrap_or("unknown")
                    );
                    println!("{}", set.summary());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("descriptors dump from {address}: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: Config) -> ExitCode {
    strait::telemetry::init(&config.log);
    // One worker: the current-thread scheduler. No work stealing, no cross-thread wake-ups, and the
    // thread that accepts also relays (the multi-thread runtime would keep a second, mostly idle
    // thread for `block_on`).
    let mut builder = if config.runtime.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if config.runtime.worker_threads > 1 {
        builder.worker_threads(config.runtime.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let running = match strait::start(&config).await {
            Ok(running) => running,
            Err(err) => {
                tracing::error!(error = %err, "cannot start");
                eprintln!("cannot start: {err}");
                return ExitCode::FAILURE;
            }
        };
        strait::shutdown_signal().await;
        if running.shutdown().await {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        }
    })
}
