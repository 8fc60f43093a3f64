//! End to end: the server's whole request path over an in-memory connection, driven by raw
//! client bytes (the shape of h2's `fuzz_e2e.rs`: the input is both the bytes and the read
//! schedule they arrive in).

use std::time::Duration;

use satellite::grpc::{
    serve_io, BidiStreaming, ClientStreaming, Method, Request, Response, Router, ServerConfig,
    ServerStreaming, Status, Streaming, Transport, Unary,
};
use tokio::{
    io::{AsyncRead, AsyncWriteExt as _},
    sync::oneshot,
};

use crate::{
    frame::{data, headers, settings, END_STREAM, HEADERS, PREFACE, RST_STREAM},
    grpc::{grpc_block, grpc_message},
    peer::RawPeer,
};

/// Wall-clock budget for each phase of one input; exceeding it is a finding (a hang).
const BUDGET: Duration = Duration::from_secs(5);
/// The server's message size limit each way: small, so size checks are reachable.
const MAX_MESSAGE: usize = 64 * 1024;
/// Most chunk sizes in a schedule; the schedule repeats.
const MAX_SCHEDULE: usize = 16;
/// Bytes the in-memory connection buffers each way, as a socket would.
const PIPE: usize = 16 * 1024;

const ECHO: Method<Vec<u8>, Vec<u8>, Unary> = Method::unary("/fuzz.Svc/Echo");
const COUNT: Method<Vec<u8>, Vec<u8>, ServerStreaming> =
    Method::server_streaming("/fuzz.Svc/Count");
const SUM: Method<Vec<u8>, Vec<u8>, ClientStreaming> = Method::client_streaming("/fuzz.Svc/Sum");
const BIDI: Method<Vec<u8>, Vec<u8>, BidiStreaming> = Method::bidi_streaming("/fuzz.Svc/Bidi");

/// Server end to end: the HTTP/2 preface, then arbitrary client bytes in fuzzer-chosen chunks,
/// through `serve_io` (plaintext, in memory) to a router with all four call kinds.
///
/// Input: `flags schedule_len [schedule bytes] client bytes...`. When bit 0 of `flags` is set a
/// well-formed call (unary, or server-streaming when bit 1 is also set) goes first on stream 1
/// and must end with trailers (a HEADERS frame with END_STREAM) before the fuzzer's bytes are
/// written. Each schedule byte is a chunk length (0 is taken as 1), used in a cycle. After the
/// bytes the client half-closes; the server task must then end within the budget (so nothing it
/// holds outlives the connection), and must never panic.
///
/// # Panics
///
/// When one of those properties fails, or when the server panics (its panic is resumed).
pub fn server_e2e(data: &[u8]) {
    let [flags, schedule_len, rest @ ..] = data else {
        return;
    };
    let schedule_len = (usize::from(*schedule_len) % (MAX_SCHEDULE + 1)).min(rest.len());
    let (schedule, bytes) = rest.split_at(schedule_len);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(run(*flags, schedule, bytes));
}

async fn run(flags: u8, schedule: &[u8], bytes: &[u8]) {
    let (client, server_io) = tokio::io::duplex(PIPE);
    let mut config = ServerConfig::new(Transport::Plaintext);
    config.max_recv_message_size = MAX_MESSAGE;
    config.max_send_message_size = MAX_MESSAGE;
    config.handshake_timeout = Duration::from_secs(1);
    config.keepalive_interval = None;
    let server = tokio::spawn(serve_io(server_io, config, e2e_router()));
    let (read, mut write) = tokio::io::split(client);
    let (ended_tx, ended_rx) = oneshot::channel();
    let reader = tokio::spawn(read_frames(read, ended_tx));

    // Unlike `RawPeer::handshake` this waits for nothing and ACKs nothing: what follows the
    // preface is the fuzzer's to choose.
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(&[]));
    write.write_all(&hello).await.expect("the preface");
    if flags & 1 == 1 {
        let path = if flags & 2 == 2 {
            COUNT.path().to_owned()
        } else {
            ECHO.path().to_owned()
        };
        let mut call = headers(1, &grpc_block(&path, &[]), false);
        call.extend(data(1, &grpc_message(&b"hello".to_vec()), true));
        write.write_all(&call).await.expect("the valid call");
        let end = tokio::time::timeout(BUDGET, ended_rx)
            .await
            .expect("a well-formed call got no answer in time")
            .expect("the connection ended before the well-formed call did");
        assert!(
            end,
            "a well-formed call was reset instead of ending with trailers"
        );
    }
    let mut rest = bytes;
    let mut sizes = schedule.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .map_or(rest.len(), |&s| usize::from(s).max(1))
            .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        // The server may have closed already (GOAWAY, then EOF): the rest goes nowhere.
        if tokio::time::timeout(BUDGET, write.write_all(chunk))
            .await
            .map_or(true, |r| r.is_err())
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    let _ = write.shutdown().await;
    let joined = tokio::time::timeout(BUDGET, server)
        .await
        .expect("the server task outlived its half-closed connection");
    match joined {
        Ok(served) => served.expect("the fuzz server's config is valid"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    drop(write);
    let _ = tokio::time::timeout(BUDGET, reader)
        .await
        .expect("the server's output never ended");
}

/// The server's routes: one of each call kind, over `Vec<u8>` messages (protobuf BytesValue).
fn e2e_router() -> Router {
    Router::new()
        .unary(&ECHO, |req: Request<Vec<u8>>| async move {
            Ok(Response::new(req.into_inner()))
        })
        .server_streaming(&COUNT, |req: Request<Vec<u8>>| async move {
            let msg = req.into_inner();
            let n = msg.len().min(8) + 1;
            Ok(Response::new(futures_util::stream::iter(
                (0..n).map(move |_| Ok::<_, Status>(msg.clone())),
            )))
        })
        .client_streaming(&SUM, |req: Request<Streaming<Vec<u8>>>| async move {
            let mut requests = req.into_inner();
            let mut total = Vec::new();
            // Bounded: at most 4 KiB kept, whatever the client sends.
            while let Some(m) = requests.message().await? {
                total.extend_from_slice(&m[..m.len().min(64)]);
                total.truncate(4096);
            }
            Ok(Response::new(total))
        })
        .bidi_streaming(&BIDI, |req: Request<Streaming<Vec<u8>>>| async move {
            Ok(Response::new(req.into_inner()))
        })
}

/// Reads the server's frames to EOF and reports how stream 1 ended first: `true` for a HEADERS
/// frame with END_STREAM, `false` for RST_STREAM.
async fn read_frames(read: impl AsyncRead + Unpin, ended: oneshot::Sender<bool>) {
    let mut peer = RawPeer::new(read);
    let mut ended = Some(ended);
    while !peer.outcome.closed {
        // A quiet server is not an end: the caller bounds the whole read.
        let Some(f) = peer.read_frame(BUDGET).await else {
            continue;
        };
        let end = match f.kind {
            HEADERS if f.flags & END_STREAM != 0 => true,
            RST_STREAM => false,
            _ => continue,
        };
        if f.stream == 1 {
            if let Some(tx) = ended.take() {
                let _ = tx.send(end);
            }
        }
    }
}
