//! A replica killed with SIGKILL under mixed load: three `satellite serve` processes on
//! 127.0.0.1-3 behind one round_robin channel with a retry policy on `GetImage`. No unary
//! call fails; streams in flight on the dead replica fail with UNAVAILABLE, later ones go
//! elsewhere; the replica restarted rejoins within its backoff.
//!
//! The run lasts 60 s (`SATELLITE_FAILOVER_SECS` changes it, for a quicker look).

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use satellite::{
    app::{
        pb::{Area, Location},
        service::{GET_IMAGE, GET_IMAGES, INSTANCE_HEADER},
    },
    grpc::{Channel, Code, ConnectivityState, Endpoint, Request, ServiceConfig, Status},
};

const BIN: &str = env!("CARGO_BIN_EXE_satellite");

struct Replica {
    addr: SocketAddr,
    child: Child,
}

impl Replica {
    fn start(name: &str, addr: SocketAddr) -> Self {
        let child = Command::new(BIN)
            .args([
                "serve",
                "--plaintext",
                "--send-delay",
                "2",
                "--instance",
                name,
            ])
            .arg("--addr")
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start satellite serve");
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr, child }
    }

    fn kill(&mut self) {
        // Child::kill is SIGKILL on Unix: no GOAWAY, no drain, sockets reset by the kernel.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(ip: &str) -> SocketAddr {
    StdListener::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
}

