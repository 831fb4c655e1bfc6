//! The retry policy: capped exponential backoff with full jitter, bounded attempts and
//! bounded total time, aware of which requests are idempotent.
//!
//! [`RetryPolicy::run`] is called from exactly one place, the request layer
//! ([`crate::store::layer`]), which wraps every store of a run; stores do not retry on
//! their own (the SDK's retries are off), so every attempt is counted and reported.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

/// Whether a request may be sent again after a failure that may have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Sending it twice has the effect of sending it once (GET, HEAD, LIST, PUT of the
    /// same bytes, UploadPart, DELETE, abort): every transient failure is retried.
    Idempotent,
    /// A repeat may act differently (CompleteMultipartUpload: the first attempt may have
    /// completed the upload). Retried too, but the caller must confirm an answer that
    /// only makes sense if an earlier attempt succeeded.
    NotIdempotent,
}

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

/// Attempts at most for failures that are not an outage (corrupted bytes, clock skew).
const FEW: u32 = 4;

/// The default time budget of one request's retries: long enough for a real outage
/// (a restarting server, a failover, a network blip of a minute or two).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(300);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            // The budget is time, not a count: attempts are bounded by `max_elapsed`
            // (with the 10 s cap, about 40 attempts in 5 minutes).
            max_attempts: 1000,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            max_elapsed: DEFAULT_BUDGET,
        }
    }
}

impl RetryPolicy {
    /// The default policy with another time budget.
    pub fn with_budget(budget: Duration) -> Self {
        RetryPolicy {
            max_elapsed: budget,
            ..RetryPolicy::default()
        }
    }
}

/// What one retried request ended with, for callers that must know whether an earlier
/// attempt could have taken effect.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The final result.
    pub result: Result<T>,
    /// Attempts made (1 = the first one decided).
    pub attempts: u32,
    /// For a [`Idempotency::NotIdempotent`] request: whether an earlier, failed attempt
    /// may have taken effect on the server (it failed in a way that does not rule that
    /// out, such as a timeout or a reset). The caller then confirms an answer that only
    /// an earlier success explains ("no such upload", "precondition failed").
    pub maybe_applied: bool,
    /// The kinds of the attempts that failed and were retried, in order.
    pub retried: Vec<ErrorKind>,
}

impl RetryPolicy {
    /// A short policy for preflight checks and cleanup: fail fast on unreachable stores.
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

