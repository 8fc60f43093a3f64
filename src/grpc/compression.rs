//! Message compression (compression.md): the `grpc-encoding` we accept and send, and bounded
//! decompression.
//!
//! "deflate" in gRPC is the zlib-wrapped format (as grpcio and tonic use it). Decompression reads
//! at most the receive limit plus one byte, so a small message that inflates without bound (a
//! "zip bomb") costs no more memory than the limit before it is refused.

use std::io::{Read as _, Write as _};

use bytes::{BufMut as _, Bytes, BytesMut};
use flate2::{read, write, Compression};

use crate::grpc::{
    frame::{put_prefix, PREFIX_LEN},
    status::Status,
};

/// The encodings we can decode, as sent in `grpc-accept-encoding`.
pub const ACCEPT_ENCODING: &str = "gzip,deflate,identity";

/// A message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// gzip (RFC 1952).
    Gzip,
    /// zlib-wrapped deflate (RFC 1950), what gRPC calls "deflate".
    Deflate,
}

impl Encoding {
    /// The encoding named by a `grpc-encoding` value; `Ok(None)` for identity.
    ///
    /// # Errors
    /// The value itself, when it names an encoding we do not support.
    pub fn from_header(value: &[u8]) -> Result<Option<Self>, String> {
        match value {
            b"identity" => Ok(None),
            b"gzip" => Ok(Some(Self::Gzip)),
            b"deflate" => Ok(Some(Self::Deflate)),
            other => Err(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// The header value naming this encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
        }
    }

    /// True when a `grpc-accept-encoding` value lists this encoding.
    pub fn is_accepted_by(self, accept: &[u8]) -> bool {
        accept
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii() == self.as_str().as_bytes())
    }
}

/// Decompresses one message payload, reading at most `limit + 1` bytes.
///
/// # Errors
/// RESOURCE_EXHAUSTED when the message inflates past `limit` (compression.md and C-core check the
/// decompressed size too); INTERNAL for corrupt data.
pub fn decompress(encoding: Encoding, payload: &[u8], limit: usize) -> Result<Bytes, Status> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let read = match encoding {
        Encoding::Gzip => read::GzDecoder::new(payload)
            .take(cap)
            .read_to_end(&mut out),
        Encoding::Deflate => read::ZlibDecoder::new(payload)
            .take(cap)
            .read_to_end(&mut out),
    };
    if let Err(e) = read {
        return Err(Status::internal(format!(
            "cannot decompress a {} message: {e}",
            encoding.as_str()
        )));
    }
    if out.len() > limit {
        return Err(Status::resource_exhausted(format!(
            "decompressed message larger than max ({limit} bytes)"
        )));
    }
    Ok(Bytes::from(out))
}

/// Appends one compressed, length-prefixed message (flag 1) holding `message` to `buf`.
///
/// # Errors
/// RESOURCE_EXHAUSTED when the compressed message does not fit the 4-byte length or `max_len`.
pub fn encode_compressed(
    encoding: Encoding,
    message: &[u8],
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<(), Status> {
    let start = buf.len();
    buf.put_bytes(0, PREFIX_LEN);
    let writer = buf.split_off(start + PREFIX_LEN).writer();
    let body = match encoding {
        Encoding::Gzip => {
            let mut w = write::GzEncoder::new(writer, Compression::default());
            w.write_all(message).and_then(|()| w.finish())
        }
        Encoding::Deflate => {
            let mut w = write::ZlibEncoder::new(writer, Compression::default());
            w.write_all(message).and_then(|()| w.finish())
        }
    }
    .map_err(|e| Status::internal(format!("cannot compress a message: {e}")))?
    .into_inner();
    let len = body.len();
    let len32 = u32::try_from(len)
        .ok()
        .filter(|_| len <= max_len)
        .ok_or_else(|| {
            Status::resource_exhausted(format!(
                "compressed message of {len} bytes exceeds the send limit of {max_len} bytes"
            ))
        })?;
    buf.truncate(start);
    put_prefix(buf, true, len32);
    buf.unsplit(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::{frame::FrameDecoder, Code};

    #[test]
    fn round_trip_both_encodings() {
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let message = b"hello hello hello hello".repeat(10);
            let mut buf = BytesMut::from(&b"xy"[..]);
            encode_compressed(encoding, &message, &mut buf, 1024).unwrap();
            assert_eq!(&buf[..2], b"xy");
            let mut decoder = FrameDecoder::new(1024, true);
            decoder.push(buf.split_off(2).freeze());
            let frame = decoder.next_frame().unwrap().unwrap();
            assert!(frame.compressed);
            assert!(frame.payload.len() < message.len());
            assert_eq!(decompress(encoding, &frame.payload, 1024).unwrap(), message);
        }
    }

    // Rule: the decompressed size is bounded by the receive limit (compression.md, GRPC-NOTES
    // §1.3); a bomb is refused after reading limit + 1 bytes.
    #[test]
    fn bomb_is_resource_exhausted_without_inflating_it() {
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let mut buf = BytesMut::new();
        encode_compressed(Encoding::Gzip, &zeros, &mut buf, usize::MAX).unwrap();
        assert!(buf.len() < 64 * 1024);
        let err = decompress(Encoding::Gzip, &buf[PREFIX_LEN..], 4096).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(
            decompress(Encoding::Gzip, &buf[PREFIX_LEN..], zeros.len())
                .unwrap()
                .len(),
            zeros.len()
        );
    }

    #[test]
    fn corrupt_data_is_internal() {
        let err = decompress(Encoding::Deflate, b"not zlib at all", 1024).unwrap_err();
        assert_eq!(err.code(), Code::Internal);
    }

    #[test]
    fn header_values() {
        assert_eq!(Encoding::from_header(b"identity"), Ok(None));
        assert_eq!(Encoding::from_header(b"gzip"), Ok(Some(Encoding::Gzip)));
        assert_eq!(Encoding::from_header(b"br"), Err("br".to_owned()));
        assert!(Encoding::Gzip.is_accepted_by(b"identity, deflate, gzip"));
        assert!(!Encoding::Gzip.is_accepted_by(b"identity,deflate"));
    }
}
