//! Client calls of the four kinds: interceptors, request head, framed messages, response
//! head, messages and trailers. Wire faults become status codes in `WireError::into_status`,
//! told that it is the client asking.

use std::{
    pin::pin,
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use h2::{client::ResponseFuture, Reason, SendStream};
use http::{header, HeaderValue, Method as HttpMethod};
use tokio::time::Instant;

use crate::grpc::{
    client::{
        channel::{Channel, Picker},
        pool::Picked,
        replay::{Record, Recording, Replayed},
        retry::{self, Failed},
    },
    compression::{Encoding, ACCEPT_ENCODING},
    error::{Side, WireError},
    intercept::{CallSummary, Chain, ClientCallHead, ClientInterceptor},
    log::WIRE_TARGET,
    metadata::{Metadata, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT},
    method::{BidiStreaming, ClientStreaming, Method, ServerStreaming, Unary},
    recv::{Counts, RecvBody, RequestSender, Streaming},
    request::{IntoMessage, Request, Response},
    send::{MessageSink, MessageSource, PipeEnd, Source},
    status::{Code, Status},
    timeout,
};

/// Sent on every call; grpcio-style `grpc-<lang>/<version>`.
const USER_AGENT: &str = concat!("grpc-rust-satellite/", env!("CARGO_PKG_VERSION"));

/// Sent on retries (A6): how many attempts went before this one.
const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// What a call takes from its request and the service config, once, for all its attempts.
struct Plan<'a> {
    path: &'static str,
    /// The caller's timeout or the config's, whichever is shorter.
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    wait_for_ready: bool,
    retry: Option<&'a crate::grpc::client::service_config::RetryPolicy>,
    /// The interceptors' view, told of each attempt.
    observer: Option<&'a Observer>,
}

impl Channel {
    /// Makes a unary call: a server-streaming call whose response is one message.
    ///
    /// # Errors
    /// The call's status when it is not OK, including UNAVAILABLE when no connection can be
    /// made and DEADLINE_EXCEEDED when the request's timeout passes.
    pub async fn unary<Req, Resp>(
        &self,
        method: &Method<Req, Resp, Unary>,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let method = Method::<Req, Resp, ServerStreaming>::server_streaming(method.path());
        one_response(self.server_streaming(&method, request).await?).await
    }

    /// Makes a server-streaming call: one request, a stream of responses.
    ///
    /// # Errors
    /// The status of a call that fails before its response head arrives; later failures come
    /// from the stream.
    pub async fn server_streaming<Req, Resp>(
        &self,
        method: &Method<Req, Resp, ServerStreaming>,
        mut request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let observer = self.before(method.path(), &mut request).await?;
        let plan = self.plan(method.path(), &request, observer.as_ref());
        // A request too large to keep for replay commits the call to its first attempt.
        let replayable = plan.retry.is_some()
            && request.message().encoded_len() <= self.inner.endpoint.retry_buffer_size;
        let mut previous = 0;
        let mut transparent = 0;
        let result = loop {
            let attempt = async {
                let (response, send, picked) = self.start(&plan, &request, previous).await?;
                self.send_one(send, request.message(), &request, observer.as_ref())
                    .map_err(Failed::committed)?;
                let (stream, headers) = self
                    .response_stream::<Resp>(response, &plan, observer.as_ref(), picked)
                    .await?;
                Ok(Response::from_parts(stream, headers, Metadata::new()))
            };
            let failed = match attempt.await {
                Ok(response) => break Ok(response),
                Err(failed) => failed,
            };
            match self
                .retry_after(&plan, failed, replayable, previous, &mut transparent)
                .await
            {
                Ok(counted) => previous += u32::from(counted),
                Err(status) => break Err(status),
            }
        };
        if let (Ok(_), Some(t)) = (&result, &self.inner.throttle) {
            t.success();
        }
        streaming_result(observer, result)
    }

