//! Flow control bounds what a stalled reader costs; graceful shutdown lets calls finish.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::*;
use satellite::grpc::{Code, Request};

const PAYLOAD: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_bounds_the_stream() {
    let server = start_server(Security::Plaintext).await;
    // Default h2 settings: 64 KiB stream and connection windows; the body is never read, so
    // no capacity is ever released.
    let send = raw_client(server.addr).await;
    let mut ready = bounded(send.ready()).await.unwrap();
    let request = EchoRequest {
        payload: vec![0xAB; PAYLOAD],
        ..EchoRequest::stream(0, 0)
    };
    let (response, mut stream) = ready
        .send_request(grpc_head(server.addr, COUNT.path()), false)
        .unwrap();
    stream.send_data(framed(&request), true).unwrap();
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_one = server.produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_two = server.produced.load(Ordering::SeqCst);

    // Stream window + the 64 KiB coalescing buffer + h2's 400 KiB send buffer, in messages,
    // plus slack for the message in hand and rounding.
    let message = PAYLOAD + 16;
    let bound = (64 * 1024 + 64 * 1024 + 400 * 1024) / message + 16;
    assert!(after_one > 0, "nothing was produced");
    assert!(
        after_one <= bound,
        "{after_one} messages produced for a stalled reader (bound {bound})"
    );
    assert_eq!(
        after_two, after_one,
        "production grew while the reader stalled"
    );
    assert_eq!(server.live.get(), 1);

    // Resetting the stream drops the handler's stream.
    drop(response);
    stream.send_reset(h2::Reason::CANCEL);
    assert!(
        server.live.wait_zero(Duration::from_secs(2)).await,
        "handler still alive after the reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_stream_in_flight() {
    let mut server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let mut replies =
        bounded(channel.server_streaming(&COUNT, Request::new(EchoRequest::stream(50, 20))))
            .await
            .unwrap()
            .into_inner();
    let mut received = 0;
    while received < 3 {
        assert!(bounded(replies.message()).await.unwrap().is_some());
        received += 1;
    }
    server.trigger_shutdown();

    // A new call on the draining connection is refused, not run.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = echo_call(&channel, "late").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    while let Some(reply) = bounded(replies.message()).await.unwrap() {
        assert_eq!(reply.index, received);
        received += 1;
    }
    assert_eq!(received, 50);

    bounded(&mut server.handle).await.unwrap().unwrap();
    let connect = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(server.addr),
    )
    .await
    .expect("connect hung");
    assert!(
        connect.is_err(),
        "a new connection was accepted after shutdown"
    );
    assert!(server.live.wait_zero(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_on_a_stalled_reader_ends_the_stream() {
    let server = start_server(Security::Plaintext).await;
    let send = raw_client(server.addr).await;
    let mut ready = bounded(send.ready()).await.unwrap();
    let request = EchoRequest {
        payload: vec![0xAB; PAYLOAD],
        ..EchoRequest::stream(0, 0)
    };
    let mut head = grpc_head(server.addr, COUNT.path());
    head.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("300m"));
    let (response, mut stream) = ready.send_request(head, false).unwrap();
    stream.send_data(framed(&request), true).unwrap();
    let _response = bounded(response).await.unwrap();
    // The reader never reads; the server must still end the call at its deadline.
    assert!(
        server.live.wait_zero(Duration::from_secs(2)).await,
        "handler still alive after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_cuts_off_endless_calls() {
    let mut server = start_server_with(Security::Plaintext, |config| {
        config.shutdown_grace = Duration::from_millis(200);
    })
    .await;
    let channel = server.channel().await;
    let mut replies =
        bounded(channel.server_streaming(&COUNT, Request::new(EchoRequest::stream(0, 10))))
            .await
            .unwrap()
            .into_inner();
    assert!(bounded(replies.message()).await.unwrap().is_some());
    let started = tokio::time::Instant::now();
    server.trigger_shutdown();
    bounded(&mut server.handle).await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "run outlived its grace period: {:?}",
        started.elapsed()
    );
    assert!(server.live.wait_zero(Duration::from_secs(2)).await);
    // The client sees the call end with an error, not a hang.
    let end = loop {
        match bounded(replies.message()).await {
            Ok(Some(_)) => {}
            other => break other,
        }
    };
    assert!(end.is_err(), "an endless stream ended OK: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_queues_the_next_connection() {
    let server = start_server_with(Security::Plaintext, |config| {
        config.max_connections = 1;
    })
    .await;
    let first = server.channel().await;
    assert_eq!(echo_call(&first, "first").await.unwrap().text, "first");

    // The second connection waits in the backlog while the first holds the only slot.
    let second = plaintext_channel(server.addr).await;
    let request =
        Request::new(EchoRequest::text("second")).with_timeout(Duration::from_millis(300));
    let status = bounded(second.unary(&ECHO, request)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // Closing the first connection frees the slot.
    drop(first);
    assert_eq!(echo_call(&second, "second").await.unwrap().text, "second");
}

// Regression: `ServerConfig::validate` accepted `shutdown_grace = Duration::MAX`, and `run`
// then panicked at shutdown adding a second of slack to it ("overflow when adding durations";
// the connections would next have added it to `Instant::now()`). Such a setting is now a
// configuration error up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_server_durations_are_configuration_errors() {
    let mut server = start_server_with(Security::Plaintext, |config| {
        config.shutdown_grace = Duration::MAX;
    })
    .await;
    server.trigger_shutdown();
    let error = bounded(&mut server.handle).await.unwrap().unwrap_err();
    assert!(error.is_config(), "{error:?}");
    assert!(error.to_string().contains("shutdown_grace"), "{error}");
}
