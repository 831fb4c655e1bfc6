//! Store views the probe runs the real sync pipeline through.
//!
//! - [`Prefixed`]: a store re-rooted at a scratch sub-prefix, optionally recording when
//!   each upload (single PUT or part) landed, so the probe can measure the copy's
//!   steady rate rather than its start-up and tail.
//! - [`Repeated`]: a read-only source that lists a few real scratch objects many times
//!   under virtual keys, so a copy of any volume needs only a bounded scratch source.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::store::{
    CompletedPart, ListStream, ObjectMeta, Part, PendingUpload, Presence, PutOptions, Store,
    LIST_PAGE,
};

/// When uploads landed: (instant, bytes), in completion order.
pub type Completions = Arc<Mutex<Vec<(Instant, u64)>>>;

/// `inner` seen from `prefix` (ends with `/`): keys are relative to the prefix, and the
/// listing holds only what lies under it.
pub struct Prefixed {
    inner: Arc<dyn Store>,
    prefix: String,
    completions: Option<Completions>,
}

impl Prefixed {
    /// A view of `inner` rooted at `prefix` (normalised to end with `/`).
    pub fn new(inner: Arc<dyn Store>, prefix: &str) -> Self {
        let mut prefix = prefix.trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Prefixed {
            inner,
            prefix,
            completions: None,
        }
    }

    /// Also records every successful PUT and part upload into `c`.
    pub fn recording(mut self, c: Completions) -> Self {
        self.completions = Some(c);
        self
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn landed(&self, bytes: u64) {
        if let Some(c) = &self.completions {
            if let Ok(mut v) = c.lock() {
                v.push((Instant::now(), bytes));
            }
        }
    }
}

#[async_trait]
impl Store for Prefixed {
    fn describe(&self) -> String {
        format!("{} (under {})", self.inner.describe(), self.prefix)
    }

    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        // Keys under the prefix are one contiguous run in byte order, right after the
        // prefix itself: start there and stop at the first key outside it.
        let after = match start_after {
            Some(a) => Some(self.full(&a)),
            None if self.prefix.is_empty() => None,
            None => Some(self.prefix.clone()),
        };
        let prefix = self.prefix.clone();
        let inner = self.inner.list(after);
        Box::pin(futures::stream::unfold(
            (inner, false),
            move |(mut s, done)| {
                let prefix = prefix.clone();
                async move {
                    if done {
                        return None;
                    }
                    match s.next().await? {
                        Err(e) => Some((Err(e), (s, true))),
                        Ok(page) => {
                            let mut out = Vec::with_capacity(page.len());
                            let mut end = false;
                            for m in page {
                                match m.key.strip_prefix(prefix.as_str()) {
                                    Some("") => {}
                                    Some(rel) => out.push(ObjectMeta {
                                        key: rel.to_string(),
                                        ..m
                                    }),
                                    None => {
                                        end = true;
                                        break;
                                    }
                                }
                            }
                            Some((Ok(out), (s, end)))
                        }
                    }
                }
            },
        ))
    }

