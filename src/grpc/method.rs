//! Typed method descriptors: a path, its message types and its call kind, declared once and
//! taken by both [`Router`](crate::grpc::Router) and [`Channel`](crate::grpc::Channel).
//!
//! The kind is a type parameter, so registering a unary handler for a streaming method, or
//! calling a method with the wrong message types, is a compile error rather than an `INTERNAL`
//! status at run time.

use std::{fmt, marker::PhantomData};

/// One request message, one response message.
#[derive(Debug, Clone, Copy)]
pub enum Unary {}
/// One request message, a stream of responses.
#[derive(Debug, Clone, Copy)]
pub enum ServerStreaming {}
/// A stream of requests, one response message.
#[derive(Debug, Clone, Copy)]
pub enum ClientStreaming {}
/// Streams both ways.
#[derive(Debug, Clone, Copy)]
pub enum BidiStreaming {}

/// A gRPC method: its full path (`/package.Service/Method`), request and response message
/// types, and call kind `K` ([`Unary`], [`ServerStreaming`], [`ClientStreaming`] or
/// [`BidiStreaming`]).
///
/// # Examples
///
/// ```
/// use satellite::grpc::{Method, Unary};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Ping {
///     #[prost(string, tag = "1")]
///     text: String,
/// }
///
/// /// Declared once, beside the service; server and client both use it.
/// const ECHO: Method<Ping, Ping, Unary> = Method::unary("/demo.Echo/Echo");
/// assert_eq!(ECHO.path(), "/demo.Echo/Echo");
///
/// // A path known only at run time (a proxy's or the interop server's routes, made once at
/// // start) is leaked once: no call leaks anything, and a method stays a plain `Copy` value
/// // whose `&ECHO` is `'static`, so a call future may outlive the statement that made it.
/// let path: &'static str = format!("/demo.{}/Echo", "Echo").leak();
/// let dynamic: Method<Ping, Ping, Unary> = Method::unary(path);
/// assert_eq!(dynamic.path(), ECHO.path());
/// ```
pub struct Method<Req, Resp, K> {
    path: &'static str,
    _types: PhantomData<fn(Req) -> (Resp, K)>,
}

impl<Req, Resp, K> Method<Req, Resp, K> {
    const fn at(path: &'static str) -> Self {
        Self {
            path,
            _types: PhantomData,
        }
    }

    /// The full method path, `/package.Service/Method`.
    pub const fn path(&self) -> &'static str {
        self.path
    }
}

impl<Req, Resp> Method<Req, Resp, Unary> {
    /// A unary method at a static path.
    pub const fn unary(path: &'static str) -> Self {
        Self::at(path)
    }
}

impl<Req, Resp> Method<Req, Resp, ServerStreaming> {
    /// A server-streaming method at a static path.
    pub const fn server_streaming(path: &'static str) -> Self {
        Self::at(path)
    }
}

impl<Req, Resp> Method<Req, Resp, ClientStreaming> {
    /// A client-streaming method at a static path.
    pub const fn client_streaming(path: &'static str) -> Self {
        Self::at(path)
    }
}

impl<Req, Resp> Method<Req, Resp, BidiStreaming> {
    /// A bidirectional-streaming method at a static path.
    pub const fn bidi_streaming(path: &'static str) -> Self {
        Self::at(path)
    }
}

impl<Req, Resp, K> Clone for Method<Req, Resp, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp, K> Copy for Method<Req, Resp, K> {}

impl<Req, Resp, K> fmt::Debug for Method<Req, Resp, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Method").field(&self.path).finish()
    }
}
