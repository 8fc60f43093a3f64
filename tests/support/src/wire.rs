//! Fuzz logic for the sans-IO wire core; each of `fuzz/fuzz_targets/{frame_decoder,
//! grpc_timeout,status_trailers,metadata_bin}.rs` is one call into this module, and
//! `tests/fuzz_seeds.rs` runs the committed seeds through it under stable `cargo test`.
//!
//! The runtime's wire types are crate-private; this crate reaches them through
//! `satellite::grpc::fuzz_bridge` (the `wire-internals` feature, which it turns on, as
//! `--cfg fuzzing` does under cargo fuzz). Every function asserts invariants and panics only
//! when one is broken.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use satellite::grpc::{
    fuzz_bridge::{
        capped_message, decode_bin, encode_bin, format_timeout, parse_timeout, percent_decode,
        percent_encode, read_status, write_status, Frame, FrameDecoder, FrameError, MAX_TIMEOUT,
        PREFIX_LEN,
    },
    Code, Status,
};

/// Bytes of input the frame target reads as its configuration before the stream.
const FRAME_HEADER_LEN: usize = 4;
/// Most chunk sizes in a schedule; the schedule repeats.
const MAX_SCHEDULE: usize = 16;

/// Frame decoder: any chunking of any bytes decodes like a whole-buffer reference decoder.
///
/// Input: `limit_hi limit_lo flags schedule_len [schedule bytes] stream...`. The limit is
/// 0..=65 535; bit 0 of `flags` negotiates compression; each schedule byte is a chunk length
/// (0 pushes an empty chunk), used in a cycle; an empty or all-zero schedule pushes the stream
/// whole.
pub fn frame_decoder(data: &[u8]) {
    if data.len() < FRAME_HEADER_LEN {
        return;
    }
    let limit = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let compression = data[2] & 1 == 1;
    let schedule_len = usize::from(data[3]) % (MAX_SCHEDULE + 1);
    let rest = &data[FRAME_HEADER_LEN..];
    let schedule_len = schedule_len.min(rest.len());
    let (mut schedule, stream) = rest.split_at(schedule_len);
    if schedule.iter().all(|&s| s == 0) {
        // A schedule of only empty chunks would never make progress: push the stream whole.
        schedule = &[];
    }
    let stream = Bytes::copy_from_slice(stream);

    let expected = reference_decode(&stream, limit, compression);

    let mut dec = FrameDecoder::new(limit, compression);
    let mut frames = Vec::new();
    let mut error = None;
    let mut rest = stream;
    let mut sizes = schedule.iter().cycle();
    loop {
        let n = match sizes.next() {
            Some(&s) => usize::from(s).min(rest.len()),
            None => rest.len(),
        };
        let chunk = rest.split_to(n);
        let chunk_len = chunk.len();
        dec.push(chunk);
        if error.is_none() {
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        if error.is_some() {
            // Fused: nothing more comes out and nothing is held.
            assert_eq!(dec.next_frame(), Ok(None));
            assert_eq!(dec.buffered(), 0);
        }
        // WIRE-API: memory held stays within limit + one chunk when drained after each push.
        assert!(dec.buffered() <= limit + chunk_len + PREFIX_LEN);
        if rest.is_empty() {
            break;
        }
    }
    if error.is_none() {
        error = dec.finish().err();
    }
    assert_eq!(dec.next_frame(), Ok(None));
    for f in &frames {
        assert!(f.payload.len() <= limit);
        assert!(compression || !f.compressed);
    }
    assert_eq!((frames, error), expected);
}

/// grpc-timeout: parse never panics; format rounds up within one unit and parses back.
pub fn grpc_timeout(data: &[u8]) {
    if let Ok(d) = parse_timeout(data) {
        check_timeout_format(d);
        // Parsing a canonical rendering is exact: the value is already a whole number of units.
        assert_eq!(parse_timeout(format_timeout(d).as_bytes()), Ok(d));
    }
    let mut secs = [0u8; 8];
    let mut nanos = [0u8; 4];
    let n = data.len().min(8);
    secs[..n].copy_from_slice(&data[..n]);
    if data.len() > 8 {
        let m = (data.len() - 8).min(4);
        nanos[..m].copy_from_slice(&data[8..8 + m]);
    }
    let secs = u64::from_le_bytes(secs);
    let nanos = u32::from_le_bytes(nanos) % 1_000_000_000;
    check_timeout_format(Duration::new(secs, nanos));
    // Small durations too, where the precise units are chosen.
    check_timeout_format(Duration::new(secs % 1_000, nanos));
    check_timeout_format(Duration::from_nanos(secs % 10_000_000_000));
}

/// Status trailers: percent-encoding and Status <-> headers round-trip; peer bytes never panic.
pub fn status_trailers(data: &[u8]) {
    let Some((&code, rest)) = data.split_first() else {
        return;
    };
    // Split the rest at the first 0xFF: message text before, details after.
    let (msg, details) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let message = String::from_utf8_lossy(msg).into_owned();

    let encoded = percent_encode(&message);
    assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    assert_eq!(percent_decode(encoded.as_bytes()), message);

    let status = Status::new(Code::from_i32(i32::from(code) - 64), message.clone())
        .with_details(Bytes::copy_from_slice(details));
    let mut headers = HeaderMap::new();
    write_status(&status, &mut headers);
    let Some(back) = read_status(&headers) else {
        panic!("write_headers wrote no grpc-status");
    };
    assert_eq!(back.code(), status.code());
    assert_eq!(back.message(), capped_message(&message));
    assert_eq!(back.details(), status.details());

    // Arbitrary peer bytes in each of the three headers: never a panic.
    let mut peer = HeaderMap::new();
    let parts: Vec<&[u8]> = rest.splitn(3, |&b| b == 0xff).collect();
    let names = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
    for (name, part) in names.iter().zip(parts) {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            peer.insert(*name, v);
        }
    }
    let _ = read_status(&peer);
    let _ = percent_decode(data);
    let _ = Code::from_bytes(data);
}

