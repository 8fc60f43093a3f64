//! gRPC-level abuse at volume, beside a good client: each malformed request many times over,
//! with its status asserted every time, RSS and time bounded. tests/protocol.rs pins each rule
//! once; this suite shows none of them leaks or slows the server when repeated.

mod common;
mod hostile;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hostile::*;
use http::{HeaderValue, StatusCode};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const OK: i32 = 0;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNIMPLEMENTED: i32 = 12;
const INTERNAL: i32 = 13;

fn raw_frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out.into()
}

/// Runs `n` calls built by `make` over one raw h2 connection, 32 at a time, and checks each
/// response with `check`.
async fn hammer(
    server: &TestServer,
    n: usize,
    make: impl Fn(usize) -> (http::Request<()>, Bytes, bool),
    check: impl Fn(&RawResponse) + Clone + Send + 'static,
) {
    let send = raw_client(server.addr).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (head, body, end) = make(i);
        let mut send = send.clone();
        let check = check.clone();
        tasks.spawn(async move {
            let response = raw_call(&mut send, head, body, end).await;
            check(&response);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn status_is(code: i32) -> impl Fn(&RawResponse) + Clone + Send + 'static {
    move |r: &RawResponse| {
        assert_eq!(r.head.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.grpc_status(), Some(code), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_at_volume() {
    let server = start_server(Security::Plaintext).await;
    let addr = server.addr;
    let watch = Watch::begin("malformed messages x1000", &server).await;
    let good = prost::Message::encode_to_vec(&EchoRequest::text("x"));
    let cases: [(&str, Bytes, bool, i32); 5] = [
        // No END_STREAM: answered from the prefix alone.
        (
            "4 GiB length prefix",
            Bytes::from_static(&[0, 0xFF, 0xFF, 0xFF, 0xFF]),
            false,
            RESOURCE_EXHAUSTED,
        ),
        (
            "truncated by END_STREAM",
            raw_frame(0, &good).slice(..4 + good.len()),
            true,
            INTERNAL,
        ),
        (
            "compressed flag without grpc-encoding",
            raw_frame(1, &good),
            true,
            INTERNAL,
        ),
        ("flag 2", raw_frame(2, &good), true, INTERNAL),
        (
            "garbage protobuf",
            raw_frame(0, &[0x0A, 0x05, b'a']),
            true,
            INTERNAL,
        ),
    ];
    for (what, body, end, code) in cases {
        let started = std::time::Instant::now();
        hammer(
            &server,
            200,
            |_| (grpc_head(addr, ECHO.path()), body.clone(), end),
            status_is(code),
        )
        .await;
        println!("hostile: {what} x200: {code} each, {:?}", started.elapsed());
    }
    assert!(server.live.wait_zero(SECS(5)).await);
    watch.end(&server, 32, SECS(30)).await;
}

/// 1 GiB of zeros... scaled down: 64 MiB of zeros gzipped to about 64 KiB, past the 4 MiB
/// limit by 16x. Bounded decompression: RESOURCE_EXHAUSTED, and RSS grows by about the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_resource_exhausted_with_bounded_memory() {
    use std::io::Write as _;
    let server = start_server(Security::Plaintext).await;
    let addr = server.addr;
    let started = std::time::Instant::now();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // A bytes field (tag 4) of 64 MiB, so it would even decode if it were allowed.
    let len = 64 * 1024 * 1024_u64;
    let mut head = vec![0x22];
    prost::encoding::encode_varint(len, &mut head);
    gz.write_all(&head).unwrap();
    let zeros = vec![0_u8; 1024 * 1024];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = raw_frame(1, &gz.finish().unwrap());
    println!(
        "hostile: gzip bomb: {} bytes inflating to 64 MiB (built in {:?})",
        bomb.len(),
        started.elapsed()
    );
    let watch = Watch::begin("gzip bomb x20", &server).await;
    hammer(
        &server,
        20,
        |_| {
            let mut head = grpc_head(addr, ECHO.path());
            head.headers_mut()
                .insert("grpc-encoding", HeaderValue::from_static("gzip"));
            (head, bomb.clone(), true)
        },
        status_is(RESOURCE_EXHAUSTED),
    )
    .await;
    watch.end(&server, 48, SECS(20)).await;
}

/// Requests that are not gRPC, or bend its headers, many times each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_at_volume() {
    let server = start_server(Security::Plaintext).await;
    let addr = server.addr;
    let watch = Watch::begin("malformed heads x800", &server).await;
    let body = framed(&EchoRequest::text("x"));
    let b = body.clone();
    hammer(
        &server,
        200,
        move |_| {
            let mut head = grpc_head(addr, ECHO.path());
            *head.method_mut() = http::Method::GET;
            (head, Bytes::new(), true)
        },
        |r: &RawResponse| assert_eq!(r.head.status, StatusCode::METHOD_NOT_ALLOWED, "{r:?}"),
    )
    .await;
    hammer(
        &server,
        200,
        move |_| {
            let mut head = grpc_head(addr, ECHO.path());
            head.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain"));
            (head, b.clone(), true)
        },
        |r: &RawResponse| assert_eq!(r.head.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}"),
    )
    .await;
    let b = body.clone();
    hammer(
        &server,
        200,
        move |_| {
            let mut head = grpc_head(addr, ECHO.path());
            head.headers_mut().remove("te");
            (head, b.clone(), true)
        },
        status_is(OK),
    )
    .await;
    let b = body.clone();
    hammer(
        &server,
        200,
        move |_| {
            let mut head = grpc_head(addr, SLEEP.path());
            head.headers_mut().insert(
                "grpc-timeout",
                HeaderValue::from_static("12345678901234567890S"),
            );
            (head, b.clone(), true)
        },
        status_is(INTERNAL),
    )
    .await;
    assert!(server.live.wait_zero(SECS(5)).await);
    watch.end(&server, 32, SECS(30)).await;
}

/// Metadata abuse: 80 headers of 140-byte values (14 KiB, under the 16 KiB limit) are served; a
/// 1 MiB value fails that call alone (h2: 431 + REFUSED_STREAM, or GOAWAY past 4x the limit);
/// junk in a `-bin` header does not fail the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_metadata_fails_that_call_alone() {
    let server = start_server(Security::Plaintext).await;
    let addr = server.addr;
    let watch = Watch::begin("huge metadata", &server).await;
    let body = framed(&EchoRequest::text("x"));
    let b = body.clone();
    hammer(
        &server,
        100,
        move |_| {
            let mut head = grpc_head(addr, ECHO.path());
            for i in 0..80 {
                let name = http::HeaderName::from_bytes(format!("x-m{i}").as_bytes()).unwrap();
                head.headers_mut()
                    .insert(name, HeaderValue::from_str(&"v".repeat(140)).unwrap());
            }
            head.headers_mut()
                .insert("x-junk-bin", HeaderValue::from_static("!!!not base64!!!"));
            (head, b.clone(), true)
        },
        status_is(OK),
    )
    .await;
    for _ in 0..5 {
        let send = raw_client(addr).await;
        let mut head = grpc_head(addr, ECHO.path());
        head.headers_mut().insert(
            "x-huge",
            HeaderValue::from_str(&"v".repeat(1024 * 1024)).unwrap(),
        );
        let outcome = tokio::time::timeout(SECS(5), async {
            let mut ready = send.clone().ready().await?;
            let (response, _stream) = ready.send_request(head, true)?;
            response.await.map(|r| r.status())
        })
        .await
        .expect("a 1 MiB header hung");
        match outcome {
            Ok(status) => assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            Err(e) => assert!(
                e.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
                    || e.is_go_away()
                    || e.is_io(),
                "{e:?}"
            ),
        }
    }
    watch.end(&server, 48, SECS(20)).await;
}

/// An unknown method at a high rate: 5 000 calls, 32 at a time, each Trailers-Only
/// UNIMPLEMENTED; no handler ever runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_at_high_rate() {
    let server = start_server(Security::Plaintext).await;
    let addr = server.addr;
    let watch = Watch::begin("unknown method x5000", &server).await;
    let started = std::time::Instant::now();
    let body = framed(&EchoRequest::text("x"));
    hammer(
        &server,
        5_000,
        move |i| {
            let path = if i % 2 == 0 {
                "/test.Echo/Nope"
            } else {
                "/no.Such/Service"
            };
            (grpc_head(addr, path), body.clone(), true)
        },
        |r: &RawResponse| {
            assert!(r.head_only, "{r:?}");
            assert_eq!(r.grpc_status(), Some(UNIMPLEMENTED), "{r:?}");
        },
    )
    .await;
    let rate = 5_000.0 / started.elapsed().as_secs_f64();
    println!("hostile: unknown method: 5000 calls at {rate:.0}/s");
    assert_eq!(server.live.get(), 0);
    watch.end(&server, 32, SECS(30)).await;
}
