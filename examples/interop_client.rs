//! The standard gRPC interop client (grpc/grpc doc/interop-test-descriptions.md) on our
//! runtime, to test stock servers with.
//!
//! Run: `interop_client --server_host H --server_port P --test_case CASE|all`, adding
//! `--use_tls --ca ca-cert.pem [--cert client-cert.pem --key client-key.pem]
//! [--server_host_override NAME]` for TLS. Exits 0 when the case (or every case) passes,
//! otherwise 1 with the reason on stderr.
//!
//! What the API cannot show is not checked: a response message's compressed flag
//! (server_compressed_*), and the status of a call we cancel ourselves, which is CANCELLED by
//! construction (the cancel cases check instead that the connection still serves a call).
//! The CompressedRequest probe of client_compressed_* may get INVALID_ARGUMENT (the server
//! checks request compression) or OK (it cannot, as a grpcio server cannot); either is
//! accepted and reported.

use std::{collections::HashMap, future::Future, path::PathBuf, process::ExitCode, time::Duration};

use futures_core::Stream;
use futures_util::stream;
use satellite::grpc::{
    tls::{client_config, Identity, Roots},
    Channel, Code, Encoding, Endpoint, Method, Outgoing, Request, Status, Streaming, Unary,
};
use tokio::sync::mpsc;

#[path = "interop/service.rs"]
mod service;

use service::pb;

use pb::{
    BoolValue, EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse,
};

use service::{
    EMPTY_CALL, FULL_DUPLEX_CALL, STREAMING_INPUT_CALL, STREAMING_OUTPUT_CALL, UNARY_CALL,
    UNIMPLEMENTED_CALL, UNIMPLEMENTED_SERVICE_CALL,
};

const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
const ECHO_INITIAL_VALUE: &str = "test_initial_metadata_value";
const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";
const ECHO_TRAILING_VALUE: &[u8] = &[0xab, 0xab, 0xab];
const SPECIAL_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n";

/// Every call but the deadline case's gets this timeout, so no case can hang.
const TIMEOUT: Duration = Duration::from_secs(10);

const CASES: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_compressed_streaming",
    "server_compressed_streaming",
];

type Outcome = Result<(), String>;

fn fail<T>(message: impl Into<String>) -> Result<T, String> {
    Err(message.into())
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Outcome {
    if condition {
        Ok(())
    } else {
        Err(message())
    }
}

fn status_err(status: Status) -> String {
    format!("call failed: {status}")
}

/// `--name value`, `--name=value`, or a bare `--name` (true).
fn parse_flags() -> Result<HashMap<String, String>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut flags = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i]
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {:?}", args[i]))?;
        if let Some((k, v)) = arg.split_once('=') {
            flags.insert(k.to_owned(), v.to_owned());
        } else if args.get(i + 1).is_some_and(|v| !v.starts_with("--")) {
            flags.insert(arg.to_owned(), args[i + 1].clone());
            i += 1;
        } else {
            flags.insert(arg.to_owned(), "true".to_owned());
        }
        i += 1;
    }
    Ok(flags)
}

fn payload(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: pb::PayloadType::Compressable.into(),
        body: vec![0; size].into(),
    })
}

fn check_body(payload: Option<&Payload>, size: usize) -> Outcome {
    let body = payload.map_or(&[][..], |p| &p.body[..]);
    check(body.len() == size, || {
        format!("payload of {} bytes, want {size}", body.len())
    })?;
    check(body.iter().all(|&b| b == 0), || {
        "payload is not all zeros".into()
    })
}

fn params(size: i32) -> ResponseParameters {
    ResponseParameters {
        size,
        ..Default::default()
    }
}

fn request<T>(message: T) -> Request<T> {
    Request::new(message).with_timeout(TIMEOUT)
}

/// A request stream the case feeds one message at a time; dropping the sender half-closes.
fn feed<T: Send + 'static>() -> (
    mpsc::UnboundedSender<T>,
    impl Stream<Item = T> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let requests = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (tx, requests)
}

fn expect_status<T>(result: Result<T, Status>, code: Code, message: Option<&str>) -> Outcome {
    match result {
        Ok(_) => fail(format!("the call succeeded, want {code:?}")),
        Err(status) => {
            check(status.code() == code, || {
                format!("status {status}, want {code:?}")
            })?;
            if let Some(message) = message {
                check(status.message() == message, || {
                    format!("status message {:?}, want {message:?}", status.message())
                })?;
            }
            Ok(())
        }
    }
}

