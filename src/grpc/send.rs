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
//! not suffer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use h2::{Reason, SendStream};
use tokio::time::Sleep;

use crate::grpc::{
    codec,
    compression::{self, Encoding},
    frame::PREFIX_LEN,
    status::Status,
    WIRE_TARGET,
};

/// Stop filling the buffer at this size and write it out: large enough to amortise DATA
/// frames (h2 splits it into max-frame-size pieces), small enough to bound memory per stream.
const HIGH_WATER: usize = 64 * 1024;

/// A send half with its outgoing message buffer.
#[derive(Debug)]
pub(crate) struct MessageSink {
    stream: SendStream<Bytes>,
    buf: BytesMut,
    max_message_size: usize,
    /// Compress every message with this encoding (negotiated by the caller).
    encoding: Option<Encoding>,
    /// Reused for the uncompressed form of a message that is compressed.
    scratch: Vec<u8>,
}

/// How piping a message source into a sink ended.
#[derive(Debug)]
pub(crate) enum PipeEnd {
    /// The source ended (OK) or failed with this status; everything it produced was handed to
    /// h2.
    Finished(Status),
    /// The peer reset the stream (a client cancel).
    Reset(Reason),
    /// The deadline passed first.
    DeadlineExceeded,
    /// h2 refused the data (the stream or connection is gone).
    SendFailed(h2::Error),
}

impl MessageSink {
    pub(crate) fn new(stream: SendStream<Bytes>, max_message_size: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            max_message_size,
            encoding: None,
            scratch: Vec::new(),
        }
    }

    /// Compresses every message from now on.
    pub(crate) fn compress_with(&mut self, encoding: Option<Encoding>) {
        self.encoding = encoding;
    }

    /// Encodes one message into the outgoing buffer (not yet sent).
    pub(crate) fn encode<M: prost::Message>(&mut self, msg: &M) -> Result<(), Status> {
        let before = self.buf.len();
        match self.encoding {
            None => codec::encode(msg, &mut self.buf, self.max_message_size)?,
            Some(encoding) => {
                self.scratch.clear();
                msg.encode(&mut self.scratch)
                    .map_err(|e| Status::internal(format!("cannot encode a message: {e}")))?;
                compression::encode_compressed(
                    encoding,
                    &self.scratch,
                    &mut self.buf,
                    self.max_message_size,
                )?;
            }
        }
        tracing::debug!(target: WIRE_TARGET, direction = "send", size = self.buf.len() - before - PREFIX_LEN, compressed = self.encoding.is_some(), "message");
        Ok(())
    }

    /// Bytes encoded but not yet handed to h2.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Polls for a peer reset of this stream.
    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        self.stream.poll_reset(cx)
    }

    /// Hands buffered bytes to h2 as capacity is granted; ready when the buffer is empty.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        while !self.buf.is_empty() {
            if self.stream.capacity() == 0 {
                self.stream.reserve_capacity(self.buf.len());
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
            let n = self.stream.capacity().min(self.buf.len());
            let chunk = self.buf.split_to(n).freeze();
            self.stream.send_data(chunk, false)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Encodes what `source` yields and sends it, until it ends, the peer resets, the deadline
    /// passes or h2 fails.
    pub(crate) async fn pipe<M, S>(
        &mut self,
        mut source: Pin<&mut S>,
        mut deadline: Option<Pin<&mut Sleep>>,
    ) -> PipeEnd
    where
        M: prost::Message,
        S: Stream<Item = Result<M, Status>> + ?Sized,
    {
        let mut finished: Option<Status> = None;
        std::future::poll_fn(|cx| loop {
            if let Poll::Ready(reset) = self.poll_reset(cx) {
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
            while finished.is_none() && self.buf.len() < HIGH_WATER {
                match source.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(msg))) => {
                        if let Err(status) = self.encode(&msg) {
                            finished = Some(status);
                        }
                    }
                    Poll::Ready(Some(Err(status))) => finished = Some(status),
                    Poll::Ready(None) => finished = Some(Status::ok()),
                    Poll::Pending => {
                        source_pending = true;
                        break;
                    }
                }
            }
            match self.poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(PipeEnd::SendFailed(e)),
                Poll::Pending => return Poll::Pending,
            }
            if let Some(status) = finished.take() {
                return Poll::Ready(PipeEnd::Finished(status));
            }
            if source_pending {
                return Poll::Pending;
            }
        })
        .await
    }

    /// Ends the stream with trailers; gives unused capacity back first.
    pub(crate) fn send_trailers(mut self, trailers: http::HeaderMap) -> Result<(), h2::Error> {
        self.stream.reserve_capacity(0);
        self.stream.send_trailers(trailers)
    }

    /// Ends a request stream (client side): an empty DATA frame with END_STREAM.
    pub(crate) fn finish(mut self) -> Result<(), h2::Error> {
        self.stream.reserve_capacity(0);
        self.stream.send_data(Bytes::new(), true)
    }

    /// Abandons the stream with RST_STREAM.
    pub(crate) fn reset(mut self, reason: Reason) {
        self.stream.send_reset(reason);
    }
}
