//! `/package.Service/Method` -> one erased handler type, registered at run time without
//! codegen, and the router's interceptor chain.
//!
//! Types are erased here, once per call: registration wraps the user's async function in a
//! closure that decodes the request (the one payload that `call.rs` read, or the stream),
//! calls it, and hands back the response messages as an erased [`MessageSource`]. Everything
//! that drives the call (`call.rs`) is concrete.

use std::{collections::HashMap, fmt, future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use futures_core::Stream;

use crate::grpc::{
    codec,
    error::{Side, WireError},
    intercept::{self, Chain, ServerInterceptor},
    method::{BidiStreaming, ClientStreaming, Method, ServerStreaming, Unary},
    recv::{RecvBody, Streaming},
    request::{IntoMessage, Request, RequestHead, Response},
    send::{MessageSource, Source},
    status::Status,
};

/// A boxed future, the allocation a call costs for type erasure.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The response messages of a call, their type erased.
pub(crate) type BoxSource = Pin<Box<dyn MessageSource>>;

/// What a handler answers: the response head and its messages, or the call's status.
pub(crate) type Reply = Result<Response<BoxSource>, Status>;

/// The one erased handler type: the request side of a call in, the reply out. A method with
/// one request message takes its payload, read by `call.rs`; the others take the stream.
#[derive(Clone)]
pub(crate) enum Handler {
    One(Arc<dyn Fn(Bytes, RequestHead) -> BoxFuture<Reply> + Send + Sync>),
    Stream(Arc<dyn Fn(RecvBody, RequestHead) -> BoxFuture<Reply> + Send + Sync>),
}

/// The routing table (full method path to handler) and the interceptors that run before every
/// handler.
///
/// # Examples
///
/// ```
/// use satellite::grpc::{Method, Request, Response, Router, Status, Unary};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Ping {
///     #[prost(string, tag = "1")]
///     text: String,
/// }
///
/// const ECHO: Method<Ping, Ping, Unary> = Method::unary("/demo.Echo/Echo");
///
/// let router = Router::new().unary(&ECHO, |request: Request<Ping>| async move {
///     Ok::<_, Status>(Response::new(request.into_inner()))
/// });
/// # let _ = router;
/// ```
///
/// A handler whose kind does not match the method does not compile:
///
/// ```compile_fail,E0308
/// # use satellite::grpc::{Method, Request, Response, Router, ServerStreaming, Status};
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # struct Ping {}
/// const WATCH: Method<Ping, Ping, ServerStreaming> = Method::server_streaming("/demo.Echo/Watch");
/// let router = Router::new().unary(&WATCH, |request: Request<Ping>| async move {
///     Ok::<_, Status>(Response::new(request.into_inner()))
/// });
/// ```
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<String, Handler>,
    interceptors: Chain<dyn ServerInterceptor>,
}

impl Router {
    /// An empty router: every call is UNIMPLEMENTED.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a unary method: one request message in, one response message out.
    pub fn unary<Req, Resp, F, Fut>(self, method: &Method<Req, Resp, Unary>, f: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        // A server-streaming call whose response is one message.
        let method = Method::<Req, Resp, ServerStreaming>::server_streaming(method.path());
        self.server_streaming(&method, move |request| {
            let response = f(request);
            async move { Ok(response.await?.map(once)) }
        })
    }

