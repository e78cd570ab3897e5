//! A gRPC server-reflection client, used to dump the Temporal descriptor set (`descriptors/`) from a
//! real server.
//!
//! It speaks plain HTTP/2 (h2c) through Strait's gRPC client (`grpc::client`), and
//! decodes the few reflection messages with hand-written prost structs: no generated stubs, like the
//! rest of Strait. One bidirectional `ServerReflectionInfo` stream carries every request, one at a
//! time: `list_services`, then `file_containing_symbol` for each wanted service, then
//! `file_by_filename` for every import not yet received, until the set is closed under imports.
//! `grpc.reflection.v1` is tried first and `grpc.reflection.v1alpha` if the server answers
//! UNIMPLEMENTED.
//!
//! Each file is kept exactly as the server serialized it (never decoded and re-encoded, so options
//! and extensions that `prost_types` does not model survive), and the set is written in a canonical
//! order: dependencies before dependants, ties broken by file name, each file once. Two dumps of the
//! same server are therefore byte-identical. The output is a `google.protobuf.FileDescriptorSet` on
//! the wire (field 1, repeated `FileDescriptorProto`).
//!
//! Every step is bounded: connect and per-message timeouts, a deadline for the whole dump, the size
//! of one message, the number of files and their total size.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, StatusCode};
use prost::Message;

use crate::config::UpstreamConfig;
use crate::grpc::client::{self, Client, ClientError};
use crate::grpc::frame::FrameError;
use crate::grpc::status::Code;
use crate::transport::connect::{ConnectError, Connector};

/// The services whose files (and everything they import) make up Strait's descriptor set: the
/// ones a set must define (defined in `descriptor_set`, which dumping depends on, not the reverse).
pub use crate::descriptor_set::REQUIRED_SERVICES as SERVICES;

/// Everything dumped: the services, plus the types that travel inside `grpc-status-details-bin`
/// (Strait translates namespace names in error details, so it needs their descriptors too).
pub const SYMBOLS: [&str; 5] = [
    SERVICES[0],
    SERVICES[1],
    SERVICES[2],
    ERROR_TYPES[0],
    ERROR_TYPES[1],
];

/// Message types dumped with their files (not services, so not in the server's service list).
pub(crate) const ERROR_TYPES: [&str; 2] = [
    "temporal.api.errordetails.v1.NamespaceNotFoundFailure",
    "google.rpc.Status",
];

pub(crate) const REFLECTION_V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
pub const REFLECTION_V1ALPHA: &str =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
/// Unary; its answer carries the server's version.
const GET_SYSTEM_INFO: &str = "/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo";

/// Limits of one dump.
#[derive(Debug, Clone)]
pub struct Options {
    /// TCP connect plus HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// Waiting for any one answer from the server.
    pub request_timeout: Duration,
    /// The whole dump.
    pub timeout: Duration,
    /// Largest gRPC message accepted from the server.
    pub max_message_size: u32,
    /// Most files in the set.
    pub max_files: usize,
    /// Most bytes of file descriptors in the set.
    pub max_total_bytes: usize,
    /// Reflection methods to try, in order; the next is tried when one answers UNIMPLEMENTED.
    pub protocols: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            timeout: Duration::from_secs(60),
            max_message_size: 32 * 1024 * 1024,
            max_files: 2_000,
            max_total_bytes: 64 * 1024 * 1024,
            protocols: vec![REFLECTION_V1, REFLECTION_V1ALPHA],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    #[error("{address:?} is not a valid host:port")]
    Address { address: String },
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("HTTP/2 with {address}: {source}")]
    Http2 { address: String, source: h2::Error },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{path}: HTTP status {status}")]
    HttpStatus { path: String, status: StatusCode },
    #[error("{path}: {} {message}", .code.as_str())]
    Status {
        path: String,
        code: Code,
        message: String,
    },
    #[error("{path}: {source}")]
    Frame { path: String, source: FrameError },
    #[error("{path}: the server sent a compressed message, which was not asked for")]
    Compressed { path: String },
    #[error("{path}: the stream ended without the answer to {request}")]
    Ended { path: String, request: String },
    #[error("{path}: not exactly one answer to a unary call")]
    NotUnary { path: String },
    #[error("undecodable {what}: {source}")]
    Decode {
        what: String,
        source: prost::DecodeError,
    },
    #[error("the server refused {request}: error {code}: {message}")]
    Refused {
        request: String,
        code: i32,
        message: String,
    },
    #[error("the server answered {request} with an unexpected kind of response")]
    Unexpected { request: String },
    #[error("the server does not expose {service} over reflection (it lists: {listed})")]
    NotExposed { service: String, listed: String },
    #[error("a file descriptor without a name (answer to {request})")]
    Unnamed { request: String },
    #[error("file {name:?} was sent twice with different contents")]
    Conflict { name: String },
    #[error("the set grew past {limit} {what}")]
    TooLarge { what: &'static str, limit: usize },
    #[error("{file:?} imports {dependency:?}, which is not in the set")]
    MissingDependency { file: String, dependency: String },
    #[error("import cycle among {files:?}")]
    Cycle { files: Vec<String> },
}