/// Reads a response stream to its end: the messages, then the trailing status.
async fn drain<T: prost::Message + Default>(stream: &mut Streaming<T>) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

async fn empty_unary(ch: &Channel) -> Outcome {
    let _: Empty = ch
        .unary(&EMPTY_CALL, request(Empty {}))
        .await
        .map_err(status_err)?
        .into_inner();
    Ok(())
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_size: 314_159,
        payload: payload(271_828),
        ..Default::default()
    }
}

async fn large_unary(ch: &Channel) -> Outcome {
    let r: SimpleResponse = ch
        .unary(&UNARY_CALL, request(large_request()))
        .await
        .map_err(status_err)?
        .into_inner();
    check_body(r.payload.as_ref(), 314_159)
}

async fn client_streaming(ch: &Channel) -> Outcome {
    let requests = [27_182, 8, 1_828, 45_904].map(|n| StreamingInputCallRequest {
        payload: payload(n),
        ..Default::default()
    });
    let r: StreamingInputCallResponse = ch
        .client_streaming(&STREAMING_INPUT_CALL, request(stream::iter(requests)))
        .await
        .map_err(status_err)?
        .into_inner();
    check(r.aggregated_payload_size == 74_922, || {
        format!("aggregated size {}", r.aggregated_payload_size)
    })
}

async fn server_streaming(ch: &Channel) -> Outcome {
    let sizes = [31_415, 9, 2_653, 58_979];
    let req = StreamingOutputCallRequest {
        response_parameters: sizes.iter().map(|&n| params(n)).collect(),
        ..Default::default()
    };
    let mut responses = ch
        .server_streaming(&STREAMING_OUTPUT_CALL, request(req))
        .await
        .map_err(status_err)?
        .into_inner();
    let got = drain(&mut responses).await.map_err(status_err)?;
    check(got.len() == sizes.len(), || {
        format!("{} responses, want {}", got.len(), sizes.len())
    })?;
    for (r, &n) in got.iter().zip(&sizes) {
        check_body(r.payload.as_ref(), n as usize)?;
    }
    Ok(())
}

/// Starts a FullDuplexCall with `first` already queued: `bidi_streaming` returns once the
/// response head arrives, and a server may hold its head back until the first request (grpcio
/// sends it with the first response).
async fn start_duplex(
    ch: &Channel,
    first: StreamingOutputCallRequest,
    timeout: Duration,
) -> Result<
    (
        mpsc::UnboundedSender<StreamingOutputCallRequest>,
        Result<Streaming<StreamingOutputCallResponse>, Status>,
    ),
    String,
> {
    let (tx, requests) = feed();
    tx.send(first)
        .map_err(|_| "the request stream closed early".to_owned())?;
    let req = Request::new(requests).with_timeout(timeout);
    let responses = ch
        .bidi_streaming(&FULL_DUPLEX_CALL, req)
        .await
        .map(|r| r.into_inner());
    Ok((tx, responses))
}

async fn ping_pong(ch: &Channel) -> Outcome {
    let pairs = [(31_415, 27_182), (9, 8), (2_653, 1_828), (58_979, 45_904)];
    let ping = |(size, body): (i32, usize)| StreamingOutputCallRequest {
        response_parameters: vec![params(size)],
        payload: payload(body),
        ..Default::default()
    };
    let (tx, responses) = start_duplex(ch, ping(pairs[0]), TIMEOUT).await?;
    let mut responses = responses.map_err(status_err)?;
    for (i, (size, _)) in pairs.into_iter().enumerate() {
        if i > 0 {
            tx.send(ping(pairs[i]))
                .map_err(|_| "the request stream closed early".to_owned())?;
        }
        match responses.message().await.map_err(status_err)? {
            Some(r) => check_body(r.payload.as_ref(), size as usize)?,
            None => return fail("the response stream ended early"),
        }
    }
    drop(tx);
    let rest = drain(&mut responses).await.map_err(status_err)?;
    check(rest.is_empty(), || {
        format!("{} responses too many", rest.len())
    })
}

async fn empty_stream(ch: &Channel) -> Outcome {
    let requests = stream::iter(Vec::<StreamingOutputCallRequest>::new());
    let mut responses = ch
        .bidi_streaming(&FULL_DUPLEX_CALL, request(requests))
        .await
        .map_err(status_err)?
        .into_inner();
    let got = drain(&mut responses).await.map_err(status_err)?;
    check(got.is_empty(), || {
        format!("{} responses, want none", got.len())
    })
}

