//! The lister stage: drives one store's listing into a bounded channel. Retries and
//! resumption after a failed page are the request layer's (`store::layer`); this stage
//! only filters and forwards, so its memory is the channel's.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::Ctx;
use crate::error::Result;
use crate::store::{is_reserved, ObjectMeta, Store};

/// Capacity of a listing channel: about one page ahead of the differ.
pub const LIST_CHANNEL: usize = 1000;

/// Spawns the listing of `store`; entries arrive in key order on the returned receiver.
/// snapferry's own objects (the lease) are never listed. `absent_is_empty` is set for a
/// destination that preflight found missing (a directory not created yet): it is not
/// listed at all.
pub fn spawn(
    ctx: Arc<Ctx>,
    store: Arc<dyn Store>,
    filter: Option<super::KeyFilter>,
    absent_is_empty: bool,
) -> mpsc::Receiver<Result<ObjectMeta>> {
    let (tx, rx) = mpsc::channel(LIST_CHANNEL);
    tokio::spawn(async move {
        if absent_is_empty {
            return;
        }
        let mut stream = store.list(None);
        loop {
            let item = tokio::select! {
                i = stream.next() => i,
                _ = ctx.halt.cancelled() => return,
            };
            match item {
                None => return,
                Some(Ok(page)) => {
                    for m in page {
                        if is_reserved(&m.key) || filter.as_ref().is_some_and(|f| !f(&m.key)) {
                            continue;
                        }
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    rx
}
