//! One call on the server, top to bottom: interceptors, then the handler (which decodes the
//! request and produces the response messages), then headers, messages and trailers, all under
//! the deadline and the peer's cancel; then the summary.
//!
//! Wire faults (framing, decoding, compression, bad headers) become status codes in one place,
//! `WireError::into_status`, told that it is the server asking.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::{pin, Pin},
    sync::Arc,
    task::Poll,
};

use bytes::Bytes;
use futures_util::FutureExt as _;
use h2::{server::SendResponse, Reason, RecvStream};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tokio::time::Sleep;

use crate::grpc::{
    budget::ConnBudget,
    compression::{Encoding, ACCEPT_ENCODING},
    error::{Side, WireError},
    intercept::{CallHead, CallSummary, Chain, ServerInterceptor},
    log::WIRE_TARGET,
    metadata::{Metadata, GRPC_ACCEPT_ENCODING, GRPC_ENCODING},
    recv::{Counts, RecvBody},
    request::RequestHead,
    send::{MessageSink, PipeEnd},
    server::{
        head::Rejection,
        route::{BoxSource, Handler},
    },
    status::Status,
};

/// `content-type` of every gRPC response we send.
const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");

/// Per-message size limits of a server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_recv: usize,
    pub(crate) max_send: usize,
}

/// Drives one routed call to its end.
pub(crate) async fn run(
    mut head: CallHead,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    handler: Handler,
    interceptors: Option<Chain<dyn ServerInterceptor>>,
    limits: Limits,
    budget: Option<Arc<ConnBudget>>,
) {
    // Summaries cost clock reads (and shared counters for request streams); pay only when
    // someone listens.
    let observe = interceptors.is_some() || tracing::enabled!(tracing::Level::DEBUG);
    let started = observe.then(std::time::Instant::now);
    let mut sleep = head.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
    let mut deadline = sleep.as_mut().map(|s| s.as_mut());
    let (status, sent, received) = serve(
        &mut head,
        body,
        &mut respond,
        &handler,
        interceptors.as_deref().unwrap_or_default(),
        limits,
        budget,
        &mut deadline,
        observe,
    )
    .await;
    let Some(started) = started else {
        return;
    };
    let summary = CallSummary::new(head.method(), &status, started, received, sent);
    tracing::debug!(
        code = %status.code(),
        elapsed_us = summary.elapsed.as_micros() as u64,
        messages_received = received.0,
        messages_sent = sent.0,
        "call completed"
    );
    for interceptor in interceptors.iter().flat_map(|chain| chain.iter()) {
        interceptor.after(&summary);
    }
}

/// The call's steps; returns its final status, and the messages and bytes sent and received.
#[allow(clippy::too_many_arguments)] // one call's state, passed down once
async fn serve(
    head: &mut CallHead,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    handler: &Handler,
    interceptors: &[Arc<dyn ServerInterceptor>],
    limits: Limits,
    budget: Option<Arc<ConnBudget>>,
    deadline: &mut Option<Pin<&mut Sleep>>,
    observe: bool,
) -> (Status, (u64, u64), (u64, u64)) {
    let mut body = RecvBody::new(Side::Server, body, limits.max_recv, None, head.encoding);
    if let Some(budget) = budget {
        body = body.with_budget(budget);
    }
    let (mut received, mut shared) = ((0, 0), None);
    // Interceptors, then the request and the handler: all under the deadline and the cancel.
    let work = async {
        for interceptor in interceptors.iter() {
            interceptor.before(head).await?;
        }
        let request = RequestHead {
            metadata: std::mem::take(&mut head.metadata),
            deadline: head.deadline,
            peer: head.peer.clone(),
            encoding: head.encoding,
        };
        match handler {
            // The one request message is read here, so its counts stay local.
            Handler::One(f) => {
                let payload = body.one_payload().await;
                received = body.received;
                f(payload?, request).await
            }
            Handler::Stream(f) => {
                if observe {
                    let counts = Arc::<Counts>::default();
                    body.counts = Some(counts.clone());
                    shared = Some(counts);
                }
                f(body, request).await
            }
        }
    };
    let reply = watch(respond, deadline.as_mut(), work).await;
    let received = shared.map_or(received, |counts| counts.get());
    let reply = match reply {
        Some(Ok(reply)) => reply,
        Some(Err(status)) => {
            answer_status(respond, &status, None, &head.response_metadata);
            return (status, (0, 0), received);
        }
        None => return (Status::cancelled("cancelled by the peer"), (0, 0), received),
    };
    // The response encoding: the one the handler asked for, if the client said it can decode
    // it (compression.md: never compress with an encoding the client did not list).
    let compression = reply.compression().filter(|e| {
        head.accept
            .as_ref()
            .is_some_and(|a| e.is_accepted_by(a.as_bytes()))
    });
    let (source, metadata, trailers) = reply.into_parts();
    let mut headers = std::mem::take(&mut head.response_metadata);
    headers.extend(metadata);
    let Some(mut sink) = send_headers(respond, &headers, limits, compression) else {
        return (
            Status::unavailable("cannot send response headers"),
            (0, 0),
            received,
        );
    };
    let end = pipe(&mut sink, source, deadline).await;
    let sent = sink.counts();
    (send_status(sink, end, &trailers), sent, received)
}

