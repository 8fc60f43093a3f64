//! The wire internals, for fuzzing and for the dev-only `satellite-testkit` (whose fuzz logic
//! and decode benchmark need them); compiled only under `cfg(fuzzing)`, for this crate's tests,
//! and with the `wire-internals` feature. None of it is API (h2's `fuzz_bridge.rs` is the
//! model).

use http::HeaderMap;

use crate::grpc::status::Status;
pub use crate::grpc::{
    frame::{Frame, FrameDecoder, FrameError, PREFIX_LEN},
    metadata::{decode_bin, encode_bin},
    status::{capped_message, percent_decode, percent_encode},
    timeout::{format as format_timeout, parse as parse_timeout, TimeoutError, MAX_TIMEOUT},
};

/// Writes `status` as `grpc-status`, `grpc-message` and `grpc-status-details-bin`.
pub fn write_status(status: &Status, headers: &mut HeaderMap) {
    status.write_headers(headers);
}

/// The status that headers or trailers carry, if any.
pub fn read_status(headers: &HeaderMap) -> Option<Status> {
    Status::from_headers(headers)
}
