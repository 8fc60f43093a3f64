//! Client calls of the four kinds: request head, framed messages, response head, messages and
//! trailers. The one place where the client turns protocol failures into status codes
//! (GRPC-NOTES §1.6, client side).

use std::{pin::pin, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt as _;
use h2::{client::ResponseFuture, Reason, SendStream};
use http::{header, HeaderValue, Method};
use tokio::time::Instant;

use super::Channel;
use crate::grpc::{
    codec,
    compression::{self, Encoding, ACCEPT_ENCODING},
    metadata::{Metadata, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT},
    recv::{status_from_h2, Streaming},
    request::{Request, Response},
    send::{MessageSink, PipeEnd},
    status::Status,
    timeout, WIRE_TARGET,
};

/// Sent on every call; grpcio-style `grpc-<lang>/<version>`.
const USER_AGENT: &str = concat!("grpc-rust-satellite/", env!("CARGO_PKG_VERSION"));

impl Channel {
    /// Makes a unary call to `path` ("/package.Service/Method").
    ///
    /// # Errors
    /// The call's status when it is not OK, including UNAVAILABLE when no connection can be
    /// made and DEADLINE_EXCEEDED when the request's timeout passes.
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let deadline = deadline_after(request.timeout());
        let (response, send) = self.start(path, &request, deadline).await?;
        self.send_one(send, request.message(), self.compression_of(&request))?;
        let (mut stream, headers) = self.response_stream::<Resp>(response, deadline).await?;
        let message = stream.single("response").await?;
        let trailers = stream.take_trailers();
        Ok(Response::from_parts(message, headers, trailers))
    }

    /// Makes a server-streaming call: one request, a stream of responses.
    ///
    /// # Errors
    /// The status of a call that fails before its response head arrives; later failures come
    /// from the stream.
    pub async fn server_streaming<Req, Resp>(
        &self,
        path: &str,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let deadline = deadline_after(request.timeout());
        let (response, send) = self.start(path, &request, deadline).await?;
        self.send_one(send, request.message(), self.compression_of(&request))?;
        let (stream, headers) = self.response_stream::<Resp>(response, deadline).await?;
        Ok(Response::from_parts(stream, headers, Metadata::new()))
    }

    /// Makes a client-streaming call: a stream of requests, one response.
    ///
    /// # Errors
    /// The call's status when it is not OK.
    pub async fn client_streaming<Req, Resp, S>(
        &self,
        path: &str,
        request: Request<S>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
        S: Stream<Item = Req>,
    {
        let deadline = deadline_after(request.timeout());
        let (response, send) = self.start(path, &request, deadline).await?;
        let encoding = self.compression_of(&request);
        let requests = request.into_inner().map(Ok::<Req, Status>);
        let max_send = self.inner.endpoint.max_send_message_size;
        send_all(send, requests, deadline, max_send, encoding).await?;
        let (mut stream, headers) = self.response_stream::<Resp>(response, deadline).await?;
        let message = stream.single("response").await?;
        let trailers = stream.take_trailers();
        Ok(Response::from_parts(message, headers, trailers))
    }

    /// Makes a bidirectional-streaming call. Requests are sent by a task of their own, so
    /// responses can be read while requests are still going out; dropping the returned stream
    /// cancels both.
    ///
    /// # Errors
    /// The status of a call that fails before its response head arrives.
    pub async fn bidi_streaming<Req, Resp, S>(
        &self,
        path: &str,
        request: Request<S>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message + 'static,
        Resp: prost::Message + Default,
        S: Stream<Item = Req> + Send + 'static,
    {
        let deadline = deadline_after(request.timeout());
        let (response, send) = self.start(path, &request, deadline).await?;
        let encoding = self.compression_of(&request);
        let requests = request.into_inner().map(Ok::<Req, Status>);
        let max_send = self.inner.endpoint.max_send_message_size;
        let sender = tokio::spawn(async move {
            if let Err(status) = send_all(send, requests, deadline, max_send, encoding).await {
                tracing::debug!(%status, "request stream ended early");
            }
        });
        let (mut stream, headers) = self.response_stream::<Resp>(response, deadline).await?;
        stream.abort_on_drop(sender.abort_handle());
        Ok(Response::from_parts(stream, headers, Metadata::new()))
    }

    /// Sends the one request message of a unary or server-streaming call, with END_STREAM.
    fn send_one<Req: prost::Message>(
        &self,
        mut send: SendStream<Bytes>,
        message: &Req,
        encoding: Option<Encoding>,
    ) -> Result<(), Status> {
        let mut buf = BytesMut::new();
        let max = self.inner.endpoint.max_send_message_size;
        match encoding {
            None => codec::encode(message, &mut buf, max)?,
            Some(encoding) => {
                compression::encode_compressed(encoding, &message.encode_to_vec(), &mut buf, max)?;
            }
        }
        // One message of known size: h2 may buffer it whole while the window opens, which
        // costs no more than the message we already hold.
        if let Err(e) = send.send_data(buf.freeze(), true) {
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

    /// Opens the stream: waits for a connection slot and sends the request head.
    async fn start<T>(
        &self,
        path: &str,
        request: &Request<T>,
        deadline: Option<Instant>,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), Status> {
        let head = self.request_head(path, request)?;
        let opened = async {
            let mut send = self.ready().await?;
            send.send_request(head, false)
                .map_err(|e| status_from_h2(&e))
        };
        match deadline {
            None => opened.await,
            Some(d) => tokio::time::timeout_at(d, opened)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(
                        "deadline exceeded before the call started",
                    ))
                }),
        }
    }

    fn request_head<T>(
        &self,
        path: &str,
        request: &Request<T>,
    ) -> Result<http::Request<()>, Status> {
        let uri = http::Uri::builder()
            .scheme(self.inner.scheme.clone())
            .authority(self.inner.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::internal(format!("invalid method path {path:?}: {e}")))?;
        let mut head = http::Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri;
        let headers = head.headers_mut();
        // PROTOCOL-HTTP2.md: te: trailers is required; C-core servers reject calls without it.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Some(t) = request.timeout() {
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
        request.metadata().add_to_headers(headers);
        tracing::debug!(target: WIRE_TARGET, uri = %head.uri(), headers = ?head.headers(), "send headers");
        Ok(head)
    }

    /// Waits for the response head and checks it; a Trailers-Only answer ends here.
    async fn response_stream<Resp: prost::Message + Default>(
        &self,
        response: ResponseFuture,
        deadline: Option<Instant>,
    ) -> Result<(Streaming<Resp>, Metadata), Status> {
        let response = match deadline {
            None => response.await,
            Some(d) => match tokio::time::timeout_at(d, response).await {
                Ok(r) => r,
                Err(_) => return Err(Status::deadline_exceeded("deadline exceeded")),
            },
        };
        // Our own deadline may have reset the stream (the request side saw it first): that is
        // DEADLINE_EXCEEDED, not the CANCELLED of the reset.
        let response = response.map_err(|e| {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                Status::deadline_exceeded("deadline exceeded")
            } else {
                status_from_h2(&e)
            }
        })?;
        let (head, body) = response.into_parts();
        tracing::debug!(target: WIRE_TARGET, status = %head.status, headers = ?head.headers, "recv headers");
        let status = Status::from_headers(&head.headers);
        let encoding = match head
            .headers
            .get(GRPC_ENCODING)
            .map(|v| Encoding::from_header(v.as_bytes()))
        {
            None => None,
            Some(Ok(encoding)) => encoding,
            // GRPC-NOTES §1.6: an encoding we did not advertise is INTERNAL.
            Some(Err(name)) => {
                return Err(Status::internal(format!(
                    "the server used message encoding {name}, which we did not offer"
                )))
            }
        };
        // http-grpc-status-mapping.md: grpc-status wins whatever :status says; without it a
        // non-200 answer maps from the HTTP status.
        if head.status != http::StatusCode::OK {
            return Err(status.unwrap_or_else(|| Status::from_http_status(head.status)));
        }
        let grpc_content_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc_content_type && status.is_none() {
            return Err(Status::unknown(
                "the response is not gRPC (content-type is missing or wrong)",
            ));
        }
        // http-grpc-status-mapping.md: a 200 response that ends with its head and carries no
        // grpc-status is UNKNOWN (GRPC-NOTES §1.6), not a body that lost its trailers.
        if status.is_none() && body.is_end_stream() {
            return Err(Status::unknown(
                "the response ended with its headers and carries no grpc-status",
            ));
        }
        let metadata = Metadata::from_header_map(head.headers);
        let max = self.inner.endpoint.max_recv_message_size;
        match status {
            // Trailers-Only: the head is also the end of the call.
            Some(status) if !status.is_ok() => Err(status),
            Some(_) => Ok((Streaming::trailers_only(body, metadata.clone()), metadata)),
            None => Ok((Streaming::client(body, max, deadline, encoding), metadata)),
        }
    }
}

