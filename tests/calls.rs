//! The four call kinds end to end over plaintext and mTLS: statuses, metadata, concurrency,
//! panics and the peer identity.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{stream, StreamExt as _};
use satellite::grpc::{
    BidiStreaming, Channel, ClientStreaming, Code, Method, Request, ServerStreaming, Unary,
};

// Paths the server does not serve: a method its service lacks, and a service it lacks.
const NOPE: Method<EchoRequest, EchoReply, Unary> = Method::unary("/test.Echo/Nope");
const NOPE_STREAM: Method<EchoRequest, EchoReply, ServerStreaming> =
    Method::server_streaming("/test.Echo/Nope");
const NOPE_SUM: Method<EchoRequest, EchoReply, ClientStreaming> =
    Method::client_streaming("/test.Echo/Nope");
const NO_SERVICE: Method<EchoRequest, EchoReply, Unary> = Method::unary("/no.Such/Service");
const NO_SERVICE_STREAM: Method<EchoRequest, EchoReply, ServerStreaming> =
    Method::server_streaming("/no.Such/Service");
const NO_SERVICE_BIDI: Method<EchoRequest, EchoReply, BidiStreaming> =
    Method::bidi_streaming("/no.Such/Service");

async fn four_kinds(security: Security) {
    let server = start_server(security).await;
    let channel = server.channel().await;

    let reply = echo_call(&channel, "hello").await.unwrap();
    assert_eq!(reply.text, "hello");

    let response =
        bounded(channel.server_streaming(&COUNT, Request::new(EchoRequest::stream(5, 0))))
            .await
            .unwrap();
    let mut replies = response.into_inner();
    let mut indexes = Vec::new();
    while let Some(reply) = bounded(replies.message()).await.unwrap() {
        indexes.push(reply.index);
    }
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);

    let requests = stream::iter((1..=4).map(|i| EchoRequest {
        text: format!("{i}"),
        count: i,
        ..EchoRequest::default()
    }));
    let sum = bounded(channel.client_streaming(&SUM, Request::new(requests)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sum.index, sum.text.as_str()), (10, "1234"));

    let requests = stream::iter(["a", "b", "c"].map(EchoRequest::text));
    let response = bounded(channel.bidi_streaming(&BIDI, Request::new(requests)))
        .await
        .unwrap();
    let texts: Vec<String> =
        bounded(response.into_inner().map(|r| r.unwrap().text).collect()).await;
    assert_eq!(texts, ["a", "b", "c"]);

    assert!(server.live.wait_zero(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_call_kinds_plaintext() {
    four_kinds(Security::Plaintext).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_call_kinds_mtls() {
    four_kinds(Security::Mtls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_interleaves_requests_and_replies() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let requests = tokio_stream_from(rx);
    let mut replies = bounded(channel.bidi_streaming(&BIDI, Request::new(requests)))
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        tx.send(EchoRequest::text(format!("m{i}"))).await.unwrap();
        let reply = bounded(replies.message()).await.unwrap().unwrap();
        assert_eq!(reply.text, format!("m{i}"));
    }
    drop(tx);
    assert_eq!(bounded(replies.message()).await.unwrap(), None);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn statuses(security: Security) {
    let server = start_server(security).await;
    let channel = server.channel().await;
    for (code, message) in [
        (Code::InvalidArgument, "bad argument"),
        (Code::NotFound, "no such thing"),
        (Code::Internal, SPECIAL_MESSAGE),
        (Code::Unknown, SPECIAL_MESSAGE),
        (Code::FailedPrecondition, "100% sure: a=b&c"),
    ] {
        let text = format!("status:{}:{message}", code.as_i32());
        let status = echo_call(&channel, &text).await.unwrap_err();
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), message);
    }
    // The status also ends streams that have sent messages (status in real trailers).
    assert!(server.live.wait_zero(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_and_special_messages_plaintext() {
    statuses(Security::Plaintext).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_and_special_messages_mtls() {
    statuses(Security::Mtls).await;
}

async fn metadata_both_ways(security: Security) {
    let server = start_server(security).await;
    let channel = server.channel().await;
    let binary = [0_u8, 1, 2, 0xFE, 0xFF, b'\n', b','];
    let mut request = Request::new(EchoRequest::text("meta"));
    request
        .metadata_mut()
        .insert("x-echo", "initial value")
        .unwrap();
    request
        .metadata_mut()
        .insert_bin("x-echo-bin", &binary)
        .unwrap();
    let response = bounded(channel.unary(&ECHO, request)).await.unwrap();
    assert_eq!(response.metadata().get("x-echo"), Some("initial value"));
    assert_eq!(
        response.trailers().get_bin("x-echo-bin").as_deref(),
        Some(&binary[..])
    );
    // Reserved names never leak into user metadata.
    assert!(response.trailers().get("grpc-status").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_headers_and_bin_trailers_plaintext() {
    metadata_both_ways(Security::Plaintext).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_headers_and_bin_trailers_mtls() {
    metadata_both_ways(Security::Mtls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_unary_calls_on_one_channel() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let calls = (0..1000).map(|i| {
        let channel = channel.clone();
        tokio::spawn(async move {
            let reply = echo_call(&channel, &format!("call {i}")).await.unwrap();
            assert_eq!(reply.text, format!("call {i}"));
        })
    });
    let calls: Vec<_> = calls.collect();
    for call in calls {
        bounded(call).await.unwrap();
    }
    assert!(server.live.wait_zero(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_server_streams() {
    let server = start_server(Security::Mtls).await;
    let channel = server.channel().await;
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let request = EchoRequest {
                    payload: vec![7; 100],
                    ..EchoRequest::stream(20, 1)
                };
                let mut replies = channel
                    .server_streaming(&COUNT, Request::new(request))
                    .await
                    .unwrap()
                    .into_inner();
                let mut n = 0;
                while let Some(reply) = replies.message().await.unwrap() {
                    assert_eq!(reply.index, n);
                    n += 1;
                }
                assert_eq!(n, 20);
            })
        })
        .collect();
    for call in calls {
        bounded(call).await.unwrap();
    }
    assert!(server.live.wait_zero(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_fails_that_call_alone() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let slow = {
        let channel = channel.clone();
        tokio::spawn(async move {
            bounded(channel.unary(&SLEEP, Request::new(EchoRequest::sleep(200)))).await
        })
    };
    let status = echo_call(&channel, "panic").await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    // The call in flight on the same connection and later calls are unaffected.
    assert!(slow.await.unwrap().is_ok());
    assert_eq!(echo_call(&channel, "after").await.unwrap().text, "after");
    assert!(server.live.wait_zero(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_subject_visible_over_mtls() {
    let server = start_server(Security::Mtls).await;
    let channel = server.channel().await;
    let reply = echo_call(&channel, "who").await.unwrap();
    assert_eq!(reply.peer, "CN=satellite-client");

    let plain = start_server(Security::Plaintext).await;
    let reply = echo_call(&plain.channel().await, "who").await.unwrap();
    assert_eq!(reply.peer, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_deadline_on_a_fast_call_is_fine() {
    let server = start_server(Security::Plaintext).await;
    let channel: Channel = server.channel().await;
    let request = Request::new(EchoRequest::sleep(1)).with_timeout(Duration::from_secs(5));
    let reply = bounded(channel.unary(&SLEEP, request)).await;
    assert!(reply.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_both_ways() {
    let server = start_server(Security::Mtls).await;
    let channel = server.channel().await;
    let payload: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let request = EchoRequest {
        text: "large".into(),
        payload: payload.clone(),
        ..EchoRequest::default()
    };
    let reply = bounded(channel.unary(&ECHO, Request::new(request)))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.payload == payload, "the payload came back changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_resource_exhausted() {
    let server = start_server_with(Security::Plaintext, |config| {
        config.max_recv_message_size = 1024;
    })
    .await;
    let channel = server.channel().await;
    let request = EchoRequest {
        payload: vec![1; 2048],
        ..EchoRequest::default()
    };
    let status = bounded(channel.unary(&ECHO, Request::new(request)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(echo_call(&channel, "small").await.unwrap().text, "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_and_bidi_with_no_requests() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let none = stream::iter(Vec::<EchoRequest>::new());
    let sum = bounded(channel.client_streaming(&SUM, Request::new(none)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sum.index, 0);
    let none = stream::iter(Vec::<EchoRequest>::new());
    let mut replies = bounded(channel.bidi_streaming(&BIDI, Request::new(none)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bounded(replies.message()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_reconnects_within_its_backoff_after_the_server_restarts() {
    let mut server = start_server(Security::Plaintext).await;
    let addr = server.addr;
    let channel = server.channel().await;
    assert_eq!(echo_call(&channel, "one").await.unwrap().text, "one");
    server.trigger_shutdown();
    bounded(&mut server.handle).await.unwrap().unwrap();
    drop(server);

    // Nothing listens: the call fails fast with UNAVAILABLE.
    let status = echo_call(&channel, "down").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The address is in TRANSIENT_FAILURE until its backoff (1 s, +-20 %) passes; a call that
    // waits for ready goes out as soon as the reconnection succeeds.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _server = serve_on(listener, Security::Plaintext, |_| {});
    let started = std::time::Instant::now();
    let mut request = Request::new(EchoRequest::text("two"));
    request.set_wait_for_ready(true);
    request.set_timeout(Duration::from_secs(5));
    let reply = bounded(channel.unary(&ECHO, request)).await.unwrap();
    assert_eq!(reply.into_inner().text, "two");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(channel.state(), satellite::grpc::ConnectivityState::Ready);
}

async fn stream_ends_with(
    channel: &Channel,
    text: &str,
) -> (u32, Result<(), satellite::grpc::Status>) {
    let request = EchoRequest {
        text: text.into(),
        ..EchoRequest::stream(3, 0)
    };
    let mut replies = bounded(channel.server_streaming(&COUNT, Request::new(request)))
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    loop {
        match bounded(replies.message()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_status_and_panic_after_messages() {
    let server = start_server(Security::Mtls).await;
    let channel = server.channel().await;
    let (received, end) = stream_ends_with(&channel, &format!("status:5:{SPECIAL_MESSAGE}")).await;
    assert_eq!(received, 3);
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), SPECIAL_MESSAGE);

    let (received, end) = stream_ends_with(&channel, "panic").await;
    assert_eq!(received, 3);
    assert_eq!(end.unwrap_err().code(), Code::Unknown);

    let (received, end) = stream_ends_with(&channel, "fine").await;
    assert_eq!((received, end.is_ok()), (3, true));
    assert!(server.live.wait_zero(WAIT).await);
}

// The server answers an unknown path Trailers-Only from the head alone, so the client's body
// send can lose the race; the status must still be UNIMPLEMENTED. (The race is reproduced more
// reliably against a scripted server in protocol.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_unimplemented_for_the_client() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let (unary, streaming) = if i % 2 == 0 {
                    (&NOPE, &NOPE_STREAM)
                } else {
                    (&NO_SERVICE, &NO_SERVICE_STREAM)
                };
                let unary = channel
                    .unary(unary, Request::new(EchoRequest::text("x")))
                    .await
                    .unwrap_err();
                assert_eq!(unary.code(), Code::Unimplemented, "{unary:?}");
                let streaming = channel
                    .server_streaming(streaming, Request::new(EchoRequest::text("x")))
                    .await
                    .unwrap_err();
                assert_eq!(streaming.code(), Code::Unimplemented, "{streaming:?}");
            })
        })
        .collect();
    for call in calls {
        bounded(call).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answer_ends_a_client_stream_that_never_finishes() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let requests = stream::iter([EchoRequest::text("one")]).chain(stream::pending());
    let status = bounded(channel.client_streaming(&NOPE_SUM, Request::new(requests)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let requests = stream::iter([EchoRequest::text("one")]).chain(stream::pending());
    let status = bounded(channel.bidi_streaming(&NO_SERVICE_BIDI, Request::new(requests)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}
