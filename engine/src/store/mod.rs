//! The storage abstraction: one small trait, one module per backend.
//!
//! Signatures use only our own types ([`ObjectMeta`], [`PutOptions`], ...), never SDK
//! output types, so the pipeline is the same for every backend and a backend plugs in
//! by implementing [`Store`].
//!
//! Keys passed to and returned by a store are *relative* to the store's root (the
//! prefix of the URL the user gave). Listings are streams in byte order of those
//! relative keys; nothing here ever materialises a whole listing.
//!
//! Absent is not empty: a location that does not exist (a missing directory or bucket)
//! is [`crate::error::ErrorKind::LocationNotFound`] from `preflight` and `list`, never an
//! empty listing; the caller decides whether that is acceptable (a destination that
//! will be created) or an error (a source).
//!
//! Backends are built in one place, [`open()`], from a location and its resolved
//! [`StoreOptions`], and wrapped by [`layer::Layered`], which applies the run's rate
//! limits, retry policy and request accounting to every call.

pub mod env;
pub mod fs;
pub mod layer;
mod listing;
pub mod memory;
pub mod open;
pub mod oss;
pub mod s3;
pub mod watch;

pub use open::{open, open_existing, StoreOptions};

use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::Result;

/// The user-metadata names under which the source version is recorded on the
/// destination. Hyphenated, lower-case, no `_`: valid for S3, OSS (`x-oss-meta-*`) and
/// as xattr suffixes.
pub const META_SRC_ETAG: &str = "snapferry-src-etag";
/// See [`META_SRC_ETAG`]: the source LastModified, Unix milliseconds.
pub const META_SRC_MTIME: &str = "snapferry-src-mtime";
/// See [`META_SRC_ETAG`]: the CRC32 of the bytes written (8 hex digits; single PUTs,
/// whose content is known before the metadata is sent).
pub const META_CRC32: &str = "snapferry-crc32";
/// See [`META_SRC_ETAG`]: the CRC-64/XZ of the bytes written (16 hex digits).
pub const META_CRC64: &str = "snapferry-crc64";

/// The version of a source object that a destination object was copied from, as
/// recorded in the destination's user metadata at copy time, and (for single PUTs) the
/// checksums of the bytes written — a later run compares them with the checksum the
/// destination reports for what it holds, where it reports one at no extra cost.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SourceRecord {
    /// The source ETag (normalised: no quotes, lower-case), if the source had one.
    pub etag: Option<String>,
    /// The source LastModified in Unix milliseconds, if known.
    pub mtime_ms: Option<i64>,
    /// CRC32 of the content written.
    pub crc32: Option<u32>,
    /// CRC-64/XZ of the content written.
    pub crc64: Option<u64>,
}

impl SourceRecord {
    /// Parses the record from user metadata pairs; `None` when nothing was recorded.
    pub fn from_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut rec = SourceRecord::default();
        let mut any = false;
        for (k, v) in pairs {
            if k.eq_ignore_ascii_case(META_SRC_ETAG) {
                rec.etag = Some(v.to_string());
                any = true;
            } else if k.eq_ignore_ascii_case(META_SRC_MTIME) {
                rec.mtime_ms = v.parse().ok();
                any = true;
            } else if k.eq_ignore_ascii_case(META_CRC32) {
                rec.crc32 = u32::from_str_radix(v, 16).ok();
            } else if k.eq_ignore_ascii_case(META_CRC64) {
                rec.crc64 = u64::from_str_radix(v, 16).ok();
            }
        }
        any.then_some(rec)
    }

    /// The user metadata pairs that record this source version.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut v = Vec::with_capacity(2);
        if let Some(e) = &self.etag {
            v.push((META_SRC_ETAG.to_string(), e.clone()));
        }
        if let Some(m) = self.mtime_ms {
            v.push((META_SRC_MTIME.to_string(), m.to_string()));
        }
        if let Some(c) = self.crc32 {
            v.push((META_CRC32.to_string(), format!("{c:08x}")));
        }
        if let Some(c) = self.crc64 {
            v.push((META_CRC64.to_string(), format!("{c:016x}")));
        }
        v
    }

    /// Whether both record the same source version (the content checksums aside).
    pub fn same_version(&self, other: &SourceRecord) -> bool {
        self.etag == other.etag && self.mtime_ms == other.mtime_ms
    }

    /// Why the object `held` (as a HEAD or listing reports it) is not the content this
    /// record says was written: its stored CRC32 (S3's full-object one) or CRC-64 (OSS)
    /// differs from the recorded one. `None` when they agree or cannot be compared.
    pub fn content_mismatch(&self, held: &ObjectMeta) -> Option<String> {
        if let (Some(want), Some(got)) = (self.crc32, held.crc32.as_deref()) {
            // A composite checksum (`...-N`, multipart) is not the content's CRC32.
            if !got.contains('-') && crate::checksum::crc32_b64(want) != got {
                return Some(format!(
                    "the destination's stored CRC32 {got} differs from the one recorded when it was copied ({})",
                    crate::checksum::crc32_b64(want)
                ));
            }
        }
        if let (Some(want), Some(got)) = (self.crc64, held.crc64) {
            if want != got {
                return Some(format!(
                    "the destination's stored CRC-64 {got} differs from the one recorded when it was copied ({want})"
                ));
            }
        }
        None
    }
}

