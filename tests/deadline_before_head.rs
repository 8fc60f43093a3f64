//! A call whose deadline passes before the response head arrives ends DEADLINE_EXCEEDED.
//!
//! Regression: the client's request-sending side reset the stream (CANCEL) when the deadline
//! passed, which woke the wait for the response head with "stream no longer needed" before
//! its own timer, so the call ended CANCELLED. Seen in the interop case
//! timeout_on_sleeping_server against grpcio, which sends no head before its first response.

mod common;

use std::time::Duration;

use common::{bounded, plaintext_channel, EchoReply, EchoRequest};
use futures_util::stream;
use satellite::grpc::{BidiStreaming, ClientStreaming, Code, Method, Request};
use tokio::net::TcpListener;

const BIDI: Method<EchoRequest, EchoReply, BidiStreaming> = Method::bidi_streaming("/t.E/Bidi");
const SUM: Method<EchoRequest, EchoReply, ClientStreaming> = Method::client_streaming("/t.E/Sum");

/// An HTTP/2 server that accepts every stream and never answers, nor enforces deadlines.
async fn silent_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(stream)) = conn.accept().await {
                    held.push(stream);
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_before_the_head_is_deadline_exceeded() {
    let addr = silent_server().await;
    let channel = plaintext_channel(addr).await;
    for i in 0..50u64 {
        let timeout = Duration::from_millis(1 + i % 5);
        // A request stream that never ends, so the sender is still running at the deadline.
        let requests = stream::pending::<EchoRequest>();
        let req = Request::new(requests).with_timeout(timeout);
        let result = bounded(channel.bidi_streaming(&BIDI, req)).await;
        let status = result.expect_err("the silent server never answers");
        assert_eq!(status.code(), Code::DeadlineExceeded, "call {i}: {status}");

        let req = Request::new(stream::pending::<EchoRequest>()).with_timeout(timeout);
        let result = bounded(channel.client_streaming(&SUM, req)).await;
        let status = result.expect_err("the silent server never answers");
        assert_eq!(status.code(), Code::DeadlineExceeded, "call {i}: {status}");
    }
}
