//! An in-memory [`Store`]: objects in a sorted map, uploads beside them.
//!
//! For fast tests of everything above the trait (the pipeline, the planner, the lease)
//! without a server or a directory: it keeps the trait's contracts as the real backends
//! do — listings in byte order and resumable, one level by delimiter, absent is not
//! empty ([`MemoryStore::missing`] answers `LocationNotFound`), checksums confirmed on
//! every write, conditional writes, multipart uploads that appear atomically, recorded
//! source versions carried in listings (as fs does). The store conformance suite
//! (`testkit::conformance`) runs against it like against every other backend.
//!
//! Written here rather than taken from a crate: object_store's `InMemory` has its own
//! types and no notion of our integrity contract (the caller's CRC32, the source record),
//! and an adapter would be longer than this.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};

use super::{
    CompletedPart, LevelEntry, LevelStream, ListStream, ObjectMeta, Part, PendingUpload, Presence,
    PutOptions, SourceRecord, Store, LIST_PAGE,
};
use crate::checksum::md5_hex;
use crate::error::{Error, Result};

/// One stored object.
#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    etag: String,
    mtime_ms: i64,
    record: Option<SourceRecord>,
}

/// One multipart upload in progress.
#[derive(Debug)]
struct Upload {
    key: String,
    opts: PutOptions,
    initiated_ms: i64,
    parts: BTreeMap<u32, (Bytes, CompletedPart)>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, Upload>,
}

/// A store held in memory. Cheap to create; shared by `Arc` like any other store.
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    exists: bool,
    state: Mutex<State>,
    next_upload: AtomicU64,
}

impl MemoryStore {
    /// An empty store that exists (a bucket with nothing in it).
    pub fn new(name: &str) -> MemoryStore {
        MemoryStore {
            name: name.to_string(),
            exists: true,
            state: Mutex::default(),
            next_upload: AtomicU64::new(1),
        }
    }

    /// A store whose location does not exist (a bucket never created): every listing and
    /// the preflight fail with `LocationNotFound`.
    pub fn missing(name: &str) -> MemoryStore {
        MemoryStore {
            exists: false,
            ..MemoryStore::new(name)
        }
    }

    /// The bytes held under `key`, straight from memory (not through the trait): what a
    /// test checks a run against.
    pub fn bytes(&self, key: &str) -> Option<Bytes> {
        self.lock().objects.get(key).map(|o| o.data.clone())
    }

    /// Every key held, in byte order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held (a failing test) leaves the maps consistent:
        // every change is one insert or remove.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_exists(&self) -> Result<()> {
        if self.exists {
            Ok(())
        } else {
            Err(Error::location_not_found(format!(
                "{}: the location does not exist",
                self.describe()
            )))
        }
    }

    fn meta(key: &str, o: &Object) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: o.data.len() as u64,
            mtime_ms: Some(o.mtime_ms),
            etag: Some(o.etag.clone()),
            record: o.record.clone(),
            crc64: None,
            crc32: None,
        }
    }

    /// Pages of up to [`LIST_PAGE`] objects whose keys start with `prefix` and are past
    /// `start_after`, taken from a snapshot of the map at the call (listings of real
    /// stores are not atomic either; a snapshot is the simplest honest answer).
    fn pages(&self, prefix: &str, start_after: Option<String>) -> Vec<Vec<ObjectMeta>> {
        let st = self.lock();
        let from = match start_after {
            Some(a) if a.as_str() >= prefix => std::ops::Bound::Excluded(a),
            _ => std::ops::Bound::Included(prefix.to_string()),
        };
        let all: Vec<ObjectMeta> = st
            .objects
            .range((from, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| Self::meta(k, o))
            .collect();
        all.chunks(LIST_PAGE).map(<[ObjectMeta]>::to_vec).collect()
    }

    fn page_stream<T: Send + 'static>(&self, pages: Result<Vec<Vec<T>>>) -> Pages<T> {
        match pages {
            Ok(p) => Box::pin(futures::stream::iter(p.into_iter().map(Ok))),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        }
    }
}

/// Listing pages held whole (they were cut from a snapshot).
type Pages<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Vec<T>>> + Send>>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn confirm(key: &str, data: &[u8], crc32: u32) -> Result<()> {
    let got = crc32fast::hash(data);
    if got == crc32 {
        Ok(())
    } else {
        Err(Error::checksum(format!(
            "{key}: the bytes' CRC32 {got:08x} is not the caller's {crc32:08x}"
        ))
        .at_key(key))
    }
}

