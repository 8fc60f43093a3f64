//! The client over several servers: targets and resolvers, pick_first and round_robin,
//! health-aware picking (A17), retries and their limits (A6), graceful restarts, Unix
//! sockets. Replicas are in-process servers on 127.0.0.x addresses; the SIGKILL run with real
//! processes is in `tests/failover.rs`.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::stream;
use satellite::grpc::{
    self,
    health::{pb::health_check_response::ServingStatus, HealthReporter},
    Address, BoxFuture, CallHead, Channel, ClientStreaming, Code, ConnectBackoff,
    ConnectivityState, Endpoint, LbPolicy, Method, Request, Resolver, Response, Router,
    ServerConfig, ServerInterceptor, ServerStreaming, ServiceConfig, Status, Transport, Unary,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(uint32, tag = "1")]
    count: u32,
    #[prost(uint64, tag = "2")]
    delay_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    name: String,
}

const WHO: Method<Ask, Reply, Unary> = Method::unary("/lb.Test/Who");
const FAIL: Method<Ask, Reply, Unary> = Method::unary("/lb.Test/Fail");
const STREAM: Method<Ask, Reply, ServerStreaming> = Method::server_streaming("/lb.Test/Stream");
const HEAD_THEN_FAIL: Method<Ask, Reply, ServerStreaming> =
    Method::server_streaming("/lb.Test/HeadThenFail");
const COLLECT: Method<Ask, Reply, ClientStreaming> = Method::client_streaming("/lb.Test/Collect");

const SERVICE: &str = "lb.Test";
const WAIT: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("the test waited too long")
}

/// One in-process server with counters.
struct Replica {
    name: String,
    addr: SocketAddr,
    /// Calls of every method.
    hits: Arc<AtomicUsize>,
    /// The client address of every connection that made a call.
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    health: HealthReporter,
    _stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), grpc::Error>>,
}

impl Replica {
    async fn start(ip: &str, configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        Self::on(listener, configure)
    }

