//! gRPC length-prefixed messages: a sans-IO decoder and the encoder helpers.
//!
//! In this crate a "frame" is always the gRPC message of PROTOCOL-HTTP2.md
//! (`Compressed-Flag (1 byte) | Message-Length (4 bytes, big-endian) | Message`); h2 hides the
//! HTTP/2 frames from us. DATA chunk boundaries have nothing to do with message boundaries
//! (GRPC-NOTES §1.3), so [`FrameDecoder`] takes chunks as they come and hands out whole
//! payloads. It knows nothing of status codes: the caller maps a [`FrameError`] to one.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the message prefix: one flag byte and a big-endian `u32` length.
pub const PREFIX_LEN: usize = 5;

/// Default receive limit for one message: 4 MiB, the limit grpc-go, grpc-java and C-core use.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Compressed-Flag value for an uncompressed message (PROTOCOL-HTTP2.md).
const FLAG_UNCOMPRESSED: u8 = 0x00;
/// Compressed-Flag value for a message compressed with the negotiated `grpc-encoding`.
const FLAG_COMPRESSED: u8 = 0x01;

/// What is wrong with a stream of length-prefixed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Declared length over the receive limit; reported as soon as the prefix is read.
    TooLarge {
        /// The length the peer declared.
        len: u32,
        /// The receive limit in bytes.
        limit: usize,
    },
    /// Compressed flag 1 but no message encoding was negotiated.
    CompressedWithoutEncoding,
    /// Flag byte other than 0 or 1.
    InvalidFlag(u8),
    /// The stream ended inside a prefix or a body ("truncated message").
    Truncated,
}

/// One decoded message payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Whether the Compressed-Flag was 1 (the payload uses the negotiated encoding).
    pub compressed: bool,
    /// The message bytes, without the prefix.
    pub payload: Bytes,
}

/// Push-based decoder: DATA chunks in, whole message payloads out.
///
/// A payload that lies within one pushed chunk is a slice of that chunk (no copy). A payload
/// spanning chunks is assembled in one buffer, allocated only once its declared length has
/// passed the limit check and no bigger than that length. Given the caller drains
/// [`next_frame`](Self::next_frame) after every [`push`](Self::push), the bytes held never
/// exceed the limit plus one chunk.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Receive limit for one message, in bytes.
    max_message_size: usize,
    /// Whether a message encoding was negotiated; if not, flag 1 is an error.
    compression: bool,
    /// Pushed chunks not consumed yet, oldest first. Never holds an empty chunk.
    chunks: VecDeque<Bytes>,
    /// Total length of `chunks`, kept so `buffered` is O(1).
    queued: usize,
    state: State,
}

/// Where the decoder is inside the stream; one enum so no flag combination can be invalid.
#[derive(Debug)]
enum State {
    /// Reading a prefix; `have` of its bytes are already in `prefix` (they spanned chunks).
    Prefix {
        prefix: [u8; PREFIX_LEN],
        have: usize,
    },
    /// A checked prefix was read; waiting for `len` body bytes. `buf` holds the part copied so
    /// far and stays unallocated until a copy is needed, so a body that turns out to lie in
    /// one chunk is still sliced rather than copied.
    Body {
        compressed: bool,
        len: usize,
        buf: BytesMut,
    },
    /// An error was reported (or the stream ended truncated): fused, everything ignored.
    Failed,
}

impl FrameDecoder {
    /// max_message_size: receive limit; compression: whether a message encoding was negotiated
    /// (when false, a flag of 1 is CompressedWithoutEncoding).
    pub fn new(max_message_size: usize, compression: bool) -> Self {
        Self {
            max_message_size,
            compression,
            chunks: VecDeque::new(),
            queued: 0,
            state: State::Prefix {
                prefix: [0; PREFIX_LEN],
                have: 0,
            },
        }
    }

