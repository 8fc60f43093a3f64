//! The gRPC client: a [`Channel`] multiplexes calls over one HTTP/2 connection, made on first
//! use and made again on the next call after it dies.
//!
//! ```text
//! endpoint (where, how) -> channel (ready connection: TCP -> TLS -> h2 handshake, each timed)
//!   -> call (interceptors, request head + framed message(s), response head, Streaming of
//!      messages, trailers -> Status)
//! ```

mod call;
mod channel;
mod endpoint;

pub use channel::Channel;
pub use endpoint::Endpoint;
