//! The balancer: the resolver's addresses as subchannels, `pick_first` or `round_robin` over
//! them, and the pick each call waits for (or fails fast without).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use crate::grpc::{
    client::{
        resolve::{Address, Resolver},
        service_config::LbPolicy,
        subchannel::{self, Conn, ConnectivityState, Dialer, Listener, Owned, Subchannel},
    },
    status::Status,
};

/// A connection picked for one attempt, and the subchannel to tell if it turns out broken.
#[derive(Debug)]
pub(crate) struct Picked {
    pub(crate) conn: Conn,
    pub(crate) sub: Arc<Subchannel>,
}

/// The subchannels of one channel and how calls are spread over them.
#[derive(Debug)]
pub(crate) struct Pool {
    target: String,
    resolver: Arc<dyn Resolver>,
    policy: LbPolicy,
    dialer: Arc<Dialer>,
    min_resolve_interval: Duration,
    state: Mutex<State>,
    /// Woken on every state change; calls waiting for a pick listen.
    changed: Notify,
    next: AtomicUsize,
    started: AtomicBool,
    me: Weak<Self>,
}

#[derive(Debug, Default)]
struct State {
    subchannels: Vec<Owned>,
    /// pick_first's choice, an index into `subchannels`.
    selected: Option<usize>,
    /// Why resolution failed or found nothing; cleared by an answer with addresses.
    resolve_error: Option<String>,
    /// Whether the resolver has answered at least once.
    resolved: bool,
    last_resolve: Option<Instant>,
    resolving: bool,
}

/// What the balancer says to a call.
enum Pick {
    Ready(Picked),
    /// Wait: a connection is being made (or the resolver has not answered).
    Queue,
    /// Every address failed: a fail-fast call gets UNAVAILABLE with this reason.
    Fail(String),
}

