//! Interceptors on both sides, the first-poll choice, and compression per message: what the
//! library issue (typed methods, async interceptors, one-way path) promises a service author.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use satellite::grpc::{
    BoxFuture, CallHead, CallSummary, Channel, ClientCallHead, ClientInterceptor, ClientStreaming,
    Code, Encoding, Endpoint, Method, Outgoing, Request, Response, Router, ServerConfig,
    ServerInterceptor, ServerStreaming, Status, Streaming, Transport, Unary,
};
use tokio::net::TcpListener;

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

fn msg(text: &str) -> Msg {
    Msg { text: text.into() }
}

const ECHO: Method<Msg, Msg, Unary> = Method::unary("/t.I/Echo");
const FAIL: Method<Msg, Msg, Unary> = Method::unary("/t.I/Fail");
const COUNT: Method<Msg, Msg, ServerStreaming> = Method::server_streaming("/t.I/Count");
const BLOCK: Method<Msg, Msg, Unary> = Method::unary("/t.I/Block");
const RELEASE: Method<Msg, Msg, Unary> = Method::unary("/t.I/Release");
const MIXED: Method<Msg, Msg, ServerStreaming> = Method::server_streaming("/t.I/Mixed");
const SUM: Method<Msg, Msg, ClientStreaming> = Method::client_streaming("/t.I/Sum");

/// What the server's handlers did, for tests to check.
#[derive(Default)]
struct Seen {
    handled: AtomicUsize,
    token: Mutex<Option<String>>,
}

fn router(seen: &Arc<Seen>) -> Router {
    let echo = seen.clone();
    let count = seen.clone();
    Router::new()
        .unary(&ECHO, move |req: Request<Msg>| {
            echo.handled.fetch_add(1, Ordering::SeqCst);
            *echo.token.lock().unwrap() = req.metadata().get("authorization").map(str::to_owned);
            async move { Ok(Response::new(req.into_inner())) }
        })
        .unary(&FAIL, |_req: Request<Msg>| async move {
            Err::<Response<Msg>, _>(Status::out_of_range("off the map"))
        })
        .server_streaming(&COUNT, move |req: Request<Msg>| {
            count.handled.fetch_add(1, Ordering::SeqCst);
            let n: usize = req.message().text.parse().unwrap_or(0);
            async move {
                Ok(Response::new(futures_util::stream::iter(
                    (0..n).map(|i| Ok::<_, Status>(msg(&i.to_string()))),
                )))
            }
        })
}

async fn serve(
    router: Router,
    config: ServerConfig,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(satellite::grpc::run(listener, config, router, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::lazy(Endpoint::new(addr.to_string())).unwrap()
}

/// Records its name in `order` before each call and the summary after it; rejects calls
/// without `authorization` when `require_token`.
struct Recorder {
    name: &'static str,
    require_token: bool,
    order: Arc<Mutex<Vec<String>>>,
    ended: Ended,
}

impl Recorder {
    fn record(&self, summary: &CallSummary<'_>) {
        self.ended.lock().unwrap().push((
            summary.method.to_owned(),
            summary.status.code(),
            summary.messages_received,
            summary.messages_sent,
            summary.bytes_received,
        ));
    }
}

impl ServerInterceptor for Recorder {
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            // An await that really waits: the chain is async.
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.order
                .lock()
                .unwrap()
                .push(format!("{} {}", self.name, head.method()));
            head.response_metadata
                .append("x-seen-by", self.name)
                .unwrap();
            if self.require_token && head.metadata.get("authorization").is_none() {
                return Err(Status::unauthenticated("no token"));
            }
            Ok(())
        })
    }

    fn after(&self, summary: &CallSummary<'_>) {
        self.record(summary);
    }
}

impl ClientInterceptor for Recorder {
    fn before<'a>(&'a self, head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            self.order
                .lock()
                .unwrap()
                .push(format!("{} {}", self.name, head.method()));
            if self.require_token {
                head.metadata.insert("authorization", "Bearer t").unwrap();
            }
            Ok(())
        })
    }

    fn after(&self, summary: &CallSummary<'_>) {
        self.record(summary);
    }
}

type Ended = Arc<Mutex<Vec<(String, Code, u64, u64, u64)>>>;

fn recorder(name: &'static str, require_token: bool) -> (Recorder, Arc<Mutex<Vec<String>>>, Ended) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(Mutex::new(Vec::new()));
    (
        Recorder {
            name,
            require_token,
            order: order.clone(),
            ended: ended.clone(),
        },
        order,
        ended,
    )
}