/// After a cancelled call, the connection must still serve calls.
async fn still_serves(ch: &Channel) -> Outcome {
    empty_unary(ch)
        .await
        .map_err(|e| format!("after the cancel: {e}"))
}

async fn cancel_after_begin(ch: &Channel) -> Outcome {
    let (tx, requests) = feed::<StreamingInputCallRequest>();
    // The call starts (head sent) and waits for a request that never comes; dropping it is
    // the cancel (RST_STREAM CANCEL), so its status is CANCELLED here by construction. The
    // call is made in the `if let` itself: it borrows `&STREAMING_INPUT_CALL`, a temporary.
    if let Ok(result) = tokio::time::timeout(
        Duration::from_millis(200),
        ch.client_streaming(&STREAMING_INPUT_CALL, request(requests)),
    )
    .await
    {
        return fail(format!("the call ended before the cancel: {result:?}"));
    }
    drop(tx);
    still_serves(ch).await
}

async fn cancel_after_first_response(ch: &Channel) -> Outcome {
    let first = StreamingOutputCallRequest {
        response_parameters: vec![params(31_415)],
        payload: payload(27_182),
        ..Default::default()
    };
    let (tx, responses) = start_duplex(ch, first, TIMEOUT).await?;
    let mut responses = responses.map_err(status_err)?;
    match responses.message().await.map_err(status_err)? {
        Some(r) => check_body(r.payload.as_ref(), 31_415)?,
        None => return fail("no response"),
    }
    // Dropping the response stream cancels the call (and its request task).
    drop(responses);
    drop(tx);
    still_serves(ch).await
}

async fn timeout_on_sleeping_server(ch: &Channel) -> Outcome {
    let first = StreamingOutputCallRequest {
        payload: payload(27_182),
        ..Default::default()
    };
    let (tx, responses) = start_duplex(ch, first, Duration::from_millis(1)).await?;
    let result = match responses {
        Err(status) => Err(status),
        Ok(mut responses) => drain(&mut responses).await.map(drop),
    };
    drop(tx);
    expect_status(result, Code::DeadlineExceeded, None)
}

fn check_echo(initial: Option<&str>, trailing: Option<Vec<u8>>) -> Outcome {
    check(initial == Some(ECHO_INITIAL_VALUE), || {
        format!("initial metadata {ECHO_INITIAL} = {initial:?}")
    })?;
    check(trailing.as_deref() == Some(ECHO_TRAILING_VALUE), || {
        format!("trailing metadata {ECHO_TRAILING} = {trailing:?}")
    })
}

fn with_echo<T>(mut req: Request<T>) -> Result<Request<T>, String> {
    let bad = |e| format!("cannot set metadata: {e:?}");
    req.metadata_mut()
        .insert(ECHO_INITIAL, ECHO_INITIAL_VALUE)
        .map_err(bad)?;
    req.metadata_mut()
        .insert_bin(ECHO_TRAILING, ECHO_TRAILING_VALUE)
        .map_err(bad)?;
    Ok(req)
}

async fn custom_metadata(ch: &Channel) -> Outcome {
    let r = ch
        .unary(&UNARY_CALL, with_echo(request(large_request()))?)
        .await
        .map_err(status_err)?;
    check_body(r.message().payload.as_ref(), 314_159)?;
    check_echo(
        r.metadata().get(ECHO_INITIAL),
        r.trailers().get_bin(ECHO_TRAILING),
    )?;

    let req = StreamingOutputCallRequest {
        response_parameters: vec![params(314_159)],
        payload: payload(271_828),
        ..Default::default()
    };
    let r = ch
        .bidi_streaming(&FULL_DUPLEX_CALL, with_echo(request(stream::iter([req])))?)
        .await
        .map_err(status_err)?;
    let initial = r.metadata().get(ECHO_INITIAL).map(str::to_owned);
    let mut responses = r.into_inner();
    let got = drain(&mut responses).await.map_err(status_err)?;
    check(got.len() == 1, || {
        format!("{} responses, want 1", got.len())
    })?;
    check_body(got[0].payload.as_ref(), 314_159)?;
    let trailing = responses.trailers().and_then(|t| t.get_bin(ECHO_TRAILING));
    check_echo(initial.as_deref(), trailing)
}

async fn unary_status(ch: &Channel, message: &str) -> Outcome {
    let req = SimpleRequest {
        response_status: Some(EchoStatus {
            code: 2,
            message: message.to_owned(),
        }),
        ..Default::default()
    };
    let result = ch.unary(&UNARY_CALL, request(req)).await;
    expect_status(result, Code::Unknown, Some(message))
}