    /// Makes a client-streaming call: a bidirectional call whose response is one message.
    /// The stream may yield `Req` or [`Outgoing<Req>`](crate::grpc::Outgoing) (compression
    /// per message).
    ///
    /// # Errors
    /// The call's status when it is not OK.
    pub async fn client_streaming<Req, Resp, S, T>(
        &self,
        method: &Method<Req, Resp, ClientStreaming>,
        request: Request<S>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + 'static,
        Resp: prost::Message + Default,
        S: Stream<Item = T> + Send + 'static,
        T: IntoMessage<Req> + 'static,
    {
        let method = Method::<Req, Resp, BidiStreaming>::bidi_streaming(method.path());
        one_response(self.bidi_streaming(&method, request).await?).await
    }

    /// Makes a bidirectional-streaming call. Requests are sent by a task of their own, so
    /// responses can be read while requests are still going out; dropping the returned stream
    /// cancels both.
    ///
    /// # Errors
    /// The status of a call that fails before its response head arrives.
    pub async fn bidi_streaming<Req, Resp, S, T>(
        &self,
        method: &Method<Req, Resp, BidiStreaming>,
        mut request: Request<S>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message + 'static,
        Resp: prost::Message + Default,
        S: Stream<Item = T> + Send + 'static,
        T: IntoMessage<Req> + 'static,
    {
        let observer = self.before(method.path(), &mut request).await?;
        let plan = self.plan(method.path(), &request, observer.as_ref());
        let mut stream = None;
        let request = request.map(|s| stream = Some(s));
        let requests =
            futures_util::StreamExt::map(stream.expect("the request's stream"), Ok::<T, Status>);
        let source = Source::<_, Req>::new(requests);
        let result = match plan.retry {
            None => {
                self.bidi_once(&plan, &request, source, observer.as_ref())
                    .await
            }
            Some(_) => {
                self.bidi_replayable(&plan, &request, source, observer.as_ref())
                    .await
            }
        };
        if let (Ok(_), Some(t)) = (&result, &self.inner.throttle) {
            t.success();
        }
        streaming_result(observer, result)
    }

    /// A streaming call without a retry policy: its request stream goes to one sender task
    /// whole. Until then nothing has left, so an attempt that fails to open goes again unseen
    /// (a transparent retry).
    async fn bidi_once<Resp: prost::Message + Default>(
        &self,
        plan: &Plan<'_>,
        request: &Request<()>,
        source: impl MessageSource + 'static,
        observer: Option<&Observer>,
    ) -> Result<Response<Streaming<Resp>>, Status> {
        let mut transparent = 0;
        let (response, send, picked) = loop {
            match self.start(plan, request, 0).await {
                Ok(opened) => break opened,
                Err(f) => {
                    self.retry_after(plan, f, false, 0, &mut transparent)
                        .await?;
                }
            }
        };
        let sink = self.sink(send, request);
        let sent = observer.map(|o| o.sent.clone());
        let failed = Arc::new(OnceLock::new());
        let deadline = plan.deadline;
        let task = tokio::spawn({
            let failed = failed.clone();
            async move { send_all(sink, source, deadline, sent, &failed).await }
        });
        // Held from here on: dropping the call at any point stops the requests.
        let sender = RequestSender::new(task.abort_handle(), failed);
        let head = self.response_stream::<Resp>(response, plan, observer, picked);
        let (mut stream, headers) = head
            .await
            .map_err(|failed| sender.failure_or(failed.status))?;
        stream.sent_by(sender);
        Ok(Response::from_parts(stream, headers, Metadata::new()))
    }

    /// A streaming call with a retry policy: what each attempt sends is recorded (up to the
    /// retry buffer) and replayed by the next before it goes on with the caller's stream.
    async fn bidi_replayable<Resp: prost::Message + Default>(
        &self,
        plan: &Plan<'_>,
        request: &Request<()>,
        source: impl MessageSource + 'static,
        observer: Option<&Observer>,
    ) -> Result<Response<Streaming<Resp>>, Status> {
        let record = Record::new(self.inner.endpoint.retry_buffer_size);
        let shared = Recording::shared(source, record.clone());
        let (mut previous, mut transparent) = (0, 0);
        loop {
            let (response, send, picked) = match self.start(plan, request, previous).await {
                Ok(opened) => opened,
                Err(f) => {
                    let counted = self
                        .retry_after(plan, f, true, previous, &mut transparent)
                        .await?;
                    previous += u32::from(counted);
                    continue;
                }
            };
            let sink = self.sink(send, request);
            let sent = observer.map(|o| o.sent.clone());
            let failed = Arc::new(OnceLock::new());
            let deadline = plan.deadline;
            let task = tokio::spawn({
                let (failed, shared, record) = (failed.clone(), shared.clone(), record.clone());
                async move {
                    // The previous attempt's task was aborted; its hold ends when it drops.
                    let mut source = shared.lock().await;
                    let replayed = Replayed::new(&record, source.as_mut());
                    send_all(sink, replayed, deadline, sent, &failed).await;
                }
            });
            let sender = RequestSender::new(task.abort_handle(), failed);
            let head = self.response_stream::<Resp>(response, plan, observer, picked);
            match head.await {
                Ok((mut stream, headers)) => {
                    record.lock().expect("retry record").stop();
                    stream.sent_by(sender);
                    return Ok(Response::from_parts(stream, headers, Metadata::new()));
                }
                Err(mut f) => {
                    // The sender's own failure (a message that cannot be sent, the caller's
                    // stream failing) is the call's, not the server's: never retried.
                    if let Some(own) = sender.own_failure() {
                        return Err(own);
                    }
                    drop(sender);
                    if !record.lock().expect("retry record").replayable() {
                        f.committed = true;
                    }
                    let counted = self
                        .retry_after(plan, f, true, previous, &mut transparent)
                        .await?;
                    previous += u32::from(counted);
                }
            }
        }
    }

    /// Runs the interceptors on the call's head; `None` when there are none.
    async fn before<T>(
        &self,
        path: &'static str,
        request: &mut Request<T>,
    ) -> Result<Option<Observer>, Status> {
        if self.interceptors.is_empty() {
            return Ok(None);
        }
        let observer = Observer {
            interceptors: self.interceptors.clone(),
            method: path,
            started: std::time::Instant::now(),
            received: Arc::default(),
            sent: Arc::default(),
            attempt: std::sync::Mutex::new(None),
        };
        let mut head = ClientCallHead {
            method: path,
            metadata: std::mem::take(request.metadata_mut()),
            timeout: request.timeout(),
        };
        for interceptor in self.interceptors.iter() {
            if let Err(status) = interceptor.before(&mut head).await {
                observer.report(&status);
                return Err(status);
            }
        }
        *request.metadata_mut() = head.metadata;
        request.timeout = head.timeout;
        Ok(Some(observer))
    }

    /// The request side's sink: the call's compression, else the endpoint's.
    fn sink<T>(&self, send: SendStream<Bytes>, request: &Request<T>) -> MessageSink {
        let max = self.inner.endpoint.max_send_message_size;
        MessageSink::new(send, Side::Client, max, self.compression_of(request))
    }

    /// Sends the one request message of a unary or server-streaming call, with END_STREAM.
    fn send_one<Req: prost::Message, T>(
        &self,
        send: SendStream<Bytes>,
        message: &Req,
        request: &Request<T>,
        observer: Option<&Observer>,
    ) -> Result<(), Status> {
        let mut sink = self.sink(send, request);
        let sent = sink.send_last(message, None)?;
        if let Some(observer) = observer {
            observer.sent.add(sink.counts());
        }
        if let Err(e) = sent {
            // The server may answer from the head alone (Trailers-Only, then RST_STREAM
            // NO_ERROR) before the body goes out, and then h2 refuses the body. The response
            // carries the call's real status, or the error that ended the stream (as in
            // `send_all`).
            tracing::debug!(error = %e, "request body not sent; the response will say why");
        }
        Ok(())
    }

    /// The request compression: the call's own, else the endpoint's default.
    fn compression_of<T>(&self, request: &Request<T>) -> Option<Encoding> {
        request
            .compression()
            .or(self.inner.endpoint.send_compressed)
    }

    /// What this call takes from the service config: the shorter timeout, wait-for-ready,
    /// the retry policy.
    fn plan<'a, T>(
        &'a self,
        path: &'static str,
        request: &Request<T>,
        observer: Option<&'a Observer>,
    ) -> Plan<'a> {
        let config = self.method_config(path);
        let timeout = match (request.timeout(), config.and_then(|c| c.timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait_for_ready = request
            .wait_for_ready()
            .or(config.and_then(|c| c.wait_for_ready))
            .unwrap_or(false);
        Plan {
            path,
            timeout,
            deadline: deadline_after(timeout),
            wait_for_ready,
            retry: config.and_then(|c| c.retry.as_ref()),
            observer,
        }
    }

    /// Decides what follows a failed attempt: `Ok(counted)` to go again (after the backoff
    /// when `counted`; at once, uncounted, for a transparent retry), or the call's status.
    async fn retry_after(
        &self,
        plan: &Plan<'_>,
        failed: Failed,
        replayable: bool,
        previous: u32,
        transparent: &mut u32,
    ) -> Result<bool, Status> {
        if let Some(observer) = plan.observer {
            observer.end_attempt(&failed.status);
        }
        let expired = plan.deadline.is_some_and(|d| Instant::now() >= d);
        if failed.transparent && *transparent < retry::MAX_TRANSPARENT && !expired {
            *transparent += 1;
            return Ok(false);
        }
        let Some(policy) = plan.retry.filter(|_| replayable) else {
            return Err(failed.status);
        };
        let throttle = self.inner.throttle.as_ref();
        let Some(delay) = retry::next_delay(policy, throttle, &failed, previous + 1) else {
            return Err(failed.status);
        };
        tracing::debug!(path = plan.path, status = %failed.status, ?delay, attempt = previous + 2, "retrying");
        // A6: the call's deadline covers every attempt and the waits between them.
        let wake = Instant::now() + delay;
        match plan.deadline {
            Some(d) if d <= wake => {
                tokio::time::sleep_until(d).await;
                Err(Status::deadline_exceeded(format!(
                    "deadline exceeded waiting to retry after: {}",
                    failed.status
                )))
            }
            _ => {
                tokio::time::sleep_until(wake).await;
                Ok(true)
            }
        }
    }

    /// Opens one attempt's stream: picks a connection (waiting for one if the call waits for
    /// ready, or one is being made), waits for a stream slot, sends the request head.
    async fn start<T>(
        &self,
        plan: &Plan<'_>,
        request: &Request<T>,
        previous: u32,
    ) -> Result<(ResponseFuture, SendStream<Bytes>, Option<Picked>), Failed> {
        // The timeout sent is what is left of the call's own, so every attempt shares it.
        let timeout = match plan.deadline {
            Some(d) if previous > 0 => Some(d.saturating_duration_since(Instant::now())),
            _ => plan.timeout,
        };
        if let Some(observer) = plan.observer {
            observer.begin_attempt();
        }
        let head = self
            .request_head(plan.path, request, timeout, previous)
            .map_err(Failed::committed)?;
        let opened = async {
            let (send, picked) = match &self.inner.picker {
                Picker::Fixed(send) => (send.clone(), None),
                Picker::Pool(pool) => {
                    let picked = pool.pick(plan.wait_for_ready, plan.deadline).await;
                    let picked = picked.map_err(|status| match status.code() {
                        Code::DeadlineExceeded => Failed::committed(status),
                        _ => Failed::retryable(status),
                    })?;
                    (picked.conn.send.clone(), Some(picked))
                }
            };
            // The request has not left: a connection found dead or going away here is a
            // transparent retry on another (A6), after the balancer is told.
            let broken = |e: h2::Error| {
                if let (Picker::Pool(pool), Some(picked)) = (&self.inner.picker, &picked) {
                    pool.broken(picked);
                }
                let transparent = e.is_go_away() || e.is_io();
                let status = client_status(WireError::Transport(e));
                if transparent {
                    Failed::transparent(status)
                } else {
                    Failed::committed(status)
                }
            };
            let mut send = send.ready().await.map_err(broken)?;
            let (response, stream) = send.send_request(head, false).map_err(broken)?;
            Ok((response, stream, picked))
        };
        match plan.deadline {
            None => opened.await,
            Some(d) => tokio::time::timeout_at(d, opened)
                .await
                .unwrap_or_else(|_| {
                    Err(Failed::committed(Status::deadline_exceeded(
                        "deadline exceeded before the call started",
                    )))
                }),
        }
    }

    fn request_head<T>(
        &self,
        path: &str,
        request: &Request<T>,
        timeout: Option<Duration>,
        previous: u32,
    ) -> Result<http::Request<()>, Status> {
        let uri = http::Uri::builder()
            .scheme(self.inner.scheme.clone())
            .authority(self.inner.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::internal(format!("invalid method path {path:?}: {e}")))?;
        let mut head = http::Request::new(());
        *head.method_mut() = HttpMethod::POST;
        *head.uri_mut() = uri;
        let headers = head.headers_mut();
        // PROTOCOL-HTTP2.md: te: trailers is required; C-core servers reject calls without it.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if previous > 0 {
            headers.insert(PREVIOUS_ATTEMPTS, HeaderValue::from(previous));
        }
        if let Some(t) = timeout {
            let value = HeaderValue::try_from(timeout::format(t))
                .map_err(|e| Status::internal(format!("cannot format grpc-timeout: {e}")))?;
            headers.insert(GRPC_TIMEOUT, value);
        }
        if let Some(encoding) = self.compression_of(request) {
            headers.insert(GRPC_ENCODING, HeaderValue::from_static(encoding.as_str()));
        }
        headers.insert(
            GRPC_ACCEPT_ENCODING,
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
        request.metadata().append_to(headers);
        tracing::debug!(target: WIRE_TARGET, uri = %head.uri(), headers = ?head.headers(), "send headers");
        Ok(head)
    }

    /// Waits for the response head and checks it; a Trailers-Only answer ends here. Until
    /// the head arrives the attempt is not committed: its failure may be retried.
    async fn response_stream<Resp: prost::Message + Default>(
        &self,
        response: ResponseFuture,
        plan: &Plan<'_>,
        observer: Option<&Observer>,
        picked: Option<Picked>,
    ) -> Result<(Streaming<Resp>, Metadata), Failed> {
        let deadline = plan.deadline;
        let response = match deadline {
            None => response.await,
            Some(d) => match tokio::time::timeout_at(d, response).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Failed::committed(Status::deadline_exceeded(
                        "deadline exceeded",
                    )))
                }
            },
        };
        let response = match response {
            Ok(response) => response,
            // Our own deadline may have reset the stream (the request side saw it first):
            // that is DEADLINE_EXCEEDED, not the CANCELLED of the reset.
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                return Err(Failed::committed(Status::deadline_exceeded(
                    "deadline exceeded",
                )));
            }
            Err(e) => return Err(self.stream_failed(e, picked.as_ref())),
        };
        if let Some(picked) = &picked {
            picked.conn.answered();
        }
        let (head, body) = response.into_parts();
        tracing::debug!(target: WIRE_TARGET, status = %head.status, headers = ?head.headers, "recv headers");
        let status = Status::from_headers(&head.headers);
        // http-grpc-status-mapping.md: grpc-status wins whatever :status says; without it a
        // non-200 answer maps from the HTTP status.
        if head.status != http::StatusCode::OK {
            let status = status.unwrap_or_else(|| Status::from_http_status(head.status));
            return Err(Failed::retryable(status));
        }
        let encoding = Encoding::of_head(&head.headers).map_err(|name| {
            Failed::committed(client_status(WireError::UnsupportedEncoding(name)))
        })?;
        let grpc_content_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc_content_type && status.is_none() {
            return Err(Failed::committed(Status::unknown(
                "the response is not gRPC (content-type is missing or wrong)",
            )));
        }
        // http-grpc-status-mapping.md: a 200 response that ends with its head and carries no
        // grpc-status is UNKNOWN (GRPC-NOTES §1.6), not a body that lost its trailers.
        if status.is_none() && body.is_end_stream() {
            return Err(Failed::committed(Status::unknown(
                "the response ended with its headers and carries no grpc-status",
            )));
        }
        // Trailers-Only with an error: the head is also the end of the call, and not yet a
        // commitment (A6): a retryable code here may go again, unless the server pushes back.
        if let Some(status) = status.as_ref().filter(|s| !s.is_ok()) {
            let mut failed = Failed::retryable(status.clone());
            failed.pushback = retry::pushback(&head.headers);
            return Err(failed);
        }
        let max = self.inner.endpoint.max_recv_message_size;
        let metadata = Metadata::from_header_map(head.headers);
        let mut recv = match status {
            // Trailers-Only OK: no messages follow.
            Some(_) => RecvBody::trailers_only(body, metadata.clone()),
            None => RecvBody::new(Side::Client, body, max, deadline, encoding),
        };
        if let Some(observer) = observer {
            recv.counts = Some(observer.received.clone());
        }
        Ok((Streaming::new(recv), metadata))
    }

    /// An attempt's stream failed before its head: refused or above a GOAWAY's last stream
    /// (the server never saw it, a transparent retry), or lost with its connection.
    fn stream_failed(&self, e: h2::Error, picked: Option<&Picked>) -> Failed {
        let refused = e.reason() == Some(Reason::REFUSED_STREAM) && e.is_remote();
        let above_goaway = e.is_go_away() && e.is_remote();
        if above_goaway || e.is_io() {
            if let (Picker::Pool(pool), Some(picked)) = (&self.inner.picker, picked) {
                pool.broken(picked);
            }
        }
        let status = client_status(WireError::Transport(e));
        if refused || above_goaway {
            Failed::transparent(status)
        } else {
            Failed::retryable(status)
        }
    }
}

