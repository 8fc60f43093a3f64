//! Async interceptors: logic that runs around every call of a router or a channel (a token
//! check, logging, metrics, an authorization rule), in the order they were added.
//!
//! Each interceptor sees the call's head before the handler (server) or before the request
//! leaves (client), may reject the call with a [`Status`], and is told how the call ended in a
//! [`CallSummary`]. With none installed nothing of this runs: no head is built, no clock is
//! read, nothing is counted.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::grpc::{compression::Encoding, metadata::Metadata, request::Peer, status::Status};

/// A boxed, sendable future borrowing for `'a`: what interceptor methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A server-side interceptor, added with [`Router::intercept`](crate::grpc::Router::intercept).
///
/// # Examples
///
/// A bearer-token check that answers `UNAUTHENTICATED` before the handler runs:
///
/// ```
/// use satellite::grpc::{BoxFuture, CallHead, Router, ServerInterceptor, Status};
///
/// struct RequireToken(String);
///
/// impl ServerInterceptor for RequireToken {
///     fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
///         Box::pin(async move {
///             let expected = format!("Bearer {}", self.0);
///             match head.metadata.get("authorization") {
///                 Some(value) if value == expected => Ok(()),
///                 _ => Err(Status::unauthenticated("a valid bearer token is required")),
///             }
///         })
///     }
/// }
///
/// let router = Router::new().intercept(RequireToken("s3cret".into()));
/// # let _ = router;
/// ```
pub trait ServerInterceptor: Send + Sync + 'static {
    /// Runs before the handler, under the call's deadline and cancellation. An error answers
    /// the call with that status and the handler never runs. It may change the request
    /// metadata and add response metadata ([`CallHead::response_metadata`]).
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>>;

    /// Told how the call ended, once, whatever the ending (also when `before` rejected it).
    fn after(&self, summary: &CallSummary<'_>) {
        let _ = summary;
    }
}

/// A client-side interceptor, added with
/// [`Channel::intercept`](crate::grpc::Channel::intercept).
///
/// # Examples
///
/// Adds a bearer token to every call:
///
/// ```
/// use satellite::grpc::{BoxFuture, Channel, ClientCallHead, ClientInterceptor, Endpoint, Status};
///
/// struct BearerToken(String);
///
/// impl ClientInterceptor for BearerToken {
///     fn before<'a>(&'a self, head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>> {
///         Box::pin(async move {
///             head.metadata
///                 .insert("authorization", &format!("Bearer {}", self.0))
///                 .map_err(|e| Status::internal(e.to_string()))
///         })
///     }
/// }
///
/// let channel = Channel::lazy(Endpoint::new("127.0.0.1:50051"))
///     .unwrap()
///     .intercept(BearerToken("s3cret".into()));
/// # let _ = channel;
/// ```
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Runs before the request is sent; an error fails the call with that status and nothing
    /// is sent. It may change the metadata and the timeout.
    fn before<'a>(&'a self, head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>>;

    /// Told how the call ended, once (for streaming responses: when the stream ends or is
    /// dropped).
    fn after(&self, summary: &CallSummary<'_>) {
        let _ = summary;
    }

    /// An attempt of the call began: the first, a retry, or a transparent retry (gRFC A6).
    fn attempt_started(&self, method: &str) {
        let _ = method;
    }

    /// An attempt ended, with its own status, duration and message counts; the last attempt
    /// ends with the call.
    fn attempt_ended(&self, summary: &CallSummary<'_>) {
        let _ = summary;
    }
}

/// The head of a server-side call, as interceptors see it before the handler.
#[derive(Debug)]
pub struct CallHead {
    pub(crate) uri: http::Uri,
    /// The request metadata; an interceptor may change what the handler sees (strip a token).
    pub metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
    pub(crate) peer: Arc<Peer>,
    /// Response header metadata to send with the handler's (or with a refusal).
    pub response_metadata: Metadata,
    /// The request messages' encoding (`grpc-encoding`).
    pub(crate) encoding: Option<Encoding>,
    /// What the client can decode (`grpc-accept-encoding`), for response compression.
    pub(crate) accept: Option<http::HeaderValue>,
}

impl CallHead {
    /// The full method path, `/package.Service/Method`.
    pub fn method(&self) -> &str {
        self.uri.path()
    }

    /// The peer: socket address and the verified client certificate's subject.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The deadline from the caller's `grpc-timeout`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// The head of a client-side call, as interceptors see it before it is sent.
#[derive(Debug)]
pub struct ClientCallHead {
    pub(crate) method: &'static str,
    /// The request metadata, to add entries (a token, a trace id).
    pub metadata: Metadata,
    /// The call's timeout (sent as `grpc-timeout` and enforced locally).
    pub timeout: Option<Duration>,
}

impl ClientCallHead {
    /// The full method path, `/package.Service/Method`.
    pub fn method(&self) -> &str {
        self.method
    }
}

/// How a call ended: its status, how long it took, and what went each way.
#[derive(Debug)]
#[non_exhaustive]
pub struct CallSummary<'a> {
    /// The full method path.
    pub method: &'a str,
    /// The final status (`CANCELLED` when the peer went away).
    pub status: &'a Status,
    /// From the call's start (head received, or call begun) to its end.
    pub elapsed: Duration,
    /// Messages received (requests on the server, responses on the client).
    pub messages_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Payload bytes received, as framed on the wire (compressed size), prefixes excluded.
    pub bytes_received: u64,
    /// Payload bytes sent, as framed on the wire, prefixes excluded.
    pub bytes_sent: u64,
}

impl<'a> CallSummary<'a> {
    /// A call's summary; `received` and `sent` are (messages, payload bytes).
    pub(crate) fn new(
        method: &'a str,
        status: &'a Status,
        started: std::time::Instant,
        (messages_received, bytes_received): (u64, u64),
        (messages_sent, bytes_sent): (u64, u64),
    ) -> Self {
        Self {
            method,
            status,
            elapsed: started.elapsed(),
            messages_received,
            messages_sent,
            bytes_received,
            bytes_sent,
        }
    }
}

/// An ordered, shareable list of interceptors; empty costs nothing per call.
pub(crate) type Chain<I> = Arc<[Arc<I>]>;

/// `chain` with `interceptor` appended.
pub(crate) fn append<I: ?Sized>(chain: &Chain<I>, interceptor: Arc<I>) -> Chain<I> {
    chain.iter().cloned().chain([interceptor]).collect()
}
