//! gRPC on top of HTTP/2: message framing (`frame`), per-message compression (`compression`),
//! status codes and trailers (`status`), the `grpc-timeout` header (`timeout`) and method paths
//! (`method`).

pub mod compression;
pub mod frame;
pub mod method;
pub mod status;
pub mod timeout;
