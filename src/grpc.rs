//! gRPC on top of HTTP/2: message framing (`frame`), per-message compression (`compression`),
//! status codes and trailers (`status`), the `grpc-timeout` header (`timeout`), method paths
//! (`method`), and the client for Strait's own outbound calls (`client`).

pub(crate) mod client;
pub mod compression;
#[cfg(feature = "internals")]
pub mod frame;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub)] // public with `internals`, for the fuzz targets and benches
pub(crate) mod frame;
pub mod method;
pub(crate) mod status;
pub(crate) mod timeout;
