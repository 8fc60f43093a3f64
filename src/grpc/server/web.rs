//! One browser call (gRPC-Web or Connect) on the same handlers and interceptors as gRPC: the
//! request head and its whole body in, a response head and a stream of body chunks out, for
//! whichever transport carried it (HTTP/1.1 through hyper, or an h2 stream).
//!
//! ```text
//! head (protocol, deadline, metadata) -> route -> interceptors -> request message
//!   (unframe, base64, decompress, JSON -> binary) -> handler -> response frames
//!   (binary -> JSON, envelope or bare, base64) -> end (trailers frame, end-of-stream
//!   message, or the unary error's HTTP status)
//! ```
//!
//! Browsers send one request message, so a web call reads its body whole (within the receive
//! limit) before the handler runs; the response streams as the handler yields.

use std::{
    future::Future as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::time::{Instant, Sleep};

use crate::grpc::{
    compression::{self, Encoding},
    error::{Side, WireError},
    frame::FrameDecoder,
    intercept::{CallHead, CallSummary, ServerInterceptor},
    metadata::{Metadata, GRPC_TIMEOUT},
    request::{Peer, RequestHead},
    send::Encoder,
    server::{
        call::Limits,
        route::{BoxSource, Handler, Router},
    },
    status::Status,
    timeout,
    web::{
        connect,
        grpc_web::{self, TextDecoder},
        json::{self, LazyJson, MethodTypes},
    },
};

/// What a server's web calls share.
#[derive(Debug)]
pub(crate) struct Web {
    pub(crate) router: Router,
    /// JSON codecs need the service's descriptors; without them JSON is refused (415).
    pub(crate) json: Option<LazyJson>,
    pub(crate) limits: Limits,
}

/// The browser protocol a request speaks, from its method and content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `application/grpc-web[+proto]`, or `-text` (base64 both ways).
    GrpcWeb { text: bool },
    /// `application/proto` or `application/json`, POST or (side-effect-free methods) GET.
    ConnectUnary { json: bool },
    /// `application/connect+proto` or `application/connect+json`.
    ConnectStream { json: bool },
}

impl Protocol {
    /// A cheap first look: false for plain gRPC (`application/grpc` or `application/grpc+...`),
    /// so the gRPC path pays one prefix test, not a parse.
    pub(crate) fn maybe(head: &Parts) -> bool {
        let Some(ct) = head.headers.get(header::CONTENT_TYPE) else {
            return head.method == Method::GET;
        };
        let ct = ct.as_bytes();
        !ct.starts_with(b"application/grpc") || ct.starts_with(b"application/grpc-web")
    }

    /// The protocol of a request, `None` when it is not a web call (plain gRPC, or nothing
    /// we serve).
    pub(crate) fn of(head: &Parts) -> Option<Self> {
        if head.method == Method::GET {
            let query = head.uri.query().unwrap_or("");
            return query
                .split('&')
                .any(|p| p == "connect=v1")
                .then_some(Self::ConnectUnary {
                    json: !query.split('&').any(|p| p == "encoding=proto"),
                });
        }
        if head.method != Method::POST {
            return None;
        }
        let content_type = head.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
        Some(match essence.as_str() {
            "application/grpc-web" | "application/grpc-web+proto" => Self::GrpcWeb { text: false },
            "application/grpc-web-text" | "application/grpc-web-text+proto" => {
                Self::GrpcWeb { text: true }
            }
            "application/proto" => Self::ConnectUnary { json: false },
            "application/json" => Self::ConnectUnary { json: true },
            "application/connect+proto" => Self::ConnectStream { json: false },
            "application/connect+json" => Self::ConnectStream { json: true },
            _ => return None,
        })
    }

    fn json(self) -> bool {
        matches!(
            self,
            Self::ConnectUnary { json: true } | Self::ConnectStream { json: true }
        )
    }

