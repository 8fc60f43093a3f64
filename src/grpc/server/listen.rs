//! What a server accepts connections on: a TCP listener or a Unix domain socket.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use futures_util::FutureExt as _;
use tokio::{
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::Semaphore,
    task::JoinSet,
};

/// A bound socket for [`run`](crate::grpc::run): TCP, or a Unix domain socket (the peer then
/// has no address; TLS, if configured, still runs over it).
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix domain socket listener.
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Self::Unix(l)
    }
}

/// An accepted connection's byte stream.
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    pub(crate) async fn accept(&self) -> io::Result<(Socket, Option<SocketAddr>)> {
        match self {
            Self::Tcp(l) => {
                let (socket, addr) = l.accept().await?;
                let _ = socket.set_nodelay(true);
                Ok((Socket::Tcp(socket), Some(addr)))
            }
            Self::Unix(l) => Ok((Socket::Unix(l.accept().await?.0), None)),
        }
    }
}

/// The accept loop every listener shares (gRPC, browsers, admin): until `shutdown`, at most
/// `max` connections at once (a permit each, held by the connection's task); a failed accept
/// (EMFILE and friends) is transient, so it backs off rather than ending the server. Returns
/// the connections still running, for the caller to drain.
pub(crate) async fn accept_loop<S, A, Fut>(
    what: &'static str,
    max: usize,
    mut accept: impl FnMut() -> A,
    shutdown: impl std::future::Future<Output = ()>,
    mut serve: impl FnMut(S) -> Fut,
) -> JoinSet<()>
where
    A: std::future::Future<Output = io::Result<S>>,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max));
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
            accepted = accept() => accepted,
        };
        match accepted {
            Ok(socket) => {
                backoff = Duration::from_millis(5);
                // `map`, not `async move { connection.await; .. }`: that block would hold the
                // connection's future twice (its capture and its awaitee), a few KiB per idle
                // connection.
                connections.spawn(serve(socket).map(move |()| drop(permit)));
            }
            Err(e) => {
                tracing::error!(listener = what, error = %e, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    connections
}
