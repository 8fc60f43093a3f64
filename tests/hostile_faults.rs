//! Faults: peers that vanish mid-stream, a server that vanishes under its client, panicking
//! handlers, and a listener out of file descriptors (in a child process).

mod common;
mod hostile;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use hostile::*;
use satellite::grpc::{Code, Request};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// 50 peers each open an endless server stream, read some of it, and vanish (TCP closed, no
/// RST_STREAM): every handler is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_stream_drop_their_handlers() {
    let server = start_server(Security::Plaintext).await;
    let watch = Watch::begin("50 clients vanish mid-stream", &server).await;
    let mut peers = Vec::new();
    for _ in 0..50 {
        let mut peer = RawPeer::connect(server.addr, &[]).await;
        let mut bytes = headers(1, &grpc_block(COUNT.path(), &[]), false);
        bytes.extend(data(1, &grpc_message(&EchoRequest::stream(0, 1)), true));
        assert!(peer.send_within(&bytes, SECS(5)).await);
        peer.read_until(SECS(5), |o| o.data.get(&1).is_some_and(|&n| n > 0))
            .await;
        assert!(peer.outcome.data.contains_key(&1), "{:?}", peer.outcome);
        peers.push(peer);
    }
    assert!(server.live.get() >= 50);
    drop(peers);
    assert!(
        server.live.wait_zero(SECS(5)).await,
        "{} handlers outlived their peers",
        server.live.get()
    );
    watch.end(&server, 32, SECS(15)).await;
}

/// The server goes away (its task and connections dropped) during a server stream: the
/// client sees UNAVAILABLE promptly instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_vanishing_mid_call_is_unavailable_to_the_client() {
    let server = start_server(Security::Plaintext).await;
    let watch = Watch::begin("server vanishes mid-call", &server).await;
    let doomed = start_server(Security::Mtls).await;
    let channel = doomed.channel().await;
    let response =
        bounded(channel.server_streaming(&COUNT, Request::new(EchoRequest::stream(0, 5))))
            .await
            .unwrap();
    let mut stream = response.into_inner();
    for _ in 0..3 {
        bounded(stream.message()).await.unwrap().unwrap();
    }
    drop(doomed);
    let started = std::time::Instant::now();
    let end = bounded(async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                other => break other,
            }
        }
    })
    .await;
    let status = end.unwrap_err();
    println!(
        "hostile: server vanished: client saw {:?} after {:?}",
        status.code(),
        started.elapsed()
    );
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let unary = echo_call(&channel, "after").await.unwrap_err();
    assert_eq!(unary.code(), Code::Unavailable, "{unary:?}");
    watch.end(&server, 16, SECS(15)).await;
}

/// 500 unary and 100 streaming handlers panic: each call fails alone with UNKNOWN, and no
/// handler outlives its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handlers_fail_their_calls_alone() {
    let server = start_server(Security::Plaintext).await;
    // The 600 expected panics print nothing (a backtrace each would be slow and noisy).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let expected = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("panics on request"));
        if !expected {
            default_hook(info);
        }
    }));
    let watch = Watch::begin("600 handler panics", &server).await;
    let channel = plaintext_channel(server.addr).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..600 {
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
        let channel = channel.clone();
        tasks.spawn(async move {
            if i % 6 == 0 {
                let response = bounded(channel.server_streaming(
                    &COUNT,
                    Request::new(EchoRequest {
                        text: "panic".into(),
                        ..EchoRequest::stream(2, 0)
                    }),
                ))
                .await
                .unwrap();
                let mut stream = response.into_inner();
                let mut n = 0;
                let end = loop {
                    match bounded(stream.message()).await {
                        Ok(Some(_)) => n += 1,
                        other => break other,
                    }
                };
                assert_eq!(n, 2);
                assert_eq!(end.unwrap_err().code(), Code::Unknown);
            } else {
                let status = echo_call(&channel, "panic").await.unwrap_err();
                assert_eq!(status.code(), Code::Unknown, "{status:?}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(server.live.wait_zero(SECS(5)).await);
    assert_eq!(echo_call(&channel, "same").await.unwrap().text, "same");
    watch.end(&server, 32, SECS(30)).await;
}

/// A health check over a fresh plaintext connection; true if it answered SERVING's OK.
async fn health_ok(addr: std::net::SocketAddr) -> bool {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (send, connection) = h2::client::handshake(tcp).await.ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut send = send;
        let head = grpc_head(addr, satellite::grpc::health::CHECK.path());
        let response = raw_call(&mut send, head, Bytes::from_static(&[0; 5]), true).await;
        Some(response.grpc_status() == Some(0))
    };
    tokio::time::timeout(SECS(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `satellite serve` under `ulimit -n 64`: 300 connections exhaust its descriptors, so accept
/// fails (EMFILE) and the loop backs off; once they close, it serves again. Slowest case here
/// (about 2 s: it starts a child process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_out_of_file_descriptors_backs_off_and_recovers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::env::temp_dir().join(format!("hostile-fd-{port}.log"));
    let script = format!(
        "ulimit -n 64 && exec '{}' serve --addr {addr} --plaintext",
        env!("CARGO_BIN_EXE_satellite")
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let mut up = false;
    for _ in 0..200 {
        if health_ok(addr).await {
            up = true;
            break;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "serve exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "serve never answered: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    // Hold 300 connections (the kernel completes them from the backlog even when accept fails).
    let mut held = Vec::new();
    for _ in 0..300 {
        match tokio::time::timeout(SECS(2), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => held.push(tcp),
            _ => break,
        }
    }
    let mut saw_emfile = false;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("accept failed") {
            saw_emfile = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        saw_emfile,
        "accept never failed with {} connections held: {text}",
        held.len()
    );
    assert!(child.0.try_wait().unwrap().is_none(), "serve died: {text}");
    let held_count = held.len();
    drop(held);
    let started = std::time::Instant::now();
    let mut recovered = false;
    for _ in 0..100 {
        if health_ok(addr).await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = text.matches("accept failed").count();
    println!(
        "hostile: fd limit 64: {held_count} connections held, {errors} accept errors logged, recovered in {:?}",
        started.elapsed()
    );
    assert!(
        recovered,
        "serve did not recover: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(child.0.try_wait().unwrap().is_none());
    let _ = std::fs::remove_file(&log);
    child.0.kill().unwrap();
}
