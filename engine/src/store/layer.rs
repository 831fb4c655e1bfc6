//! The request layer: a [`Store`] that wraps a backend and applies the run's rate limits,
//! retry policy and request accounting (counts and latency histograms) to every call —
//! data, listings and repository metadata alike — so that no caller can forget them.
//! It is the one place where [`RetryPolicy::run`] is called (object_store's `LimitStore`
//! / `ThrottledStore` pattern: a cross-cutting concern as a wrapper of the same trait).
//!
//! What it adds beyond retrying:
//! - Listings resume after the last key seen when a page fails, and every page is
//!   checked: keys strictly increasing and after the resume point, none empty. A listing
//!   that breaks this is a [`ErrorKind::Protocol`] error, never a shorter listing.
//! - Requests carry whether they are idempotent. CompleteMultipartUpload is not: when a
//!   retry of it answers "no such upload", an earlier attempt may have completed it
//!   (its response lost). The object is then confirmed with a HEAD — size, recorded
//!   source version and a checksum derived from the parts — before anything is called
//!   failed.
//! - Cleanup that must run after Ctrl-C (aborting uploads, releasing the lease) goes
//!   through [`Layered::uncancellable`]; everything else stops when the run is cancelled.
//! - Errors are tagged with the side (source, destination, ...), so every message names it.

use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    CompletedPart, LevelEntry, LevelStream, ListStream, ObjectMeta, Part, PendingUpload, Presence,
    PutOptions, Store, Stored,
};
use crate::error::{Error, ErrorKind, Result, Side};
use crate::limits::Limits;
use crate::retry::{Idempotency, RetryPolicy};
use crate::stats::{Kind, Latencies};

/// The request policy shared by the stores of one run.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Retries of every request.
    pub retry: RetryPolicy,
    /// Shared rate limits (bytes are metered on reads: every copied byte is read once).
    pub limits: Arc<Limits>,
    /// Request counts and latencies per kind.
    pub lat: Arc<Latencies>,
    /// Retries made, all kinds (for the report).
    pub retries: Arc<AtomicU64>,
    /// Faults by kind, and bytes sent again.
    pub faults: Arc<crate::stats::Faults>,
    /// Cancels waits and requests in flight; `None` for cleanup that must finish.
    pub cancel: Option<CancellationToken>,
}

impl Policy {
    /// A policy with no limits, its own counters and no cancellation.
    pub fn standalone(retry: RetryPolicy) -> Self {
        Policy {
            retry,
            limits: Arc::new(Limits::default()),
            lat: Arc::new(Latencies::default()),
            retries: Arc::new(AtomicU64::new(0)),
            faults: Arc::new(crate::stats::Faults::default()),
            cancel: None,
        }
    }
}

/// A store seen through the request layer.
#[derive(Clone)]
pub struct Layered {
    inner: Arc<dyn Store>,
    side: Side,
    policy: Arc<Policy>,
}