/// Waits until `ended` holds `n` entries (the server reports after the response is out).
async fn wait_for(ended: &Ended, n: usize) {
    for _ in 0..500 {
        if ended.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("only {} summaries arrived", ended.lock().unwrap().len());
}

#[tokio::test]
async fn server_interceptors_run_in_order_and_refuse_before_the_handler() {
    let seen = Arc::new(Seen::default());
    let (first, order, first_ended) = recorder("first", false);
    let (second, _, _) = recorder("second", true);
    let second = Recorder {
        order: order.clone(),
        ..second
    };
    let router = router(&seen).intercept(first).intercept(second);
    let (addr, _stop) = serve(router, ServerConfig::new(Transport::Plaintext)).await;
    let channel = channel(addr);

    let refused = channel
        .unary(&ECHO, Request::new(msg("x")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "no token");
    assert_eq!(seen.handled.load(Ordering::SeqCst), 0, "the handler ran");
    assert_eq!(
        *order.lock().unwrap(),
        ["first /t.I/Echo", "second /t.I/Echo"]
    );

    let mut request = Request::new(msg("hi"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer t")
        .unwrap();
    let reply = channel.unary(&ECHO, request).await.unwrap();
    assert_eq!(reply.message().text, "hi");
    assert_eq!(seen.handled.load(Ordering::SeqCst), 1);
    // Response metadata added by the interceptors arrives, in their order.
    assert_eq!(
        reply.metadata().get_all("x-seen-by"),
        ["first", "second"],
        "{:?}",
        reply.metadata()
    );

    // The summaries: the refusal, then the call (1 request in, 1 response out).
    wait_for(&first_ended, 2).await;
    let ended = first_ended.lock().unwrap().clone();
    assert_eq!(ended[0].1, Code::Unauthenticated);
    assert_eq!((ended[1].1, ended[1].2, ended[1].3), (Code::Ok, 1, 1));
    assert!(ended[1].4 > 0, "no request bytes counted");
}

#[tokio::test]
async fn server_summaries_tell_how_each_call_ended() {
    let seen = Arc::new(Seen::default());
    let (rec, _, ended) = recorder("rec", false);
    let (addr, _stop) = serve(
        router(&seen).intercept(rec),
        ServerConfig::new(Transport::Plaintext),
    )
    .await;
    let channel = channel(addr);

    let failed = channel
        .unary(&FAIL, Request::new(msg("")))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::OutOfRange);
    wait_for(&ended, 1).await;

    let mut stream = channel
        .server_streaming(&COUNT, Request::new(msg("5")))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
    wait_for(&ended, 2).await;

    // A stream cancelled by the client after its first message.
    let mut stream = channel
        .server_streaming(&COUNT, Request::new(msg("1000000")))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    drop(stream);
    wait_for(&ended, 3).await;

    let ended = ended.lock().unwrap().clone();
    assert_eq!(
        (ended[0].0.as_str(), ended[0].1),
        ("/t.I/Fail", Code::OutOfRange)
    );
    assert_eq!((ended[1].1, ended[1].2, ended[1].3), (Code::Ok, 1, 5));
    assert_eq!(ended[2].1, Code::Cancelled);
    assert!(ended[2].3 >= 1 && ended[2].3 < 1_000_000, "{:?}", ended[2]);
}

#[tokio::test]
async fn client_interceptors_add_metadata_and_observe_every_ending() {
    let seen = Arc::new(Seen::default());
    let (addr, _stop) = serve(router(&seen), ServerConfig::new(Transport::Plaintext)).await;
    let (first, order, ended) = recorder("first", true);
    let (second, _, _) = recorder("second", false);
    let second = Recorder {
        order: order.clone(),
        ..second
    };
    let plain = channel(addr);
    let channel = plain.clone().intercept(first).intercept(second);

    channel.unary(&ECHO, Request::new(msg("a"))).await.unwrap();
    assert_eq!(seen.token.lock().unwrap().as_deref(), Some("Bearer t"));
    assert_eq!(
        *order.lock().unwrap(),
        ["first /t.I/Echo", "second /t.I/Echo"]
    );
    // The channel it was made from, sharing the connection, has no interceptors.
    plain.unary(&ECHO, Request::new(msg("b"))).await.unwrap();
    assert_eq!(seen.token.lock().unwrap().as_deref(), None);

    let failed = channel
        .unary(&FAIL, Request::new(msg("")))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::OutOfRange);

    let mut stream = channel
        .server_streaming(&COUNT, Request::new(msg("3")))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    let stream = channel
        .server_streaming(&COUNT, Request::new(msg("1000000")))
        .await
        .unwrap()
        .into_inner();
    drop(stream);

    let ended = ended.lock().unwrap().clone();
    let codes: Vec<_> = ended.iter().map(|e| e.1).collect();
    assert_eq!(
        codes,
        [Code::Ok, Code::OutOfRange, Code::Ok, Code::Cancelled],
        "{ended:?}"
    );
    // The finished stream: one request out, three responses in.
    assert_eq!((ended[2].2, ended[2].3), (3, 1));
}

/// Refuses every call before it is sent.
struct Refuse;

impl ClientInterceptor for Refuse {
    fn before<'a>(&'a self, _head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(std::future::ready(Err(Status::permission_denied(
            "not from here",
        ))))
    }
}

#[tokio::test]
async fn a_client_interceptor_that_refuses_sends_nothing() {
    let seen = Arc::new(Seen::default());
    let (addr, _stop) = serve(router(&seen), ServerConfig::new(Transport::Plaintext)).await;
    let channel = channel(addr).intercept(Refuse);
    let status = channel
        .unary(&ECHO, Request::new(msg("a")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = channel
        .server_streaming(&COUNT, Request::new(msg("1")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(seen.handled.load(Ordering::SeqCst), 0);
}

/// Checks that the head carries the caller's deadline and a peer address.
struct CheckHead;

impl ServerInterceptor for CheckHead {
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            if head.deadline().is_none() {
                return Err(Status::invalid_argument("no deadline"));
            }
            if head.peer().addr.is_none() {
                return Err(Status::invalid_argument("no peer address"));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_call_head_carries_deadline_and_peer() {
    let seen = Arc::new(Seen::default());
    let (addr, _stop) = serve(
        router(&seen).intercept(CheckHead),
        ServerConfig::new(Transport::Plaintext),
    )
    .await;
    let channel = channel(addr);
    let status = channel
        .unary(&ECHO, Request::new(msg("a")))
        .await
        .unwrap_err();
    assert_eq!(status.message(), "no deadline");
    let request = Request::new(msg("a")).with_timeout(Duration::from_secs(5));
    channel.unary(&ECHO, request).await.unwrap();
}

// ===== the first poll of a call =====

/// A router whose `Block` handler computes (blocks its thread, announced to tokio with
/// `block_in_place`) until `Release` is called or `patience` passes, answering which came first.
fn blocking_router(patience: Duration) -> Router {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    let tx = Arc::new(Mutex::new(tx));
    Router::new()
        .unary(&BLOCK, move |_req: Request<Msg>| {
            let rx = rx.clone();
            async move {
                // No await before this: the first poll runs it. `block_in_place` is how a
                // handler tells tokio it computes (tokio never preempts a task); it moves the
                // worker's other tasks elsewhere, but cannot move the task it is called from.
                let released = tokio::task::block_in_place(|| {
                    rx.lock().unwrap().recv_timeout(patience).is_ok()
                });
                Ok(Response::new(msg(if released {
                    "released"
                } else {
                    "stalled"
                })))
            }
        })
        .unary(&RELEASE, move |_req: Request<Msg>| {
            let _ = tx.lock().unwrap().send(());
            async move { Ok(Response::new(msg("ok"))) }
        })
}

async fn block_then_release(config: ServerConfig) -> String {
    let (addr, _stop) = serve(blocking_router(Duration::from_secs(2)), config).await;
    let channel = channel(addr);
    let blocked = {
        let channel = channel.clone();
        tokio::spawn(async move { channel.unary(&BLOCK, Request::new(msg(""))).await })
    };
    // Give the block call time to reach its handler; the release goes on the same connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    channel
        .unary(&RELEASE, Request::new(msg("")))
        .await
        .unwrap();
    blocked.await.unwrap().unwrap().into_inner().text
}

// With `inline_first_poll` off, a handler that computes before its first await runs on a task
// of its own, and the other streams of its connection go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn without_inline_first_poll_a_computing_handler_does_not_stall_its_connection() {
    let mut config = ServerConfig::new(Transport::Plaintext);
    config.inline_first_poll = false;
    assert_eq!(block_then_release(config).await, "released");
}

// The documented price of the default: the connection waits for the handler's first await, so
// the release cannot even be accepted until the handler gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn with_inline_first_poll_a_computing_handler_holds_its_connection() {
    let config = ServerConfig::new(Transport::Plaintext);
    assert!(config.inline_first_poll, "the default changed");
    assert_eq!(block_then_release(config).await, "stalled");
}

// ===== compression per message =====

fn mixed_router() -> Router {
    Router::new().server_streaming(&MIXED, |_req: Request<Msg>| async move {
        let text = "compressible ".repeat(20);
        let items = vec![
            Ok::<_, Status>(Outgoing::compressed(msg(&text))),
            Ok(Outgoing::uncompressed(msg(&text))),
            Ok(Outgoing::compressed(msg(&text))),
        ];
        let mut response = Response::new(futures_util::stream::iter(items));
        response.set_compression(Some(Encoding::Gzip));
        Ok(response)
    })
}

// The interop `server_compressed_streaming` shape: the handler chooses per message, and the
// Compressed-Flag of each message on the wire says what it chose.
#[tokio::test]
async fn a_streaming_handler_compresses_message_by_message() {
    let (addr, _stop) = serve(mixed_router(), ServerConfig::new(Transport::Plaintext)).await;

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{}", MIXED.path()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-accept-encoding", "gzip")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(0);
    send.send_data(body.freeze(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.headers()["grpc-encoding"], "gzip");
    let mut stream = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = stream.data().await {
        let chunk: Bytes = chunk.unwrap();
        let _ = stream.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let mut flags = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        flags.push(rest[0]);
        rest = &rest[5 + len..];
    }
    assert_eq!(flags, [1, 0, 1]);
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");

    // Our own client reads the mix as three equal messages.
    let channel = channel(addr);
    let messages: Vec<Msg> = channel
        .server_streaming(&MIXED, Request::new(msg("")))
        .await
        .unwrap()
        .into_inner()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(messages.len(), 3);
    assert!(messages.iter().all(|m| m == &messages[0]));
}

// ===== client-side failures of the request stream =====

// A request message over the client's send limit fails the call with RESOURCE_EXHAUSTED, not
// with the CANCELLED of the reset that stops the stream.
#[tokio::test]
async fn a_request_over_the_send_limit_is_resource_exhausted_on_the_client() {
    let router = Router::new().client_streaming(&SUM, |req: Request<Streaming<Msg>>| async move {
        let mut requests = req.into_inner();
        let mut n = 0;
        while requests.message().await?.is_some() {
            n += 1;
        }
        Ok(Response::new(msg(&n.to_string())))
    });
    let (addr, _stop) = serve(router, ServerConfig::new(Transport::Plaintext)).await;
    let channel = Channel::lazy(Endpoint::new(addr.to_string()).max_send_message_size(64)).unwrap();
    let small = futures_util::stream::iter(vec![msg("a"), msg("b")]);
    let reply = channel
        .client_streaming(&SUM, Request::new(small))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().text, "2");
    let big = futures_util::stream::iter(vec![msg("a"), msg(&"x".repeat(100))]);
    let status = channel
        .client_streaming(&SUM, Request::new(big))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("send limit"), "{status:?}");
}

// A merged router's interceptors run after the router's own, for every route of both.
#[tokio::test]
async fn merged_routers_run_both_chains_in_order_for_every_route() {
    let seen = Arc::new(Seen::default());
    let (first, order, _) = recorder("first", false);
    let (second, _, _) = recorder("second", false);
    let second = Recorder {
        order: order.clone(),
        ..second
    };
    let other = Router::new()
        .unary(&RELEASE, |_req: Request<Msg>| async move {
            Ok::<_, Status>(Response::new(msg("other")))
        })
        .intercept(second);
    let router = router(&seen).intercept(first).merge(other);
    let (addr, _stop) = serve(router, ServerConfig::new(Transport::Plaintext)).await;
    let channel = channel(addr);
    channel.unary(&ECHO, Request::new(msg("a"))).await.unwrap();
    channel
        .unary(&RELEASE, Request::new(msg("b")))
        .await
        .unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        [
            "first /t.I/Echo",
            "second /t.I/Echo",
            "first /t.I/Release",
            "second /t.I/Release"
        ]
    );
}