    /// The header in which a client lists the response encodings it can decode.
    fn accept_header(self) -> &'static str {
        match self {
            Self::GrpcWeb { .. } => "grpc-accept-encoding",
            Self::ConnectUnary { .. } => "accept-encoding",
            Self::ConnectStream { .. } => "connect-accept-encoding",
        }
    }

    /// The header that names the response messages' encoding.
    fn encoding_header(self) -> &'static str {
        match self {
            Self::GrpcWeb { .. } => "grpc-encoding",
            Self::ConnectUnary { .. } => "content-encoding",
            Self::ConnectStream { .. } => "connect-content-encoding",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::GrpcWeb { text: false } => "application/grpc-web+proto",
            Self::GrpcWeb { text: true } => "application/grpc-web-text+proto",
            Self::ConnectUnary { json: false } => "application/proto",
            Self::ConnectUnary { json: true } => "application/json",
            Self::ConnectStream { json: false } => "application/connect+proto",
            Self::ConnectStream { json: true } => "application/connect+json",
        }
    }
}

/// The most a web request body may take before it is decoded: text mode inflates a message by
/// 4/3 and JSON by more, so this is generous; the message itself is checked against `max` once
/// decoded.
pub(crate) fn body_bound(max: usize) -> usize {
    max.saturating_mul(2).saturating_add(64 * 1024)
}

/// A web call's response body, chunk by chunk; dropping it cancels the handler.
pub(crate) type WebBody = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// A web call's answer.
pub(crate) struct WebReply {
    pub(crate) head: http::Response<()>,
    pub(crate) body: WebBody,
}

impl std::fmt::Debug for WebReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebReply")
            .field("head", &self.head)
            .finish()
    }
}

/// Serves one web call. `body` is the whole request body, already bounded by the transport.
pub(crate) async fn serve(
    web: &Arc<Web>,
    protocol: Protocol,
    head: Parts,
    body: Bytes,
    peer: Arc<Peer>,
) -> WebReply {
    let started = std::time::Instant::now();
    let path = head.uri.path().to_owned();
    let mut call = Call {
        protocol,
        path,
        interceptors: web.router.interceptors().cloned(),
        started,
        received: (0, 0),
    };
    let handler = match web.router.handler(&call.path) {
        Err(status) => {
            let mut reply = call.fail(status, &Metadata::new());
            // Connect: an unknown method is HTTP 404 (the protocol's words), with the error
            // body still saying unimplemented.
            if let Protocol::ConnectUnary { .. } = protocol {
                *reply.head.status_mut() = StatusCode::NOT_FOUND;
            }
            return reply;
        }
        Ok(Handler::Stream(_)) => {
            // Browsers send one request message; request streams need gRPC over HTTP/2.
            let status = Status::unimplemented("client and bidi streaming need gRPC over HTTP/2");
            return call.fail(status, &Metadata::new());
        }
        Ok(Handler::One(f)) => f.clone(),
    };
    let codec = protocol
        .json()
        .then(|| web.json.as_ref().and_then(LazyJson::get));
    let types = match (protocol.json(), codec.flatten()) {
        (false, _) => None,
        (true, Some(codec)) => match codec.method(&call.path) {
            Some(types) => Some(types),
            None => {
                let status =
                    Status::unimplemented(format!("no JSON descriptors for {}", call.path));
                return call.fail(status, &Metadata::new());
            }
        },
        (true, None) => return unsupported_media_type(),
    };
    let mut call_head = match call_head(&head, protocol, peer) {
        Ok(h) => h,
        Err(status) => return call.fail(status, &Metadata::new()),
    };
    let payload = match request_payload(protocol, &head, body, web.limits.max_recv, types.as_ref())
    {
        Ok(p) => p,
        Err(status) => return call.fail(status, &Metadata::new()),
    };
    call.received = (1, payload.len() as u64);
    let deadline = call_head.deadline;
    let work = async {
        if let Some(chain) = &call.interceptors {
            for interceptor in chain.iter() {
                interceptor.before(&mut call_head).await?;
            }
        }
        let request = RequestHead {
            metadata: std::mem::take(&mut call_head.metadata),
            deadline,
            peer: call_head.peer.clone(),
            encoding: None,
        };
        handler(payload, request).await
    };
    let reply = match deadline {
        None => work.await,
        Some(d) => tokio::time::timeout_at(d, work)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline exceeded"))),
    };
    let response_metadata = std::mem::take(&mut call_head.response_metadata);
    let reply = match reply {
        Ok(reply) => reply,
        Err(status) => return call.fail(status, &response_metadata),
    };
    // The response encoding: the handler's choice, if the client listed it, as for gRPC.
    // JSON is re-encoded message by message here, so it goes uncompressed.
    let compression = reply.compression().filter(|_| types.is_none()).filter(|e| {
        head.headers
            .get(protocol.accept_header())
            .is_some_and(|a| e.is_accepted_by(a.as_bytes()))
    });
    let (source, metadata, trailers) = reply.into_parts();
    let mut headers = response_metadata;
    headers.extend(metadata);
    let output = types.map(|t| t.output);
    let frames = Frames {
        source,
        encoder: Encoder::new(Side::Server, web.limits.max_send, compression),
        sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        pending_end: None,
        done: false,
    };
    if let Protocol::ConnectUnary { .. } = protocol {
        return call
            .unary(frames, output, &headers, &trailers, compression)
            .await;
    }
    let mut response = http::Response::new(());
    let map = response.headers_mut();
    if let Some(encoding) = compression {
        map.insert(
            protocol.encoding_header(),
            HeaderValue::from_static(encoding.as_str()),
        );
    }
    map.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protocol.content_type()),
    );
    headers.append_to(map);
    let body = Streamed {
        frames,
        output,
        trailers,
        ending: None,
        finish: Some(call),
    };
    WebReply {
        head: response,
        body: Box::pin(body),
    }
}

