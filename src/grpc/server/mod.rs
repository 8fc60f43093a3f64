//! The gRPC server: accept loop, connection cap, TLS (mutual by default), HTTP/2 settings, and
//! graceful shutdown.
//!
//! ```text
//! run: accept (permit from the connection cap) -> conn: TLS handshake (timeout) -> h2
//!      handshake (timeout) -> accept streams -> call::dispatch -> spawned call task
//! ```

mod call;
mod conn;
mod router;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};

pub use router::Router;

use crate::grpc::{error::Error, frame::DEFAULT_MAX_MESSAGE_SIZE};

/// How connections are secured.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TLS with the given rustls configuration (build it with [`crate::grpc::tls`]; mutual TLS
    /// when a client CA is given there).
    Tls(Arc<rustls::ServerConfig>),
    /// HTTP/2 over cleartext TCP with prior knowledge. Only when explicitly asked for.
    Plaintext,
}

/// Server settings. Every default has a reason next to it; [`ServerConfig::validate`] checks the
/// ranges before anything reaches h2 (which asserts on some of them).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How connections are secured.
    pub transport: Transport,
    /// Streams one connection may have open at once. h2's default is unlimited; 128 keeps a
    /// single peer from owning the server while leaving room for heavy multiplexing.
    pub max_concurrent_streams: u32,
    /// Per-stream receive window: 1 MiB (hyper's default) lets one stream fill a fast link.
    pub initial_stream_window: u32,
    /// Connection receive window: 2 MiB, so two busy streams do not starve each other.
    pub initial_connection_window: u32,
    /// Largest HTTP/2 frame we accept: the RFC minimum 16 KiB, which every peer supports.
    pub max_frame_size: u32,
    /// Largest decoded request header list: 16 KiB, C-core's hard limit (GRPC-NOTES §1.4).
    pub max_header_list_size: u32,
    /// Bytes h2 may buffer per stream while sending: 400 KiB (hyper's choice) bounds a stalled
    /// reader's cost.
    pub max_send_buffer_size: usize,
    /// Streams reset by the peer before we accepted them, before GOAWAY: h2's 20, the
    /// rapid-reset defence (CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Resets we may generate for peer protocol errors before GOAWAY: h2's 1024 ("MadeYouReset",
    /// CVE-2025-8671). Never unlimited.
    pub max_local_error_reset_streams: usize,
    /// Largest request message accepted: 4 MiB, as every stock gRPC stack.
    pub max_recv_message_size: usize,
    /// Largest response message sent: 4 MiB, what stock clients accept by default.
    pub max_send_message_size: usize,
    /// Time for the TLS handshake and for the HTTP/2 preface: 10 s, so a silent peer cannot
    /// hold a connection slot.
    pub handshake_timeout: Duration,
    /// Open connections at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// After shutdown begins, how long calls in flight may take before they are cut off.
    pub shutdown_grace: Duration,
    /// Ping an open connection this often (A8/A9 server keepalive); `None` disables. 2 h, the
    /// C-core and grpc-go default: finds dead peers without tripping clients' ping policing.
    pub keepalive_interval: Option<Duration>,
    /// A keepalive ping not answered within this closes the connection: 20 s, as C-core.
    pub keepalive_timeout: Duration,
    /// Close (GOAWAY) a connection with no call for this long (A9 MAX_CONNECTION_IDLE); off by
    /// default, as in grpc-go and C-core.
    pub max_connection_idle: Option<Duration>,
    /// Close (GOAWAY) a connection after this long, +-10 % jitter (A9 MAX_CONNECTION_AGE), so
    /// L4 balancers see new connections; off by default.
    pub max_connection_age: Option<Duration>,
    /// After an idle or age GOAWAY, how long calls in flight may take (A9 MAX_CONNECTION_AGE_GRACE).
    pub max_connection_age_grace: Duration,
}

