//! Retries (gRFC A6): which failed attempts may go again, after how long, and the channel's
//! throttle that stops retries when most calls fail.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use http::HeaderMap;

use crate::grpc::{
    client::{backoff::retry_delay, service_config::RetryPolicy},
    status::Status,
};

/// The trailer a server sets to say when (or whether) to retry.
const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Transparent retries of one call (streams that never reached the server's application)
/// stop here, so a server that refuses every stream cannot spin a call until its deadline.
pub(crate) const MAX_TRANSPARENT: u32 = 16;

/// A6's token bucket, in thousandths of a token so that it needs no lock.
#[derive(Debug)]
pub(crate) struct Throttle {
    tokens: AtomicI64,
    max: i64,
    ratio: i64,
}

impl Throttle {
    pub(crate) fn new(max_tokens: f64, token_ratio: f64) -> Self {
        let max = (max_tokens * 1000.0) as i64;
        Self {
            tokens: AtomicI64::new(max),
            max,
            ratio: (token_ratio * 1000.0) as i64,
        }
    }

    /// A call failed with a retryable code (or was pushed back): one token less.
    pub(crate) fn failure(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t - 1000).max(0))
            });
    }

    /// A call got its answer: `tokenRatio` tokens more, up to the maximum.
    pub(crate) fn success(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + self.ratio).min(self.max))
            });
    }

    /// Retries go on only while more than half the tokens are left.
    pub(crate) fn allows(&self) -> bool {
        self.tokens.load(Ordering::Acquire) * 2 > self.max
    }
}

/// How an attempt failed, as the retry decision needs it.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) status: Status,
    /// The request never reached the server's application: retried without counting.
    pub(crate) transparent: bool,
    /// Response headers arrived, or the request outgrew the retry buffer: never retried.
    pub(crate) committed: bool,
    /// The server's `grpc-retry-pushback-ms`, when it sent one.
    pub(crate) pushback: Option<Pushback>,
}

impl Failed {
    /// A failure after which the call is over.
    pub(crate) fn committed(status: Status) -> Self {
        Self {
            status,
            transparent: false,
            committed: true,
            pushback: None,
        }
    }

    /// A failure an attempt may be retried after, if the policy says so.
    pub(crate) fn retryable(status: Status) -> Self {
        Self {
            status,
            transparent: false,
            committed: false,
            pushback: None,
        }
    }

    /// A failure before the request reached the server.
    pub(crate) fn transparent(status: Status) -> Self {
        Self {
            status,
            transparent: true,
            committed: false,
            pushback: None,
        }
    }
}

/// A server's word on retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushback {
    After(Duration),
    Never,
}

/// Reads `grpc-retry-pushback-ms`: a non-negative integer waits that long, anything else
/// (negative, not a number) means do not retry.
pub(crate) fn pushback(headers: &HeaderMap) -> Option<Pushback> {
    let value = headers.get(PUSHBACK)?;
    let ms = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    Some(match ms {
        Some(ms) if ms >= 0 => Pushback::After(Duration::from_millis(ms as u64)),
        _ => Pushback::Never,
    })
}

/// The wait before retry number `retry` (1 for the first), or `None` when the call must
/// stop: the code is not retryable, attempts are used up, the throttle or the server says no.
pub(crate) fn next_delay(
    policy: &RetryPolicy,
    throttle: Option<&Throttle>,
    failed: &Failed,
    retry: u32,
) -> Option<Duration> {
    let retryable_code = policy.retryable.contains(&failed.status.code());
    let pushed_back = failed.pushback.is_some();
    // A6: failures that count against the throttle are the retryable codes and pushbacks.
    if let Some(t) = throttle.filter(|_| retryable_code || pushed_back) {
        t.failure();
    }
    if failed.committed || !retryable_code || retry >= policy.max_attempts {
        return None;
    }
    if throttle.is_some_and(|t| !t.allows()) {
        return None;
    }
    match failed.pushback {
        Some(Pushback::Never) => None,
        Some(Pushback::After(d)) => Some(d),
        None => Some(retry_delay(
            policy.initial_backoff,
            policy.max_backoff,
            policy.multiplier,
            retry,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::status::Code;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            multiplier: 2.0,
            retryable: vec![Code::Unavailable],
        }
    }

    #[test]
    fn throttle_stops_retries_below_half_and_refills_by_the_ratio() {
        let t = Throttle::new(10.0, 0.5);
        assert!(t.allows());
        for _ in 0..5 {
            t.failure();
        }
        assert!(!t.allows(), "5 of 10 tokens left is not more than half");
        t.success();
        assert!(t.allows(), "5.5 tokens");
        for _ in 0..100 {
            t.failure();
        }
        for _ in 0..100 {
            t.success();
        }
        assert_eq!(
            t.tokens.load(Ordering::Relaxed),
            10_000,
            "capped at the maximum"
        );
    }

    #[test]
    fn decides_like_a6() {
        let p = policy(3);
        let unavailable = || Failed::retryable(Status::unavailable("x"));
        assert!(next_delay(&p, None, &unavailable(), 1).is_some());
        assert!(next_delay(&p, None, &unavailable(), 2).is_some());
        assert!(
            next_delay(&p, None, &unavailable(), 3).is_none(),
            "3 attempts in all"
        );
        let other = Failed::retryable(Status::internal("x"));
        assert!(next_delay(&p, None, &other, 1).is_none());
        let committed = Failed::committed(Status::unavailable("x"));
        assert!(next_delay(&p, None, &committed, 1).is_none());
        let mut pushed = unavailable();
        pushed.pushback = Some(Pushback::After(Duration::from_millis(7)));
        assert_eq!(
            next_delay(&p, None, &pushed, 1),
            Some(Duration::from_millis(7))
        );
        pushed.pushback = Some(Pushback::Never);
        assert!(next_delay(&p, None, &pushed, 1).is_none());

        let mut headers = HeaderMap::new();
        headers.insert(PUSHBACK, "-1".parse().unwrap());
        assert_eq!(pushback(&headers), Some(Pushback::Never));
        headers.insert(PUSHBACK, "250".parse().unwrap());
        assert_eq!(
            pushback(&headers),
            Some(Pushback::After(Duration::from_millis(250)))
        );
        headers.insert(PUSHBACK, "soon".parse().unwrap());
        assert_eq!(pushback(&headers), Some(Pushback::Never));
    }
}