#[derive(Default)]
struct Tally {
    unary_ok: AtomicUsize,
    unary_failed: Mutex<Vec<Status>>,
    streams_ok: AtomicUsize,
    /// Streams that failed, with whether they started before the channel saw the kill.
    streams_failed: Mutex<Vec<(Status, bool)>>,
    /// Unary answers per replica name.
    answered_by: Mutex<std::collections::HashMap<String, usize>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_unary_call_and_rejoins() {
    let secs: u64 = std::env::var("SATELLITE_FAILOVER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let total = Duration::from_secs(secs);
    let mut replicas: Vec<Replica> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .enumerate()
        .map(|(i, ip)| Replica::start(&format!("r{i}"), free_port(ip)))
        .collect();
    let target = format!(
        "ipv4:{}",
        replicas
            .iter()
            .map(|r| r.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let config = ServiceConfig::from_json(
        r#"{"loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{"name": [{"service": "satellite.Satellite", "method": "GetImage"}],
              "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.02s", "maxBackoff": "0.2s",
                              "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
    )
    .unwrap();
    let channel = Channel::lazy(Endpoint::new(target).service_config(config)).unwrap();

    let start = Instant::now();
    let end = start + total;
    let killed = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut workers = Vec::new();
    for w in 0..6 {
        let (channel, tally, killed) = (channel.clone(), tally.clone(), killed.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0i32;
            while Instant::now() < end {
                i += 1;
                if w < 4 {
                    let location = Location {
                        x: i % 80,
                        y: (i / 80) % 32,
                    };
                    let request = Request::new(location).with_timeout(Duration::from_secs(5));
                    match channel.unary(&GET_IMAGE, request).await {
                        Ok(reply) => {
                            tally.unary_ok.fetch_add(1, Ordering::Relaxed);
                            let by = reply
                                .metadata()
                                .get(INSTANCE_HEADER)
                                .unwrap_or("?")
                                .to_owned();
                            *tally.answered_by.lock().unwrap().entry(by).or_default() += 1;
                        }
                        Err(status) => tally.unary_failed.lock().unwrap().push(status),
                    }
                } else {
                    // 20 x 5 cells at 2 ms each: about 200 ms per stream.
                    let before_kill = !killed.load(Ordering::SeqCst);
                    let area = Area {
                        ll: Some(Location { x: 0, y: 0 }),
                        ur: Some(Location { x: 19, y: 4 }),
                    };
                    let request = Request::new(area).with_timeout(Duration::from_secs(10));
                    let outcome = async {
                        let mut cells = channel
                            .server_streaming(&GET_IMAGES, request)
                            .await?
                            .into_inner();
                        let mut n = 0;
                        while cells.message().await?.is_some() {
                            n += 1;
                        }
                        if n == 100 {
                            Ok(())
                        } else {
                            Err(Status::internal(format!("stream ended after {n} cells")))
                        }
                    }
                    .await;
                    match outcome {
                        Ok(()) => drop(tally.streams_ok.fetch_add(1, Ordering::Relaxed)),
                        Err(status) => {
                            tally
                                .streams_failed
                                .lock()
                                .unwrap()
                                .push((status, before_kill));
                        }
                    }
                }
            }
        }));
    }

    // Kill r1 a third of the way in, restart it at half-time.
    tokio::time::sleep_until((start + total / 3).into()).await;
    let victim_addr = replicas[1].addr;
    replicas[1].kill();
    let killed_at = Instant::now();
    let noticed = async {
        loop {
            let states = channel.subchannel_states();
            if states[1].1 != ConnectivityState::Ready {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let noticed = tokio::time::timeout(Duration::from_secs(5), noticed)
        .await
        .expect("the channel never noticed the kill");
    // Streams that start from here on must not fail; those that started before the channel
    // saw the kill may have been on the dead replica.
    killed.store(true, Ordering::SeqCst);
    tokio::time::sleep_until((start + total / 2).into()).await;
    let down_for = killed_at.elapsed();
    let answered_before_restart = tally.answered_by.lock().unwrap().get("r1").copied();
    replicas[1] = Replica::start("r1", victim_addr);
    let restarted = Instant::now();
    let rejoined = async {
        loop {
            if channel.subchannel_states()[1].1 == ConnectivityState::Ready {
                return restarted.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // The backoff in force after `down_for` of failures is at most 1.2 x the last step of
    // 1 s x 1.6^n whose sum first exceeds it; 30 s bounds every run of this test.
    let rejoin = tokio::time::timeout(Duration::from_secs(30), rejoined)
        .await
        .expect("the restarted replica never rejoined");
    let bound = backoff_bound(down_for);
    for w in workers {
        w.await.unwrap();
    }

    let unary_failed = tally.unary_failed.lock().unwrap();
    let streams_failed = tally.streams_failed.lock().unwrap();
    let answered_by = tally.answered_by.lock().unwrap();
    let by_r1 = answered_by.get("r1").copied().unwrap_or(0);
    println!(
        "failover over {secs} s: {} unary ok, {} unary failed; {} streams ok, {} failed \
         ({} of those started before the kill); kill noticed in {:?}; down {:?}; rejoined \
         {:?} after restart (backoff bound {:?}); unary answers by replica {:?}",
        tally.unary_ok.load(Ordering::Relaxed),
        unary_failed.len(),
        tally.streams_ok.load(Ordering::Relaxed),
        streams_failed.len(),
        streams_failed.iter().filter(|(_, before)| *before).count(),
        noticed - killed_at,
        down_for,
        rejoin,
        bound,
        answered_by,
    );
    assert!(
        unary_failed.is_empty(),
        "unary calls failed: {unary_failed:?}"
    );
    for (status, before_kill) in streams_failed.iter() {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            before_kill,
            "a stream started after the kill failed: {status:?}"
        );
    }
    assert!(
        rejoin <= bound,
        "rejoined after {rejoin:?}, backoff bound {bound:?}"
    );
    assert!(
        by_r1 > answered_before_restart.unwrap_or(0),
        "the restarted replica got no calls"
    );
    assert!(tally.streams_ok.load(Ordering::Relaxed) > 10);
}

/// The longest wait the connection backoff (1 s, x1.6, jitter 0.2, max 120 s) can be in
/// after failing for `down`: the step in force when `down` has passed, plus its jitter,
/// plus a second for the reconnection itself.
fn backoff_bound(down: Duration) -> Duration {
    let (mut step, mut elapsed) = (1.0f64, 0.0f64);
    // Each wait is at least 0.8 x its step, so the step in force at `down` is no later than
    // the first whose 0.8-scaled sum passes it.
    while elapsed <= down.as_secs_f64() {
        elapsed += 0.8 * step;
        step = (step * 1.6).min(120.0);
    }
    Duration::from_secs_f64(step * 1.2 + 1.0)
}
