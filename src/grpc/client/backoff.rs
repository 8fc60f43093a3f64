//! Delays between tries: the connection backoff of gRPC's `connection-backoff.md`, and the
//! jittered retry backoff of gRFC A6.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// How a subchannel spaces its connection attempts (`connection-backoff.md`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectBackoff {
    /// The wait after the first failure (1 s).
    pub initial: Duration,
    /// The growth per failure (1.6).
    pub multiplier: f64,
    /// The random spread, as a fraction of the wait (0.2).
    pub jitter: f64,
    /// The longest wait (120 s).
    pub max: Duration,
    /// The least time a connection attempt is given (20 s).
    pub min_connect_timeout: Duration,
}

impl Default for ConnectBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
            min_connect_timeout: Duration::from_secs(20),
        }
    }
}

/// The state of one subchannel's backoff.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: ConnectBackoff,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(config: ConnectBackoff) -> Self {
        Self {
            config,
            current: config.initial,
        }
    }

    /// The deadline for the next connection attempt: max(MIN_CONNECT_TIMEOUT, backoff).
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.config.min_connect_timeout.max(self.current)
    }

    /// The wait after a failed attempt, jittered; the next wait grows.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let spread = self.config.jitter * (2.0 * random_unit() - 1.0);
        let delay = self.current.mul_f64((1.0 + spread).max(0.0));
        self.current = self
            .current
            .mul_f64(self.config.multiplier)
            .min(self.config.max);
        delay
    }

    /// After a connection that worked: start again from the initial wait.
    pub(crate) fn reset(&mut self) {
        self.current = self.config.initial;
    }
}

/// A6: the n-th retry (n >= 1) waits random(0, min(initial x multiplier^(n-1), max)).
pub(crate) fn retry_delay(initial: Duration, max: Duration, multiplier: f64, n: u32) -> Duration {
    let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
    let ceiling = initial.as_secs_f64() * multiplier.powi(exp);
    let ceiling = ceiling.min(max.as_secs_f64());
    Duration::try_from_secs_f64(ceiling * random_unit()).unwrap_or(max)
}

/// A uniform number in [0, 1): jitter needs spread, not cryptographic quality, so the std
/// hasher's random keys over a counter do without a dependency.
pub(crate) fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_the_multiplier_within_the_jitter_up_to_the_max() {
        let mut b = Backoff::new(ConnectBackoff::default());
        assert_eq!(b.connect_timeout(), Duration::from_secs(20));
        let mut expected = 1.0f64;
        for _ in 0..20 {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= expected * 0.8 - 1e-9 && d <= expected * 1.2 + 1e-9,
                "{d} vs {expected}"
            );
            expected = (expected * 1.6).min(120.0);
        }
        assert_eq!(b.connect_timeout(), Duration::from_secs(120));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }

    #[test]
    fn retry_delays_stay_under_their_ceiling() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for n in 1..8 {
            let ceiling = (0.1 * 2f64.powi(n as i32 - 1)).min(1.0);
            for _ in 0..50 {
                let d = retry_delay(initial, max, 2.0, n).as_secs_f64();
                assert!(d <= ceiling, "{n}: {d} > {ceiling}");
            }
        }
        let spread: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(spread.iter().any(|&u| u < 0.5) && spread.iter().any(|&u| u >= 0.5));
    }
}
