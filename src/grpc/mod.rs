//! The gRPC runtime: wire core (framing, status, metadata, timeouts) and the h2 server and
//! client. It knows nothing of maps.
//!
//! ```text
//! server: TCP -> TLS -> h2 -> server::call (head checks, route, deadline)
//!         -> recv (FrameDecoder -> codec) -> handler
//!         -> send (codec -> SendStream, within flow control) -> trailers (Status)
//! client: Channel -> request head -> send -> response head -> recv -> trailers (Status)
//! ```
//!
//! | limit | default | why |
//! | --- | --- | --- |
//! | message size (each way) | 4 MiB | what every stock gRPC stack uses |
//! | concurrent streams per connection | 128 | h2 has no limit of its own |
//! | request header list | 16 KiB | C-core's hard limit |
//! | TLS + HTTP/2 handshake | 10 s each | silent peers must not hold slots |
//! | shutdown grace | 10 s | calls in flight finish, then the rest are cut |

pub mod client;
pub mod codec;
pub mod compression;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod metadata;
pub mod recv;
pub mod reflection;
pub mod request;
mod send;
pub mod server;
pub mod status;
pub mod timeout;
pub mod tls;

/// The `tracing` target of wire-level events (headers, each message, trailers), all at debug:
/// enable it with a filter such as `wire=debug`. When it is off each event costs one check.
pub const WIRE_TARGET: &str = "wire";

pub use client::{Channel, Endpoint};
pub use error::Error;
pub use metadata::Metadata;
pub use recv::Streaming;
pub use request::{Peer, Request, Response};
pub use server::{run, Router, ServerConfig, Transport};
pub use status::{Code, Status};
