//! The gRPC runtime: wire core (framing, status, metadata, timeouts) and the h2 server and
//! client. It knows nothing of maps.
//!
//! ```text
//! server: TCP -> TLS -> h2 -> server::head (checks) -> server::route (path -> handler)
//!         -> server::call (interceptors, deadline, cancel)
//!         -> recv (FrameDecoder -> codec) -> typed handler
//!         -> send (codec -> SendStream, within flow control) -> trailers (Status)
//! client: Channel (target -> resolver -> subchannels -> pick_first | round_robin)
//!         -> client::call (interceptors; per attempt: pick, request head, send, response
//!            head; retries per the service config) -> recv -> trailers (Status)
//! ```
//!
//! Only what a service needs is public: [`Method`], [`Router`], [`run`] (on a [`Listener`]),
//! [`ServerConfig`], [`Channel`], [`Endpoint`] (with [`ServiceConfig`], [`LbPolicy`],
//! [`Resolver`], [`ConnectBackoff`]), [`Request`], [`Response`], [`Streaming`], [`Status`],
//! [`Metadata`], the interceptor traits, [`tls`], [`health`], [`reflection`], [`authz`] (an
//! A43 policy as an interceptor), [`reload`] (files read again while in use),
//! [`tls_reload`] (certificates, keys and CA bundles replaced while in use), [`metrics`] (A66
//! names, Prometheus text) and [`admin`] (`/metrics` and `/healthz` over HTTP/1.1). The wire
//! internals are crate-private; the fuzz targets reach them through `fuzz_bridge`, compiled
//! only under `cfg(fuzzing)` and for tests (and, for the decode benchmark, with the
//! `wire-internals` feature).
//!
//! | limit | default | why |
//! | --- | --- | --- |
//! | message size (each way) | 4 MiB | what every stock gRPC stack uses |
//! | concurrent streams per connection | 128 | h2 has no limit of its own |
//! | request header list | 16 KiB | C-core's hard limit |
//! | TLS + HTTP/2 handshake | 10 s each | silent peers must not hold slots |
//! | shutdown grace | 10 s | calls in flight finish, then the rest are cut |

pub mod admin;
pub mod authz;
mod budget;
mod client;
mod codec;
mod compression;
pub(crate) mod error;
// The wire modules' `pub` items are crate-private but for `fuzz_bridge`, which re-exports
// them under cfg(fuzzing) and the wire-internals feature.
#[allow(unreachable_pub)]
mod frame;
#[cfg(any(fuzzing, test, feature = "wire-internals"))]
#[doc(hidden)]
pub mod fuzz_bridge;
pub mod health;
mod intercept;
mod log;
#[allow(unreachable_pub)]
pub(crate) mod metadata;
mod method;
pub mod metrics;
mod recv;
pub mod reflection;
pub mod reload;
mod request;
mod send;
mod server;
#[allow(unreachable_pub)]
mod status;
#[allow(unreachable_pub)]
mod timeout;
pub mod tls;
pub mod tls_reload;
mod web;

pub use budget::RequestBudget;
pub use client::{
    Address, Channel, ConnectBackoff, ConnectivityState, Endpoint, LbPolicy, Resolver,
    ServiceConfig,
};
pub use compression::Encoding;
pub use error::Error;
pub use intercept::{
    BoxFuture, CallHead, CallSummary, ClientCallHead, ClientInterceptor, ServerInterceptor,
};
pub use log::WIRE_TARGET;
pub use metadata::{Metadata, MetadataError};
pub use method::{BidiStreaming, ClientStreaming, Method, ServerStreaming, Unary};
pub use recv::Streaming;
pub use request::{IntoMessage, Outgoing, Peer, Request, Response};
pub use server::{
    run, run_browser, serve_io, BrowserConfig, Listener, Router, ServerConfig, StaticFile,
    Transport,
};
pub use status::{Code, Status};
