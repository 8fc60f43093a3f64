//! A subchannel: one HTTP/2 connection to one address, through IDLE, CONNECTING, READY and
//! TRANSIENT_FAILURE, dialled with the standard backoff, and (when asked) watched by a health
//! check.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::FutureExt as _;
use h2::client::SendRequest;
use rustls_pki_types::ServerName;
use tokio::{
    net::{TcpStream, UnixStream},
    sync::{oneshot, watch},
    task::AbortHandle,
};

use crate::grpc::{
    client::{
        backoff::{Backoff, ConnectBackoff},
        resolve::Address,
    },
    error::Error,
};

/// A channel's or subchannel's connectivity state, as gRPC's `connectivity-semantics.md`
/// names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectivityState {
    /// No connection, and none being made.
    Idle,
    /// A connection is being made.
    Connecting,
    /// A connection is up; calls go out now.
    Ready,
    /// The last attempt failed; the next waits out its backoff.
    TransientFailure,
}

/// What a health check said of a subchannel (gRFC A17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// No health check is configured: READY is enough.
    Unchecked,
    /// The check has not answered yet.
    Pending,
    Serving,
    NotServing,
}

/// Watches a health service over one connection: the serving states as they come, `None`
/// when the server has no health service (UNIMPLEMENTED), an error when the watch failed.
pub(crate) trait HealthWatch: Send + Sync + 'static {
    fn watch(
        &self,
        send: SendRequest<Bytes>,
        service: String,
    ) -> std::pin::Pin<Box<dyn Stream<Item = Result<Option<bool>, String>> + Send>>;
}

/// How to make a connection: TLS, names and timeouts, the same for every address.
pub(crate) struct Dialer {
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_name: String,
    pub(crate) handshake_timeout: Duration,
    pub(crate) backoff: ConnectBackoff,
    pub(crate) health: Option<(String, Arc<dyn HealthWatch>)>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// A live connection, numbered so that a late report about an older one is ignored.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) send: SendRequest<Bytes>,
    pub(crate) generation: u64,
    /// Set when a response head arrives on it: the peer is a working server, not one that
    /// accepts connections only to drop them.
    pub(crate) answered: Arc<AtomicBool>,
}

impl Conn {
    /// A call got a response head on this connection.
    pub(crate) fn answered(&self) {
        // A read first: the common case (already set) writes nothing to the shared line.
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct State {
    connectivity: ConnectivityState,
    conn: Option<Conn>,
    health: Health,
    /// Why the last attempt failed, for the messages of calls that fail fast.
    error: Option<String>,
    /// An attempt failed since the last READY: reconnecting still counts as
    /// TRANSIENT_FAILURE ("sticky", as in gRPC), so that fail-fast calls do not wait out a
    /// connect timeout against an address that just failed.
    failing: bool,
    /// Tells the connector that calls found the connection refusing new streams.
    drain: Option<oneshot::Sender<()>>,
}

/// One address's connection and its state; shared by the connector task and the picker.
#[derive(Debug)]
pub(crate) struct Subchannel {
    pub(crate) address: Address,
    state: Mutex<State>,
    wanted: watch::Sender<bool>,
}

/// What a subchannel tells its owner when its state changes.
pub(crate) trait Listener: Send + Sync + 'static {
    /// The subchannel's state changed.
    fn changed(&self);
    /// A connection failed or ended: the addresses may have changed.
    fn resolve_again(&self);
}

impl Subchannel {
    /// The connection, when READY and (if checked) SERVING.
    pub(crate) fn pickable(&self) -> Option<Conn> {
        let state = self.state.lock().expect("subchannel state");
        match (state.connectivity, state.health) {
            (ConnectivityState::Ready, Health::Unchecked | Health::Serving) => state.conn.clone(),
            _ => None,
        }
    }

