//! The values a call carries besides its message: metadata, deadline and the peer.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::grpc::{compression::Encoding, metadata::Metadata};

/// Who is on the other end of a server-side call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The remote socket address, when the transport has one.
    pub addr: Option<SocketAddr>,
    /// Whether the connection is TLS (with or without a client certificate).
    pub tls: bool,
    /// The subject of the client certificate that TLS verified ("CN=satellite-client").
    pub subject: Option<String>,
    /// The verified client certificate's URI SANs ("spiffe://satellite/reader"), in order.
    pub uri_sans: Vec<String>,
    /// The verified client certificate's DNS SANs, in order.
    pub dns_sans: Vec<String>,
}

/// What a server-side request carries besides its message.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
    pub(crate) peer: Arc<Peer>,
    pub(crate) encoding: Option<Encoding>,
}

/// A request message with its metadata and, on the server, its deadline and peer.
#[derive(Debug)]
pub struct Request<T> {
    message: T,
    metadata: Metadata,
    pub(crate) timeout: Option<Duration>,
    deadline: Option<Instant>,
    peer: Option<Arc<Peer>>,
    compression: Option<Encoding>,
    wait_for_ready: Option<bool>,
}

impl<T> Request<T> {
    /// A request with no metadata and no deadline.
    pub fn new(message: T) -> Self {
        Self {
            message,
            metadata: Metadata::new(),
            timeout: None,
            deadline: None,
            peer: None,
            compression: None,
            wait_for_ready: None,
        }
    }

    pub(crate) fn from_server(message: T, head: RequestHead) -> Self {
        Self {
            message,
            metadata: head.metadata,
            timeout: None,
            deadline: head.deadline,
            peer: Some(head.peer),
            compression: head.encoding,
            wait_for_ready: None,
        }
    }

    /// Client side: compress this call's request messages (sent as `grpc-encoding`).
    pub fn set_compression(&mut self, encoding: Option<Encoding>) {
        self.compression = encoding;
    }

    /// The request compression asked for with [`Request::set_compression`]; on the server, the
    /// encoding the client declared for its messages (`grpc-encoding`), `None` for identity.
    pub fn compression(&self) -> Option<Encoding> {
        self.compression
    }

    /// Sets the client-side timeout: sent as `grpc-timeout` and enforced locally.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = Some(timeout);
    }

    /// Builder form of [`Request::set_timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The client-side timeout, if one was set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Client side: whether the call waits for a READY connection instead of failing fast
    /// with UNAVAILABLE when every address has failed; overrides the service config's
    /// `waitForReady` (default: fail fast).
    pub fn set_wait_for_ready(&mut self, wait: bool) {
        self.wait_for_ready = Some(wait);
    }

    /// The call's own wait-for-ready choice, if it made one.
    pub fn wait_for_ready(&self) -> Option<bool> {
        self.wait_for_ready
    }

    /// The server-side deadline taken from the caller's `grpc-timeout`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The peer of a server-side call (address and verified certificate subject).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_deref()
    }

    /// The request metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The request metadata, to add entries before sending.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The message.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// The message, mutably.
    pub fn message_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message, dropping the rest.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Replaces the message, keeping metadata, deadline and peer.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Request<U> {
        Request {
            message: f(self.message),
            metadata: self.metadata,
            timeout: self.timeout,
            deadline: self.deadline,
            peer: self.peer,
            compression: self.compression,
            wait_for_ready: self.wait_for_ready,
        }
    }
}

/// A response message (or stream) with header and trailer metadata.
#[derive(Debug)]
pub struct Response<T> {
    message: T,
    metadata: Metadata,
    trailers: Metadata,
    compression: Option<Encoding>,
}

impl<T> Response<T> {
    /// A response with no metadata.
    pub fn new(message: T) -> Self {
        Self {
            message,
            metadata: Metadata::new(),
            trailers: Metadata::new(),
            compression: None,
        }
    }

    /// Server side: compress the response messages with `encoding`, if the client accepts it
    /// (its `grpc-accept-encoding`); otherwise they go out uncompressed.
    pub fn set_compression(&mut self, encoding: Option<Encoding>) {
        self.compression = encoding;
    }

    /// The response compression asked for with [`Response::set_compression`].
    pub fn compression(&self) -> Option<Encoding> {
        self.compression
    }

    pub(crate) fn from_parts(message: T, metadata: Metadata, trailers: Metadata) -> Self {
        Self {
            message,
            metadata,
            trailers,
            compression: None,
        }
    }

    /// Header metadata (sent before the first message).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Header metadata, to add entries.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Trailer metadata (sent with the status).
    pub fn trailers(&self) -> &Metadata {
        &self.trailers
    }

    /// Trailer metadata, to add entries.
    pub fn trailers_mut(&mut self) -> &mut Metadata {
        &mut self.trailers
    }

    /// The message (or stream).
    pub fn message(&self) -> &T {
        &self.message
    }

    /// The message (or stream), mutably.
    pub fn message_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message, dropping the metadata.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Replaces the message (or stream), keeping metadata, trailers and compression.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            message: f(self.message),
            metadata: self.metadata,
            trailers: self.trailers,
            compression: self.compression,
        }
    }

    /// Splits into message, header metadata and trailer metadata.
    pub fn into_parts(self) -> (T, Metadata, Metadata) {
        (self.message, self.metadata, self.trailers)
    }
}

/// A message that chooses its own compression, for streams that decide per message (the
/// interop `server_compressed_streaming` case). A stream may yield plain messages, which use
/// the call's setting, or `Outgoing` values.
///
/// Compression still needs an encoding: on the server the one set with
/// [`Response::set_compression`] and accepted by the client, on the client the call's or the
/// endpoint's. Without one, `Outgoing::compressed` messages go out uncompressed.
#[derive(Debug, Clone)]
pub struct Outgoing<M> {
    message: M,
    compress: bool,
}

impl<M> Outgoing<M> {
    /// A message sent compressed (when an encoding is in force).
    pub fn compressed(message: M) -> Self {
        Self {
            message,
            compress: true,
        }
    }

    /// A message sent uncompressed whatever the call's setting.
    pub fn uncompressed(message: M) -> Self {
        Self {
            message,
            compress: false,
        }
    }
}

/// What a message stream may yield: a message `M` (compressed as the call says) or an
/// [`Outgoing<M>`] (compressed as it says).
pub trait IntoMessage<M>: Send {
    /// The message and its compression choice (`None`: the call's).
    fn into_message(self) -> (M, Option<bool>);
}

impl<M: prost::Message> IntoMessage<M> for M {
    fn into_message(self) -> (M, Option<bool>) {
        (self, None)
    }
}

impl<M: prost::Message> IntoMessage<M> for Outgoing<M> {
    fn into_message(self) -> (M, Option<bool>) {
        (self.message, Some(self.compress))
    }
}
