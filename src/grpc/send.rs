//! Sending messages: codec (prefix + body) -> one buffer -> h2 `SendStream`, only as fast as
//! HTTP/2 flow control grants capacity.
//!
//! This follows hyper's `PipeToSendStream`: check for a peer reset first, reserve capacity only
//! once data is in hand, keep unsent bytes across `Pending`, loop on `poll_capacity` until it is
//! non-zero. Without the capacity dance h2 buffers without bound (its `SendStream` docs), so a
//! stalled reader would cost unbounded memory.
//!
//! Messages that are ready at once are encoded back to back into one buffer and go out as one
//! DATA frame; the buffer is flushed as soon as the source would wait, so streaming latency does
//! not suffer. The source is a [`MessageSource`]: the one place a typed stream is erased, one
//! virtual call per message and no allocation.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use h2::{Reason, SendStream};
use tokio::time::Sleep;

use crate::grpc::{
    codec,
    compression::{self, Encoding},
    error::{Side, WireError},
    frame::PREFIX_LEN,
    log::WIRE_TARGET,
    request::IntoMessage,
    status::Status,
};

/// Stop filling the buffer at this size and write it out: large enough to amortise DATA
/// frames (h2 splits it into max-frame-size pieces), small enough to bound memory per stream.
const HIGH_WATER: usize = 64 * 1024;

/// What a streaming buffer is allocated with: [`HIGH_WATER`] plus room for the message that
/// crosses it, so a buffer is filled without growing (a grow copies what it holds).
const CHUNK_CAPACITY: usize = HIGH_WATER + 16 * 1024;

/// Room left in the buffer below which a new chunk takes a fresh (or reclaimed) buffer.
const MIN_ROOM: usize = 16 * 1024;

/// HTTP/2's default (and smallest) SETTINGS_MAX_FRAME_SIZE. h2 cuts what it is given into
/// frames of at most this size, one write each; so while more messages are coming, only whole
/// frames are handed over and the runt at the end of a chunk waits for the next one. Handing
/// the runt over cost one extra frame and system call per chunk: 77,000 writes where 62,000
/// carry the same 1 GB (strace, 1 KiB images).
const FRAME: usize = 16 * 1024;

/// Buffers kept for reuse while h2 still holds pieces of them. Seven 64 KiB chunks fill h2's
/// default 400 KiB send buffer; a buffer whose pieces were all written is reused in place.
const MAX_SPARES: usize = 8;

/// Encodes messages into the outgoing buffer, counting them.
#[derive(Debug)]
pub(crate) struct Encoder {
    buf: BytesMut,
    max_message_size: usize,
    /// The negotiated encoding, which messages use unless they say otherwise.
    encoding: Option<Encoding>,
    /// Reused for the uncompressed form of a message that is compressed.
    scratch: Vec<u8>,
    /// Earlier streaming buffers, reused once h2 has dropped every piece of one. Without them
    /// each 64 KiB chunk was a fresh allocation, and glibc, trimming the freed ones off the
    /// heap, faulted every page in again: 50,000 page faults and 15 % of the time of a 1 GB
    /// stream (BENCHMARKS.md, round two).
    spares: Vec<BytesMut>,
    side: Side,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
}

impl Encoder {
    /// An encoder for `side`'s messages, compressing with `encoding` unless a message says
    /// otherwise: the web gateway's, which hands its frames to a transport of its own.
    pub(crate) fn new(side: Side, max_message_size: usize, encoding: Option<Encoding>) -> Self {
        Self {
            buf: BytesMut::new(),
            max_message_size,
            encoding,
            scratch: Vec::new(),
            spares: Vec::new(),
            side,
            messages: 0,
            bytes: 0,
        }
    }

    /// Takes every frame encoded so far.
    pub(crate) fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Makes room for a streaming chunk in an empty buffer, reusing an allocation h2 is done
    /// with when there is one. Room left after the last chunk is used first, so a stream of
    /// rare small messages allocates no more than before; the first message gets a buffer of
    /// its own size, so a unary response (a stream of one) never takes a chunk.
    fn prepare_chunk(&mut self) {
        let len = self.buf.len();
        let room = self.buf.capacity() - len;
        if self.messages == 0 || room >= MIN_ROOM || len >= FRAME {
            return;
        }
        if len == 0 && self.buf.try_reclaim(CHUNK_CAPACITY) {
            return;
        }
        let mut fresh = match self
            .spares
            .iter_mut()
            .position(|s| s.try_reclaim(CHUNK_CAPACITY))
        {
            Some(i) => self.spares.swap_remove(i),
            None => BytesMut::with_capacity(CHUNK_CAPACITY),
        };
        // The runt of the last chunk (under one frame) leads the next one.
        fresh.extend_from_slice(&self.buf.split());
        if self.spares.len() == MAX_SPARES {
            self.spares.swap_remove(0);
        }
        self.spares.push(std::mem::replace(&mut self.buf, fresh));
    }

