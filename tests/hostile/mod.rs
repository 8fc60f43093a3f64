//! The hostile-peer harness: a well-behaved client that calls beside each attack, and the
//! in-process RSS check. The raw HTTP/2 toolkit (frame writer and reader, literal-only HPACK,
//! gRPC framing, [`RawPeer`]) is `satellite_testkit`'s, re-exported here so each suite needs
//! one `use hostile::*`.
//!
//! Every attack is wrapped in [`Watch`]: it takes the RSS before, runs a good client in the
//! background, and at the end asserts that the good client saw no error, that a fresh
//! connection is still served, and that RSS grew by less than the stated bound. Tests of one
//! binary run one at a time (a shared lock) so the RSS figures are each attack's own.
// Each suite uses part of the harness and of the re-exported toolkit.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

pub use satellite_testkit::{frame::*, grpc::*, hpack::*, peer::*};
use tokio::{
    sync::{Mutex, MutexGuard},
    task::JoinHandle,
};

use crate::common::{echo_call, TestServer};

// ===== the good client, RSS and the per-attack watch =====

/// Resident set size of this process (the server runs in it), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Unary echo calls in a loop on its own connection until stopped.
pub struct GoodClient {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<Vec<String>>,
}

impl GoodClient {
    pub async fn start(server: &TestServer) -> Self {
        let channel = server.channel().await;
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), calls.clone());
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            // Bounded: at most 100 000 calls, and the watch stops it far sooner.
            for i in 0..100_000_u32 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let text = format!("good {i}");
                match echo_call(&channel, &text).await {
                    Ok(reply) if reply.text == text => {}
                    Ok(reply) => errors.push(format!("wrong reply {reply:?}")),
                    Err(status) => errors.push(format!("{status:?}")),
                }
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            errors
        });
        Self { stop, calls, task }
    }

    /// Stops and returns (calls made, errors).
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the good client hung")
            .unwrap();
        (self.calls.load(Ordering::SeqCst), errors)
    }
}

static SERIAL: Mutex<()> = Mutex::const_new(());

/// One attack's before/after checks.
pub struct Watch {
    name: &'static str,
    rss_before: u64,
    started: Instant,
    good: Option<GoodClient>,
    _serial: MutexGuard<'static, ()>,
}

impl Watch {
    /// Takes the lock, RSS, and starts the good client.
    pub async fn begin(name: &'static str, server: &TestServer) -> Self {
        let serial = SERIAL.lock().await;
        let good = GoodClient::start(server).await;
        // Let the good client's connection settle before the baseline.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Self {
            name,
            rss_before: rss_kib(),
            started: Instant::now(),
            good: Some(good),
            _serial: serial,
        }
    }

    /// Asserts: the good client saw no error (and made calls), a fresh connection is served,
    /// RSS grew by less than `bound_mib`, and the attack took less than `within`.
    pub async fn end(mut self, server: &TestServer, bound_mib: u64, within: Duration) {
        let elapsed = self.started.elapsed();
        let rss_after = rss_kib();
        let (calls, errors) = self.good.take().unwrap().stop().await;
        assert!(
            errors.is_empty(),
            "{}: the good client saw errors: {errors:?}",
            self.name
        );
        assert!(calls > 0, "{}: the good client made no call", self.name);
        let fresh = server.channel().await;
        assert_eq!(
            echo_call(&fresh, "after").await.unwrap().text,
            "after",
            "{}: no longer serving",
            self.name
        );
        let growth = rss_after.saturating_sub(self.rss_before);
        println!(
            "hostile: {}: RSS {} -> {} KiB (+{} KiB, bound {} MiB), {} ms, good calls {}",
            self.name,
            self.rss_before,
            rss_after,
            growth,
            bound_mib,
            elapsed.as_millis(),
            calls
        );
        assert!(
            growth < bound_mib * 1024,
            "{}: RSS grew by {growth} KiB (bound {bound_mib} MiB)",
            self.name
        );
        assert!(
            elapsed < within,
            "{}: took {elapsed:?} (bound {within:?})",
            self.name
        );
    }
}

/// Samples `live` every millisecond until stopped; returns the highest value seen.
pub fn sample_max(live: &crate::common::Live) -> (Arc<AtomicBool>, JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let live = live.clone();
    let task = tokio::spawn(async move {
        let mut max = 0;
        // Bounded: 30 s of samples at most.
        for _ in 0..30_000 {
            max = max.max(live.get());
            if s.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        max
    });
    (stop, task)
}
