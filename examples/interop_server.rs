//! The standard gRPC interop server (`grpc.testing.TestService`, grpc/grpc
//! doc/interop-test-descriptions.md) on our runtime, for stock clients to test us with.
//!
//! Run: `interop_server --port P` (plaintext), or
//! `interop_server --port P --use_tls --cert server-cert.pem --key server-key.pem [--ca ca-cert.pem]`
//! (TLS; with `--ca`, client certificates are required and verified). The files are those
//! `satellite certs` writes. Listens on 127.0.0.1 only.
//!
//! Streaming responses are compressed per message, as each `ResponseParameters.compressed`
//! asks (`server_compressed_streaming`). The response head announces gzip when one of them
//! asks for it: for FullDuplexCall, that is decided by the first request's parameters.

use std::{collections::HashMap, path::PathBuf, pin::Pin, time::Duration};

use futures_core::Stream;
use futures_util::{stream, StreamExt as _};
use satellite::grpc::{
    self,
    tls::{server_config, Identity, Roots},
    Code, Encoding, Metadata, Outgoing, Request, Response, Router, ServerConfig, Status, Streaming,
    Transport,
};
use tokio::sync::mpsc;

#[path = "interop/service.rs"]
mod service;

use service::pb;

use pb::{
    EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse,
};

use service::{
    EMPTY_CALL, FULL_DUPLEX_CALL, HALF_DUPLEX_CALL, STREAMING_INPUT_CALL, STREAMING_OUTPUT_CALL,
    UNARY_CALL,
};

const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

/// Each response says whether it goes compressed (its `ResponseParameters.compressed`).
type ResponseItem = Result<Outgoing<StreamingOutputCallResponse>, Status>;
type ResponseStream = Pin<Box<dyn Stream<Item = ResponseItem> + Send>>;

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

fn zeros(size: i32) -> Result<Payload, Status> {
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("negative payload size {size}")))?;
    Ok(Payload {
        r#type: pb::PayloadType::Compressable.into(),
        body: vec![0; size].into(),
    })
}

fn echo_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::from_i32(s.code), s.message.clone())),
        _ => Ok(()),
    }
}

/// Copies the echo metadata of the request into the response head and trailers.
fn echo_metadata<T>(request: &Metadata, response: &mut Response<T>) -> Result<(), Status> {
    let bad = |e| Status::internal(format!("cannot echo metadata: {e:?}"));
    if let Some(v) = request.get(ECHO_INITIAL) {
        response
            .metadata_mut()
            .insert(ECHO_INITIAL, v)
            .map_err(bad)?;
    }
    if let Some(v) = request.get_bin(ECHO_TRAILING) {
        response
            .trailers_mut()
            .insert_bin(ECHO_TRAILING, &v)
            .map_err(bad)?;
    }
    Ok(())
}

/// The CompressedRequest feature: a request that expects compression must have come compressed.
fn check_compressed(expect: Option<&pb::BoolValue>, used: Option<Encoding>) -> Result<(), Status> {
    if expect.is_some_and(|b| b.value) && used.is_none() {
        return Err(Status::invalid_argument(
            "expect_compressed is true but the request was not compressed",
        ));
    }
    Ok(())
}

async fn unary_call(req: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
    check_compressed(req.message().expect_compressed.as_ref(), req.compression())?;
    echo_status(req.message().response_status.as_ref())?;
    let mut response = Response::new(SimpleResponse {
        payload: Some(zeros(req.message().response_size)?),
        ..Default::default()
    });
    if req
        .message()
        .response_compressed
        .as_ref()
        .is_some_and(|b| b.value)
    {
        response.set_compression(Some(Encoding::Gzip));
    }
    echo_metadata(req.metadata(), &mut response)?;
    Ok(response)
}

/// The responses one request asks for, each after its interval and compressed as its
/// parameters say (when the response has an encoding: see [`wants_compression`]).
fn responses_for(params: Vec<ResponseParameters>) -> impl Stream<Item = ResponseItem> {
    stream::iter(params).then(|p| async move {
        if p.interval_us > 0 {
            tokio::time::sleep(Duration::from_micros(p.interval_us.unsigned_abs().into())).await;
        }
        let response = StreamingOutputCallResponse {
            payload: Some(zeros(p.size)?),
        };
        Ok(if p.compressed.as_ref().is_some_and(|b| b.value) {
            Outgoing::compressed(response)
        } else {
            Outgoing::uncompressed(response)
        })
    })
}

/// Whether any response asks to be compressed: then the response gets gzip as its encoding,
/// which the messages that ask for it use.
fn wants_compression(params: &[ResponseParameters]) -> bool {
    params
        .iter()
        .any(|p| p.compressed.as_ref().is_some_and(|b| b.value))
}