async fn status_code_and_message(ch: &Channel) -> Outcome {
    let message = "test status message";
    unary_status(ch, message).await?;
    let req = StreamingOutputCallRequest {
        response_status: Some(EchoStatus {
            code: 2,
            message: message.to_owned(),
        }),
        ..Default::default()
    };
    let result = match ch
        .bidi_streaming(&FULL_DUPLEX_CALL, request(stream::iter([req])))
        .await
    {
        Err(status) => Err(status),
        Ok(response) => drain(&mut response.into_inner()).await.map(drop),
    };
    expect_status(result, Code::Unknown, Some(message))
}

async fn special_status_message(ch: &Channel) -> Outcome {
    unary_status(ch, SPECIAL_MESSAGE).await
}

async fn unimplemented(ch: &Channel, method: &Method<Empty, Empty, Unary>) -> Outcome {
    let result = ch.unary(method, request(Empty {})).await;
    expect_status(result, Code::Unimplemented, None)
}

async fn unimplemented_method(ch: &Channel) -> Outcome {
    unimplemented(ch, &UNIMPLEMENTED_CALL).await
}

async fn unimplemented_service(ch: &Channel) -> Outcome {
    unimplemented(ch, &UNIMPLEMENTED_SERVICE_CALL).await
}

/// A CompressedRequest probe: an uncompressed request that says it is compressed.
fn probe_outcome<T>(result: Result<T, Status>) -> Outcome {
    match result {
        Err(status) if status.code() == Code::InvalidArgument => Ok(()),
        Ok(_) => {
            println!("  note: the server does not check request compression (probe got OK)");
            Ok(())
        }
        Err(status) => fail(format!("probe: {status}, want INVALID_ARGUMENT or OK")),
    }
}

async fn client_compressed_unary(ch: &Channel) -> Outcome {
    let req = |expect: bool| SimpleRequest {
        expect_compressed: Some(BoolValue { value: expect }),
        ..large_request()
    };
    probe_outcome(ch.unary(&UNARY_CALL, request(req(true))).await)?;
    let mut compressed = request(req(true));
    compressed.set_compression(Some(Encoding::Gzip));
    let r: SimpleResponse = ch
        .unary(&UNARY_CALL, compressed)
        .await
        .map_err(status_err)?
        .into_inner();
    check_body(r.payload.as_ref(), 314_159)?;
    let r: SimpleResponse = ch
        .unary(&UNARY_CALL, request(req(false)))
        .await
        .map_err(status_err)?
        .into_inner();
    check_body(r.payload.as_ref(), 314_159)
}

async fn server_compressed_unary(ch: &Channel) -> Outcome {
    for value in [true, false] {
        let req = SimpleRequest {
            response_compressed: Some(BoolValue { value }),
            ..large_request()
        };
        let r: SimpleResponse = ch
            .unary(&UNARY_CALL, request(req))
            .await
            .map_err(status_err)?
            .into_inner();
        check_body(r.payload.as_ref(), 314_159)?;
    }
    Ok(())
}

async fn client_compressed_streaming(ch: &Channel) -> Outcome {
    let probe = StreamingInputCallRequest {
        expect_compressed: Some(BoolValue { value: true }),
        payload: payload(27_182),
    };
    probe_outcome(
        ch.client_streaming(
            &STREAMING_INPUT_CALL,
            request(stream::iter([probe.clone()])),
        )
        .await,
    )?;
    // The same message compressed, then one (expect_compressed false) uncompressed: the
    // call's encoding is gzip, and each message says whether it uses it.
    let second = StreamingInputCallRequest {
        expect_compressed: Some(BoolValue { value: false }),
        payload: payload(45_904),
    };
    let mut req = request(stream::iter([
        Outgoing::compressed(probe),
        Outgoing::uncompressed(second),
    ]));
    req.set_compression(Some(Encoding::Gzip));
    let r: StreamingInputCallResponse = ch
        .client_streaming(&STREAMING_INPUT_CALL, req)
        .await
        .map_err(status_err)?
        .into_inner();
    check(r.aggregated_payload_size == 73_086, || {
        format!("aggregated size {}", r.aggregated_payload_size)
    })
}