/// The conditions of `opts` against what `key` holds now.
fn preconditions(key: &str, held: Option<&Object>, opts: &PutOptions) -> Result<()> {
    if opts.if_none_match && held.is_some() {
        return Err(Error::precondition(format!("{key} exists")).at_key(key));
    }
    if let Some(want) = &opts.if_match {
        if held.map(|o| &o.etag) != Some(want) {
            return Err(Error::precondition(format!("{key} is not at ETag {want}")).at_key(key));
        }
    }
    Ok(())
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        format!("memory://{}", self.name)
    }

    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        let pages = self.check_exists().map(|()| self.pages("", start_after));
        self.page_stream(pages)
    }

    fn list_prefix(&self, prefix: &str, start_after: Option<String>) -> ListStream<'_> {
        let pages = self
            .check_exists()
            .map(|()| self.pages(prefix, start_after));
        self.page_stream(pages)
    }

    fn lists_levels(&self) -> bool {
        true
    }

    fn list_level(&self, prefix: &str, start_after: Option<String>) -> LevelStream<'_> {
        let level = self.check_exists().map(|()| {
            let mut out: Vec<LevelEntry> = Vec::new();
            for m in self.pages(prefix, start_after).into_iter().flatten() {
                match m.key[prefix.len()..].find('/') {
                    None => out.push(LevelEntry::Object(m)),
                    Some(i) => {
                        let p = m.key[..prefix.len() + i + 1].to_string();
                        if out.last().map(LevelEntry::key) != Some(p.as_str()) {
                            out.push(LevelEntry::Prefix(p));
                        }
                    }
                }
            }
            out.chunks(LIST_PAGE).map(<[LevelEntry]>::to_vec).collect()
        });
        self.page_stream(level)
    }

    fn listing_has_records(&self) -> bool {
        true
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.lock().objects.get(key).map(|o| Self::meta(key, o)))
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let st = self.lock();
        let Some(o) = st.objects.get(key) else {
            return Err(Error::not_found(format!("{key}: no such object")).at_key(key));
        };
        if if_match.is_some_and(|want| want != o.etag) {
            return Err(Error::source_changed(format!("{key} changed")).at_key(key));
        }
        let len = o.data.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(Error::invalid_input(format!(
                "{key}: range {range:?} outside the object's {len} bytes"
            ))
            .at_key(key));
        }
        Ok(o.data.slice(range.start as usize..range.end as usize))
    }

    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        confirm(key, &data, crc32)?;
        let mut st = self.lock();
        preconditions(key, st.objects.get(key), opts)?;
        let obj = Object {
            etag: md5_hex(&data),
            data,
            mtime_ms: opts.mtime_ms.unwrap_or_else(now_ms),
            record: SourceRecord::from_metadata(
                opts.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        };
        st.objects.insert(key.to_string(), obj);
        Ok(())
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        let id = format!("mem-{}", self.next_upload.fetch_add(1, Ordering::Relaxed));
        let upload = Upload {
            key: key.to_string(),
            opts: opts.clone(),
            initiated_ms: now_ms(),
            parts: BTreeMap::new(),
        };
        self.lock().uploads.insert(id.clone(), upload);
        Ok(id)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, part: Part) -> Result<CompletedPart> {
        let (number, data, crc32) = (part.number, part.data, part.crc32);
        confirm(key, &data, crc32)?;
        let mut st = self.lock();
        let Some(u) = st.uploads.get_mut(upload_id).filter(|u| u.key == key) else {
            return Err(Error::not_found(format!("{key}: no upload {upload_id}")).at_key(key));
        };
        let part = CompletedPart {
            number,
            etag: md5_hex(&data),
            crc32,
            size: data.len() as u64,
            crc64: None,
        };
        u.parts.insert(number, (data, part.clone()));
        Ok(part)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        opts: &PutOptions,
    ) -> Result<()> {
        let mut st = self.lock();
        let Some(u) = st.uploads.get(upload_id).filter(|u| u.key == key) else {
            return Err(Error::not_found(format!("{key}: no upload {upload_id}")).at_key(key));
        };
        let mut data = BytesMut::new();
        let mut md5s = Md5::new();
        for (i, p) in parts.iter().enumerate() {
            let held = u.parts.get(&p.number).filter(|(_, h)| h.etag == p.etag);
            let Some((bytes, _)) = held.filter(|_| i == 0 || parts[i - 1].number < p.number) else {
                return Err(Error::invalid_input(format!(
                    "{key}: part {} is not held as given, or out of order",
                    p.number
                ))
                .at_key(key));
            };
            data.extend_from_slice(bytes);
            md5s.update(Md5::digest(bytes));
        }
        let mut merged = u.opts.clone();
        merged.metadata.extend(opts.metadata.iter().cloned());
        merged.mtime_ms = opts.mtime_ms.or(u.opts.mtime_ms);
        preconditions(key, st.objects.get(key), opts)?;
        let obj = Object {
            data: data.freeze(),
            etag: format!("{}-{}", hex::encode(md5s.finalize()), parts.len()),
            mtime_ms: merged.mtime_ms.unwrap_or_else(now_ms),
            record: SourceRecord::from_metadata(
                merged
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        };
        st.objects.insert(key.to_string(), obj);
        st.uploads.remove(upload_id);
        Ok(())
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<()> {
        self.lock().uploads.remove(upload_id);
        Ok(())
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        self.check_exists()?;
        let mut v: Vec<PendingUpload> = self
            .lock()
            .uploads
            .iter()
            .map(|(id, u)| PendingUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated_ms: Some(u.initiated_ms),
            })
            .collect();
        v.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(v)
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<CompletedPart>> {
        let st = self.lock();
        let Some(u) = st.uploads.get(upload_id).filter(|u| u.key == key) else {
            return Err(Error::not_found(format!("{key}: no upload {upload_id}")).at_key(key));
        };
        Ok(u.parts.values().map(|(_, p)| p.clone()).collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn preflight(&self) -> Result<Presence> {
        self.check_exists()?;
        let st = self.lock();
        Ok(if st.objects.keys().any(|k| !super::is_reserved(k)) {
            Presence::NotEmpty
        } else {
            Presence::Empty
        })
    }
}