/// Answers a web call with `status` before it reaches a handler (a body too large, too slow).
pub(crate) fn refuse(protocol: Protocol, path: &str, status: Status) -> WebReply {
    let call = Call {
        protocol,
        path: path.to_owned(),
        interceptors: None,
        started: std::time::Instant::now(),
        received: (0, 0),
    };
    call.fail(status, &Metadata::new())
}

/// The call's identity and what it has counted, for the interceptors' summary.
struct Call {
    protocol: Protocol,
    path: String,
    interceptors: Option<crate::grpc::intercept::Chain<dyn ServerInterceptor>>,
    started: std::time::Instant,
    received: (u64, u64),
}

impl Call {
    fn report(&self, status: &Status, sent: (u64, u64)) {
        let Some(chain) = &self.interceptors else {
            return;
        };
        let summary = CallSummary::new(&self.path, status, self.started, self.received, sent);
        for interceptor in chain.iter() {
            interceptor.after(&summary);
        }
    }

    /// Ends the call with `status` before any message: Connect unary as its HTTP status
    /// and JSON body, the streaming protocols as a body holding only their end.
    fn fail(self, status: Status, metadata: &Metadata) -> WebReply {
        self.report(&status, (0, 0));
        let mut response = http::Response::new(());
        let headers = response.headers_mut();
        metadata.append_to(headers);
        let body = match self.protocol {
            Protocol::ConnectUnary { .. } => {
                *response.status_mut() = connect::http_status(status.code());
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                connect::error_body(&status)
            }
            Protocol::ConnectStream { .. } => {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.protocol.content_type()),
                );
                connect::end_stream(&status, &Metadata::new())
            }
            Protocol::GrpcWeb { .. } => {
                // Trailers-Only: the status in the head, as grpc-web clients read it.
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.protocol.content_type()),
                );
                status.write_headers(headers);
                Bytes::new()
            }
        };
        WebReply {
            head: response,
            body: Box::pin(futures_util::stream::iter(
                (!body.is_empty()).then_some(body),
            )),
        }
    }

    /// A Connect unary answer: the one message, bare, with trailers as `trailer-` headers.
    async fn unary(
        self,
        mut frames: Frames,
        output: Option<prost_reflect::MessageDescriptor>,
        headers: &Metadata,
        trailers: &Metadata,
        compression: Option<Encoding>,
    ) -> WebReply {
        let mut all = BytesMut::new();
        let end = loop {
            match std::future::poll_fn(|cx| frames.poll_chunk(cx)).await {
                Some(Ok(chunk)) => all.extend_from_slice(&chunk),
                Some(Err(status)) => break Err(status),
                None => break Ok(()),
            }
        };
        let message = end.and_then(|()| {
            let mut messages = split_frames(all.freeze());
            match (messages.next(), messages.next()) {
                (Some(one), None) => Ok(one),
                _ => Err(Status::internal("a unary handler must answer one message")),
            }
        });
        let body = match message.and_then(|m| to_wire(m, output.as_ref())) {
            Ok(body) => body,
            Err(status) => return self.fail(status, headers),
        };
        let sent = (1, body.len() as u64);
        let mut response = http::Response::new(());
        let map = response.headers_mut();
        // The bare message was compressed by the encoder: the body's encoding.
        if let Some(encoding) = compression {
            map.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(encoding.as_str()),
            );
        }
        map.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.protocol.content_type()),
        );
        headers.append_to(map);
        let mut trailer_map = HeaderMap::new();
        trailers.append_to(&mut trailer_map);
        for (name, value) in &trailer_map {
            if let Ok(name) = http::HeaderName::try_from(format!("trailer-{name}")) {
                map.append(name, value.clone());
            }
        }
        self.report(&Status::ok(), sent);
        WebReply {
            head: response,
            body: Box::pin(futures_util::stream::iter(Some(body))),
        }
    }
}