async fn server_compressed_streaming(ch: &Channel) -> Outcome {
    let sizes = [(true, 31_415), (false, 92_653)];
    let req = StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .map(|&(value, size)| ResponseParameters {
                size,
                compressed: Some(BoolValue { value }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut responses = ch
        .server_streaming(&STREAMING_OUTPUT_CALL, request(req))
        .await
        .map_err(status_err)?
        .into_inner();
    let got = drain(&mut responses).await.map_err(status_err)?;
    check(got.len() == 2, || {
        format!("{} responses, want 2", got.len())
    })?;
    for (r, &(_, n)) in got.iter().zip(&sizes) {
        check_body(r.payload.as_ref(), n as usize)?;
    }
    Ok(())
}

async fn run_case(ch: &Channel, case: &str) -> Outcome {
    let fut: std::pin::Pin<Box<dyn Future<Output = Outcome> + '_>> = match case {
        "empty_unary" => Box::pin(empty_unary(ch)),
        "large_unary" => Box::pin(large_unary(ch)),
        "client_streaming" => Box::pin(client_streaming(ch)),
        "server_streaming" => Box::pin(server_streaming(ch)),
        "ping_pong" => Box::pin(ping_pong(ch)),
        "empty_stream" => Box::pin(empty_stream(ch)),
        "cancel_after_begin" => Box::pin(cancel_after_begin(ch)),
        "cancel_after_first_response" => Box::pin(cancel_after_first_response(ch)),
        "timeout_on_sleeping_server" => Box::pin(timeout_on_sleeping_server(ch)),
        "custom_metadata" => Box::pin(custom_metadata(ch)),
        "status_code_and_message" => Box::pin(status_code_and_message(ch)),
        "special_status_message" => Box::pin(special_status_message(ch)),
        "unimplemented_method" => Box::pin(unimplemented_method(ch)),
        "unimplemented_service" => Box::pin(unimplemented_service(ch)),
        "client_compressed_unary" => Box::pin(client_compressed_unary(ch)),
        "server_compressed_unary" => Box::pin(server_compressed_unary(ch)),
        "client_compressed_streaming" => Box::pin(client_compressed_streaming(ch)),
        "server_compressed_streaming" => Box::pin(server_compressed_streaming(ch)),
        other => return fail(format!("unknown test case {other:?}")),
    };
    // Every case is bounded as a whole too.
    tokio::time::timeout(TIMEOUT * 3, fut)
        .await
        .unwrap_or_else(|_| fail("timed out"))
}

fn endpoint(flags: &HashMap<String, String>) -> Result<Endpoint, String> {
    let host = flags.get("server_host").map_or("localhost", String::as_str);
    let port = flags
        .get("server_port")
        .ok_or("--server_port is required")?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut endpoint = Endpoint::new(format!("{host}:{port}")).connect_timeout(TIMEOUT);
    if flags.get("use_tls").is_some_and(|v| v == "true") {
        let ca = flags.get("ca").ok_or("--use_tls needs --ca")?;
        let roots = Roots::from_pem_file(&PathBuf::from(ca)).map_err(|e| e.to_string())?;
        let identity = match (flags.get("cert"), flags.get("key")) {
            (Some(cert), Some(key)) => Some(
                Identity::from_pem_files(&PathBuf::from(cert), &PathBuf::from(key))
                    .map_err(|e| e.to_string())?,
            ),
            (None, None) => None,
            _ => return fail("--cert and --key go together"),
        };
        let config = client_config(&roots, identity.as_ref()).map_err(|e| e.to_string())?;
        endpoint = endpoint.tls(config);
        if let Some(name) = flags.get("server_host_override") {
            endpoint = endpoint.server_name(name.clone());
        }
    }
    Ok(endpoint)
}

#[tokio::main]
async fn main() -> ExitCode {
    let setup = async {
        let flags = parse_flags()?;
        let case = flags
            .get("test_case")
            .ok_or("--test_case is required")?
            .clone();
        let cases: Vec<&str> = if case == "all" {
            CASES.to_vec()
        } else if CASES.contains(&case.as_str()) {
            vec![CASES[CASES.iter().position(|c| *c == case).unwrap_or(0)]]
        } else {
            return fail(format!("unknown test case {case:?}"));
        };
        let channel = Channel::connect(endpoint(&flags)?)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        Ok((channel, cases))
    };
    let (channel, cases) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    for case in cases {
        let start = std::time::Instant::now();
        match run_case(&channel, case).await {
            Ok(()) => println!("PASS {case} ({:.2}s)", start.elapsed().as_secs_f64()),
            Err(e) => {
                failed += 1;
                eprintln!("FAIL {case}: {e}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
