//! One connection: TLS handshake and HTTP/2 handshake under a timeout, then accept streams and
//! spawn a task per call; on shutdown, GOAWAY and drain within the grace period.

use std::{
    future::Future,
    hash::{BuildHasher as _, Hash as _, Hasher as _},
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::Poll,
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
    task::JoinSet,
    time::{Instant, Sleep},
};

use tokio_util::io::InspectReader;
use tracing::Instrument as _;

use crate::grpc::{
    budget::{ConnBudget, ServerBudget},
    error::Error,
    metadata::Metadata,
    metrics::{handshake_failure_reason, Metrics},
    request::Peer,
    server::{
        call::{self, Limits},
        config::{ServerConfig, Transport},
        cors::{self, Site},
        head,
        route::Router,
        web::{Protocol, Web},
        web_h2,
    },
    tls,
    web::json::LazyJson,
};

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    router: Router,
    /// The request memory budget all connections share.
    budget: Option<Arc<ServerBudget>>,
    /// gRPC-Web and Connect on the same streams, when configured.
    web: Option<Arc<Web>>,
    /// The browser listener's files and CORS, when this serves browsers over HTTP/2.
    site: Option<Arc<Site>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: h2::server::Builder,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig, router: Router) -> Self {
        let tls = match &config.transport {
            Transport::Tls(cfg) => {
                let mut cfg = cfg.clone();
                if config.tls_key_log {
                    Arc::make_mut(&mut cfg).key_log = Arc::new(rustls::KeyLogFile::new());
                }
                Some(tokio_rustls::TlsAcceptor::from(cfg))
            }
            Transport::Plaintext => None,
        };
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(config.max_concurrent_streams)
            .initial_window_size(config.initial_stream_window)
            .initial_connection_window_size(config.initial_connection_window)
            .max_frame_size(config.max_frame_size)
            .max_header_list_size(config.max_header_list_size)
            .max_send_buffer_size(config.max_send_buffer_size)
            .max_pending_accept_reset_streams(config.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(config.max_local_error_reset_streams));
        let budget = config
            .request_budget
            .map(|settings| ServerBudget::new(settings, config.metrics.clone()));
        let web = config.web_protocols.map(|set| {
            Arc::new(Web {
                router: router.clone(),
                json: (!set.is_empty()).then(|| LazyJson::new(set)),
                limits: Limits {
                    max_recv: config.max_recv_message_size,
                    max_send: config.max_send_message_size,
                },
            })
        });
        Self {
            config,
            router,
            budget,
            web,
            site: None,
            tls,
            builder,
        }
    }

    /// The web protocols' state (router, JSON codec, limits), when configured: the browser
    /// listener's HTTP/1.1 side shares it, so the JSON pool is built once for both.
    pub(crate) fn web(&self) -> Option<&Arc<Web>> {
        self.web.as_ref()
    }

    /// Serves `site` (files, CORS) beside the calls: the browser listener over HTTP/2.
    pub(crate) fn with_site(mut self, site: Site) -> Self {
        self.site = Some(Arc::new(site));
        self
    }
}

