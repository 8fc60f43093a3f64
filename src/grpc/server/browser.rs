//! The listener for browsers: HTTP/1.1 through hyper, and HTTP/2 (by ALPN, over TLS) through
//! the h2 path; plaintext or TLS (client certificates optional, verified when presented);
//! serving static files, CORS, and gRPC-Web and Connect calls on the router's handlers
//! (`web.rs`).

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt as _, Full, StreamBody};
use hyper::{body::Frame, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{watch, Semaphore},
};

use crate::grpc::{
    error::Error,
    frame::DEFAULT_MAX_MESSAGE_SIZE,
    request::Peer,
    server::{
        config::{ServerConfig, Transport},
        conn,
        cors::{self, Site},
        listen,
        route::Router,
        web::{self, Protocol, Web},
    },
    status::Status,
    tls,
    web::json,
};

/// A file the browser listener serves as is (the page, its script).
#[derive(Debug, Clone)]
pub struct StaticFile {
    /// The request path, such as `/` or `/app.js`.
    pub path: String,
    /// Its `content-type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: Bytes,
}

/// How the browser listener serves.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// TLS with this configuration (see [`tls::browser_server_config`]); plaintext when `None`,
    /// meant for loopback.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Origins allowed to call cross-origin (`https://app.example`), or `*`; none by default,
    /// so only pages served here may call.
    pub allowed_origins: Vec<String>,
    /// Files served on GET.
    pub files: Vec<StaticFile>,
    /// The encoded `FileDescriptorSet` of the services, for the JSON codecs; without it JSON
    /// requests get 415.
    pub descriptor_set: Option<&'static [u8]>,
    /// Largest request or response message (default 4 MiB, as for gRPC).
    pub max_message_size: usize,
    /// Time a client has to send a request's headers (default 10 s).
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in (default 30 s).
    pub body_read_timeout: Duration,
    /// Connections at once (default 1 024); more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Bytes of request bodies held at once across connections while they are read (default
    /// 64 MiB, the per-connection request budget of the gRPC port): past it, reading waits.
    /// It must be at least the largest body, twice the message limit plus 64 KiB.
    pub body_budget: usize,
    /// Time calls in flight get to finish at shutdown (default 10 s).
    pub shutdown_grace: Duration,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            tls: None,
            allowed_origins: Vec::new(),
            files: Vec::new(),
            descriptor_set: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            body_budget: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What every browser connection shares.
struct Shared {
    web: Arc<Web>,
    /// The same calls, files and CORS over HTTP/2, for TLS connections that ask for it.
    h2: conn::Shared,
    config: BrowserConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Bytes of request bodies being read, across connections ([`BrowserConfig::body_budget`]).
    body_budget: Arc<Semaphore>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Serves browsers on `listener` until `shutdown` completes: gRPC-Web and Connect calls on
/// `router`, the configured files, CORS preflights.
///
/// # Errors
/// A configuration error when the descriptor set does not decode, or the body budget is
/// smaller than the largest body.
pub async fn run_browser(
    listener: TcpListener,
    config: BrowserConfig,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    if let Some(set) = config.descriptor_set {
        json::check(set)?;
    }
    let largest = web::body_bound(config.max_message_size);
    if config.body_budget < largest {
        return Err(Error::config(format!(
            "body_budget ({}) must hold the largest request body ({largest} bytes)",
            config.body_budget
        )));
    }
    let mut h2_config = ServerConfig::new(Transport::Plaintext);
    h2_config.web_protocols = Some(config.descriptor_set.unwrap_or_default());
    h2_config.max_recv_message_size = config.max_message_size;
    h2_config.max_send_message_size = config.max_message_size;
    h2_config.handshake_timeout = config.header_read_timeout;
    h2_config.shutdown_grace = config.shutdown_grace;
    let site = Site {
        files: config.files.clone(),
        allowed_origins: config.allowed_origins.clone(),
    };
    let h2 = conn::Shared::new(h2_config, router.clone()).with_site(site);
    let (stop_tx, stop_rx) = watch::channel(false);
    // One `Web` for HTTP/1.1 and HTTP/2: the same router, limits and (lazily built) JSON
    // descriptor pool.
    let web = h2.web().cloned().expect("web_protocols is set above");
    let shared = Arc::new(Shared {
        h2,
        web,
        tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        body_budget: Arc::new(Semaphore::new(config.body_budget)),
        config,
    });
    let max = shared.config.max_connections;
    let mut connections = listen::accept_loop(
        "browser",
        max,
        || listener.accept(),
        shutdown,
        |(socket, addr): (tokio::net::TcpStream, std::net::SocketAddr)| {
            let _ = socket.set_nodelay(true);
            let shared = shared.clone();
            let stop = stop_rx.clone();
            async move {
                let mut peer = Peer {
                    addr: Some(addr),
                    ..Peer::default()
                };
                match &shared.tls {
                    None => serve_http1(socket, Arc::new(peer), &shared).await,
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            shared.config.header_read_timeout,
                            acceptor.accept(socket),
                        );
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::info!(%addr, error = %e, "browser TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        peer.tls = true;
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| tls::identity_of(c));
                        if let Some((subject, uris, dns)) = identity {
                            (peer.subject, peer.uri_sans, peer.dns_sans) =
                                (Some(subject), uris, dns);
                        }
                        // Browsers ask for HTTP/2 by ALPN; it goes through the h2 path.
                        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            conn::serve_h2(stream, Arc::new(peer), &shared.h2, stop).await;
                        } else {
                            serve_http1(stream, Arc::new(peer), &shared).await;
                        }
                    }
                }
            }
        },
    )
    .await;
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(shared.config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.shutdown().await;
    }
    Ok(())
}

