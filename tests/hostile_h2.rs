//! HTTP/2-level attacks from a raw frame writer (tests/hostile/), each beside a good client,
//! each with its outcome, RSS bound and time bound asserted (GRPC-NOTES §3.2).

mod common;
mod hostile;

use std::time::Duration;

use common::*;
use hostile::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

async fn plaintext() -> TestServer {
    start_server(Security::Plaintext).await
}

fn sleep_call(stream: u32, delay_ms: u64) -> Vec<u8> {
    let mut out = headers(stream, &grpc_block(SLEEP.path(), &[]), false);
    out.extend(data(
        stream,
        &grpc_message(&EchoRequest::sleep(delay_ms)),
        true,
    ));
    out
}

fn echo_raw(stream: u32, text: &str) -> Vec<u8> {
    let mut out = headers(stream, &grpc_block(ECHO.path(), &[]), false);
    out.extend(data(stream, &grpc_message(&EchoRequest::text(text)), true));
    out
}

/// CVE-2023-44487: HEADERS + RST_STREAM(CANCEL) for 10 000 streams, never reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_bounded() {
    let server = plaintext().await;
    let watch = Watch::begin("rapid reset x10000", &server).await;
    let (stop, max_live) = sample_max(&server.live);
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let block = grpc_block(SLEEP.path(), &[]);
    let body = grpc_message(&EchoRequest::sleep(5_000));
    let mut sent = 0;
    'outer: for batch in 0..20_u32 {
        let mut bytes = Vec::new();
        for i in 0..500_u32 {
            let id = 1 + 2 * (batch * 500 + i);
            bytes.extend(headers(id, &block, false));
            bytes.extend(data(id, &body, true));
            bytes.extend(rst(id, CANCEL));
        }
        if !peer.send_within(&bytes, SECS(5)).await {
            break 'outer;
        }
        sent += 500;
    }
    peer.read_until(SECS(5), |o| o.goaway.is_some()).await;
    // The server sheds load: handlers never exceed the stream cap, and all end.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_live = max_live.await.unwrap();
    assert!(max_live <= 128, "{max_live} handlers ran at once");
    assert!(
        server.live.wait_zero(SECS(5)).await,
        "handlers outlived their resets"
    );
    let o = &peer.outcome;
    println!(
        "hostile: rapid reset: sent {sent} pairs, goaway {:?}, max live handlers {max_live}",
        o.goaway
    );
    // Either GOAWAY(ENHANCE_YOUR_CALM), or every stream was cancelled with no answer.
    match o.goaway_code() {
        Some(code) => assert_eq!(code, ENHANCE_YOUR_CALM, "{o:?}"),
        None => assert!(o.ended.is_empty(), "a reset stream got trailers: {o:?}"),
    }
    watch.end(&server, 64, SECS(20)).await;
}

/// CVE-2024-27316: HEADERS without END_HEADERS, then 10 000 empty CONTINUATION frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_goaway_enhance_your_calm() {
    let server = plaintext().await;
    let watch = Watch::begin("CONTINUATION flood", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut bytes = frame(HEADERS, 0, 1, &grpc_block(ECHO.path(), &[]));
    for _ in 0..10_000 {
        bytes.extend(frame(CONTINUATION, 0, 1, &[]));
    }
    peer.send_within(&bytes, SECS(5)).await;
    assert!(peer.read_to_close(SECS(5)).await, "not closed");
    assert_eq!(
        peer.outcome.goaway_code(),
        Some(ENHANCE_YOUR_CALM),
        "{:?}",
        peer.outcome
    );
    watch.end(&server, 32, SECS(10)).await;
}

