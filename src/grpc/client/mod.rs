//! The gRPC client: a [`Channel`] spreads calls over the addresses of a target, one HTTP/2
//! connection per address, and retries them as its service config says.
//!
//! ```text
//! endpoint (target, TLS, limits, service config)
//!   -> channel (resolve::Target -> pool: subchannels behind pick_first or round_robin)
//!   -> call (interceptors; per attempt: pool pick -> request head + framed message(s) ->
//!      response head; a failed attempt goes to retry (A6) before the call fails)
//!   -> Streaming of messages, trailers -> Status
//! subchannel: IDLE -> CONNECTING (TCP or Unix, TLS, h2; backoff) -> READY (health watch)
//! ```

mod backoff;
mod call;
mod channel;
mod endpoint;
mod pool;
mod replay;
mod resolve;
mod retry;
mod service_config;
mod subchannel;

pub use backoff::ConnectBackoff;
pub use channel::Channel;
pub use endpoint::Endpoint;
pub use resolve::{Address, Resolver};
pub use service_config::{LbPolicy, ServiceConfig};
pub use subchannel::ConnectivityState;