async fn streaming_output_call(
    req: Request<StreamingOutputCallRequest>,
) -> Result<Response<ResponseStream>, Status> {
    echo_status(req.message().response_status.as_ref())?;
    let metadata = req.metadata().clone();
    let params = req.into_inner().response_parameters;
    let compress = wants_compression(&params);
    let mut response = Response::new(Box::pin(responses_for(params)) as ResponseStream);
    if compress {
        response.set_compression(Some(Encoding::Gzip));
    }
    echo_metadata(&metadata, &mut response)?;
    Ok(response)
}

async fn streaming_input_call(
    req: Request<Streaming<StreamingInputCallRequest>>,
) -> Result<Response<StreamingInputCallResponse>, Status> {
    let used = req.compression();
    let mut requests = req.into_inner();
    let mut total = 0usize;
    while let Some(m) = requests.message().await? {
        check_compressed(m.expect_compressed.as_ref(), used)?;
        total += m.payload.map_or(0, |p| p.body.len());
    }
    let total = i32::try_from(total)
        .map_err(|_| Status::invalid_argument("aggregated payload size overflows int32"))?;
    Ok(Response::new(StreamingInputCallResponse {
        aggregated_payload_size: total,
    }))
}

/// FullDuplexCall: each request's responses as soon as it arrives; a request with a
/// response_status ends the call with that status.
async fn full_duplex_call(
    req: Request<Streaming<StreamingOutputCallRequest>>,
) -> Result<Response<ResponseStream>, Status> {
    let metadata = req.metadata().clone();
    let mut requests = req.into_inner();
    // The response head goes before later requests are read: the first request decides
    // whether it announces gzip, which the responses that ask for compression then use.
    let first = requests.message().await?;
    let compress = first
        .as_ref()
        .is_some_and(|r| wants_compression(&r.response_parameters));
    let (tx, rx) = mpsc::channel::<ResponseItem>(4);
    tokio::spawn(async move {
        let mut next = first;
        while let Some(request) = next {
            if let Err(status) = echo_status(request.response_status.as_ref()) {
                let _ = tx.send(Err(status)).await;
                return;
            }
            let mut out = Box::pin(responses_for(request.response_parameters));
            while let Some(item) = out.next().await {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            next = match requests.message().await {
                Ok(n) => n,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
        }
    });
    let responses = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut response = Response::new(Box::pin(responses) as ResponseStream);
    if compress {
        response.set_compression(Some(Encoding::Gzip));
    }
    echo_metadata(&metadata, &mut response)?;
    Ok(response)
}

/// HalfDuplexCall: every request first, then all their responses in order.
async fn half_duplex_call(
    req: Request<Streaming<StreamingOutputCallRequest>>,
) -> Result<Response<ResponseStream>, Status> {
    let metadata = req.metadata().clone();
    let mut requests = req.into_inner();
    let mut params = Vec::new();
    while let Some(request) = requests.message().await? {
        echo_status(request.response_status.as_ref())?;
        params.extend(request.response_parameters);
    }
    let compress = wants_compression(&params);
    let mut response = Response::new(Box::pin(responses_for(params)) as ResponseStream);
    if compress {
        response.set_compression(Some(Encoding::Gzip));
    }
    echo_metadata(&metadata, &mut response)?;
    Ok(response)
}

fn router() -> Router {
    Router::new()
        .unary(&EMPTY_CALL, |_: Request<Empty>| async {
            Ok(Response::new(Empty {}))
        })
        .unary(&UNARY_CALL, unary_call)
        .server_streaming(&STREAMING_OUTPUT_CALL, streaming_output_call)
        .client_streaming(&STREAMING_INPUT_CALL, streaming_input_call)
        .bidi_streaming(&FULL_DUPLEX_CALL, full_duplex_call)
        .bidi_streaming(&HALF_DUPLEX_CALL, half_duplex_call)
    // UnimplementedCall is left out on purpose: the runtime answers UNIMPLEMENTED.
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = parse_flags()?;
    let port: u16 = flags.get("port").ok_or("--port is required")?.parse()?;
    let use_tls = flags.get("use_tls").is_some_and(|v| v == "true");
    let transport = if use_tls {
        let file = |name: &str| {
            flags
                .get(name)
                .map(PathBuf::from)
                .ok_or_else(|| format!("--{name} is required with --use_tls"))
        };
        let identity = Identity::from_pem_files(&file("cert")?, &file("key")?)?;
        let roots = match flags.get("ca") {
            Some(ca) => Some(Roots::from_pem_file(&PathBuf::from(ca))?),
            None => None,
        };
        Transport::Tls(server_config(&identity, roots.as_ref())?)
    } else {
        Transport::Plaintext
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "interop server listening on {} ({})",
        listener.local_addr()?,
        if use_tls { "tls" } else { "plaintext" }
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    grpc::run(listener, ServerConfig::new(transport), router(), shutdown).await?;
    Ok(())
}
