//! One connection: TLS handshake and HTTP/2 handshake under a timeout, then accept streams and
//! spawn a task per call; on shutdown, GOAWAY and drain within the grace period.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::watch,
    task::JoinSet,
};

use crate::grpc::{
    request::Peer,
    server::{
        call::{self, Limits},
        Router, ServerConfig, Transport,
    },
    tls,
};

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: h2::server::Builder,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig, router: Router) -> Self {
        let tls = match &config.transport {
            Transport::Tls(cfg) => Some(tokio_rustls::TlsAcceptor::from(cfg.clone())),
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
        Self {
            config,
            router,
            tls,
            builder,
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

/// Serves one accepted TCP connection to its end.
pub(crate) async fn serve(
    socket: TcpStream,
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let Some(acceptor) = shared.tls.clone() else {
        let peer = Arc::new(Peer {
            addr,
            subject: None,
        });
        return serve_h2(socket, peer, &shared, stop).await;
    };
    let handshake =
        tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(socket)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(peer = ?addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(peer = ?addr, "TLS handshake timed out");
            return;
        }
    };
    let subject = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| tls::subject_of(cert));
    serve_h2(stream, Arc::new(Peer { addr, subject }), &shared, stop).await;
}

/// Serves HTTP/2 on an already-secured byte stream (used by `serve`, and by in-memory tests and
/// fuzzing over `tokio::io::duplex`).
pub async fn serve_io<IO>(io: IO, config: ServerConfig, router: Router)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Shared::new(config, router);
    let (_stop_tx, stop) = watch::channel(false);
    serve_h2(io, Arc::new(Peer::default()), &shared, stop).await;
}

async fn serve_h2<IO>(io: IO, peer: Arc<Peer>, shared: &Shared, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let handshake = tokio::time::timeout(
        config.handshake_timeout,
        shared.builder.handshake::<_, Bytes>(io),
    )
    .await;
    let mut connection = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(peer = ?peer.addr, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = ?peer.addr, "HTTP/2 preface timed out");
            return;
        }
    };
    let limits = Limits {
        max_recv: config.max_recv_message_size,
        max_send: config.max_send_message_size,
    };
    let mut calls = JoinSet::new();
    let mut draining = *stop.borrow();
    if draining {
        connection.graceful_shutdown();
    }
    let grace = tokio::time::sleep(config.shutdown_grace);
    let mut grace = std::pin::pin!(grace);
    loop {
        tokio::select! {
            biased;
            changed = stop.changed(), if !draining => {
                if changed.is_err() || *stop.borrow() {
                    draining = true;
                    connection.graceful_shutdown();
                    grace.as_mut().reset(tokio::time::Instant::now() + config.shutdown_grace);
                }
            }
            () = &mut grace, if draining => {
                tracing::debug!(peer = ?peer.addr, calls = calls.len(), "grace period over; closing");
                break;
            }
            Some(joined) = calls.join_next(), if !calls.is_empty() => {
                if let Err(e) = joined {
                    // Handler panics are caught inside the call; this is a bug of ours.
                    tracing::error!(error = %e, "call task failed");
                }
            }
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    if let Some(call) = call::dispatch(request, respond, &shared.router, &peer, limits) {
                        calls.spawn(call);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(peer = ?peer.addr, error = %e, "connection error");
                    break;
                }
                None => break,
            },
        }
    }
    // The connection is closed: nothing a call still holds can reach the peer.
    calls.shutdown().await;
}