/// The head checks of a web call: its deadline and metadata.
fn call_head(head: &Parts, protocol: Protocol, peer: Arc<Peer>) -> Result<CallHead, Status> {
    let timeout = match protocol {
        Protocol::GrpcWeb { .. } => head
            .headers
            .get(GRPC_TIMEOUT)
            .map(|v| timeout::parse(v.as_bytes()))
            .transpose()
            .map_err(|e| WireError::Timeout(e).into_status(Side::Server))?,
        _ => head
            .headers
            .get("connect-timeout-ms")
            .map(|v| connect::parse_timeout(v.as_bytes()))
            .transpose()
            .map_err(Status::invalid_argument)?,
    };
    if let Some(v) = head.headers.get("connect-protocol-version") {
        if v.as_bytes() != b"1" {
            return Err(Status::invalid_argument(
                "connect-protocol-version must be 1",
            ));
        }
    }
    let mut headers = head.headers.clone();
    for name in [
        "connect-protocol-version",
        "connect-timeout-ms",
        "connect-content-encoding",
        "connect-accept-encoding",
        "x-grpc-web",
        "x-user-agent",
    ] {
        headers.remove(name);
    }
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::ACCEPT_ENCODING,
        header::ORIGIN,
        header::ACCEPT,
        header::CONNECTION,
        header::HOST,
        header::REFERER,
    ] {
        headers.remove(name);
    }
    Ok(CallHead {
        uri: head.uri.clone(),
        metadata: Metadata::from_header_map(headers),
        deadline: timeout.and_then(|t: Duration| Instant::now().checked_add(t)),
        peer,
        response_metadata: Metadata::new(),
        encoding: None,
        accept: None,
    })
}

/// The request message's binary encoding, whatever the protocol carried.
fn request_payload(
    protocol: Protocol,
    head: &Parts,
    body: Bytes,
    max: usize,
    types: Option<&MethodTypes>,
) -> Result<Bytes, Status> {
    let message = match protocol {
        Protocol::GrpcWeb { text } => {
            let body = if text {
                let (mut decoder, mut out) = (TextDecoder::default(), Vec::new());
                decoder
                    .push(&body, &mut out)
                    .and_then(|()| decoder.finish())
                    .map_err(|e| Status::invalid_argument(e.0))?;
                Bytes::from(out)
            } else {
                body
            };
            let encoding = Encoding::of_head(&head.headers)
                .map_err(|name| WireError::UnsupportedEncoding(name).into_status(Side::Server))?;
            one_frame(body, max, encoding)?
        }
        Protocol::ConnectStream { .. } => {
            let encoding = header_encoding(&head.headers, "connect-content-encoding")?;
            one_frame(body, max, encoding)?
        }
        Protocol::ConnectUnary { .. } if head.method == Method::GET => get_message(head, max)?,
        Protocol::ConnectUnary { .. } => {
            let encoding = header_encoding(&head.headers, "content-encoding")?;
            decompressed(body, encoding, max)?
        }
    };
    match types {
        None => Ok(message),
        Some(types) => json::to_binary(&types.input, &message)
            .map(Bytes::from)
            .map_err(Status::invalid_argument),
    }
}

