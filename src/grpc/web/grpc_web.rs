//! gRPC-Web's body (grpc/grpc `doc/PROTOCOL-WEB.md`): the gRPC message frames, then the
//! trailers as one more frame whose flag byte has its top bit set; in text mode the whole body
//! in base64, possibly as several separately padded chunks. Sans-IO.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

/// The flag byte of the trailers frame.
pub(crate) const TRAILERS_FLAG: u8 = 0x80;

/// The trailers frame: `key: value\r\n` lines with lower-case names (PROTOCOL-WEB.md).
pub(crate) fn trailers_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(TRAILERS_FLAG);
    frame.put_u32(u32::try_from(block.len()).unwrap_or(u32::MAX));
    frame.extend_from_slice(&block);
    frame.freeze()
}

/// A text-mode request body that does not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadBase64(pub(crate) String);

/// Decodes a `grpc-web-text` body as it arrives: complete 4-character groups are decoded,
/// the rest waits for more; a padded group ends one chunk and another may follow.
#[derive(Debug, Default)]
pub(crate) struct TextDecoder {
    pending: Vec<u8>,
}

impl TextDecoder {
    /// Decodes what `input` completes; keeps an incomplete group for the next call.
    pub(crate) fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), BadBase64> {
        // Line breaks and spaces are not base64, but some encoders wrap their output.
        self.pending
            .extend(input.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        let mut start = 0;
        for group in (0..whole).step_by(4) {
            // A group with padding ends a separately encoded chunk.
            if self.pending[group + 3] == b'=' {
                decode_into(&self.pending[start..group + 4], out)?;
                start = group + 4;
            }
        }
        decode_into(&self.pending[start..whole], out)?;
        self.pending.drain(..whole);
        Ok(())
    }

    /// The body ended: a partial group left over is an error.
    pub(crate) fn finish(&self) -> Result<(), BadBase64> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(BadBase64(format!(
                "the base64 body ends inside a 4-character group ({} left over)",
                self.pending.len()
            )))
        }
    }
}

fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), BadBase64> {
    if text.is_empty() {
        return Ok(());
    }
    STANDARD
        .decode_vec(text, out)
        .map_err(|e| BadBase64(format!("the request body is not valid base64: {e}")))
}

/// One response chunk in text mode: base64 with its own padding, as clients expect.
pub(crate) fn encode_text(chunk: &[u8]) -> Bytes {
    Bytes::from(STANDARD.encode(chunk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_frame_has_the_flag_length_and_lines() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "11".parse().unwrap());
        t.insert("grpc-message", "off%20the%20map".parse().unwrap());
        let frame = trailers_frame(&t);
        assert_eq!(frame[0], 0x80);
        let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 5);
        assert_eq!(
            &frame[5..],
            b"grpc-status: 11\r\ngrpc-message: off%20the%20map\r\n"
        );
    }

    #[test]
    fn text_decodes_split_and_separately_padded_chunks() {
        let whole = b"\x00\x00\x00\x00\x04\x08\x01\x10\x02";
        // One chunk, fed a byte at a time.
        let text = STANDARD.encode(whole);
        let (mut d, mut out) = (TextDecoder::default(), Vec::new());
        for b in text.as_bytes() {
            d.push(&[*b], &mut out).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(out, whole);
        // Two chunks, each padded, fed across the boundary, with a line break.
        let two = format!(
            "{}\r\n{}",
            STANDARD.encode(&whole[..4]),
            STANDARD.encode(&whole[4..])
        );
        let (mut d, mut out) = (TextDecoder::default(), Vec::new());
        let (a, b) = two.as_bytes().split_at(7);
        d.push(a, &mut out).unwrap();
        d.push(b, &mut out).unwrap();
        d.finish().unwrap();
        assert_eq!(out, whole);
    }

    #[test]
    fn bad_text_is_refused() {
        let mut out = Vec::new();
        assert!(TextDecoder::default().push(b"AA!A", &mut out).is_err());
        let mut d = TextDecoder::default();
        d.push(b"AAA", &mut out).unwrap();
        assert!(d.finish().unwrap_err().0.contains("left over"));
        assert_eq!(encode_text(b"\x80"), Bytes::from_static(b"gA=="));
    }
}