/// The result of a dump.
#[derive(Debug, Clone)]
pub struct Dump {
    /// (file name, serialized `FileDescriptorProto`) in canonical order.
    pub files: Vec<(String, Bytes)>,
    /// The version the server reports in `GetSystemInfo`, if it answered.
    pub server_version: Option<String>,
    /// The reflection method that answered ([`REFLECTION_V1`] or [`REFLECTION_V1ALPHA`]).
    pub protocol: &'static str,
    /// Every service the server lists over reflection, sorted.
    pub exposed_services: Vec<String>,
    /// Imports the server left out of its `file_containing_symbol` answers, which were then asked
    /// for by name.
    pub fetched_by_name: Vec<String>,
}

impl Dump {
    /// The set as a serialized `google.protobuf.FileDescriptorSet`.
    pub fn encode(&self) -> Vec<u8> {
        RawFileDescriptorSet {
            file: self.files.iter().map(|(_, bytes)| bytes.clone()).collect(),
        }
        .encode_to_vec()
    }
}

// ---- wire messages (grpc/reflection/v1/reflection.proto; v1alpha is identical on the wire) ----

#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionRequest {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(oneof = "RequestKind", tags = "3, 4, 7")]
    message_request: Option<RequestKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum RequestKind {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

impl RequestKind {
    fn describe(&self) -> String {
        match self {
            RequestKind::FileByFilename(name) => format!("file_by_filename {name:?}"),
            RequestKind::FileContainingSymbol(symbol) => {
                format!("file_containing_symbol {symbol:?}")
            }
            RequestKind::ListServices(_) => "list_services".to_owned(),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionResponse {
    #[prost(oneof = "ResponseKind", tags = "4, 6, 7")]
    message_response: Option<ResponseKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ResponseKind {
    #[prost(message, tag = "4")]
    FileDescriptor(FileDescriptorResponse),
    #[prost(message, tag = "6")]
    ListServices(ListServiceResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file_descriptor_proto: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The two fields of `google.protobuf.FileDescriptorProto` the dump needs; the rest is skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct FileHeader {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
}

/// `google.protobuf.FileDescriptorSet` with its files left serialized.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFileDescriptorSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// `temporal.api.workflowservice.v1.GetSystemInfoResponse`, first field only.
#[derive(Clone, PartialEq, prost::Message)]
struct GetSystemInfoResponse {
    #[prost(string, tag = "1")]
    server_version: String,
}

// ---- the client ----

/// The one HTTP/2 connection of a dump, through `grpc::client`.
struct Connection {
    address: String,
    client: Client,
    options: Options,
}

impl Connection {
    async fn open(address: &str, options: &Options) -> Result<Self, ReflectionError> {
        let authority: Authority = address.parse().map_err(|_| ReflectionError::Address {
            address: address.to_owned(),
        })?;
        if authority.port_u16().is_none() {
            return Err(ReflectionError::Address {
                address: address.to_owned(),
            });
        }
        let mut upstream = UpstreamConfig::with_defaults(address.to_owned(), address.to_owned());
        upstream.connect_timeout = options.connect_timeout;
        let connector =
            Connector::new(&(&upstream).into()).map_err(|e| ReflectionError::Connect {
                address: address.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let mut metadata = HeaderMap::new();
        metadata.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("strait/", env!("CARGO_PKG_VERSION"))),
        );
        let client = Client::connect(address, &connector, authority, options.connect_timeout)
            .await
            .map_err(|e| from_client(e, address))?
            .with_metadata(metadata)
            .with_max_response(options.max_message_size);
        Ok(Self {
            address: address.to_owned(),
            client,
            options: options.clone(),
        })
    }

    async fn call(&mut self, path: &'static str) -> Result<Call, ReflectionError> {
        let timeout = self.options.request_timeout;
        let call = tokio::time::timeout(timeout, self.client.call(path, None))
            .await
            .map_err(|_| ReflectionError::Timeout {
                what: format!("opening a stream for {path}"),
                after: timeout,
            })?
            .map_err(|e| from_client(e, &self.address))?;
        Ok(Call {
            path,
            address: self.address.clone(),
            call,
            timeout,
        })
    }
}

/// The client's error in this module's terms (the ones `strait descriptors dump` has always shown).
fn from_client(err: ClientError, address: &str) -> ReflectionError {
    let address = address.to_owned();
    match err {
        ClientError::Connect { source, .. } => match source {
            ConnectError::Tcp { address, source } | ConnectError::Tls { address, source } => {
                ReflectionError::Connect { address, source }
            }
            ConnectError::Timeout { address, timeout } => ReflectionError::Timeout {
                what: format!("connecting to {address}"),
                after: timeout,
            },
            other => ReflectionError::Connect {
                address,
                source: std::io::Error::other(other.to_string()),
            },
        },
        ClientError::Unavailable(other) => ReflectionError::Connect {
            address,
            source: std::io::Error::other(other.to_string()),
        },
        ClientError::Handshake { source, .. } | ClientError::Http2 { source, .. } => {
            ReflectionError::Http2 { address, source }
        }
        ClientError::HttpStatus { path, status, .. } => {
            ReflectionError::HttpStatus { path, status }
        }
        ClientError::Status {
            path,
            code,
            message,
            ..
        } => ReflectionError::Status {
            path,
            code,
            message,
        },
        ClientError::Frame { path, source, .. } => ReflectionError::Frame { path, source },
        ClientError::Compressed { path, .. } => ReflectionError::Compressed { path },
        ClientError::DeadlineExceeded { path, after, .. } => ReflectionError::Timeout {
            what: format!("waiting for {path}"),
            after,
        },
        ClientError::NotUnary { path, .. } => ReflectionError::NotUnary { path },
        ClientError::Path { .. } => ReflectionError::Address { address },
    }
}

/// One gRPC call of the dump, each answer bounded by the request timeout.
struct Call {
    path: &'static str,
    address: String,
    call: client::Call,
    timeout: Duration,
}

impl Call {
    fn send(&mut self, message: &impl Message, end: bool) -> Result<(), ReflectionError> {
        self.call
            .send(&message.encode_to_vec(), end)
            .map_err(|e| from_client(e, &self.address))
    }

    fn close_send(&mut self) -> Result<(), ReflectionError> {
        self.call
            .close_send()
            .map_err(|e| from_client(e, &self.address))
    }

    /// The next message, or `None` once the call ended with OK. Bounded by the request timeout.
    async fn recv(&mut self) -> Result<Option<Bytes>, ReflectionError> {
        tokio::time::timeout(self.timeout, self.call.recv())
            .await
            .map_err(|_| ReflectionError::Timeout {
                what: format!("waiting for an answer on {}", self.path),
                after: self.timeout,
            })?
            .map_err(|e| from_client(e, &self.address))
    }
}

/// The reflection stream, with its request/answer exchange.
struct Reflection {
    call: Call,
}

impl Reflection {
    /// Opens `grpc.reflection.v1`, falling back to `v1alpha` when the server does not implement it.
    /// The first exchange (`list_services`) is what tells; its answer is returned.
    async fn open(
        connection: &mut Connection,
        protocols: &[&'static str],
    ) -> Result<(Self, &'static str, Vec<String>), ReflectionError> {
        let mut last = None;
        for &path in protocols {
            let mut reflection = Reflection {
                call: connection.call(path).await?,
            };
            match reflection.list_services().await {
                Ok(services) => return Ok((reflection, path, services)),
                Err(ReflectionError::Status {
                    code: Code::Unimplemented,
                    path,
                    message,
                }) => {
                    tracing::debug!(%path, %message, "reflection protocol not implemented");
                    last = Some(ReflectionError::Status {
                        path,
                        code: Code::Unimplemented,
                        message,
                    });
                }
                Err(other) => return Err(other),
            }
        }
        Err(last.unwrap_or(ReflectionError::Unexpected {
            request: "list_services".to_owned(),
        }))
    }

    async fn exchange(&mut self, request: RequestKind) -> Result<ResponseKind, ReflectionError> {
        let describe = request.describe();
        self.call.send(
            &ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            },
            false,
        )?;
        let Some(raw) = self.call.recv().await? else {
            return Err(ReflectionError::Ended {
                path: self.call.path.to_owned(),
                request: describe,
            });
        };
        let response =
            ServerReflectionResponse::decode(raw).map_err(|source| ReflectionError::Decode {
                what: format!("answer to {describe}"),
                source,
            })?;
        match response.message_response {
            Some(ResponseKind::Error(error)) => Err(ReflectionError::Refused {
                request: describe,
                code: error.error_code,
                message: error.error_message,
            }),
            Some(kind) => Ok(kind),
            None => Err(ReflectionError::Unexpected { request: describe }),
        }
    }

    async fn list_services(&mut self) -> Result<Vec<String>, ReflectionError> {
        match self
            .exchange(RequestKind::ListServices(String::new()))
            .await?
        {
            ResponseKind::ListServices(list) => {
                let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                names.dedup();
                Ok(names)
            }
            _ => Err(ReflectionError::Unexpected {
                request: "list_services".to_owned(),
            }),
        }
    }

    async fn files(&mut self, request: RequestKind) -> Result<Vec<Bytes>, ReflectionError> {
        let describe = request.describe();
        match self.exchange(request).await? {
            ResponseKind::FileDescriptor(files) => Ok(files.file_descriptor_proto),
            _ => Err(ReflectionError::Unexpected { request: describe }),
        }
    }

    /// Half-closes the stream and reads it to its end, checking the final status.
    async fn finish(mut self) -> Result<(), ReflectionError> {
        self.call.close_send()?;
        while self.call.recv().await?.is_some() {}
        Ok(())
    }
}

/// Files received so far, by name.
struct Collected {
    files: BTreeMap<String, (Bytes, Vec<String>)>,
    total_bytes: usize,
    options: Options,
}

impl Collected {
    /// Adds the files of one answer; returns how many were new.
    fn add(&mut self, request: &str, files: Vec<Bytes>) -> Result<usize, ReflectionError> {
        let mut added = 0;
        for bytes in files {
            let header =
                FileHeader::decode(bytes.clone()).map_err(|source| ReflectionError::Decode {
                    what: format!("file descriptor in the answer to {request}"),
                    source,
                })?;
            if header.name.is_empty() {
                return Err(ReflectionError::Unnamed {
                    request: request.to_owned(),
                });
            }
            if let Some((existing, _)) = self.files.get(&header.name) {
                if *existing != bytes {
                    return Err(ReflectionError::Conflict { name: header.name });
                }
                continue;
            }
            if self.files.len() >= self.options.max_files {
                return Err(ReflectionError::TooLarge {
                    what: "files",
                    limit: self.options.max_files,
                });
            }
            self.total_bytes += bytes.len();
            if self.total_bytes > self.options.max_total_bytes {
                return Err(ReflectionError::TooLarge {
                    what: "bytes",
                    limit: self.options.max_total_bytes,
                });
            }
            self.files.insert(header.name, (bytes, header.dependency));
            added += 1;
        }
        Ok(added)
    }

    /// Imports not received yet, sorted.
    fn missing(&self) -> BTreeSet<String> {
        self.files
            .values()
            .flat_map(|(_, deps)| deps.iter())
            .filter(|dep| !self.files.contains_key(*dep))
            .cloned()
            .collect()
    }
}

/// Dumps the files defining `services` and everything they import from the server at `address`
/// (`host:port`, plaintext HTTP/2), plus the server's version. Must run inside a tokio runtime.
pub async fn dump(
    address: &str,
    services: &[&str],
    options: &Options,
) -> Result<Dump, ReflectionError> {
    tokio::time::timeout(options.timeout, dump_inner(address, services, options))
        .await
        .map_err(|_| ReflectionError::Timeout {
            what: format!("dumping descriptors from {address}"),
            after: options.timeout,
        })?
}

async fn dump_inner(
    address: &str,
    services: &[&str],
    options: &Options,
) -> Result<Dump, ReflectionError> {
    let mut connection = Connection::open(address, options).await?;
    let (mut reflection, protocol, exposed_services) =
        Reflection::open(&mut connection, &options.protocols).await?;
    // Services must be listed; other symbols (message types) are found through their files.
    for service in services {
        if !ERROR_TYPES.contains(service) && !exposed_services.iter().any(|s| s == service) {
            return Err(ReflectionError::NotExposed {
                service: (*service).to_owned(),
                listed: exposed_services.join(", "),
            });
        }
    }
    let mut collected = Collected {
        files: BTreeMap::new(),
        total_bytes: 0,
        options: options.clone(),
    };
    for service in services {
        let request = RequestKind::FileContainingSymbol((*service).to_owned());
        let describe = request.describe();
        let files = reflection.files(request).await?;
        collected.add(&describe, files)?;
    }
    // Servers usually send every transitive import with the first answer that needs it; ask for
    // whatever they left out, one file at a time, until the set is closed.
    let mut queue: VecDeque<String> = collected.missing().into_iter().collect();
    let mut asked = BTreeSet::new();
    while let Some(name) = queue.pop_front() {
        if collected.files.contains_key(&name) || !asked.insert(name.clone()) {
            continue;
        }
        tracing::debug!(file = %name, "import missing from the answers so far; asking by name");
        let request = RequestKind::FileByFilename(name);
        let describe = request.describe();
        let files = reflection.files(request).await?;
        collected.add(&describe, files)?;
        queue.extend(collected.missing());
    }
    reflection.finish().await?;

    let server_version = match system_version(&connection).await {
        Ok(version) => Some(version).filter(|v| !v.is_empty()),
        Err(err) => {
            tracing::warn!(error = %err, "GetSystemInfo failed; the server version is unknown");
            None
        }
    };

    let files = canonical_order(
        collected
            .files
            .into_iter()
            .map(|(name, (bytes, deps))| (name, bytes, deps))
            .collect(),
    )?;
    Ok(Dump {
        files,
        server_version,
        protocol,
        exposed_services,
        fetched_by_name: asked.into_iter().collect(),
    })
}

/// `WorkflowService/GetSystemInfo`'s `server_version`.
async fn system_version(connection: &Connection) -> Result<String, ReflectionError> {
    // An empty GetSystemInfoRequest.
    let raw = connection
        .client
        .unary(GET_SYSTEM_INFO, &[], connection.options.request_timeout)
        .await
        .map_err(|e| from_client(e, &connection.address))?;
    GetSystemInfoResponse::decode(raw)
        .map(|r| r.server_version)
        .map_err(|source| ReflectionError::Decode {
            what: "GetSystemInfoResponse".to_owned(),
            source,
        })
}

/// Orders files so that each comes after everything it imports, choosing the smallest name whenever
/// several are ready: one canonical order for a given set of files.
fn canonical_order(
    files: Vec<(String, Bytes, Vec<String>)>,
) -> Result<Vec<(String, Bytes)>, ReflectionError> {
    let mut waiting_on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dependants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut bytes_of: BTreeMap<String, Bytes> = BTreeMap::new();
    for (name, _, deps) in &files {
        for dep in deps {
            if !files.iter().any(|(other, _, _)| other == dep) {
                return Err(ReflectionError::MissingDependency {
                    file: name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
    }
    for (name, bytes, deps) in files {
        let deps: BTreeSet<String> = deps.into_iter().collect();
        for dep in &deps {
            dependants
                .entry(dep.clone())
                .or_default()
                .push(name.clone());
        }
        waiting_on.insert(name.clone(), deps);
        bytes_of.insert(name, bytes);
    }
    let mut ready: BTreeSet<String> = waiting_on
        .iter()
        .filter(|(_, deps)| deps.is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    let mut out = Vec::with_capacity(bytes_of.len());
    while let Some(name) = ready.pop_first() {
        waiting_on.remove(&name);
        for dependant in dependants.remove(&name).unwrap_or_default() {
            if let Some(deps) = waiting_on.get_mut(&dependant) {
                deps.remove(&name);
                if deps.is_empty() {
                    ready.insert(dependant);
                }
            }
        }
        if let Some(bytes) = bytes_of.remove(&name) {
            out.push((name, bytes));
        }
    }
    if !waiting_on.is_empty() {
        return Err(ReflectionError::Cycle {
            files: waiting_on.into_keys().collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn file(name: &str, deps: &[&str]) -> (String, Bytes, Vec<String>) {
        let deps: Vec<String> = deps.iter().map(|d| (*d).to_owned()).collect();
        let bytes = FileHeader {
            name: name.to_owned(),
            dependency: deps.clone(),
        }
        .encode_to_vec();
        (name.to_owned(), Bytes::from(bytes), deps)
    }

    fn names(files: &[(String, Bytes)]) -> Vec<&str> {
        files.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn dependencies_first_then_by_name() {
        let files = vec![
            file("z.proto", &[]),
            file("a.proto", &["m.proto", "z.proto"]),
            file("m.proto", &["z.proto"]),
            file("b.proto", &[]),
        ];
        let ordered = canonical_order(files.clone()).unwrap();
        assert_eq!(
            names(&ordered),
            ["b.proto", "z.proto", "m.proto", "a.proto"]
        );
        // The input order does not matter.
        let mut reversed = files;
        reversed.reverse();
        assert_eq!(canonical_order(reversed).unwrap(), ordered);
    }

    #[test]
    fn missing_imports_and_cycles_are_errors() {
        let err = canonical_order(vec![file("a.proto", &["gone.proto"])]).unwrap_err();
        assert!(
            matches!(err, ReflectionError::MissingDependency { .. }),
            "{err}"
        );
        let err = canonical_order(vec![
            file("a.proto", &["b.proto"]),
            file("b.proto", &["a.proto"]),
            file("c.proto", &[]),
        ])
        .unwrap_err();
        match err {
            ReflectionError::Cycle { files } => assert_eq!(files, ["a.proto", "b.proto"]),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn collected_files_dedupe_and_conflicts() {
        let mut collected = Collected {
            files: BTreeMap::new(),
            total_bytes: 0,
            options: Options {
                max_files: 2,
                ..Options::default()
            },
        };
        let (_, a, _) = file("a.proto", &["b.proto"]);
        assert_eq!(collected.add("r", vec![a.clone(), a.clone()]).unwrap(), 1);
        assert_eq!(
            collected.missing().into_iter().collect::<Vec<_>>(),
            ["b.proto"]
        );
        let (_, other_a, _) = file("a.proto", &[]);
        assert!(matches!(
            collected.add("r", vec![other_a]),
            Err(ReflectionError::Conflict { .. })
        ));
        let (_, b, _) = file("b.proto", &[]);
        let (_, c, _) = file("c.proto", &[]);
        assert_eq!(collected.add("r", vec![b]).unwrap(), 1);
        assert!(matches!(
            collected.add("r", vec![c]),
            Err(ReflectionError::TooLarge { what: "files", .. })
        ));
    }

    #[test]
    fn encodes_as_a_file_descriptor_set() {
        let dump = Dump {
            files: canonical_order(vec![file("b.proto", &["a.proto"]), file("a.proto", &[])])
                .unwrap(),
            server_version: None,
            protocol: REFLECTION_V1,
            exposed_services: Vec::new(),
            fetched_by_name: Vec::new(),
        };
        let set = prost_reflect::prost_types::FileDescriptorSet::decode(dump.encode().as_slice())
            .unwrap();
        let names: Vec<_> = set.file.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["a.proto", "b.proto"]);
        assert_eq!(set.file[1].dependency, ["a.proto"]);
    }

    #[test]
    fn reflection_messages_round_trip() {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(RequestKind::FileContainingSymbol("x.Y".to_owned())),
        };
        // Field 4, length-delimited: tag byte 0x22.
        assert_eq!(request.encode_to_vec(), b"\x22\x03x.Y");
        let response = ServerReflectionResponse {
            message_response: Some(ResponseKind::Error(ErrorResponse {
                error_code: 5,
                error_message: "no".to_owned(),
            })),
        };
        let decoded =
            ServerReflectionResponse::decode(response.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, response);
    }

    #[tokio::test]
    async fn bad_address_and_refused_connection() {
        let options = Options {
            connect_timeout: Duration::from_secs(2),
            ..Options::default()
        };
        let err = dump("no port", &SERVICES, &options).await.unwrap_err();
        assert!(matches!(err, ReflectionError::Address { .. }), "{err}");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = dump(&format!("127.0.0.1:{port}"), &SERVICES, &options)
            .await
            .unwrap_err();
        assert!(matches!(err, ReflectionError::Connect { .. }), "{err}");
    }
}
