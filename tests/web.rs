//! The browser listener end to end over plain HTTP/1.1 on loopback: the page, Connect (JSON and
//! binary, POST and GET, unary and streaming), gRPC-Web (binary and text), errors as each
//! protocol spells them, deadlines, CORS, and hostile input beside a good call. The stock
//! connect-node and browser clients are exercised by `tests/web/` (npm).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

mod common;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use satellite::{
    app::{
        map::Map,
        page,
        service::{MapService, ServiceOptions},
        FILE_DESCRIPTOR_SET,
    },
    grpc::{self, BoxFuture, BrowserConfig, CallHead, ServerInterceptor, Status},
};

/// The map file the binary embeds.
const WORLD: &str = include_str!("../src/satellite/world.txt");

fn cell(x: usize, y: usize) -> u8 {
    let lines: Vec<&str> = WORLD.lines().collect();
    lines[lines.len() - 1 - y].as_bytes()[x]
}

/// Refuses calls that carry `x-deny`, to show the router's interceptors run for web calls.
struct DenyFlag;

impl ServerInterceptor for DenyFlag {
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        let denied = head.metadata.get("x-deny").is_some();
        Box::pin(async move {
            if denied {
                Err(Status::permission_denied("x-deny was set"))
            } else {
                Ok(())
            }
        })
    }
}

async fn start(send_delay: Duration) -> SocketAddr {
    let options = ServiceOptions {
        send_delay,
        img_bytes: 1,
    };
    let service = MapService::new(Map::world(), &options);
    let router = service.router().intercept(DenyFlag);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BrowserConfig {
        allowed_origins: vec!["https://app.example".into()],
        files: page::files(80, 32),
        descriptor_set: Some(FILE_DESCRIPTOR_SET),
        header_read_timeout: Duration::from_millis(500),
        ..BrowserConfig::default()
    };
    tokio::spawn(grpc::run_browser(
        listener,
        config,
        router,
        std::future::pending(),
    ));
    addr
}

/// A response: status, lower-case headers, body (de-chunked).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection (`connection: close`), read to the end.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    // A server that refuses a body early may close before it is all written: read anyway.
    let _ = stream.write_all(body);
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    parse(&all)
}