/// The local deadline for a caller's timeout. A timeout too large for `Instant` (such as
/// `Duration::MAX`) is no local deadline rather than a panic; `grpc-timeout` still carries the
/// largest value it can.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Sends every request message, then END_STREAM. A failure of our own (a message that cannot
/// be sent, the deadline) goes into `failed` before the stream is reset, so the response side
/// reports it rather than the reset.
async fn send_all(
    mut sink: MessageSink,
    source: impl MessageSource,
    deadline: Option<Instant>,
    sent: Option<Arc<Counts>>,
    failed: &OnceLock<Status>,
) {
    let source = pin!(source);
    let mut sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
    let end = sink.pipe(source, sleep.as_mut().map(|s| s.as_mut())).await;
    if let Some(sent) = sent {
        sent.add(sink.counts());
    }
    let status = match end {
        // An error here means the stream is gone; the response says why.
        PipeEnd::Finished => return drop(sink.end_stream()),
        // The server answered or reset early; its response carries the real status.
        PipeEnd::Reset(_) | PipeEnd::SendFailed(_) => return,
        PipeEnd::Failed(status) => status,
        PipeEnd::DeadlineExceeded => Status::deadline_exceeded("deadline exceeded"),
    };
    tracing::debug!(%status, "request stream ended early");
    let _ = failed.set(status);
    sink.reset(Reason::CANCEL);
}