    /// The state as a balancer sees it: READY but NOT_SERVING counts as TRANSIENT_FAILURE,
    /// READY before the health check answers as CONNECTING (A17).
    pub(crate) fn state(&self) -> ConnectivityState {
        let state = self.state.lock().expect("subchannel state");
        match (state.connectivity, state.health) {
            (ConnectivityState::Ready, Health::Pending) => ConnectivityState::Connecting,
            (ConnectivityState::Ready, Health::NotServing) => ConnectivityState::TransientFailure,
            (ConnectivityState::Ready, _) => ConnectivityState::Ready,
            (_, _) if state.failing => ConnectivityState::TransientFailure,
            (c, _) => c,
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.state.lock().expect("subchannel state").error.clone()
    }

    /// Asks for a connection (or lets it go); pick_first wants one subchannel at a time.
    pub(crate) fn want(&self, wanted: bool) {
        self.wanted
            .send_if_modified(|w| std::mem::replace(w, wanted) != wanted);
    }

    /// A call found connection `generation` refusing new streams (GOAWAY, or gone): stop
    /// picking it now and let the connector make a new one.
    pub(crate) fn broken(&self, generation: u64) {
        let mut state = self.state.lock().expect("subchannel state");
        if state
            .conn
            .as_ref()
            .is_some_and(|c| c.generation == generation)
        {
            state.conn = None;
            state.connectivity = ConnectivityState::Idle;
            if let Some(drain) = state.drain.take() {
                let _ = drain.send(());
            }
        }
    }

    fn set(&self, f: impl FnOnce(&mut State), listener: &Weak<dyn Listener>) {
        f(&mut self.state.lock().expect("subchannel state"));
        if let Some(listener) = listener.upgrade() {
            listener.changed();
        }
    }
}

/// Owns a subchannel's connector task: dropping it (the address left the resolver's answer,
/// or the channel went away) stops the task; calls already on its connection go on.
#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) sub: Arc<Subchannel>,
    task: AbortHandle,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A new subchannel for `address`, IDLE until wanted.
pub(crate) fn spawn(
    address: Address,
    dialer: Arc<Dialer>,
    listener: Weak<dyn Listener>,
    wanted: bool,
) -> Owned {
    let sub = Arc::new(Subchannel {
        address,
        state: Mutex::new(State {
            connectivity: ConnectivityState::Idle,
            conn: None,
            health: Health::Unchecked,
            error: None,
            failing: false,
            drain: None,
        }),
        wanted: watch::Sender::new(wanted),
    });
    let task = tokio::spawn(connect_loop(sub.clone(), dialer, listener)).abort_handle();
    Owned { sub, task }
}

/// Connects while wanted, backs off after failures, and goes IDLE when a connection ends.
async fn connect_loop(sub: Arc<Subchannel>, dialer: Arc<Dialer>, listener: Weak<dyn Listener>) {
    let mut backoff = Backoff::new(dialer.backoff);
    let mut wanted = sub.wanted.subscribe();
    let mut generation = 0;
    loop {
        if wanted.wait_for(|w| *w).await.is_err() {
            return;
        }
        sub.set(
            |s| s.connectivity = ConnectivityState::Connecting,
            &listener,
        );
        let timeout = backoff.connect_timeout();
        let dialled = tokio::time::timeout(timeout, dial(&dialer, &sub.address))
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(&format!(
                    "connecting to {} ({timeout:?})",
                    sub.address
                )))
            });
        let (send, closed) = match dialled {
            Ok(conn) => conn,
            Err(e) => {
                let error = crate::grpc::error::error_chain(&e);
                tracing::debug!(address = %sub.address, %error, "connection attempt failed");
                sub.set(
                    |s| {
                        s.connectivity = ConnectivityState::TransientFailure;
                        s.error = Some(error);
                        s.failing = true;
                    },
                    &listener,
                );
                if let Some(l) = listener.upgrade() {
                    l.resolve_again();
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        generation += 1;
        let (drain_tx, drain_rx) = oneshot::channel();
        let answered = Arc::new(AtomicBool::new(false));
        let conn = Conn {
            send: send.clone(),
            generation,
            answered: answered.clone(),
        };
        let connected_at = tokio::time::Instant::now();
        let checked = dialer.health.is_some();
        sub.set(
            |s| {
                s.connectivity = ConnectivityState::Ready;
                s.conn = Some(conn);
                s.health = if checked {
                    Health::Pending
                } else {
                    Health::Unchecked
                };
                s.error = None;
                s.failing = false;
                s.drain = Some(drain_tx);
            },
            &listener,
        );
        tracing::debug!(address = %sub.address, "connected");
        let health = async {
            match &dialer.health {
                Some((service, watcher)) => {
                    watch_health(&sub, send, service, watcher.as_ref(), &listener).await;
                }
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            _ = closed => true,
            _ = drain_rx => true,
            _ = wanted.wait_for(|w| !*w) => false,
            () = health => false,
        };
        sub.set(
            |s| {
                if s.conn.as_ref().is_some_and(|c| c.generation == generation) {
                    s.conn = None;
                }
                s.connectivity = ConnectivityState::Idle;
                s.drain = None;
            },
            &listener,
        );
        if ended {
            tracing::debug!(address = %sub.address, "connection ended");
            if let Some(l) = listener.upgrade() {
                l.resolve_again();
            }
            // A peer that accepts connections and drops them before answering anything
            // would otherwise be redialled in a tight loop: count it as a failed attempt.
            let early = connected_at.elapsed() < dialer.backoff.initial;
            if early && !answered.load(Ordering::Relaxed) {
                sub.set(
                    |s| {
                        s.error = Some("the connection closed before any answer".into());
                        s.failing = true;
                    },
                    &listener,
                );
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Runs the health watch for as long as the connection lives, retrying a failed watch with
/// backoff; never returns (the connection's end stops it).
async fn watch_health(
    sub: &Subchannel,
    send: SendRequest<Bytes>,
    service: &str,
    watcher: &dyn HealthWatch,
    listener: &Weak<dyn Listener>,
) {
    let mut backoff = Backoff::new(ConnectBackoff::default());
    loop {
        let mut stream = watcher.watch(send.clone(), service.to_owned());
        while let Some(item) = futures_util::StreamExt::next(&mut stream).await {
            let health = match item {
                Ok(Some(true)) => Health::Serving,
                Ok(Some(false)) => Health::NotServing,
                Ok(None) => {
                    // A17: a server without a health service is treated as healthy.
                    tracing::info!(address = %sub.address, "no health service; treating as healthy");
                    sub.set(|s| s.health = Health::Serving, listener);
                    return std::future::pending().await;
                }
                Err(error) => {
                    tracing::debug!(address = %sub.address, %error, "health watch failed");
                    break;
                }
            };
            backoff.reset();
            sub.set(|s| s.health = health, listener);
        }
        sub.set(|s| s.health = Health::NotServing, listener);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Makes a connection to `address`: TCP or Unix socket, TLS when configured, the HTTP/2
/// handshake. Returns the request sender and a signal that fires when the connection ends.
async fn dial(
    dialer: &Dialer,
    address: &Address,
) -> Result<(SendRequest<Bytes>, oneshot::Receiver<()>), Error> {
    match address {
        Address::Tcp(addr) => {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| Error::io(format!("cannot connect to {addr}"), e))?;
            let _ = tcp.set_nodelay(true);
            secure(dialer, address, tcp).await
        }
        Address::Unix(path) => {
            let unix = UnixStream::connect(path)
                .await
                .map_err(|e| Error::io(format!("cannot connect to {}", path.display()), e))?;
            secure(dialer, address, unix).await
        }
    }
}

async fn secure<IO>(
    dialer: &Dialer,
    address: &Address,
    io: IO,
) -> Result<(SendRequest<Bytes>, oneshot::Receiver<()>), Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeout = dialer.handshake_timeout;
    let Some(config) = &dialer.tls else {
        return handshake(io, timeout).await;
    };
    let name = dialer.server_name.clone();
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| Error::config(format!("invalid server name {name:?}")).with(e))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tls = tokio::time::timeout(timeout, connector.connect(server_name, io))
        .await
        .map_err(|_| Error::timeout("TLS handshake"))?
        .map_err(|e| Error::tls(format!("TLS handshake with {address} failed")).with(e))?;
    handshake(tls, timeout).await
}

async fn handshake<IO>(
    io: IO,
    timeout: Duration,
) -> Result<(SendRequest<Bytes>, oneshot::Receiver<()>), Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = tokio::time::timeout(
        timeout,
        h2::client::Builder::new()
            // Match the server's generous windows so streams are not throttled at 64 KiB.
            .initial_window_size(1024 * 1024)
            .initial_connection_window_size(2 * 1024 * 1024)
            .max_header_list_size(16 * 1024)
            // h2 counts the resets it makes itself over a connection's whole life and closes
            // the connection past a cap (1 024), a server's defence against MadeYouReset. A
            // client that cancels many streams answers late frames for them with such resets,
            // so the cap would kill a long-lived channel: remember more recently reset streams
            // (their late frames are then ignored) and leave the cap to servers.
            .max_concurrent_reset_streams(1024)
            .max_local_error_reset_streams(None)
            .handshake::<_, Bytes>(io),
    )
    .await
    .map_err(|_| Error::timeout("HTTP/2 handshake"))?
    .map_err(|e| Error::http2("HTTP/2 handshake failed", e))?;
    let (closed_tx, closed_rx) = oneshot::channel();
    // `map`, not `async move { connection.await; .. }`: that block would hold the connection
    // (1.3 KiB) twice, as its capture and as its awaitee.
    tokio::spawn(connection.map(move |ended| {
        if let Err(e) = ended {
            tracing::debug!(error = %e, "client connection ended");
        }
        let _ = closed_tx.send(());
    }));
    Ok((send, closed_rx))
}