/// Runs `work` until it ends, the peer resets the stream, or the deadline passes. On the last
/// two `work` is dropped at its current await point; the deadline is answered Trailers-Only
/// here. `None` means the call is over; a panic in `work` fails this call alone.
async fn watch<T>(
    respond: &mut SendResponse<Bytes>,
    mut deadline: Option<&mut Pin<&mut Sleep>>,
    work: impl Future<Output = Result<T, Status>>,
) -> Option<Result<T, Status>> {
    let mut work = pin!(AssertUnwindSafe(work).catch_unwind());
    let outcome = std::future::poll_fn(|cx| {
        if let Poll::Ready(reset) = respond.poll_reset(cx) {
            tracing::debug!(?reset, "call cancelled by the peer");
            return Poll::Ready(None);
        }
        if let Some(deadline) = deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Status::deadline_exceeded("deadline exceeded"))));
            }
        }
        work.as_mut()
            .poll(cx)
            .map(|r| Some(r.unwrap_or_else(|_| Err(Status::unknown("the handler panicked")))))
    })
    .await;
    outcome
}

/// Sends the response messages; a panic inside the handler's stream fails this call alone.
async fn pipe(
    sink: &mut MessageSink,
    mut source: BoxSource,
    deadline: &mut Option<Pin<&mut Sleep>>,
) -> PipeEnd {
    // The guard wraps the whole pipe rather than each item: catching per item cost ~50
    // instructions a message (callgrind), a quarter of a one-byte image's cost.
    let piped = AssertUnwindSafe(sink.pipe(source.as_mut(), deadline.as_mut().map(|d| d.as_mut())))
        .catch_unwind()
        .await;
    let Err(_) = piped else {
        return piped.unwrap_or(PipeEnd::Finished);
    };
    // Messages encoded before the panic still go out (under the same reset and deadline
    // watch), then the call fails.
    let nothing = crate::grpc::send::Source::<_, ()>::new(futures_util::stream::empty::<
        Result<(), Status>,
    >());
    let nothing = pin!(nothing);
    match sink
        .pipe(nothing, deadline.as_mut().map(|d| d.as_mut()))
        .await
    {
        PipeEnd::Finished => PipeEnd::Failed(Status::unknown("the handler panicked")),
        other => other,
    }
}

fn send_headers(
    respond: &mut SendResponse<Bytes>,
    metadata: &Metadata,
    limits: Limits,
    compression: Option<Encoding>,
) -> Option<MessageSink> {
    let mut response = http::Response::new(());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    if let Some(encoding) = compression {
        headers.insert(GRPC_ENCODING, HeaderValue::from_static(encoding.as_str()));
    }
    headers.insert(
        GRPC_ACCEPT_ENCODING,
        HeaderValue::from_static(ACCEPT_ENCODING),
    );
    metadata.append_to(headers);
    tracing::debug!(target: WIRE_TARGET, headers = ?response.headers(), "send headers");
    match respond.send_response(response, false) {
        Ok(stream) => Some(MessageSink::new(
            stream,
            Side::Server,
            limits.max_send,
            compression,
        )),
        Err(e) => {
            tracing::debug!(error = %e, "cannot send response headers");
            None
        }
    }
}

/// Ends the call after its messages: trailers with the status, or a reset. Returns the status
/// the call ended with.
fn send_status(sink: MessageSink, end: PipeEnd, trailers: &Metadata) -> Status {
    let status = match end {
        PipeEnd::Finished => Status::ok(),
        PipeEnd::Failed(status) => status,
        PipeEnd::Reset(reason) => {
            tracing::debug!(?reason, "call cancelled by the peer");
            return Status::cancelled("cancelled by the peer");
        }
        PipeEnd::SendFailed(e) => {
            tracing::debug!(error = %e, "cannot send the response");
            return Status::unavailable(format!("cannot send the response: {e}"));
        }
        // With bytes still waiting for window, trailers would queue behind them forever on a
        // stalled reader; a reset ends the stream now (PROTOCOL-HTTP2.md allows RST_STREAM).
        PipeEnd::DeadlineExceeded if sink.buffered() > 0 => {
            sink.reset(Reason::CANCEL);
            return Status::deadline_exceeded("deadline exceeded");
        }
        PipeEnd::DeadlineExceeded => Status::deadline_exceeded("deadline exceeded"),
    };
    let mut map = HeaderMap::new();
    status.write_headers(&mut map);
    trailers.append_to(&mut map);
    tracing::debug!(target: WIRE_TARGET, trailers = ?map, "send trailers");
    if let Err(e) = sink.send_trailers(map) {
        tracing::debug!(error = %e, "cannot send trailers");
    }
    status
}

/// Answers a call with a status alone (Trailers-Only), with `metadata` in the same head.
pub(crate) fn answer_status(
    respond: &mut SendResponse<Bytes>,
    status: &Status,
    accept_encoding: Option<&'static str>,
    metadata: &Metadata,
) {
    let mut response = status.to_trailers_only();
    metadata.append_to(response.headers_mut());
    if let Some(accept) = accept_encoding {
        response
            .headers_mut()
            .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static(accept));
    }
    tracing::debug!(target: WIRE_TARGET, headers = ?response.headers(), "send trailers-only");
    if let Err(e) = respond.send_response(response, true) {
        tracing::debug!(error = %e, "cannot send a trailers-only response");
    }
}

/// Answers a request head that [`head::check`](super::head::check) refused.
pub(crate) fn reject(respond: &mut SendResponse<Bytes>, rejection: Rejection) {
    let status = match rejection {
        Rejection::Http(status) => return send_http_error(respond, status),
        Rejection::Wire(e) => e,
    };
    // compression.md: a refused encoding is answered with the list of those we accept.
    let accept = matches!(status, WireError::UnsupportedEncoding(_)).then_some(ACCEPT_ENCODING);
    answer_status(
        respond,
        &status.into_status(Side::Server),
        accept,
        &Metadata::new(),
    );
}

fn send_http_error(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    if let Err(e) = respond.send_response(response, true) {
        tracing::debug!(error = %e, "cannot send an HTTP error response");
    }
}
