//! Receiving messages: h2 `RecvStream` -> [`FrameDecoder`] -> codec, as a stream of typed
//! messages; on the client, the trailers that end it become a [`Status`].
//!
//! Flow control: receive capacity is released as each DATA chunk is taken from h2 (hyper's
//! choice). Memory stays bounded anyway because the next chunk is only pulled once the decoder
//! has no complete message left, and the decoder refuses any message over the receive limit
//! before buffering it.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures_core::Stream;
use h2::{Reason, RecvStream};
use tokio::{
    task::AbortHandle,
    time::{Instant, Sleep},
};

use crate::grpc::{
    codec,
    compression::{self, Encoding},
    frame::{FrameDecoder, FrameError},
    metadata::Metadata,
    status::Status,
    WIRE_TARGET,
};

/// A stream of incoming messages of type `T`: a request stream on the server, a response
/// stream on the client.
pub struct Streaming<T> {
    body: RecvStream,
    decoder: FrameDecoder,
    /// The negotiated message encoding, for messages whose compressed flag is set.
    encoding: Option<Encoding>,
    max_message_size: usize,
    state: State,
    trailers: Option<Metadata>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// A client's request-sending task (bidi), stopped when the responses are dropped.
    sender: Option<AbortHandle>,
    _message: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading DATA.
    Body { client: bool },
    /// Client only: DATA ended, the trailers (and the status) are next.
    Trailers,
    /// Ended cleanly or after an error was yielded once.
    Done,
}

impl<T: prost::Message + Default> Streaming<T> {
    pub(crate) fn server(
        body: RecvStream,
        max_message_size: usize,
        encoding: Option<Encoding>,
    ) -> Self {
        Self::new(body, max_message_size, false, None, encoding)
    }

    pub(crate) fn client(
        body: RecvStream,
        max_message_size: usize,
        deadline: Option<Instant>,
        encoding: Option<Encoding>,
    ) -> Self {
        Self::new(body, max_message_size, true, deadline, encoding)
    }

    fn new(
        body: RecvStream,
        max_message_size: usize,
        client: bool,
        deadline: Option<Instant>,
        encoding: Option<Encoding>,
    ) -> Self {
        Self {
            body,
            // Without a negotiated encoding a set compressed flag is an error (compression.md).
            decoder: FrameDecoder::new(max_message_size, encoding.is_some()),
            encoding,
            max_message_size,
            state: State::Body { client },
            trailers: None,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            sender: None,
            _message: PhantomData,
        }
    }

    /// A client-side stream already ended by a Trailers-Only OK response.
    pub(crate) fn trailers_only(body: RecvStream, trailers: Metadata) -> Self {
        let mut stream = Self::new(body, 0, true, None, None);
        stream.state = State::Done;
        stream.trailers = Some(trailers);
        stream
    }

    pub(crate) fn abort_on_drop(&mut self, sender: AbortHandle) {
        self.sender = Some(sender);
    }

    /// The next message, `Ok(None)` at a clean end of stream.
    ///
    /// # Errors
    /// The call's failure as a [`Status`]; it is returned once, then the stream ends.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Reads exactly one message and the end of the stream. statuscodes.md: a cardinality
    /// violation is UNIMPLEMENTED (GRPC-NOTES §1.3); `what` names the side in the message
    /// ("request" or "response").
    pub(crate) async fn single(&mut self, what: &str) -> Result<T, Status> {
        let Some(message) = self.message().await? else {
            return Err(Status::unimplemented(format!(
                "expected one {what} message, got none"
            )));
        };
        if self.message().await?.is_some() {
            return Err(Status::unimplemented(format!(
                "expected one {what} message, got more"
            )));
        }
        Ok(message)
    }

    /// Trailer metadata, once a client-side stream has ended.
    pub fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    /// Takes the trailer metadata (empty if the stream has not ended with trailers).
    pub(crate) fn take_trailers(&mut self) -> Metadata {
        self.trailers.take().unwrap_or_default()
    }