/// Serves one accepted connection (TCP or Unix socket) to its end.
pub(crate) async fn serve<IO>(
    socket: IO,
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shown = addr.map_or_else(|| "unix".to_owned(), |a| a.to_string());
    let span = tracing::debug_span!("conn", peer = %shown, identity = tracing::field::Empty);
    let metrics = shared.config.metrics.as_ref();
    if let Some(metrics) = metrics {
        metrics.connection_accepted();
    }
    let Some(acceptor) = shared.tls.clone() else {
        let _open = metrics.map(Metrics::connection_open);
        let peer = Arc::new(Peer {
            addr,
            ..Peer::default()
        });
        // Boxed: the plaintext and TLS connection futures would otherwise sit side by side in
        // this one (rustc does not overlap them), doubling every idle connection's task.
        return Box::pin(serve_h2(socket, peer, &shared, stop).instrument(span)).await;
    };
    // Built in a block: a local matched or moved from keeps its room in this future until
    // its scope ends, and the TLS stream (1.2 KiB) would be held twice for the connection's
    // life (print-type-sizes). The handshake is boxed for the same reason.
    let serving = {
        let stream = match Box::pin(tokio::time::timeout(
            shared.config.handshake_timeout,
            acceptor.accept(socket),
        ))
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let reason = handshake_failure_reason(&e);
                tracing::info!(parent: &span, error = %e, reason, "TLS handshake failed");
                if let Some(metrics) = metrics {
                    metrics.handshake_failed(reason);
                }
                return;
            }
            Err(_) => {
                tracing::info!(parent: &span, "TLS handshake timed out");
                if let Some(metrics) = metrics {
                    metrics.handshake_failed("timeout");
                }
                return;
            }
        };
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| tls::identity_of(cert));
        let (subject, uri_sans, dns_sans) = match identity {
            Some((subject, uris, dns)) => (Some(subject), uris, dns),
            None => (None, Vec::new(), Vec::new()),
        };
        if let Some(subject) = &subject {
            span.record("identity", subject.as_str());
        }
        let peer = Arc::new(Peer {
            addr,
            tls: true,
            subject,
            uri_sans,
            dns_sans,
        });
        Box::pin(serve_h2(stream, peer, &shared, stop).instrument(span))
    };
    let _open = metrics.map(Metrics::connection_open);
    serving.await;
}

/// Serves HTTP/2 with prior knowledge on an already-secured byte stream until it closes: one
/// connection, for in-memory tests, fuzzing over `tokio::io::duplex`, or a transport of the
/// caller's own. [`ServerConfig::transport`] is not used.
///
/// # Errors
/// A configuration error from [`ServerConfig::validate`].
pub async fn serve_io<IO>(io: IO, config: ServerConfig, router: Router) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    config.validate()?;
    let shared = Shared::new(config, router);
    let (_stop_tx, stop) = watch::channel(false);
    let span = tracing::debug_span!("conn", peer = "-");
    serve_h2(io, Arc::new(Peer::default()), &shared, stop)
        .instrument(span)
        .await;
    Ok(())
}

pub(crate) fn serve_h2<'a, IO>(
    io: IO,
    peer: Arc<Peer>,
    shared: &'a Shared,
    stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'a
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Three futures, so an idle connection holds only what it needs: the handshake (boxed,
    // dropped when done) owns the byte stream until h2 takes it and then boxes the connection
    // loop, whose state is the h2 connection and little else. As one async fn, the stream's
    // slot, the handshake's result and the connection each kept their room for the
    // connection's life (print-type-sizes: 7.9 KiB -> 3.1 KiB per mTLS connection).
    let handshake = Box::pin(handshake_h2(io, peer, shared, stop));
    async move {
        if let Some(connection) = handshake.await {
            connection.await;
        }
    }
}

/// The HTTP/2 handshake under the handshake timeout; then the connection's loop, boxed.
async fn handshake_h2<'a, IO>(
    io: IO,
    peer: Arc<Peer>,
    shared: &'a Shared,
    stop: watch::Receiver<bool>,
) -> Option<Pin<Box<impl Future<Output = ()> + Send + 'a>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    // RFC 9113 §3.4: the client preface is the magic *and* a SETTINGS frame, but h2's handshake
    // ends after the magic; a peer that stops there must not hold the connection forever.
    let preface_deadline = Instant::now() + config.handshake_timeout;
    // Counts the bytes read, up to about PREFACE_WITH_SETTINGS.
    let read = Arc::new(AtomicUsize::new(0));
    let io = InspectReader::new(io, {
        let read = read.clone();
        move |bytes: &[u8]| {
            if read.load(Ordering::Relaxed) < PREFACE_WITH_SETTINGS {
                read.fetch_add(bytes.len(), Ordering::Relaxed);
            }
        }
    });
    let handshake = tokio::time::timeout(
        config.handshake_timeout,
        shared.builder.handshake::<_, Bytes>(io),
    );
    let connection = match handshake.await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("HTTP/2 preface timed out");
            return None;
        }
    };
    Some(Box::pin(drive(
        connection,
        read,
        preface_deadline,
        peer,
        shared,
        stop,
    )))
}