    /// Whether the streaming buffer takes another message: under [`HIGH_WATER`] with room for
    /// a typical message, so a partly sent buffer is never grown (a copy and an allocation);
    /// one holding less than a frame always does ([`Self::prepare_chunk`] makes room).
    fn wants_more(&self) -> bool {
        let len = self.buf.len();
        len < FRAME || (len < HIGH_WATER && self.buf.capacity() - len >= MIN_ROOM)
    }

    /// Lets go of the buffers kept for reuse: the stream went quiet, so it should not hold
    /// chunk-sized memory while it waits.
    pub(crate) fn release_spares(&mut self) {
        self.spares.clear();
    }

    /// The encoded bytes not yet handed to h2: what a retry records for replay.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Queues bytes encoded earlier: a retry replaying what an earlier attempt sent.
    pub(crate) fn push_encoded(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Encodes one message into the buffer (not yet sent). `compress` is the message's own
    /// choice; `None` takes the call's.
    pub(crate) fn encode<M: prost::Message>(
        &mut self,
        msg: &M,
        compress: Option<bool>,
    ) -> Result<(), Status> {
        let before = self.buf.len();
        let encoding = self.encoding.filter(|_| compress.unwrap_or(true));
        match encoding {
            None => codec::encode(msg, &mut self.buf, self.max_message_size),
            Some(encoding) => {
                self.scratch.clear();
                msg.encode_raw(&mut self.scratch);
                compression::encode_compressed(
                    encoding,
                    &self.scratch,
                    &mut self.buf,
                    self.max_message_size,
                )
            }
        }
        .map_err(|e| WireError::Encode(e).into_status(self.side))?;
        let size = self.buf.len() - before - PREFIX_LEN;
        self.messages += 1;
        self.bytes += size as u64;
        tracing::debug!(target: WIRE_TARGET, direction = "send", size, compressed = encoding.is_some(), "message");
        Ok(())
    }
}

/// A typed message stream with its type erased: each poll encodes at most one message.
pub(crate) trait MessageSource: Send {
    /// Encodes messages into `encoder` while they are ready and its buffer is under
    /// [`HIGH_WATER`]: `Some(Ok)` when the buffer is full, `Pending` when the source waits
    /// (what was ready is encoded), `None` at the end, `Err` for the stream's own failure or an
    /// encoding fault. One virtual call fills a buffer: per message it cost ~10 % of the
    /// one-byte image stream (benches/run.py).
    fn poll_fill(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        encoder: &mut Encoder,
    ) -> Poll<Option<Result<(), Status>>>;
}

pin_project_lite::pin_project! {
    /// A typed stream of messages as a [`MessageSource`].
    pub(crate) struct Source<S, M> {
        #[pin]
        stream: S,
        _message: PhantomData<fn() -> M>,
    }
}

impl<S, M> Source<S, M> {
    pub(crate) fn new(stream: S) -> Self {
        Self {
            stream,
            _message: PhantomData,
        }
    }
}

impl<S, T, M> MessageSource for Source<S, M>
where
    S: Stream<Item = Result<T, Status>> + Send,
    T: IntoMessage<M>,
    M: prost::Message,
{
    fn poll_fill(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        encoder: &mut Encoder,
    ) -> Poll<Option<Result<(), Status>>> {
        let mut stream = self.project().stream;
        encoder.prepare_chunk();
        while encoder.wants_more() {
            let Some(item) = ready!(stream.as_mut().poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let (message, compress) = match item {
                Ok(item) => item.into_message(),
                Err(status) => return Poll::Ready(Some(Err(status))),
            };
            if let Err(status) = encoder.encode(&message, compress) {
                return Poll::Ready(Some(Err(status)));
            }
        }
        Poll::Ready(Some(Ok(())))
    }
}

/// A send half with its outgoing message buffer.
#[derive(Debug)]
pub(crate) struct MessageSink {
    stream: SendStream<Bytes>,
    encoder: Encoder,
}

/// How piping a message source into a sink ended.
#[derive(Debug)]
pub(crate) enum PipeEnd {
    /// The source ended; everything it produced was handed to h2.
    Finished,
    /// The source failed (its own status, or an encoding fault); everything before the
    /// failure was handed to h2.
    Failed(Status),
    /// The peer reset the stream (a client cancel).
    Reset(Reason),
    /// The deadline passed first.
    DeadlineExceeded,
    /// h2 refused the data (the stream or connection is gone).
    SendFailed(h2::Error),
}

impl MessageSink {
    /// A sink for `side` that compresses with `encoding` (when given) every message that does
    /// not say otherwise.
    pub(crate) fn new(
        stream: SendStream<Bytes>,
        side: Side,
        max_message_size: usize,
        encoding: Option<Encoding>,
    ) -> Self {
        Self {
            stream,
            encoder: Encoder::new(side, max_message_size, encoding),
        }
    }

    /// Messages and payload bytes encoded so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.encoder.messages, self.encoder.bytes)
    }

    /// Bytes encoded but not yet handed to h2.
    pub(crate) fn buffered(&self) -> usize {
        self.encoder.buf.len()
    }

    /// Hands buffered bytes to h2 as capacity is granted; ready when the buffer is empty, or,
    /// with `whole_frames` (more messages are ready), when less than a [`FRAME`] is left.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        whole_frames: bool,
    ) -> Poll<Result<(), h2::Error>> {
        let buf = &mut self.encoder.buf;
        loop {
            let sendable = if whole_frames {
                buf.len() - buf.len() % FRAME
            } else {
                buf.len()
            };
            if sendable == 0 {
                return Poll::Ready(Ok(()));
            }
            if self.stream.capacity() == 0 {
                // Exactly what goes out, so the capacity left over is never a runt of its own.
                self.stream.reserve_capacity(sendable);
                match self.stream.poll_capacity(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    // The stream can no longer send; the reset (if any) says why.
                    Poll::Ready(None) => {
                        return Poll::Ready(Err(h2::Error::from(Reason::STREAM_CLOSED)))
                    }
                }
                if self.stream.capacity() == 0 {
                    continue;
                }
            }
            let n = self.stream.capacity().min(sendable);
            let chunk = buf.split_to(n).freeze();
            self.stream.send_data(chunk, false)?;
        }
    }

