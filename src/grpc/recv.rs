//! Receiving messages: h2 `RecvStream` -> [`FrameDecoder`] -> decompression -> codec, as a
//! stream of typed messages; on the client, the trailers that end it become a [`Status`].
//!
//! Everything but the last step is [`RecvBody`], which is not generic; [`Streaming<T>`] only
//! adds the prost decode. Faults are described as [`WireError`]s and turned into a status by
//! `WireError::into_status` for the side (server or client) that reads.
//!
//! Flow control: receive capacity is released as each DATA chunk is taken from h2 (hyper's
//! choice). Memory stays bounded anyway because the next chunk is only pulled once the decoder
//! has no complete message left, and the decoder refuses any message over the receive limit
//! before buffering it. On the server, a request memory budget (`budget.rs`) also bounds what
//! all streams together hold: window for partial-message bytes waits for room.

use std::{
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use futures_core::Stream;
use h2::RecvStream;
use tokio::{
    task::AbortHandle,
    time::{Instant, Sleep},
};

use crate::grpc::{
    budget::{ConnBudget, StreamCharge},
    codec,
    compression::{self, Encoding},
    error::{Side, WireError},
    frame::FrameDecoder,
    log::WIRE_TARGET,
    metadata::Metadata,
    status::Status,
};

/// Messages and payload bytes received, shared with whoever summarises the call.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Counts {
    /// Each `Counts` has one writer (a call's receiving or sending half), so a plain store
    /// suffices, and no locked instruction is paid per message.
    pub(crate) fn add(&self, (messages, bytes): (u64, u64)) {
        let (m, b) = self.get();
        self.messages.store(m + messages, Ordering::Relaxed);
        self.bytes.store(b + bytes, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The untyped receiving half of a call: payloads out, trailers kept.
pub(crate) struct RecvBody {
    body: RecvStream,
    decoder: FrameDecoder,
    /// The negotiated message encoding, for messages whose compressed flag is set.
    encoding: Option<Encoding>,
    max_message_size: usize,
    state: State,
    trailers: Option<Metadata>,
    deadline: Option<Pin<Box<Sleep>>>,
    side: Side,
    /// Messages and payload bytes received so far.
    pub(crate) received: (u64, u64),
    /// Where else to count them (the summary of a call whose handler holds the stream).
    pub(crate) counts: Option<Arc<Counts>>,
    /// Server side: the stream's share of the request memory budget; window for a partial
    /// message's bytes is then given back only while the budget has room.
    budget: Option<StreamCharge>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading DATA.
    Body,
    /// Client only: DATA ended, the trailers (and the status) are next.
    Trailers,
    /// Ended cleanly or after an error was yielded once.
    Done,
}

impl RecvBody {
    /// The receiving half for `side`: a server's request body, or a client's response body,
    /// which ends with trailers.
    pub(crate) fn new(
        side: Side,
        body: RecvStream,
        max_message_size: usize,
        deadline: Option<Instant>,
        encoding: Option<Encoding>,
    ) -> Self {
        Self {
            body,
            // Without a negotiated encoding a set compressed flag is an error (compression.md).
            decoder: FrameDecoder::new(max_message_size, encoding.is_some()),
            encoding,
            max_message_size,
            state: State::Body,
            trailers: None,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            side,
            received: (0, 0),
            counts: None,
            budget: None,
        }
    }

    /// Charges what this body buffers for partial messages to `conn`'s budget.
    pub(crate) fn with_budget(mut self, conn: Arc<ConnBudget>) -> Self {
        let flow = self.body.flow_control().clone();
        self.budget = Some(StreamCharge::new(conn, flow));
        self
    }

    /// A client-side body already ended by a Trailers-Only OK response.
    pub(crate) fn trailers_only(body: RecvStream, trailers: Metadata) -> Self {
        let mut recv = Self::new(Side::Client, body, 0, None, None);
        recv.state = State::Done;
        recv.trailers = Some(trailers);
        recv
    }

    /// Reads exactly one payload and the end of the stream: the one message of a unary side.
    pub(crate) async fn one_payload(&mut self) -> Result<Bytes, Status> {
        let Some(payload) = std::future::poll_fn(|cx| self.poll_payload(cx)).await? else {
            return Err(WireError::Cardinality { more: false }.into_status(self.side));
        };
        if std::future::poll_fn(|cx| self.poll_payload(cx))
            .await?
            .is_some()
        {
            return Err(WireError::Cardinality { more: true }.into_status(self.side));
        }
        Ok(payload)
    }

    /// Polls for the next (decompressed) payload, `Ok(None)` at a clean end of stream.
    fn poll_payload(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        loop {
            if self.state == State::Done {
                return Poll::Ready(Ok(None));
            }
            if let Some(deadline) = self.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return self.fail(Status::deadline_exceeded("deadline exceeded"));
                }
            }
            let next = self.decoder.next_frame();
            if let Some(budget) = self.budget.as_mut() {
                budget.settle(self.decoder.buffered());
            }
            match next {
                Ok(Some(frame)) => {
                    tracing::debug!(target: WIRE_TARGET, direction = "recv", size = frame.payload.len(), compressed = frame.compressed, "message");
                    self.received.0 += 1;
                    self.received.1 += frame.payload.len() as u64;
                    if let Some(counts) = &self.counts {
                        counts.add((1, frame.payload.len() as u64));
                    }
                    return match (frame.compressed, self.encoding) {
                        (true, Some(encoding)) => {
                            match compression::decompress(
                                encoding,
                                &frame.payload,
                                self.max_message_size,
                            ) {
                                Ok(payload) => Poll::Ready(Ok(Some(payload))),
                                Err(e) => self.fail_wire(WireError::Decompress(e)),
                            }
                        }
                        _ => Poll::Ready(Ok(Some(frame.payload))),
                    };
                }
                Ok(None) => {}
                Err(e) => return self.fail_wire(WireError::Frame(e)),
            }
            if let Some(budget) = self.budget.as_mut() {
                if self.state == State::Body && budget.poll_stalled(cx).is_ready() {
                    return self.fail(Status::resource_exhausted(
                        "the request message made no progress while the server's request \
                         memory budget was full",
                    ));
                }
            }
            match self.state {
                State::Body => match ready!(self.body.poll_data(cx)) {
                    Some(Ok(chunk)) => {
                        match self.budget.as_mut() {
                            // The budget gives the window back as it allows (settle above).
                            Some(budget) => budget.received(chunk.len()),
                            // Give the window back now; the decoder bounds what we hold.
                            None => {
                                let _ = self.body.flow_control().release_capacity(chunk.len());
                            }
                        }
                        self.decoder.push(chunk);
                    }
                    Some(Err(e)) => return self.fail_transport(e),
                    None => {
                        if let Err(e) = self.decoder.finish() {
                            return self.fail_wire(WireError::Frame(e));
                        }
                        self.state = match self.side {
                            Side::Client => State::Trailers,
                            Side::Server => State::Done,
                        };
                    }
                },
                State::Trailers => {
                    let trailers = match ready!(self.body.poll_trailers(cx)) {
                        Ok(Some(trailers)) => trailers,
                        // grpc-go's wording; GRPC-NOTES §1.5: a body without trailers is an error.
                        Ok(None) => {
                            return self.fail(Status::internal(
                                "server closed the stream without sending trailers",
                            ))
                        }
                        Err(e) => return self.fail_transport(e),
                    };
                    self.state = State::Done;
                    tracing::debug!(target: WIRE_TARGET, ?trailers, "recv trailers");
                    let status = Status::from_headers(&trailers)
                        .unwrap_or_else(|| Status::unknown("trailers carry no grpc-status"));
                    self.trailers = Some(Metadata::from_header_map(trailers));
                    if !status.is_ok() {
                        return Poll::Ready(Err(status));
                    }
                }
                State::Done => {}
            }
        }
    }

    /// A stream error: DEADLINE_EXCEEDED once our deadline has passed, since the reset may be
    /// our own request side reacting to that deadline first.
    fn fail_transport<T>(&mut self, e: h2::Error) -> Poll<Result<T, Status>> {
        match &self.deadline {
            Some(d) if Instant::now() >= d.deadline() => {
                self.fail(Status::deadline_exceeded("deadline exceeded"))
            }
            _ => self.fail_wire(WireError::Transport(e)),
        }
    }

    fn fail_wire<T>(&mut self, e: WireError) -> Poll<Result<T, Status>> {
        let status = e.into_status(self.side);
        self.fail(status)
    }

    fn fail<T>(&mut self, status: Status) -> Poll<Result<T, Status>> {
        self.state = State::Done;
        Poll::Ready(Err(status))
    }
}

/// A client's task that sends the request stream of a call; dropping this stops it, so a
/// call dropped at any point resets its stream.
#[derive(Debug)]
pub(crate) struct RequestSender {
    task: AbortHandle,
    /// The failure the task met, if any, which explains a stream it reset.
    failed: Arc<OnceLock<Status>>,
}

impl RequestSender {
    pub(crate) fn new(task: AbortHandle, failed: Arc<OnceLock<Status>>) -> Self {
        Self { task, failed }
    }

    /// The sender's own failure, which explains `status` when it reset the stream.
    pub(crate) fn failure_or(&self, status: Status) -> Status {
        self.own_failure().unwrap_or(status)
    }

    /// The sender's own failure (a message that could not be sent, the caller's stream
    /// failing, the deadline), if it had one.
    pub(crate) fn own_failure(&self) -> Option<Status> {
        self.failed.get().cloned()
    }
}

impl Drop for RequestSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a stream calls once it has ended, with how it ended.
pub(crate) type OnEnd = Box<dyn FnOnce(&Status) + Send>;

/// A stream of incoming messages of type `T`: a request stream on the server, a response
/// stream on the client.
pub struct Streaming<T> {
    recv: RecvBody,
    /// A client's request-sending task (bidi), stopped when the responses are dropped.
    sender: Option<RequestSender>,
    /// Told once how the stream ended (client interceptors).
    on_end: Option<OnEnd>,
    _message: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Streaming<T> {
    pub(crate) fn new(recv: RecvBody) -> Self {
        Self {
            recv,
            sender: None,
            on_end: None,
            _message: PhantomData,
        }
    }

    pub(crate) fn sent_by(&mut self, sender: RequestSender) {
        self.sender = Some(sender);
    }

    pub(crate) fn on_end(&mut self, f: OnEnd) {
        self.on_end = Some(f);
    }

    /// The next message, `Ok(None)` at a clean end of stream.
    ///
    /// # Errors
    /// The call's failure as a [`Status`]; it is returned once, then the stream ends.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Reads exactly one message and the end of the stream (the one message of a unary
    /// request or response).
    pub(crate) async fn one_message(&mut self) -> Result<T, Status> {
        // Whoever waits for the end hears the call's real outcome, cardinality included.
        let on_end = self.on_end.take();
        let result = match self.recv.one_payload().await {
            Ok(payload) => {
                codec::decode(payload).map_err(|e| WireError::Decode(e).into_status(self.recv.side))
            }
            Err(status) => Err(self.explain(status)),
        };
        if let Some(on_end) = on_end {
            on_end(result.as_ref().err().unwrap_or(&Status::ok()));
        }
        result
    }

    /// Trailer metadata, once a client-side stream has ended.
    pub fn trailers(&self) -> Option<&Metadata> {
        self.recv.trailers.as_ref()
    }

    /// Takes the trailer metadata (empty if the stream has not ended with trailers).
    pub(crate) fn take_trailers(&mut self) -> Metadata {
        self.recv.trailers.take().unwrap_or_default()
    }

    /// Our own request side may have reset the stream: its reason is the real one.
    fn explain(&self, status: Status) -> Status {
        match &self.sender {
            Some(sender) => sender.failure_or(status),
            None => status,
        }
    }

    /// Polls for the next message; see [`Streaming::message`].
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        let polled = match ready!(self.recv.poll_payload(cx)) {
            Ok(Some(payload)) => match codec::decode(payload) {
                Ok(message) => return Poll::Ready(Ok(Some(message))),
                Err(e) => {
                    let status = WireError::Decode(e).into_status(self.recv.side);
                    self.recv.state = State::Done;
                    Err(status)
                }
            },
            Ok(_) => Ok(None),
            Err(status) => Err(self.explain(status)),
        };
        if let Some(on_end) = self.on_end.take() {
            on_end(polled.as_ref().err().unwrap_or(&Status::ok()));
        }
        Poll::Ready(polled)
    }
}

impl<T: prost::Message + Default> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx).map(Result::transpose)
    }
}

impl<T> Drop for Streaming<T> {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(&Status::cancelled("the response stream was dropped"));
        }
    }
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("state", &self.recv.state)
            .field("buffered", &self.recv.decoder.buffered())
            .finish_non_exhaustive()
    }
}
