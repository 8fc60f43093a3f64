//! One RPC on the server: check the request head, route, run the handler under the deadline and
//! the peer's cancel, write headers, messages and trailers.
//!
//! This is the single place where framing, decoding and protocol errors become status codes on
//! the server (GRPC-NOTES §1.6).

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::{pin, Pin},
    sync::Arc,
    task::Poll,
};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::FutureExt as _;
use h2::{server::SendResponse, Reason, RecvStream};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::time::{Instant, Sleep};

use crate::grpc::{
    compression::{Encoding, ACCEPT_ENCODING},
    metadata::{Metadata, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT},
    recv::Streaming,
    request::{Peer, Request, Response},
    send::{MessageSink, PipeEnd},
    server::router::{BoxFuture, Router},
    status::Status,
    timeout, WIRE_TARGET,
};

/// `content-type` of every gRPC response we send.
const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");

/// Per-message size limits of a server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_recv: usize,
    pub(crate) max_send: usize,
}

/// Everything an adapter needs to drive one call.
pub(crate) struct CallParts {
    body: RecvStream,
    respond: SendResponse<Bytes>,
    metadata: Metadata,
    deadline: Option<Instant>,
    peer: Arc<Peer>,
    limits: Limits,
    /// The request messages' encoding (`grpc-encoding`).
    encoding: Option<Encoding>,
    /// What the client can decode (`grpc-accept-encoding`), for response compression.
    accept: Option<HeaderValue>,
}

/// Checks a request head and routes it. Early rejections are answered here, without a task;
/// otherwise the returned future drives the call.
pub(crate) fn dispatch(
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    router: &Router,
    peer: &Arc<Peer>,
    limits: Limits,
) -> Option<BoxFuture> {
    let (head, body) = request.into_parts();
    // PROTOCOL-HTTP2.md: ":method POST"; anything else is not a gRPC call.
    if head.method != Method::POST {
        tracing::debug!(method = %head.method, "rejecting non-POST request");
        send_http_error(&mut respond, StatusCode::METHOD_NOT_ALLOWED);
        return None;
    }
    // PROTOCOL-HTTP2.md: a content-type that does not begin with "application/grpc" SHOULD get
    // HTTP 415 (GRPC-NOTES §1.2).
    let grpc_content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc_content_type {
        tracing::debug!("rejecting request with a non-gRPC content-type");
        send_http_error(&mut respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return None;
    }
    let path = head.uri.path();
    tracing::debug!(target: WIRE_TARGET, peer = ?peer.addr, %path, headers = ?head.headers, "recv headers");
    let Some(handler) = router.lookup(path) else {
        let status = if router.has_service_of(path) {
            Status::unimplemented(format!("unknown method {path}"))
        } else {
            Status::unimplemented(format!("unknown service for path {path}"))
        };
        send_trailers_only(&mut respond, &status, None);
        return None;
    };
    // compression.md: an encoding the server does not support is UNIMPLEMENTED, and the
    // response lists what it accepts.
    let encoding = match head
        .headers
        .get(GRPC_ENCODING)
        .map(|v| Encoding::from_header(v.as_bytes()))
    {
        None => None,
        Some(Ok(encoding)) => encoding,
        Some(Err(name)) => {
            let status = Status::unimplemented(format!("message encoding {name} is not supported"));
            send_trailers_only(&mut respond, &status, Some(ACCEPT_ENCODING));
            return None;
        }
    };
    let deadline = match head
        .headers
        .get(GRPC_TIMEOUT)
        .map(|v| timeout::parse(v.as_bytes()))
    {
        None => None,
        Some(Ok(t)) => Some(Instant::now() + t),
        // grpc-go fails a malformed timeout rather than ignoring it (GRPC-NOTES §1.2, [S5]).
        Some(Err(e)) => {
            send_trailers_only(
                &mut respond,
                &Status::internal(format!("malformed grpc-timeout: {e}")),
                None,
            );
            return None;
        }
    };
    Some(handler.call(CallParts {
        body,
        respond,
        accept: head.headers.get(GRPC_ACCEPT_ENCODING).cloned(),
        metadata: Metadata::from_header_map(head.headers),
        deadline,
        peer: peer.clone(),
        limits,
        encoding,
    }))
}

// ===== the four call kinds =====

/// Drives a unary call: a server-streaming call whose response is one message.
pub(crate) async fn unary<Req, Resp, F, Fut>(parts: CallParts, f: F)
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Request<Req>) -> Fut + Send,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send,
{
    server_streaming(parts, move |req| single(f(req))).await;
}

