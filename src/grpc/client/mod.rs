//! The gRPC client: a [`Channel`] multiplexes calls over one HTTP/2 connection, made on first
//! use and made again on the next call after it dies.
//!
//! ```text
//! Channel::call: ready connection (TCP connect -> TLS -> h2 handshake, each timed) ->
//!   request head + framed message(s) -> response head -> Streaming (messages) -> trailers
//! ```

mod call;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use rustls_pki_types::ServerName;
use tokio::{net::TcpStream, sync::Mutex};

use crate::grpc::{
    compression::Encoding,
    error::{error_chain, Error},
    frame::DEFAULT_MAX_MESSAGE_SIZE,
    recv::status_from_h2,
    status::Status,
};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Endpoint {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<String>,
    connect_timeout: Duration,
    max_recv_message_size: usize,
    max_send_message_size: usize,
    send_compressed: Option<Encoding>,
}

impl Endpoint {
    /// An endpoint at `addr` ("host:port"), plaintext until [`Endpoint::tls`] is called.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            tls: None,
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            max_recv_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            send_compressed: None,
        }
    }

    /// Uses TLS with this configuration (see [`crate::grpc::tls::client_config`]).
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The name the server certificate must carry; defaults to the host part of the address.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Time allowed for TCP connect, TLS and HTTP/2 handshakes, each.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Largest response message accepted (default 4 MiB).
    pub fn max_recv_message_size(mut self, max: usize) -> Self {
        self.max_recv_message_size = max;
        self
    }

    /// Compress request messages with `encoding` unless a call says otherwise (default: none).
    /// Responses are accepted in gzip, deflate or identity whatever this says.
    pub fn send_compressed(mut self, encoding: Option<Encoding>) -> Self {
        self.send_compressed = encoding;
        self
    }

    /// Largest request message sent (default 4 MiB).
    pub fn max_send_message_size(mut self, max: usize) -> Self {
        self.max_send_message_size = max;
        self
    }

    fn host(&self) -> &str {
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// A cheap-to-clone handle that multiplexes calls over one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct Channel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    scheme: Scheme,
    authority: Authority,
    /// The live connection and its generation, bumped at each reconnect.
    connection: Mutex<Option<(u64, SendRequest<Bytes>)>>,
}

impl Channel {
    /// A channel that connects on its first call.
    ///
    /// # Errors
    /// A configuration error when the address is not a valid `host:port` authority.
    pub fn lazy(endpoint: Endpoint) -> Result<Self, Error> {
        let authority: Authority = endpoint
            .addr
            .parse()
            .map_err(|e| Error::config(format!("invalid address {:?}", endpoint.addr)).with(e))?;
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
        })
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
    async fn ready(&self) -> Result<SendRequest<Bytes>, Status> {
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
                let send = self
                    .inner
                    .dial()
                    .await
                    .map_err(|e| Status::unavailable(error_chain(&e)))?;
                let generation = slot.as_ref().map_or(0, |(g, _)| g + 1);
                *slot = Some((generation, send.clone()));
                send
            }
        };
        drop(slot);
        send.ready().await.map_err(|e| status_from_h2(&e))
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
