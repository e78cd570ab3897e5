//! # strait-test-support: the helpers Strait's tests, benches and examples share
//!
//! A workspace crate (`publish = false`) so that each test binary links the helpers it uses instead
//! of compiling its own copy of every file (what `#[path]` includes did, with `dead_code` allowed
//! everywhere). It drives Strait from the outside only: the binary, its configs and the wire.
//!
//! ## Layout
//! - `backend`, `client`: an in-process HTTP/2 gRPC backend (behaviour chosen by method name, records
//!   what crossed the proxy) and a minimal gRPC client, for the focused relay tests.
//! - `h2raw`: raw HTTP/2 frames, hand-built and read back, for protocol-level attacks and scripted
//!   upstreams.
//! - `fault_relay`: a TCP relay that can cut, sever and restore its connections (link faults).
//! - `temporal`: a real Temporal dev server, a Strait process in front of it, the `temporal` CLI and
//!   the venv's Python with deadlines, `/metrics` parsing.
//! - `json`: reading the CLI's and the scripts' JSON output (serde_json), payload text.
//! - `testbed`: two patched dev servers that replicate (clusters `active` and `standby`).
//! - `s2s`: a Strait pair configured from the shipped `config/s2s-*` files, for the test bed.
//! - `bench`: the benches' echo backend process, load generators, peer proxies, `/proc` sampling.
//!
//! Helpers fail the calling test by panicking, as test code does.

#![forbid(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod client;
pub mod fault_relay;
pub mod h2raw;
pub mod json;
pub mod s2s;
pub mod temporal;
pub mod testbed;
