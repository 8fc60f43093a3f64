//! Message compression (compression.md): the `grpc-encoding` we accept and send, and bounded
//! decompression.
//!
//! "deflate" in gRPC is the zlib-wrapped format (as grpcio and tonic use it). Decompression reads
//! at most the receive limit plus one byte, so a small message that inflates without bound (a
//! "zip bomb") costs no more memory than the limit before it is refused.

use std::io::{Read as _, Write as _};

use bytes::{Bytes, BytesMut};
use flate2::{read, write, Compression};

use crate::grpc::{codec::EncodeError, frame::put_prefix, metadata::GRPC_ENCODING};

/// The encodings we can decode, as sent in `grpc-accept-encoding`.
pub(crate) const ACCEPT_ENCODING: &str = "gzip,deflate,identity";

/// A message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// gzip (RFC 1952).
    Gzip,
    /// zlib-wrapped deflate (RFC 1950), what gRPC calls "deflate".
    Deflate,
}

impl Encoding {
    /// The message encoding a head declares (`grpc-encoding`); `Ok(None)` for identity or
    /// none.
    ///
    /// # Errors
    /// The name of an encoding we do not support.
    pub(crate) fn of_head(headers: &http::HeaderMap) -> Result<Option<Self>, String> {
        headers
            .get(GRPC_ENCODING)
            .map_or(Ok(None), |v| Self::from_header(v.as_bytes()))
    }

    /// The encoding named by a `grpc-encoding` value; `Ok(None)` for identity.
    ///
    /// # Errors
    /// The value itself, when it names an encoding we do not support.
    pub(crate) fn from_header(value: &[u8]) -> Result<Option<Self>, String> {
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
    pub(crate) fn is_accepted_by(self, accept: &[u8]) -> bool {
        accept
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii() == self.as_str().as_bytes())
    }
}

/// Why a compressed message cannot be read; the caller decides the status.
#[derive(Debug)]
pub(crate) enum DecompressError {
    /// It inflates past the receive limit.
    TooLarge { limit: usize },
    /// The data is not valid for its encoding.
    Corrupt(Encoding, std::io::Error),
}

/// Decompresses one message payload, reading at most `limit + 1` bytes (compression.md and
/// C-core bound the decompressed size too).
pub(crate) fn decompress(
    encoding: Encoding,
    payload: &[u8],
    limit: usize,
) -> Result<Bytes, DecompressError> {
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
        return Err(DecompressError::Corrupt(encoding, e));
    }
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// Appends one compressed, length-prefixed message (flag 1) holding `message` to `buf`.
pub(crate) fn encode_compressed(
    encoding: Encoding,
    message: &[u8],
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<(), EncodeError> {
    // Compressed into its own buffer first: the prefix needs the compressed length, and a copy
    // is cheap next to deflating.
    let body = match encoding {
        Encoding::Gzip => {
            let mut w = write::GzEncoder::new(Vec::new(), Compression::default());
            w.write_all(message).and_then(|()| w.finish())
        }
        Encoding::Deflate => {
            let mut w = write::ZlibEncoder::new(Vec::new(), Compression::default());
            w.write_all(message).and_then(|()| w.finish())
        }
    }
    .map_err(EncodeError::Compress)?;
    let len = body.len();
    let Some(len32) = u32::try_from(len).ok().filter(|_| len <= max_len) else {
        return Err(EncodeError::TooLarge {
            len,
            limit: max_len,
            compressed: true,
        });
    };
    put_prefix(buf, true, len32);
    buf.extend_from_slice(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::frame::{FrameDecoder, PREFIX_LEN};

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
        assert!(matches!(err, DecompressError::TooLarge { limit: 4096 }));
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
        assert!(matches!(
            err,
            DecompressError::Corrupt(Encoding::Deflate, _)
        ));
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
