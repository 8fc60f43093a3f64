//! The test service and the server/channel helpers shared by the integration tests.
//!
//! Certificates are generated in memory for every server and never touch the disk.
#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{stream, StreamExt as _};
use satellite::{
    app::certs::{generate_in_memory, Pki, PkiOptions},
    grpc::{
        self,
        tls::{client_config, server_config, Identity, Roots},
        BidiStreaming, Channel, ClientStreaming, Code, Endpoint, Method, Request, Response, Router,
        ServerConfig, ServerStreaming, Status, Streaming, Transport, Unary,
    },
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const ECHO: Method<EchoRequest, EchoReply, Unary> = Method::unary("/test.Echo/Echo");
pub const SLEEP: Method<EchoRequest, EchoReply, Unary> = Method::unary("/test.Echo/Sleep");
pub const COUNT: Method<EchoRequest, EchoReply, ServerStreaming> =
    Method::server_streaming("/test.Echo/Count");
pub const SUM: Method<EchoRequest, EchoReply, ClientStreaming> =
    Method::client_streaming("/test.Echo/Sum");
pub const BIDI: Method<EchoRequest, EchoReply, BidiStreaming> =
    Method::bidi_streaming("/test.Echo/Bidi");

/// The interop `special_status_message` text.
pub const SPECIAL_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n";

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub index: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// The verified client certificate subject, if any.
    #[prost(string, tag = "4")]
    pub peer: String,
}

impl EchoRequest {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    pub fn stream(count: u32, delay_ms: u64) -> Self {
        Self {
            count,
            delay_ms,
            ..Self::default()
        }
    }

    pub fn sleep(delay_ms: u64) -> Self {
        Self {
            delay_ms,
            ..Self::default()
        }
    }
}

/// Counts handler futures and stream states that are alive.
#[derive(Clone, Debug, Default)]
pub struct Live(Arc<AtomicUsize>);

/// Held by a running handler; its drop proves the handler was dropped.
#[derive(Debug)]
pub struct LiveGuard(Arc<AtomicUsize>);