fn parse(all: &[u8]) -> Reply {
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = std::str::from_utf8(&all[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = all[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    if chunked {
        let (mut out, mut rest) = (Vec::new(), &body[..]);
        loop {
            let line = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line]).unwrap(), 16).unwrap();
            rest = &rest[line + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// Envelopes (gRPC-Web frames, Connect envelopes): (flags, payload).
fn envelopes(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "trailing bytes");
    out
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

const GET_IMAGE: &str = "/satellite.Satellite/GetImage";
const GET_IMAGES: &str = "/satellite.Satellite/GetImages";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_the_map_size() {
    let addr = start(Duration::ZERO).await;
    let r = tokio::task::spawn_blocking(move || http(addr, "GET", "/", &[], b""))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = String::from_utf8(r.body).unwrap();
    assert!(
        html.contains(r#"data-width="80" data-height="32""#),
        "{html}"
    );
    let js = tokio::task::spawn_blocking(move || http(addr, "GET", "/app.js", &[], b""))
        .await
        .unwrap();
    assert_eq!(js.status, 200);
    assert!(js.body.len() > 10_000);
    let none = tokio::task::spawn_blocking(move || http(addr, "GET", "/nope", &[], b""))
        .await
        .unwrap();
    assert_eq!(none.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_unary_in_json_and_binary_post_and_get() {
    let addr = start(Duration::ZERO).await;
    tokio::task::spawn_blocking(move || {
        let json_type = [
            ("content-type", "application/json"),
            ("connect-protocol-version", "1"),
        ];
        let r = http(
            addr,
            "POST",
            GET_IMAGE,
            &json_type,
            br#"{"x": 10, "y": 20}"#,
        );
        assert_eq!(r.status, 200);
        let v = json(&r.body);
        assert_eq!((v["x"].as_i64(), v["y"].as_i64()), (Some(10), Some(20)));
        let img = STANDARD.decode(v["img"].as_str().unwrap()).unwrap();
        assert_eq!(img, [cell(10, 20)]);

        // Binary: the bare message, no envelope.
        let r = http(
            addr,
            "POST",
            GET_IMAGE,
            &[("content-type", "application/proto")],
            &[0x08, 10, 0x10, 20],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/proto"));
        assert_eq!(r.body, [0x08, 10, 0x10, 20, 0x1a, 1, cell(10, 20)]);

        // GET for the side-effect-free method.
        let path =
            format!("{GET_IMAGE}?connect=v1&encoding=json&message=%7B%22x%22%3A3%2C%22y%22%3A4%7D");
        let r = http(addr, "GET", &path, &[], b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(json(&r.body)["x"], 3);

        // Off the map: OUT_OF_RANGE as HTTP 400 and the JSON error.
        let r = http(addr, "POST", GET_IMAGE, &json_type, br#"{"x": 80, "y": 0}"#);
        assert_eq!(r.status, 400);
        assert_eq!(json(&r.body)["code"], "out_of_range");

        // The router's interceptors run: metadata from plain headers.
        let denied = [("content-type", "application/json"), ("x-deny", "1")];
        let r = http(addr, "POST", GET_IMAGE, &denied, br#"{"x": 1, "y": 1}"#);
        assert_eq!(r.status, 403);
        assert_eq!(json(&r.body)["code"], "permission_denied");

        // An unknown method is 404; an unknown content type 415.
        let r = http(addr, "POST", "/satellite.Satellite/Nope", &json_type, b"{}");
        assert_eq!(r.status, 404);
        assert_eq!(json(&r.body)["code"], "unimplemented");
        let r = http(
            addr,
            "POST",
            GET_IMAGE,
            &[("content-type", "text/plain")],
            b"x",
        );
        assert_eq!(r.status, 415);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_grpc_web_stream_the_whole_map() {
    let addr = start(Duration::ZERO).await;
    tokio::task::spawn_blocking(move || {
        let area = [0x0a, 0x00, 0x12, 0x04, 0x08, 79, 0x10, 31]; // ll (0,0), ur (79,31)
        let check = |frames: &[(u8, Vec<u8>)]| {
            assert_eq!(frames.len(), 2560 + 1);
            // Rows from the top down, x ascending.
            let (flags, first) = &frames[0];
            assert_eq!(*flags, 0);
            assert_eq!(first[first.len() - 1], cell(0, 31));
        };
        let r = http(
            addr,
            "POST",
            GET_IMAGES,
            &[("content-type", "application/connect+proto")],
            &framed(&area),
        );
        assert_eq!(r.status, 200);
        let frames = envelopes(&r.body);
        check(&frames);
        assert_eq!(frames.last().unwrap().0, 0x02, "end of stream");
        assert_eq!(json(&frames.last().unwrap().1), serde_json::json!({}));

        let r = http(
            addr,
            "POST",
            GET_IMAGES,
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
            ],
            &framed(&area),
        );
        assert_eq!(r.status, 200);
        let frames = envelopes(&r.body);
        check(&frames);
        let (flags, trailers) = frames.last().unwrap();
        assert_eq!(*flags, 0x80);
        assert!(String::from_utf8_lossy(trailers).contains("grpc-status: 0\r\n"));

        // JSON envelopes.
        let r = http(
            addr,
            "POST",
            GET_IMAGES,
            &[("content-type", "application/connect+json")],
            &framed(br#"{"ll": {}, "ur": {"x": 1, "y": 0}}"#),
        );
        let frames = envelopes(&r.body);
        assert_eq!(frames.len(), 3);
        assert_eq!(json(&frames[1].1)["x"], 1);

        // Text mode, both ways.
        let body = STANDARD.encode(framed(&[0x08, 5, 0x10, 6]));
        let r = http(
            addr,
            "POST",
            GET_IMAGE,
            &[("content-type", "application/grpc-web-text")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200);
        let mut decoded = Vec::new();
        for chunk in r.body.split(|&b| b == b'=').filter(|c| !c.is_empty()) {
            let mut c = chunk.to_vec();
            while c.len() % 4 != 0 {
                c.push(b'=');
            }
            decoded.extend(STANDARD.decode(&c).unwrap());
        }
        let frames = envelopes(&decoded);
        assert_eq!(frames[0].1, [0x08, 5, 0x10, 6, 0x1a, 1, cell(5, 6)]);
        assert!(String::from_utf8_lossy(&frames[1].1).contains("grpc-status: 0"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_deadlines_and_hostile_bodies_get_clear_answers() {
    // 5 ms a cell: the whole map takes ~13 s, so a 200 ms deadline ends it.
    let addr = start(Duration::from_millis(5)).await;
    tokio::task::spawn_blocking(move || {
        let area = [0x0a, 0x00, 0x12, 0x04, 0x08, 79, 0x10, 31];
        let r = http(
            addr,
            "POST",
            GET_IMAGES,
            &[("content-type", "application/connect+proto"), ("connect-timeout-ms", "200")],
            &framed(&area),
        );
        let frames = envelopes(&r.body);
        let end = frames.last().unwrap();
        assert_eq!(end.0, 0x02);
        assert_eq!(json(&end.1)["error"]["code"], "deadline_exceeded");
        assert!(frames.len() > 2 && frames.len() < 2561, "{} frames", frames.len());

        let r = http(addr, "POST", GET_IMAGE, &[("content-type", "application/grpc-web-text")], b"not*base64!");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("grpc-status"), Some("3"), "INVALID_ARGUMENT in the head");

        let deep = format!("{}{}", r#"{"ll":"#.repeat(5000), "}".repeat(5000));
        let json_type = [("content-type", "application/json")];
        let r = http(addr, "POST", GET_IMAGES, &json_type, deep.as_bytes());
        assert_eq!(r.status, 400);
        assert_eq!(json(&r.body)["code"], "invalid_argument");
        let r = http(addr, "POST", GET_IMAGE, &json_type, b"{\"x\": ");
        assert_eq!(r.status, 400);
        let r = http(addr, "POST", GET_IMAGE, &[("content-type", "application/json"), ("connect-timeout-ms", "12345678901")], b"{}");
        assert_eq!(r.status, 400);

        // A body over the bound: RESOURCE_EXHAUSTED, not memory.
        let big = vec![b' '; 9 * 1024 * 1024];
        let r = http(addr, "POST", GET_IMAGE, &json_type, &big);
        assert_eq!(r.status, 429);
        assert_eq!(json(&r.body)["code"], "resource_exhausted");

        // Headers trickled past the header timeout: the connection is closed.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = std::time::Instant::now();
        for b in b"POST /satellite.Satellite/GetImage HTTP/1.1\r\n" {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

        // Conflicting Content-Length and Transfer-Encoding: refused, not smuggled.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /satellite.Satellite/GetImage HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || text.starts_with("HTTP/1.1 400"), "{text}");

        // And a good call beside all of it.
        let r = http(addr, "POST", GET_IMAGE, &json_type, br#"{"x": 2, "y": 3}"#);
        assert_eq!(r.status, 200);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_configured_origins_only() {
    let addr = start(Duration::ZERO).await;
    tokio::task::spawn_blocking(move || {
        let pre = [
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-token"),
        ];
        let r = http(addr, "OPTIONS", GET_IMAGE, &pre, b"");
        assert_eq!(r.status, 204);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        let allowed = r.header("access-control-allow-headers").unwrap();
        assert!(
            allowed.contains("connect-protocol-version") && allowed.contains("x-token"),
            "{allowed}"
        );
        let r = http(
            addr,
            "OPTIONS",
            GET_IMAGE,
            &[("origin", "https://evil.example")],
            b"",
        );
        assert_eq!(r.status, 403);
        let call = [
            ("origin", "https://app.example"),
            ("content-type", "application/grpc-web+proto"),
        ];
        let r = http(addr, "POST", GET_IMAGE, &call, &framed(&[0x08, 1]));
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert!(r
            .header("access-control-expose-headers")
            .unwrap()
            .contains("grpc-status"));
        let r = http(
            addr,
            "POST",
            GET_IMAGE,
            &[
                ("origin", "https://evil.example"),
                ("content-type", "application/grpc-web+proto"),
            ],
            &framed(&[0x08, 1]),
        );
        assert_eq!(r.header("access-control-allow-origin"), None);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_peer_with_hundreds_of_unread_streams_does_not_stall_others() {
    use satellite::grpc::tls::{browser_server_config, client_config, Identity, Roots};
    let pki = common::pki();
    let identity =
        Identity::from_pem(pki.server_cert.as_bytes(), pki.server_key.as_bytes()).unwrap();
    let roots = Roots::from_pem(pki.ca_cert.as_bytes()).unwrap();
    // 1 KiB images: each whole-map stream is 2.6 MB, far past what an unread window holds.
    let options = ServiceOptions {
        send_delay: Duration::ZERO,
        img_bytes: 1024,
    };
    let service = MapService::new(Map::world(), &options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BrowserConfig {
        tls: Some(browser_server_config(&identity, Some(&roots)).unwrap()),
        files: page::files(80, 32),
        descriptor_set: Some(FILE_DESCRIPTOR_SET),
        ..BrowserConfig::default()
    };
    tokio::spawn(grpc::run_browser(
        listener,
        config,
        service.router(),
        std::future::pending(),
    ));

    let connect = |alpn_h2: bool| {
        let roots = roots.clone();
        async move {
            let mut config = (*client_config(&roots, None).unwrap()).clone();
            if !alpn_h2 {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap()
        }
    };
    let request = |path: &str, body: Vec<u8>| {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/grpc-web+proto")
            .body(())
            .unwrap();
        (request, bytes::Bytes::from(body))
    };
    let area = framed(&[0x0a, 0x00, 0x12, 0x04, 0x08, 79, 0x10, 31]);
    // The hostile peer: as many streams as the server allows, none ever read.
    let (mut hostile, conn) = h2::client::handshake(connect(true).await).await.unwrap();
    tokio::spawn(conn);
    let mut held = Vec::new();
    for _ in 0..300 {
        let ready = tokio::time::timeout(Duration::from_secs(1), hostile.clone().ready()).await;
        let Ok(Ok(mut send)) = ready else { break };
        let (req, body) = request(GET_IMAGES, area.clone());
        let (response, mut stream) = send.send_request(req, false).unwrap();
        stream.send_data(body, true).unwrap();
        held.push(response);
        hostile = send;
    }
    assert!(held.len() >= 100, "{} streams opened", held.len());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A good client on its own connection, over HTTP/2 and over HTTP/1.1, answered at once.
    let started = std::time::Instant::now();
    let (good, conn) = h2::client::handshake(connect(true).await).await.unwrap();
    tokio::spawn(conn);
    let mut good = good.ready().await.unwrap();
    let (req, body) = request(GET_IMAGE, framed(&[0x08, 7, 0x10, 8]));
    let (response, mut stream) = good.send_request(req, false).unwrap();
    stream.send_data(body, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("the good call waited behind the hostile streams")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    let frames = envelopes(&all);
    assert_eq!(frames[0].1[..4], [0x08, 7, 0x10, 8]);
    let tls = connect(false).await;
    let mut io = tls;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    io.write_all(b"POST /satellite.Satellite/GetImage HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 16\r\n\r\n{\"x\": 1, \"y\": 2}").await.unwrap();
    let mut out = Vec::new();
    let _ = io.read_to_end(&mut out).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_and_oversized_headers() {
    use std::io::Write as _;
    let addr = start(Duration::ZERO).await;
    tokio::task::spawn_blocking(move || {
        let gzip = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        // Connect unary: the whole body gzipped (Content-Encoding).
        let body = gzip(br#"{"x": 10, "y": 20}"#);
        let headers = [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ];
        let r = http(addr, "POST", GET_IMAGE, &headers, &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(json(&r.body)["x"], 10);
        // gRPC-Web: a compressed frame (flag 1) under grpc-encoding.
        let payload = gzip(&[0x08, 3, 0x10, 4]);
        let mut frame = vec![1];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        let headers = [
            ("content-type", "application/grpc-web+proto"),
            ("grpc-encoding", "gzip"),
        ];
        let r = http(addr, "POST", GET_IMAGE, &headers, &frame);
        let frames = envelopes(&r.body);
        assert_eq!(frames[0].1[..4], [0x08, 3, 0x10, 4]);
        // An encoding we lack is refused by name.
        let headers = [
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ];
        let r = http(addr, "POST", GET_IMAGE, &headers, b"{}");
        assert_eq!(json(&r.body)["code"], "unimplemented");
        // A gzip bomb is cut at the message limit.
        let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
        let headers = [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ];
        let r = http(addr, "POST", GET_IMAGE, &headers, &bomb);
        assert_eq!(json(&r.body)["code"], "resource_exhausted");

        // 100 KiB of headers: refused (431) or the connection closed, never buffered on.
        let big = "v".repeat(100 * 1024);
        let headers = [
            ("content-type", "application/json"),
            ("x-big", big.as_str()),
        ];
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = format!("POST {GET_IMAGE} HTTP/1.1\r\nhost: x\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("content-length: 2\r\n\r\n{}");
        let _ = stream.write_all(head.as_bytes());
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
        // And a good call beside it.
        let r = http(
            addr,
            "POST",
            GET_IMAGE,
            &[("content-type", "application/json")],
            br#"{"x": 1}"#,
        );
        assert_eq!(r.status, 200);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_when_the_handler_asks_and_the_client_accepts() {
    use satellite::grpc::{Encoding, Method, Request, Response, Router, Unary};
    use std::io::Read as _;
    const ZIP: Method<common::EchoRequest, common::EchoReply, Unary> =
        Method::unary("/test.Zip/Zip");
    let router = Router::new().unary(&ZIP, |_: Request<common::EchoRequest>| async {
        let mut reply = Response::new(common::EchoReply {
            payload: vec![b'z'; 10_000],
            ..Default::default()
        });
        reply.set_compression(Some(Encoding::Gzip));
        Ok::<_, Status>(reply)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grpc::run_browser(
        listener,
        BrowserConfig::default(),
        router,
        std::future::pending(),
    ));
    tokio::task::spawn_blocking(move || {
        let inflate = |data: &[u8]| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let web = [
            ("content-type", "application/grpc-web+proto"),
            ("grpc-accept-encoding", "gzip"),
        ];
        let r = http(addr, "POST", "/test.Zip/Zip", &web, &framed(&[]));
        assert_eq!(r.header("grpc-encoding"), Some("gzip"));
        let frames = envelopes(&r.body);
        assert_eq!(frames[0].0, 1, "the compressed flag");
        assert!(frames[0].1.len() < 1000, "{} bytes", frames[0].1.len());
        assert_eq!(inflate(&frames[0].1).len(), 10_003, "tag, length, payload");
        // Not accepted: identity.
        let plain = [("content-type", "application/grpc-web+proto")];
        let r = http(addr, "POST", "/test.Zip/Zip", &plain, &framed(&[]));
        assert_eq!(r.header("grpc-encoding"), None);
        assert_eq!(envelopes(&r.body)[0].0, 0);
        // Connect unary: the whole body, as Content-Encoding.
        let connect = [
            ("content-type", "application/proto"),
            ("accept-encoding", "gzip"),
        ];
        let r = http(addr, "POST", "/test.Zip/Zip", &connect, b"");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(inflate(&r.body).len(), 10_003, "tag, length, payload");
        // Connect streaming: envelopes flagged 0x01, Connect-Content-Encoding.
        let stream = [
            ("content-type", "application/connect+proto"),
            ("connect-accept-encoding", "gzip"),
        ];
        let r = http(addr, "POST", "/test.Zip/Zip", &stream, &framed(&[]));
        assert_eq!(r.header("connect-content-encoding"), Some("gzip"));
        let frames = envelopes(&r.body);
        assert_eq!((frames[0].0, frames[1].0), (1, 2));
    })
    .await
    .unwrap();
}
