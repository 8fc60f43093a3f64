//! The channel: one HTTP/2 connection, dialled (TCP, TLS, h2 handshake, each timed) on first
//! use and again after it dies, shared by every call and every clone.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use rustls_pki_types::ServerName;
use tokio::{net::TcpStream, sync::Mutex};

use crate::grpc::{
    client::endpoint::Endpoint,
    error::{Error, WireError},
    intercept::{self, Chain, ClientInterceptor},
};

/// A cheap-to-clone handle that multiplexes calls over one HTTP/2 connection, made on first
/// use and made again on the next call after it dies.
///
/// # Examples
///
/// ```
/// use satellite::grpc::{Channel, Endpoint, Method, Request, Response, Router, ServerConfig,
///     Status, Transport, Unary};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Ping {
///     #[prost(string, tag = "1")]
///     text: String,
/// }
///
/// const ECHO: Method<Ping, Ping, Unary> = Method::unary("/demo.Echo/Echo");
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let router = Router::new().unary(&ECHO, |request: Request<Ping>| async move {
///     Ok::<_, Status>(Response::new(request.into_inner()))
/// });
/// let config = ServerConfig::new(Transport::Plaintext);
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(satellite::grpc::run(listener, config, router, async {
///     let _ = stopped.await;
/// }));
///
/// let channel = Channel::lazy(Endpoint::new(addr.to_string()))?;
/// let ping = Ping { text: "hello".into() };
/// let reply = channel.unary(&ECHO, Request::new(ping)).await?;
/// assert_eq!(reply.into_inner().text, "hello");
///
/// let _ = stop.send(());
/// server.await??;
/// # Ok(())
/// # }
/// ```
///
/// A request of the wrong message type does not compile:
///
/// ```compile_fail,E0308
/// # use satellite::grpc::{Channel, Endpoint, Method, Request, Unary};
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # struct Ping {}
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # struct Other {}
/// const ECHO: Method<Ping, Ping, Unary> = Method::unary("/demo.Echo/Echo");
/// # async fn call(channel: Channel) {
/// let _ = channel.unary(&ECHO, Request::new(Other {})).await;
/// # }
/// ```
#[derive(Clone)]
pub struct Channel {
    pub(crate) inner: Arc<Inner>,
    pub(crate) interceptors: Chain<dyn ClientInterceptor>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("endpoint", &self.inner.endpoint)
            .field("interceptors", &self.interceptors.len())
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) endpoint: Endpoint,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// The live connection and its generation, bumped at each reconnect.
    connection: Mutex<Option<(u64, SendRequest<Bytes>)>>,
}

impl Channel {
    /// A channel that connects on its first call.
    ///
    /// # Errors
    /// A configuration error when the address is not a valid `host:port` authority.
    pub fn lazy(mut endpoint: Endpoint) -> Result<Self, Error> {
        let authority: Authority = endpoint
            .addr
            .parse()
            .map_err(|e| Error::config(format!("invalid address {:?}", endpoint.addr)).with(e))?;
        if let (true, Some(tls)) = (endpoint.tls_key_log, &mut endpoint.tls) {
            Arc::make_mut(tls).key_log = Arc::new(rustls::KeyLogFile::new());
        }
        let scheme = if endpoint.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                scheme,
                authority,
                connection: Mutex::new(None),
            }),
            interceptors: Arc::new([]),
        })
    }

    /// This channel, sharing its connection, with `interceptor` added after those it has;
    /// interceptors run in the order they were added, around every call.
    pub fn intercept(mut self, interceptor: impl ClientInterceptor) -> Self {
        self.interceptors = intercept::append(&self.interceptors, Arc::new(interceptor));
        self
    }

    /// A channel connected now.
    ///
    /// # Errors
    /// The connection failure (TCP, TLS or HTTP/2), naming the phase.
    pub async fn connect(endpoint: Endpoint) -> Result<Self, Error> {
        let channel = Self::lazy(endpoint)?;
        let send = channel.inner.dial().await?;
        *channel.inner.connection.lock().await = Some((0, send));
        Ok(channel)
    }

    /// A ready request sender on a live connection, dialling when there is none.
    ///
    /// The lock is held only to read or replace the connection, never while waiting for a
    /// stream slot, so calls queue in h2 rather than on the lock.
    pub(crate) async fn ready(&self) -> Result<SendRequest<Bytes>, WireError> {
        let current = self.inner.connection.lock().await.clone();
        let mut dead_generation = None;
        if let Some((generation, send)) = current {
            match send.ready().await {
                Ok(send) => return Ok(send),
                Err(e) => {
                    tracing::debug!(error = %e, "connection is gone; reconnecting");
                    dead_generation = Some(generation);
                }
            }
        }
        let mut slot = self.inner.connection.lock().await;
        let send = match slot.as_ref() {
            // Someone else reconnected while we waited for the lock.
            Some((generation, send)) if Some(*generation) != dead_generation => send.clone(),
            _ => {
                let send = self.inner.dial().await.map_err(WireError::Connect)?;
                let generation = slot.as_ref().map_or(0, |(g, _)| g + 1);
                *slot = Some((generation, send.clone()));
                send
            }
        };
        drop(slot);
        send.ready().await.map_err(WireError::Transport)
    }
}

impl Inner {
    async fn dial(&self) -> Result<SendRequest<Bytes>, Error> {
        let ep = &self.endpoint;
        let timeout = ep.connect_timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&ep.addr))
            .await
            .map_err(|_| Error::timeout(&format!("connecting to {}", ep.addr)))?
            .map_err(|e| Error::io(format!("cannot connect to {}", ep.addr), e))?;
        let _ = tcp.set_nodelay(true);
        match &ep.tls {
            None => handshake(tcp, timeout).await,
            Some(config) => {
                let name = ep.server_name.as_deref().unwrap_or(ep.host()).to_owned();
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|e| Error::config(format!("invalid server name {name:?}")).with(e))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = tokio::time::timeout(timeout, connector.connect(server_name, tcp))
                    .await
                    .map_err(|_| Error::timeout("TLS handshake"))?
                    .map_err(|e| {
                        Error::tls(format!("TLS handshake with {} failed", ep.addr)).with(e)
                    })?;
                handshake(tls, timeout).await
            }
        }
    }
}

async fn handshake<IO>(io: IO, timeout: Duration) -> Result<SendRequest<Bytes>, Error>
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
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "client connection ended");
        }
    });
    Ok(send)
}
