//! The channel: a target's subchannels behind a balancer, the service config, and the
//! retry throttle, shared by every call and every clone.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_core::Stream;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use tokio::time::Instant;

use crate::grpc::{
    client::{
        endpoint::Endpoint,
        pool::Pool,
        resolve::{Address, Target},
        retry::Throttle,
        service_config::{LbPolicy, MethodConfig},
        subchannel::{ConnectivityState, Dialer, HealthWatch},
    },
    error::Error,
    health::{pb::health_check_response::ServingStatus, pb::HealthCheckRequest, WATCH},
    intercept::{self, Chain, ClientInterceptor},
    request::Request,
    status::Code,
};

/// A cheap-to-clone handle for calls to a target: its addresses from a resolver, one HTTP/2
/// connection per address, calls spread by `pick_first` (the default) or `round_robin`, and
/// retried as the service config says. Connections are made on the first call.
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
    pub(crate) picker: Picker,
    pub(crate) throttle: Option<Throttle>,
}

/// Where a call's connection comes from.
#[derive(Debug)]
pub(crate) enum Picker {
    /// The balancer over the target's addresses.
    Pool(Arc<Pool>),
    /// One given connection: a subchannel's own health watch.
    Fixed(SendRequest<Bytes>),
}

impl Channel {
    /// A channel that connects on its first call.
    ///
    /// # Errors
    /// A configuration error when the target does not parse or names an invalid authority.
    pub fn lazy(mut endpoint: Endpoint) -> Result<Self, Error> {
        let target = match &endpoint.resolver {
            Some(resolver) => Target::custom(resolver.clone(), endpoint.addr.clone()),
            None => Target::parse(&endpoint.addr)?,
        };
        let authority: Authority = target.authority.parse().map_err(|e| {
            Error::config(format!("invalid authority {:?}", target.authority)).with(e)
        })?;
        if let (true, Some(tls)) = (endpoint.tls_key_log, &mut endpoint.tls) {
            Arc::make_mut(tls).key_log = Arc::new(rustls::KeyLogFile::new());
        }
        let scheme = if endpoint.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let config = endpoint.service_config.as_ref();
        let policy = endpoint
            .lb_policy
            .or(config.and_then(|c| c.lb_policy))
            .unwrap_or_default();
        let health_service = config.and_then(|c| c.health_service.clone());
        let health = match (health_service, policy) {
            (Some(service), LbPolicy::RoundRobin) => {
                Some((service, Arc::new(WatchCalls) as Arc<dyn HealthWatch>))
            }
            (Some(_), LbPolicy::PickFirst) => {
                // A17: pick_first does not health-check; say so rather than ignore it quietly.
                tracing::warn!("healthCheckConfig is ignored under pick_first (gRFC A17)");
                None
            }
            (None, _) => None,
        };
        let dialer = Dialer {
            tls: endpoint.tls.clone(),
            server_name: endpoint
                .server_name
                .clone()
                .unwrap_or_else(|| target.host().to_owned()),
            handshake_timeout: endpoint.connect_timeout,
            backoff: endpoint.backoff,
            health,
        };
        let throttle = config
            .and_then(|c| c.throttling)
            .map(|(max, ratio)| Throttle::new(max, ratio));
        let pool = Pool::new(
            endpoint.addr.clone(),
            target.resolver,
            policy,
            dialer,
            endpoint.min_resolve_interval,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                scheme,
                authority,
                picker: Picker::Pool(pool),
                throttle,
            }),
            interceptors: Arc::new([]),
        })
    }

    /// A channel over one given connection, for a subchannel's health watch.
    fn fixed(send: SendRequest<Bytes>) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint: Endpoint::new("health"),
                scheme: Scheme::HTTP,
                authority: Authority::from_static("localhost"),
                picker: Picker::Fixed(send),
                throttle: None,
            }),
            interceptors: Arc::new([]),
        }
    }

    /// This channel, sharing its connections, with `interceptor` added after those it has;
    /// interceptors run in the order they were added, around every call.
    pub fn intercept(mut self, interceptor: impl ClientInterceptor) -> Self {
        self.interceptors = intercept::append(&self.interceptors, Arc::new(interceptor));
        self
    }

    /// A channel with a connection READY now (within the endpoint's first connection
    /// attempt).
    ///
    /// # Errors
    /// The target's configuration error, or UNAVAILABLE naming why no address connected.
    pub async fn connect(endpoint: Endpoint) -> Result<Self, Error> {
        let deadline = Instant::now() + endpoint.backoff.min_connect_timeout;
        let channel = Self::lazy(endpoint)?;
        if let Picker::Pool(pool) = &channel.inner.picker {
            pool.pick(false, Some(deadline))
                .await
                .map_err(|status| Error::unavailable(status.message().to_owned()))?;
        }
        Ok(channel)
    }

    /// The channel's connectivity state: IDLE before its first call, then READY when a call
    /// could go out now, CONNECTING, or TRANSIENT_FAILURE when every address has failed.
    pub fn state(&self) -> ConnectivityState {
        match &self.inner.picker {
            Picker::Pool(pool) => pool.state(),
            Picker::Fixed(_) => ConnectivityState::Ready,
        }
    }

    /// Waits until the state differs from `last`, or `timeout` passes; returns the state
    /// then. Leaves IDLE (starts connecting) as a call would.
    pub async fn wait_for_state_change(
        &self,
        last: ConnectivityState,
        timeout: Duration,
    ) -> ConnectivityState {
        let Picker::Pool(pool) = &self.inner.picker else {
            return ConnectivityState::Ready;
        };
        pool.start();
        let deadline = Instant::now() + timeout;
        loop {
            let changed = pool.changed();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let now = pool.state();
            if now != last {
                return now;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return pool.state();
            }
        }
    }

    /// Each resolved address and its subchannel's state, in the resolver's order.
    pub fn subchannel_states(&self) -> Vec<(Address, ConnectivityState)> {
        match &self.inner.picker {
            Picker::Pool(pool) => pool.subchannel_states(),
            Picker::Fixed(_) => Vec::new(),
        }
    }

    /// What the service config says of the method at `path`.
    pub(crate) fn method_config(&self, path: &str) -> Option<&Arc<MethodConfig>> {
        self.inner.endpoint.service_config.as_ref()?.method(path)
    }
}

