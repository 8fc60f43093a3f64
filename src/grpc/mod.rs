//! The gRPC runtime: wire core (framing, status, metadata, timeouts) and the h2 server/client.
//!
//! ```text
//! server: TCP -> TLS -> h2 -> call (headers, route, deadline) -> recv (FrameDecoder -> codec)
//!         -> handler -> send (codec -> SendStream, flow control) -> trailers (Status)
//! ```

pub mod frame;
pub mod metadata;
pub mod status;
pub mod timeout;
