//! The request stream of a call that may be retried (A6): what each attempt sends is kept,
//! up to the retry buffer, so that the next attempt can send it again before it goes on with
//! the caller's stream.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::BytesMut;

use crate::grpc::{
    send::{Encoder, MessageSource},
    status::Status,
};

/// The encoded request messages sent so far, while the call may still be retried.
#[derive(Debug)]
pub(crate) struct Record {
    sent: BytesMut,
    limit: usize,
    /// The messages outgrew `limit`, or the call was committed: nothing is kept any more,
    /// and no retry may follow.
    stopped: bool,
}

impl Record {
    pub(crate) fn new(limit: usize) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            sent: BytesMut::new(),
            limit,
            stopped: false,
        }))
    }

    /// Whether a retry could still replay everything sent so far.
    pub(crate) fn replayable(&self) -> bool {
        !self.stopped
    }

    /// The call is committed to its attempt: let the record go.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        self.sent = BytesMut::new();
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.stopped {
            return;
        }
        if self.sent.len() + bytes.len() > self.limit {
            tracing::debug!(
                limit = self.limit,
                "request messages outgrew the retry buffer; the call is committed"
            );
            self.stop();
            return;
        }
        self.sent.extend_from_slice(bytes);
    }
}

/// The caller's request stream, shared by the attempts of one call: each attempt's sender
/// task holds it in turn, so a retry goes on where the last attempt stopped.
pub(crate) type Shared = Arc<tokio::sync::Mutex<Pin<Box<dyn MessageSource>>>>;

/// Wraps the caller's source so that everything it encodes is recorded.
pub(crate) struct Recording<S> {
    inner: Pin<Box<S>>,
    record: Arc<Mutex<Record>>,
    ended: bool,
}

impl<S: MessageSource + 'static> Recording<S> {
    pub(crate) fn shared(inner: S, record: Arc<Mutex<Record>>) -> Shared {
        let recording = Self {
            inner: Box::pin(inner),
            record,
            ended: false,
        };
        Arc::new(tokio::sync::Mutex::new(Box::pin(recording)))
    }
}

impl<S: MessageSource> MessageSource for Recording<S> {
    fn poll_fill(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        encoder: &mut Encoder,
    ) -> Poll<Option<Result<(), Status>>> {
        // The caller's stream ended during an earlier attempt: it is not polled again.
        if self.ended {
            return Poll::Ready(None);
        }
        let before = encoder.pending().len();
        let polled = self.inner.as_mut().poll_fill(cx, encoder);
        // Recorded in the same poll that encoded them: an attempt aborted at its next await
        // loses nothing the next attempt needs.
        self.record
            .lock()
            .expect("retry record")
            .keep(&encoder.pending()[before..]);
        if matches!(polled, Poll::Ready(None)) {
            self.ended = true;
        }
        polled
    }
}

/// One attempt's source: first what earlier attempts sent, then the shared stream.
pub(crate) struct Replayed<'a> {
    earlier: Option<BytesMut>,
    rest: Pin<&'a mut dyn MessageSource>,
}

impl<'a> Replayed<'a> {
    pub(crate) fn new(record: &Mutex<Record>, rest: Pin<&'a mut dyn MessageSource>) -> Self {
        let record = record.lock().expect("retry record");
        let earlier = (!record.sent.is_empty()).then(|| record.sent.clone());
        Self { earlier, rest }
    }
}

impl MessageSource for Replayed<'_> {
    fn poll_fill(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        encoder: &mut Encoder,
    ) -> Poll<Option<Result<(), Status>>> {
        if let Some(earlier) = self.earlier.take() {
            encoder.push_encoded(&earlier);
            return Poll::Ready(Some(Ok(())));
        }
        self.rest.as_mut().poll_fill(cx, encoder)
    }
}