/// What a listing or HEAD says about one object.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// Key relative to the store root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// LastModified in Unix milliseconds (S3/OSS have second granularity, fs has more).
    pub mtime_ms: Option<i64>,
    /// ETag, normalised (no quotes, lower-case). Multipart ETags keep their `-N` suffix.
    pub etag: Option<String>,
    /// The source version recorded in this object's user metadata, when the listing
    /// carries it (fs does; S3 listings do not, so the differ HEADs when it must).
    pub record: Option<SourceRecord>,
    /// The whole object's CRC-64/XZ as the store holds it (OSS `x-oss-hash-crc64ecma`).
    pub crc64: Option<u64>,
    /// The object's CRC32 as the store reports it (S3 `x-amz-checksum-crc32`, base64;
    /// composite `...-N` for multipart objects), when asked for on HEAD.
    pub crc32: Option<String>,
}

impl ObjectMeta {
    /// The record a destination copy of this (source) object should carry.
    pub fn as_record(&self) -> SourceRecord {
        SourceRecord {
            etag: self.etag.clone(),
            mtime_ms: self.mtime_ms,
            ..Default::default()
        }
    }
}

/// Normalises an ETag for comparison: strips quotes and weak markers, lower-cases.
pub fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase()
}

/// Options for writing an object or starting a multipart upload.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// User metadata to store with the object (names without prefix).
    pub metadata: Vec<(String, String)>,
    /// The source LastModified, for backends that can set it (fs sets the file mtime).
    pub mtime_ms: Option<i64>,
    /// Write only if no object exists under the key (S3 `If-None-Match: *`, OSS
    /// `x-oss-forbid-overwrite`, fs hard link); else `PreconditionFailed`. Used by the
    /// destination lease, whose atomic creation is what makes one writer possible.
    pub if_none_match: bool,
    /// Write only if the current object has this ETag (S3 `If-Match`; emulated with a
    /// HEAD where the store has no conditional overwrite); else `PreconditionFailed`.
    pub if_match: Option<String>,
}

/// One part of a multipart upload as the caller hands it to [`Store::upload_part`]: its
/// number, its bytes, and the CRC32 the caller computed over them, which the store must
/// confirm it holds (the integrity contract of [`Store`]).
#[derive(Debug, Clone)]
pub struct Part {
    /// 1-based part number.
    pub number: u32,
    /// The part's bytes.
    pub data: Bytes,
    /// CRC32 of `data`, as the caller computed it.
    pub crc32: u32,
}

/// One uploaded part, as needed to complete the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based part number.
    pub number: u32,
    /// The ETag the store returned for the part.
    pub etag: String,
    /// CRC32 of the part's bytes, as we computed it and the store confirmed it.
    pub crc32: u32,
    /// Part length in bytes.
    pub size: u64,
    /// CRC-64/XZ of the part as the store reported it (OSS), for the whole-object check.
    pub crc64: Option<u64>,
}

/// A multipart upload that was started and not completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// Key relative to the store root.
    pub key: String,
    /// The store's upload id.
    pub upload_id: String,
    /// When the upload was started (Unix ms), as the store reports it: uploads younger
    /// than a safety age may belong to a live run and are left alone.
    pub initiated_ms: Option<i64>,
}

/// A stream of listing pages (one per request for remote stores); entries across pages
/// are in byte order of their relative keys.
pub type ListStream<'a> = Pin<Box<dyn Stream<Item = Result<Vec<ObjectMeta>>> + Send + 'a>>;

