//! Soak: mixed unary and streaming load with random deadlines and cancellations from many
//! connections, for a fixed time, against our server (mutual TLS, in this process by default).
//!
//! ```text
//! cargo run --release --example soak -- --duration 600
//! cargo run --release --example soak -- --serve 127.0.0.1:7000          # a soak server alone
//! cargo run --release --example soak -- --addr 127.0.0.1:7000 --plaintext  # load against it
//! ```
//!
//! Reports calls made, unexpected errors (must be 0), RSS each second (must be flat after
//! warm-up: the last third's max <= 1.2 x the max of the first third after warm-up + 8 MiB),
//! and live handlers at the end (must return to 0; counted by the soak's own handlers, so only
//! for the in-process server). Exits 1 when a check fails.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use futures_util::{stream, Stream, StreamExt as _};
use satellite::{
    app::certs::{generate_in_memory, PkiOptions},
    grpc::{
        tls::{client_config, server_config, Identity, Roots},
        BidiStreaming, Channel, ClientStreaming, Code, Endpoint, Method, Request, Response, Router,
        ServerConfig, ServerStreaming, Status, Streaming, Transport, Unary,
    },
};

/// Echoes the message after `sleep_ms`.
const UNARY: Method<Msg, Msg, Unary> = Method::unary("/soak.Soak/Unary");
/// `n` copies of the message (numbered), `sleep_ms` apart.
const STREAM: Method<Msg, Msg, ServerStreaming> = Method::server_streaming("/soak.Soak/Stream");
/// The sum of the requests' `n`.
const SUM: Method<Msg, Msg, ClientStreaming> = Method::client_streaming("/soak.Soak/Sum");
/// Echoes every request.
const BIDI: Method<Msg, Msg, BidiStreaming> = Method::bidi_streaming("/soak.Soak/Bidi");

#[derive(Parser, Debug)]
#[command(about = "Soak the gRPC server with mixed load; exits 1 when a check fails")]
struct Args {
    /// How long to run the load, in seconds.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Load an external soak server (`--serve`) at this address instead of one in-process.
    #[arg(long)]
    addr: Option<String>,
    /// With --addr or --serve: HTTP/2 over cleartext instead of mutual TLS (--addr needs it:
    /// the certificates of an in-process server are made in memory).
    #[arg(long)]
    plaintext: bool,
    /// Only serve the soak service on this address (plaintext) until killed.
    #[arg(long)]
    serve: Option<String>,
    /// Connections the load is spread over.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    workers: usize,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(uint32, tag = "1")]
    n: u32,
    #[prost(uint64, tag = "2")]
    sleep_ms: u64,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
}

/// Live handler futures and response streams.
#[derive(Clone, Default)]
struct Live(Arc<AtomicUsize>);

struct Guard(Arc<AtomicUsize>);

impl Live {
    fn enter(&self) -> Guard {
        self.0.fetch_add(1, Ordering::SeqCst);
        Guard(self.0.clone())
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn router(live: &Live) -> Router {
    let (l1, l2, l3, l4) = (live.clone(), live.clone(), live.clone(), live.clone());
    Router::new()
        .unary(&UNARY, move |req: Request<Msg>| {
            let guard = l1.enter();
            async move {
                let _guard = guard;
                let msg = req.into_inner();
                tokio::time::sleep(Duration::from_millis(msg.sleep_ms)).await;
                Ok(Response::new(msg))
            }
        })
        .server_streaming(&STREAM, move |req: Request<Msg>| {
            let guard = l2.enter();
            async move {
                let msg = req.into_inner();
                let replies = stream::unfold((guard, 0_u32), move |(guard, i)| {
                    let msg = msg.clone();
                    async move {
                        if i == msg.n {
                            return None;
                        }
                        if msg.sleep_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(msg.sleep_ms)).await;
                        }
                        let reply = Msg { n: i, ..msg };
                        Some((Ok::<_, Status>(reply), (guard, i + 1)))
                    }
                });
                Ok(Response::new(replies))
            }
        })
        .client_streaming(&SUM, move |req: Request<Streaming<Msg>>| {
            let guard = l3.enter();
            async move {
                let _guard = guard;
                let mut requests = req.into_inner();
                let mut sum = 0_u32;
                while let Some(m) = requests.message().await? {
                    sum = sum.wrapping_add(m.n);
                }
                Ok(Response::new(Msg {
                    n: sum,
                    ..Msg::default()
                }))
            }
        })
        .bidi_streaming(&BIDI, move |req: Request<Streaming<Msg>>| {
            let guard = l4.enter();
            async move {
                let requests = req.into_inner();
                let replies = requests.map(move |m| {
                    let _held = &guard;
                    m
                });
                Ok(Response::new(replies))
            }
        })
}