/// CVE-2016-6581: a 4 000-byte entry in the HPACK dynamic table, then a block of 4 000
/// one-byte references to it (16 MB decoded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused() {
    let server = plaintext().await;
    let watch = Watch::begin("HPACK bomb", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut block = grpc_block(ECHO.path(), &[]);
    literal_indexed(&mut block, "x-b", &[b'a'; 4000]);
    let mut bytes = headers(1, &block, false);
    bytes.extend(data(1, &grpc_message(&EchoRequest::text("seed")), true));
    assert!(peer.send_within(&bytes, SECS(5)).await);
    peer.read_until(SECS(5), |o| o.ended.contains(&1)).await;
    let mut bomb = grpc_block(ECHO.path(), &[]);
    // Index 62 is the newest dynamic-table entry.
    bomb.extend(std::iter::repeat_n(0xBE_u8, 4000));
    let mut bytes = headers(3, &bomb, false);
    bytes.extend(data(3, &grpc_message(&EchoRequest::text("bomb")), true));
    peer.send_within(&bytes, SECS(5)).await;
    peer.read_until(SECS(5), |o| {
        o.goaway.is_some() || o.resets.contains_key(&3) || o.ended.contains(&3)
    })
    .await;
    let o = &peer.outcome;
    assert!(
        o.ended.contains(&1),
        "the seeding call was not answered: {o:?}"
    );
    // 431 + RST_STREAM(REFUSED_STREAM) for the bomb, or GOAWAY(ENHANCE_YOUR_CALM).
    let refused = o.resets.get(&3) == Some(&REFUSED_STREAM);
    let calm = o.goaway_code() == Some(ENHANCE_YOUR_CALM);
    assert!(refused || calm, "{o:?}");
    println!(
        "hostile: HPACK bomb: refused {refused}, goaway {:?}",
        o.goaway
    );
    watch.end(&server, 32, SECS(10)).await;
}

/// CVE-2019-9516 family: 10 000 small headers (about 360 KB decoded) in HEADERS + CONTINUATION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_list_is_refused() {
    let server = plaintext().await;
    let watch = Watch::begin("oversized header list", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut block = grpc_block(ECHO.path(), &[]);
    for i in 0..10_000 {
        literal(&mut block, "x-h", format!("{}", i % 10).as_bytes());
    }
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        bytes.extend(frame(kind, flags, 1, chunk));
    }
    peer.send_within(&bytes, SECS(5)).await;
    peer.read_until(SECS(5), |o| o.goaway.is_some() || o.resets.contains_key(&1))
        .await;
    let o = &peer.outcome;
    let refused = o.resets.get(&1) == Some(&REFUSED_STREAM);
    let calm = o.goaway_code() == Some(ENHANCE_YOUR_CALM);
    assert!(refused || calm, "{o:?}");
    println!(
        "hostile: oversized header list ({} frames): refused {refused}, goaway {:?}",
        chunks.len(),
        o.goaway
    );
    watch.end(&server, 32, SECS(10)).await;
}

