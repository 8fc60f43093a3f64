//! The admin listener: `GET /metrics` (Prometheus text) and `GET /healthz` (a plain answer for
//! load balancers that do not speak gRPC), over HTTP/1.1 through hyper.
//!
//! It speaks HTTP/1.1 only, so it can never serve the gRPC methods: an HTTP/2 client's preface
//! is not a valid HTTP/1.1 request and the connection is closed, and any other path is 404.
//! Keep it on an address only operators reach: it has no TLS and no authentication.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::grpc::{
    metrics::{Metrics, CONTENT_TYPE},
    server::listen::accept_loop,
};

/// Whether the server is healthy right now (`/healthz` answers 200, else 503).
pub type Healthy = Arc<dyn Fn() -> bool + Send + Sync>;

/// Time a client has to send a request's headers: a silent peer must not hold a slot.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Admin connections open at once; scrapers and probes need few, more wait in the backlog.
const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics` from `metrics` and `/healthz` from `healthy` on `listener` until
/// `shutdown` completes; connections still open then are closed.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Metrics,
    healthy: Healthy,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = accept_loop(
        "admin",
        MAX_CONNECTIONS,
        || listener.accept(),
        shutdown,
        |(stream, peer): (tokio::net::TcpStream, std::net::SocketAddr)| {
            let (metrics, healthy) = (metrics.clone(), healthy.clone());
            async move {
                let service = service_fn(move |request| {
                    let response = answer(&request, &metrics, &healthy);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "admin connection ended");
                }
            }
        },
    )
    .await;
    connections.shutdown().await;
}

fn answer(
    request: &Request<Incoming>,
    metrics: &Metrics,
    healthy: &Healthy,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    let known = matches!(request.uri().path(), "/metrics" | "/healthz");
    if known && request.method() != Method::GET {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, text, "use GET\n".to_owned());
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, CONTENT_TYPE, metrics.encode()),
        "/healthz" if healthy() => reply(StatusCode::OK, text, "ok\n".to_owned()),
        "/healthz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "shutting down\n".to_owned(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: this port serves /metrics and /healthz only\n".to_owned(),
        ),
    }
}