    /// Registers a server-streaming method: one request in, a stream of responses out. The
    /// stream may yield `Resp` or [`Outgoing<Resp>`](crate::grpc::Outgoing) (compression per
    /// message).
    pub fn server_streaming<Req, Resp, S, T, F, Fut>(
        self,
        method: &Method<Req, Resp, ServerStreaming>,
        f: F,
    ) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        S: Stream<Item = Result<T, Status>> + Send + 'static,
        T: IntoMessage<Resp> + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<S>, Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler = move |payload: Bytes, head| -> BoxFuture<Reply> {
            let f = f.clone();
            Box::pin(async move {
                let message = codec::decode::<Req>(payload)
                    .map_err(|e| WireError::Decode(e).into_status(Side::Server))?;
                let response = f(Request::from_server(message, head)).await?;
                Ok(response.map(many::<S, T, Resp>))
            })
        };
        self.route(method.path(), Handler::One(Arc::new(handler)))
    }

    /// Registers a client-streaming method: a stream of requests in, one response out.
    pub fn client_streaming<Req, Resp, F, Fut>(
        self,
        method: &Method<Req, Resp, ClientStreaming>,
        f: F,
    ) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        // A bidirectional call whose response is one message.
        let method = Method::<Req, Resp, BidiStreaming>::bidi_streaming(method.path());
        self.bidi_streaming(&method, move |request| {
            let response = f(request);
            async move { Ok(response.await?.map(once)) }
        })
    }

    /// Registers a bidirectional-streaming method: streams both ways.
    pub fn bidi_streaming<Req, Resp, S, T, F, Fut>(
        self,
        method: &Method<Req, Resp, BidiStreaming>,
        f: F,
    ) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        S: Stream<Item = Result<T, Status>> + Send + 'static,
        T: IntoMessage<Resp> + 'static,
        F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<S>, Status>> + Send + 'static,
    {
        let handler = move |body, head| -> BoxFuture<Reply> {
            let response = f(Request::from_server(Streaming::<Req>::new(body), head));
            Box::pin(async move { Ok(response.await?.map(many::<S, T, Resp>)) })
        };
        self.route(method.path(), Handler::Stream(Arc::new(handler)))
    }

    /// Adds an interceptor; interceptors run in the order they were added, before every
    /// handler of this router.
    pub fn intercept(mut self, interceptor: impl ServerInterceptor) -> Self {
        self.interceptors = intercept::append(&self.interceptors, Arc::new(interceptor));
        self
    }

    /// Adds every route of `other` (a second service on the same server), and its
    /// interceptors after this router's; the chain then runs for every route.
    pub fn merge(mut self, other: Self) -> Self {
        self.routes.extend(other.routes);
        let chain = self.interceptors.iter().chain(other.interceptors.iter());
        self.interceptors = chain.cloned().collect();
        self
    }

    fn route(mut self, path: &str, handler: Handler) -> Self {
        self.routes.insert(path.to_owned(), handler);
        self
    }

    /// The handler of `path`, or the UNIMPLEMENTED status that says whether the method or the
    /// whole service is unknown.
    pub(crate) fn handler(&self, path: &str) -> Result<&Handler, Status> {
        if let Some(handler) = self.routes.get(path) {
            return Ok(handler);
        }
        let service = service_of(path);
        let known_service =
            !service.is_empty() && self.routes.keys().any(|k| service_of(k) == service);
        Err(if known_service {
            Status::unimplemented(format!("unknown method {path}"))
        } else {
            Status::unimplemented(format!("unknown service for path {path}"))
        })
    }

    /// The interceptor chain, `None` when empty: a call then shares nothing with the router.
    pub(crate) fn interceptors(&self) -> Option<&Chain<dyn ServerInterceptor>> {
        (!self.interceptors.is_empty()).then_some(&self.interceptors)
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut paths: Vec<_> = self.routes.keys().collect();
        paths.sort();
        f.debug_struct("Router")
            .field("routes", &paths)
            .field("interceptors", &self.interceptors.len())
            .finish()
    }
}

fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .rsplit_once('/')
        .map_or("", |(s, _)| s)
}

/// One response message as a stream.
fn once<M>(message: M) -> futures_util::stream::Once<std::future::Ready<Result<M, Status>>> {
    futures_util::stream::once(std::future::ready(Ok(message)))
}

/// A response stream as an erased source.
fn many<S, T, M>(stream: S) -> BoxSource
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
    T: IntoMessage<M> + 'static,
    M: prost::Message + 'static,
{
    Box::pin(Source::<S, M>::new(stream))
}