/// CVE-2019-9515 / 9512: 100 000 SETTINGS, then 100 000 PINGs, then a call, written while we
/// do not read for 300 ms. h2 answers one at a time and stops reading while an answer is
/// unwritten, so memory stays flat; once we read, every one is answered and the call is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_are_answered_with_flat_memory() {
    use tokio::io::AsyncWriteExt as _;
    let server = plaintext().await;
    let watch = Watch::begin("SETTINGS + PING flood x100000", &server).await;
    let peer = RawPeer::connect(server.addr, &[]).await;
    let n = 100_000;
    let one = settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]);
    let mut flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
    let ping = frame(PING, 0, 0, b"12345678");
    flood.extend(ping.iter().copied().cycle().take(ping.len() * n));
    flood.extend(echo_raw(1, "after flood"));
    let (read, mut write) = peer.io.into_split();
    let writer = tokio::spawn(async move { write.write_all(&flood).await.map(|()| write) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_stalled = rss_kib();
    let mut reader = RawPeer {
        io: tokio::io::join(read, tokio::io::sink()),
        buf: peer.buf,
        outcome: Outcome::default(),
    };
    reader
        .read_until(SECS(20), |o| {
            o.settings_acks >= n && o.pongs >= n && o.ended.contains(&1)
        })
        .await;
    let _write = tokio::time::timeout(SECS(5), writer)
        .await
        .expect("the flood was not consumed")
        .unwrap()
        .unwrap();
    let o = &reader.outcome;
    println!(
        "hostile: SETTINGS/PING flood: {} SETTINGS ACKs, {} PONGs, goaway {:?}, RSS while stalled {rss_stalled} KiB",
        o.settings_acks, o.pongs, o.goaway
    );
    assert!(o.goaway.is_none(), "{o:?}");
    assert!(o.settings_acks >= n && o.pongs == n, "{o:?}");
    assert!(
        o.ended.contains(&1),
        "the call after the flood was not served"
    );
    watch.end(&server, 64, SECS(30)).await;
}

/// CVE-2019-9518: 10 000 zero-length non-END_STREAM DATA frames on a client-streaming call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_flood_is_bounded() {
    let server = plaintext().await;
    let watch = Watch::begin("empty DATA flood x10000", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut bytes = headers(1, &grpc_block(SUM.path(), &[]), false);
    for _ in 0..10_000 {
        bytes.extend(data(1, &[], false));
    }
    bytes.extend(data(1, &grpc_message(&EchoRequest::stream(3, 0)), true));
    peer.send_within(&bytes, SECS(5)).await;
    peer.read_until(SECS(5), |o| o.goaway.is_some() || o.ended.contains(&1))
        .await;
    let o = &peer.outcome;
    println!(
        "hostile: empty DATA flood: goaway {:?}, call ended {}",
        o.goaway,
        o.ended.contains(&1)
    );
    // h2 spends its data-frame budget on empty frames: GOAWAY(ENHANCE_YOUR_CALM), or (if the
    // handler consumed fast enough to refill it) the call simply completes.
    match o.goaway_code() {
        Some(code) => assert_eq!(code, ENHANCE_YOUR_CALM, "{o:?}"),
        None => assert!(o.ended.contains(&1), "{o:?}"),
    }
    assert!(server.live.wait_zero(SECS(5)).await);
    watch.end(&server, 32, SECS(10)).await;
}

/// WINDOW_UPDATE abuse: 100 000 +1 updates on the connection (accepted, the call after them
/// served), a zero increment on an open stream (GOAWAY(PROTOCOL_ERROR) in h2 0.4), and a
/// connection window overflow (GOAWAY(FLOW_CONTROL_ERROR)).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_floods_are_bounded() {
    let server = plaintext().await;
    let watch = Watch::begin("WINDOW_UPDATE floods", &server).await;

    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let one = window_update(0, 1);
    let mut bytes: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 100_000)
        .collect();
    bytes.extend(echo_raw(1, "after"));
    assert!(peer.send_within(&bytes, SECS(10)).await);
    peer.read_until(SECS(5), |o| o.ended.contains(&1)).await;
    assert!(peer.outcome.ended.contains(&1), "{:?}", peer.outcome);
    assert!(peer.outcome.goaway.is_none(), "{:?}", peer.outcome);

    // A zero increment on an open stream: h2 makes it a connection error.
    let mut bytes = headers(3, &grpc_block(SUM.path(), &[]), false);
    bytes.extend(window_update(3, 0));
    peer.send_within(&bytes, SECS(5)).await;
    assert!(peer.read_to_close(SECS(5)).await);
    assert_eq!(peer.outcome.goaway_code(), Some(PROTOCOL_ERROR));
    assert!(server.live.wait_zero(SECS(5)).await);

    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut bytes = window_update(0, 0x7FFF_FFFF);
    bytes.extend(window_update(0, 0x7FFF_FFFF));
    peer.send_within(&bytes, SECS(5)).await;
    assert!(peer.read_to_close(SECS(5)).await);
    assert_eq!(peer.outcome.goaway_code(), Some(FLOW_CONTROL_ERROR));
    watch.end(&server, 32, SECS(20)).await;
}

