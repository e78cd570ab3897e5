//! A gRPC server-reflection client, used to dump the Temporal descriptor set (`descriptors/`) from a
//! real server.
//!
//! It speaks plain HTTP/2 (h2c) with the `h2` crate and the framing in [`crate::grpc::frame`], and
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

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::uri::Authority;
use http::{Method, Request, StatusCode};
use prost::Message;
use tokio::task::JoinHandle;

use crate::grpc::frame::{encode_message, FrameDecoder, FrameError, FrameEvent};
use crate::grpc::status::Code;

/// The services whose files (and everything they import) make up Strait's descriptor set.
pub const SERVICES: [&str; 3] = [
    "temporal.api.workflowservice.v1.WorkflowService",
    "temporal.api.operatorservice.v1.OperatorService",
    "temporal.server.api.adminservice.v1.AdminService",
];

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
pub const ERROR_TYPES: [&str; 2] = [
    "temporal.api.errordetails.v1.NamespaceNotFoundFailure",
    "google.rpc.Status",
];

pub const REFLECTION_V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
pub const REFLECTION_V1ALPHA: &str =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
/// Unary; its answer carries the server's version.
const GET_SYSTEM_INFO: &str = "/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo";

const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

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

/// Aborts the task driving the HTTP/2 connection when the dump ends, however it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Connection {
    address: String,
    authority: Authority,
    send_request: SendRequest<Bytes>,
    options: Options,
    _driver: AbortOnDrop,
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
        let dial = async {
            let tcp = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|source| ReflectionError::Connect {
                    address: address.to_owned(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .enable_push(false)
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(|source| ReflectionError::Http2 {
                    address: address.to_owned(),
                    source,
                })
        };
        let (send_request, connection) = tokio::time::timeout(options.connect_timeout, dial)
            .await
            .map_err(|_| ReflectionError::Timeout {
                what: format!("connecting to {address}"),
                after: options.connect_timeout,
            })??;
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "reflection connection ended");
            }
        });
        Ok(Self {
            address: address.to_owned(),
            authority,
            send_request,
            options: options.clone(),
            _driver: AbortOnDrop(driver),
        })
    }

    async fn call(&mut self, path: &'static str) -> Result<Call, ReflectionError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}{path}", self.authority))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(
                http::header::USER_AGENT,
                concat!("strait/", env!("CARGO_PKG_VERSION")),
            )
            .body(())
            .map_err(|_| ReflectionError::Address {
                address: self.address.clone(),
            })?;
        let http2 = |source| ReflectionError::Http2 {
            address: self.address.clone(),
            source,
        };
        let ready = tokio::time::timeout(
            self.options.request_timeout,
            self.send_request.clone().ready(),
        )
        .await
        .map_err(|_| ReflectionError::Timeout {
            what: format!("opening a stream for {path}"),
            after: self.options.request_timeout,
        })?;
        let mut send_request = ready.map_err(http2)?;
        let (response, send) = send_request.send_request(request, false).map_err(http2)?;
        Ok(Call {
            path,
            address: self.address.clone(),
            send,
            response: Some(response),
            body: None,
            decoder: FrameDecoder::new(self.options.max_message_size),
            pending: Bytes::new(),
            timeout: self.options.request_timeout,
            done: false,
        })
    }
}

/// One gRPC call: messages out, messages in, status at the end.
struct Call {
    path: &'static str,
    address: String,
    send: SendStream<Bytes>,
    response: Option<ResponseFuture>,
    body: Option<RecvStream>,
    decoder: FrameDecoder,
    pending: Bytes,
    timeout: Duration,
    done: bool,
}

impl Call {
    fn http2(&self, source: h2::Error) -> ReflectionError {
        ReflectionError::Http2 {
            address: self.address.clone(),
            source,
        }
    }

    fn send(&mut self, message: &impl Message, end: bool) -> Result<(), ReflectionError> {
        let framed = encode_message(false, &message.encode_to_vec()).map_err(|source| {
            ReflectionError::Frame {
                path: self.path.to_owned(),
                source,
            }
        })?;
        self.send
            .send_data(framed, end)
            .map_err(|source| self.http2(source))
    }

