//! Where and how a channel connects.

use std::{sync::Arc, time::Duration};

use crate::grpc::{compression::Encoding, frame::DEFAULT_MAX_MESSAGE_SIZE};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub(crate) addr: String,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    pub(crate) send_compressed: Option<Encoding>,
    pub(crate) tls_key_log: bool,
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
            tls_key_log: false,
        }
    }

    /// Writes TLS secrets to the file named by `SSLKEYLOGFILE`, so that a capture can be
    /// decrypted; off by default (see [`ServerConfig::tls_key_log`](crate::grpc::ServerConfig)).
    pub fn tls_key_log(mut self, on: bool) -> Self {
        self.tls_key_log = on;
        self
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

    pub(crate) fn host(&self) -> &str {
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}
