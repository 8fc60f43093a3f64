//! gRPC on top of the raw frames: the request head, the length-prefixed message framing
//! (gRPC's PROTOCOL-HTTP2.md, "Length-Prefixed-Message") and a reference decoder for it.
//!
//! The decoder is written to be obviously right rather than fast: tests use it as an oracle
//! for what the server sent, so it shares no code with satellite's own decoder.

use crate::hpack::literal;

/// Bytes of the message prefix: the Compressed-Flag and a 4-byte big-endian length.
pub const MESSAGE_PREFIX_LEN: usize = 5;

/// A header block for a gRPC POST to `path` with `extra` headers after the usual ones.
pub fn grpc_block(path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "testkit"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, name, value.as_bytes());
    }
    for (name, value) in extra {
        literal(&mut block, name, value);
    }
    block
}

/// One length-prefixed message: the prefix (flag 1 when `compressed`) and `body` as given.
///
/// # Panics
///
/// If `body` does not fit the 32-bit length field.
pub fn grpc_frame(compressed: bool, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("a message body under 4 GiB");
    let mut out = Vec::with_capacity(MESSAGE_PREFIX_LEN + body.len());
    out.push(u8::from(compressed));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A length-prefixed uncompressed gRPC message holding `msg` encoded with prost.
pub fn grpc_message(msg: &impl prost::Message) -> Vec<u8> {
    grpc_frame(false, &msg.encode_to_vec())
}

/// One message as the reference decoder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The Compressed-Flag was 1.
    pub compressed: bool,
    /// The body, still compressed when `compressed`.
    pub body: Vec<u8>,
}

/// Why [`decode_messages`] stopped before the end of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A Compressed-Flag other than 0 or 1.
    InvalidFlag(u8),
    /// The input ends inside a prefix or a body.
    Truncated,
}

/// Splits a whole stream of length-prefixed messages into its messages.
///
/// # Errors
///
/// [`DecodeError`] at the first flag byte that is not 0 or 1, or when the stream ends inside a
/// message.
pub fn decode_messages(stream: &[u8]) -> Result<Vec<RawMessage>, DecodeError> {
    let mut messages = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let Some((prefix, tail)) = rest.split_first_chunk::<MESSAGE_PREFIX_LEN>() else {
            return Err(DecodeError::Truncated);
        };
        let [flag, len @ ..] = *prefix;
        if flag > 1 {
            return Err(DecodeError::InvalidFlag(flag));
        }
        let len = u32::from_be_bytes(len) as usize;
        if tail.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (body, tail) = tail.split_at(len);
        messages.push(RawMessage {
            compressed: flag == 1,
            body: body.to_vec(),
        });
        rest = tail;
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_messages_decode_back() {
        let mut stream = grpc_frame(false, b"");
        stream.extend(grpc_frame(true, b"zz"));
        stream.extend(grpc_message(&b"hi".to_vec()));
        assert_eq!(
            decode_messages(&stream),
            Ok(vec![
                RawMessage {
                    compressed: false,
                    body: vec![]
                },
                RawMessage {
                    compressed: true,
                    body: b"zz".to_vec()
                },
                // prost's `Vec<u8>` is a BytesValue: field 1, length-delimited.
                RawMessage {
                    compressed: false,
                    body: b"\x0a\x02hi".to_vec()
                },
            ])
        );
    }

    #[test]
    fn bad_streams_are_named() {
        assert_eq!(decode_messages(b""), Ok(vec![]));
        assert_eq!(
            decode_messages(b"\x00\x00\x00"),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_messages(b"\x00\x00\x00\x00\x02x"),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_messages(b"\x02\x00\x00\x00\x00"),
            Err(DecodeError::InvalidFlag(2))
        );
    }
}
