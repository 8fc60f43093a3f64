//! Server settings: every default with its reason, and the range checks that run before
//! anything reaches h2.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use crate::grpc::{
    budget::RequestBudget, error::Error, frame::DEFAULT_MAX_MESSAGE_SIZE, metrics::Metrics,
};

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
    /// Write TLS secrets to the file named by `SSLKEYLOGFILE` (NSS key log format), so that a
    /// capture can be decrypted. Off by default: whoever can set that variable could read
    /// every connection, so it is the program's choice, never the library's.
    pub tls_key_log: bool,
    /// Poll each new call once on its connection's task before giving it a task of its own.
    ///
    /// On (the default), a call that can finish without waiting, as most unary calls do,
    /// costs no task and its answer leaves in the connection's next write with the rest of the
    /// batch (BENCHMARKS.md, "poll each call inline before spawning"). The price: until a
    /// handler first waits, its connection's other streams, pings and accepts wait too, even
    /// when the handler announces its work with `tokio::task::block_in_place`. Off, each call
    /// gets a task of its own at once, and a handler that computes (inside `block_in_place`
    /// or `spawn_blocking`, as tokio, which never preempts a task, asks of any blocking work)
    /// holds up only itself; `tests/intercept.rs` shows both.
    pub inline_first_poll: bool,
    /// Where the server records connections, TLS handshake failures and calls to unknown
    /// methods; off by default. Call metrics come from
    /// [`Metrics::server_interceptor`](crate::grpc::metrics::Metrics::server_interceptor).
    pub metrics: Option<Metrics>,
    /// The memory budget for partial request messages, per connection and in total; `None`
    /// turns it off (each stream is then bounded by the message size limit alone).
    /// [`RequestBudget::default`] says what the defaults are and why.
    pub request_budget: Option<RequestBudget>,
    /// Also answer gRPC-Web and Connect calls, by content type, on this server's HTTP/2
    /// connections (browsers behind an HTTP/2 proxy, HTTP/2 clients of those protocols); off
    /// by default. `Some(set)` gives the services' encoded `FileDescriptorSet`, for their JSON
    /// codecs; an empty slice serves the binary codecs only.
    pub web_protocols: Option<&'static [u8]>,
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
            tls_key_log: false,
            inline_first_poll: true,
            metrics: None,
            request_budget: Some(RequestBudget::default()),
            web_protocols: None,
        }
    }

    /// Checks every setting against its allowed range.
    ///
    /// # Errors
    /// A configuration error naming the setting and its range.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(set) = self.web_protocols.filter(|set| !set.is_empty()) {
            crate::grpc::web::json::check(set)?;
        }
        const MAX_WINDOW: u64 = (1 << 31) - 1; // RFC 9113 §6.9.1
        const U32: u64 = u32::MAX as u64;
        let as_u64 = |n: usize| n as u64;
        // A table: one setting a line.
        #[rustfmt::skip]
        let checks = [
            ("max_concurrent_streams", self.max_concurrent_streams.into(), 1, U32),
            ("initial_stream_window", self.initial_stream_window.into(), 1, MAX_WINDOW),
            ("initial_connection_window", self.initial_connection_window.into(), 65_535, MAX_WINDOW),
            // RFC 9113 §6.5.2: SETTINGS_MAX_FRAME_SIZE must lie in [2^14, 2^24 - 1].
            ("max_frame_size", self.max_frame_size.into(), 16_384, 16_777_215),
            ("max_header_list_size", self.max_header_list_size.into(), 1024, U32),
            ("max_recv_message_size", as_u64(self.max_recv_message_size), 1, U32),
            ("max_send_message_size", as_u64(self.max_send_message_size), 1, U32),
            ("max_connections", as_u64(self.max_connections), 1, as_u64(Semaphore::MAX_PERMITS)),
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
        if let Some(budget) = &self.request_budget {
            // A budget smaller than one message would stall a well-behaved maximum-size request.
            if budget.per_connection < self.max_recv_message_size {
                return Err(Error::config(format!(
                    "request_budget.per_connection = {} is below max_recv_message_size = {}",
                    budget.per_connection, self.max_recv_message_size
                )));
            }
            if budget.total < budget.per_connection {
                return Err(Error::config(format!(
                    "request_budget.total = {} is below request_budget.per_connection = {}",
                    budget.total, budget.per_connection
                )));
            }
            if budget.stall_timeout.is_zero() || budget.stall_timeout > MAX_DURATION {
                return Err(Error::config(format!(
                    "request_budget.stall_timeout = {:?} is outside (0, {MAX_DURATION:?}]",
                    budget.stall_timeout
                )));
            }
        }
        if self.keepalive_interval.is_some() && self.keepalive_timeout.is_zero() {
            return Err(Error::config("keepalive_timeout must be positive"));
        }
        Ok(())
    }
}
