//! Where and how a channel connects.

use std::{sync::Arc, time::Duration};

use crate::grpc::{
    client::{
        backoff::ConnectBackoff,
        resolve::Resolver,
        service_config::{LbPolicy, ServiceConfig},
    },
    compression::Encoding,
    frame::DEFAULT_MAX_MESSAGE_SIZE,
};

/// Where and how to connect: the target, TLS, limits, the balancer and the service config.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub(crate) addr: String,
    pub(crate) resolver: Option<Arc<dyn Resolver>>,
    pub(crate) lb_policy: Option<LbPolicy>,
    pub(crate) service_config: Option<ServiceConfig>,
    pub(crate) backoff: ConnectBackoff,
    pub(crate) min_resolve_interval: Duration,
    pub(crate) retry_buffer_size: usize,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    pub(crate) send_compressed: Option<Encoding>,
    pub(crate) tls_key_log: bool,
}

impl Endpoint {
    /// An endpoint for `target`, plaintext until [`Endpoint::tls`] is called. A target is
    /// `host:port` (every address the name resolves to), `dns:///host:port`,
    /// `ipv4:addr[:port][,addr[:port]...]`, `ipv6:[addr][:port][,...]`, or `unix:/path`;
    /// it is checked when the channel is made.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            addr: target.into(),
            resolver: None,
            lb_policy: None,
            service_config: None,
            backoff: ConnectBackoff::default(),
            min_resolve_interval: Duration::from_secs(30),
            // grpc-go's per-call retry buffer: past it, a call is committed to its attempt.
            retry_buffer_size: 256 * 1024,
            tls: None,
            server_name: None,
            connect_timeout: Duration::from_secs(20),
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

    /// Time allowed for the TLS and HTTP/2 handshakes, each (default 20 s). A whole
    /// connection attempt is given max(20 s, the current backoff), as in
    /// `connection-backoff.md`; see [`Endpoint::connect_backoff`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Finds the addresses with `resolver` instead of parsing the target; the target is then
    /// only the `:authority` of the calls and the default TLS server name.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The balancer, over the service config's choice (default: `pick_first`).
    pub fn lb_policy(mut self, policy: LbPolicy) -> Self {
        self.lb_policy = Some(policy);
        self
    }

    /// The service config: balancer, per-method timeouts, `waitForReady` and retry
    /// policies, retry throttling, client-side health checking.
    pub fn service_config(mut self, config: ServiceConfig) -> Self {
        self.service_config = Some(config);
        self
    }

    /// The spacing of connection attempts (default: 1 s, x1.6, jitter 0.2, up to 120 s).
    pub fn connect_backoff(mut self, backoff: ConnectBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The least time between two resolutions (default 30 s); failures and GOAWAYs ask for
    /// one, this keeps them from flooding the resolver.
    pub fn min_resolve_interval(mut self, interval: Duration) -> Self {
        self.min_resolve_interval = interval;
        self
    }

    /// The most request bytes a call keeps for replay by a retry (default 256 KiB); a call
    /// that sends more is committed to its attempt.
    pub fn retry_buffer_size(mut self, bytes: usize) -> Self {
        self.retry_buffer_size = bytes;
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
}
