//! satellite: a gRPC runtime written by hand on `h2`, and the map service that proves it.
//!
//! # Layout
//!
//! - [`grpc`]: the runtime. It knows nothing of maps: message framing, status codes, metadata,
//!   deadlines, and the server and client that drive `h2` streams.
//! - [`satellite`](crate::app): the map service, its client, the CLI and the demo PKI. It knows
//!   nothing of HTTP/2.
//!
//! # Data flow
//!
//! ```text
//! bytes -> h2 stream -> FrameDecoder -> codec (prost) -> typed handler
//!       -> codec (prefix + body) -> h2 SendStream (flow control) -> trailers (Status)
//! ```
#![forbid(unsafe_code)]

pub mod grpc;

#[path = "satellite/mod.rs"]
pub mod app;