/// What client interceptors are told of a call's attempts and of its end.
struct Observer {
    interceptors: Chain<dyn ClientInterceptor>,
    method: &'static str,
    started: std::time::Instant,
    received: Arc<Counts>,
    sent: Arc<Counts>,
    /// The attempt under way: when it began, and the counts then.
    attempt: std::sync::Mutex<Option<Attempt>>,
}

/// Where an attempt began.
struct Attempt {
    started: std::time::Instant,
    received: (u64, u64),
    sent: (u64, u64),
}

impl Observer {
    fn begin_attempt(&self) {
        let attempt = Attempt {
            started: std::time::Instant::now(),
            received: self.received.get(),
            sent: self.sent.get(),
        };
        *self.attempt.lock().expect("attempt") = Some(attempt);
        for interceptor in self.interceptors.iter() {
            interceptor.attempt_started(self.method);
        }
    }

    /// Ends the attempt under way, if any, with `status`.
    fn end_attempt(&self, status: &Status) {
        let Some(attempt) = self.attempt.lock().expect("attempt").take() else {
            return;
        };
        let since = |now: (u64, u64), then: (u64, u64)| (now.0 - then.0, now.1 - then.1);
        let received = since(self.received.get(), attempt.received);
        let sent = since(self.sent.get(), attempt.sent);
        let summary = CallSummary::new(self.method, status, attempt.started, received, sent);
        for interceptor in self.interceptors.iter() {
            interceptor.attempt_ended(&summary);
        }
    }

