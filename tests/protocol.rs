//! The server's protocol rules, checked exactly by a raw `h2::client` peer over plaintext.
//!
//! Every case runs on one connection and is followed by a good call on that same connection,
//! so each also shows the connection keeps serving other streams.

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use http::{HeaderValue, StatusCode};

const OK: i32 = 0;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNIMPLEMENTED: i32 = 12;
const INTERNAL: i32 = 13;

struct Peer {
    addr: SocketAddr,
    send: SendRequest<Bytes>,
    _server: TestServer,
}

impl Peer {
    async fn new() -> Self {
        let server = start_server(Security::Plaintext).await;
        let send = raw_client(server.addr).await;
        Self {
            addr: server.addr,
            send,
            _server: server,
        }
    }

    fn head(&self, path: &str) -> http::Request<()> {
        grpc_head(self.addr, path)
    }

    async fn call(&mut self, head: http::Request<()>, body: Bytes, end: bool) -> RawResponse {
        raw_call(&mut self.send, head, body, end).await
    }

    /// A good echo call on the same connection: the connection still serves.
    async fn assert_still_serves(&mut self) {
        let head = self.head(ECHO.path());
        let response = self
            .call(head, framed(&EchoRequest::text("still here")), true)
            .await;
        assert_ok_with_trailers(&response);
        let reply: EchoReply = prost::Message::decode(&response.data[5..]).unwrap();
        assert_eq!(reply.text, "still here");
    }

    async fn expect_trailers_only(&mut self, head: http::Request<()>, body: Bytes, code: i32) {
        let response = self.call(head, body, true).await;
        assert_trailers_only(&response, code);
        self.assert_still_serves().await;
    }

    /// Any well-formed failure: Trailers-Only, or headers then trailers with the status.
    async fn expect_status(&mut self, head: http::Request<()>, body: Bytes, end: bool, code: i32) {
        let response = self.call(head, body, end).await;
        assert_eq!(response.head.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.grpc_status(), Some(code), "{response:?}");
        self.assert_still_serves().await;
    }
}

fn assert_trailers_only(response: &RawResponse, code: i32) {
    assert!(response.head_only, "not Trailers-Only: {response:?}");
    assert_eq!(response.head.status, StatusCode::OK);
    assert_eq!(
        response.head.headers.get("content-type"),
        Some(&HeaderValue::from_static("application/grpc"))
    );
    assert_eq!(response.grpc_status(), Some(code), "{response:?}");
}

