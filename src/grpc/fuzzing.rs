//! Fuzz logic for the wire core; each `fuzz/fuzz_targets/*.rs` is one call into this module.
//!
//! Living beside the code (rustls's `internal::fuzzing`, STYLE §5 rule 19) means the targets
//! see the real types and the seed corpus also runs under stable `cargo test`. Every function
//! asserts invariants and panics only when one is broken.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};

use crate::grpc::frame::{Frame, FrameDecoder, FrameError, PREFIX_LEN};
use crate::grpc::metadata::{decode_bin, encode_bin};
use crate::grpc::status::{capped_message, percent_decode, percent_encode, Code, Status};
use crate::grpc::timeout::{self, MAX_TIMEOUT};

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
    if let Ok(d) = timeout::parse(data) {
        check_timeout_format(d);
        // Parsing a canonical rendering is exact: the value is already a whole number of units.
        assert_eq!(timeout::parse(timeout::format(d).as_bytes()), Ok(d));
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
    status.add_to_headers(&mut headers);
    let Some(back) = Status::from_headers(&headers) else {
        panic!("add_to_headers wrote no grpc-status");
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
    let _ = Status::from_headers(&peer);
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
    let s = timeout::format(d);
    assert!((2..=9).contains(&s.len()), "{s:?}");
    let Ok(back) = timeout::parse(s.as_bytes()) else {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Runs every committed seed of one target through its fuzz function.
    fn run_seeds(target: &str, f: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n >= 5, "{} has only {n} seeds", dir.display());
    }

    #[test]
    fn seeds_frame_decoder() {
        run_seeds("frame_decoder", frame_decoder);
    }

    #[test]
    fn seeds_grpc_timeout() {
        run_seeds("grpc_timeout", grpc_timeout);
    }

    #[test]
    fn seeds_status_trailers() {
        run_seeds("status_trailers", status_trailers);
    }

    #[test]
    fn seeds_metadata_bin() {
        run_seeds("metadata_bin", metadata_bin);
    }

    // Regression: a chunk schedule of only zeros looped forever pushing empty chunks (found by
    // cargo fuzz as a hang, not a crash: libFuzzer's default timeout is 20 minutes).
    #[test]
    fn frame_decoder_all_zero_schedule_terminates() {
        frame_decoder(b"\x00\x64\x00\x02\x00\x00\x00\x00\x00\x00\x01x");
        frame_decoder(b"\x00\x64\x00\x01\x00");
    }

    #[test]
    fn short_and_empty_inputs() {
        for data in [&b""[..], b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x00"] {
            frame_decoder(data);
            grpc_timeout(data);
            status_trailers(data);
            metadata_bin(data);
        }
    }
}

// ===== end-to-end: the server's whole request path over an in-memory connection =====

/// The client connection preface (RFC 9113 §3.4) followed by an empty SETTINGS frame.
const E2E_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// Wall-clock budget for each phase of one input; exceeding it is a finding (a hang).
const E2E_BUDGET: Duration = Duration::from_secs(5);
/// The e2e server's receive limit: small, so size checks are reachable.
const E2E_MAX_RECV: usize = 64 * 1024;

/// Server end to end: the HTTP/2 preface, then arbitrary client bytes in fuzzer-chosen chunks,
/// through `serve_io` (plaintext, in memory) to a router with all four call kinds.
///
/// Input: `flags schedule_len [schedule bytes] client bytes...`. When bit 0 of `flags` is set a
/// well-formed call (unary, or server-streaming when bit 1 is also set) goes first on stream 1
/// and must end with trailers (a HEADERS frame with END_STREAM) before the fuzzer's bytes are
/// written. Each schedule byte is a chunk length (0 is taken as 1), used in a cycle. After the
/// bytes the client half-closes; the server task must then end within the budget (so nothing it
/// holds outlives the connection), and must never panic.
pub fn server_e2e(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let schedule_len = usize::from(data[1]) % (MAX_SCHEDULE + 1);
    let rest = &data[2..];
    let schedule_len = schedule_len.min(rest.len());
    let (schedule, bytes) = rest.split_at(schedule_len);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(server_e2e_run(flags, schedule, bytes));
}

async fn server_e2e_run(flags: u8, schedule: &[u8], bytes: &[u8]) {
    use tokio::io::AsyncWriteExt as _;

    let (client, server_io) = tokio::io::duplex(16 * 1024);
    let mut config = crate::grpc::ServerConfig::new(crate::grpc::Transport::Plaintext);
    config.max_recv_message_size = E2E_MAX_RECV;
    config.max_send_message_size = E2E_MAX_RECV;
    config.handshake_timeout = Duration::from_secs(1);
    config.keepalive_interval = None;
    let server = tokio::spawn(crate::grpc::server::serve_io(
        server_io,
        config,
        e2e_router(),
    ));
    let (read, mut write) = tokio::io::split(client);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(e2e_read_frames(read, ended_tx));

    write.write_all(E2E_PREFACE).await.expect("the preface");
    if flags & 1 == 1 {
        let streaming = flags & 2 == 2;
        let path = if streaming { E2E_COUNT } else { E2E_ECHO };
        write
            .write_all(&e2e_valid_call(1, path, b"hello"))
            .await
            .expect("the valid call");
        let end = tokio::time::timeout(E2E_BUDGET, ended_rx)
            .await
            .expect("a well-formed call got no answer in time")
            .expect("the connection ended before the well-formed call did");
        assert!(
            end,
            "a well-formed call was reset instead of ending with trailers"
        );
    }
    let mut rest = bytes;
    let mut sizes = schedule.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .map_or(rest.len(), |&s| usize::from(s).max(1))
            .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        // The server may have closed already (GOAWAY, then EOF): the rest goes nowhere.
        if tokio::time::timeout(E2E_BUDGET, write.write_all(chunk))
            .await
            .map_or(true, |r| r.is_err())
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    let _ = write.shutdown().await;
    let joined = tokio::time::timeout(E2E_BUDGET, server)
        .await
        .expect("the server task outlived its half-closed connection");
    if let Err(e) = joined {
        std::panic::resume_unwind(e.into_panic());
    }
    drop(write);
    let _ = tokio::time::timeout(E2E_BUDGET, reader)
        .await
        .expect("the server's output never ended");
}

const E2E_ECHO: &str = "/fuzz.Svc/Echo";
const E2E_COUNT: &str = "/fuzz.Svc/Count";
const E2E_SUM: &str = "/fuzz.Svc/Sum";
const E2E_BIDI: &str = "/fuzz.Svc/Bidi";

fn e2e_router() -> crate::grpc::Router {
    use crate::grpc::{Request, Response, Streaming};
    use futures_util::StreamExt as _;
    crate::grpc::Router::new()
        .unary(E2E_ECHO, |req: Request<Vec<u8>>| async move {
            Ok(Response::new(req.into_inner()))
        })
        .server_streaming(E2E_COUNT, |req: Request<Vec<u8>>| async move {
            let msg = req.into_inner();
            let n = msg.len().min(8) + 1;
            Ok(Response::new(futures_util::stream::iter(
                (0..n).map(move |_| Ok::<_, Status>(msg.clone())),
            )))
        })
        .client_streaming(E2E_SUM, |req: Request<Streaming<Vec<u8>>>| async move {
            let mut requests = req.into_inner();
            let mut total = Vec::new();
            while let Some(m) = requests.message().await? {
                total.extend_from_slice(&m[..m.len().min(64)]);
                total.truncate(4096);
            }
            Ok(Response::new(total))
        })
        .bidi_streaming(E2E_BIDI, |req: Request<Streaming<Vec<u8>>>| async move {
            Ok(Response::new(req.into_inner().map(|m| m)))
        })
}

/// HEADERS (END_HEADERS) for a POST to `path`, then one DATA frame (END_STREAM) holding one
/// length-prefixed `bytes` message (a `Vec<u8>` message: field 1, length-delimited).
fn e2e_valid_call(stream: u32, path: &str, payload: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "fuzz"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack_literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    let mut out = Vec::new();
    h2_frame(&mut out, 0x1, 0x4, stream, &block);
    let mut message = vec![0x0A, u8::try_from(payload.len()).unwrap_or(0)];
    message.extend_from_slice(payload);
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(&message);
    h2_frame(&mut out, 0x0, 0x1, stream, &body);
    out
}

fn h2_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    hpack_int(out, name.len());
    out.extend_from_slice(name);
    hpack_int(out, value.len());
    out.extend_from_slice(value);
}

/// An HPACK integer with a 7-bit prefix and H = 0 (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// Reads the server's frames to EOF and reports how stream 1 ended: `true` for a HEADERS frame
/// with END_STREAM, `false` for RST_STREAM. Payloads are skipped, not kept.
async fn e2e_read_frames<R: tokio::io::AsyncRead + Unpin>(
    mut read: R,
    ended: tokio::sync::oneshot::Sender<bool>,
) {
    use tokio::io::AsyncReadExt as _;
    let mut ended = Some(ended);
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7FFF_FFFF;
            if stream == 1 {
                let end = match kind {
                    0x1 if flags & 0x1 == 1 => Some(true),
                    0x3 => Some(false),
                    _ => None,
                };
                if let Some(end) = end {
                    if let Some(tx) = ended.take() {
                        let _ = tx.send(end);
                    }
                }
            }
            buf.drain(..9 + len);
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod server_e2e_tests {
    use super::*;

    #[test]
    fn seeds_server_e2e() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/server_e2e");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            server_e2e(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 5, "{} has only {n} seeds", dir.display());
    }

    #[test]
    fn server_e2e_valid_unary_and_streaming_calls_end_with_trailers() {
        server_e2e(&[1, 0]);
        server_e2e(&[3, 0]);
    }
}