/// CVE-2019-9517 family: SETTINGS_INITIAL_WINDOW_SIZE = 0, then an endless server stream of
/// 16 KiB messages that can never be sent. With a 300 ms deadline the stream is cancelled
/// (RST_STREAM(CANCEL): bytes are still waiting for window) and the handler ends; without one,
/// production stops at the send buffer (no unbounded buffering) until the peer leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_slowloris_is_cancelled_by_the_deadline() {
    let server = plaintext().await;
    let watch = Watch::begin("zero-window slowloris", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    let endless = EchoRequest {
        payload: vec![7; 16 * 1024],
        ..EchoRequest::stream(0, 0)
    };
    let mut bytes = headers(
        1,
        &grpc_block(COUNT.path(), &[("grpc-timeout", b"300m")]),
        false,
    );
    bytes.extend(data_frames(1, &grpc_message(&endless), true));
    // Stream 3: the same without a deadline.
    bytes.extend(headers(3, &grpc_block(COUNT.path(), &[]), false));
    bytes.extend(data_frames(3, &grpc_message(&endless), true));
    let started = std::time::Instant::now();
    assert!(peer.send_within(&bytes, SECS(5)).await);
    peer.read_until(SECS(5), |o| {
        o.resets.contains_key(&1) || o.ended.contains(&1)
    })
    .await;
    let cancelled_after = started.elapsed();
    let o = &peer.outcome;
    assert_eq!(o.resets.get(&1), Some(&CANCEL), "{o:?}");
    assert!(!o.data.contains_key(&1), "data went through a zero window");
    assert!(
        cancelled_after < Duration::from_millis(1500),
        "{cancelled_after:?}"
    );
    // Stream 3 stalls: production stops (the sends are gated on capacity).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let produced = server.produced.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = server.produced.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "hostile: zero window: stream 1 cancelled after {cancelled_after:?}; stalled stream produced {later} messages"
    );
    assert_eq!(produced, later, "a stalled stream kept producing");
    assert!(
        later < 200,
        "{later} messages of 16 KiB produced into a zero window"
    );
    assert_eq!(
        server.live.get(),
        1,
        "only the stalled stream's handler is alive"
    );
    drop(peer);
    assert!(
        server.live.wait_zero(SECS(5)).await,
        "the handler outlived its peer"
    );
    watch.end(&server, 32, SECS(10)).await;
}

/// Streams beyond SETTINGS_MAX_CONCURRENT_STREAMS (8 here) are refused, not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused() {
    let server = start_server_with(Security::Plaintext, |c| c.max_concurrent_streams = 8).await;
    let watch = Watch::begin("streams beyond the limit", &server).await;
    let (stop, max_live) = sample_max(&server.live);
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut bytes = Vec::new();
    for i in 0..200_u32 {
        bytes.extend(sleep_call(1 + 2 * i, 300));
    }
    assert!(peer.send_within(&bytes, SECS(5)).await);
    peer.read_until(SECS(5), |o| o.ended.len() + o.resets.len() >= 200)
        .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_live = max_live.await.unwrap();
    let o = &peer.outcome;
    let refused = o.reset_count(REFUSED_STREAM);
    println!(
        "hostile: 200 streams, limit 8: {} answered, {refused} REFUSED_STREAM, max live {max_live}",
        o.ended.len()
    );
    assert!(refused >= 150, "{o:?}");
    assert_eq!(o.ended.len() + refused, 200, "{o:?}");
    // The good client has its own connection, with its own 8 streams.
    assert!(max_live <= 8 + 1, "{max_live} handlers at once");
    assert!(o.goaway.is_none());
    watch.end(&server, 32, SECS(10)).await;
}

/// Stream-id abuse: an even (server-initiated) id, and a decreasing id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_id_abuse_is_goaway_protocol_error() {
    let server = plaintext().await;
    let watch = Watch::begin("stream-id abuse", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    peer.send_within(&echo_raw(2, "even"), SECS(5)).await;
    assert!(peer.read_to_close(SECS(5)).await, "even id: not closed");
    assert_eq!(peer.outcome.goaway_code(), Some(PROTOCOL_ERROR));

    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut bytes = echo_raw(5, "five");
    bytes.extend(echo_raw(3, "three"));
    peer.send_within(&bytes, SECS(5)).await;
    assert!(
        peer.read_to_close(SECS(5)).await,
        "decreasing id: not closed"
    );
    let o = &peer.outcome;
    assert_eq!(o.goaway, Some((5, PROTOCOL_ERROR)), "{o:?}");
    watch.end(&server, 16, SECS(10)).await;
}