async fn serve_http1<IO>(io: IO, peer: Arc<Peer>, shared: &Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let shared = shared.clone();
        service_fn(move |request| {
            let (shared, peer) = (shared.clone(), peer.clone());
            async move { Ok::<_, Infallible>(answer(request, &shared, peer).await) }
        })
    };
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_read_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "browser connection ended");
    }
}

/// The request header list a browser call may carry, as for gRPC (C-core's 16 KiB).
const MAX_HEADER_LIST: usize = 16 * 1024;

async fn answer(request: Request<Incoming>, shared: &Shared, peer: Arc<Peer>) -> Response<Body> {
    // hyper bounds what it buffers for a head; past the gRPC limit the call is refused too.
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum();
    if header_bytes > MAX_HEADER_LIST {
        return plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers larger than 16 KiB\n",
        );
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .filter(|o| cors::origin_allowed(&shared.config.allowed_origins, o));
    let mut response = if request.method() == Method::OPTIONS {
        let (parts, ()) = cors::preflight_head(request.headers(), allowed.is_some()).into_parts();
        Response::from_parts(parts, full(Bytes::new()))
    } else {
        route(request, shared, peer).await
    };
    if let Some(origin) = allowed {
        cors::cors(response.headers_mut(), origin);
    }
    response
}

async fn route(request: Request<Incoming>, shared: &Shared, peer: Arc<Peer>) -> Response<Body> {
    let (head, body) = request.into_parts();
    let Some(protocol) = Protocol::of(&head) else {
        if head.method == Method::GET || head.method == Method::HEAD {
            if let Some(file) = shared
                .config
                .files
                .iter()
                .find(|f| f.path == head.uri.path())
            {
                let mut response = Response::new(full(file.body.clone()));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(file.content_type),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                return response;
            }
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        if head.method == Method::POST {
            // Connect: a content type we do not speak is 415.
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported content-type: this port speaks gRPC-Web and Connect\n",
            );
        }
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST (or GET for files)\n",
        );
    };
    let bound = web::body_bound(shared.config.max_message_size);
    let read = tokio::time::timeout(
        shared.config.body_read_timeout,
        read_body(body, bound, &shared.body_budget),
    );
    let (body, _held) = match read.await {
        Ok(Ok(read)) => read,
        Ok(Err(status)) => return reply(web::refuse(protocol, head.uri.path(), status)),
        Err(_) => {
            let status = Status::deadline_exceeded("the request body took too long to arrive");
            return reply(web::refuse(protocol, head.uri.path(), status));
        }
    };
    reply(web::serve(&shared.web, protocol, head, body, peer).await)
}

/// Reads a request body whole, within `bound`, holding a permit per byte from the listener's
/// body budget: when every connection uploads at once, reading waits (TCP pushes back on the
/// peer) instead of memory growing; the body timeout ends a wait that lasts.
async fn read_body(
    mut body: Incoming,
    bound: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), Status> {
    let mut all = bytes::BytesMut::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Status::cancelled(format!("the request body was not received: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if all.len() + chunk.len() > bound {
            return Err(Status::resource_exhausted(format!(
                "request body larger than {bound} bytes"
            )));
        }
        let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let permit = budget
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        all.extend_from_slice(&chunk);
    }
    Ok((all.freeze(), held))
}

fn reply(reply: web::WebReply) -> Response<Body> {
    let (parts, ()) = reply.head.into_parts();
    let stream = reply
        .body
        .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    Response::from_parts(
        parts,
        http_body_util::BodyExt::boxed_unsync(StreamBody::new(stream)),
    )
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