impl Pool {
    pub(crate) fn new(
        target: String,
        resolver: Arc<dyn Resolver>,
        policy: LbPolicy,
        dialer: Dialer,
        min_resolve_interval: Duration,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            target,
            resolver,
            policy,
            dialer: Arc::new(dialer),
            min_resolve_interval,
            state: Mutex::default(),
            changed: Notify::new(),
            next: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// A connection for one attempt: READY now, or once one is when the call waits for ready
    /// or something is still connecting. A call that does not wait fails fast with UNAVAILABLE
    /// when every address has failed; every call stops at its deadline.
    pub(crate) async fn pick(
        &self,
        wait_for_ready: bool,
        deadline: Option<Instant>,
    ) -> Result<Picked, Status> {
        // The fast path: no lock beyond the picker's, no waiting.
        if let Pick::Ready(picked) = self.try_pick() {
            return Ok(picked);
        }
        self.start();
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a change between the two is not missed.
            notified.as_mut().enable();
            match self.try_pick() {
                Pick::Ready(picked) => return Ok(picked),
                Pick::Fail(why) if !wait_for_ready => {
                    return Err(Status::unavailable(format!("{}: {why}", self.target)));
                }
                Pick::Fail(_) | Pick::Queue => {}
            }
            match deadline {
                None => notified.await,
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Err(Status::deadline_exceeded(format!(
                            "deadline exceeded waiting for a connection to {}{}",
                            self.target,
                            self.why_not().map_or(String::new(), |w| format!(" ({w})"))
                        )));
                    }
                }
            }
        }
    }

    /// The channel's state: READY if a call could go now, else CONNECTING if something is
    /// connecting, TRANSIENT_FAILURE if everything failed, IDLE before the first call.
    pub(crate) fn state(&self) -> ConnectivityState {
        if !self.started.load(Ordering::Acquire) {
            return ConnectivityState::Idle;
        }
        match self.try_pick() {
            Pick::Ready(_) => ConnectivityState::Ready,
            Pick::Fail(_) => ConnectivityState::TransientFailure,
            Pick::Queue => {
                let state = self.state.lock().expect("pool state");
                let connecting = state
                    .subchannels
                    .iter()
                    .any(|o| o.sub.state() == ConnectivityState::Connecting);
                if connecting || !state.resolved {
                    ConnectivityState::Connecting
                } else {
                    ConnectivityState::Idle
                }
            }
        }
    }

    /// Each address and its state, in the resolver's order.
    pub(crate) fn subchannel_states(&self) -> Vec<(Address, ConnectivityState)> {
        let state = self.state.lock().expect("pool state");
        state
            .subchannels
            .iter()
            .map(|o| (o.sub.address.clone(), o.sub.state()))
            .collect()
    }

    /// Resolves at the next change of any state in the pool.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Tells the pool that a call found `picked`'s connection refusing new streams.
    pub(crate) fn broken(&self, picked: &Picked) {
        picked.sub.broken(picked.conn.generation);
        self.update();
    }

    /// Leaves IDLE: the first resolution, then connections.
    pub(crate) fn start(&self) {
        if !self.started.swap(true, Ordering::AcqRel) {
            self.resolve_now();
        }
    }

    fn try_pick(&self) -> Pick {
        let state = self.state.lock().expect("pool state");
        let subs = &state.subchannels;
        let ready = match self.policy {
            LbPolicy::PickFirst => state
                .selected
                .and_then(|i| subs.get(i))
                .and_then(|o| o.sub.pickable().map(|conn| (conn, o.sub.clone()))),
            LbPolicy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..subs.len()).find_map(|k| {
                    let o = &subs[(start + k) % subs.len()];
                    o.sub.pickable().map(|conn| (conn, o.sub.clone()))
                })
            }
        };
        if let Some((conn, sub)) = ready {
            return Pick::Ready(Picked { conn, sub });
        }
        if !state.resolved {
            return Pick::Queue;
        }
        if subs.is_empty() {
            let why = state
                .resolve_error
                .clone()
                .unwrap_or_else(|| "the resolver returned no addresses".into());
            return Pick::Fail(why);
        }
        let failed = subs
            .iter()
            .all(|o| o.sub.state() == ConnectivityState::TransientFailure);
        if failed {
            let errors: Vec<String> = subs
                .iter()
                .map(|o| match o.sub.last_error() {
                    Some(e) => format!("{}: {e}", o.sub.address),
                    None => format!("{}: not serving", o.sub.address),
                })
                .collect();
            return Pick::Fail(format!("no address is available ({})", errors.join("; ")));
        }
        Pick::Queue
    }

    fn why_not(&self) -> Option<String> {
        let state = self.state.lock().expect("pool state");
        if let Some(e) = &state.resolve_error {
            return Some(e.clone());
        }
        state.subchannels.iter().find_map(|o| {
            o.sub
                .last_error()
                .map(|e| format!("{}: {e}", o.sub.address))
        })
    }

    /// Recomputes pick_first's choice and which subchannels want a connection, then wakes
    /// the calls waiting for a pick.
    fn update(&self) {
        if self.policy == LbPolicy::PickFirst {
            let mut state = self.state.lock().expect("pool state");
            let subs = &state.subchannels;
            let still = state
                .selected
                .filter(|&i| subs.get(i).is_some_and(|o| o.sub.pickable().is_some()));
            // The first READY address, but only once every address before it has failed:
            // the resolver's order is the order of preference.
            let selected = still.or_else(|| {
                let first = subs
                    .iter()
                    .position(|o| o.sub.state() != ConnectivityState::TransientFailure)?;
                subs[first].sub.pickable().map(|_| first)
            });
            state.selected = selected;
            for (i, o) in state.subchannels.iter().enumerate() {
                o.sub.want(selected.is_none_or(|s| s == i));
            }
        }
        self.changed.notify_waiters();
    }

    /// Resolves now unless a resolution is running.
    fn resolve_now(&self) {
        self.resolve_after(|_| Duration::ZERO);
    }

    /// Resolves once `wait(last resolution)` has passed, unless a resolution is already
    /// running or due: one at a time, so every ask in between is served by it.
    fn resolve_after(&self, wait: impl FnOnce(Option<Instant>) -> Duration) {
        let wait = {
            let mut state = self.state.lock().expect("pool state");
            if state.resolving {
                return;
            }
            state.resolving = true;
            wait(state.last_resolve)
        };
        let me = self.me.clone();
        tokio::spawn(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if let Some(me) = me.upgrade() {
                let answer = me.resolver.resolve().await;
                me.apply(answer);
            }
        });
    }

    /// Takes the resolver's answer: keeps the subchannels of addresses still there, makes
    /// new ones, drops the rest.
    fn apply(&self, answer: std::io::Result<Vec<Address>>) {
        {
            let mut state = self.state.lock().expect("pool state");
            state.resolving = false;
            state.resolved = true;
            state.last_resolve = Some(Instant::now());
            match answer {
                Err(e) => {
                    tracing::debug!(target = %self.target, error = %e, "resolution failed");
                    // Keep the addresses we have: a resolver hiccup must not drop live
                    // connections.
                    state.resolve_error = Some(format!("resolution failed: {e}"));
                }
                Ok(addresses) if addresses.is_empty() && state.subchannels.is_empty() => {
                    state.resolve_error = Some("the resolver returned no addresses".into());
                }
                Ok(addresses) => {
                    state.resolve_error = None;
                    let mut old = std::mem::take(&mut state.subchannels);
                    let selected = state
                        .selected
                        .and_then(|i| old.get(i))
                        .map(|o| o.sub.clone());
                    let listener: Weak<dyn Listener> = self.me.clone();
                    let round_robin = self.policy == LbPolicy::RoundRobin;
                    let mut fresh = Vec::with_capacity(addresses.len());
                    for address in addresses {
                        if fresh.iter().any(|o: &Owned| o.sub.address == address) {
                            continue;
                        }
                        match old.iter().position(|o| o.sub.address == address) {
                            Some(i) => fresh.push(old.swap_remove(i)),
                            None => fresh.push(subchannel::spawn(
                                address,
                                self.dialer.clone(),
                                listener.clone(),
                                round_robin,
                            )),
                        }
                    }
                    state.selected =
                        selected.and_then(|s| fresh.iter().position(|o| Arc::ptr_eq(&o.sub, &s)));
                    state.subchannels = fresh;
                }
            }
        }
        self.update();
    }
}

impl Listener for Pool {
    fn changed(&self) {
        self.update();
    }

    /// Re-resolves at most once per `min_resolve_interval`: a flapping server must not turn
    /// into a DNS flood.
    fn resolve_again(&self) {
        let interval = self.min_resolve_interval;
        self.resolve_after(|last| {
            last.map_or(Duration::ZERO, |t| {
                (t + interval).saturating_duration_since(Instant::now())
            })
        });
    }
}
