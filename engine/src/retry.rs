//! One retry policy for every backend: capped exponential backoff with full jitter,
//! bounded attempts and bounded total time. Stores do not retry on their own (the SDK's
//! retries are off), so every attempt is counted here and reported.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// First backoff.
    pub base: Duration,
    /// Largest single backoff.
    pub cap: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// A short policy for preflight checks: fail fast on unreachable stores.
    pub fn preflight() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(15),
        }
    }

    /// The backoff before attempt `attempt + 1` (attempt is 1-based): full jitter over
    /// `min(cap, base * 2^(attempt-1))`, but never less than a server's hint.
    pub fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let ceiling = exp.min(self.cap);
        let jittered = ceiling.mul_f64(rand::random::<f64>());
        match hint {
            Some(h) => jittered.max(h.min(self.cap)),
            None => jittered,
        }
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the policy is
    /// exhausted. `retries` counts the retries made (for the report).
    pub async fn run<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        retries: &AtomicU64,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let res = tokio::select! {
                r = op() => r,
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            };
            match res {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    let wait = self.backoff(attempt, e.retry_after());
                    if start.elapsed() + wait > self.max_elapsed {
                        return Err(e);
                    }
                    tracing::debug!("attempt {attempt} failed ({e}); retrying in {wait:?}");
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Err(Error::Cancelled),
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn backoff_is_capped_and_respects_hints() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(60),
        };
        for attempt in 1..40 {
            assert!(p.backoff(attempt, None) <= Duration::from_secs(2));
        }
        assert!(p.backoff(1, Some(Duration::from_millis(1500))) >= Duration::from_millis(1500));
        // A hint above the cap is clamped to the cap.
        assert!(p.backoff(1, Some(Duration::from_secs(30))) <= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_then_succeeds() {
        let p = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let retries = AtomicU64::new(0);
        let out = p
            .run(&CancellationToken::new(), &retries, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(Error::Throttled {
                        message: "SlowDown".into(),
                        retry_after: None,
                    })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(retries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_fatal_errors_and_stops_at_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let retries = AtomicU64::new(0);
        let r: Result<()> = p
            .run(&CancellationToken::new(), &retries, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::AccessDenied("no".into()))
            })
            .await;
        assert!(matches!(r, Err(Error::AccessDenied(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let r: Result<()> = p
            .run(&CancellationToken::new(), &retries, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Server("500".into()))
            })
            .await;
        assert!(matches!(r, Err(Error::Server(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