/// Drives a server-streaming call: one request message, then the handler's stream.
pub(crate) async fn server_streaming<Req, Resp, S, F, Fut>(parts: CallParts, f: F)
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(Request<Req>) -> Fut + Send,
    Fut: Future<Output = Result<Response<S>, Status>> + Send,
{
    drive(parts, move |incoming| async move {
        let Incoming {
            body,
            metadata,
            deadline,
            peer,
            encoding,
            max_recv,
        } = incoming;
        let mut requests = Streaming::<Req>::server(body, max_recv, encoding);
        let message = requests.single("request").await?;
        f(Request::from_server(
            message, metadata, deadline, peer, encoding,
        ))
        .await
    })
    .await;
}

/// Drives a client-streaming call: a bidirectional call whose response is one message.
pub(crate) async fn client_streaming<Req, Resp, F, Fut>(parts: CallParts, f: F)
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Request<Streaming<Req>>) -> Fut + Send,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send,
{
    bidi(parts, move |req| single(f(req))).await;
}

/// Drives a bidirectional-streaming call: the handler gets the request stream.
pub(crate) async fn bidi<Req, Resp, S, F, Fut>(parts: CallParts, f: F)
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(Request<Streaming<Req>>) -> Fut + Send,
    Fut: Future<Output = Result<Response<S>, Status>> + Send,
{
    drive(parts, move |incoming| {
        let Incoming {
            body,
            metadata,
            deadline,
            peer,
            encoding,
            max_recv,
        } = incoming;
        let requests = Streaming::<Req>::server(body, max_recv, encoding);
        f(Request::from_server(
            requests, metadata, deadline, peer, encoding,
        ))
    })
    .await;
}

/// What the request side of a call hands to the handler's adapter.
struct Incoming {
    body: RecvStream,
    metadata: Metadata,
    deadline: Option<Instant>,
    peer: Arc<Peer>,
    encoding: Option<Encoding>,
    max_recv: usize,
}

/// The steps every call kind shares: run the handler under the deadline and the peer's
/// cancel, then send its response stream and the trailers.
async fn drive<Resp, S, W, Fut>(parts: CallParts, work: W)
where
    Resp: prost::Message,
    S: Stream<Item = Result<Resp, Status>>,
    W: FnOnce(Incoming) -> Fut,
    Fut: Future<Output = Result<Response<S>, Status>>,
{
    let CallParts {
        body,
        mut respond,
        metadata,
        deadline,
        peer,
        limits,
        encoding,
        accept,
    } = parts;
    let mut sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
    let work = work(Incoming {
        body,
        metadata,
        deadline,
        peer,
        encoding,
        max_recv: limits.max_recv,
    });
    let Some(response) = run_handler(&mut respond, sleep.as_mut().map(|s| s.as_mut()), work).await
    else {
        return;
    };
    respond_stream(respond, response, sleep, limits, accept).await;
}

/// A one-message response as a stream, so single responses share the streaming path.
async fn single<M, Fut>(
    handler: Fut,
) -> Result<Response<futures_util::stream::Once<std::future::Ready<Result<M, Status>>>>, Status>
where
    Fut: Future<Output = Result<Response<M>, Status>>,
{
    let (message, headers, trailers, compression) = handler.await?.into_parts_with_compression();
    let mut response = Response::from_parts(
        futures_util::stream::once(std::future::ready(Ok(message))),
        headers,
        trailers,
    );
    response.set_compression(compression);
    Ok(response)
}

// ===== shared steps =====