/// Accepts and answers calls on one HTTP/2 connection until it ends or drains.
///
/// A function returning an `async move` block, not an `async fn`: an async fn's arguments are
/// moved into locals, and the h2 connection (2.5 KiB) would be held twice.
#[allow(clippy::manual_async_fn)]
fn drive<'a, T>(
    mut connection: h2::server::Connection<T, Bytes>,
    read: Arc<AtomicUsize>,
    preface_deadline: Instant,
    peer: Arc<Peer>,
    shared: &'a Shared,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'a
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'a,
{
    async move {
        let config = &shared.config;
        let mut calls = JoinSet::new();
        let budget = shared.budget.as_ref().map(ServerBudget::connection);
        let mut timers = Timers::new(config, &peer, preface_deadline);
        let mut ping_pong = connection.ping_pong();
        if *stop.borrow() {
            timers.drain(&mut connection, config.shutdown_grace, "shutdown");
        }
        let draining = |timers: &Timers| timers.grace.is_some();
        loop {
            tokio::select! {
                biased;
                () = expired(&mut timers.preface) => {
                    if read.load(Ordering::Relaxed) < PREFACE_WITH_SETTINGS {
                        tracing::debug!("no SETTINGS after the preface; closing");
                        break;
                    }
                    timers.preface = None;
                }
                changed = stop.changed(), if !draining(&timers) => {
                    if changed.is_err() || *stop.borrow() {
                        timers.drain(&mut connection, config.shutdown_grace, "shutdown");
                    }
                }
                () = expired(&mut timers.grace) => {
                    tracing::debug!(calls = calls.len(), "grace period over; closing");
                    break;
                }
                () = expired(&mut timers.age), if !draining(&timers) => {
                    timers.drain(&mut connection, config.max_connection_age_grace, "max connection age");
                }
                () = expired(&mut timers.idle), if calls.is_empty() && !draining(&timers) => {
                    timers.drain(&mut connection, config.max_connection_age_grace, "max connection idle");
                }
                () = expired(&mut timers.ping), if ping_pong.is_some() => {
                    if timers.awaiting_pong {
                        // A8: no PONG within the timeout means the peer or the path is dead.
                        tracing::debug!("keepalive ping timed out; closing");
                        break;
                    }
                    if ping_pong.as_mut().is_some_and(|pp| pp.send_ping(h2::Ping::opaque()).is_ok()) {
                        timers.awaiting_pong = true;
                        timers.ping = after(Some(config.keepalive_timeout));
                    }
                }
                pong = poll_pong(ping_pong.as_mut()), if timers.awaiting_pong => {
                    timers.awaiting_pong = false;
                    if pong.is_err() {
                        ping_pong = None;
                    } else {
                        timers.ping = after(config.keepalive_interval);
                    }
                }
                Some(joined) = calls.join_next(), if !calls.is_empty() => {
                    if let Err(e) = joined {
                        // Handler panics are caught inside the call; this is a bug of ours.
                        tracing::error!(error = %e, "call task failed");
                    }
                    if calls.is_empty() {
                        timers.rearm_idle(config);
                    }
                }
                accepted = connection.accept() => {
                    // Take every request that is readable now before answering any: h2 flushes
                    // what is queued each time it is polled for the next request, so answering
                    // between accepts would cost one write per call instead of one per batch.
                    // Allocated per batch, not kept: an idle connection should hold no buffer.
                    let mut batch = Vec::new();
                    let mut end = None;
                    match accepted {
                        Some(Ok(first)) => batch.push(first),
                        Some(Err(e)) => end = Some(Some(e)),
                        None => end = Some(None),
                    }
                    while end.is_none() {
                        match std::future::poll_fn(|cx| Poll::Ready(connection.poll_accept(cx))).await {
                            Poll::Ready(Some(Ok(next))) => batch.push(next),
                            Poll::Ready(Some(Err(e))) => end = Some(Some(e)),
                            Poll::Ready(None) => end = Some(None),
                            Poll::Pending => break,
                        }
                    }
                    let mut batch = batch.into_iter();
                    // `dispatch` is synchronous so a request's parts and head take no room in this
                    // future; only a call polled inline is held across the await below.
                    while let Some(mut call) = dispatch(&mut batch, &peer, shared, &budget, &mut calls, &mut timers) {
                        if !config.inline_first_poll {
                            calls.spawn(call);
                            continue;
                        }
                        // Poll the call once right here (ServerConfig::inline_first_poll says what
                        // it buys and costs): one that can finish without waiting costs no task,
                        // and its answer leaves with the connection's next flush.
                        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut call).poll(cx))).await;
                        if first.is_pending() {
                            calls.spawn(call);
                        }
                    }
                    match end {
                        None => {}
                        Some(Some(e)) => {
                            tracing::debug!(error = %e, "connection error");
                            break;
                        }
                        Some(None) => break,
                    }
                }
            }
        }
        // The connection is closed: nothing a call still holds can reach the peer.
        calls.shutdown().await;
    }
}