impl Live {
    pub fn enter(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        LiveGuard(self.0.clone())
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits until no handler is alive; false if some still are after `within`.
    pub async fn wait_zero(&self, within: Duration) -> bool {
        self.wait_for(within, |n| n == 0).await
    }

    /// Waits until the live count satisfies `ok`.
    pub async fn wait_for(&self, within: Duration, ok: impl Fn(usize) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if ok(self.get()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The test service: echo, sleeper, counter stream, client-streaming sum, bidi echo.
pub fn router(live: &Live, produced: &Arc<AtomicUsize>) -> Router {
    let (l1, l2, l3, l4, l5) = (
        live.clone(),
        live.clone(),
        live.clone(),
        live.clone(),
        live.clone(),
    );
    let produced = produced.clone();
    Router::new()
        .unary(&ECHO, move |req: Request<EchoRequest>| {
            let guard = l1.enter();
            async move {
                let _guard = guard;
                echo(req)
            }
        })
        .unary(&SLEEP, move |req: Request<EchoRequest>| {
            let guard = l2.enter();
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_millis(req.message().delay_ms)).await;
                Ok(Response::new(EchoReply {
                    text: req.into_inner().text,
                    ..EchoReply::default()
                }))
            }
        })
        .server_streaming(&COUNT, move |req: Request<EchoRequest>| {
            let guard = l3.enter();
            let produced = produced.clone();
            async move {
                let EchoRequest {
                    text,
                    count,
                    delay_ms,
                    payload,
                } = req.into_inner();
                // After `count` messages, text "status:<code>:<message>" ends the stream with
                // that status and "panic" panics inside the stream.
                let end = end_of_stream(&text);
                // The stream state carries the guard: the call stays live while it streams.
                let state = (guard, 0_u32);
                let replies = stream::unfold(state, move |(guard, i)| {
                    let payload = payload.clone();
                    let produced = produced.clone();
                    let end = end.clone();
                    async move {
                        if count != 0 && i == count {
                            return match end {
                                StreamEnd::Ok => None,
                                StreamEnd::Fail(status) => Some((Err(status), (guard, i + 1))),
                                StreamEnd::Panic => panic!("the test stream panics on request"),
                            };
                        }
                        if count != 0 && i > count {
                            return None;
                        }
                        if i > 0 && delay_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        }
                        produced.fetch_add(1, Ordering::SeqCst);
                        let reply = EchoReply {
                            index: i,
                            payload,
                            ..EchoReply::default()
                        };
                        Some((Ok::<_, Status>(reply), (guard, i + 1)))
                    }
                });
                Ok(Response::new(replies))
            }
        })
        .client_streaming(&SUM, move |req: Request<Streaming<EchoRequest>>| {
            let guard = l4.enter();
            async move {
                let _guard = guard;
                let mut requests = req.into_inner();
                let mut sum = 0_u32;
                let mut text = String::new();
                while let Some(m) = requests.message().await? {
                    sum += m.count;
                    text.push_str(&m.text);
                }
                Ok(Response::new(EchoReply {
                    text,
                    index: sum,
                    ..EchoReply::default()
                }))
            }
        })
        .bidi_streaming(&BIDI, move |req: Request<Streaming<EchoRequest>>| {
            let guard = l5.enter();
            async move {
                let requests = req.into_inner();
                let replies = requests.enumerate().map(move |(i, m)| {
                    let _held = &guard;
                    m.map(|m| EchoReply {
                        text: m.text,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        payload: m.payload,
                        ..EchoReply::default()
                    })
                });
                Ok(Response::new(replies))
            }
        })
}

#[derive(Clone)]
enum StreamEnd {
    Ok,
    Fail(Status),
    Panic,
}

fn end_of_stream(text: &str) -> StreamEnd {
    if text == "panic" {
        return StreamEnd::Panic;
    }
    match parse_status(text) {
        Some(status) => StreamEnd::Fail(status),
        None => StreamEnd::Ok,
    }
}

/// "status:<code>:<message>" as a status.
fn parse_status(text: &str) -> Option<Status> {
    let rest = text.strip_prefix("status:")?;
    let (code, message) = rest.split_once(':').unwrap_or((rest, ""));
    Some(Status::new(
        Code::from_i32(code.parse().unwrap_or(2)),
        message,
    ))
}

fn echo(req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
    let text = req.message().text.clone();
    if text == "panic" {
        panic!("the test handler panics on request");
    }
    if let Some(status) = parse_status(&text) {
        return Err(status);
    }
    let peer = req
        .peer()
        .and_then(|p| p.subject.clone())
        .unwrap_or_default();
    let mut response = Response::new(EchoReply {
        text,
        payload: req.message().payload.clone(),
        peer,
        ..EchoReply::default()
    });
    if let Some(v) = req.metadata().get("x-echo") {
        response.metadata_mut().insert("x-echo", v).unwrap();
    }
    if let Some(v) = req.metadata().get_bin("x-echo-bin") {
        response
            .trailers_mut()
            .insert_bin("x-echo-bin", &v)
            .unwrap();
    }
    Ok(response)
}

/// How the test server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    Plaintext,
    /// Server-authenticated TLS only: no client certificate asked for.
    Tls,
    Mtls,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub security: Security,
    pub pki: Pki,
    pub live: Live,
    /// Messages the counter stream has produced, over all calls.
    pub produced: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), grpc::Error>>,
}

impl TestServer {
    /// Starts graceful shutdown.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// A channel that suits this server (mTLS with the good client identity, or plaintext).
    pub async fn channel(&self) -> Channel {
        match self.security {
            Security::Plaintext => plaintext_channel(self.addr).await,
            Security::Tls => {
                let channel = tls_channel(self.addr, &self.roots(), None, "localhost");
                // Connect now, as the other arms do.
                echo_call(&channel, "connect").await.unwrap();
                channel
            }
            Security::Mtls => mtls_channel(self).await,
        }
    }

    pub fn client_identity(&self) -> Identity {
        Identity::from_pem(
            self.pki.client_cert.as_bytes(),
            self.pki.client_key.as_bytes(),
        )
        .unwrap()
    }

