//! Regression tests for runtime bugs the hostile suite found, each on its own.

use std::time::Duration;

use satellite::grpc::{server::serve_io, Router, ServerConfig, Transport};
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
