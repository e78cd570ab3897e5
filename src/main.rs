//! `strait`: parse arguments, load and validate the configuration (printing every problem and exiting
//! non-zero before any socket is bound), then run until SIGTERM/SIGINT and drain.

#![forbid(unsafe_code)]

use std::io::{Result, Write};
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
    ///
    /// A second SIGTERM or SIGINT during the drain exits at once; SIGHUP, SIGUSR1 and SIGUSR2 are
    /// logged and ignored. Exit codes: 0 drained cleanly, 1 could not start, 2 configuration error,
    /// 3 grace period over (calls left were ended with UNAVAILABLE), 4 second signal.
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
/// translating listener, how many methods have messages to edit. Output may go to a pipe that
/// closes early (`| head`): that ends the output quietly, it is no error of the check.
fn check(path: &std::path::Path, config: &Config) -> ExitCode {
    finish(write_check(&mut std::io::stdout().lock(), path, config))
}

fn write_check(out: &mut impl Write, path: &std::path::Path, config: &Config) -> Result<ExitCode> {
    writeln!(out, "{}: OK", path.display())?;
    // Valid, but a certificate out of its dates (or nearly) is refused by peers: say so loudly.
    let now = strait::transport::validity::now();
    for (key, warning) in config.certificate_warnings(now) {
        eprintln!("{}: warning: {key}: {warning}", path.display());
    }
    for upstream in &config.upstreams {
        let tls = if upstream.tls.is_some() {
            "TLS"
        } else {
            "plaintext"
        };
        writeln!(
            out,
            "  upstream {:?} -> {} ({tls}, {} connection(s){})",
            upstream.name,
            upstream.address,
            upstream.connections,
            if upstream.gate_readiness {
                ", gates readiness"
            } else {
                ""
            }
        )?;
    }
    let descriptors = match strait::descriptor_set::Descriptors::embedded_or_load(
        config.descriptors.file.as_deref(),
    ) {
        Ok(descriptors) => descriptors,
        Err(err) => {
            eprintln!("{}: descriptors: {err}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let mut plans = strait::rewrite::PlanCache::default();
    for listener in &config.listeners {
        let tls = match &listener.tls {
            Some(t) if t.client_ca.is_some() => "TLS, client certificates required",
            Some(_) => "TLS",
            None => "h2c",
        };
        writeln!(
            out,
            "  listener {:?} on {} ({tls}) -> upstream {:?}",
            listener.name, listener.listen, listener.upstream
        )?;
        if let Some(tls) = &listener.tls {
            match strait::transport::validity::expiry(&tls.cert) {
                Ok(date) => writeln!(out, "    certificate valid until {date}")?,
                Err(err) => writeln!(out, "    certificate: {err}")?,
            }
        }
        let Some(rewriter) =
            strait::rewrite::Rewriter::new(&listener.translate, descriptors.pool(), &mut plans)
        else {
            writeln!(out, "    pass-through: no translation")?;
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
        writeln!(
            out,
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
        )?;
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
            strait::config::RemoteSideConfig::MuxServer { listen, tls, .. } => format!(
                "mux-server: accepts sessions on {listen}{}",
                if tls.is_some() { " (mutual TLS)" } else { "" }
            ),
        };
        writeln!(
            out,
            "  cluster connection {:?}: local cluster dials {}, frontend {}; remote {remote}",
            connection.name, connection.local.listen, connection.local.upstream
        )?;
        if let Some(acl) = &connection.acl {
            let namespaces = match &acl.allowed_namespaces {
                Some(names) => format!("namespaces {names:?}"),
                None => "every namespace".to_owned(),
            };
            writeln!(
                out,
                "    acl: methods {:?}, {namespaces}, for calls from the remote{}",
                acl.allowed_methods,
                if acl.apply_to_local {
                    " and the local cluster"
                } else {
                    ""
                }
            )?;
        }
        let gated: Vec<&str> = [
            (connection.local.gate_readiness, "local"),
            (connection.remote.gates_readiness(), "remote"),
        ]
        .into_iter()
        .filter_map(|(gates, side)| gates.then_some(side))
        .collect();
        if !gated.is_empty() {
            writeln!(
                out,
                "    gates readiness on its {} side",
                gated.join(" and ")
            )?;
        }
        if let Some(address) = &connection.local.advertised_address {
            writeln!(
                out,
                "    advertises {address} in AddOrUpdateRemoteCluster calls from the remote"
            )?;
        }
    }
    writeln!(out, "  admin on {}", config.admin.listen)?;
    writeln!(out, "  {}", descriptors.summary())?;
    Ok(ExitCode::SUCCESS)
}

fn descriptors(command: DescriptorsCommand) -> ExitCode {
    use strait::descriptor_set::{self, Descriptors, Origin};
    match command {
        DescriptorsCommand::Show { file, fields } => {
            match Descriptors::embedded_or_load(file.as_deref()) {
                Ok(set) => finish(show(&mut std::io::stdout().lock(), &set, fields)),
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
                    let mut out = std::io::stdout().lock();
                    finish(
                        writeln!(
                            out,
                            "dumped from {address} over {} (server version {})\n{}",
                            dump.protocol.trim_start_matches('/'),
                            dump.server_version.as_deref().unwrap_or("unknown"),
                            set.summary()
                        )
                        .map(|()| ExitCode::SUCCESS),
                    )
                }
                Err(err) => {
                    eprintln!("descriptors dump from {address}: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints a descriptor set's summary and, with `fields`, how each field is handled.
fn show(
    out: &mut impl Write,
    set: &strait::descriptor_set::Descriptors,
    fields: bool,
) -> Result<ExitCode> {
    writeln!(out, "{}", set.summary())?;
    if fields {
        let classification = strait::rewrite::plan::classify(set.pool());
        for (message, field, kind) in &classification.edited {
            writeln!(out, "edit   {message}.{field}: {kind:?}")?;
        }
        for (message, field, reason) in &classification.left_alone {
            writeln!(out, "leave  {message}.{field}: {reason}")?;
        }
        for (message, field) in &classification.unclassified {
            writeln!(out, "UNCLASSIFIED {message}.{field}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit code of a command whose output went to stdout. A reader that went away (`| head`)
/// only ends the output: `println!` would panic on that broken pipe.
fn finish(written: Result<ExitCode>) -> ExitCode {
    match written.and_then(|code| std::io::stdout().flush().map(|()| code)) {
        Ok(code) => code,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cannot write the output: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `strait run` exit codes besides 0 (drained cleanly), 1 (could not start: a port in use, …) and
/// 2 (configuration error).
const EXIT_GRACE_EXPIRED: u8 = 3;
const EXIT_SECOND_SIGNAL: u8 = 4;

fn run(config: Config) -> ExitCode {
    strait::telemetry::init(&config.log.level, config.log.format.into());
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
    let (code, at_once) = runtime.block_on(async {
        // Before anything binds: from here on, no signal kills the process unannounced.
        let mut signals = match strait::signals::Signals::install() {
            Ok(signals) => signals,
            Err(err) => {
                eprintln!("cannot install signal handlers: {err}");
                return (ExitCode::FAILURE, false);
            }
        };
        let running = match strait::start(&config).await {
            Ok(running) => running,
            Err(err) => {
                tracing::error!(error = %err, "cannot start");
                eprintln!("cannot start: {err}");
                return (ExitCode::FAILURE, false);
            }
        };
        let first = signals.stop().await;
        tracing::info!(
            grace = ?config.shutdown.grace,
            "{first} received; draining (a second SIGTERM or SIGINT exits at once)"
        );
        tokio::select! {
            drained = running.shutdown() => {
                (if drained { ExitCode::SUCCESS } else { ExitCode::from(EXIT_GRACE_EXPIRED) }, false)
            }
            second = signals.stop() => {
                tracing::warn!(
                    exit_code = EXIT_SECOND_SIGNAL,
                    "second signal ({second}) during the drain; exiting at once, calls in flight are cut"
                );
                (ExitCode::from(EXIT_SECOND_SIGNAL), true)
            }
        }
    });
    if at_once {
        // Do not wait for tasks (or blocking threads) to notice.
        runtime.shutdown_background();
    } else {
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    }
    code
}