    fn on(listener: TcpListener, configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let addr = listener.local_addr().unwrap();
        let name = addr.to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let health = HealthReporter::new();
        health.set_status(SERVICE, ServingStatus::Serving);
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let router = test_router(&name, &hits)
            .merge(health.router())
            .intercept(Peers(peers.clone()));
        let mut config = ServerConfig::new(Transport::Plaintext);
        config.shutdown_grace = Duration::from_secs(5);
        configure(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(grpc::run(listener, config, router, async {
            let _ = stopped.await;
        }));
        Self {
            name,
            addr,
            hits,
            peers,
            health,
            _stop: stop,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Gone at once: the task and every connection dropped, as a crash would.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Notes each call's client address: one per connection.
struct Peers(Arc<Mutex<HashSet<SocketAddr>>>);

impl ServerInterceptor for Peers {
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        if let Some(addr) = head.peer().addr {
            self.0.lock().unwrap().insert(addr);
        }
        Box::pin(async { Ok(()) })
    }
}

fn test_router(name: &str, hits: &Arc<AtomicUsize>) -> Router {
    let who = {
        let (name, hits) = (name.to_owned(), hits.clone());
        move |_: Request<Ask>| {
            hits.fetch_add(1, Ordering::SeqCst);
            let name = name.clone();
            async move { Ok::<_, Status>(Response::new(Reply { name })) }
        }
    };
    let fail = {
        let hits = hits.clone();
        move |request: Request<Ask>| {
            hits.fetch_add(1, Ordering::SeqCst);
            let delay = request.message().delay_ms;
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Err::<Response<Reply>, _>(Status::unavailable("try again"))
            }
        }
    };
    let streamed = {
        let (name, hits) = (name.to_owned(), hits.clone());
        move |request: Request<Ask>| {
            hits.fetch_add(1, Ordering::SeqCst);
            let ask = request.into_inner();
            let name = name.clone();
            let replies = stream::unfold(0, move |i| {
                let name = name.clone();
                async move {
                    if i >= ask.count {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(ask.delay_ms)).await;
                    Some((Ok::<_, Status>(Reply { name }), i + 1))
                }
            });
            async move { Ok::<_, Status>(Response::new(replies)) }
        }
    };
    let head_then_fail = {
        let hits = hits.clone();
        move |_: Request<Ask>| {
            hits.fetch_add(1, Ordering::SeqCst);
            let replies = stream::iter([
                Ok(Reply { name: "one".into() }),
                Err(Status::unavailable("failed after the first message")),
            ]);
            async move { Ok::<_, Status>(Response::new(replies)) }
        }
    };
    Router::new()
        .unary(&WHO, who)
        .unary(&FAIL, fail)
        .server_streaming(&STREAM, streamed)
        .server_streaming(&HEAD_THEN_FAIL, head_then_fail)
}

fn ipv4_target(replicas: &[&Replica]) -> String {
    let list: Vec<String> = replicas.iter().map(|r| r.addr.to_string()).collect();
    format!("ipv4:{}", list.join(","))
}

/// A backoff short enough for tests that wait out a failure.
fn quick_backoff() -> ConnectBackoff {
    ConnectBackoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        ..ConnectBackoff::default()
    }
}

async fn who(channel: &Channel) -> Result<String, Status> {
    let reply = channel.unary(&WHO, Request::new(Ask::default())).await?;
    Ok(reply.into_inner().name)
}

async fn wait_until(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_3000_calls_evenly_over_three_replicas() {
    let a = Replica::start("127.0.0.1", |_| {}).await;
    let b = Replica::start("127.0.0.2", |_| {}).await;
    let c = Replica::start("127.0.0.3", |_| {}).await;
    let endpoint = Endpoint::new(ipv4_target(&[&a, &b, &c])).lb_policy(LbPolicy::RoundRobin);
    let channel = Channel::lazy(endpoint).unwrap();
    // Wait for all three, so that the spread is the balancer's and not the dial order's.
    bounded(who(&channel)).await.unwrap();
    let all_ready = wait_until(WAIT, || {
        let states = channel.subchannel_states();
        states.len() == 3 && states.iter().all(|(_, s)| *s == ConnectivityState::Ready)
    });
    assert!(all_ready.await, "{:?}", channel.subchannel_states());
    let before = [a.hits(), b.hits(), c.hits()];
    let calls = (0..3000).map(|_| {
        let channel = channel.clone();
        async move { who(&channel).await }
    });
    let results = bounded(futures_util::future::join_all(calls)).await;
    assert!(results.iter().all(Result::is_ok));
    let counts = [
        a.hits() - before[0],
        b.hits() - before[1],
        c.hits() - before[2],
    ];
    println!("round_robin spread over 3 replicas: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 3000);
    for n in counts {
        assert!(
            (900..=1100).contains(&n),
            "{counts:?} is not within 10 % of even"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_sticks_to_the_first_address_and_fails_over_when_it_dies() {
    let a = Replica::start("127.0.0.1", |_| {}).await;
    let b = Replica::start("127.0.0.2", |_| {}).await;
    let endpoint = Endpoint::new(ipv4_target(&[&a, &b])).connect_backoff(quick_backoff());
    let channel = Channel::lazy(endpoint).unwrap();
    assert_eq!(channel.state(), ConnectivityState::Idle);
    for _ in 0..50 {
        assert_eq!(bounded(who(&channel)).await.unwrap(), a.name);
    }
    assert_eq!(b.hits(), 0, "pick_first never used the second address");
    assert_eq!(channel.state(), ConnectivityState::Ready);

    let b_name = b.name.clone();
    a.kill().await;
    // Once the client has seen the connection close, calls wait for the next address
    // instead of failing: the channel is CONNECTING, not TRANSIENT_FAILURE, while the
    // second address is tried. (A call that races the close itself may fail with
    // UNAVAILABLE, as in every gRPC stack: its request may have reached the server. A retry
    // policy covers that; see tests/failover.rs.)
    let noticed = wait_until(WAIT, || {
        channel.subchannel_states()[0].1 != ConnectivityState::Ready
    });
    assert!(noticed.await);
    let mut request = Request::new(Ask::default());
    request.set_wait_for_ready(true);
    request.set_timeout(Duration::from_secs(5));
    let name = bounded(channel.unary(&WHO, request)).await.unwrap();
    assert_eq!(name.into_inner().name, b_name);
    for _ in 0..20 {
        assert_eq!(bounded(who(&channel)).await.unwrap(), b_name);
    }
    assert!(b.hits() >= 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_skips_a_replica_that_health_says_is_not_serving() {
    let a = Replica::start("127.0.0.1", |_| {}).await;
    let b = Replica::start("127.0.0.2", |_| {}).await;
    b.health.set_status(SERVICE, ServingStatus::NotServing);
    let config = ServiceConfig::from_json(
        r#"{"loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": "lb.Test"}}"#,
    )
    .unwrap();
    let channel =
        Channel::lazy(Endpoint::new(ipv4_target(&[&a, &b])).service_config(config)).unwrap();
    for _ in 0..200 {
        assert_eq!(bounded(who(&channel)).await.unwrap(), a.name);
    }
    assert_eq!(b.hits(), 0, "the NOT_SERVING replica got calls");
    let states = channel.subchannel_states();
    assert_eq!(
        states[1].1,
        ConnectivityState::TransientFailure,
        "{states:?}"
    );

    // SERVING again: the Watch stream says so and the replica is picked again.
    b.health.set_status(SERVICE, ServingStatus::Serving);
    let back = wait_until(WAIT, || {
        channel.subchannel_states()[1].1 == ConnectivityState::Ready
    });
    assert!(back.await, "{:?}", channel.subchannel_states());
    for _ in 0..100 {
        bounded(who(&channel)).await.unwrap();
    }
    assert!(
        b.hits() >= 40,
        "{} calls reached the healthy-again replica",
        b.hits()
    );

    // And out again, with calls in flight going to the other one.
    a.health.set_status(SERVICE, ServingStatus::NotServing);
    let out = wait_until(WAIT, || {
        channel.subchannel_states()[0].1 == ConnectivityState::TransientFailure
    });
    assert!(out.await);
    let a_before = a.hits();
    for _ in 0..100 {
        assert_eq!(bounded(who(&channel)).await.unwrap(), b.name);
    }
    assert_eq!(a.hits(), a_before);
}

fn retry_config(max_attempts: u32, extra: &str) -> ServiceConfig {
    ServiceConfig::from_json(&format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "lb.Test"}}],
            "retryPolicy": {{"maxAttempts": {max_attempts}, "initialBackoff": "0.01s",
                "maxBackoff": "0.05s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"]}}}}]{extra}}}"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_attempts() {
    let a = Replica::start("127.0.0.1", |_| {}).await;
    let endpoint = Endpoint::new(a.addr.to_string()).service_config(retry_config(3, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    let status = bounded(channel.unary(&FAIL, Request::new(Ask::default())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(a.hits(), 3, "maxAttempts 3");

    // maxAttempts above 5 is capped at 5 (A6).
    let endpoint = Endpoint::new(a.addr.to_string()).service_config(retry_config(9, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    let _ = bounded(channel.unary(&FAIL, Request::new(Ask::default()))).await;
    assert_eq!(a.hits(), 3 + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_once_response_headers_have_arrived() {
    let a = Replica::start("127.0.0.1", |_| {}).await;
    let endpoint = Endpoint::new(a.addr.to_string()).service_config(retry_config(5, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    let mut replies =
        bounded(channel.server_streaming(&HEAD_THEN_FAIL, Request::new(Ask::default())))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        bounded(replies.message()).await.unwrap().unwrap().name,
        "one"
    );
    let status = bounded(replies.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(a.hits(), 1, "a committed call is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_stops_retries_when_most_calls_fail() {
    let a = Replica::start("127.0.0.1", |_| {}).await;
    // 4 tokens: the first call's first failure leaves 3 (> 2, retry), its second leaves 2
    // (not > 2, stop); every later call fails once and is not retried.
    let throttled = r#", "retryThrottling": {"maxTokens": 4, "tokenRatio": 0.1}"#;
    let endpoint = Endpoint::new(a.addr.to_string()).service_config(retry_config(5, throttled));
    let channel = Channel::lazy(endpoint).unwrap();
    for _ in 0..10 {
        let status = bounded(channel.unary(&FAIL, Request::new(Ask::default())))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(
        a.hits(),
        11,
        "10 calls, one retry before the throttle closed"
    );
    // Successes refill the bucket by tokenRatio each: 40 of them fill it (4 tokens), so the
    // next failure leaves 3 and may retry once.
    for _ in 0..40 {
        bounded(who(&channel)).await.unwrap();
    }
    let before = a.hits();
    let _ = bounded(channel.unary(&FAIL, Request::new(Ask::default()))).await;
    assert_eq!(
        a.hits() - before,
        2,
        "retries open again once tokens are back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_covers_every_attempt() {
    let a = Replica::start("127.0.0.1", |_| {}).await;
    let endpoint = Endpoint::new(a.addr.to_string()).service_config(retry_config(5, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    // Each attempt takes 120 ms; five would take 600 ms, the deadline is 300 ms.
    let ask = Ask {
        count: 0,
        delay_ms: 120,
    };
    let started = Instant::now();
    let status = bounded(channel.unary(
        &FAIL,
        Request::new(ask).with_timeout(Duration::from_millis(300)),
    ))
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(elapsed < Duration::from_millis(550), "{elapsed:?}");
    let attempts = a.hits();
    assert!((2..=3).contains(&attempts), "{attempts} attempts in 300 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_timeout_and_wait_for_ready_come_from_the_service_config() {
    // Nothing listens on this address: a call that waits for ready runs into the config's
    // timeout, a call that does not fails fast.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "lb.Test", "method": "Who"}],
            "timeout": "0.3s", "waitForReady": true}]}"#,
    )
    .unwrap();
    let channel = Channel::lazy(Endpoint::new(addr.to_string()).service_config(config)).unwrap();
    let started = Instant::now();
    let status = bounded(who(&channel)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains(&addr.to_string()), "{status:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    // The call's own choice wins over the config's.
    let mut request = Request::new(Ask::default());
    request.set_wait_for_ready(false);
    let status = bounded(channel.unary(&WHO, request)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// A resolver the test scripts: answers in turn, the last one forever.
#[derive(Debug)]
struct Scripted {
    answers: Mutex<Vec<std::io::Result<Vec<Address>>>>,
    asked: AtomicUsize,
}

impl Scripted {
    fn new(answers: Vec<std::io::Result<Vec<Address>>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers),
            asked: AtomicUsize::new(0),
        })
    }
}

impl Resolver for Scripted {
    fn resolve(&self) -> BoxFuture<'_, std::io::Result<Vec<Address>>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.remove(0)
        } else {
            match &answers[0] {
                Ok(list) => Ok(list.clone()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_dead_resolution_fails_with_unavailable_naming_the_target() {
    let empty = Scripted::new(vec![Ok(vec![])]);
    let channel = Channel::lazy(Endpoint::new("scripted.test:1").resolver(empty)).unwrap();
    let status = bounded(who(&channel)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("scripted.test:1"), "{status:?}");
    assert!(status.message().contains("no addresses"), "{status:?}");
    // Waiting for ready ends at the deadline, not later.
    let started = Instant::now();
    let mut request = Request::new(Ask::default()).with_timeout(Duration::from_millis(200));
    request.set_wait_for_ready(true);
    let status = bounded(channel.unary(&WHO, request)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.message().contains("scripted.test:1"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    let failing = Scripted::new(vec![Err(std::io::Error::other("no such host"))]);
    let channel = Channel::lazy(Endpoint::new("broken.test:1").resolver(failing)).unwrap();
    let status = bounded(who(&channel)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("broken.test:1") && status.message().contains("no such host")
    );

    let dead: Vec<Address> = ["127.0.0.1:1", "127.0.0.2:1"]
        .iter()
        .map(|a| Address::Tcp(a.parse().unwrap()))
        .collect();
    let dead = Scripted::new(vec![Ok(dead)]);
    let channel = Channel::lazy(Endpoint::new("dead.test:1").resolver(dead)).unwrap();
    let status = bounded(who(&channel)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("dead.test:1"), "{status:?}");
    assert!(status.message().contains("127.0.0.2:1"), "{status:?}");
    assert_eq!(channel.state(), ConnectivityState::TransientFailure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_asks_the_resolver_again_and_finds_the_new_address() {
    let live = Replica::start("127.0.0.2", |_| {}).await;
    let script = Scripted::new(vec![
        Ok(vec![Address::Tcp("127.0.0.1:1".parse().unwrap())]),
        Ok(vec![Address::Tcp(live.addr)]),
    ]);
    let endpoint = Endpoint::new("moving.test:1")
        .resolver(script.clone())
        .min_resolve_interval(Duration::from_millis(50));
    let channel = Channel::lazy(endpoint).unwrap();
    let mut request = Request::new(Ask::default()).with_timeout(Duration::from_secs(5));
    request.set_wait_for_ready(true);
    let reply = bounded(channel.unary(&WHO, request)).await.unwrap();
    assert_eq!(reply.into_inner().name, live.name);
    assert!(script.asked.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        channel.subchannel_states(),
        [(Address::Tcp(live.addr), ConnectivityState::Ready)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restarts_under_load_lose_no_call() {
    // Every connection is told to go away after ~300 ms (+-10 %), with 2 s to finish.
    let age = |c: &mut ServerConfig| {
        c.max_connection_age = Some(Duration::from_millis(300));
        c.max_connection_age_grace = Duration::from_secs(2);
    };
    let a = Replica::start("127.0.0.1", age).await;
    let b = Replica::start("127.0.0.2", age).await;
    let endpoint = Endpoint::new(ipv4_target(&[&a, &b])).lb_policy(LbPolicy::RoundRobin);
    let channel = Channel::lazy(endpoint).unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    let workers = (0..8).map(|i| {
        let channel = channel.clone();
        async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while Instant::now() < until {
                let result = if i % 2 == 0 {
                    who(&channel).await.map(drop)
                } else {
                    let ask = Ask {
                        count: 5,
                        delay_ms: 10,
                    };
                    match channel.server_streaming(&STREAM, Request::new(ask)).await {
                        Ok(r) => {
                            let mut replies = r.into_inner();
                            let mut n = 0;
                            loop {
                                match replies.message().await {
                                    Ok(Some(_)) => n += 1,
                                    Ok(None) if n == 5 => break Ok(()),
                                    Ok(None) => break Err(Status::internal("short stream")),
                                    Err(e) => break Err(e),
                                }
                            }
                        }
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }
    });
    let results = bounded(futures_util::future::join_all(workers)).await;
    let ok: u32 = results.iter().map(|r| r.0).sum();
    let failed: Vec<&Status> = results.iter().flat_map(|r| &r.1).collect();
    let connections = a.peers.lock().unwrap().len() + b.peers.lock().unwrap().len();
    println!(
        "graceful restarts: {ok} calls ok, {} failed, over {connections} connections",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 200, "{ok}");
    // 4 s of 300 ms connections on two replicas: each was replaced many times.
    assert!(connections >= 10, "{connections} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_targets_reach_a_unix_socket_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let router = test_router("unix", &hits);
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ServerConfig::new(Transport::Plaintext);
    let server = tokio::spawn(grpc::run(listener, config, router, async {
        let _ = stopped.await;
    }));
    let target = format!("unix:{}", path.display());
    let channel = Channel::lazy(Endpoint::new(target)).unwrap();
    assert_eq!(bounded(who(&channel)).await.unwrap(), "unix");
    let absolute = format!("unix://{}", path.display());
    let channel = Channel::lazy(Endpoint::new(absolute)).unwrap();
    assert_eq!(bounded(who(&channel)).await.unwrap(), "unix");
    let _ = stop.send(());
    bounded(server).await.unwrap().unwrap();
}

/// What a bare h2 server does with its n-th stream (from 0).
enum Answer {
    /// RST_STREAM(REFUSED_STREAM): the application never saw the stream.
    Refuse,
    /// A Trailers-Only response with this status and these extra headers.
    Fail(Code, Vec<(&'static str, &'static str)>),
    /// A Trailers-Only response at once, before the request body has arrived.
    FailNow(Code),
    /// One message, status OK.
    Reply(&'static str),
}

type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;
type Bodies = Arc<Mutex<Vec<Vec<u8>>>>;

/// A bare h2 server, to see the request headers the client sends and to answer in ways our
/// own server never does. Returns its address and every stream's request headers.
async fn raw_server(
    answer: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (SocketAddr, Seen) {
    let (addr, seen, _) = raw_server_with_bodies(answer).await;
    (addr, seen)
}

/// [`raw_server`], also keeping each stream's request body (read whole before answering,
/// but for [`Answer::FailNow`]).
async fn raw_server_with_bodies(
    answer: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (SocketAddr, Seen, Bodies) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bodies: Bodies = Arc::default();
    let (answer, log, kept) = (Arc::new(answer), seen.clone(), bodies.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (answer, log, kept) = (answer.clone(), log.clone(), kept.clone());
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(socket).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(request.headers().clone());
                        log.len() - 1
                    };
                    let head = http::Response::builder().header("content-type", "application/grpc");
                    let answer = answer(n);
                    let kept = kept.clone();
                    // Each stream in a task of its own: the connection must go on being
                    // polled (by accept) while a body is read.
                    tokio::spawn(async move {
                        if !matches!(answer, Answer::FailNow(_) | Answer::Refuse) {
                            let mut body = request.into_body();
                            let mut all = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                all.extend_from_slice(&chunk);
                            }
                            kept.lock().unwrap().push(all);
                        }
                        respond_with(answer, head, &mut respond);
                    });
                }
            });
        }
    });
    (addr, seen, bodies)
}

fn respond_with(
    answer: Answer,
    head: http::response::Builder,
    respond: &mut h2::server::SendResponse<bytes::Bytes>,
) {
    match answer {
        Answer::FailNow(code) => {
            let head = head.header("grpc-status", code.as_i32().to_string());
            let _ = respond.send_response(head.body(()).unwrap(), true);
        }
        Answer::Refuse => respond.send_reset(h2::Reason::REFUSED_STREAM),
        Answer::Fail(code, extra) => {
            let mut head = head.header("grpc-status", code.as_i32().to_string());
            for (k, v) in extra {
                head = head.header(k, v);
            }
            let _ = respond.send_response(head.body(()).unwrap(), true);
        }
        Answer::Reply(name) => {
            let mut body = respond
                .send_response(head.body(()).unwrap(), false)
                .unwrap();
            let reply = prost::Message::encode_to_vec(&Reply { name: name.into() });
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(reply.len() as u32).to_be_bytes());
            frame.extend_from_slice(&reply);
            let _ = body.send_data(frame.into(), false);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let _ = body.send_trailers(trailers);
        }
    }
}

fn previous_attempts(seen: &Mutex<Vec<http::HeaderMap>>) -> Vec<Option<String>> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .map(|h| {
            h.get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_retried_transparently_even_without_a_policy() {
    let (addr, seen) = raw_server(|n| {
        if n < 2 {
            Answer::Refuse
        } else {
            Answer::Reply("third")
        }
    })
    .await;
    let channel = Channel::lazy(Endpoint::new(addr.to_string())).unwrap();
    assert_eq!(bounded(who(&channel)).await.unwrap(), "third");
    // Transparent retries are not attempts: none of them says it follows one.
    assert_eq!(previous_attempts(&seen), [None, None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_say_how_many_attempts_went_before_and_shrink_the_timeout() {
    let (addr, seen) = raw_server(|n| {
        if n < 2 {
            Answer::Fail(Code::Unavailable, vec![])
        } else {
            Answer::Reply("third")
        }
    })
    .await;
    let endpoint = Endpoint::new(addr.to_string()).service_config(retry_config(5, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    let request = Request::new(Ask::default()).with_timeout(Duration::from_secs(5));
    let reply = bounded(channel.unary(&WHO, request)).await.unwrap();
    assert_eq!(reply.into_inner().name, "third");
    assert_eq!(
        previous_attempts(&seen),
        [None, Some("1".into()), Some("2".into())]
    );
    let timeouts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h["grpc-timeout"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(timeouts[0], "5000000u");
    assert_ne!(
        timeouts[1], timeouts[0],
        "a retry sends what is left of the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pushback_delays_or_stops_retries() {
    // A negative pushback: do not retry.
    let (addr, seen) =
        raw_server(|_| Answer::Fail(Code::Unavailable, vec![("grpc-retry-pushback-ms", "-1")]))
            .await;
    let endpoint = Endpoint::new(addr.to_string()).service_config(retry_config(5, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    let status = bounded(who(&channel)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(seen.lock().unwrap().len(), 1);

    // 300 ms: the retry waits that long, whatever the policy's own backoff (10 ms).
    let (addr, seen) = raw_server(|n| {
        if n == 0 {
            Answer::Fail(Code::Unavailable, vec![("grpc-retry-pushback-ms", "300")])
        } else {
            Answer::Reply("later")
        }
    })
    .await;
    let endpoint = Endpoint::new(addr.to_string()).service_config(retry_config(5, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    let started = Instant::now();
    assert_eq!(bounded(who(&channel)).await.unwrap(), "later");
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

/// Ten request messages, the later ones slow, so that an early answer lands mid-stream.
fn ten_asks() -> impl futures_util::Stream<Item = Ask> + Send + 'static {
    stream::unfold(0u32, |i| async move {
        if i >= 10 {
            return None;
        }
        if i >= 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some((
            Ask {
                count: i,
                delay_ms: u64::from(i) * 1000,
            },
            i + 1,
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_is_replayed_whole_on_retry() {
    // Attempt 0 is refused at once, mid-stream; attempt 1 fails after reading everything;
    // attempt 2 succeeds. Each attempt that read its body saw the whole stream.
    let (addr, seen, bodies) = raw_server_with_bodies(|n| match n {
        0 => Answer::FailNow(Code::Unavailable),
        1 => Answer::Fail(Code::Unavailable, vec![]),
        _ => Answer::Reply("collected"),
    })
    .await;
    let endpoint = Endpoint::new(addr.to_string()).service_config(retry_config(5, ""));
    let channel = Channel::lazy(endpoint).unwrap();
    let reply = bounded(channel.client_streaming(&COLLECT, Request::new(ten_asks())))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().name, "collected");
    assert_eq!(seen.lock().unwrap().len(), 3);
    let mut expected = Vec::new();
    let mut asks = std::pin::pin!(ten_asks());
    while let Some(ask) = futures_util::StreamExt::next(&mut asks).await {
        let payload = prost::Message::encode_to_vec(&ask);
        expected.push(0u8);
        expected.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        expected.extend_from_slice(&payload);
    }
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], expected, "attempt 1 got the replay and the rest");
    assert_eq!(bodies[1], expected, "attempt 2 too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_larger_than_the_retry_buffer_is_not_retried() {
    let (addr, seen, _) = raw_server_with_bodies(|_| Answer::Fail(Code::Unavailable, vec![])).await;
    let endpoint = Endpoint::new(addr.to_string())
        .service_config(retry_config(5, ""))
        .retry_buffer_size(20);
    let channel = Channel::lazy(endpoint).unwrap();
    let status = bounded(channel.client_streaming(&COLLECT, Request::new(ten_asks())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "committed once the buffer overflowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_drops_every_connection_is_not_redialled_in_a_loop() {
    // Accepts TCP and closes at once: HTTP/2's client handshake cannot tell (it does not wait
    // for the server's SETTINGS), so the channel must notice the connection never answered.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let dropper = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let channel =
        Channel::lazy(Endpoint::new(addr.to_string()).lb_policy(LbPolicy::RoundRobin)).unwrap();
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut failed = 0;
    while Instant::now() < deadline {
        let request = Request::new(Ask::default()).with_timeout(Duration::from_millis(200));
        if bounded(channel.unary(&WHO, request)).await.is_err() {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepts = accepted.load(Ordering::SeqCst);
    println!("dropping peer: {accepts} connections in 2.5 s, {failed} calls failed");
    // Backoff 1 s, 1.6 s (jitter 0.2) after the first: at most 4 connections in 2.5 s.
    assert!((1..=4).contains(&accepts), "{accepts} connections in 2.5 s");
    assert!(failed > 0);
    dropper.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_a_metric_and_the_call_is_one() {
    let (addr, _) = raw_server(|n| {
        if n < 2 {
            Answer::Fail(Code::Unavailable, vec![])
        } else {
            Answer::Reply("third")
        }
    })
    .await;
    let metrics = grpc::metrics::Metrics::new();
    let endpoint = Endpoint::new(addr.to_string()).service_config(retry_config(5, ""));
    let channel = Channel::lazy(endpoint)
        .unwrap()
        .intercept(metrics.client_interceptor("raw"));
    assert_eq!(bounded(who(&channel)).await.unwrap(), "third");
    let text = metrics.encode();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    let labels = r#"grpc_method="lb.Test/Who",grpc_target="raw""#;
    assert_eq!(
        value(&format!("grpc_client_attempt_started_total{{{labels}}}")),
        3.0
    );
    let count = |status: &str| {
        value(&format!(
            "grpc_client_attempt_duration_seconds_count{{{labels},grpc_status=\"{status}\"}}"
        ))
    };
    assert_eq!(count("UNAVAILABLE"), 2.0);
    assert_eq!(count("OK"), 1.0);
    let calls = format!("grpc_client_call_duration_seconds_count{{{labels},grpc_status=\"OK\"}}");
    assert_eq!(value(&calls), 1.0);
}

#[test]
fn bad_service_config_is_refused_at_channel_creation_naming_the_field() {
    let e = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "lb.Test"}],
            "retryPolicy": {"maxAttempts": 3, "initialBackoff": "fast"}}]}"#,
    )
    .unwrap_err();
    assert!(e.is_config());
    assert!(
        e.to_string()
            .contains("methodConfig[0].retryPolicy.initialBackoff"),
        "{e}"
    );
    let e = Channel::lazy(Endpoint::new("ipv4:300.0.0.1:5")).unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("ipv4:300.0.0.1:5"),
        "{e}"
    );
}