    /// Polls for the next message; see [`Streaming::message`].
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        loop {
            if self.state == State::Done {
                return Poll::Ready(Ok(None));
            }
            if let Some(deadline) = self.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return self.fail(Status::deadline_exceeded("deadline exceeded"));
                }
            }
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    tracing::debug!(target: WIRE_TARGET, direction = "recv", size = frame.payload.len(), compressed = frame.compressed, "message");
                    let payload = match (frame.compressed, self.encoding) {
                        (true, Some(encoding)) => {
                            match compression::decompress(
                                encoding,
                                &frame.payload,
                                self.max_message_size,
                            ) {
                                Ok(payload) => payload,
                                Err(status) => return self.fail(status),
                            }
                        }
                        _ => frame.payload,
                    };
                    return match codec::decode(payload) {
                        Ok(msg) => Poll::Ready(Ok(Some(msg))),
                        Err(status) => self.fail(status),
                    };
                }
                Ok(None) => {}
                Err(e) => return self.fail(status_from_frame_error(e)),
            }
            match self.state {
                State::Body { client } => match ready!(self.body.poll_data(cx)) {
                    Some(Ok(chunk)) => {
                        // Give the window back now; the decoder bounds what we hold.
                        let _ = self.body.flow_control().release_capacity(chunk.len());
                        self.decoder.push(chunk);
                    }
                    Some(Err(e)) => return self.fail(self.status_from_h2(&e)),
                    None => {
                        if let Err(e) = self.decoder.finish() {
                            return self.fail(status_from_frame_error(e));
                        }
                        self.state = if client { State::Trailers } else { State::Done };
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
                        Err(e) => return self.fail(self.status_from_h2(&e)),
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

    /// A stream error as a status: DEADLINE_EXCEEDED once our deadline has passed, since the
    /// reset may be our own request side reacting to that deadline first.
    fn status_from_h2(&self, e: &h2::Error) -> Status {
        match &self.deadline {
            Some(d) if Instant::now() >= d.deadline() => {
                Status::deadline_exceeded("deadline exceeded")
            }
            _ => status_from_h2(e),
        }
    }

    fn fail(&mut self, status: Status) -> Poll<Result<Option<T>, Status>> {
        self.state = State::Done;
        Poll::Ready(Err(status))
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
        if let Some(sender) = &self.sender {
            sender.abort();
        }
    }
}

impl<T> std::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("state", &self.state)
            .field("buffered", &self.decoder.buffered())
            .finish_non_exhaustive()
    }
}

/// The one place a framing error becomes a status (GRPC-NOTES §1.3 and §1.6).
pub(crate) fn status_from_frame_error(e: FrameError) -> Status {
    match e {
        FrameError::TooLarge { len, limit } => Status::resource_exhausted(format!(
            "received message larger than max ({len} vs. {limit})"
        )),
        other => Status::internal(other.to_string()),
    }
}

/// Maps an h2 stream or connection error to a status (GRPC-NOTES §1.7).
pub(crate) fn status_from_h2(e: &h2::Error) -> Status {
    if e.is_io() {
        return Status::unavailable(format!("connection lost: {e}"));
    }
    // A connection error h2 detected itself (the peer sent bytes that are not HTTP/2, such as
    // a TLS alert to a plaintext client): the connection failed, and open calls get UNAVAILABLE
    // (GRPC-NOTES §1.1). The table below is for codes the peer sent.
    if e.is_go_away() && e.is_library() {
        return Status::unavailable(format!("connection failed: {e}"));
    }
    if e.is_go_away() && e.reason() == Some(Reason::NO_ERROR) {
        return Status::unavailable("the server is going away");
    }
    match e.reason() {
        Some(Reason::REFUSED_STREAM) => Status::unavailable(format!("stream refused: {e}")),
        Some(Reason::CANCEL) => Status::cancelled(format!("stream cancelled: {e}")),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(format!("{e}")),
        Some(Reason::INADEQUATE_SECURITY) => Status::permission_denied(format!("{e}")),
        Some(_) => Status::internal(format!("{e}")),
        None => Status::unavailable(format!("{e}")),
    }
}