    /// Encodes what `source` yields and sends it, until it ends, the peer resets, the deadline
    /// passes or h2 fails.
    pub(crate) async fn pipe(
        &mut self,
        mut source: Pin<&mut dyn MessageSource>,
        mut deadline: Option<Pin<&mut Sleep>>,
    ) -> PipeEnd {
        let mut finished: Option<PipeEnd> = None;
        std::future::poll_fn(|cx| loop {
            if let Poll::Ready(reset) = self.stream.poll_reset(cx) {
                return Poll::Ready(match reset {
                    Ok(reason) => PipeEnd::Reset(reason),
                    Err(e) => PipeEnd::SendFailed(e),
                });
            }
            if let Some(deadline) = deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(PipeEnd::DeadlineExceeded);
                }
            }
            let mut source_pending = false;
            if finished.is_none() && self.encoder.wants_more() {
                match source.as_mut().poll_fill(cx, &mut self.encoder) {
                    Poll::Ready(Some(Ok(()))) => {}
                    Poll::Ready(Some(Err(status))) => finished = Some(PipeEnd::Failed(status)),
                    Poll::Ready(None) => finished = Some(PipeEnd::Finished),
                    Poll::Pending => source_pending = true,
                }
            }
            // Hold the runt back only while the source has more ready at once: a source that
            // waits, ends or fails has everything it produced sent now.
            let whole_frames = finished.is_none() && !source_pending;
            match self.poll_flush(cx, whole_frames) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(PipeEnd::SendFailed(e)),
                Poll::Pending => return Poll::Pending,
            }
            if let Some(end) = finished.take() {
                return Poll::Ready(end);
            }
            if source_pending {
                self.encoder.release_spares();
                return Poll::Pending;
            }
        })
        .await
    }

    /// Sends one message and END_STREAM (a unary or server-streaming request). One message of
    /// known size: h2 may buffer it whole while the window opens, which costs no more than the
    /// message we already hold.
    pub(crate) fn send_last<M: prost::Message>(
        &mut self,
        message: &M,
        compress: Option<bool>,
    ) -> Result<Result<(), h2::Error>, Status> {
        self.encoder.encode(message, compress)?;
        let data = self.encoder.buf.split().freeze();
        Ok(self.stream.send_data(data, true))
    }

    /// Ends the stream with trailers; gives unused capacity back first.
    pub(crate) fn send_trailers(mut self, trailers: http::HeaderMap) -> Result<(), h2::Error> {
        self.stream.reserve_capacity(0);
        self.stream.send_trailers(trailers)
    }

    /// Ends a request stream (client side): an empty DATA frame with END_STREAM.
    pub(crate) fn end_stream(mut self) -> Result<(), h2::Error> {
        self.stream.reserve_capacity(0);
        self.stream.send_data(Bytes::new(), true)
    }

    /// Abandons the stream with RST_STREAM.
    pub(crate) fn reset(mut self, reason: Reason) {
        self.stream.send_reset(reason);
    }
}