/// One entry of a one-level listing ([`Store::list_level`]): an object directly under the
/// listed prefix, or a common prefix (a "directory", ending in `/`) standing for every
/// key under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelEntry {
    /// An object whose relative key has no `/` after the listed prefix.
    Object(ObjectMeta),
    /// A relative key prefix ending in `/` under which at least one key is (on fs, a
    /// directory, possibly empty).
    Prefix(String),
}

impl LevelEntry {
    /// The relative key (object) or prefix (common prefix) this entry sorts by.
    pub fn key(&self) -> &str {
        match self {
            LevelEntry::Object(m) => &m.key,
            LevelEntry::Prefix(p) => p,
        }
    }
}

/// A stream of one-level listing pages; entries across pages are in byte order of their
/// keys (a common prefix sorts where its keys do: `a.b` < `a/` < `a0`).
pub type LevelStream<'a> = Pin<Box<dyn Stream<Item = Result<Vec<LevelEntry>>> + Send + 'a>>;

/// Listing pages as a server answers them: objects and common prefixes (relative keys),
/// each in byte order; what S3 and OSS build [`ListStream`] and [`LevelStream`] from.
pub(crate) type RawPages<'a> =
    Pin<Box<dyn Stream<Item = Result<(Vec<ObjectMeta>, Vec<String>)>> + Send + 'a>>;

/// Entries per page for stores that choose their own page size (fs).
pub const LIST_PAGE: usize = 1000;

/// The storage trait. Small on purpose; every method is one request (or one local
/// operation) so that retries, rate limits and latency histograms wrap it uniformly.
///
/// Integrity contract: `put` and `upload_part` receive the CRC32 the caller computed over
/// `data`, and must fail with [`crate::Error::ChecksumMismatch`] unless the store
/// confirms that it holds exactly those bytes (the server validating a checksum header
/// and echoing it, or a read-back for local files).
#[async_trait]
pub trait Store: Send + Sync {
    /// A human-readable description (`s3://bucket/prefix @ endpoint`), with no secrets.
    fn describe(&self) -> String;

    /// The server refused this store's credentials as expired
    /// ([`crate::Error::CredentialsExpired`]): the next request must be signed with fresh
    /// ones from their provider. Stores with fixed credentials do nothing.
    async fn credentials_refused(&self) {}

    /// Lists every object under the root whose relative key is greater than
    /// `start_after` (all when `None`), in byte order of relative keys. Resuming with the
    /// last key seen is how a listing continues after a failed page.
    fn list(&self, start_after: Option<String>) -> ListStream<'_>;

