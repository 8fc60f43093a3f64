//! HTTP/2 frames (RFC 9113 §4, §6): the constants, a writer, and [`Frame`] as read back.
//!
//! The writer checks nothing beyond the 24-bit length field: a test that wants a malformed
//! frame builds it with [`frame`] and the bytes it likes.

// ===== frame types, flags, error codes (RFC 9113 §6, §7) =====

/// Frame type DATA (RFC 9113 §6.1).
pub const DATA: u8 = 0x0;
/// Frame type HEADERS (RFC 9113 §6.2).
pub const HEADERS: u8 = 0x1;
/// Frame type RST_STREAM (RFC 9113 §6.4).
pub const RST_STREAM: u8 = 0x3;
/// Frame type SETTINGS (RFC 9113 §6.5).
pub const SETTINGS: u8 = 0x4;
/// Frame type PING (RFC 9113 §6.7).
pub const PING: u8 = 0x6;
/// Frame type GOAWAY (RFC 9113 §6.8).
pub const GOAWAY: u8 = 0x7;
/// Frame type WINDOW_UPDATE (RFC 9113 §6.9).
pub const WINDOW_UPDATE: u8 = 0x8;
/// Frame type CONTINUATION (RFC 9113 §6.10).
pub const CONTINUATION: u8 = 0x9;

/// Flag END_STREAM on DATA and HEADERS.
pub const END_STREAM: u8 = 0x1;
/// Flag ACK on SETTINGS and PING.
pub const ACK: u8 = 0x1;
/// Flag END_HEADERS on HEADERS and CONTINUATION.
pub const END_HEADERS: u8 = 0x4;

/// Error code NO_ERROR (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
/// Error code PROTOCOL_ERROR.
pub const PROTOCOL_ERROR: u32 = 0x1;
/// Error code FLOW_CONTROL_ERROR.
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
/// Error code REFUSED_STREAM.
pub const REFUSED_STREAM: u32 = 0x7;
/// Error code CANCEL.
pub const CANCEL: u32 = 0x8;
/// Error code ENHANCE_YOUR_CALM.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Setting SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113 §6.5.2).
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// The client connection preface's fixed magic (RFC 9113 §3.4); a SETTINGS frame must follow.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of a frame header: 24-bit length, type, flags, 31-bit stream id.
pub const FRAME_HEADER_LEN: usize = 9;

/// Largest DATA payload we write in one frame: the default SETTINGS_MAX_FRAME_SIZE (16 KiB).
const MAX_DATA_PAYLOAD: usize = 16_384;

// ===== writing =====

/// One frame: the 9-byte header and the payload.
///
/// # Panics
///
/// If `payload` does not fit the 24-bit length field.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    let len = u32::try_from(payload.len()).expect("a payload under 4 GiB");
    assert!(len < 1 << 24, "a frame payload of {len} bytes");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame (not an ACK) carrying `params` as (identifier, value) pairs.
pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(6 * params.len());
    for (id, value) in params {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

/// An RST_STREAM frame for `stream` with error `code`.
pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A WINDOW_UPDATE frame for `stream` (0: the connection) by `increment`.
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// One DATA frame holding `bytes`, with END_STREAM when `end`.
pub fn data(stream: u32, bytes: &[u8], end: bool) -> Vec<u8> {
    frame(DATA, if end { END_STREAM } else { 0 }, stream, bytes)
}

/// `bytes` as DATA frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE), the last
/// with END_STREAM when `end`.
pub fn data_frames(stream: u32, bytes: &[u8], end: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = bytes.chunks(MAX_DATA_PAYLOAD).collect();
    let mut out = Vec::with_capacity(bytes.len() + FRAME_HEADER_LEN * chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(data(stream, chunk, end && i + 1 == chunks.len()));
    }
    out
}

/// A complete header block in one HEADERS frame (END_HEADERS), with END_STREAM when
/// `end_stream`.
pub fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

// ===== reading =====

/// One frame as read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type (`DATA`, `HEADERS`, ...).
    pub kind: u8,
    /// The flags byte.
    pub flags: u8,
    /// The stream id, reserved bit cleared.
    pub stream: u32,
    /// The payload, padding included: the reader does not interpret it.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Takes one whole frame off the front of `buf`; `None` while `buf` holds less than one.
    pub fn take(buf: &mut Vec<u8>) -> Option<Self> {
        let header = buf.get(..FRAME_HEADER_LEN)?;
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let payload = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?.to_vec();
        let frame = Self {
            kind: header[3],
            flags: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7FFF_FFFF,
            payload,
        };
        buf.drain(..FRAME_HEADER_LEN + len);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_as_written() {
        let mut buf = headers(1, b"block", false);
        buf.extend(data_frames(1, &[7; MAX_DATA_PAYLOAD + 1], true));
        buf.extend(rst(0x8000_0003, CANCEL));
        buf.extend_from_slice(&[0, 0, 9]);

        let head = Frame::take(&mut buf).unwrap();
        assert_eq!(
            (head.kind, head.flags, head.stream, &head.payload[..]),
            (HEADERS, END_HEADERS, 1, &b"block"[..])
        );
        let first = Frame::take(&mut buf).unwrap();
        assert_eq!((first.flags, first.payload.len()), (0, MAX_DATA_PAYLOAD));
        let last = Frame::take(&mut buf).unwrap();
        assert_eq!((last.flags, last.payload.len()), (END_STREAM, 1));
        let reset = Frame::take(&mut buf).unwrap();
        assert_eq!((reset.kind, reset.stream), (RST_STREAM, 3));
        assert_eq!(reset.payload, CANCEL.to_be_bytes());
        // A partial header stays in the buffer.
        assert_eq!(Frame::take(&mut buf), None);
        assert_eq!(buf, [0, 0, 9]);
    }

    #[test]
    fn settings_are_six_bytes_each() {
        let f = settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1), (0x3, 100)]);
        assert_eq!(
            f,
            [0, 0, 12, SETTINGS, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 3, 0, 0, 0, 100]
        );
    }
}
