//! Deadlines and cancellation: the handler future is dropped, not left running.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{stream, StreamExt as _};
use http::HeaderValue;
use satellite::grpc::{Code, Request};

/// How soon a dropped call must release its handler.
const PROMPTLY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_deadline_exceeded_drops_the_handler() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let request = Request::new(EchoRequest::sleep(10_000)).with_timeout(Duration::from_millis(100));
    let started = tokio::time::Instant::now();
    let status = bounded(channel.unary(&SLEEP, request)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
    assert_eq!(echo_call(&channel, "after").await.unwrap().text, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_deadline_mid_stream_drops_the_handler() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let request = Request::new(EchoRequest::stream(0, 10)).with_timeout(Duration::from_millis(300));
    let mut replies = bounded(channel.server_streaming(&COUNT, request))
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let status = loop {
        match bounded(replies.message()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("an endless stream ended OK"),
            Err(status) => break status,
        }
    };
    assert!(received > 0, "the deadline hit before any message");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_stream_cancels_the_handler() {
    let server = start_server(Security::Mtls).await;
    let channel = server.channel().await;
    let mut replies =
        bounded(channel.server_streaming(&COUNT, Request::new(EchoRequest::stream(0, 5))))
            .await
            .unwrap()
            .into_inner();
    for i in 0..3 {
        assert_eq!(bounded(replies.message()).await.unwrap().unwrap().index, i);
    }
    assert_eq!(server.live.get(), 1);
    // Dropping the stream resets it with CANCEL.
    drop(replies);
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
    assert_eq!(echo_call(&channel, "after").await.unwrap().text, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_bidi_stream_cancels_the_handler() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    // The request stream never ends on its own.
    let requests = stream::iter([EchoRequest::text("one")]).chain(stream::pending());
    let mut replies = bounded(channel.bidi_streaming(&BIDI, Request::new(requests)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bounded(replies.message()).await.unwrap().unwrap().text,
        "one"
    );
    assert_eq!(server.live.get(), 1);
    drop(replies);
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
    assert_eq!(echo_call(&channel, "after").await.unwrap().text, "after");
}

/// A raw client sends `grpc-timeout` and never enforces it: only the server can end the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_enforced_by_the_server() {
    let server = start_server(Security::Plaintext).await;
    let mut send = raw_client(server.addr).await;

    let mut head = grpc_head(server.addr, SLEEP.path());
    head.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("100m"));
    let started = tokio::time::Instant::now();
    let response = raw_call(&mut send, head, framed(&EchoRequest::sleep(10_000)), true).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.grpc_status(), Some(4), "{response:?}");
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");

    // The same mid-stream: messages flow, then the status ends the stream.
    let mut head = grpc_head(server.addr, COUNT.path());
    head.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("200m"));
    let started = tokio::time::Instant::now();
    let response = raw_call(&mut send, head, framed(&EchoRequest::stream(0, 10)), true).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!response.data.is_empty(), "no message before the deadline");
    assert_eq!(response.grpc_status(), Some(4), "{response:?}");
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
}

/// A raw client resets a server stream with CANCEL: the handler is dropped and the connection
/// serves the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_stream_cancel_drops_the_handler() {
    let server = start_server(Security::Plaintext).await;
    let mut send = raw_client(server.addr).await;
    let mut ready = bounded(send.clone().ready()).await.unwrap();
    let head = grpc_head(server.addr, SLEEP.path());
    let (_response, mut stream) = ready.send_request(head, false).unwrap();
    stream
        .send_data(framed(&EchoRequest::sleep(10_000)), true)
        .unwrap();
    assert!(server.live.wait_for(PROMPTLY, |n| n == 1).await);
    stream.send_reset(h2::Reason::CANCEL);
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
    let response = raw_call(
        &mut send,
        grpc_head(server.addr, ECHO.path()),
        framed(&EchoRequest::text("x")),
        true,
    )
    .await;
    assert_eq!(response.grpc_status(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_unary_future_cancels_the_handler() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        channel.unary(&SLEEP, Request::new(EchoRequest::sleep(10_000))),
    )
    .await;
    assert!(dropped.is_err());
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
    assert_eq!(echo_call(&channel, "after").await.unwrap().text, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_is_resource_exhausted_on_the_client() {
    let server = start_server(Security::Plaintext).await;
    let endpoint =
        satellite::grpc::Endpoint::new(server.addr.to_string()).max_recv_message_size(100);
    let channel = bounded(satellite::grpc::Channel::connect(endpoint))
        .await
        .unwrap();
    let request = EchoRequest {
        payload: vec![0; 1000],
        ..EchoRequest::default()
    };
    let status = bounded(channel.unary(&ECHO, Request::new(request)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let mut replies = bounded(channel.server_streaming(
        &COUNT,
        Request::new(EchoRequest {
            payload: vec![0; 1000],
            ..EchoRequest::stream(0, 1)
        }),
    ))
    .await
    .unwrap()
    .into_inner();
    let status = bounded(replies.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(replies);
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_streaming_call_cancels_the_handler() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let requests = stream::iter([EchoRequest::text("one")]).chain(stream::pending());
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        channel.client_streaming(&SUM, Request::new(requests)),
    )
    .await;
    assert!(dropped.is_err());
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
    assert_eq!(echo_call(&channel, "after").await.unwrap().text, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_deadline_while_still_sending() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let requests = stream::iter([EchoRequest::text("one")]).chain(stream::pending());
    let request = Request::new(requests).with_timeout(Duration::from_millis(200));
    let status = bounded(channel.client_streaming(&SUM, request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(server.live.wait_zero(PROMPTLY).await, "handler still alive");
}

// Regression: the client computed its deadline as `Instant::now() + timeout`, which panicked
// ("overflow when adding duration to instant") for a timeout such as `Duration::MAX`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_client_timeout_is_a_far_deadline() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    for timeout in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(400_000_000_000),
    ] {
        let request = Request::new(EchoRequest::text("far")).with_timeout(timeout);
        let reply = bounded(channel.unary(&ECHO, request)).await;
        assert_eq!(reply.unwrap().into_inner().text, "far", "{timeout:?}");
    }
}