/// The local deadline for a caller's timeout. A timeout too large for `Instant` (such as
/// `Duration::MAX`) is no local deadline rather than a panic; `grpc-timeout` still carries the
/// largest value it can.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Sends every request message, then END_STREAM.
async fn send_all<Req, S>(
    send: SendStream<Bytes>,
    requests: S,
    deadline: Option<Instant>,
    max_send: usize,
    encoding: Option<Encoding>,
) -> Result<(), Status>
where
    Req: prost::Message,
    S: Stream<Item = Result<Req, Status>>,
{
    let mut sink = MessageSink::new(send, max_send);
    sink.compress_with(encoding);
    let mut requests = pin!(requests);
    let mut sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
    match sink
        .pipe(requests.as_mut(), sleep.as_mut().map(|s| s.as_mut()))
        .await
    {
        PipeEnd::Finished(status) if status.is_ok() => {
            sink.finish().map_err(|e| status_from_h2(&e))
        }
        PipeEnd::Finished(status) => {
            sink.reset(Reason::CANCEL);
            Err(status)
        }
        // The server answered or reset early; its response carries the real status.
        PipeEnd::Reset(_) | PipeEnd::SendFailed(_) => Ok(()),
        PipeEnd::DeadlineExceeded => {
            sink.reset(Reason::CANCEL);
            Err(Status::deadline_exceeded("deadline exceeded"))
        }
    }
}