impl Layered {
    /// One listing (of everything, under a prefix, or one level) with the run's limits,
    /// retries (reopened by `open` after the last key seen) and accounting.
    fn paged<'a, T, F>(&'a self, open: F, start_after: Option<String>) -> Paged<'a, T>
    where
        T: Keyed + Send + 'a,
        F: Fn(Option<String>) -> Paged<'a, T> + Send + 'a,
    {
        let st = ListState {
            stream: None,
            open,
            last: start_after,
            attempt: 1,
            started: Instant::now(),
            done: false,
        };
        Box::pin(futures::stream::unfold(st, move |mut st| async move {
            let p = &self.policy;
            let never = CancellationToken::new();
            let cancel = p.cancel.as_ref().unwrap_or(&never);
            loop {
                if st.done {
                    return None;
                }
                if cancel.is_cancelled() {
                    st.done = true;
                    return Some((Err(Error::cancelled().on(self.side)), st));
                }
                let last = st.last.clone();
                let open = &st.open;
                let stream = st.stream.get_or_insert_with(|| open(last));
                p.limits.request().await;
                let t = Instant::now();
                let item = tokio::select! {
                    i = stream.next() => i,
                    _ = cancel.cancelled() => Some(Err(Error::cancelled())),
                };
                match item {
                    None => return None,
                    Some(Ok(mut page)) => {
                        p.lat.record(Kind::List, t.elapsed());
                        match check_page(
                            &mut page,
                            st.last.clone(),
                            &format!("list {}", self.inner.describe()),
                        ) {
                            Ok(last) => {
                                st.last = last;
                                // The retry budget is per page, not per listing: a
                                // listing of millions of keys takes longer than it.
                                st.attempt = 1;
                                st.started = Instant::now();
                                return Some((Ok(page), st));
                            }
                            Err(e) => {
                                st.done = true;
                                return Some((Err(e.on(self.side)), st));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        p.lat.record(Kind::List, t.elapsed());
                        let retry = &p.retry;
                        let wait = retry.backoff(st.attempt, e.retry_after());
                        if e.is_retryable()
                            && st.attempt < retry.max_attempts
                            && st.started.elapsed() + wait <= retry.max_elapsed
                        {
                            tracing::debug!(
                                "listing {} failed ({e}); resuming after {wait:?}",
                                self.inner.describe()
                            );
                            p.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            st.attempt += 1;
                            st.stream = None;
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = cancel.cancelled() => {}
                            }
                            continue;
                        }
                        st.done = true;
                        return Some((Err(e.on(self.side)), st));
                    }
                }
            }
        }))
    }

    /// Wraps `inner`; errors are tagged with `side`.
    pub fn new(inner: Arc<dyn Store>, side: Side, policy: Policy) -> Self {
        Layered {
            inner,
            side,
            policy: Arc::new(policy),
        }
    }

    /// The same store whose requests ignore cancellation: cleanup after Ctrl-C (aborting
    /// uploads, which use the short preflight policy; releasing the lease).
    pub fn uncancellable(&self) -> Layered {
        let mut p = (*self.policy).clone();
        p.cancel = None;
        Layered {
            inner: self.inner.clone(),
            side: self.side,
            policy: Arc::new(p),
        }
    }

    /// The side errors are tagged with.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    async fn call<T, F, Fut>(
        &self,
        kind: Kind,
        idem: Idempotency,
        retry: &RetryPolicy,
        mut f: F,
    ) -> crate::retry::Outcome<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let p = &self.policy;
        let mut out = retry
            .run(p.cancel.as_ref(), &p.retries, idem, |_| {
                let fut = f();
                async move {
                    p.limits.request().await;
                    let t = Instant::now();
                    let r = fut.await;
                    p.lat.record(kind, t.elapsed());
                    if matches!(&r, Err(e) if e.kind() == ErrorKind::CredentialsExpired) {
                        // The retry (one) is signed with fresh credentials.
                        self.inner.credentials_refused().await;
                    }
                    r
                }
            })
            .await;
        let ended = out.result.as_ref().err().map(Error::kind);
        p.faults
            .record(&out.retried, ended.filter(|k| *k != ErrorKind::NotFound));
        out.result = out.result.map_err(|e| e.on(self.side));
        out
    }

    /// Counts the bytes an upload sent again because earlier attempts failed.
    fn resent<T>(&self, out: &crate::retry::Outcome<T>, len: usize) {
        let again = out.attempts.saturating_sub(1) as u64 * len as u64;
        if again > 0 {
            self.policy
                .faults
                .resent_bytes
                .fetch_add(again, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn simple<T, F, Fut>(&self, kind: Kind, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.call(kind, Idempotency::Idempotent, &self.policy.retry, f)
            .await
            .result
    }

    /// After a retried CompleteMultipartUpload answered "no such upload": whether the
    /// object the upload would have produced is there.
    async fn confirm_completed(
        &self,
        key: &str,
        parts: &[CompletedPart],
        opts: &PutOptions,
    ) -> Result<()> {
        let head = self.simple(Kind::Head, || self.inner.head(key)).await?;
        let what = format!("complete-multipart {key}: a retry found the upload gone");
        let Some(m) = head else {
            return Err(
                Error::not_found(format!("{what} and no object under its key")).on(self.side),
            );
        };
        match confirms(&m, parts, opts) {
            Ok(how) => {
                tracing::info!(
                    "{what}; the object is there ({how}): an earlier attempt completed it"
                );
                Ok(())
            }
            Err(why) => Err(
                Error::checksum(format!("{what}, and the object under its key {why}"))
                    .on(self.side),
            ),
        }
    }
}

/// Whether `m` (a HEAD) is the object completed from `parts` with `opts`: the size, the
/// recorded source version, and at least one checksum derived from the parts must agree.
/// Returns how it was confirmed, or why not.
pub fn confirms(
    m: &ObjectMeta,
    parts: &[CompletedPart],
    opts: &PutOptions,
) -> std::result::Result<&'static str, String> {
    let size: u64 = parts.iter().map(|p| p.size).sum();
    if m.size != size {
        return Err(format!("has {} bytes, not {size}", m.size));
    }
    let want = super::SourceRecord::from_metadata(
        opts.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if want.is_some() && m.record != want {
        return Err("carries another source version".into());
    }
    if let Some(got) = m.crc64 {
        return match crate::checksum::crc64_of_parts(parts) {
            Some(w) if w == got => Ok("CRC-64 of the parts"),
            Some(w) => Err(format!("has CRC-64 {got}, not {w}")),
            None => Err("has a CRC-64 the parts cannot be checked against".into()),
        };
    }
    if let Some(got) = &m.crc32 {
        let (composite, full) = crate::checksum::crc32_of_parts(parts);
        return if got == &composite || got == &full {
            Ok("CRC32 of the parts")
        } else {
            Err(format!("has CRC32 {got}, not {composite}"))
        };
    }
    if let (Some(got), Some(w)) = (&m.etag, crate::checksum::multipart_etag(parts)) {
        return if got == &w {
            Ok("ETag of the parts")
        } else {
            Err(format!("has ETag {got}, not {w}"))
        };
    }
    Err("offers no checksum to confirm it by".into())
}

/// A listing entry as far as the order check is concerned.
trait Keyed {
    fn key(&self) -> &str;
    /// A common prefix of a one-level listing: a resumed listing may list it again.
    fn is_prefix(&self) -> bool;
}

impl Keyed for ObjectMeta {
    fn key(&self) -> &str {
        &self.key
    }
    fn is_prefix(&self) -> bool {
        false
    }
}

impl Keyed for LevelEntry {
    fn key(&self) -> &str {
        LevelEntry::key(self)
    }
    fn is_prefix(&self) -> bool {
        matches!(self, LevelEntry::Prefix(_))
    }
}

/// A page stream of some entry type.
type Paged<'a, T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Vec<T>>> + Send + 'a>>;

/// Checks one listing page against the order invariant; returns the new last key. A
/// common prefix equal to the resume point (a one-level listing resumed after it: the
/// servers roll the keys under it up again) is dropped, not an error.
fn check_page<T: Keyed>(
    page: &mut Vec<T>,
    mut last: Option<String>,
    what: &str,
) -> Result<Option<String>> {
    if let (Some(first), Some(l)) = (page.first(), &last) {
        if first.is_prefix() && first.key() == l.as_str() {
            page.remove(0);
        }
    }
    for m in page.iter() {
        if m.key().is_empty() {
            return Err(Error::protocol(format!(
                "{what}: the listing holds an empty key"
            )));
        }
        if let Some(l) = &last {
            if m.key() <= l.as_str() {
                return Err(Error::protocol(format!(
                    "{what}: the listing is not in key order ({:?} after {l:?})",
                    m.key()
                )));
            }
        }
        last = Some(m.key().to_string());
    }
    Ok(last)
}

/// Listing state of [`Layered::paged`].
struct ListState<'a, T, F> {
    stream: Option<Paged<'a, T>>,
    /// Opens the listing after a key (the start, or the last key seen).
    open: F,
    last: Option<String>,
    attempt: u32,
    started: Instant,
    done: bool,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Store for Layered {
    async fn credentials_refused(&self) {
        self.inner.credentials_refused().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        self.paged(move |after| self.inner.list(after), start_after)
    }

    fn list_prefix(&self, prefix: &str, start_after: Option<String>) -> ListStream<'_> {
        let prefix = prefix.to_string();
        self.paged(
            move |after| self.inner.list_prefix(&prefix, after),
            start_after,
        )
    }

    fn lists_levels(&self) -> bool {
        self.inner.lists_levels()
    }

    fn list_level(&self, prefix: &str, start_after: Option<String>) -> LevelStream<'_> {
        let prefix = prefix.to_string();
        self.paged(
            move |after| self.inner.list_level(&prefix, after),
            start_after,
        )
    }

    fn listing_has_records(&self) -> bool {
        self.inner.listing_has_records()
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.simple(Kind::Head, || self.inner.head(key)).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let len = range.end.saturating_sub(range.start);
        self.simple(Kind::Get, || async {
            self.policy.limits.bytes(len).await;
            self.inner.get_range(key, range.clone(), if_match).await
        })
        .await
    }

    async fn get_range_stored(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<(Bytes, super::Stored)> {
        let len = range.end.saturating_sub(range.start);
        self.simple(Kind::Get, || async {
            self.policy.limits.bytes(len).await;
            self.inner
                .get_range_stored(key, range.clone(), if_match)
                .await
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        let conditional = opts.if_none_match || opts.if_match.is_some();
        if !conditional {
            let out = self
                .call(
                    Kind::Put,
                    Idempotency::Idempotent,
                    &self.policy.retry,
                    || self.inner.put(key, data.clone(), crc32, opts),
                )
                .await;
            self.resent(&out, data.len());
            return out.result;
        }
        // A conditional PUT is not idempotent in its answer: when the first attempt
        // wrote and its response was lost, the retry fails its own condition. Confirmed
        // like a lost CompleteMultipartUpload: the object there holds our bytes (its ETag
        // is their MD5 on S3 and OSS).
        let out = self
            .call(
                Kind::Put,
                Idempotency::NotIdempotent,
                &self.policy.retry,
                || self.inner.put(key, data.clone(), crc32, opts),
            )
            .await;
        match out.result {
            Err(e) if e.kind() == ErrorKind::PreconditionFailed && out.maybe_applied => {
                let head = self.simple(Kind::Head, || self.inner.head(key)).await?;
                let md5 = {
                    use md5::{Digest, Md5};
                    hex::encode(Md5::digest(&data))
                };
                match head {
                    Some(m) if m.size == data.len() as u64 && m.etag.as_deref() == Some(&md5) => {
                        tracing::info!("put {key}: a retry's condition failed on our own earlier write; confirmed by its ETag");
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        // A repeat after a lost response leaves an orphaned (empty) upload, which the
        // stale-upload cleanup of a later run aborts: safe to retry. Not cancelled half
        // way: a create that reaches the server would leave an upload nobody knows of;
        // finished, its id is tracked and the cancelled run aborts it.
        let mut p = (*self.policy).clone();
        let cancel = p.cancel.take();
        if cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(Error::cancelled().on(self.side));
        }
        let uncancelled = Layered {
            inner: self.inner.clone(),
            side: self.side,
            policy: Arc::new(p),
        };
        uncancelled
            .simple(Kind::CreateMultipart, || {
                self.inner.create_multipart(key, opts)
            })
            .await
    }

    async fn upload_part(&self, key: &str, upload_id: &str, part: Part) -> Result<CompletedPart> {
        let (number, data, crc32) = (part.number, part.data, part.crc32);
        let out = self
            .call(
                Kind::UploadPart,
                Idempotency::Idempotent,
                &self.policy.retry,
                || {
                    self.inner.upload_part(
                        key,
                        upload_id,
                        Part {
                            number,
                            data: data.clone(),
                            crc32,
                        },
                    )
                },
            )
            .await;
        self.resent(&out, data.len());
        out.result
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        opts: &PutOptions,
    ) -> Result<()> {
        let out = self
            .call(
                Kind::CompleteMultipart,
                Idempotency::NotIdempotent,
                &self.policy.retry,
                || self.inner.complete_multipart(key, upload_id, parts, opts),
            )
            .await;
        match out.result {
            Err(e) if e.kind() == ErrorKind::NotFound && out.maybe_applied => {
                self.confirm_completed(key, parts, opts).await
            }
            r => r,
        }
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let quick = RetryPolicy::preflight();
        self.call(
            Kind::AbortMultipart,
            Idempotency::Idempotent,
            &quick,
            || self.inner.abort_multipart(key, upload_id),
        )
        .await
        .result
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        self.simple(Kind::ListUploads, || self.inner.list_multipart_uploads())
            .await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<CompletedPart>> {
        self.simple(Kind::ListParts, || self.inner.list_parts(key, upload_id))
            .await
    }

    async fn whole_checksums(&self, key: &str, if_match: Option<&str>) -> Result<Stored> {
        self.simple(Kind::Head, || self.inner.whole_checksums(key, if_match))
            .await
    }

    async fn list_reserved(&self, dir: &str) -> Result<Vec<String>> {
        self.simple(Kind::List, || self.inner.list_reserved(dir))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.simple(Kind::Delete, || self.inner.delete(key)).await
    }

    async fn preflight(&self) -> Result<Presence> {
        // Fail fast: an unreachable endpoint at the start is a typo far more often than
        // an outage.
        let quick = RetryPolicy::preflight();
        self.call(Kind::List, Idempotency::Idempotent, &quick, || {
            self.inner.preflight()
        })
        .await
        .result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A store whose first CompleteMultipartUpload completes the upload and then loses
    /// the response (a reset), so the retry finds no such upload: what a real network
    /// does when a connection drops after the server acted.
    struct LostResponse {
        inner: FsStore,
        completes: AtomicU32,
    }

    #[async_trait]
    impl Store for LostResponse {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn list(&self, s: Option<String>) -> ListStream<'_> {
            self.inner.list(s)
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
            // fs reports no checksum; give the CRC-64 a real store (OSS) would.
            let mut m = self.inner.head(key).await?;
            if let Some(m) = &mut m {
                let b = self.inner.get_range(key, 0..m.size, None).await?;
                m.crc64 = Some(crate::store::oss::crc64(&b));
            }
            Ok(m)
        }
        async fn get_range(&self, k: &str, r: Range<u64>, m: Option<&str>) -> Result<Bytes> {
            self.inner.get_range(k, r, m).await
        }
        async fn put(&self, k: &str, d: Bytes, c: u32, o: &PutOptions) -> Result<()> {
            self.inner.put(k, d, c, o).await
        }
        async fn create_multipart(&self, k: &str, o: &PutOptions) -> Result<String> {
            self.inner.create_multipart(k, o).await
        }
        async fn upload_part(&self, k: &str, id: &str, part: Part) -> Result<CompletedPart> {
            let (n, d, c) = (part.number, part.data, part.crc32);
            let mut p = self
                .inner
                .upload_part(
                    k,
                    id,
                    Part {
                        number: n,
                        data: d.clone(),
                        crc32: c,
                    },
                )
                .await?;
            p.crc64 = Some(crate::store::oss::crc64(&d));
            Ok(p)
        }
        async fn complete_multipart(
            &self,
            k: &str,
            id: &str,
            parts: &[CompletedPart],
            o: &PutOptions,
        ) -> Result<()> {
            match self.completes.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    self.inner.complete_multipart(k, id, parts, o).await?;
                    Err(Error::timeout(
                        "connection reset after the request was sent",
                    ))
                }
                _ => Err(Error::not_found("HTTP 404 NoSuchUpload")),
            }
        }
        async fn abort_multipart(&self, k: &str, id: &str) -> Result<()> {
            self.inner.abort_multipart(k, id).await
        }
        async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
            self.inner.list_multipart_uploads().await
        }
        async fn delete(&self, k: &str) -> Result<()> {
            self.inner.delete(k).await
        }
        async fn preflight(&self) -> Result<Presence> {
            self.inner.preflight().await
        }
    }

    async fn upload(store: &Layered, key: &str, opts: &PutOptions) -> Result<()> {
        let id = store.create_multipart(key, opts).await?;
        let mut parts = Vec::new();
        for (i, chunk) in [vec![1u8; 200_000], vec![2u8; 1000]]
            .into_iter()
            .enumerate()
        {
            let crc = crc32fast::hash(&chunk);
            parts.push(
                store
                    .upload_part(
                        key,
                        &id,
                        Part {
                            number: i as u32 + 1,
                            data: Bytes::from(chunk),
                            crc32: crc,
                        },
                    )
                    .await?,
            );
        }
        store.complete_multipart(key, &id, &parts, opts).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_complete_response_is_confirmed_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(LostResponse {
            inner: FsStore::new(dir.path()),
            completes: AtomicU32::new(0),
        });
        let policy = Policy::standalone(RetryPolicy::default());
        let retries = policy.retries.clone();
        let store = Layered::new(inner.clone(), Side::Destination, policy);
        let opts = PutOptions {
            metadata: vec![(crate::store::META_SRC_ETAG.into(), "abc".into())],
            ..Default::default()
        };
        upload(&store, "big", &opts)
            .await
            .expect("confirmed by HEAD");
        assert_eq!(inner.completes.load(Ordering::SeqCst), 2);
        assert_eq!(retries.load(Ordering::SeqCst), 1);
        let m = store.head("big").await.unwrap().unwrap();
        assert_eq!(m.size, 201_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_upload_without_the_object_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(LostResponse {
            inner: FsStore::new(dir.path()),
            // Skip the "completes then loses the answer" step: every attempt says gone.
            completes: AtomicU32::new(1),
        });
        let store = Layered::new(
            inner,
            Side::Destination,
            Policy::standalone(RetryPolicy::default()),
        );
        let e = upload(&store, "big", &PutOptions::default())
            .await
            .unwrap_err();
        // First attempt: NotFound without an earlier attempt: plain not found.
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.side(), Some(Side::Destination));
    }

    #[test]
    fn confirmation_needs_size_record_and_a_checksum() {
        let parts = vec![
            CompletedPart {
                number: 1,
                etag: "\"9e107d9d372bb6826bd81d3542a419d6\"".into(),
                crc32: crc32fast::hash(b"ab"),
                size: 2,
                crc64: Some(crate::store::oss::crc64(b"ab")),
            },
            CompletedPart {
                number: 2,
                etag: "\"e4d909c290d0fb1ca068ffaddf22cbd0\"".into(),
                crc32: crc32fast::hash(b"c"),
                size: 1,
                crc64: Some(crate::store::oss::crc64(b"c")),
            },
        ];
        let opts = PutOptions::default();
        let good = ObjectMeta {
            key: "k".into(),
            size: 3,
            crc64: Some(crate::store::oss::crc64(b"abc")),
            ..Default::default()
        };
        assert!(confirms(&good, &parts, &opts).is_ok());
        let short = ObjectMeta {
            size: 2,
            ..good.clone()
        };
        assert!(confirms(&short, &parts, &opts).is_err());
        let wrong = ObjectMeta {
            crc64: Some(1),
            ..good.clone()
        };
        assert!(confirms(&wrong, &parts, &opts).is_err());
        let bare = ObjectMeta {
            crc64: None,
            ..good.clone()
        };
        assert!(confirms(&bare, &parts, &opts).is_err());
        let composite = ObjectMeta {
            crc64: None,
            crc32: Some(crate::checksum::crc32_of_parts(&parts).0),
            ..good.clone()
        };
        assert!(confirms(&composite, &parts, &opts).is_ok());
        let etag = ObjectMeta {
            crc64: None,
            etag: crate::checksum::multipart_etag(&parts),
            ..good
        };
        assert!(confirms(&etag, &parts, &opts).is_ok());
    }

    #[tokio::test]
    async fn listings_out_of_order_are_protocol_errors() {
        let page = vec![
            ObjectMeta {
                key: "b".into(),
                ..Default::default()
            },
            ObjectMeta {
                key: "a".into(),
                ..Default::default()
            },
        ];
        let e = check_page(&mut page.clone(), None, "list x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        let e = check_page(&mut page[..1].to_vec(), Some("c".into()), "list x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert_eq!(
            check_page(&mut page[..1].to_vec(), Some("a".into()), "list x").unwrap(),
            Some("b".into())
        );
        // An object equal to the resume point is out of order; a common prefix equal to
        // it (a one-level listing resumed after it) is dropped.
        let e = check_page(&mut page[..1].to_vec(), Some("b".into()), "list x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        let mut level = vec![
            LevelEntry::Prefix("a/".into()),
            LevelEntry::Prefix("a0/".into()),
        ];
        assert_eq!(
            check_page(&mut level, Some("a/".into()), "list x").unwrap(),
            Some("a0/".into())
        );
        assert_eq!(level, vec![LevelEntry::Prefix("a0/".into())]);
    }
}
