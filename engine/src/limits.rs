//! Rate limits shared by every worker (governor): bytes per second and requests per
//! second. Workers `await` the limiter before each request or chunk; nothing blocks
//! inside a poll function.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Bandwidth is metered in KiB cells so that u32 quotas reach far beyond 10 Gbit/s.
const CELL: u64 = 1024;

/// The shared limiters of one run.
#[derive(Debug, Default)]
pub struct Limits {
    bytes: Option<(DefaultDirectRateLimiter, u32)>,
    requests: Option<DefaultDirectRateLimiter>,
}

impl Limits {
    /// `bwlimit` in bytes per second, `tpslimit` in requests per second; 0/None = off.
    pub fn new(bwlimit: Option<u64>, tpslimit: Option<u32>) -> Self {
        let bytes = bwlimit.filter(|b| *b > 0).map(|b| {
            let cells = (b / CELL).clamp(1, u32::MAX as u64) as u32;
            let n = NonZeroU32::new(cells).unwrap_or(NonZeroU32::MIN);
            // Burst of one second's worth: smooth, and large enough for any chunk.
            (
                RateLimiter::direct(Quota::per_second(n).allow_burst(n)),
                cells,
            )
        });
        let requests = tpslimit
            .and_then(NonZeroU32::new)
            .map(|n| RateLimiter::direct(Quota::per_second(n).allow_burst(NonZeroU32::MIN)));
        Limits { bytes, requests }
    }

    /// Waits until `n` bytes may move.
    pub async fn bytes(&self, n: u64) {
        let Some((lim, burst)) = &self.bytes else {
            return;
        };
        let mut cells = n.div_ceil(CELL);
        while cells > 0 {
            let take = cells.min(*burst as u64) as u32;
            if let Some(t) = NonZeroU32::new(take) {
                // `take` <= burst, so the limiter can always grant it.
                let _ = lim.until_n_ready(t).await;
            }
            cells -= take as u64;
        }
    }

    /// Waits until one more request may be sent.
    pub async fn request(&self) {
        if let Some(lim) = &self.requests {
            lim.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn byte_limit_spreads_transfers_over_time() {
        // 1 MiB/s with a 1 s burst: 3 MiB needs at least ~2 s beyond the burst.
        let l = Limits::new(Some(1 << 20), None);
        let t = Instant::now();
        l.bytes(3 << 20).await;
        let el = t.elapsed().as_secs_f64();
        assert!(el >= 1.8, "3 MiB at 1 MiB/s took only {el:.2}s");
    }

    #[tokio::test]
    async fn request_limit_spaces_requests() {
        let l = Limits::new(None, Some(20));
        let t = Instant::now();
        for _ in 0..11 {
            l.request().await;
        }
        let el = t.elapsed().as_secs_f64();
        assert!(el >= 0.45, "11 requests at 20/s took only {el:.2}s");
    }

    #[tokio::test]
    async fn no_limits_do_not_wait() {
        let l = Limits::new(None, None);
        let t = Instant::now();
        l.bytes(u64::MAX / 2).await;
        l.request().await;
        assert!(t.elapsed().as_millis() < 100);
    }
}