/// Answers the batch's requests that need no call (web calls are spawned, site files and
/// rejections answered) up to the next gRPC call, which it returns to be run.
fn dispatch<I>(
    batch: &mut I,
    peer: &Arc<Peer>,
    shared: &Shared,
    budget: &Option<Arc<ConnBudget>>,
    calls: &mut JoinSet<()>,
    timers: &mut Timers,
) -> Option<tracing::instrument::Instrumented<Pin<Box<impl Future<Output = ()> + Send>>>>
where
    I: Iterator<
        Item = (
            http::Request<h2::RecvStream>,
            h2::server::SendResponse<Bytes>,
        ),
    >,
{
    let config = &shared.config;
    let limits = Limits {
        max_recv: config.max_recv_message_size,
        max_send: config.max_send_message_size,
    };
    for (request, mut respond) in batch {
        timers.rearm_idle(config);
        let (parts, body) = request.into_parts();
        if let Some(web) = shared.web.as_ref().filter(|_| Protocol::maybe(&parts)) {
            if let Some(protocol) = Protocol::of(&parts) {
                let origin = shared
                    .site
                    .as_ref()
                    .and_then(|site| site.allowed(&parts.headers).cloned());
                let call = web_h2::serve(
                    web.clone(),
                    protocol,
                    parts,
                    (body, respond),
                    peer.clone(),
                    budget.clone(),
                    origin,
                );
                calls.spawn(call);
                continue;
            }
        }
        if let Some(site) = &shared.site {
            if answer_site(site, &parts, &mut respond) {
                continue;
            }
        }
        let head = match head::check(parts, peer) {
            Ok(head) => head,
            Err(rejection) => {
                call::reject(&mut respond, rejection);
                continue;
            }
        };
        let handler = match shared.router.handler(head.method()) {
            Ok(handler) => handler.clone(),
            Err(status) => {
                if let Some(metrics) = &config.metrics {
                    metrics.unregistered_call(&status);
                }
                call::answer_status(&mut respond, &status, None, &Metadata::new());
                continue;
            }
        };
        let span = tracing::debug_span!("call", method = head.method());
        let interceptors = shared.router.interceptors().cloned();
        // Boxed where it is made, then wrapped: the call's future is a few KiB, and every
        // move of it is a copy (callgrind: ~2.5 KiB, two fewer copies).
        let call = Box::pin(call::run(
            head,
            body,
            respond,
            handler,
            interceptors,
            limits,
            budget.clone(),
        ));
        return Some(call.instrument(span));
    }
    None
}