/// A Connect compression header: identity, gzip or deflate.
fn header_encoding(headers: &HeaderMap, name: &str) -> Result<Option<Encoding>, Status> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) if v.as_bytes() == b"identity" => Ok(None),
        Some(v) => Encoding::from_header(v.as_bytes())
            .map_err(|name| WireError::UnsupportedEncoding(name).into_status(Side::Server)),
    }
}

fn decompressed(body: Bytes, encoding: Option<Encoding>, max: usize) -> Result<Bytes, Status> {
    let body = match encoding {
        None => body,
        Some(e) => compression::decompress(e, &body, max)
            .map_err(|e| WireError::Decompress(e).into_status(Side::Server))?,
    };
    if body.len() > max {
        return Err(Status::resource_exhausted(format!(
            "received message larger than max ({} vs. {max})",
            body.len()
        )));
    }
    Ok(body)
}

/// The one framed message of a body: exactly one, within the limit, decompressed.
fn one_frame(body: Bytes, max: usize, encoding: Option<Encoding>) -> Result<Bytes, Status> {
    let wire = |e: WireError| e.into_status(Side::Server);
    let mut decoder = FrameDecoder::new(max, encoding.is_some());
    decoder.push(body);
    let frame = decoder
        .next_frame()
        .map_err(|e| wire(WireError::Frame(e)))?
        .ok_or_else(|| wire(WireError::Cardinality { more: false }))?;
    if decoder
        .next_frame()
        .map_err(|e| wire(WireError::Frame(e)))?
        .is_some()
    {
        return Err(wire(WireError::Cardinality { more: true }));
    }
    decoder.finish().map_err(|e| wire(WireError::Frame(e)))?;
    match (frame.compressed, encoding) {
        (true, Some(e)) => compression::decompress(e, &frame.payload, max)
            .map_err(|e| wire(WireError::Decompress(e))),
        _ => Ok(frame.payload),
    }
}

/// A Connect GET's message, from `?message=` (`base64=1` for base64url).
fn get_message(head: &Parts, max: usize) -> Result<Bytes, Status> {
    use base64::Engine as _;
    let query = head.uri.query().unwrap_or("");
    let mut message = None;
    let mut base64 = false;
    let mut compression = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "message" => message = Some(percent_decode(value)?),
            "base64" => base64 = value == "1",
            "compression" if value != "identity" => {
                compression = Some(Encoding::from_header(value.as_bytes()).map_err(|name| {
                    WireError::UnsupportedEncoding(name).into_status(Side::Server)
                })?);
            }
            _ => {}
        }
    }
    let message = message.ok_or_else(|| Status::invalid_argument("a GET needs ?message="))?;
    let message = if base64 {
        let text: Vec<u8> = message.into_iter().filter(|&b| b != b'=').collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| Status::invalid_argument(format!("message is not base64url: {e}")))?
    } else {
        message
    };
    decompressed(Bytes::from(message), compression.flatten(), max)
}

fn percent_decode(value: &str) -> Result<Vec<u8>, Status> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Status::invalid_argument("bad percent-encoding in the query"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The web form of one binary message: itself, or its JSON.
fn to_wire(
    message: Bytes,
    output: Option<&prost_reflect::MessageDescriptor>,
) -> Result<Bytes, Status> {
    match output {
        None => Ok(message),
        Some(desc) => json::to_json(desc, &message)
            .map(Bytes::from)
            .map_err(Status::internal),
    }
}

/// The payloads of consecutive uncompressed frames (our own encoder's output).
fn split_frames(mut all: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if all.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
        all.advance(5);
        Some(all.split_to(len.min(all.len())))
    })
}

