//! The committed descriptor set (`descriptors/temporal.binpb` and `.version`) must be exactly what
//! `scripts/update-descriptors.sh` would produce now: a fresh dump from the pinned real Temporal
//! server through `strait::reflection`, compared byte for byte. And a dump must be deterministic.
//!
//! Needs the test venv: run `scripts/setup-test-env.sh` first. Each test starts its own dev server on
//! free 127.0.0.1 ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use prost_reflect::DescriptorPool;
use strait::descriptor_set;
use strait::reflection::{self, Dump, Options, REFLECTION_V1ALPHA, SERVICES, SYMBOLS};
use strait_test_support::temporal::{repo_root, DevServer, DevServerOpts};

fn dump(address: &str, options: &Options) -> Dump {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let dump = runtime
        .block_on(reflection::dump(address, &SYMBOLS, options))
        .unwrap_or_else(|e| panic!("dump from {address}: {e}"));
    eprintln!(
        "dumped {} files from {address} in {:?} over {}",
        dump.files.len(),
        start.elapsed(),
        dump.protocol
    );
    dump
}

/// Most added/removed names a drift report lists.
const MAX_LISTED: usize = 40;

/// `google.protobuf.FileDescriptorSet` with its files left serialized.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// The files of a serialized set, by name, as serialized.
fn files_of(set: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, prost::DecodeError> {
    let raw: RawSet = prost::Message::decode(set)?;
    raw.file
        .into_iter()
        .map(|bytes| {
            let file: prost_reflect::prost_types::FileDescriptorProto =
                prost::Message::decode(bytes.as_slice())?;
            Ok((file.name().to_owned(), bytes))
        })
        .collect()
}

/// What differs between two sets: files added, removed or changed, and the message, enum, service
/// and method names added or removed.
fn describe_drift(committed: &[u8], fresh: &[u8]) -> String {
    let mut out = String::new();
    let (old_files, new_files) = match (files_of(committed), files_of(fresh)) {
        (Ok(old), Ok(new)) => (old, new),
        (old, new) => {
            return format!(
                "  undecodable set: committed {:?}, fresh {:?}\n",
                old.err(),
                new.err()
            )
        }
    };
    for (name, bytes) in &new_files {
        match old_files.get(name) {
            None => {
                let _ = writeln!(out, "  + file {name}");
            }
            Some(old) if old != bytes => {
                let _ = writeln!(
                    out,
                    "  ~ file {name} ({} -> {} bytes)",
                    old.len(),
                    bytes.len()
                );
            }
            Some(_) => {}
        }
    }
    for name in old_files.keys().filter(|n| !new_files.contains_key(*n)) {
        let _ = writeln!(out, "  - file {name}");
    }
    // (rank, description): services first, then methods, messages, enums.
    let symbols = |bytes: &[u8]| -> BTreeSet<(u8, String)> {
        let Ok(pool) = DescriptorPool::decode(bytes) else {
            return BTreeSet::new();
        };
        let mut names = BTreeSet::new();
        for service in pool.services() {
            names.insert((0, format!("service {}", service.full_name())));
            names.extend(
                service
                    .methods()
                    .map(|m| (1, format!("method {}", m.full_name()))),
            );
        }
        names.extend(
            pool.all_messages()
                .map(|m| (2, format!("message {}", m.full_name()))),
        );
        names.extend(
            pool.all_enums()
                .map(|e| (3, format!("enum {}", e.full_name()))),
        );
        names
    };
    let (old, new) = (symbols(committed), symbols(fresh));
    let changes: Vec<String> = new
        .difference(&old)
        .map(|(_, name)| format!("  + {name}"))
        .chain(old.difference(&new).map(|(_, name)| format!("  - {name}")))
        .collect();
    for line in changes.iter().take(MAX_LISTED) {
        let _ = writeln!(out, "{line}");
    }
    if changes.len() > MAX_LISTED {
        let _ = writeln!(out, "  ... and {} more", changes.len() - MAX_LISTED);
    }
    if out.is_empty() {
        let _ = writeln!(
            out,
            "  the same files with the same contents, in another order ({} bytes committed, {} fresh)",
            committed.len(),
            fresh.len()
        );
    }
    out
}

#[test]
fn committed_descriptor_set_matches_a_fresh_dump() {
    let server = DevServer::start(&DevServerOpts::default());
    let fresh = dump(&server.address(), &Options::default());
    let fresh_bytes = fresh.encode();

    let committed = std::fs::read(repo_root().join("descriptors/temporal.binpb")).unwrap();
    // The binary embeds the same file.
    assert_eq!(descriptor_set::EMBEDDED, committed.as_slice());
    assert!(
        fresh_bytes == committed,
        "descriptors/temporal.binpb differs from a fresh dump of the pinned Temporal server; \
         run scripts/update-descriptors.sh and commit the result.\n{}",
        describe_drift(&committed, &fresh_bytes)
    );

    let version =
        std::fs::read_to_string(repo_root().join("descriptors/temporal.version")).unwrap();
    assert_eq!(
        Some(version.trim()),
        fresh.server_version.as_deref(),
        "descriptors/temporal.version differs from the server's version; \
         run scripts/update-descriptors.sh and commit the result"
    );
    assert_eq!(
        descriptor_set::Descriptors::embedded().unwrap().version(),
        fresh.server_version.as_deref()
    );
}

#[test]
fn dumps_are_deterministic_and_protocol_independent() {
    let server = DevServer::start(&DevServerOpts::default());
    let address = server.address();
    let first = dump(&address, &Options::default());
    let second = dump(&address, &Options::default());
    assert!(
        first.encode() == second.encode(),
        "two dumps of one server differ:\n{}",
        describe_drift(&first.encode(), &second.encode())
    );
    // Each file once, every import before its importer.
    let mut seen = BTreeSet::new();
    let pool = DescriptorPool::decode(first.encode().as_slice()).unwrap();
    for (name, _) in &first.files {
        let file = pool.get_file_by_name(name).unwrap();
        for dep in file.dependencies() {
            assert!(
                seen.contains(dep.name()),
                "{name} comes before {}",
                dep.name()
            );
        }
        assert!(seen.insert(name.clone()), "{name} twice");
    }
    for service in SERVICES {
        assert!(first.exposed_services.iter().any(|s| s == service));
    }

    // The v1alpha protocol yields the same set, and a server without the first protocol tried
    // (here: a made-up one, answered UNIMPLEMENTED) falls back to the next.
    let fallback = Options {
        protocols: vec![
            "/grpc.reflection.v0.ServerReflection/ServerReflectionInfo",
            REFLECTION_V1ALPHA,
        ],
        ..Options::default()
    };
    let alpha = dump(&address, &fallback);
    assert_eq!(alpha.protocol, REFLECTION_V1ALPHA);
    assert!(alpha.encode() == first.encode(), "v1alpha dump differs");

    // A service the server does not have is a clear error, not a partial set.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(reflection::dump(
            &address,
            &["temporal.api.nosuchservice.v1.NoSuchService"],
            &Options {
                timeout: Duration::from_secs(30),
                ..Options::default()
            },
        ))
        .unwrap_err();
    assert!(
        matches!(err, reflection::ReflectionError::NotExposed { .. }),
        "{err}"
    );
}

#[test]
fn drift_report_names_what_changed() {
    let committed = descriptor_set::EMBEDDED;
    let mut raw: RawSet = prost::Message::decode(committed).unwrap();
    // The last file imports others but is imported by none: drop it.
    let dropped = raw.file.pop().unwrap();
    let dropped: prost_reflect::prost_types::FileDescriptorProto =
        prost::Message::decode(dropped.as_slice()).unwrap();
    let fewer = prost::Message::encode_to_vec(&raw);
    let report = describe_drift(committed, &fewer);
    assert!(
        report.contains(&format!("  - file {}\n", dropped.name())),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "  - service {}.{}\n",
            dropped.package(),
            dropped.service[0].name()
        )),
        "{report}"
    );
    assert!(report.contains(" more\n"), "{report}");
    let report = describe_drift(&fewer, committed);
    assert!(
        report.contains(&format!("  + file {}\n", dropped.name())),
        "{report}"
    );
    raw.file.reverse();
    let report = describe_drift(&fewer, &prost::Message::encode_to_vec(&raw));
    assert!(report.contains("another order"), "{report}");
}
