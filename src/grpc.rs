//! gRPC on top of HTTP/2: message framing (`frame`), per-message compression (`compression`),
//! status codes and trailers (`status`), the `grpc-timeout` header (`timeout`), method paths
//! (`method`), and the client for Strait's own outbound calls (`client`).

pub(crate) mod client;
pub mod compression;
pub mod frame;
pub mod method;
pub(crate) mod status;
pub(crate) mod timeout;
