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
//!
//! # Example
//!
//! A method declared once, served and called over loopback:
//!
//! ```
//! use satellite::grpc::{self, Channel, Endpoint, Method, Request, Response, Router, Status, Unary};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Square {
//!     #[prost(int64, tag = "1")]
//!     n: i64,
//! }
//!
//! const SQUARE: Method<Square, Square, Unary> = Method::unary("/demo.Math/Square");
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().unary(&SQUARE, |request: Request<Square>| async move {
//!     let n = request.into_inner().n;
//!     let square = n.checked_mul(n).ok_or_else(|| Status::out_of_range("too large"))?;
//!     Ok(Response::new(Square { n: square }))
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let config = grpc::ServerConfig::new(grpc::Transport::Plaintext);
//! tokio::spawn(grpc::run(listener, config, router, std::future::pending()));
//!
//! let channel = Channel::lazy(Endpoint::new(addr.to_string()))?;
//! let reply = channel.unary(&SQUARE, Request::new(Square { n: 12 })).await?;
//! assert_eq!(reply.into_inner().n, 144);
//! let too_large = channel.unary(&SQUARE, Request::new(Square { n: i64::MAX })).await;
//! assert_eq!(too_large.unwrap_err().code(), grpc::Code::OutOfRange);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod grpc;

#[path = "satellite/mod.rs"]
pub mod app;
