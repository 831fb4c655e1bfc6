//! Credentials that expire, fetched from their provider and refreshed before they do.
//!
//! A migration round runs for hours; STS sessions (IRSA/web identity, ECS RAM roles, RRSA
//! on ACK, `credential_process`) last one. Every request asks [`Refreshing::get`] for
//! credentials as it is signed — retries included — and gets the cached ones until they
//! near their expiry, then fresh ones from the provider:
//!
//! - **When**: three quarters into their lifetime, but never earlier than a minute before
//!   expiry (a 1 h session is refreshed at 59 min; a 20 s one at 15 s). Credentials that
//!   state no expiry are fetched again every five minutes, so that a changed credentials
//!   file is picked up.
//! - **One fetch at a time**; requests wait for it rather than each asking the provider.
//! - **A failed fetch** keeps the old credentials while they are still valid (and tries
//!   again in a few seconds); only without valid credentials does it fail the request.
//! - **An expired-token answer** ([`crate::error::ErrorKind::CredentialsExpired`])
//!   invalidates the cache ([`Refreshing::invalidate`]), and the request layer retries
//!   the request once, signed with fresh credentials. Every refusal forces a fetch: a
//!   request cannot tell which credentials it was signed with, and credentials revoked
//!   just after they were fetched must not be served again. A burst (every request in
//!   flight refused at once) costs at most one fetch per request, once per expiry.
//!
//! Written by hand: the AWS SDK's identity cache cannot be told that the server refused
//! its credentials as expired (it would keep serving them until its own clock says so),
//! and no OSS SDK is used here at all. The providers themselves come from aws-config for
//! S3 (`store::s3`) and are small JSON-over-HTTP or process calls for OSS
//! (`store::oss::creds`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::error::Result;

/// Credentials and when they expire (`None`: they do not say). `Debug` shows only the
/// expiry: the credentials' own `Debug` is redacted, but nothing here depends on it.
#[derive(Clone)]
pub struct Expiring<C> {
    /// The credentials.
    pub value: C,
    /// Their expiry, on the wall clock.
    pub expires: Option<SystemTime>,
}

impl<C> std::fmt::Debug for Expiring<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expiring")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Fetches credentials from their provider.
pub type Fetch<C> = Arc<dyn Fn() -> BoxFuture<'static, Result<Expiring<C>>> + Send + Sync>;

/// How often credentials without an expiry are fetched again.
pub const NO_EXPIRY_REFRESH: Duration = Duration::from_secs(5 * 60);
/// The latest point of a refresh before expiry (for long sessions).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(60);
/// After a failed fetch while the old credentials are still valid: try again after this.
const RETRY_FETCH: Duration = Duration::from_secs(5);
/// A fetch that takes longer fails (the provider is an HTTP endpoint or a process).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

struct State<C> {
    current: Option<Expiring<C>>,
    refresh_at: Instant,
}

/// A provider behind a cache that refreshes before expiry (see the module docs).
pub struct Refreshing<C> {
    /// What the credentials come from (for errors and logs; never a secret).
    source: String,
    fetch: Fetch<C>,
    state: tokio::sync::Mutex<State<C>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl<C> std::fmt::Debug for Refreshing<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshing")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// When credentials fetched at `now` (wall clock `wall`) should be fetched again: three
/// quarters into their lifetime, or a minute before expiry, whichever is later.
pub fn refresh_after(expires: Option<SystemTime>, wall: SystemTime) -> Duration {
    let Some(exp) = expires else {
        return NO_EXPIRY_REFRESH;
    };
    let left = exp.duration_since(wall).unwrap_or(Duration::ZERO);
    let three_quarters = left.mul_f64(0.75);
    let minute_before = left.saturating_sub(REFRESH_BEFORE_EXPIRY);
    // Credentials that arrive (nearly) expired are not fetched again for every request.
    three_quarters
        .max(minute_before)
        .max(Duration::from_secs(1))
}

impl<C: Clone + Send + 'static> Refreshing<C> {
    /// A cache over `fetch`; nothing is fetched until the first request.
    pub fn new(source: impl Into<String>, fetch: Fetch<C>) -> Self {
        let now = Instant::now();
        Refreshing {
            source: source.into(),
            fetch,
            state: tokio::sync::Mutex::new(State {
                current: None,
                refresh_at: now,
            }),
            fetches: Default::default(),
        }
    }