    fn report(&self, status: &Status) {
        // The call ends with its last attempt.
        self.end_attempt(status);
        let (received, sent) = (self.received.get(), self.sent.get());
        let summary = CallSummary::new(self.method, status, self.started, received, sent);
        for interceptor in self.interceptors.iter() {
            interceptor.after(&summary);
        }
    }
}

/// The one response message of a unary or client-streaming call, and its trailers.
async fn one_response<Resp: prost::Message + Default>(
    response: Response<Streaming<Resp>>,
) -> Result<Response<Resp>, Status> {
    let (mut stream, headers, _) = response.into_parts();
    let message = stream.one_message().await?;
    let trailers = stream.take_trailers();
    Ok(Response::from_parts(message, headers, trailers))
}

/// A streaming call's result: failed now (the interceptors hear it now), or a stream that
/// tells them when it ends.
fn streaming_result<T: prost::Message + Default>(
    observer: Option<Observer>,
    result: Result<Response<Streaming<T>>, Status>,
) -> Result<Response<Streaming<T>>, Status> {
    let Some(observer) = observer else {
        return result;
    };
    match result {
        Ok(mut response) => {
            response
                .message_mut()
                .on_end(Box::new(move |status| observer.report(status)));
            Ok(response)
        }
        Err(status) => {
            observer.report(&status);
            Err(status)
        }
    }
}

fn client_status(e: WireError) -> Status {
    e.into_status(Side::Client)
}