impl ServerConfig {
    /// Defaults with the given transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            max_concurrent_streams: 128,
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 2 * 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 16 * 1024,
            max_send_buffer_size: 400 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_recv_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
            keepalive_interval: Some(Duration::from_secs(2 * 60 * 60)),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_idle: None,
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(10),
        }
    }

    /// Checks every setting against its allowed range.
    ///
    /// # Errors
    /// A configuration error naming the setting and its range.
    pub fn validate(&self) -> Result<(), Error> {
        const MAX_WINDOW: u32 = (1 << 31) - 1; // RFC 9113 §6.9.1
        let checks: [(&str, u64, u64, u64); 7] = [
            (
                "max_concurrent_streams",
                self.max_concurrent_streams.into(),
                1,
                u32::MAX.into(),
            ),
            (
                "initial_stream_window",
                self.initial_stream_window.into(),
                1,
                MAX_WINDOW.into(),
            ),
            (
                "initial_connection_window",
                self.initial_connection_window.into(),
                65_535,
                MAX_WINDOW.into(),
            ),
            // RFC 9113 §6.5.2: SETTINGS_MAX_FRAME_SIZE must lie in [2^14, 2^24 - 1].
            (
                "max_frame_size",
                self.max_frame_size.into(),
                16_384,
                16_777_215,
            ),
            (
                "max_header_list_size",
                self.max_header_list_size.into(),
                1024,
                u32::MAX.into(),
            ),
            (
                "max_recv_message_size",
                self.max_recv_message_size as u64,
                1,
                u32::MAX.into(),
            ),
            (
                "max_connections",
                self.max_connections as u64,
                1,
                Semaphore::MAX_PERMITS as u64,
            ),
        ];
        for (name, value, min, max) in checks {
            if value < min || value > max {
                return Err(Error::config(format!(
                    "{name} = {value} is outside {min}..={max}"
                )));
            }
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::config("handshake_timeout must be positive"));
        }
        // Every duration is added to `Instant::now()` (some with jitter or a second of slack),
        // which panics past what `Instant` can hold; a year is far beyond any real setting.
        const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
        let durations = [
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("shutdown_grace", Some(self.shutdown_grace)),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", Some(self.keepalive_timeout)),
            ("max_connection_idle", self.max_connection_idle),
            ("max_connection_age", self.max_connection_age),
            (
                "max_connection_age_grace",
                Some(self.max_connection_age_grace),
            ),
        ];
        for (name, value) in durations {
            if value.is_some_and(|d| d > MAX_DURATION) {
                return Err(Error::config(format!(
                    "{name} = {value:?} is over the maximum of {MAX_DURATION:?}"
                )));
            }
        }
        if self.keepalive_interval.is_some() && self.keepalive_timeout.is_zero() {
            return Err(Error::config("keepalive_timeout must be positive"));
        }
        if self.max_send_message_size == 0 || self.max_send_message_size > u32::MAX as usize {
            return Err(Error::config(format!(
                "max_send_message_size = {} is outside 1..={}",
                self.max_send_message_size,
                u32::MAX
            )));
        }
        Ok(())
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts down gracefully: stop
/// accepting, GOAWAY on every connection, let calls in flight finish within
/// [`ServerConfig::shutdown_grace`], then close.
///
/// Accept errors (such as running out of file descriptors) back off and retry; they never end
/// the server.
///
/// # Errors
/// A configuration error from [`ServerConfig::validate`].
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.validate()?;
    let shared = Arc::new(conn::Shared::new(config, router));
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, addr)) => {
                backoff = Duration::from_millis(5);
                let _ = socket.set_nodelay(true);
                let shared = shared.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    conn::serve(socket, Some(addr), shared, stop).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends are transient: back off instead of ending the server.
                tracing::error!(error = %e, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = shared.config.shutdown_grace + Duration::from_secs(1);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
        connections.shutdown().await;
    }
    Ok(())
}

#[doc(hidden)]
pub use conn::serve_io;