/// The handler's response messages as encoded frames, under the deadline.
struct Frames {
    source: BoxSource,
    encoder: Encoder,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The source's end, held while the frames before it go out.
    pending_end: Option<Option<Status>>,
    done: bool,
}

impl Frames {
    /// The frames ready now, `Err` for the handler's failure or the deadline, `None` at the
    /// end of the stream.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        if let Some(end) = self.pending_end.take() {
            self.done = true;
            return Poll::Ready(end.map(Err));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                self.done = true;
                return Poll::Ready(Some(Err(Status::deadline_exceeded("deadline exceeded"))));
            }
        }
        let polled = self.source.as_mut().poll_fill(cx, &mut self.encoder);
        let ready = self.encoder.take();
        if polled.is_pending() {
            self.encoder.release_spares();
        }
        let end = match polled {
            Poll::Ready(Some(Ok(()))) => return Poll::Ready(Some(Ok(ready))),
            Poll::Pending if ready.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Some(Ok(ready))),
            Poll::Ready(None) => None,
            Poll::Ready(Some(Err(status))) => Some(status),
        };
        if ready.is_empty() {
            self.done = true;
            return Poll::Ready(end.map(Err));
        }
        // What was encoded before the end goes out first.
        self.pending_end = Some(end);
        Poll::Ready(Some(Ok(ready)))
    }
}

/// A streaming web response: messages as they come, then the protocol's end.
struct Streamed {
    frames: Frames,
    output: Option<prost_reflect::MessageDescriptor>,
    trailers: Metadata,
    /// The end, once known: sent after the last messages.
    ending: Option<Status>,
    /// Reports to the interceptors when the stream ends or is dropped (a browser abort).
    finish: Option<Call>,
}

impl Stream for Streamed {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        let Some(call) = &this.finish else {
            return Poll::Ready(None);
        };
        let protocol = call.protocol;
        let status = match this.frames.poll_chunk(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => match reframe(protocol, chunk, this.output.as_ref()) {
                Ok(chunk) => return Poll::Ready(Some(chunk)),
                Err(status) => status,
            },
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(),
        };
        this.ending = Some(status.clone());
        let call = this.finish.take().expect("checked above");
        let sent = (this.frames.encoder.messages, this.frames.encoder.bytes);
        call.report(&status, sent);
        Poll::Ready(Some(end_of(protocol, &status, &this.trailers)))
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // Dropped before its end: the browser went away.
        if let Some(call) = self.finish.take() {
            let sent = (self.frames.encoder.messages, self.frames.encoder.bytes);
            call.report(&Status::cancelled("cancelled by the peer"), sent);
        }
    }
}

/// Frames from our encoder in the protocol's form.
fn reframe(
    protocol: Protocol,
    chunk: Bytes,
    output: Option<&prost_reflect::MessageDescriptor>,
) -> Result<Bytes, Status> {
    match (protocol, output) {
        (Protocol::GrpcWeb { text: true }, _) => Ok(grpc_web::encode_text(&chunk)),
        // gRPC frames are Connect envelopes with flags 0.
        (_, None) => Ok(chunk),
        (_, Some(desc)) => {
            let mut out = BytesMut::new();
            for message in split_frames(chunk) {
                let json = to_wire(message, Some(desc))?;
                out.extend_from_slice(&connect::envelope(0, &json));
            }
            Ok(out.freeze())
        }
    }
}

/// The protocol's end of a streamed response.
fn end_of(protocol: Protocol, status: &Status, trailers: &Metadata) -> Bytes {
    match protocol {
        Protocol::GrpcWeb { text } => {
            let mut map = HeaderMap::new();
            status.write_headers(&mut map);
            trailers.append_to(&mut map);
            let frame = grpc_web::trailers_frame(&map);
            if text {
                grpc_web::encode_text(&frame)
            } else {
                frame
            }
        }
        _ => connect::end_stream(status, trailers),
    }
}

/// 415 for a content type we do not serve (a JSON call without descriptors).
fn unsupported_media_type() -> WebReply {
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    WebReply {
        head: response,
        body: Box::pin(futures_util::stream::empty()),
    }
}
