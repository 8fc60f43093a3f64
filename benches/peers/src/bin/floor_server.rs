//! The raw-h2 floor: the least work a server on `h2` can do and still answer GetImage and
//! GetImages correctly. One task per connection drives the connection and all its streams;
//! canned response headers and trailers; every readable request is answered before the
//! connection is polled again (one flush); streamed messages are encoded straight into 64 KiB
//! chunks sent within the granted flow-control capacity; a 1 MiB h2 send buffer.
//! It still parses each request message and produces correct images.

use std::{
    future::poll_fn,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use clap::Parser;
use h2::{server::SendResponse, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Response};
use prost::Message;
use satellite_bench_peers::{images, pb, put_framed_image, Cells, Map, GET_IMAGE, GET_IMAGES};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};

const CHUNK: usize = 64 * 1024;
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    #[arg(long)]
    plaintext: bool,
    /// Directory with ca-cert.pem, server-cert.pem, server-key.pem: mutual TLS.
    #[arg(long)]
    certs: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    scale: u32,
    #[arg(long, default_value_t = 1)]
    img_bytes: usize,
}

struct State {
    map: Map,
    images: Arc<Vec<Bytes>>,
    trailers_ok: HeaderMap,
}

fn ok_headers() -> Response<()> {
    let mut r = Response::new(());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

/// A trailers-only error response.
fn respond_error(mut respond: SendResponse<Bytes>, code: u32, message: &str) {
    let mut r = ok_headers();
    let h = r.headers_mut();
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&message.replace('%', "%25")) {
        h.insert("grpc-message", v);
    }
    let _ = respond.send_response(r, true);
}

#[derive(Clone, Copy)]
enum Method {
    GetImage,
    GetImages,
}

enum Task {
    /// Reading the request message.
    Body {
        method: Method,
        body: RecvStream,
        respond: Option<SendResponse<Bytes>>,
        buf: BytesMut,
    },
    /// Streaming GetImages' answer.
    Stream {
        send: SendStream<Bytes>,
        cells: Cells,
        pending: BytesMut,
        done: bool,
    },
}

enum Step {
    Done,
    Progress,
    Pending,
}

