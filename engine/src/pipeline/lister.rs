//! The lister stage: drives one store's listing into a bounded channel. Retries and
//! resumption after a failed page are the request layer's (`store::layer`); this stage
//! only filters and forwards, so its memory is the channel's (and, fanned out, a bounded
//! number of pages).
//!
//! Two ways to list:
//! - flat: one listing of everything, one request at a time ([`Store::list`]);
//! - fanned out ([`fan_out`]), where the store lists one level at a time
//!   ([`Store::lists_levels`]): the tree is walked depth-first in key order, and the
//!   levels of the common prefixes about to be reached are listed ahead, up to
//!   `--concurrency` LIST requests at once. Keys under `a/` are contiguous and sort
//!   exactly where `a/` sorts among its siblings (`a.b` < `a/` < `a0`), so emitting a
//!   level's objects and expanding its prefixes in place yields strict byte order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, Notify, Semaphore};

use super::Ctx;
use crate::error::{Error, Result};
#[cfg(test)]
use crate::store::Part;
use crate::store::{is_reserved, LevelEntry, ObjectMeta, Store};

/// Capacity of a listing channel: about one page ahead of the differ.
pub const LIST_CHANNEL: usize = 1000;

/// Spawns the listing of `store`; entries arrive in key order on the returned receiver.
/// snapferry's own objects (the lease) are never listed. `absent_is_empty` is set for a
/// destination that preflight found missing (a directory not created yet): it is not
/// listed at all. `fan_out` lists level by level with up to `--concurrency` requests in
/// flight where the store can (else flat, as without it).
pub fn spawn(
    ctx: Arc<Ctx>,
    store: Arc<dyn Store>,
    filter: Option<super::KeyFilter>,
    absent_is_empty: bool,
    fan_out: bool,
) -> mpsc::Receiver<Result<ObjectMeta>> {
    let (tx, rx) = mpsc::channel(LIST_CHANNEL);
    tokio::spawn(async move {
        if absent_is_empty {
            return;
        }
        let keep =
            |m: &ObjectMeta| !is_reserved(&m.key) && filter.as_ref().is_none_or(|f| f(&m.key));
        if fan_out && store.lists_levels() {
            let halt = ctx.halt.clone();
            tokio::select! {
                _ = self::fan_out(store, ctx.opts.concurrency, keep, &tx) => {}
                _ = halt.cancelled() => {}
            }
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
                        if !keep(&m) {
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

/// Aborts a spawned task when dropped (a listing nobody reads any more).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One level's listing, opened: a task drives it (one request at a time, each under the
/// shared permits) into a one-page channel; `buf` holds the page being consumed.
struct Node {
    rx: mpsc::Receiver<Result<Vec<LevelEntry>>>,
    _task: AbortOnDrop,
    buf: VecDeque<LevelEntry>,
    /// Common prefixes in `buf` (to skip scanning pages of objects only).
    prefixes: usize,
    /// The listing ended (its channel closed).
    closed: bool,
    /// The listing failed; reported when the walk reaches this level.
    failed: Option<Error>,
}

impl Node {
    fn take_page(&mut self, item: Option<Result<Vec<LevelEntry>>>) {
        match item {
            None => self.closed = true,
            Some(Ok(page)) => {
                self.prefixes += page
                    .iter()
                    .filter(|e| matches!(e, LevelEntry::Prefix(_)))
                    .count();
                self.buf.extend(page);
            }
            Some(Err(e)) => self.failed = Some(e),
        }
    }

    /// Takes the next page if one has arrived and nothing is buffered.
    fn try_fill(&mut self) {
        while self.buf.is_empty() && !self.closed && self.failed.is_none() {
            match self.rx.try_recv() {
                Ok(item) => self.take_page(Some(item)),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => self.take_page(None),
            }
        }
    }

    fn pop(&mut self) -> Option<LevelEntry> {
        let e = self.buf.pop_front()?;
        if matches!(e, LevelEntry::Prefix(_)) {
            self.prefixes -= 1;
        }
        Some(e)
    }
}

/// What the level tasks share: the request permits and the wake-up of the walk.
struct Shared {
    store: Arc<dyn Store>,
    permits: Semaphore,
    /// Pages delivered by any level task (the walk rescans when it changes).
    events: AtomicU64,
    notify: Notify,
}

impl Shared {
    fn open(self: &Arc<Self>, prefix: String) -> Node {
        let (tx, rx) = mpsc::channel(1);
        let sh = self.clone();
        let task = tokio::spawn(async move {
            let mut pages = sh.store.list_level(&prefix, None);
            loop {
                // The channel slot first: a page is fetched only when it has room, so a
                // level holds at most one page besides the one being consumed.
                let Ok(slot) = tx.reserve().await else {
                    return;
                };
                let item = {
                    let Ok(_permit) = sh.permits.acquire().await else {
                        return;
                    };
                    pages.next().await
                };
                let end = !matches!(item, Some(Ok(_)));
                if let Some(item) = item {
                    slot.send(item);
                }
                sh.events.fetch_add(1, Ordering::Release);
                sh.notify.notify_one();
                if end {
                    return;
                }
            }
        });
        Node {
            rx,
            _task: AbortOnDrop(task),
            buf: VecDeque::new(),
            prefixes: 0,
            closed: false,
            failed: None,
        }
    }
}

/// Lists the store depth-first in key order, one level per request stream, with up to
/// `concurrency` LIST requests in flight and up to `concurrency` levels listed ahead of
/// the walk (each holding at most two pages); sends the objects `keep` accepts into `tx`.
/// An out-of-order key (a store breaking the level contract) is a protocol error.
pub(crate) async fn fan_out(
    store: Arc<dyn Store>,
    concurrency: usize,
    keep: impl Fn(&ObjectMeta) -> bool,
    tx: &mpsc::Sender<Result<ObjectMeta>>,
) {
    let window = concurrency.max(1);
    let sh = Arc::new(Shared {
        store,
        permits: Semaphore::new(window),
        events: AtomicU64::new(0),
        notify: Notify::new(),
    });
    // The walk's path from the root to the level being read; the top is consumed.
    let mut stack: Vec<Node> = vec![sh.open(String::new())];
    // Levels listed ahead, by prefix; each is pushed when the walk reaches it.
    let mut ahead: HashMap<String, Node> = HashMap::new();
    let mut seen = u64::MAX;
    let mut last: Option<String> = None;
    loop {
        let events = sh.events.load(Ordering::Acquire);
        if events != seen {
            seen = events;
            prefetch(&sh, &stack, &mut ahead, window);
        }
        let Some(top) = stack.last_mut() else {
            return;
        };
        match top.pop() {
            Some(LevelEntry::Object(m)) => {
                if last.as_ref().is_some_and(|l| m.key.as_str() <= l.as_str()) {
                    let _ = tx
                        .send(Err(Error::protocol(format!(
                            "list {}: the level listings are not in key order ({:?} after {:?})",
                            sh.store.describe(),
                            m.key,
                            last.unwrap_or_default()
                        ))))
                        .await;
                    return;
                }
                last = Some(m.key.clone());
                if keep(&m) && tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            Some(LevelEntry::Prefix(p)) => {
                if is_reserved(&p) {
                    ahead.remove(&p);
                    continue;
                }
                let node = ahead.remove(&p).unwrap_or_else(|| sh.open(p));
                stack.push(node);
                // A slot of the window is free again.
                seen = u64::MAX;
            }
            None => {
                if let Some(e) = top.failed.take() {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                if top.closed {
                    stack.pop();
                    continue;
                }
                tokio::select! {
                    item = top.rx.recv() => {
                        top.take_page(item);
                        seen = u64::MAX;
                    }
                    _ = sh.notify.notified() => {}
                }
            }
        }
    }
}

/// Opens the levels the walk reaches next, in depth-first order as far as it is known
/// (the buffered entries of the levels on the walk's path, top first, and, under each
/// prefix listed ahead, its own buffered entries), until `window` levels are listed ahead.
fn prefetch(sh: &Arc<Shared>, stack: &[Node], ahead: &mut HashMap<String, Node>, window: usize) {
    for n in ahead.values_mut() {
        n.try_fill();
    }
    if ahead.len() >= window {
        return;
    }
    let mut want = Vec::new();
    for node in stack.iter().rev() {
        if !scan(node, ahead, window, &mut want) {
            break;
        }
    }
    for p in want {
        let n = sh.open(p.clone());
        ahead.insert(p, n);
    }
}

/// Collects into `want` the prefixes in `node`'s buffered entries, and under those listed
/// ahead theirs, depth-first, that are not listed yet, until the window is full; false
/// once it is. Pages of objects only are skipped by their prefix count.
fn scan(node: &Node, ahead: &HashMap<String, Node>, window: usize, want: &mut Vec<String>) -> bool {
    if node.prefixes == 0 {
        return true;
    }
    for e in node.buf.iter() {
        let LevelEntry::Prefix(p) = e else { continue };
        if is_reserved(p) {
            continue;
        }
        match ahead.get(p) {
            Some(child) => {
                if !scan(child, ahead, window, want) {
                    return false;
                }
            }
            None => {
                if ahead.len() + want.len() >= window {
                    return false;
                }
                want.push(p.clone());
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::ops::Range;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::error::ErrorKind;
    use crate::store::fs::FsStore;
    use crate::store::{
        CompletedPart, LevelStream, ListStream, PendingUpload, Presence, PutOptions,
    };

    /// Keys in memory, listed one level at a time in pages of `page` entries, each page
    /// taking a (virtual) while: keys a directory tree cannot hold (`a` and `a/b`) and
    /// levels that finish out of order.
    struct Levels {
        keys: BTreeSet<String>,
        page: usize,
        /// Level requests in flight now, and the most at once.
        now: AtomicUsize,
        most: AtomicUsize,
        requests: AtomicUsize,
        /// The (virtual) milliseconds all requests took together.
        busy_ms: AtomicU64,
        /// A level whose listing fails.
        fail: Option<String>,
    }

    impl Levels {
        fn new(keys: &[&str], page: usize) -> Self {
            Levels {
                keys: keys.iter().map(|k| k.to_string()).collect(),
                page,
                now: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                requests: AtomicUsize::new(0),
                busy_ms: AtomicU64::new(0),
                fail: None,
            }
        }

        fn level(&self, prefix: &str) -> Vec<LevelEntry> {
            let mut out: Vec<LevelEntry> = Vec::new();
            for k in self.keys.range(prefix.to_string()..) {
                let Some(rest) = k.strip_prefix(prefix) else {
                    break;
                };
                let e = match rest.find('/') {
                    Some(i) => LevelEntry::Prefix(format!("{prefix}{}", &rest[..=i])),
                    None => LevelEntry::Object(ObjectMeta {
                        key: k.clone(),
                        size: k.len() as u64,
                        ..Default::default()
                    }),
                };
                if out.last() != Some(&e) {
                    out.push(e);
                }
            }
            out
        }
    }

    fn unused<T>() -> Result<T> {
        Err(Error::other("not used by the listing tests"))
    }

    #[async_trait]
    impl Store for Levels {
        fn describe(&self) -> String {
            "levels".into()
        }
        fn list(&self, after: Option<String>) -> ListStream<'_> {
            let all: Vec<ObjectMeta> = self
                .keys
                .iter()
                .filter(|k| after.as_ref().is_none_or(|a| *k > a))
                .map(|k| ObjectMeta {
                    key: k.clone(),
                    size: k.len() as u64,
                    ..Default::default()
                })
                .collect();
            Box::pin(futures::stream::iter(vec![Ok(all)]))
        }
        fn lists_levels(&self) -> bool {
            true
        }
        fn list_level(&self, prefix: &str, after: Option<String>) -> LevelStream<'_> {
            let entries: Vec<LevelEntry> = self
                .level(prefix)
                .into_iter()
                .filter(|e| after.as_deref().is_none_or(|a| e.key() > a))
                .collect();
            let pages: Vec<Vec<LevelEntry>> = if entries.is_empty() {
                vec![Vec::new()]
            } else {
                entries.chunks(self.page).map(<[_]>::to_vec).collect()
            };
            let fails = self.fail.as_deref() == Some(prefix);
            // Deeper and later levels answer sooner: completion order is not key order.
            let ms = 50 - (prefix.len() as u64 % 40);
            let delay = Duration::from_millis(ms);
            Box::pin(
                futures::stream::iter(pages)
                    .then(move |p| async move {
                        self.requests.fetch_add(1, Ordering::SeqCst);
                        self.busy_ms.fetch_add(ms, Ordering::SeqCst);
                        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                        self.most.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        self.now.fetch_sub(1, Ordering::SeqCst);
                        if fails {
                            Err(Error::server("HTTP 500 (injected)"))
                        } else {
                            Ok(p)
                        }
                    })
                    .boxed(),
            )
        }
        async fn head(&self, _: &str) -> Result<Option<ObjectMeta>> {
            unused()
        }
        async fn get_range(&self, _: &str, _: Range<u64>, _: Option<&str>) -> Result<Bytes> {
            unused()
        }
        async fn put(&self, _: &str, _: Bytes, _: u32, _: &PutOptions) -> Result<()> {
            unused()
        }
        async fn create_multipart(&self, _: &str, _: &PutOptions) -> Result<String> {
            unused()
        }
        async fn upload_part(&self, _: &str, _: &str, _part: Part) -> Result<CompletedPart> {
            unused()
        }
        async fn complete_multipart(
            &self,
            _: &str,
            _: &str,
            _: &[CompletedPart],
            _: &PutOptions,
        ) -> Result<()> {
            unused()
        }
        async fn abort_multipart(&self, _: &str, _: &str) -> Result<()> {
            unused()
        }
        async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
            unused()
        }
        async fn delete(&self, _: &str) -> Result<()> {
            unused()
        }
        async fn preflight(&self) -> Result<Presence> {
            unused()
        }
    }

    /// The fanned-out listing of `store`, every item (errors too), as the differ sees it.
    async fn fanned(store: Arc<dyn Store>, concurrency: usize) -> Vec<Result<String>> {
        let (tx, mut rx) = mpsc::channel(LIST_CHANNEL);
        let lister = tokio::spawn(async move {
            fan_out(
                store,
                concurrency,
                |m: &ObjectMeta| !is_reserved(&m.key),
                &tx,
            )
            .await
        });
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r.map(|m| m.key));
        }
        lister.await.unwrap();
        out
    }

    fn keys(v: Vec<Result<String>>) -> Vec<String> {
        v.into_iter().map(|r| r.expect("no error")).collect()
    }

    const TRICKY: &[&str] = &[
        "a",
        "a/b",
        "a/b/c",
        "a/b0",
        "a/b/",
        "a-b",
        "a.b",
        "a0",
        "a/",
        "b//c",
        "b/-/x",
        "b/./y",
        "deep/1/2/3/4/5/6/7/8/leaf",
        "deep/1/2/3/4/5/6/7/8/leaf0",
        "deep/1/2/3/4/5/6/7/8/leaf/9",
        "sp ace/ünï+cødé%20.txt",
        "sp ace/z",
        "ü",
        "z",
        ".snapferry-lease",
        ".snapferry-uploads/x/1",
        ".snapferry-z",
    ];

    #[tokio::test(start_paused = true)]
    async fn fanned_out_keys_are_in_byte_order_with_tricky_names() {
        let want: Vec<String> = {
            let mut v: Vec<String> = TRICKY
                .iter()
                .filter(|k| !is_reserved(k))
                .map(|k| k.to_string())
                .collect();
            v.sort();
            v
        };
        for page in [1, 2, 1000] {
            for conc in [1, 2, 3, 16] {
                let store = Arc::new(Levels::new(TRICKY, page));
                let got = keys(fanned(store.clone(), conc).await);
                assert_eq!(got, want, "page {page}, concurrency {conc}");
                let most = store.most.load(Ordering::SeqCst);
                assert!(
                    most <= conc,
                    "{most} level requests at once, concurrency {conc}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fan_out_uses_the_concurrency_and_stays_in_order() {
        // 40 directories of 3 levels, 5 keys each, and objects beside the directories.
        let mut ks = Vec::new();
        for d in 0..40 {
            for s in 0..3 {
                for k in 0..5 {
                    ks.push(format!("indices/{d:03}/{s}/__{k}"));
                }
                ks.push(format!("indices/{d:03}/{s}.meta"));
            }
            ks.push(format!("indices/{d:03}-meta"));
        }
        ks.push("index-0".into());
        let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
        let mut want = ks.clone();
        want.sort();
        // Levels run side by side; pages of one level follow each other (a continuation
        // token each), at most one ahead of the walk, so with pages of 3 entries what
        // is known ahead is too little to fill the window: only the order is checked.
        for page in [1000, 3] {
            let store = Arc::new(Levels::new(&refs, page));
            let t = tokio::time::Instant::now();
            let got = keys(fanned(store.clone(), 8).await);
            assert_eq!(got, want);
            let most = store.most.load(Ordering::SeqCst);
            assert!((2..=8).contains(&most), "{most} requests at once");
            let serial = Duration::from_millis(store.busy_ms.load(Ordering::SeqCst));
            assert!(
                page < 1000 || t.elapsed() * 4 < serial,
                "page {page}: {} requests took {:?}, {serial:?} one at a time",
                store.requests.load(Ordering::SeqCst),
                t.elapsed()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_level_ends_the_listing_with_its_error_in_order() {
        let mut store = Levels::new(&["a/1", "b/1", "b/2", "c/1"], 1000);
        store.fail = Some("b/".into());
        let got = fanned(Arc::new(store), 4).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].as_deref().ok(), Some("a/1"));
        assert_eq!(
            got[1].as_ref().unwrap_err().kind(),
            ErrorKind::Server,
            "{got:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fs_fanned_out_equals_the_flat_listing_with_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for k in [
            "a-b", "a.b", "a/b", "a/b0", "a/c/d", "a0", "e/f/g", "x y/ü", "z",
        ] {
            let p = root.join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, k).unwrap();
        }
        for d in [
            "empty",
            "a/empty",
            "e/f/empty/deeper",
            ".snapferry-uploads/u1",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join(".snapferry-lease"), "l").unwrap();
        std::fs::write(root.join(".snapferry-uploads/u1/1"), "p").unwrap();
        let store: Arc<dyn Store> = Arc::new(FsStore::new(&root));
        let mut flat = Vec::new();
        let mut l = store.list(None);
        while let Some(p) = l.next().await {
            flat.extend(p.unwrap().into_iter().map(|m| m.key));
        }
        assert_eq!(flat.len(), 9, "{flat:?}");
        for conc in [1, 4] {
            assert_eq!(keys(fanned(store.clone(), conc).await), flat);
        }
        // A missing root is an error, not an empty listing.
        let gone: Arc<dyn Store> = Arc::new(FsStore::new(dir.path().join("gone")));
        let got = fanned(gone, 4).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].as_ref().unwrap_err().kind(),
            ErrorKind::LocationNotFound
        );
    }
}