/// The magic and a SETTINGS frame header: what a peer must have sent within the handshake
/// timeout.
const PREFACE_WITH_SETTINGS: usize = 24 + 9;

/// The timers of one connection; `None` is a timer that is off.
struct Timers {
    /// The preface must be whole by then (RFC 9113 §3.4).
    preface: Option<Pin<Box<Sleep>>>,
    /// Set once draining: calls in flight must end by then.
    grace: Option<Pin<Box<Sleep>>>,
    age: Option<Pin<Box<Sleep>>>,
    idle: Option<Pin<Box<Sleep>>>,
    /// The next keepalive ping, or the answer awaited for the last one.
    ping: Option<Pin<Box<Sleep>>>,
    awaiting_pong: bool,
}

impl Timers {
    fn new(config: &ServerConfig, peer: &Peer, preface: Instant) -> Self {
        Self {
            preface: Some(Box::pin(tokio::time::sleep_until(preface))),
            grace: None,
            // A9: +-10 % jitter spreads reconnects of connections opened together.
            age: after(config.max_connection_age.map(|age| jitter(age, peer))),
            idle: after(config.max_connection_idle),
            ping: after(config.keepalive_interval),
            awaiting_pong: false,
        }
    }

    /// GOAWAY (h2 sends the two-step graceful form), then calls in flight get `grace`.
    fn drain<IO>(
        &mut self,
        connection: &mut h2::server::Connection<IO, Bytes>,
        grace: Duration,
        why: &str,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tracing::debug!(why, "draining the connection");
        connection.graceful_shutdown();
        self.grace = after(Some(grace));
    }

    fn rearm_idle(&mut self, config: &ServerConfig) {
        // Reset in place: this runs for every request, and a new timer is an allocation.
        match (&mut self.idle, config.max_connection_idle) {
            (Some(timer), Some(idle)) => timer.as_mut().reset(Instant::now() + idle),
            (timer, idle) => *timer = after(idle),
        }
    }
}

/// A timer that fires `d` from now, or none.
fn after(d: Option<Duration>) -> Option<Pin<Box<Sleep>>> {
    d.map(|d| Box::pin(tokio::time::sleep(d)))
}

/// Waits for `timer` to fire; forever when it is off.
async fn expired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn poll_pong(ping_pong: Option<&mut h2::PingPong>) -> Result<h2::Pong, h2::Error> {
    match ping_pong {
        Some(pp) => std::future::poll_fn(|cx| pp.poll_pong(cx)).await,
        None => std::future::pending().await,
    }
}

/// `d` scaled by a factor in [0.9, 1.1], from a hash of the peer and the clock (no RNG crate
/// needed for this).
fn jitter(d: Duration, peer: &Peer) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    peer.addr.hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    let unit = (hasher.finish() % 2001) as f64 / 1000.0 - 1.0; // [-1, 1]
    d.mul_f64(1.0 + 0.1 * unit)
}

/// Answers what a browser site serves beside calls on HTTP/2: CORS preflights and files.
/// Returns false for anything else (a gRPC call, or an error for `head::check`).
fn answer_site(
    site: &Site,
    parts: &http::request::Parts,
    respond: &mut h2::server::SendResponse<Bytes>,
) -> bool {
    use http::{header, HeaderValue, Method};
    if parts.method == Method::OPTIONS {
        let response = cors::preflight_head(&parts.headers, site.allowed(&parts.headers).is_some());
        let _ = respond.send_response(response, true);
        return true;
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return false;
    }
    let Some(file) = site.file(parts.uri.path()) else {
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        let _ = respond.send_response(response, true);
        return true;
    };
    let mut response = http::Response::new(());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if parts.method == Method::HEAD {
        let _ = respond.send_response(response, true);
        return true;
    }
    if let Ok(mut send) = respond.send_response(response, false) {
        // Small files: h2 buffers what the window does not take yet.
        let _ = send.send_data(file.body.clone(), true);
    }
    true
}
