//! The hostile-peer harness: a raw HTTP/2 frame writer and reader (our own, over any byte
//! stream), a literal-only HPACK encoder, a well-behaved client that calls beside each attack,
//! and the in-process RSS check.
//!
//! Every attack is wrapped in [`Watch`]: it takes the RSS before, runs a good client in the
//! background, and at the end asserts that the good client saw no error, that a fresh
//! connection is still served, and that RSS grew by less than the stated bound. Tests of one
//! binary run one at a time (a shared lock) so the RSS figures are each attack's own.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::{Mutex, MutexGuard},
    task::JoinHandle,
};

use crate::common::{echo_call, TestServer};

// ===== frame types, flags, error codes (RFC 9113) =====

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// ===== writing =====

/// One frame: the 9-byte header and the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in params {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn data(stream: u32, bytes: &[u8], end: bool) -> Vec<u8> {
    frame(DATA, if end { END_STREAM } else { 0 }, stream, bytes)
}

/// `bytes` as DATA frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
pub fn data_frames(stream: u32, bytes: &[u8], end: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = bytes.chunks(16_384).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(data(stream, chunk, end && i + 1 == chunks.len()));
    }
    out
}

/// A complete header block in one HEADERS frame.
pub fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first` (RFC 7541 §5.1).
pub fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1_usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
pub fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A literal header field *with* incremental indexing, new name (RFC 7541 §6.2.1): it enters
/// the peer's dynamic table.
pub fn literal_indexed(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x40);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A header block for a gRPC POST to `path` with `extra` headers after the usual ones.
pub fn grpc_block(path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "hostile"),
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

/// A length-prefixed uncompressed gRPC message.
pub fn grpc_message(msg: &impl prost::Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out
}

// ===== reading =====

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// What a peer saw from the server over a stretch of reading.
#[derive(Debug, Default)]
pub struct Outcome {
    /// GOAWAY: (last stream id, error code).
    pub goaway: Option<(u32, u32)>,
    /// RST_STREAM codes by stream.
    pub resets: HashMap<u32, u32>,
    /// Streams the server ended with END_STREAM on HEADERS (trailers or Trailers-Only).
    pub ended: Vec<u32>,
    /// Streams that got any HEADERS.
    pub answered: Vec<u32>,
    /// DATA bytes by stream.
    pub data: HashMap<u32, usize>,
    pub settings_acks: usize,
    pub pongs: usize,
    pub frames: usize,
    /// The server closed the connection (EOF or a reset).
    pub closed: bool,
}

impl Outcome {
    pub fn goaway_code(&self) -> Option<u32> {
        self.goaway.map(|(_, code)| code)
    }

    pub fn reset_count(&self, code: u32) -> usize {
        self.resets.values().filter(|&&c| c == code).count()
    }

    /// RST_STREAM codes and how often each came.
    pub fn reset_histogram(&self) -> std::collections::BTreeMap<u32, usize> {
        let mut h = std::collections::BTreeMap::new();
        for &code in self.resets.values() {
            *h.entry(code).or_default() += 1;
        }
        h
    }
}

/// A raw HTTP/2 client on any byte stream.
pub struct RawPeer<S> {
    pub io: S,
    pub buf: Vec<u8>,
    pub outcome: Outcome,
}

impl RawPeer<TcpStream> {
    /// Connects and sends the preface with `params`, then ACKs the server's SETTINGS.
    pub async fn connect(addr: std::net::SocketAddr, params: &[(u16, u32)]) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.set_nodelay(true);
        Self::handshake(tcp, params).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
            outcome: Outcome::default(),
        }
    }

    pub async fn handshake(io: S, params: &[(u16, u32)]) -> Self {
        let mut peer = Self::new(io);
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(params));
        peer.send(&hello).await.unwrap();
        // The server's SETTINGS comes first; ACK it so its limits apply.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = peer
                .read_frame(left)
                .await
                .expect("no server SETTINGS in time");
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                break;
            }
        }
        peer.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        peer
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Sends `bytes`, giving up after `within` (the server may stop reading); true if all went.
    pub async fn send_within(&mut self, bytes: &[u8], within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.send(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// The next frame within `within`; `None` on timeout or once the connection closed. Every
    /// frame read is also recorded in [`RawPeer::outcome`].
    pub async fn read_frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let frame = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7FFF_FFFF,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    self.record(&frame);
                    return Some(frame);
                }
            }
            if self.outcome.closed {
                return None;
            }
            let mut chunk = [0_u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => self.outcome.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn record(&mut self, f: &Frame) {
        let o = &mut self.outcome;
        o.frames += 1;
        match f.kind {
            GOAWAY if f.payload.len() >= 8 => {
                let last = u32::from_be_bytes(f.payload[0..4].try_into().unwrap()) & 0x7FFF_FFFF;
                let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                o.goaway = Some((last, code));
            }
            RST_STREAM if f.payload.len() == 4 => {
                // The first code counts: a refused stream's later frames draw STREAM_CLOSED.
                o.resets
                    .entry(f.stream)
                    .or_insert_with(|| u32::from_be_bytes(f.payload[..].try_into().unwrap()));
            }
            HEADERS => {
                o.answered.push(f.stream);
                if f.flags & END_STREAM != 0 {
                    o.ended.push(f.stream);
                }
            }
            DATA => *o.data.entry(f.stream).or_default() += f.payload.len(),
            SETTINGS if f.flags & ACK != 0 => o.settings_acks += 1,
            PING if f.flags & ACK != 0 => o.pongs += 1,
            _ => {}
        }
    }

    /// Reads until `done` holds for the outcome, the connection closes, or `within` passes.
    pub async fn read_until(&mut self, within: Duration, done: impl Fn(&Outcome) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.outcome) && !self.outcome.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.read_frame(left).await.is_none() && !self.outcome.closed {
                break;
            }
        }
    }

    /// Reads until the connection closes or `within` passes; true if it closed.
    pub async fn read_to_close(&mut self, within: Duration) -> bool {
        self.read_until(within, |_| false).await;
        self.outcome.closed
    }
}

// ===== the good client, RSS and the per-attack watch =====

/// Resident set size of this process (the server runs in it), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Unary echo calls in a loop on its own connection until stopped.
pub struct GoodClient {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<Vec<String>>,
}

impl GoodClient {
    pub async fn start(server: &TestServer) -> Self {
        let channel = server.channel().await;
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), calls.clone());
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            // Bounded: at most 100 000 calls, and the watch stops it far sooner.
            for i in 0..100_000_u32 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let text = format!("good {i}");
                match echo_call(&channel, &text).await {
                    Ok(reply) if reply.text == text => {}
                    Ok(reply) => errors.push(format!("wrong reply {reply:?}")),
                    Err(status) => errors.push(format!("{status:?}")),
                }
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            errors
        });
        Self { stop, calls, task }
    }

    /// Stops and returns (calls made, errors).
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the good client hung")
            .unwrap();
        (self.calls.load(Ordering::SeqCst), errors)
    }
}

static SERIAL: Mutex<()> = Mutex::const_new(());

/// One attack's before/after checks.
pub struct Watch {
    name: &'static str,
    rss_before: u64,
    started: Instant,
    good: Option<GoodClient>,
    _serial: MutexGuard<'static, ()>,
}

impl Watch {
    /// Takes the lock, RSS, and starts the good client.
    pub async fn begin(name: &'static str, server: &TestServer) -> Self {
        let serial = SERIAL.lock().await;
        let good = GoodClient::start(server).await;
        // Let the good client's connection settle before the baseline.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Self {
            name,
            rss_before: rss_kib(),
            started: Instant::now(),
            good: Some(good),
            _serial: serial,
        }
    }

    /// Asserts: the good client saw no error (and made calls), a fresh connection is served,
    /// RSS grew by less than `bound_mib`, and the attack took less than `within`.
    pub async fn end(mut self, server: &TestServer, bound_mib: u64, within: Duration) {
        let elapsed = self.started.elapsed();
        let rss_after = rss_kib();
        let (calls, errors) = self.good.take().unwrap().stop().await;
        assert!(
            errors.is_empty(),
            "{}: the good client saw errors: {errors:?}",
            self.name
        );
        assert!(calls > 0, "{}: the good client made no call", self.name);
        let fresh = server.channel().await;
        assert_eq!(
            echo_call(&fresh, "after").await.unwrap().text,
            "after",
            "{}: no longer serving",
            self.name
        );
        let growth = rss_after.saturating_sub(self.rss_before);
        println!(
            "hostile: {}: RSS {} -> {} KiB (+{} KiB, bound {} MiB), {} ms, good calls {}",
            self.name,
            self.rss_before,
            rss_after,
            growth,
            bound_mib,
            elapsed.as_millis(),
            calls
        );
        assert!(
            growth < bound_mib * 1024,
            "{}: RSS grew by {growth} KiB (bound {bound_mib} MiB)",
            self.name
        );
        assert!(
            elapsed < within,
            "{}: took {elapsed:?} (bound {within:?})",
            self.name
        );
    }
}

/// Samples `live` every millisecond until stopped; returns the highest value seen.
pub fn sample_max(live: &crate::common::Live) -> (Arc<AtomicBool>, JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let live = live.clone();
    let task = tokio::spawn(async move {
        let mut max = 0;
        // Bounded: 30 s of samples at most.
        for _ in 0..30_000 {
            max = max.max(live.get());
            if s.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        max
    });
    (stop, task)
}