    /// Appends one DATA chunk (zero-copy: keeps the Bytes).
    pub fn push(&mut self, chunk: Bytes) {
        if matches!(self.state, State::Failed) || chunk.is_empty() {
            return;
        }
        self.queued += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Next complete message, Ok(None) when more bytes are needed. After an Err it returns that
    /// Err once and then Ok(None) forever (fused), and push() is ignored.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.step() {
            Err(e) => {
                self.fail();
                Err(e)
            }
            ok => ok,
        }
    }

    /// End of stream: Err(Truncated) if a partial prefix or body is buffered (call after draining
    /// next_frame). Ok(()) if clean.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if matches!(self.state, State::Failed) {
            // The error was already reported once; a fused decoder stays quiet.
            return Ok(());
        }
        // "A partial message at EOS -> INTERNAL" (GRPC-NOTES §1.3): the caller decides the code.
        // A prefix already consumed leaves the decoder in Body with possibly nothing buffered:
        // that is still a cut message, so test the state, not only the byte count.
        let at_boundary = matches!(self.state, State::Prefix { have: 0, .. }) && self.queued == 0;
        if !at_boundary {
            self.fail();
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    /// Bytes currently held (for tests / memory accounting).
    pub fn buffered(&self) -> usize {
        self.queued
            + match &self.state {
                State::Prefix { have, .. } => *have,
                State::Body { buf, .. } => buf.len(),
                State::Failed => 0,
            }
    }

    /// One decoding step over the queued chunks; the caller fuses on error.
    fn step(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match &mut self.state {
                State::Failed => return Ok(None),
                State::Prefix { prefix, have } => {
                    let Some(front) = self.chunks.front_mut() else {
                        return Ok(None);
                    };
                    if *have == 0 && front.len() >= PREFIX_LEN {
                        // Fast path: the whole prefix is in the front chunk.
                        let (compressed, len) = check_prefix(
                            &front[..PREFIX_LEN],
                            self.max_message_size,
                            self.compression,
                        )?;
                        if front.len() - PREFIX_LEN >= len {
                            // The body lies in this chunk too: slice it out, no copy.
                            front.advance(PREFIX_LEN);
                            let payload = front.split_to(len);
                            if front.is_empty() {
                                self.chunks.pop_front();
                            }
                            self.queued -= PREFIX_LEN + len;
                            return Ok(Some(Frame {
                                compressed,
                                payload,
                            }));
                        }
                        front.advance(PREFIX_LEN);
                        self.queued -= PREFIX_LEN;
                        self.state = State::Body {
                            compressed,
                            len,
                            buf: BytesMut::new(),
                        };
                        continue;
                    }
                    // Slow path: the prefix spans chunks; gather it byte-wise.
                    let n = (PREFIX_LEN - *have).min(front.len());
                    prefix[*have..*have + n].copy_from_slice(&front[..n]);
                    *have += n;
                    front.advance(n);
                    if front.is_empty() {
                        self.chunks.pop_front();
                    }
                    self.queued -= n;
                    if *have < PREFIX_LEN {
                        continue;
                    }
                    let (compressed, len) =
                        check_prefix(&prefix[..], self.max_message_size, self.compression)?;
                    self.state = State::Body {
                        compressed,
                        len,
                        buf: BytesMut::new(),
                    };
                }
                State::Body {
                    compressed,
                    len,
                    buf,
                } => {
                    let compressed = *compressed;
                    let missing = *len - buf.len();
                    if missing == 0 {
                        // Zero-length messages are valid (PROTOCOL-HTTP2.md allows Length 0).
                        let payload = std::mem::take(buf).freeze();
                        self.state = State::Prefix {
                            prefix: [0; PREFIX_LEN],
                            have: 0,
                        };
                        return Ok(Some(Frame {
                            compressed,
                            payload,
                        }));
                    }
                    let Some(front) = self.chunks.front_mut() else {
                        return Ok(None);
                    };
                    if buf.is_empty() && front.len() >= missing {
                        // The prefix spanned chunks but the body is in one: still no copy.
                        let payload = front.split_to(missing);
                        if front.is_empty() {
                            self.chunks.pop_front();
                        }
                        self.queued -= missing;
                        self.state = State::Prefix {
                            prefix: [0; PREFIX_LEN],
                            have: 0,
                        };
                        return Ok(Some(Frame {
                            compressed,
                            payload,
                        }));
                    }
                    if buf.capacity() == 0 {
                        // `len` passed check_prefix, so it is <= the limit: never reserve an
                        // unchecked wire value (GRPC-NOTES §1.3).
                        buf.reserve(*len);
                    }
                    let n = missing.min(front.len());
                    buf.extend_from_slice(&front[..n]);
                    front.advance(n);
                    if front.is_empty() {
                        self.chunks.pop_front();
                    }
                    self.queued -= n;
                }
            }
        }
    }

    /// Fuses the decoder and drops everything it holds.
    fn fail(&mut self) {
        self.state = State::Failed;
        self.chunks = VecDeque::new();
        self.queued = 0;
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, limit } => {
                write!(f, "message length {len} exceeds the limit of {limit} bytes")
            }
            Self::CompressedWithoutEncoding => {
                f.write_str("compressed message but no message encoding was negotiated")
            }
            Self::InvalidFlag(flag) => write!(f, "invalid compressed flag {flag:#04x}"),
            Self::Truncated => f.write_str("truncated message"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Writes the 5-byte prefix.
pub(crate) fn put_prefix(buf: &mut impl BufMut, compressed: bool, len: u32) {
    buf.put_u8(if compressed {
        FLAG_COMPRESSED
    } else {
        FLAG_UNCOMPRESSED
    });
    buf.put_u32(len);
}

/// Writes prefix + payload in one go (several calls append several messages into one buffer).
///
/// # Panics
///
/// If `payload` is longer than `u32::MAX` bytes, which the wire format cannot express; this is
/// a local programming error, never peer input.
#[cfg(test)]
fn encode_frame(buf: &mut BytesMut, compressed: bool, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("gRPC message longer than u32::MAX bytes");
    buf.reserve(PREFIX_LEN + payload.len());
    put_prefix(buf, compressed, len);
    buf.put_slice(payload);
}

/// Validates a complete prefix: the flag, then the declared length against the limit.
fn check_prefix(
    prefix: &[u8],
    max_message_size: usize,
    compression: bool,
) -> Result<(bool, usize), FrameError> {
    let compressed = match prefix[0] {
        FLAG_UNCOMPRESSED => false,
        // "Compressed-Flag 1 ... without grpc-encoding" -> INTERNAL (GRPC-NOTES §1.3).
        FLAG_COMPRESSED if !compression => return Err(FrameError::CompressedWithoutEncoding),
        FLAG_COMPRESSED => true,
        // The flag is 0 or 1; "any other value -> INTERNAL" (GRPC-NOTES §1.3).
        flag => return Err(FrameError::InvalidFlag(flag)),
    };
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    // Check against the limit before buffering or allocating (GRPC-NOTES §1.3).
    match usize::try_from(len) {
        Ok(n) if n <= max_message_size => Ok((compressed, n)),
        _ => Err(FrameError::TooLarge {
            len,
            limit: max_message_size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stream(msgs: &[&[u8]]) -> Bytes {
        let mut buf = BytesMut::new();
        for m in msgs {
            encode_frame(&mut buf, false, m);
        }
        buf.freeze()
    }

    /// Feeds `data` split at `cuts`, draining after each push; returns payloads and outcome.
    fn decode_split(
        data: &Bytes,
        sizes: impl IntoIterator<Item = usize>,
        limit: usize,
    ) -> (Vec<Bytes>, Result<(), FrameError>) {
        let mut dec = FrameDecoder::new(limit, false);
        let mut out = Vec::new();
        let mut rest = data.clone();
        let mut sizes = sizes.into_iter();
        loop {
            let n = if rest.is_empty() {
                0
            } else {
                sizes.next().unwrap_or(rest.len()).clamp(1, rest.len())
            };
            if n > 0 {
                dec.push(rest.split_to(n));
            }
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => out.push(f.payload),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
            if rest.is_empty() {
                return (out, dec.finish());
            }
        }
    }

    // PROTOCOL-HTTP2.md: prefix is flag + 4-byte big-endian length.
    #[test]
    fn prefix_layout() {
        let mut buf = Vec::new();
        put_prefix(&mut buf, true, 0x0102_0304);
        assert_eq!(buf, [0x01, 0x01, 0x02, 0x03, 0x04]);
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, false, b"hi");
        encode_frame(&mut buf, true, b"");
        assert_eq!(&buf[..], b"\x00\x00\x00\x00\x02hi\x01\x00\x00\x00\x00");
    }

    // GRPC-NOTES §1.3: several messages in one DATA frame.
    #[test]
    fn several_messages_in_one_chunk() {
        let data = stream(&[b"a", b"bc", b""]);
        let (msgs, end) = decode_split(&data, [], 100);
        assert_eq!(msgs, vec![&b"a"[..], b"bc", b""]);
        assert_eq!(end, Ok(()));
    }

    // PROTOCOL-HTTP2.md: Length 0 is a valid (empty) message.
    #[test]
    fn zero_length_messages() {
        let data = stream(&[b"", b"", b""]);
        for size in 1..=data.len() {
            let (msgs, end) = decode_split(&data, std::iter::repeat(size), 0);
            assert_eq!(msgs.len(), 3);
            assert!(msgs.iter().all(|m| m.is_empty()));
            assert_eq!(end, Ok(()));
        }
    }

    // WIRE-API: a payload inside one chunk is a slice of it (same memory, no copy).
    #[test]
    fn payload_in_one_chunk_is_not_copied() {
        let data = stream(&[b"hello", b"world"]);
        let mut dec = FrameDecoder::new(100, false);
        dec.push(data.clone());
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(f.payload.as_ptr(), data[PREFIX_LEN..].as_ptr());
        // Prefix split across chunks, body in the next one: still a slice of that chunk.
        let mut dec = FrameDecoder::new(100, false);
        dec.push(data.slice(..3));
        assert_eq!(dec.next_frame(), Ok(None));
        let second = data.slice(3..);
        dec.push(second.clone());
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(f.payload.as_ptr(), second[2..].as_ptr());
    }

    // GRPC-NOTES §1.3: over the limit is reported from the prefix alone, before any body.
    #[test]
    fn too_large_reported_at_prefix() {
        let mut dec = FrameDecoder::new(10, false);
        dec.push(Bytes::from_static(b"\x00\x00\x00\x00\x0b"));
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge { len: 11, limit: 10 })
        );
        assert_eq!(
            FrameError::TooLarge {
                len: 5_000_000,
                limit: 4_194_304
            }
            .to_string(),
            "message length 5000000 exceeds the limit of 4194304 bytes"
        );
        // Exactly the limit is fine.
        let (msgs, end) = decode_split(&stream(&[&[7; 10]]), [3], 10);
        assert_eq!((msgs.len(), end), (1, Ok(())));
    }

    // GRPC-NOTES §1.3: a 4 GiB declared length must not allocate (nothing is reserved).
    #[test]
    fn huge_declared_length_does_not_allocate() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, false);
        dec.push(Bytes::from_static(b"\x00\xff\xff\xff\xff"));
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::TooLarge { len: u32::MAX, .. })
        ));
        assert_eq!(dec.buffered(), 0);
    }

    // GRPC-NOTES §1.3: flag 1 without grpc-encoding -> CompressedWithoutEncoding.
    #[test]
    fn compressed_flag_needs_encoding() {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, true, b"z");
        let data = buf.freeze();
        let mut dec = FrameDecoder::new(100, false);
        dec.push(data.clone());
        assert_eq!(dec.next_frame(), Err(FrameError::CompressedWithoutEncoding));
        let mut dec = FrameDecoder::new(100, true);
        dec.push(data);
        let f = dec.next_frame().unwrap().unwrap();
        assert!(f.compressed);
    }

    // GRPC-NOTES §1.3: a flag other than 0 or 1 is an error.
    #[test]
    fn invalid_flag() {
        let mut dec = FrameDecoder::new(100, true);
        dec.push(Bytes::from_static(b"\x02\x00\x00\x00\x00"));
        assert_eq!(dec.next_frame(), Err(FrameError::InvalidFlag(2)));
    }

    // GRPC-NOTES §1.3: a partial prefix or body at end of stream is Truncated.
    #[test]
    fn truncated_at_end_of_stream() {
        for cut in [1, 4, 5, 6] {
            let data = stream(&[b"xy"]).slice(..cut);
            let (msgs, end) = decode_split(&data, [], 100);
            assert!(msgs.is_empty());
            assert_eq!(end, Err(FrameError::Truncated), "cut {cut}");
        }
        assert_eq!(FrameError::Truncated.to_string(), "truncated message");
    }

    // STYLE §5 rule 5: after an error, the error once, then Ok(None); push ignored.
    #[test]
    fn fused_after_error() {
        let mut dec = FrameDecoder::new(100, false);
        dec.push(Bytes::from_static(b"\x07\x00\x00\x00\x00"));
        assert_eq!(dec.next_frame(), Err(FrameError::InvalidFlag(7)));
        assert_eq!(dec.next_frame(), Ok(None));
        dec.push(stream(&[b"ok"]));
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.finish(), Ok(()));
    }

    // GRPC-NOTES §1.3: memory stays within limit + one chunk when drained after each push.
    #[test]
    fn memory_bounded_by_limit_plus_chunk() {
        let limit = 1000;
        let data = stream(&[&[1; 1000], &[2; 999], &[3; 1]]);
        let mut dec = FrameDecoder::new(limit, false);
        for chunk in data.chunks(7) {
            dec.push(Bytes::copy_from_slice(chunk));
            while let Some(_f) = dec.next_frame().unwrap() {}
            assert!(dec.buffered() <= limit + chunk.len() + PREFIX_LEN);
        }
        assert_eq!(dec.finish(), Ok(()));
    }

    fn arb_msgs() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12)
    }

    proptest! {
        // GRPC-NOTES §1.3: message boundaries are independent of DATA boundaries.
        #[test]
        fn same_payloads_however_split(
            msgs in arb_msgs(),
            cuts in prop::collection::vec(1usize..64, 0..64),
        ) {
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let data = stream(&refs);
            let whole = decode_split(&data, [], 300);
            let bytewise = decode_split(&data, std::iter::repeat(1), 300);
            let random = decode_split(&data, cuts, 300);
            prop_assert_eq!(whole.1, Ok(()));
            prop_assert_eq!(&whole.0, &msgs);
            prop_assert_eq!(&bytewise, &whole);
            prop_assert_eq!(&random, &whole);
        }

        // Arbitrary bytes: any split gives the same payloads and the same error.
        #[test]
        fn arbitrary_bytes_split_invariant(
            data in prop::collection::vec(any::<u8>(), 0..200),
            cuts in prop::collection::vec(1usize..16, 0..64),
        ) {
            let data = Bytes::from(data);
            let whole = decode_split(&data, [], 40);
            prop_assert_eq!(&decode_split(&data, std::iter::repeat(1), 40), &whole);
            prop_assert_eq!(decode_split(&data, cuts, 40), whole);
        }
    }
}
