//! Dev-only support for satellite's tests and fuzz targets: one raw HTTP/2 toolkit, and the
//! end-to-end fuzz logic that drives the server with it.
//!
//! The hostile-peer suite (`tests/hostile/`) and the `server_e2e` fuzz target both play an
//! HTTP/2 client byte by byte, so they need a frame writer, an HPACK encoder and a frame reader
//! that make no protocol decisions of their own (h2's `tests/h2-support` plays the same part).
//! They live here once, outside the library, and reach satellite through its public API only.
//!
//! # Layout
//!
//! - [`frame`]: frame types, flags and error codes (RFC 9113), the frame writer, and [`Frame`]
//!   as read back.
//! - [`hpack`]: a literal-only HPACK encoder (RFC 7541), never Huffman, so every byte on the
//!   wire is the test's choice.
//! - [`grpc`]: the gRPC request head, the 5-byte message prefix and a reference decoder of
//!   length-prefixed messages.
//! - [`peer`]: [`RawPeer`], a raw client on any byte stream that records what the server sent.
//! - [`server_e2e`]: the end-to-end fuzz function, shared by `fuzz/` and `tests/fuzz_seeds.rs`.
//! - [`wire`]: the sans-IO fuzz functions (frame decoder, `grpc-timeout`, status trailers,
//!   `-bin` metadata), over the internals that `satellite::grpc::fuzz_bridge` exposes.

pub mod frame;
pub mod grpc;
pub mod hpack;
pub mod peer;
pub mod wire;

mod e2e;

pub use e2e::server_e2e;
pub use frame::Frame;
pub use peer::{Outcome, RawPeer};
