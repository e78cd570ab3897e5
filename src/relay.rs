//! The HTTP/2 relay: the server side accepting client connections (`server`), one task per call
//! pumping headers, gRPC messages and trailers both ways (`call`, `pump`), and the pool of HTTP/2
//! connections to each upstream (`upstream`), the count of what HTTP/2 refuses clients (`watch`),
//! and the budgets for messages held whole to be edited (`gather`).

pub(crate) mod call;
pub(crate) mod gather;
pub(crate) mod pump;
pub(crate) mod server;
pub mod upstream;
#[cfg(feature = "internals")]
pub mod watch;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub)] // public with `internals`, for the fuzz targets and benches
pub(crate) mod watch;

use std::sync::Arc;

use crate::config::ListenerLimits;
use crate::metrics::ListenerMetrics;
use crate::pipeline::MethodTable;

/// What every call on one listener needs: limits, the upstream pool, metric handles and the method
/// table (admission and the message pipeline's stages).
pub(crate) struct ListenerContext {
    pub(crate) name: Arc<str>,
    pub(crate) upstream: Arc<upstream::UpstreamPool>,
    pub(crate) limits: ListenerLimits,
    pub(crate) metrics: ListenerMetrics,
    /// Each method's entry: policy, metric handles and stages; one lookup per call.
    pub(crate) methods: MethodTable,
    /// The process-wide budget for messages held whole to be edited (`[limits] gather_bytes`),
    /// shared by every listener of one proxy.
    pub(crate) gather_budget: Arc<gather::Budget>,
    /// Where `limits` come from in the config (`listener.limits`, `cluster_connection.limits`),
    /// to name a limit's key in the errors it causes.
    pub(crate) limits_key: &'static str,
}