/// A peer that sends part of the preface, or the whole preface and nothing more, is closed
/// after the (short, configured) handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preface_then_nothing_is_closed_at_the_handshake_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let server = start_server_with(Security::Plaintext, |c| {
        c.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let watch = Watch::begin("preface then nothing", &server).await;
    for (what, bytes) in [
        ("half the magic", &b"PRI * HTTP/2.0\r\n"[..]),
        ("the magic alone", &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let started = std::time::Instant::now();
        let mut peer = RawPeer::new(tcp);
        assert!(peer.read_to_close(SECS(3)).await, "{what}: held open");
        println!("hostile: {what}: closed after {:?}", started.elapsed());
    }
    watch.end(&server, 16, SECS(10)).await;
}

/// A peer that never reads: four endless 8 KiB-message streams with a 500 ms deadline, 1 MiB stream
/// windows and a 16 MiB connection window, fill the socket buffers and the windows; the
/// handlers still end at the deadline and memory stays bounded by the send buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_never_reads_is_bounded() {
    let server = plaintext().await;
    let watch = Watch::begin("peer that never reads", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]).await;
    peer.send_within(&window_update(0, 16 << 20), SECS(5)).await;
    let endless = EchoRequest {
        payload: vec![7; 8 * 1024],
        ..EchoRequest::stream(0, 0)
    };
    let mut bytes = Vec::new();
    for i in 0..4_u32 {
        let id = 1 + 2 * i;
        bytes.extend(headers(
            id,
            &grpc_block(COUNT.path(), &[("grpc-timeout", b"500m")]),
            false,
        ));
        bytes.extend(data_frames(id, &grpc_message(&endless), true));
    }
    assert!(peer.send_within(&bytes, SECS(5)).await);
    let sent = std::time::Instant::now();
    if !server.live.wait_for(SECS(2), |n| n == 4).await {
        peer.read_until(SECS(1), |_| false).await;
        panic!(
            "the four streams did not start: {} live: {:?}",
            server.live.get(),
            peer.outcome
        );
    }
    // Never read. The handlers end at their deadline all the same.
    assert!(
        server.live.wait_zero(SECS(5)).await,
        "handlers outlived their deadline"
    );
    let ended_after = sent.elapsed();
    assert!(ended_after >= Duration::from_millis(400), "{ended_after:?}");
    let produced = server.produced.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "hostile: never reads: handlers ended after {ended_after:?}; {produced} messages of 8 KiB produced"
    );
    assert!(produced > 4, "the streams never produced");
    // Socket buffers plus the windows and 4 x 400 KiB of send buffer, in 8 KiB messages.
    // (The requests stay under the 65 535-byte connection window the server starts with.)
    assert!(
        produced < 4_000,
        "{produced} messages produced for a peer that never reads"
    );
    drop(peer);
    watch.end(&server, 64, SECS(10)).await;
}

/// "MadeYouReset" (CVE-2025-8671): 2 000 malformed requests (no `:path`), each reset by h2
/// itself (h2 0.4.20 answers REFUSED_STREAM), until h2's cap of 1 024 local resets answers
/// GOAWAY(ENHANCE_YOUR_CALM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_is_goaway_after_the_local_reset_cap() {
    let server = plaintext().await;
    let watch = Watch::begin("MadeYouReset x2000", &server).await;
    let mut peer = RawPeer::connect(server.addr, &[]).await;
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/grpc"),
    ] {
        literal(&mut block, name, value.as_bytes());
    }
    let mut bytes = Vec::new();
    for i in 0..2_000_u32 {
        bytes.extend(headers(1 + 2 * i, &block, true));
    }
    peer.send_within(&bytes, SECS(5)).await;
    peer.read_until(SECS(10), |o| o.goaway.is_some()).await;
    let o = &peer.outcome;
    let resets = o.resets.len();
    println!(
        "hostile: MadeYouReset: {resets} RST_STREAM {:?}, goaway {:?}",
        o.reset_histogram(),
        o.goaway
    );
    assert!(resets >= 1_000, "{:?}", o.reset_histogram());
    assert_eq!(o.goaway_code(), Some(ENHANCE_YOUR_CALM), "{:?}", o.goaway);
    assert_eq!(server.live.get(), 0);
    watch.end(&server, 32, SECS(15)).await;
}