    /// Lists the objects whose relative key starts with `prefix` (a shard directory such
    /// as `indices/<id>/0/`) and is greater than `start_after`, in byte order: what a
    /// planner that knows which directories changed reads instead of everything. Costs
    /// about one request per 1,000 keys under the prefix, not per key of the store.
    ///
    /// The default resumes a whole listing just before the prefix and stops at the first
    /// key past it; backends whose listing takes a prefix override it.
    fn list_prefix(&self, prefix: &str, start_after: Option<String>) -> ListStream<'_> {
        use futures::StreamExt;
        let prefix = prefix.to_string();
        // The greatest key before every key that starts with `prefix`... is not
        // expressible in general, so start after `prefix` itself and handle the one key
        // equal to it (a directory marker, never a blob) by not needing it.
        let from = match start_after {
            Some(a) if a >= prefix => a,
            _ => prefix.clone(),
        };
        let stream = self.list(Some(from));
        Box::pin(futures::stream::unfold(
            (stream, prefix, false),
            |(mut stream, prefix, done)| async move {
                if done {
                    return None;
                }
                match stream.next().await {
                    None => None,
                    Some(Err(e)) => Some((Err(e), (stream, prefix, true))),
                    Some(Ok(page)) => {
                        let before = page.len();
                        let kept: Vec<ObjectMeta> = page
                            .into_iter()
                            .take_while(|m| m.key.starts_with(&prefix))
                            .collect();
                        let past = kept.len() < before;
                        Some((Ok(kept), (stream, prefix, past)))
                    }
                }
            },
        ))
    }

    /// Whether [`Store::list_level`] is native (a listing with delimiter `/`). Callers
    /// that walk a tree level by level fall back to [`Store::list`] when it is not.
    fn lists_levels(&self) -> bool {
        false
    }

    /// Lists one level under `prefix` (`""` for the root, else a prefix ending in `/`):
    /// the objects directly under it and the common prefixes (`prefix` + name + `/`) of
    /// everything deeper, in byte order, resuming after `start_after` (a common prefix
    /// equal to `start_after` may be listed again; the request layer drops it). Keys
    /// under a common prefix are contiguous in a whole listing and sort exactly where
    /// the prefix sorts among its siblings, so a level can be merged as one sorted
    /// sequence. A prefix under which nothing is lists as empty; a root that does not
    /// exist is `LocationNotFound`, as for [`Store::list`].
    ///
    /// The default fails: only stores that answer [`Store::lists_levels`] implement it.
    fn list_level(&self, prefix: &str, start_after: Option<String>) -> LevelStream<'_> {
        let _ = (prefix, start_after);
        let e = crate::Error::other(format!(
            "{} cannot list one level (no delimiter listing)",
            self.describe()
        ));
        Box::pin(futures::stream::once(async move { Err(e) }))
    }

    /// Whether listing entries carry the recorded source version ([`ObjectMeta::record`]).
    /// When false, the differ HEADs a destination object whose listing cannot decide.
    fn listing_has_records(&self) -> bool {
        false
    }

    /// Fetches metadata (including the recorded source version) of one object.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Reads `range` of an object. Fails with `SourceChanged` if `if_match` (an ETag) no
    /// longer matches, so that a rewritten source is never stitched from two versions.
    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes>;

    /// As [`Store::get_range`], with what the store's answer says of the whole object's
    /// stored checksum (free: it comes with the GET). A GET of the whole object whose
    /// bytes do not match the store's own checksum fails with `ChecksumMismatch` (and is
    /// retried): what was read is then known to be what the source holds.
    async fn get_range_stored(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<(Bytes, Stored)> {
        Ok((
            self.get_range(key, range, if_match).await?,
            Stored::default(),
        ))
    }

    /// The whole object's stored checksums, for a copy read in ranges whose GETs do not
    /// carry them (S3 sends them only when a GET covers the whole object): one HEAD per
    /// multipart copy, so its parts can be checked against them before it completes.
    /// `if_match` pins the version. Stores whose ranged GETs carry them (OSS), or that
    /// have none (a directory), answer nothing.
    async fn whole_checksums(&self, key: &str, if_match: Option<&str>) -> Result<Stored> {
        let _ = (key, if_match);
        Ok(Stored::default())
    }

    /// Writes a whole object atomically.
    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()>;

    /// Starts a multipart upload; returns its id.
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String>;

    /// Uploads one part of upload `upload_id` of `key`.
    async fn upload_part(&self, key: &str, upload_id: &str, part: Part) -> Result<CompletedPart>;

    /// Completes an upload from its parts in ascending order; the object appears atomically.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        opts: &PutOptions,
    ) -> Result<()>;

    /// Aborts an upload, discarding its parts.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;

    /// Lists uploads started under the root and neither completed nor aborted.
    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>>;

    /// The parts an upload holds so far, in part-number order, with their sizes and the
    /// checksums the store keeps for them (CRC32 on S3, CRC-64 on OSS): what a resumed
    /// copy may keep. A store that cannot tell fails (the copy then starts over).
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<CompletedPart>> {
        let _ = (key, upload_id);
        Err(crate::Error::other(format!(
            "{} cannot list the parts of an upload",
            self.describe()
        )))
    }

    /// The keys of snapferry's own objects under the reserved directory `dir` (a name
    /// starting with [`RESERVED_PREFIX`], such as the resume records' directory), in byte
    /// order. One listing from `dir` on, stopped at the first key past it: keys sort
    /// before the repository's, so this costs a page, not a listing of everything.
    async fn list_reserved(&self, dir: &str) -> Result<Vec<String>> {
        use futures::StreamExt;
        let under = format!("{dir}/");
        let mut out = Vec::new();
        let mut pages = self.list(Some(under.clone()));
        while let Some(page) = pages.next().await {
            for m in page? {
                if !m.key.starts_with(&under) {
                    return Ok(out);
                }
                out.push(m.key);
            }
        }
        Ok(out)
    }

    /// Deletes one object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Checks that the store is reachable, the credentials work and the bucket exists,
    /// and says whether the location holds anything. A bucket that does not exist is
    /// `LocationNotFound`; a directory that does not exist (yet) is [`Presence::Missing`].
    async fn preflight(&self) -> Result<Presence>;
}