/// Runs the handler until it answers, the peer resets the stream, or the deadline passes. On
/// the last two the handler future is dropped at its current await point; the deadline and any
/// handler error are answered Trailers-Only. `None` means the call is over.
async fn run_handler<T, Fut>(
    respond: &mut SendResponse<Bytes>,
    mut deadline: Option<Pin<&mut Sleep>>,
    work: Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T, Status>>,
{
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
    .await?;
    match outcome {
        Ok(value) => Some(value),
        Err(status) => {
            send_trailers_only(respond, &status, None);
            None
        }
    }
}

/// Sends the response head and pipes the message stream, then the trailers.
async fn respond_stream<Resp, S>(
    mut respond: SendResponse<Bytes>,
    response: Response<S>,
    mut sleep: Option<Pin<Box<Sleep>>>,
    limits: Limits,
    accept: Option<HeaderValue>,
) where
    Resp: prost::Message,
    S: Stream<Item = Result<Resp, Status>>,
{
    let (stream, headers, trailers, compression) = response.into_parts_with_compression();
    let compression = negotiated(compression, accept.as_ref());
    let Some(mut sink) = send_headers(&mut respond, &headers, limits, compression) else {
        return;
    };
    // A panic inside the handler's stream fails this call alone, with trailers. The guard
    // wraps the whole pipe rather than each item: catching per item cost ~50 instructions a
    // message (callgrind), a quarter of a one-byte image's cost.
    let mut stream = pin!(stream);
    let piped = AssertUnwindSafe(sink.pipe(stream.as_mut(), sleep.as_mut().map(|s| s.as_mut())))
        .catch_unwind()
        .await;
    let end = match piped {
        Ok(end) => end,
        Err(_) => {
            // Messages produced before the panic still go out (under the same reset and
            // deadline watch), then the call fails.
            let mut nothing = pin!(futures_util::stream::empty::<Result<Resp, Status>>());
            match sink
                .pipe(nothing.as_mut(), sleep.as_mut().map(|s| s.as_mut()))
                .await
            {
                PipeEnd::Finished(_) => PipeEnd::Finished(Status::unknown("the handler panicked")),
                other => other,
            }
        }
    };
    finish(sink, end, &trailers);
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
    metadata.add_to_headers(headers);
    tracing::debug!(target: WIRE_TARGET, headers = ?response.headers(), "send headers");
    match respond.send_response(response, false) {
        Ok(stream) => {
            let mut sink = MessageSink::new(stream, limits.max_send);
            sink.compress_with(compression);
            Some(sink)
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot send response headers");
            None
        }
    }
}

/// The response encoding: the one the handler asked for, if the client said it can decode it
/// (compression.md: never compress with an encoding the client did not list).
fn negotiated(asked: Option<Encoding>, accept: Option<&HeaderValue>) -> Option<Encoding> {
    asked.filter(|e| accept.is_some_and(|a| e.is_accepted_by(a.as_bytes())))
}

fn finish(sink: MessageSink, end: PipeEnd, trailers: &Metadata) {
    let status = match end {
        PipeEnd::Finished(status) => status,
        PipeEnd::Reset(reason) => {
            tracing::debug!(?reason, "call cancelled by the peer");
            return;
        }
        PipeEnd::SendFailed(e) => {
            tracing::debug!(error = %e, "cannot send the response");
            return;
        }
        // With bytes still waiting for window, trailers would queue behind them forever on a
        // stalled reader; a reset ends the stream now (PROTOCOL-HTTP2.md allows RST_STREAM).
        PipeEnd::DeadlineExceeded if sink.buffered() > 0 => {
            sink.reset(Reason::CANCEL);
            return;
        }
        PipeEnd::DeadlineExceeded => Status::deadline_exceeded("deadline exceeded"),
    };
    let mut map = HeaderMap::new();
    status.add_to_headers(&mut map);
    trailers.add_to_headers(&mut map);
    tracing::debug!(target: WIRE_TARGET, trailers = ?map, "send trailers");
    if let Err(e) = sink.send_trailers(map) {
        tracing::debug!(error = %e, "cannot send trailers");
    }
}

fn send_trailers_only(
    respond: &mut SendResponse<Bytes>,
    status: &Status,
    accept_encoding: Option<&'static str>,
) {
    let mut response = status.to_trailers_only();
    tracing::debug!(target: WIRE_TARGET, headers = ?response.headers(), "send trailers-only");
    if let Some(accept) = accept_encoding {
        response
            .headers_mut()
            .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static(accept));
    }
    if let Err(e) = respond.send_response(response, true) {
        tracing::debug!(error = %e, "cannot send a trailers-only response");
    }
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