/// The health watch of gRFC A17, made with this crate's own client calls over the
/// subchannel's connection.
struct WatchCalls;

impl HealthWatch for WatchCalls {
    fn watch(
        &self,
        send: SendRequest<Bytes>,
        service: String,
    ) -> std::pin::Pin<Box<dyn Stream<Item = Result<Option<bool>, String>> + Send>> {
        let channel = Channel::fixed(send);
        Box::pin(async_stream(channel, service))
    }
}

/// The Watch call as a stream of "serving or not", `None` once for UNIMPLEMENTED.
fn async_stream(
    channel: Channel,
    service: String,
) -> impl Stream<Item = Result<Option<bool>, String>> + Send {
    futures_util::stream::unfold(
        (channel, Some(service), None),
        |(channel, service, stream)| async move {
            let mut stream = match (service, stream) {
                (Some(service), _) => {
                    let request = Request::new(HealthCheckRequest { service });
                    match channel.server_streaming(&WATCH, request).await {
                        Ok(response) => response.into_inner(),
                        Err(status) if status.code() == Code::Unimplemented => {
                            return Some((Ok(None), (channel, None, None)));
                        }
                        Err(status) => {
                            return Some((Err(status.to_string()), (channel, None, None)))
                        }
                    }
                }
                (None, Some(stream)) => stream,
                (None, None) => return None,
            };
            match stream.message().await {
                Ok(Some(reply)) => {
                    let serving = reply.status() == ServingStatus::Serving;
                    Some((Ok(Some(serving)), (channel, None, Some(stream))))
                }
                Ok(None) => Some((Err("the watch ended".into()), (channel, None, None))),
                Err(status) => Some((Err(status.to_string()), (channel, None, None))),
            }
        },
    )
}
