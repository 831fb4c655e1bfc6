//! The lister stage: drives one store's listing into a bounded channel, resuming after
//! the last key seen when a page fails with a retryable error.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::Ctx;
use crate::error::Result;
use crate::stats::Kind;
use crate::store::{ObjectMeta, Store};

/// Capacity of a listing channel: about one page ahead of the differ.
pub const LIST_CHANNEL: usize = 1000;

/// Spawns the listing of `store`; entries arrive in key order on the returned receiver.
pub fn spawn(
    ctx: Arc<Ctx>,
    store: Arc<dyn Store>,
    filter: Option<super::KeyFilter>,
) -> mpsc::Receiver<Result<ObjectMeta>> {
    let (tx, rx) = mpsc::channel(LIST_CHANNEL);
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        let mut attempt = 1;
        'outer: loop {
            let mut stream = store.list(last.clone());
            loop {
                let t = std::time::Instant::now();
                let item = tokio::select! {
                    i = stream.next() => i,
                    _ = ctx.cancel.cancelled() => return,
                };
                let page = match item {
                    None => break 'outer,
                    Some(page) => {
                        ctx.lat.record(Kind::List, t.elapsed());
                        page
                    }
                };
                match page {
                    Ok(page) => {
                        attempt = 1;
                        for m in page {
                            last = Some(m.key.clone());
                            if filter.as_ref().is_some_and(|f| !f(&m.key)) {
                                continue;
                            }
                            if tx.send(Ok(m)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) if e.is_retryable() && attempt < ctx.opts.retry.max_attempts => {
                        let wait = ctx.opts.retry.backoff(attempt, e.retry_after());
                        tracing::debug!(
                            "listing {} failed ({e}); resuming after {wait:?}",
                            store.describe()
                        );
                        ctx.counters
                            .retries
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        attempt += 1;
                        tokio::time::sleep(wait).await;
                        continue 'outer;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        }
    });
    rx
}
