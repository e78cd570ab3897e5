//! HTTP/2 settings shared by the echo backend and the load generators.

/// Per-stream receive window: large enough that a 64 KiB message never
/// waits for a WINDOW_UPDATE round trip (h2's default is 65 535).
pub const STREAM_WINDOW: u32 = 1 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// The HTTP/2 default, as used by grpc-go and tonic.
pub const MAX_FRAME_SIZE: u32 = 16_384;
/// Per connection; above the 1,000 streams the memory bench opens (a
/// proxy may put all of them on one upstream connection).
pub const MAX_CONCURRENT_STREAMS: u32 = 2048;