    fn close_send(&mut self) -> Result<(), ReflectionError> {
        self.send
            .send_data(Bytes::new(), true)
            .map_err(|source| self.http2(source))
    }

    /// The next message, or `None` once the call ended with OK. Bounded by the request timeout.
    async fn recv(&mut self) -> Result<Option<Bytes>, ReflectionError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.recv_inner())
            .await
            .map_err(|_| ReflectionError::Timeout {
                what: format!("waiting for an answer on {}", self.path),
                after: timeout,
            })?
    }

    async fn recv_inner(&mut self) -> Result<Option<Bytes>, ReflectionError> {
        if self.done {
            return Ok(None);
        }
        if let Some(response) = self.response.take() {
            let response = response.await.map_err(|source| self.http2(source))?;
            if response.status() != StatusCode::OK {
                return Err(ReflectionError::HttpStatus {
                    path: self.path.to_owned(),
                    status: response.status(),
                });
            }
            // A trailers-only response: the status is in the headers.
            if let Some(code) = Code::from_headers(response.headers()) {
                self.done = true;
                return self.status(code, response.headers()).map(|()| None);
            }
            self.body = Some(response.into_body());
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let frame_error = |path: &str, source| ReflectionError::Frame {
            path: path.to_owned(),
            source,
        };
        let mut message: Option<BytesMut> = None;
        loop {
            while let Some(event) = self
                .decoder
                .next(&mut self.pending)
                .map_err(|e| frame_error(self.path, e))?
            {
                match event {
                    FrameEvent::Header(header) => {
                        if header.compressed {
                            return Err(ReflectionError::Compressed {
                                path: self.path.to_owned(),
                            });
                        }
                        message = Some(BytesMut::with_capacity(header.len as usize));
                    }
                    FrameEvent::Body(chunk) => {
                        if let Some(message) = message.as_mut() {
                            message.extend_from_slice(&chunk);
                        }
                    }
                    FrameEvent::End => {
                        return Ok(Some(message.take().unwrap_or_default().freeze()))
                    }
                }
            }
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.pending = chunk;
                }
                Some(Err(source)) => {
                    return Err(ReflectionError::Http2 {
                        address: self.address.clone(),
                        source,
                    })
                }
                None => break,
            }
        }
        self.decoder
            .finish()
            .map_err(|e| frame_error(self.path, e))?;
        let trailers = body
            .trailers()
            .await
            .map_err(|source| ReflectionError::Http2 {
                address: self.address.clone(),
                source,
            })?
            .unwrap_or_default();
        self.done = true;
        let code = Code::from_headers(&trailers).unwrap_or(Code::Unknown);
        self.status(code, &trailers).map(|()| None)
    }

    fn status(&self, code: Code, headers: &http::HeaderMap) -> Result<(), ReflectionError> {
        if code == Code::Ok {
            return Ok(());
        }
        let message = headers
            .get("grpc-message")
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_else(|| {
                if headers.contains_key("grpc-status") {
                    String::new()
                } else {
                    "the call ended without grpc-status".to_owned()
                }
            });
        Err(ReflectionError::Status {
            path: self.path.to_owned(),
            code,
            message,
        })
    }
}

/// Decodes a percent-encoded `grpc-message`.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    let server_version = match system_version(&mut connection).await {
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
async fn system_version(connection: &mut Connection) -> Result<String, ReflectionError> {
    let mut call = connection.call(GET_SYSTEM_INFO).await?;
    // An empty GetSystemInfoRequest.
    call.send(&(), true)?;
    let Some(raw) = call.recv().await? else {
        return Err(ReflectionError::Ended {
            path: GET_SYSTEM_INFO.to_owned(),
            request: "GetSystemInfo".to_owned(),
        });
    };
    while call.recv().await?.is_some() {}
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

    #[test]
    fn grpc_message_percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%zz%"), "a b%zz%");
        assert_eq!(percent_decode(b"caf%C3%A9"), "café");
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