/// A listing of objects from raw pages (a listing without delimiter has no prefixes):
/// how S3 and OSS answer [`Store::list`] and [`Store::list_prefix`].
pub(crate) fn objects_of(pages: RawPages<'_>) -> ListStream<'_> {
    use futures::StreamExt;
    Box::pin(pages.map(|r| r.map(|(objects, _)| objects)))
}

/// A one-level listing from raw pages with delimiter `/`: how S3 and OSS answer
/// [`Store::list_level`].
pub(crate) fn level_of(pages: RawPages<'_>) -> LevelStream<'_> {
    use futures::StreamExt;
    Box::pin(pages.map(|r| r.map(|(objects, prefixes)| merge_level(objects, prefixes))))
}

/// A one-level listing page from its objects and common prefixes (each in byte order, as
/// ListObjectsV2 answers them), merged into one sequence in byte order.
pub(crate) fn merge_level(objects: Vec<ObjectMeta>, prefixes: Vec<String>) -> Vec<LevelEntry> {
    let mut out = Vec::with_capacity(objects.len() + prefixes.len());
    let mut objects = objects.into_iter().peekable();
    let mut prefixes = prefixes.into_iter().peekable();
    loop {
        let take_object = match (objects.peek(), prefixes.peek()) {
            (Some(o), Some(p)) => o.key.as_str() < p.as_str(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        if take_object {
            out.extend(objects.next().map(LevelEntry::Object));
        } else {
            out.extend(prefixes.next().map(LevelEntry::Prefix));
        }
    }
}

/// Reads a small object whole: a HEAD for its size (its metadata is returned too), then
/// one GET. `None` when it is not there, also when it went between the two.
pub async fn read_whole(store: &dyn Store, key: &str) -> Result<Option<(ObjectMeta, Bytes)>> {
    let Some(m) = store.head(key).await? else {
        return Ok(None);
    };
    match store.get_range(key, 0..m.size, None).await {
        Ok(b) => Ok(Some((m, b))),
        Err(e) if e.kind() == crate::error::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a store's GET says of the whole object's stored checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The whole object's CRC-64/XZ (OSS `x-oss-hash-crc64ecma`, sent with every GET).
    pub crc64: Option<u64>,
    /// The whole object's CRC32 (S3 full-object `x-amz-checksum-crc32`, base64).
    pub crc32: Option<String>,
    /// The whole object's CRC-64/NVME (S3 full-object `x-amz-checksum-crc64nvme`, base64:
    /// what Amazon S3 stores by default for uploads that sent no checksum).
    pub crc64nvme: Option<String>,
    /// How the store verified these very bytes against its own checksum, when the GET
    /// covered the whole object.
    pub verified_by: Option<VerifiedBy>,
}

/// How an object's bytes were checked against the source's own record of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifiedBy {
    /// The store's CRC-64 (OSS).
    Crc64,
    /// The store's full-object CRC32 (S3).
    Crc32,
    /// The ETag as the MD5 of a single-part object (S3, OSS).
    Md5,
    /// The Lucene footer checksum the snapshot recorded for the file.
    Lucene,
}

/// `--verify-source`: which checks of the source's own checksums a copy makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifySource {
    /// Every check that costs no extra read (stored CRCs, Lucene footers); the MD5 of a
    /// single-part ETag only where no other check exists.
    #[default]
    Auto,
    /// As `Auto`, and the MD5 of every single-part ETag too (about 1.2 CPU-s/GiB).
    Md5,
    /// None: only what was read is checked against what was written.
    Off,
}

/// What a preflight found at the location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The location does not exist (a directory not created yet); writing creates it.
    Missing,
    /// It exists and holds no object (reserved snapferry objects aside).
    Empty,
    /// It holds at least one object.
    NotEmpty,
}

/// Name prefix reserved for snapferry's own objects in a store (the destination lease);
/// such keys at the root are never listed for copying and never deleted.
pub const RESERVED_PREFIX: &str = ".snapferry-";

/// The destination lease (see [`crate::lease`]).
pub const LEASE_KEY: &str = ".snapferry-lease";

/// Whether `key` (relative) is one of snapferry's own objects.
pub fn is_reserved(key: &str) -> bool {
    key.split('/')
        .next()
        .is_some_and(|first| first.starts_with(RESERVED_PREFIX))
}

/// Checks a relative key for things no backend should accept from a listing.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(crate::Error::invalid_input("empty object key"));
    }
    Ok(())
}
