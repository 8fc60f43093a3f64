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
pub(crate) mod listen;
mod route;
pub(crate) mod web;
mod web_h2;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::watch;

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
    let (stop_tx, stop_rx) = watch::channel(false);
    let max = shared.config.max_connections;
    let mut connections = listen::accept_loop(
        "gRPC",
        max,
        || listener.accept(),
        shutdown,
        |(socket, addr)| {
            let shared = shared.clone();
            let stop = stop_rx.clone();
            async move {
                match socket {
                    listen::Socket::Tcp(s) => conn::serve(s, addr, shared, stop).await,
                    listen::Socket::Unix(s) => conn::serve(s, addr, shared, stop).await,
                }
            }
        },
    )
    .await;
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