    fn listing_has_records(&self) -> bool {
        self.inner.listing_has_records()
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.inner.head(&self.full(key)).await?.map(|m| ObjectMeta {
            key: key.to_string(),
            ..m
        }))
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        self.inner.get_range(&self.full(key), range, if_match).await
    }

    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        let n = data.len() as u64;
        self.inner.put(&self.full(key), data, crc32, opts).await?;
        self.landed(n);
        Ok(())
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        self.inner.create_multipart(&self.full(key), opts).await
    }

    async fn upload_part(&self, key: &str, upload_id: &str, part: Part) -> Result<CompletedPart> {
        let (number, data, crc32) = (part.number, part.data, part.crc32);
        let n = data.len() as u64;
        let p = self
            .inner
            .upload_part(
                &self.full(key),
                upload_id,
                Part {
                    number,
                    data,
                    crc32,
                },
            )
            .await?;
        self.landed(n);
        Ok(p)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        opts: &PutOptions,
    ) -> Result<()> {
        self.inner
            .complete_multipart(&self.full(key), upload_id, parts, opts)
            .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        self.inner.abort_multipart(&self.full(key), upload_id).await
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        Ok(self
            .inner
            .list_multipart_uploads()
            .await?
            .into_iter()
            .filter_map(|u| {
                let rel = u.key.strip_prefix(self.prefix.as_str())?.to_string();
                Some(PendingUpload {
                    key: rel,
                    upload_id: u.upload_id,
                    initiated_ms: u.initiated_ms,
                })
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(&self.full(key)).await
    }

    async fn preflight(&self) -> Result<Presence> {
        if self.inner.preflight().await? == Presence::Missing {
            return Ok(Presence::Missing);
        }
        let mut l = self.list(None);
        while let Some(page) = l.next().await {
            if !page?.is_empty() {
                return Ok(Presence::NotEmpty);
            }
        }
        Ok(Presence::Empty)
    }
}

/// A read-only source listing `count` virtual objects `v00000000`, `v00000001`, ...,
/// each the real object `objects[i % objects.len()]` of `inner`.
pub struct Repeated {
    inner: Arc<dyn Store>,
    objects: Vec<ObjectMeta>,
    count: usize,
}

impl Repeated {
    /// `count` virtual copies cycling through `objects` (which must not be empty).
    pub fn new(inner: Arc<dyn Store>, objects: Vec<ObjectMeta>, count: usize) -> Result<Self> {
        if objects.is_empty() {
            return Err(Error::other("the probe has no scratch objects to read"));
        }
        Ok(Repeated {
            inner,
            objects,
            count,
        })
    }

    fn virtual_key(i: usize) -> String {
        format!("v{i:08}")
    }

    fn real(&self, key: &str) -> Result<&ObjectMeta> {
        key.strip_prefix('v')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < self.count)
            .map(|i| &self.objects[i % self.objects.len()])
            .ok_or_else(|| Error::not_found(format!("probe source: no object {key:?}")))
    }

    fn read_only() -> Error {
        Error::other("the probe's scratch source is read-only")
    }
}

#[async_trait]
impl Store for Repeated {
    fn describe(&self) -> String {
        format!("{} (probe source)", self.inner.describe())
    }

    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        let first = match start_after {
            None => 0,
            Some(a) => (0..self.count)
                .find(|i| Self::virtual_key(*i) > a)
                .unwrap_or(self.count),
        };
        let pages: Vec<_> = (first..self.count)
            .collect::<Vec<_>>()
            .chunks(LIST_PAGE)
            .map(|c| {
                Ok(c.iter()
                    .map(|&i| ObjectMeta {
                        key: Self::virtual_key(i),
                        ..self.objects[i % self.objects.len()].clone()
                    })
                    .collect())
            })
            .collect();
        Box::pin(futures::stream::iter(pages))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.real(key).ok().map(|m| ObjectMeta {
            key: key.to_string(),
            ..m.clone()
        }))
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let real = self.real(key)?.key.clone();
        self.inner.get_range(&real, range, if_match).await
    }

    async fn put(&self, _: &str, _: Bytes, _: u32, _: &PutOptions) -> Result<()> {
        Err(Self::read_only())
    }

    async fn create_multipart(&self, _: &str, _: &PutOptions) -> Result<String> {
        Err(Self::read_only())
    }

    async fn upload_part(&self, _: &str, _: &str, _part: Part) -> Result<CompletedPart> {
        Err(Self::read_only())
    }

    async fn complete_multipart(
        &self,
        _: &str,
        _: &str,
        _: &[CompletedPart],
        _: &PutOptions,
    ) -> Result<()> {
        Err(Self::read_only())
    }

    async fn abort_multipart(&self, _: &str, _: &str) -> Result<()> {
        Err(Self::read_only())
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        Ok(Vec::new())
    }

    async fn delete(&self, _: &str) -> Result<()> {
        Err(Self::read_only())
    }

    async fn preflight(&self) -> Result<Presence> {
        Ok(if self.count > 0 {
            Presence::NotEmpty
        } else {
            Presence::Empty
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;

    async fn keys(s: &dyn Store, after: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        let mut st = s.list(after.map(str::to_string));
        while let Some(p) = st.next().await {
            out.extend(p.unwrap().into_iter().map(|m| m.key));
        }
        out
    }

    #[tokio::test]
    async fn prefixed_lists_only_its_prefix_and_maps_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<dyn Store> = Arc::new(FsStore::new(dir.path().to_path_buf()));
        for k in ["a", "p/x", "p/y/z", "p0", "q/p/x"] {
            let d = Bytes::from(k.as_bytes().to_vec());
            let c = crc32fast::hash(&d);
            root.put(k, d, c, &PutOptions::default()).await.unwrap();
        }
        let landed: Completions = Arc::default();
        let p = Prefixed::new(root.clone(), "p").recording(landed.clone());
        assert_eq!(keys(&p, None).await, ["x", "y/z"]);
        assert_eq!(keys(&p, Some("x")).await, ["y/z"]);
        let d = Bytes::from_static(b"new");
        p.put("n", d.clone(), crc32fast::hash(&d), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(landed.lock().unwrap().len(), 1);
        assert!(root.head("p/n").await.unwrap().is_some());
        assert_eq!(p.get_range("n", 0..3, None).await.unwrap(), d);
        let id = p
            .create_multipart("m", &PutOptions::default())
            .await
            .unwrap();
        let ups = p.list_multipart_uploads().await.unwrap();
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].key, "m");
        p.abort_multipart("m", &id).await.unwrap();
        p.delete("n").await.unwrap();
        assert!(root.head("p/n").await.unwrap().is_none());
        assert_eq!(
            keys(root.as_ref(), None).await,
            ["a", "p/x", "p/y/z", "p0", "q/p/x"]
        );
    }

    #[tokio::test]
    async fn repeated_lists_virtual_copies_in_order_and_reads_the_real_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<dyn Store> = Arc::new(FsStore::new(dir.path().to_path_buf()));
        for k in ["b0", "b1"] {
            let d = Bytes::from(k.as_bytes().to_vec());
            root.put(k, d.clone(), crc32fast::hash(&d), &PutOptions::default())
                .await
                .unwrap();
        }
        let objs = keys(root.as_ref(), None).await;
        let metas = vec![
            root.head(&objs[0]).await.unwrap().unwrap(),
            root.head(&objs[1]).await.unwrap().unwrap(),
        ];
        let r = Repeated::new(root, metas, 2500).unwrap();
        let all = keys(&r, None).await;
        assert_eq!(all.len(), 2500);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            keys(&r, Some("v00002497")).await,
            ["v00002498", "v00002499"]
        );
        assert_eq!(
            &r.get_range("v00000003", 0..2, None).await.unwrap()[..],
            b"b1"
        );
        assert!(r.get_range("v00002500", 0..2, None).await.is_err());
        assert!(r.delete("v00000000").await.is_err());
    }
}