    /// Whether attempt `attempt` (1-based) that failed with `e` is tried again. Both
    /// kinds of request are retried on transient errors: a non-idempotent one's caller
    /// confirms answers that show an earlier attempt took effect ([`Outcome::maybe_applied`]),
    /// which is how object_store and the SDKs treat CompleteMultipartUpload too.
    fn should_retry(&self, e: &Error, attempt: u32) -> bool {
        // An outage (unreachable, timeouts, throttling, 5xx) is waited out for the whole
        // time budget; bytes that arrive corrupted, or a rejected clock, are not an outage:
        // a few more tries, then the object fails loudly.
        let cap = match e.kind() {
            ErrorKind::ChecksumMismatch | ErrorKind::ClockSkew => FEW.min(self.max_attempts),
            // Once more, signed with fresh credentials (the store invalidated its cache).
            ErrorKind::CredentialsExpired => 2.min(self.max_attempts),
            _ => self.max_attempts,
        };
        e.is_retryable() && attempt < cap
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the policy is
    /// exhausted. `retries` counts the retries made (for the report). Cancellation ends
    /// the wait and the attempt in flight, unless `cancel` is `None` (cleanup requests
    /// that must run after Ctrl-C: aborting uploads).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        cancel: Option<&CancellationToken>,
        retries: &AtomicU64,
        idem: Idempotency,
        mut op: F,
    ) -> Outcome<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let start = Instant::now();
        let mut attempt = 1;
        let mut maybe_applied = false;
        let mut retried = Vec::new();
        let done = |result, attempts, maybe_applied, retried| Outcome {
            result,
            attempts,
            maybe_applied,
            retried,
        };
        loop {
            if cancel.is_cancelled() {
                return done(Err(Error::cancelled()), attempt, maybe_applied, retried);
            }
            let res = tokio::select! {
                r = op(attempt) => r,
                _ = cancel.cancelled() => Err(Error::cancelled()),
            };
            match res {
                Err(e) if self.should_retry(&e, attempt) => {
                    let wait = self.backoff(attempt, e.retry_after());
                    if start.elapsed() + wait > self.max_elapsed {
                        return done(Err(e), attempt, maybe_applied, retried);
                    }
                    retried.push(e.kind());
                    maybe_applied |=
                        idem == Idempotency::NotIdempotent && !e.kind().certainly_not_applied();
                    tracing::debug!("attempt {attempt} failed ({e}); retrying in {wait:?}");
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return done(Err(Error::cancelled()), attempt, maybe_applied, retried),
                    }
                    attempt += 1;
                }
                result => return done(result, attempt, maybe_applied, retried),
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
            .run(None, &retries, Idempotency::Idempotent, |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(Error::throttled("SlowDown", None))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.result.unwrap(), 7);
        assert_eq!(out.attempts, 4);
        assert!(
            !out.maybe_applied,
            "idempotent requests need no confirmation"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(retries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_two_minute_outage_is_ridden_out_within_the_budget() {
        let p = RetryPolicy::default();
        let retries = AtomicU64::new(0);
        let start = tokio::time::Instant::now();
        let r = p
            .run(None, &retries, Idempotency::Idempotent, |_| async move {
                if start.elapsed() < Duration::from_secs(120) {
                    Err(Error::unreachable("connection refused"))
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(r.result.is_ok(), "{:?}", r.result);
        assert!(start.elapsed() < Duration::from_secs(135));
        // And a permanent outage ends at the budget, not much later.
        let start = tokio::time::Instant::now();
        let r: Outcome<()> = RetryPolicy::with_budget(Duration::from_secs(60))
            .run(None, &retries, Idempotency::Idempotent, |_| async {
                Err(Error::unreachable("connection refused"))
            })
            .await;
        assert!(r.result.is_err());
        assert!(
            start.elapsed() <= Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_fatal_errors_and_stops_at_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let retries = AtomicU64::new(0);
        let r: Outcome<()> = p
            .run(None, &retries, Idempotency::Idempotent, |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::access_denied("no"))
            })
            .await;
        assert_eq!(r.result.unwrap_err().kind(), ErrorKind::AccessDenied);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let r: Outcome<()> = p
            .run(None, &retries, Idempotency::Idempotent, |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::server("500"))
            })
            .await;
        assert_eq!(r.result.unwrap_err().kind(), ErrorKind::Server);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_idempotent_request_knows_whether_a_failed_attempt_may_have_applied() {
        let p = RetryPolicy::default();
        let retries = AtomicU64::new(0);
        let calls = AtomicU32::new(0);
        // Throttled and refused attempts never reached the server's logic.
        let r: Outcome<()> = p
            .run(None, &retries, Idempotency::NotIdempotent, |_| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Error::throttled("SlowDown", None)),
                    1 => Err(Error::unreachable("refused")),
                    _ => Err(Error::not_found("NoSuchUpload")),
                }
            })
            .await;
        assert!(!r.maybe_applied);
        // A timeout may have: the caller must confirm.
        calls.store(0, Ordering::SeqCst);
        let r: Outcome<()> = p
            .run(None, &retries, Idempotency::NotIdempotent, |_| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Error::timeout("reset after sending")),
                    _ => Err(Error::not_found("NoSuchUpload")),
                }
            })
            .await;
        assert!(r.maybe_applied);
        assert_eq!(r.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_the_wait() {
        let p = RetryPolicy::default();
        let cancel = CancellationToken::new();
        let retries = AtomicU64::new(0);
        let c2 = cancel.clone();
        let r: Outcome<()> = p
            .run(Some(&cancel), &retries, Idempotency::Idempotent, |_| {
                c2.cancel();
                async { Err(Error::server("500")) }
            })
            .await;
        assert_eq!(r.result.unwrap_err().kind(), ErrorKind::Cancelled);
    }
}