impl Task {
    fn poll(&mut self, cx: &mut Context<'_>, st: &State) -> Step {
        match self {
            Task::Body {
                method,
                body,
                respond,
                buf,
            } => {
                let message = loop {
                    match body.poll_data(cx) {
                        Poll::Ready(Some(Ok(chunk))) => {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            buf.extend_from_slice(&chunk);
                            if buf.len() >= 5 {
                                let len =
                                    u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                                if len > MAX_MESSAGE {
                                    respond_error(
                                        respond.take().unwrap(),
                                        8,
                                        "request message too large",
                                    );
                                    return Step::Done;
                                }
                                if buf.len() >= 5 + len {
                                    break Some(len);
                                }
                            }
                        }
                        Poll::Ready(Some(Err(_))) => return Step::Done,
                        Poll::Ready(None) => break None,
                        Poll::Pending => return Step::Pending,
                    }
                };
                let respond = respond.take().unwrap();
                let Some(len) = message else {
                    respond_error(respond, 13, "missing request message");
                    return Step::Done;
                };
                if buf[0] != 0 {
                    respond_error(respond, 12, "compressed requests are not supported");
                    return Step::Done;
                }
                buf.advance(5);
                let msg = &buf[..len];
                match method {
                    Method::GetImage => {
                        let Ok(loc) = pb::Location::decode(msg) else {
                            respond_error(respond, 13, "cannot decode the request");
                            return Step::Done;
                        };
                        let Some(cell) = st.map.cell(loc.x, loc.y) else {
                            let m = format!(
                                "({}, {}) is off the {} x {} map",
                                loc.x,
                                loc.y,
                                st.map.width(),
                                st.map.height()
                            );
                            respond_error(respond, 11, &m);
                            return Step::Done;
                        };
                        let img = &st.images[cell as usize];
                        let mut out = BytesMut::with_capacity(16 + img.len());
                        put_framed_image(&mut out, loc.x, loc.y, img);
                        let mut respond = respond;
                        let Ok(mut send) = respond.send_response(ok_headers(), false) else {
                            return Step::Done;
                        };
                        if send.send_data(out.freeze(), false).is_ok() {
                            let _ = send.send_trailers(st.trailers_ok.clone());
                        }
                        Step::Done
                    }
                    Method::GetImages => {
                        let Ok(area) = pb::Area::decode(msg) else {
                            respond_error(respond, 13, "cannot decode the request");
                            return Step::Done;
                        };
                        let (Some(ll), Some(ur)) = (area.ll, area.ur) else {
                            respond_error(respond, 3, "the area needs both corners, ll and ur");
                            return Step::Done;
                        };
                        let cells = match st.map.area((ll.x, ll.y), (ur.x, ur.y)) {
                            Ok(c) => c,
                            Err((code, m)) => {
                                respond_error(respond, code as u32, &m);
                                return Step::Done;
                            }
                        };
                        let mut respond = respond;
                        let Ok(send) = respond.send_response(ok_headers(), false) else {
                            return Step::Done;
                        };
                        *self = Task::Stream {
                            send,
                            cells,
                            pending: BytesMut::with_capacity(2 * CHUNK),
                            done: false,
                        };
                        match self.poll(cx, st) {
                            Step::Pending => Step::Progress,
                            s => s,
                        }
                    }
                }
            }
            Task::Stream {
                send,
                cells,
                pending,
                done,
            } => {
                let mut progressed = false;
                let mut idle_polls = 0;
                loop {
                    // Encode messages straight into the pending chunk.
                    while !*done && pending.len() < CHUNK {
                        match cells.next() {
                            Some((x, y, c)) => {
                                put_framed_image(pending, x, y, &st.images[c as usize])
                            }
                            None => *done = true,
                        }
                    }
                    if *done && pending.is_empty() {
                        let _ = send.send_trailers(st.trailers_ok.clone());
                        return Step::Done;
                    }
                    let cap = send.capacity();
                    if cap == 0 {
                        send.reserve_capacity(CHUNK);
                        match send.poll_capacity(cx) {
                            Poll::Ready(Some(Ok(_))) => {
                                idle_polls += 1;
                                if idle_polls > 4 {
                                    // Capacity reported but none usable: yield, come back later.
                                    cx.waker().wake_by_ref();
                                    return Step::Pending;
                                }
                                continue;
                            }
                            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return Step::Done,
                            Poll::Pending => {
                                return if progressed {
                                    Step::Progress
                                } else {
                                    Step::Pending
                                };
                            }
                        }
                    }
                    let n = cap.min(pending.len());
                    if send.send_data(pending.split_to(n).freeze(), false).is_err() {
                        return Step::Done;
                    }
                    progressed = true;
                    if pending.capacity() < CHUNK {
                        pending.reserve(2 * CHUNK);
                    }
                }
            }
        }
    }
}

async fn serve<T: AsyncRead + AsyncWrite + Unpin>(io: T, st: Arc<State>) -> Result<(), h2::Error> {
    let mut conn = h2::server::Builder::new()
        .max_send_buffer_size(1 << 20)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 20)
        .max_concurrent_streams(1024)
        .handshake::<_, Bytes>(io)
        .await?;
    let mut tasks: Vec<Task> = Vec::new();
    poll_fn(|cx| loop {
        // Take every request that is readable now (this also flushes what was queued).
        loop {
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    let method = match req.uri().path() {
                        GET_IMAGE => Method::GetImage,
                        GET_IMAGES => Method::GetImages,
                        _ => {
                            respond_error(respond, 12, "unknown method");
                            continue;
                        }
                    };
                    tasks.push(Task::Body {
                        method,
                        body: req.into_body(),
                        respond: Some(respond),
                        buf: BytesMut::new(),
                    });
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        // Answer everything that can be answered, then go round once more to flush.
        let mut progressed = false;
        let mut i = 0;
        while i < tasks.len() {
            match tasks[i].poll(cx, &st) {
                Step::Done => {
                    tasks.swap_remove(i);
                    progressed = true;
                }
                Step::Progress => {
                    progressed = true;
                    i += 1;
                }
                Step::Pending => i += 1,
            }
        }
        if !progressed {
            return Poll::Pending;
        }
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut trailers_ok = HeaderMap::new();
    trailers_ok.insert("grpc-status", HeaderValue::from_static("0"));
    let st = Arc::new(State {
        map: Map::world(args.scale),
        images: images(args.img_bytes),
        trailers_ok,
    });
    let tls = match (&args.certs, args.plaintext) {
        (Some(dir), false) => Some(tokio_rustls::TlsAcceptor::from(
            satellite_bench_peers::rustls_server_config(dir),
        )),
        _ => None,
    };
    let listener = TcpListener::bind(args.addr).await?;
    eprintln!("floor_server listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let st = st.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(io) => serve(io, st).await,
                    Err(_) => Ok(()),
                },
                None => serve(tcp, st).await,
            };
        });
    }
}
