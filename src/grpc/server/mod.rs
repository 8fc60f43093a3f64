//! The gRPC server: accept loop, connection cap, TLS (mutual by default), HTTP/2 settings, and
//! graceful shutdown.
//!
//! One call flows one way through these files, each a step:
//!
//! ```text
//! run (accept, connection cap) -> conn (TLS, h2, accept streams) -> head (checks -> CallHead)
//!   -> route (path -> erased handler) -> call (interceptors, deadline, cancel,
//!      handler: decode -> typed fn -> encode, trailers)
//! ```

mod browser;
mod call;
mod config;
mod conn;
mod cors;
mod head;
mod listen;
mod route;
pub(crate) mod web;
mod web_h2;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
};

pub use browser::{run_browser, BrowserConfig, StaticFile};
pub use config::{ServerConfig, Transport};
pub use conn::serve_io;
pub use listen::Listener;
pub use route::Router;

use crate::grpc::error::Error;

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
    listener: impl Into<Listener>,
    config: ServerConfig,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.validate()?;
    let listener = listener.into();
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
                let shared = shared.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    match socket {
                        listen::Socket::Tcp(s) => conn::serve(s, addr, shared, stop).await,
                        listen::Socket::Unix(s) => conn::serve(s, addr, shared, stop).await,
                    }
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
