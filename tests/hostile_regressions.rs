//! Regression tests for runtime bugs the hostile suite found, each on its own.

use std::time::Duration;

use satellite::grpc::{serve_io, Method, Router, ServerConfig, ServerStreaming, Transport};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// Regression: h2's handshake ends after the 24-byte magic, so a peer that sent the magic and
// then no SETTINGS frame (RFC 9113 §3.4: both make up the preface) held its connection open
// past the handshake timeout, until the 2-hour keepalive.
#[tokio::test]
async fn magic_without_settings_is_closed_at_the_handshake_timeout() {
    let (mut client, server_io) = tokio::io::duplex(64 * 1024);
    let mut config = ServerConfig::new(Transport::Plaintext);
    config.handshake_timeout = Duration::from_millis(200);
    let server = tokio::spawn(serve_io(server_io, config, Router::new()));
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("a peer that sent only the magic held its connection")
        .unwrap()
        .unwrap();
    // The connection is gone: the client reads the server's SETTINGS, then EOF.
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest).await;

    // A peer that sends the full preface is kept past the timeout.
    let (mut client, server_io) = tokio::io::duplex(64 * 1024);
    let mut config = ServerConfig::new(Transport::Plaintext);
    config.handshake_timeout = Duration::from_millis(200);
    let server = tokio::spawn(serve_io(server_io, config, Router::new()));
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !server.is_finished(),
        "a peer with a full preface was closed"
    );
    server.abort();
}

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
}

const ENDLESS: Method<Blob, Blob, ServerStreaming> = Method::server_streaming("/r.R/Endless");

// Regression: h2 counts the resets it generates itself over a connection's whole life (the
// MadeYouReset cap, 1 024) and never forgets them. A client that cancels many streams gets
// late frames for streams already gone from h2's small cache of reset streams, answers each
// with RST_STREAM(STREAM_CLOSED), and after about 1 024 of them its own h2 killed the channel's
// connection ("too_many_internal_resets"): every call in flight failed with UNAVAILABLE. Found
// by the 10-minute soak (62 such failures in 2.5 million calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_survives_many_cancelled_streams() {
    use futures_util::stream;
    use satellite::grpc::{Channel, Code, Endpoint, Request, Response, Status};
    let router = Router::new().server_streaming(&ENDLESS, |_req: Request<Blob>| async {
        let blob = Blob {
            payload: vec![1; 4096],
        };
        Ok(Response::new(stream::repeat_with(move || {
            Ok::<_, Status>(blob.clone())
        })))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig::new(Transport::Plaintext);
    let server = tokio::spawn(satellite::grpc::run(
        listener,
        config,
        router,
        std::future::pending(),
    ));
    let channel = Channel::connect(Endpoint::new(addr.to_string()))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let channel = channel.clone();
        tasks.spawn(async move {
            for _ in 0..60 {
                let mut stream = match channel
                    .server_streaming(&ENDLESS, Request::new(Blob::default()))
                    .await
                {
                    Ok(response) => response.into_inner(),
                    Err(status) => return Err(status),
                };
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(Status::internal("an endless stream ended")),
                    Err(status) => return Err(status),
                }
                // Dropped here: the client cancels with the server mid-send.
            }
            Ok(())
        });
    }
    let mut failures = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = tasks.join_next().await {
            if let Err(status) = done.unwrap() {
                failures.push(status);
            }
        }
    })
    .await;
    server.abort();
    assert!(all.is_ok(), "3 840 cancelled streams took over 60 s");
    let unavailable = failures
        .iter()
        .filter(|s| s.code() == Code::Unavailable)
        .count();
    assert!(
        failures.is_empty(),
        "{unavailable} UNAVAILABLE: {failures:?}"
    );
}
