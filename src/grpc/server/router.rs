//! `/package.Service/Method` -> a type-erased handler, registered at run time without codegen.
//!
//! Types are erased here, once per call: each registration wraps the user's async function in an
//! adapter that knows its request and response types and drives the whole call (read, run,
//! write). Everything below the router is concrete.

use std::{collections::HashMap, fmt, future::Future, marker::PhantomData, pin::Pin, sync::Arc};

use futures_core::Stream;

use crate::grpc::{
    recv::Streaming,
    request::{Request, Response},
    server::call::{self, CallParts},
    status::Status,
};

/// A boxed future, the one allocation a call costs for type erasure.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An adapter that drives one call of a registered method.
pub(crate) trait Handler: Send + Sync + 'static {
    fn call(&self, parts: CallParts) -> BoxFuture;
}

/// The routing table: full method path to handler.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<String, Arc<dyn Handler>>,
}

impl Router {
    /// An empty router: every call is UNIMPLEMENTED.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a unary method: one request message in, one response message out.
    ///
    /// `path` is the full method path, `/package.Service/Method`.
    pub fn unary<Req, Resp, F, Fut>(self, path: &str, f: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        self.route(path, Unary(Arc::new(f), PhantomData))
    }

    /// Registers a server-streaming method: one request in, a stream of responses out.
    pub fn server_streaming<Req, Resp, S, F, Fut>(self, path: &str, f: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        S: Stream<Item = Result<Resp, Status>> + Send + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<S>, Status>> + Send + 'static,
    {
        self.route(path, ServerStreaming(Arc::new(f), PhantomData))
    }

    /// Registers a client-streaming method: a stream of requests in, one response out.
    pub fn client_streaming<Req, Resp, F, Fut>(self, path: &str, f: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        self.route(path, ClientStreaming(Arc::new(f), PhantomData))
    }

    /// Registers a bidirectional-streaming method: streams both ways.
    pub fn bidi_streaming<Req, Resp, S, F, Fut>(self, path: &str, f: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        S: Stream<Item = Result<Resp, Status>> + Send + 'static,
        F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<S>, Status>> + Send + 'static,
    {
        self.route(path, Bidi(Arc::new(f), PhantomData))
    }

    /// Adds every route of `other` (a second service on the same server).
    pub fn merge(mut self, other: Self) -> Self {
        self.routes.extend(other.routes);
        self
    }

    fn route(mut self, path: &str, handler: impl Handler) -> Self {
        self.routes.insert(path.to_owned(), Arc::new(handler));
        self
    }

    pub(crate) fn lookup(&self, path: &str) -> Option<&Arc<dyn Handler>> {
        self.routes.get(path)
    }

    /// True when some method of the service named in `path` is registered (so an unknown
    /// method can be told apart from an unknown service).
    pub(crate) fn has_service_of(&self, path: &str) -> bool {
        let service = service_of(path);
        !service.is_empty() && self.routes.keys().any(|k| service_of(k) == service)
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut paths: Vec<_> = self.routes.keys().collect();
        paths.sort();
        f.debug_struct("Router").field("routes", &paths).finish()
    }
}

fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .rsplit_once('/')
        .map_or("", |(s, _)| s)
}

// ===== adapters =====

/// The type parameters of an adapter that only the handler's signature mentions; `fn` keeps
/// the adapter `Send + Sync` whatever they are.
type Signature<Req, Resp, Fut> = PhantomData<fn(Req) -> (Resp, Fut)>;

struct Unary<F, Req, Resp, Fut>(Arc<F>, Signature<Req, Resp, Fut>);
struct ServerStreaming<F, Req, Resp, Fut>(Arc<F>, Signature<Req, Resp, Fut>);
struct ClientStreaming<F, Req, Resp, Fut>(Arc<F>, Signature<Req, Resp, Fut>);
struct Bidi<F, Req, Resp, Fut>(Arc<F>, Signature<Req, Resp, Fut>);

impl<Req, Resp, F, Fut> Handler for Unary<F, Req, Resp, Fut>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    fn call(&self, parts: CallParts) -> BoxFuture {
        let f = self.0.clone();
        Box::pin(call::unary(parts, move |req| f(req)))
    }
}

impl<Req, Resp, S, F, Fut> Handler for ServerStreaming<F, Req, (Resp, S), Fut>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<S>, Status>> + Send + 'static,
{
    fn call(&self, parts: CallParts) -> BoxFuture {
        let f = self.0.clone();
        Box::pin(call::server_streaming(parts, move |req| f(req)))
    }
}

impl<Req, Resp, F, Fut> Handler for ClientStreaming<F, Req, Resp, Fut>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    fn call(&self, parts: CallParts) -> BoxFuture {
        let f = self.0.clone();
        Box::pin(call::client_streaming(parts, move |req| f(req)))
    }
}

impl<Req, Resp, S, F, Fut> Handler for Bidi<F, Req, (Resp, S), Fut>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<S>, Status>> + Send + 'static,
{
    fn call(&self, parts: CallParts) -> BoxFuture {
        let f = self.0.clone();
        Box::pin(call::bidi(parts, move |req| f(req)))
    }
}