    pub fn roots(&self) -> Roots {
        Roots::from_pem(self.pki.ca_cert.as_bytes()).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub fn pki() -> Pki {
    generate_in_memory(&PkiOptions::valid_for(1).unwrap()).unwrap()
}

pub async fn start_server(security: Security) -> TestServer {
    start_server_with(security, |_| {}).await
}

pub async fn start_server_with(
    security: Security,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, security, configure)
}

/// Serves the test service on a listener the test bound (to restart on the same port).
pub fn serve_on(
    listener: TcpListener,
    security: Security,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let pki = pki();
    let transport = match security {
        Security::Plaintext => Transport::Plaintext,
        Security::Tls | Security::Mtls => {
            let identity =
                Identity::from_pem(pki.server_cert.as_bytes(), pki.server_key.as_bytes()).unwrap();
            let roots = Roots::from_pem(pki.ca_cert.as_bytes()).unwrap();
            let client_ca = (security == Security::Mtls).then_some(&roots);
            Transport::Tls(server_config(&identity, client_ca).unwrap())
        }
    };
    let mut config = ServerConfig::new(transport);
    configure(&mut config);
    let live = Live::default();
    let produced = Arc::new(AtomicUsize::new(0));
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let handle = tokio::spawn(grpc::run(
        listener,
        config,
        router(&live, &produced),
        shutdown,
    ));
    TestServer {
        addr,
        security,
        pki,
        live,
        produced,
        shutdown: Some(tx),
        handle,
    }
}

pub async fn plaintext_channel(addr: SocketAddr) -> Channel {
    bounded(Channel::connect(Endpoint::new(addr.to_string())))
        .await
        .unwrap()
}

pub async fn mtls_channel(server: &TestServer) -> Channel {
    let config = client_config(&server.roots(), Some(&server.client_identity())).unwrap();
    let endpoint = Endpoint::new(server.addr.to_string())
        .tls(config)
        .server_name("localhost");
    bounded(Channel::connect(endpoint)).await.unwrap()
}

/// A lazy TLS channel with any roots, identity and server name, for the handshake tests.
pub fn tls_channel(
    addr: SocketAddr,
    roots: &Roots,
    identity: Option<&Identity>,
    server_name: &str,
) -> Channel {
    let config = client_config(roots, identity).unwrap();
    let endpoint = Endpoint::new(addr.to_string())
        .tls(config)
        .server_name(server_name)
        .connect_timeout(Duration::from_secs(5));
    Channel::lazy(endpoint).unwrap()
}

/// A unary echo call.
pub async fn echo_call(channel: &Channel, text: &str) -> Result<EchoReply, Status> {
    bounded(channel.unary(&ECHO, Request::new(EchoRequest::text(text))))
        .await
        .map(Response::into_inner)
}

/// Awaits `f` for at most [`WAIT`], panicking on expiry.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("the test waited too long")
}

// ===== raw HTTP/2 peer =====

/// A raw h2 client over plaintext TCP, for scripted protocol tests.
pub async fn raw_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    raw_client_with(addr, h2::client::Builder::new()).await
}

pub async fn raw_client_with(
    addr: SocketAddr,
    builder: h2::client::Builder,
) -> h2::client::SendRequest<Bytes> {
    let tcp = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let (send, connection) = bounded(builder.handshake::<_, Bytes>(tcp)).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// A gRPC request head for `path` with the usual headers.
pub fn grpc_head(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A length-prefixed uncompressed message.
pub fn framed(msg: &impl prost::Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// What a raw call saw: the response head, the DATA bytes and the trailers.
#[derive(Debug)]
pub struct RawResponse {
    pub head: http::response::Parts,
    /// True when the head carried END_STREAM (Trailers-Only or a bare HTTP error).
    pub head_only: bool,
    pub data: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
}

impl RawResponse {
    /// grpc-status from the trailers, or from the head of a Trailers-Only response.
    pub fn grpc_status(&self) -> Option<i32> {
        let map = if self.head_only {
            &self.head.headers
        } else {
            self.trailers.as_ref()?
        };
        map.get("grpc-status")?.to_str().ok()?.parse().ok()
    }
}

/// Sends `head` and `body` (END_STREAM after the body when `end` is set) and reads the whole
/// response.
pub async fn raw_call(
    send: &mut h2::client::SendRequest<Bytes>,
    head: http::Request<()>,
    body: Bytes,
    end: bool,
) -> RawResponse {
    let mut ready = bounded(send.clone().ready()).await.unwrap();
    let (response, mut stream) = ready.send_request(head, false).unwrap();
    if !body.is_empty() || end {
        // The server may answer (Trailers-Only, then RST_STREAM NO_ERROR) from the head alone,
        // before the body goes out; then the body is refused, which is allowed.
        let _ = stream.send_data(body, end);
    }
    let response = bounded(response).await.unwrap();
    let (head, mut body) = response.into_parts();
    let head_only = body.is_end_stream();
    let mut data = Vec::new();
    while let Some(chunk) = bounded(body.data()).await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = bounded(body.trailers()).await.unwrap();
    drop(stream);
    RawResponse {
        head,
        head_only,
        data,
        trailers,
    }
}