/// `-bin` metadata: base64 round trips (unpadded, padded, joined); arbitrary input never panics.
pub fn metadata_bin(data: &[u8]) {
    use base64::Engine as _;

    let _ = decode_bin(data);
    assert_eq!(decode_bin(encode_bin(data).as_bytes()), Ok(data.to_vec()));
    let padded = base64::engine::general_purpose::STANDARD.encode(data);
    assert_eq!(decode_bin(padded.as_bytes()), Ok(data.to_vec()));
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (a, b) = data.split_at(cut);
    let joined = format!(
        "{},{}",
        encode_bin(a),
        base64::engine::general_purpose::STANDARD.encode(b)
    );
    assert_eq!(decode_bin(joined.as_bytes()), Ok(data.to_vec()));
}

/// Obviously correct decoder over the whole stream: the oracle for `frame_decoder`.
fn reference_decode(
    stream: &[u8],
    limit: usize,
    compression: bool,
) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        if rest.len() < PREFIX_LEN {
            return (frames, Some(FrameError::Truncated));
        }
        let flag = rest[0];
        if flag > 1 {
            return (frames, Some(FrameError::InvalidFlag(flag)));
        }
        if flag == 1 && !compression {
            return (frames, Some(FrameError::CompressedWithoutEncoding));
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len as usize > limit {
            return (frames, Some(FrameError::TooLarge { len, limit }));
        }
        let body = &rest[PREFIX_LEN..];
        if body.len() < len as usize {
            return (frames, Some(FrameError::Truncated));
        }
        frames.push(Frame {
            compressed: flag == 1,
            payload: Bytes::copy_from_slice(&body[..len as usize]),
        });
        rest = &body[len as usize..];
    }
    (frames, None)
}

fn check_timeout_format(d: Duration) {
    let s = format_timeout(d);
    assert!((2..=9).contains(&s.len()), "{s:?}");
    let Ok(back) = parse_timeout(s.as_bytes()) else {
        panic!("format({d:?}) = {s:?} does not parse");
    };
    if d > MAX_TIMEOUT {
        assert_eq!(back, MAX_TIMEOUT);
        return;
    }
    assert!(back >= d, "format({d:?}) = {s:?} rounds down");
    let unit = match s.as_bytes()[s.len() - 1] {
        b'n' => 1,
        b'u' => 1_000,
        b'm' => 1_000_000,
        b'S' => 1_000_000_000,
        b'M' => 60_000_000_000,
        _ => 3_600_000_000_000u128,
    };
    assert!(back.as_nanos() - d.as_nanos() < unit, "{d:?} -> {s:?}");
    if d > Duration::ZERO {
        assert!(!s.starts_with('0'), "{d:?} -> {s:?}");
    }
}
