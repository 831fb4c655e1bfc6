//! Idle timeouts: a request fails when no byte has moved for a while, not when it is
//! merely slow.
//!
//! A stalled connection (a black hole, a peer that stopped reading) must be noticed in
//! seconds, yet a 64 MiB part over a thin link may legitimately take minutes. Neither the
//! SDK's read timeout (it bounds the time to the response head, upload included) nor a
//! total deadline can tell the two apart. A [`Watch`] can: request bodies are sent through
//! a [`ProgressBody`] that ticks the watch each time the HTTP stack takes another chunk
//! (it only does once the previous one went out), response bodies tick it on every chunk
//! read, and [`Watch::guard`] fails the request once the watch has not ticked for the
//! idle limit. Waiting for the response head after the last byte was sent counts as idle
//! too: a server that never answers is a stall.
//!
//! Hand-written because no crate does this for both of our HTTP stacks (aws-smithy's
//! hyper client and reqwest); it is a few atomics and one timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use crate::error::{Error, Result};

/// How much a [`ProgressBody`] hands out at a time: small enough that a stall shows within
/// one socket buffer, large enough to cost nothing.
const CHUNK: usize = 64 << 10;

/// The last moment bytes moved for one request.
#[derive(Debug)]
pub struct Watch {
    start: Instant,
    /// Milliseconds after `start` of the last tick.
    last_ms: AtomicU64,
    idle: Duration,
}

impl Watch {
    /// A watch that allows `idle` without progress.
    pub fn new(idle: Duration) -> Arc<Self> {
        Arc::new(Watch {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            idle,
        })
    }

    /// Bytes moved now.
    pub fn tick(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Runs `fut`, failing it with a timeout once no byte has moved for the idle limit.
    pub async fn guard<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::pin!(fut);
        loop {
            let left = self.idle.saturating_sub(self.idle_for());
            tokio::select! {
                r = &mut fut => return r,
                _ = tokio::time::sleep(left) => {
                    if self.idle_for() >= self.idle {
                        return Err(Error::timeout(format!(
                            "{what}: no data moved for {}s (stalled connection)",
                            self.idle.as_secs_f32()
                        )));
                    }
                }
            }
        }
    }
}

/// A request body of known bytes that ticks a [`Watch`] as the HTTP stack consumes it.
pub struct ProgressBody {
    data: Bytes,
    watch: Arc<Watch>,
}

impl ProgressBody {
    /// `data`, reported to `watch` chunk by chunk.
    pub fn new(data: Bytes, watch: Arc<Watch>) -> Self {
        ProgressBody { data, watch }
    }
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(CHUNK);
        let chunk = self.data.split_to(n);
        self.watch.tick();
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[tokio::test(start_paused = true)]
    async fn a_stall_fails_after_the_idle_limit_and_progress_keeps_it_alive() {
        let w = Watch::new(Duration::from_secs(5));
        let t = tokio::time::Instant::now();
        let e = w
            .guard("get x", std::future::pending::<Result<()>>())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Timeout);
        assert!(t.elapsed() >= Duration::from_secs(5) && t.elapsed() < Duration::from_secs(6));

        // Slow but moving: a tick every 3 s for 30 s never trips a 5 s limit.
        let w = Watch::new(Duration::from_secs(5));
        let w2 = w.clone();
        let slow = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                w2.tick();
            }
            Ok(7)
        };
        assert_eq!(w.guard("put y", slow).await.unwrap(), 7);
    }

    #[test]
    fn the_body_hands_out_every_byte_once_and_ticks() {
        let data = Bytes::from(vec![5u8; 200_000]);
        let w = Watch::new(Duration::from_secs(1));
        let mut b = ProgressBody::new(data.clone(), w);
        assert_eq!(b.size_hint().exact(), Some(200_000));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut b).poll_frame(&mut cx) {
            got.extend_from_slice(f.data_ref().unwrap());
        }
        assert_eq!(got, data);
        assert!(b.is_end_stream());
    }
}
