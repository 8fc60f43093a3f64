//! [`RawPeer`]: an HTTP/2 client made of raw bytes on any stream, and the [`Outcome`] it
//! records from every frame the server sends.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::frame::{
    frame, settings, Frame, ACK, DATA, END_STREAM, GOAWAY, HEADERS, PING, PREFACE, RST_STREAM,
    SETTINGS,
};

/// How long [`RawPeer::handshake`] waits for the server's SETTINGS.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);
/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 16 * 1024;

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
    /// SETTINGS frames with ACK.
    pub settings_acks: usize,
    /// PING frames with ACK.
    pub pongs: usize,
    /// Frames of any kind.
    pub frames: usize,
    /// The server closed the connection (EOF or a reset).
    pub closed: bool,
}

impl Outcome {
    /// The GOAWAY's error code, if one came.
    pub fn goaway_code(&self) -> Option<u32> {
        self.goaway.map(|(_, code)| code)
    }

    /// Streams reset with `code`.
    pub fn reset_count(&self, code: u32) -> usize {
        self.resets.values().filter(|&&c| c == code).count()
    }

    /// RST_STREAM codes and how often each came.
    pub fn reset_histogram(&self) -> BTreeMap<u32, usize> {
        let mut h = BTreeMap::new();
        for &code in self.resets.values() {
            *h.entry(code).or_default() += 1;
        }
        h
    }

    /// Counts `f` in; the first RST_STREAM of a stream is the one kept.
    fn record(&mut self, f: &Frame) {
        self.frames += 1;
        match f.kind {
            GOAWAY if f.payload.len() >= 8 => {
                let last = be_u32(&f.payload[0..4]) & 0x7FFF_FFFF;
                self.goaway = Some((last, be_u32(&f.payload[4..8])));
            }
            RST_STREAM if f.payload.len() == 4 => {
                // The first code counts: a refused stream's later frames draw STREAM_CLOSED.
                self.resets
                    .entry(f.stream)
                    .or_insert_with(|| be_u32(&f.payload));
            }
            HEADERS => {
                self.answered.push(f.stream);
                if f.flags & END_STREAM != 0 {
                    self.ended.push(f.stream);
                }
            }
            DATA => *self.data.entry(f.stream).or_default() += f.payload.len(),
            SETTINGS if f.flags & ACK != 0 => self.settings_acks += 1,
            PING if f.flags & ACK != 0 => self.pongs += 1,
            _ => {}
        }
    }
}

/// A raw HTTP/2 client on any byte stream: the test writes bytes, the peer reads frames.
///
/// Reading needs only `S: AsyncRead`, so a peer can hold the read half of a split stream while
/// another task writes.
#[derive(Debug)]
pub struct RawPeer<S> {
    /// The stream to the server.
    pub io: S,
    /// Bytes read but not yet taken as a frame.
    pub buf: Vec<u8>,
    /// What the frames read so far add up to.
    pub outcome: Outcome,
}

impl RawPeer<TcpStream> {
    /// Connects and sends the preface with `params`, then ACKs the server's SETTINGS.
    ///
    /// # Panics
    ///
    /// If the connection fails or no server SETTINGS comes within 5 s.
    pub async fn connect(addr: SocketAddr, params: &[(u16, u32)]) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.set_nodelay(true);
        Self::handshake(tcp, params).await
    }
}

impl<S> RawPeer<S> {
    /// A peer on `io` that has sent and read nothing yet.
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
            outcome: Outcome::default(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    /// Sends the preface with `params` on `io`, then ACKs the server's SETTINGS.
    ///
    /// # Panics
    ///
    /// If writing fails or no server SETTINGS comes within 5 s.
    pub async fn handshake(io: S, params: &[(u16, u32)]) -> Self {
        let mut peer = Self::new(io);
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(params));
        peer.send(&hello).await.unwrap();
        // The server's SETTINGS comes first; ACK it so its limits apply.
        let deadline = Instant::now() + HANDSHAKE_WAIT;
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

    /// Writes and flushes `bytes`.
    ///
    /// # Errors
    ///
    /// The stream's write error.
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
}

impl<S: AsyncRead + Unpin> RawPeer<S> {
    /// The next frame within `within`; `None` on timeout or once the connection closed. Every
    /// frame read is also recorded in [`RawPeer::outcome`].
    pub async fn read_frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = Frame::take(&mut self.buf) {
                self.outcome.record(&frame);
                return Some(frame);
            }
            if self.outcome.closed {
                return None;
            }
            let mut chunk = [0_u8; READ_CHUNK];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => self.outcome.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
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

/// A 4-byte big-endian field; the caller has checked the length.
fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("a 4-byte field"))
}