fn assert_ok_with_trailers(response: &RawResponse) {
    assert!(!response.head_only, "{response:?}");
    assert_eq!(response.head.status, StatusCode::OK);
    // PROTOCOL-HTTP2.md: grpc-status is in the trailers even for OK (GRPC-NOTES §1.5).
    let trailers = response.trailers.as_ref().expect("no trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(response.grpc_status(), Some(OK));
    assert!(response.head.headers.get("grpc-status").is_none());
}

fn raw_frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_405() {
    let mut peer = Peer::new().await;
    let mut head = peer.head(ECHO.path());
    *head.method_mut() = http::Method::GET;
    let response = peer.call(head, Bytes::new(), true).await;
    assert_eq!(response.head.status, StatusCode::METHOD_NOT_ALLOWED);
    peer.assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_plain_is_415() {
    let mut peer = Peer::new().await;
    let mut head = peer.head(ECHO.path());
    head.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    let response = peer.call(head, framed(&EchoRequest::text("x")), true).await;
    assert_eq!(response.head.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    peer.assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_and_service_are_trailers_only_unimplemented() {
    let mut peer = Peer::new().await;
    for path in ["/test.Echo/Nope", "/no.Such/Service"] {
        let head = peer.head(path);
        peer.expect_trailers_only(head, framed(&EchoRequest::text("x")), UNIMPLEMENTED)
            .await;
    }
}

/// compression.md: an encoding the server does not support is UNIMPLEMENTED, Trailers-Only,
/// listing what it accepts. (gzip and deflate are supported since the compression commit, so
/// an encoding nobody supports stands in for the gzip of the original plan.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_encoding_is_unimplemented_with_accept_encoding() {
    let mut peer = Peer::new().await;
    let mut head = peer.head(ECHO.path());
    head.headers_mut()
        .insert("grpc-encoding", HeaderValue::from_static("snappy"));
    let response = peer.call(head, framed(&EchoRequest::text("x")), true).await;
    assert_trailers_only(&response, UNIMPLEMENTED);
    let accept = response
        .head
        .headers
        .get("grpc-accept-encoding")
        .expect("no grpc-accept-encoding");
    assert!(!accept.to_str().unwrap().contains("snappy"), "{accept:?}");
    peer.assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_with_zero_or_two_messages_is_unimplemented() {
    let mut peer = Peer::new().await;
    // Pinned: statuscodes.md names UNIMPLEMENTED for a cardinality violation (GRPC-NOTES §1.3).
    let head = peer.head(ECHO.path());
    peer.expect_status(head, Bytes::new(), true, UNIMPLEMENTED)
        .await;
    let mut two = framed(&EchoRequest::text("one")).to_vec();
    two.extend_from_slice(&framed(&EchoRequest::text("two")));
    let head = peer.head(ECHO.path());
    peer.expect_status(head, two.into(), true, UNIMPLEMENTED)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_internal() {
    let mut peer = Peer::new().await;
    let good = EchoRequest::text("x");
    let good = prost::Message::encode_to_vec(&good);
    let cases: [(&str, Bytes); 4] = [
        // A string field that claims 5 bytes and has 1.
        ("garbage protobuf", raw_frame(0, &[0x0A, 0x05, b'a'])),
        ("compressed flag without grpc-encoding", raw_frame(1, &good)),
        ("flag 2", raw_frame(2, &good)),
        (
            "truncated by END_STREAM",
            raw_frame(0, &good).slice(..4 + good.len()),
        ),
    ];
    for (what, body) in cases {
        let head = peer.head(ECHO.path());
        let response = peer.call(head, body, true).await;
        assert_eq!(
            response.grpc_status(),
            Some(INTERNAL),
            "{what}: {response:?}"
        );
        peer.assert_still_serves().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gib_length_is_resource_exhausted_promptly() {
    let mut peer = Peer::new().await;
    let head = peer.head(ECHO.path());
    let body = Bytes::from_static(&[0x00, 0xFF, 0xFF, 0xFF, 0xFF]);
    // No END_STREAM: the server must answer from the prefix alone.
    let response = tokio::time::timeout(Duration::from_secs(2), peer.call(head, body, false))
        .await
        .expect("no prompt answer to a 4 GiB length prefix");
    assert_eq!(response.head.status, StatusCode::OK);
    assert_eq!(
        response.grpc_status(),
        Some(RESOURCE_EXHAUSTED),
        "{response:?}"
    );
    peer.assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeout_is_internal() {
    let mut peer = Peer::new().await;
    let mut head = peer.head(ECHO.path());
    head.headers_mut().insert(
        "grpc-timeout",
        HeaderValue::from_static("12345678901234567890m"),
    );
    peer.expect_trailers_only(head, framed(&EchoRequest::text("x")), INTERNAL)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_grpc_timeout_is_accepted() {
    let mut peer = Peer::new().await;
    let mut head = peer.head(ECHO.path());
    head.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("10S"));
    let response = peer.call(head, framed(&EchoRequest::text("x")), true).await;
    assert_ok_with_trailers(&response);
    // The largest value the grammar allows (8 digits of hours) is a far deadline, not a panic.
    let mut head = peer.head(ECHO.path());
    head.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("99999999H"));
    let response = peer.call(head, framed(&EchoRequest::text("x")), true).await;
    assert_ok_with_trailers(&response);
    // And a tiny one that has passed by the time the server looks: DEADLINE_EXCEEDED.
    let mut head = peer.head(SLEEP.path());
    head.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("1n"));
    peer.expect_status(
        head,
        framed(&EchoRequest::sleep(1000)),
        true,
        DEADLINE_EXCEEDED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_te_is_tolerated() {
    let mut peer = Peer::new().await;
    let mut head = peer.head(ECHO.path());
    head.headers_mut().remove("te");
    let response = peer
        .call(head, framed(&EchoRequest::text("no te")), true)
        .await;
    assert_ok_with_trailers(&response);
    peer.assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_responses_carry_grpc_status_in_trailers() {
    let mut peer = Peer::new().await;
    let head = peer.head(ECHO.path());
    let response = peer.call(head, framed(&EchoRequest::text("x")), true).await;
    assert_ok_with_trailers(&response);

    let head = peer.head(COUNT.path());
    let response = peer
        .call(head, framed(&EchoRequest::stream(3, 0)), true)
        .await;
    assert_ok_with_trailers(&response);

    // A stream with no messages at all still has headers, then trailers.
    let head = peer.head(SUM.path());
    let response = peer.call(head, Bytes::new(), true).await;
    assert_ok_with_trailers(&response);

    let mut two = framed(&EchoRequest::text("a")).to_vec();
    two.extend_from_slice(&framed(&EchoRequest::text("b")));
    let head = peer.head(BIDI.path());
    let response = peer.call(head, two.into(), true).await;
    assert_ok_with_trailers(&response);

    // Messages split across DATA frames and several in one frame decode the same.
    let head = peer.head(BIDI.path());
    let mut ready = bounded(peer.send.clone().ready()).await.unwrap();
    let (response, mut stream) = ready.send_request(head, false).unwrap();
    let mut bytes = framed(&EchoRequest::text("split")).to_vec();
    bytes.extend_from_slice(&framed(&EchoRequest::text("joined")));
    for byte in bytes {
        stream.send_data(Bytes::from(vec![byte]), false).unwrap();
    }
    stream.send_data(Bytes::new(), true).unwrap();
    let response = bounded(response).await.unwrap();
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = bounded(body.data()).await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = bounded(body.trailers()).await.unwrap().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let first_len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
    let first: EchoReply = prost::Message::decode(&data[5..5 + first_len]).unwrap();
    let second: EchoReply = prost::Message::decode(&data[10 + first_len..]).unwrap();
    assert_eq!(
        (first.text.as_str(), second.text.as_str()),
        ("split", "joined")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_empty_messages_are_counted() {
    let mut peer = Peer::new().await;
    let mut body = framed(&EchoRequest {
        count: 7,
        ..EchoRequest::default()
    })
    .to_vec();
    for _ in 0..10_000 {
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
    }
    let head = peer.head(SUM.path());
    let response = peer.call(head, body.into(), true).await;
    assert_ok_with_trailers(&response);
    let reply: EchoReply = prost::Message::decode(&response.data[5..]).unwrap();
    assert_eq!(reply.index, 7);
    peer.assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_fail_that_call_alone() {
    let server = start_server(Security::Plaintext).await;
    let channel = server.channel().await;
    let mut request = satellite::grpc::Request::new(EchoRequest::text("big"));
    let big = "v".repeat(20 * 1024);
    request.metadata_mut().insert("x-big", &big).unwrap();
    let status = bounded(channel.unary(&ECHO, request)).await.unwrap_err();
    // h2 answers 431 itself; http-grpc-status-mapping.md maps 431 to INTERNAL.
    assert_eq!(status.code(), satellite::grpc::Code::Internal, "{status:?}");
    assert_eq!(echo_call(&channel, "after").await.unwrap().text, "after");
}

// ===== the client's rules, against a scripted h2 server =====

/// One scripted answer: gets the request head and the responder, returns false to close the
/// connection at once.
type Script = fn(&http::request::Parts, h2::server::SendResponse<Bytes>) -> bool;

/// A raw h2 server answering every call with `script`.
async fn scripted_server(script: Script) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    let (head, _body) = request.into_parts();
                    if !script(&head, respond) {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn grpc_headers(status: u16) -> http::Response<()> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn trailers(code: &'static str) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from_static(code));
    map
}

async fn client_sees(script: Script) -> satellite::grpc::Status {
    let addr = scripted_server(script).await;
    let channel = plaintext_channel(addr).await;
    echo_call(&channel, "x").await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maps_http_status_without_grpc_status() {
    use satellite::grpc::Code;
    let status = client_sees(|_, mut respond| {
        let response = http::Response::builder().status(503).body(()).unwrap();
        respond.send_response(response, true).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = client_sees(|_, mut respond| {
        let response = http::Response::builder().status(404).body(()).unwrap();
        respond.send_response(response, true).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // grpc-status wins over :status.
    let status = client_sees(|_, mut respond| {
        let mut response = grpc_headers(503);
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("5"));
        respond.send_response(response, true).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_trailers_only_status_and_message() {
    let status = client_sees(|_, mut respond| {
        let mut response = grpc_headers(200);
        let headers = response.headers_mut();
        headers.insert("grpc-status", HeaderValue::from_static("9"));
        headers.insert("grpc-message", HeaderValue::from_static("caf%C3%A9%20%25"));
        respond.send_response(response, true).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), satellite::grpc::Code::FailedPrecondition);
    assert_eq!(status.message(), "café %");
}

// Regression: a headers-only 200 response with END_STREAM and no grpc-status was reported as
// INTERNAL ("closed the stream without sending trailers") instead of UNKNOWN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_grpc_status_is_unknown_or_internal() {
    use satellite::grpc::Code;
    // http-grpc-status-mapping.md: :status 200, END_STREAM and no grpc-status is UNKNOWN.
    let status = client_sees(|_, mut respond| {
        respond.send_response(grpc_headers(200), true).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    // Not gRPC at all.
    let status = client_sees(|_, mut respond| {
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "text/html")
            .body(())
            .unwrap();
        respond.send_response(response, true).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    // Trailers without grpc-status.
    let status = client_sees(|_, mut respond| {
        let mut send = respond.send_response(grpc_headers(200), false).unwrap();
        send.send_data(framed(&EchoReply::default()), false)
            .unwrap();
        send.send_trailers(http::HeaderMap::new()).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    // A body ended by END_STREAM on DATA, without trailers (grpc-go says INTERNAL).
    let status = client_sees(|_, mut respond| {
        let mut send = respond.send_response(grpc_headers(200), false).unwrap();
        send.send_data(framed(&EchoReply::default()), true).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

// Regression: when the server answered before the request body went out (here: headers and
// trailers, then RST_STREAM NO_ERROR from dropping the request body), the client's unary and
// server-streaming calls failed the send with "inactive stream" and reported UNAVAILABLE
// instead of the response's status. Flaky before the fix (about 1 run in 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_checks_response_cardinality_and_framing() {
    use satellite::grpc::Code;
    let status = client_sees(|_, mut respond| {
        let mut send = respond.send_response(grpc_headers(200), false).unwrap();
        send.send_trailers(trailers("0")).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = client_sees(|_, mut respond| {
        let mut send = respond.send_response(grpc_headers(200), false).unwrap();
        let mut two = framed(&EchoReply::default()).to_vec();
        two.extend_from_slice(&framed(&EchoReply::default()));
        send.send_data(two.into(), false).unwrap();
        send.send_trailers(trailers("0")).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = client_sees(|_, mut respond| {
        let mut send = respond.send_response(grpc_headers(200), false).unwrap();
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 9, 1]), false)
            .unwrap();
        send.send_trailers(trailers("0")).unwrap();
        true
    })
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maps_rst_stream_codes() {
    use satellite::grpc::Code;
    let status = client_sees(|_, mut respond| {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        true
    })
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = client_sees(|_, mut respond| {
        respond.send_reset(h2::Reason::CANCEL);
        true
    })
    .await;
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    let status = client_sees(|_, mut respond| {
        respond.send_reset(h2::Reason::ENHANCE_YOUR_CALM);
        true
    })
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = client_sees(|_, mut respond| {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        true
    })
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    // RST_STREAM(NO_ERROR) before the trailers: INTERNAL.
    let status = client_sees(|_, mut respond| {
        let mut send = respond.send_response(grpc_headers(200), false).unwrap();
        send.send_data(framed(&EchoReply::default()), false)
            .unwrap();
        send.send_reset(h2::Reason::NO_ERROR);
        true
    })
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sees_a_dropped_connection_as_unavailable() {
    let status = client_sees(|_, _| false).await;
    assert_eq!(
        status.code(),
        satellite::grpc::Code::Unavailable,
        "{status:?}"
    );
}
