//! The only prost-aware step: message payloads to typed messages and back.
//!
//! Encoding writes the 5-byte prefix first, from `encoded_len()`, then the body into the same
//! buffer: no backfilled length and no `unsafe` (tonic reserves and backfills the prefix).

use bytes::{Bytes, BytesMut};

use crate::grpc::frame::{put_prefix, PREFIX_LEN};
use crate::grpc::status::Status;

/// Appends one length-prefixed, uncompressed message to `buf`.
///
/// Several calls append several messages, which is how ready messages are coalesced into one
/// DATA frame.
///
/// # Errors
/// `RESOURCE_EXHAUSTED` when the encoded message is longer than `max_len` (the send limit) or
/// cannot be described by the 4-byte length.
pub fn encode<M: prost::Message>(
    msg: &M,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<(), Status> {
    let len = msg.encoded_len();
    let Ok(len32) = u32::try_from(len) else {
        return Err(Status::resource_exhausted(format!(
            "message of {len} bytes is too large to frame"
        )));
    };
    if len > max_len {
        return Err(Status::resource_exhausted(format!(
            "message of {len} bytes exceeds the send limit of {max_len} bytes"
        )));
    }
    buf.reserve(PREFIX_LEN + len);
    put_prefix(buf, false, len32);
    // Cannot fail: the buffer was reserved for exactly encoded_len() bytes above.
    msg.encode_raw(buf);
    Ok(())
}

/// Decodes one message payload.
///
/// # Errors
/// `INTERNAL` for bytes that are not a valid message of this type (GRPC-NOTES §1.6).
pub fn decode<M: prost::Message + Default>(payload: Bytes) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::internal(format!("failed to decode message: {e}")))
}