    /// What the credentials come from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many times the provider was asked (for tests and `-v` logs).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Credentials to sign a request with: the cached ones, or fresh ones when they are
    /// due (see the module docs).
    pub async fn get(&self) -> Result<C> {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        if let Some(c) = &s.current {
            if now < s.refresh_at {
                return Ok(c.value.clone());
            }
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, (self.fetch)()).await {
            Ok(r) => r,
            Err(_) => Err(crate::error::Error::timeout(format!(
                "fetching credentials from {} took longer than {}s",
                self.source,
                FETCH_TIMEOUT.as_secs()
            ))),
        };
        match fetched {
            Ok(fresh) => {
                let wall = SystemTime::now();
                s.refresh_at = now + refresh_after(fresh.expires, wall);
                tracing::debug!(
                    "credentials from {} fetched; next refresh in {:?}",
                    self.source,
                    s.refresh_at - now
                );
                let v = fresh.value.clone();
                s.current = Some(fresh);
                Ok(v)
            }
            Err(e) => {
                let still_valid = s
                    .current
                    .as_ref()
                    .filter(|c| c.expires.is_none_or(|exp| SystemTime::now() < exp));
                if let Some(c) = still_valid {
                    tracing::warn!(
                        "refreshing credentials from {} failed ({e}); the current ones are still valid and used meanwhile",
                        self.source
                    );
                    let v = c.value.clone();
                    s.refresh_at = now + RETRY_FETCH;
                    return Ok(v);
                }
                Err(e)
            }
        }
    }

    /// The server refused the credentials as expired: the next request fetches fresh
    /// ones.
    pub async fn invalidate(&self) {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        if s.current.is_some() {
            tracing::info!(
                "credentials from {} were refused as expired; fetching fresh ones",
                self.source
            );
            s.refresh_at = now;
            if let Some(c) = s.current.as_mut() {
                // Never used again, even when the refresh fails.
                c.expires = Some(SystemTime::UNIX_EPOCH);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn counting(lifetime: Option<Duration>, fail_after: u64) -> (Arc<AtomicU64>, Refreshing<u64>) {
        let n = Arc::new(AtomicU64::new(0));
        let c = n.clone();
        let fetch: Fetch<u64> = Arc::new(move || {
            let i = c.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                if i > fail_after {
                    return Err(crate::error::Error::access_denied("provider down"));
                }
                Ok(Expiring {
                    value: i,
                    expires: lifetime.map(|l| SystemTime::now() + l),
                })
            })
        });
        (n, Refreshing::new("test", fetch))
    }

    #[test]
    fn refresh_point_is_three_quarters_or_a_minute_before_expiry() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| refresh_after(Some(t + Duration::from_secs(s)), t);
        assert_eq!(at(3600), Duration::from_secs(3540));
        assert_eq!(at(20), Duration::from_secs(15));
        assert_eq!(at(200), Duration::from_secs(150));
        assert_eq!(
            at(0),
            Duration::from_secs(1),
            "already expired: not every request"
        );
        assert_eq!(refresh_after(None, t), NO_EXPIRY_REFRESH);
    }

    #[tokio::test(start_paused = true)]
    async fn cached_until_due_then_refreshed_once() {
        let (n, r) = counting(Some(Duration::from_secs(3600)), u64::MAX);
        assert_eq!(r.get().await.unwrap(), 1);
        assert_eq!(r.get().await.unwrap(), 1);
        assert_eq!(n.load(Ordering::SeqCst), 1, "cached");
        tokio::time::advance(Duration::from_secs(3541)).await;
        assert_eq!(
            r.get().await.unwrap(),
            2,
            "refreshed a minute before expiry"
        );
        assert_eq!(r.get().await.unwrap(), 2);
        assert_eq!(r.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_valid_credentials_and_fails_without_them() {
        let (_, r) = counting(Some(Duration::from_secs(3600)), 1);
        assert_eq!(r.get().await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(3541)).await;
        assert_eq!(r.get().await.unwrap(), 1, "still valid: kept");
        // Refused as expired: never used again, and the provider is down.
        tokio::time::advance(Duration::from_secs(2)).await;
        r.invalidate().await;
        let e = r.get().await.unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::AccessDenied);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_are_never_served_again() {
        let (n, r) = counting(Some(Duration::from_secs(3600)), u64::MAX);
        assert_eq!(r.get().await.unwrap(), 1);
        r.invalidate().await;
        r.invalidate().await;
        assert_eq!(r.get().await.unwrap(), 2, "a fetch after refusals");
        assert_eq!(r.get().await.unwrap(), 2, "then cached again");
        // Refused right after the fetch (revoked): fetched again, not served.
        r.invalidate().await;
        assert_eq!(r.get().await.unwrap(), 3);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_without_expiry_are_fetched_again_every_five_minutes() {
        let (_, r) = counting(None, u64::MAX);
        assert_eq!(r.get().await.unwrap(), 1);
        tokio::time::advance(NO_EXPIRY_REFRESH - Duration::from_secs(1)).await;
        assert_eq!(r.get().await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(r.get().await.unwrap(), 2);
    }
}