/// xorshift64*: enough randomness for a load mix, no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    ok: AtomicU64,
    deadline: AtomicU64,
    cancelled: AtomicU64,
    unexpected: AtomicU64,
}

type BoxStream = Pin<Box<dyn Stream<Item = Msg> + Send + Sync>>;

fn requests(n: u32) -> BoxStream {
    Box::pin(stream::iter((0..n).map(|n| Msg {
        n,
        ..Msg::default()
    })))
}

/// One random call; `Err` carries an unexpected outcome.
async fn one_call(channel: &Channel, rng: &mut Rng, stats: &Stats) -> Result<(), String> {
    let kind = rng.below(100);
    let payload = vec![0x5A; rng.below(2048) as usize];
    let expect = |r: Result<(), Status>, deadline_ok: bool| -> Result<(), String> {
        match r {
            Ok(()) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(s) if deadline_ok && s.code() == Code::DeadlineExceeded => {
                stats.deadline.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(s) => Err(format!("{s:?}")),
        }
    };
    match kind {
        // Unary with a generous deadline: must succeed.
        0..=34 => {
            let msg = Msg {
                n: 1,
                sleep_ms: rng.below(5),
                payload,
            };
            let req = Request::new(msg.clone()).with_timeout(Duration::from_secs(10));
            let r = channel.unary(&UNARY, req).await.and_then(|r| {
                if r.into_inner() == msg {
                    Ok(())
                } else {
                    Err(Status::internal("wrong echo"))
                }
            });
            expect(r, false)
        }
        // Unary racing a random deadline: OK or DEADLINE_EXCEEDED.
        35..=49 => {
            let msg = Msg {
                n: 1,
                sleep_ms: 5 + rng.below(60),
                payload,
            };
            let timeout = Duration::from_millis(5 + rng.below(80));
            let req = Request::new(msg).with_timeout(timeout);
            let r = channel.unary(&UNARY, req).await.map(drop);
            expect(r, true)
        }
        // Server stream read to its end, under a random deadline.
        50..=69 => {
            let n = 1 + rng.below(40) as u32;
            let sleep_ms = rng.below(3);
            let timeout = Duration::from_millis(20 + rng.below(400));
            let req = Request::new(Msg {
                n,
                sleep_ms,
                payload,
            })
            .with_timeout(timeout);
            let r = async {
                let mut s = channel.server_streaming(&STREAM, req).await?.into_inner();
                let mut got = 0;
                while s.message().await?.is_some() {
                    got += 1;
                }
                if got == n {
                    Ok(())
                } else {
                    Err(Status::internal(format!("{got} of {n} messages")))
                }
            }
            .await;
            expect(r, true)
        }
        // Server stream cancelled by the client after a few messages (the stream is dropped).
        70..=79 => {
            let req = Request::new(Msg {
                n: 1000,
                sleep_ms: 1,
                payload,
            })
            .with_timeout(Duration::from_secs(10));
            let stop_after = rng.below(5);
            let r = async {
                let mut s = channel.server_streaming(&STREAM, req).await?.into_inner();
                for _ in 0..stop_after {
                    s.message().await?;
                }
                Ok(())
            }
            .await;
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            expect(r, false)
        }
        // Client streaming: the sum of 0..n.
        80..=89 => {
            let n = rng.below(50) as u32;
            let req = Request::new(requests(n)).with_timeout(Duration::from_secs(10));
            let r = channel.client_streaming(&SUM, req).await.and_then(|r| {
                let want = (0..n).sum::<u32>();
                if r.into_inner().n == want {
                    Ok(())
                } else {
                    Err(Status::internal("wrong sum"))
                }
            });
            expect(r, false)
        }
        // Bidi echo, read fully or abandoned half-way.
        90..=94 => {
            let n = 1 + rng.below(30) as u32;
            let abandon = rng.below(3) == 0;
            let req = Request::new(requests(n)).with_timeout(Duration::from_secs(10));
            let r = async {
                let mut s = channel.bidi_streaming(&BIDI, req).await?.into_inner();
                let mut got = 0;
                while s.message().await?.is_some() {
                    got += 1;
                    if abandon && got == n / 2 {
                        return Ok(());
                    }
                }
                if got == n {
                    Ok(())
                } else {
                    Err(Status::internal(format!("bidi: {got} of {n}")))
                }
            }
            .await;
            expect(r, false)
        }
        // A slow unary call the client gives up on (the future is dropped: RST_STREAM).
        _ => {
            let req = Request::new(Msg {
                n: 1,
                sleep_ms: 1000,
                payload,
            })
            .with_timeout(Duration::from_secs(10));
            let wait = Duration::from_millis(1 + rng.below(30));
            let r = tokio::time::timeout(wait, channel.unary(&UNARY, req)).await;
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            match r {
                Err(_) => Ok(()),
                Ok(r) => expect(r.map(drop), false),
            }
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn in_process_server(live: &Live) -> (SocketAddr, Endpoint, tokio::task::JoinHandle<()>) {
    let pki = generate_in_memory(&PkiOptions::valid_for(1).expect("options")).expect("pki");
    let identity = Identity::from_pem(pki.server_cert.as_bytes(), pki.server_key.as_bytes())
        .expect("server identity");
    let roots = Roots::from_pem(pki.ca_cert.as_bytes()).expect("roots");
    let config = ServerConfig::new(Transport::Tls(
        server_config(&identity, Some(&roots)).expect("server config"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = router(live);
    let server = tokio::spawn(async move {
        let _ = satellite::grpc::run(listener, config, router, std::future::pending()).await;
    });
    let client = Identity::from_pem(pki.client_cert.as_bytes(), pki.client_key.as_bytes())
        .expect("client identity");
    let tls = client_config(&roots, Some(&client)).expect("client config");
    let endpoint = Endpoint::new(addr.to_string())
        .tls(tls)
        .server_name("localhost");
    (addr, endpoint, server)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(addr) = &args.serve {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        println!(
            "soak: serving on {} (plaintext)",
            listener.local_addr().expect("addr")
        );
        let config = ServerConfig::new(Transport::Plaintext);
        let _ = satellite::grpc::run(listener, config, router(&Live::default()), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        return;
    }
    let live = Live::default();
    let (endpoint, server) = match &args.addr {
        Some(addr) => {
            if !args.plaintext {
                eprintln!("soak: --addr needs --plaintext (in-process servers use mutual TLS)");
                std::process::exit(2);
            }
            (Endpoint::new(addr.clone()), None)
        }
        None => {
            let (addr, endpoint, server) = in_process_server(&live).await;
            println!("soak: in-process mTLS server on {addr}");
            (endpoint, Some(server))
        }
    };
    let duration = Duration::from_secs(args.duration);
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(Channel::connect(endpoint.clone()).await.expect("connect"));
    }
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let first_errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.workers.max(1) {
        let channel = channels[w % channels.len()].clone();
        let (stats, stop, errors) = (stats.clone(), stop.clone(), first_errors.clone());
        workers.spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1).wrapping_mul(0xD1B5_4A32));
            while !stop.load(Ordering::Relaxed) {
                // Every call is bounded: the longest deadline is 10 s.
                let r = tokio::time::timeout(
                    Duration::from_secs(15),
                    one_call(&channel, &mut rng, &stats),
                )
                .await
                .unwrap_or_else(|_| Err("a call outlived its deadline by 5 s".into()));
                stats.calls.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    stats.unexpected.fetch_add(1, Ordering::Relaxed);
                    let mut errors = errors.lock().expect("errors");
                    if errors.len() < 10 {
                        errors.push(e);
                    }
                }
            }
        });
    }
    // RSS once a second.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < duration {
        tick.tick().await;
        let secs = started.elapsed().as_secs();
        let rss = rss_kib();
        samples.push((secs, rss));
        if secs % 10 == 0 || args.duration <= 30 {
            println!(
                "soak: t={secs:>4}s rss={rss} KiB calls={} live={}",
                stats.calls.load(Ordering::Relaxed),
                live.get()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    drop(channels);
    // Handlers end when their calls do; give cancellations a moment to reach the server.
    let mut live_end = live.get();
    for _ in 0..100 {
        if live_end == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        live_end = live.get();
    }
    if let Some(server) = server {
        server.abort();
    }

    // The RSS check: warm-up is the first 10 % (at least 2 s); then thirds.
    let warmup = (args.duration / 10).max(2);
    let steady: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|(_, r)| *r)
        .collect();
    let third = steady.len() / 3;
    let (early_max, late_max) = if third == 0 {
        (0, 0)
    } else {
        (
            steady[..third].iter().copied().max().unwrap_or(0),
            steady[steady.len() - third..]
                .iter()
                .copied()
                .max()
                .unwrap_or(0),
        )
    };
    const SLACK_KIB: u64 = 8 * 1024;
    let rss_limit = early_max + early_max / 5 + SLACK_KIB;
    let rss_flat = third == 0 || late_max <= rss_limit;

    let calls = stats.calls.load(Ordering::Relaxed);
    let unexpected = stats.unexpected.load(Ordering::Relaxed);
    println!("soak: duration {:?}", started.elapsed());
    println!(
        "soak: calls {calls} ({:.0}/s): ok {}, deadline exceeded {}, client cancellations {}, unexpected errors {unexpected}",
        calls as f64 / started.elapsed().as_secs_f64(),
        stats.ok.load(Ordering::Relaxed),
        stats.deadline.load(Ordering::Relaxed),
        stats.cancelled.load(Ordering::Relaxed),
    );
    for e in first_errors.lock().expect("errors").iter() {
        println!("soak: unexpected: {e}");
    }
    let series: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 20).max(1))
        .map(|(t, r)| format!("{t}s:{}M", r / 1024))
        .collect();
    println!("soak: RSS over time: {}", series.join(" "));
    println!(
        "soak: RSS after warm-up ({warmup} s): first-third max {early_max} KiB, last-third max {late_max} KiB, limit {rss_limit} KiB (x1.2 + 8 MiB): {}",
        if rss_flat { "flat" } else { "GROWING" }
    );
    let in_process = args.addr.is_none();
    if in_process {
        println!("soak: live handlers at the end: {live_end}");
    } else {
        println!("soak: live handlers at the end: n/a (external server)");
    }
    let mut failed = Vec::new();
    if calls == 0 {
        failed.push("no calls were made");
    }
    if unexpected > 0 {
        failed.push("unexpected errors");
    }
    if !rss_flat {
        failed.push("RSS grew after warm-up");
    }
    if in_process && live_end != 0 {
        failed.push("handlers still live at the end");
    }
    if drained.is_err() {
        failed.push("workers did not stop");
    }
    if failed.is_empty() {
        println!("soak: PASS");
    } else {
        println!("soak: FAIL: {}", failed.join("; "));
        std::process::exit(1);
    }
}
