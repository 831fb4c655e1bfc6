//! `fs`: a local directory as a store.
//!
//! A real backend (staging, air-gapped moves, the README's first command), not a test
//! double. Design points:
//! - Writes are atomic: bytes go to a hidden temp file in the target directory, are
//!   fsynced, read back and checked against the caller's CRC32, and only then renamed
//!   over the key. An interrupted run never leaves a half-written object under a key.
//! - Multipart uploads live under `<root>/.snapferry-uploads/<id>/` until completed or
//!   aborted, so a killed run's upload can be found (and resumed, or aborted) by the
//!   next run. Completing appends the parts to the first one, deleting each once it is
//!   in, so an object needs its own size free plus one part, not twice its size.
//! - The source version is recorded in `user.snapferry-*` extended attributes, and the
//!   file mtime is set to the source LastModified; listings read both, so the differ
//!   decides without extra calls.
//! - Listing walks directories depth-first, ordering each directory's entries by name
//!   with `/` appended to directory names, which yields exactly the byte order of the
//!   relative keys (`a-c` < `a/b`) while holding only one directory's names per level.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    CompletedPart, LevelEntry, LevelStream, ListStream, ObjectMeta, Part, PendingUpload, Presence,
    PutOptions, SourceRecord, Store,
};
use crate::error::{Error, Result};

/// Name prefix of everything the fs backend keeps for itself; never listed or copied.
const INTERNAL_PREFIX: &str = ".snapferry-";
const UPLOADS_DIR: &str = ".snapferry-uploads";
const XATTR_PREFIX: &str = "user.";

/// A local directory store.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root` (created on first write if missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a relative key to a path, refusing keys a directory tree cannot hold safely.
    fn path_of(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty() || key.ends_with('/') {
            return Err(Error::invalid_input(format!(
                "key {key:?} ends with '/' (a directory marker) and cannot be stored as a file"
            )));
        }
        let mut p = self.root.clone();
        let last = key.rsplit('/').next().unwrap_or("");
        for comp in key.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." || comp.contains('\0') {
                return Err(Error::invalid_input(format!(
                    "key {key:?} has an empty, '.' or '..' path segment and cannot be stored as a file"
                )));
            }
            // The lease and the commit state (the last component, for stores seen under a
            // prefix) and resume records are the reserved names a caller may write; listings skip them like
            // every internal name.
            let own = ((comp == super::LEASE_KEY
                || comp == crate::pipeline::snapshot::state::STATE_KEY)
                && std::ptr::eq(comp, last))
                || comp == crate::pipeline::resume::RESUME_DIR;
            if comp.starts_with(INTERNAL_PREFIX) && !own {
                return Err(Error::invalid_input(format!(
                    "key {key:?} uses the reserved name prefix {INTERNAL_PREFIX}"
                )));
            }
            p.push(comp);
        }
        Ok(p)
    }

    fn uploads_dir(&self) -> PathBuf {
        self.root.join(UPLOADS_DIR)
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf> {
        if upload_id.is_empty()
            || !upload_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::invalid_input(format!("bad upload id {upload_id:?}")));
        }
        Ok(self.uploads_dir().join(upload_id))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::other(format!("blocking task failed: {e}")))?
}

fn mtime_ms(md: &fs::Metadata) -> Option<i64> {
    let t = md.modified().ok()?;
    Some(match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    })
}

fn read_record(path: &Path) -> Option<SourceRecord> {
    // Missing xattr support (ENOTSUP) simply means no record: the differ then uses the
    // size + mtime fallback, and we set the mtime to the source's on write.
    let get = |name: &str| -> Option<String> {
        xattr::get(path, format!("{XATTR_PREFIX}{name}"))
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
    };
    let etag = get(super::META_SRC_ETAG);
    let mtime = get(super::META_SRC_MTIME);
    let crc32 = get(super::META_CRC32);
    let crc64 = get(super::META_CRC64);
    let pairs: Vec<(&str, &str)> = [
        (super::META_SRC_ETAG, etag.as_deref()),
        (super::META_SRC_MTIME, mtime.as_deref()),
        (super::META_CRC32, crc32.as_deref()),
        (super::META_CRC64, crc64.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    SourceRecord::from_metadata(pairs)
}

fn meta_of(key: String, path: &Path, md: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: md.len(),
        mtime_ms: mtime_ms(md),
        etag: None,
        record: read_record(path),
        ..Default::default()
    }
}

fn apply_options(path: &Path, opts: &PutOptions) -> Result<()> {
    for (k, v) in &opts.metadata {
        if let Err(e) = xattr::set(path, format!("{XATTR_PREFIX}{k}"), v.as_bytes()) {
            // Not fatal: the mtime below still records the source version.
            tracing::debug!("cannot set xattr on {}: {e}", path.display());
        }
    }
    if let Some(ms) = opts.mtime_ms {
        let t = if ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(ms as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
        };
        filetime::set_file_mtime(path, filetime::FileTime::from_system_time(t))?;
    }
    Ok(())
}

fn crc_of_file(path: &Path) -> Result<(u32, u64)> {
    crc_copy(path, &mut std::io::sink())
}

/// Copies a file's bytes to `out`, returning their CRC32 and length.
fn crc_copy(path: &Path, out: &mut impl Write) -> Result<(u32, u64)> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        n_total += n as u64;
    }
    Ok((h.finalize(), n_total))
}

fn temp_path_near(target: &Path) -> PathBuf {
    let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
    dir.join(format!(
        "{INTERNAL_PREFIX}tmp-{:016x}",
        rand::random::<u64>()
    ))
}

/// Writes `data` to a temp file beside `target`, fsyncs it and returns the temp path.
fn write_temp(target: &Path, data: &[u8]) -> Result<PathBuf> {
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = temp_path_near(target);
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let res = f.write_all(data).and_then(|_| f.sync_all());
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(tmp)
}

/// Reads `tmp` back and checks its CRC32 and length; removes it on mismatch.
fn verify_file(tmp: &Path, crc32: u32, len: u64, what: &str) -> Result<()> {
    let (got, n) = crc_of_file(tmp)?;
    if got != crc32 || n != len {
        let _ = fs::remove_file(tmp);
        return Err(Error::checksum(format!(
            "{what}: wrote {n} bytes with crc32 {got:08x}, expected {len} bytes with crc32 {crc32:08x}"
        )));
    }
    Ok(())
}

/// Assembles an upload's parts into one file inside its directory, without needing
/// twice the object's size free: the first part is the file, each later part is checked
/// (CRC32 and size), appended, fsynced and only then deleted — at most one part's size
/// more than the object is ever held. Every part is checked against what the caller
/// recorded for it before anything is consumed, and again as it is appended (a part
/// after the first is read twice: the price of never needing twice the space). A run killed half-way leaves an upload whose appended
/// parts are gone: the next run lists the parts left (`list_parts`), sends the missing
/// ones again and assembles afresh; the partial file is never under a key.
fn assemble_in_place(dir: &Path, parts: &[CompletedPart], key: &str) -> Result<PathBuf> {
    let part_path = |n: u32| dir.join(format!("part-{n:05}"));
    let check = |p: &CompletedPart, path: &Path| -> Result<()> {
        let (got, n) = crc_of_file(path)?;
        if got != p.crc32 || n != p.size {
            return Err(Error::checksum(format!(
                "{key} part {}: stored part has crc32 {got:08x}/{n} bytes, expected {:08x}/{}",
                p.number, p.crc32, p.size
            )));
        }
        Ok(())
    };
    let Some((first, rest)) = parts.split_first() else {
        return Err(Error::invalid_input(format!("{key}: no parts to complete")));
    };
    // Everything is checked before anything is consumed: a bad part fails the
    // completion with the upload intact.
    for p in parts {
        check(p, &part_path(p.number))?;
    }
    let assembled = dir.join("assembled");
    fs::rename(part_path(first.number), &assembled)?;
    let mut out = OpenOptions::new().append(true).open(&assembled)?;
    for p in rest {
        let path = part_path(p.number);
        let (crc, n) = crc_copy(&path, &mut out)?;
        if crc != p.crc32 || n != p.size {
            return Err(Error::checksum(format!(
                "{key} part {} changed while it was assembled",
                p.number
            )));
        }
        out.sync_data()?;
        fs::remove_file(&path)?;
    }
    out.sync_all()?;
    Ok(assembled)
}

/// Removes the uploads directory once no upload is left in it.
fn remove_if_empty(dir: Option<&Path>) {
    if let Some(d) = dir {
        let _ = fs::remove_dir(d); // fails (harmlessly) while other uploads remain
    }
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, bool)>> {
    let mut v = Vec::new();
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = match ent.file_name().into_string() {
            Ok(n) => n,
            Err(n) => {
                tracing::warn!("skipping non-UTF-8 file name {:?} in {}", n, dir.display());
                continue;
            }
        };
        if name.starts_with(INTERNAL_PREFIX) {
            continue;
        }
        let ft = ent.file_type()?;
        let is_dir = if ft.is_symlink() {
            fs::metadata(ent.path())
                .map(|m| m.is_dir())
                .unwrap_or(false)
        } else {
            ft.is_dir()
        };
        v.push((name, is_dir));
    }
    // Directories sort as "name/" so that the walk yields keys in byte order.
    v.sort_by(|a, b| {
        let ka =
            a.0.as_bytes()
                .iter()
                .chain(if a.1 { &b"/"[..] } else { &b""[..] });
        let kb =
            b.0.as_bytes()
                .iter()
                .chain(if b.1 { &b"/"[..] } else { &b""[..] });
        ka.cmp(kb)
    });
    Ok(v)
}

/// One directory level of the walk: its key prefix, sorted (name, is_dir) entries and
/// the index of the next entry.
type Level = (String, Vec<(String, bool)>, usize);

/// Where a walk starts: the whole tree, or the part of it under a key prefix.
#[derive(Debug, Clone, Default)]
struct From {
    /// The directory (relative, `""` or ending in `/`) whose entries are walked.
    dir: String,
    /// Only the entries of `dir` whose names start with this.
    name: String,
}

impl From {
    /// The directory a key prefix names, and the name prefix in it: `a/b/` is the
    /// directory `a/b/` (every name), `a/b` the names starting with `b` in `a/`. A prefix
    /// with an empty, `.` or `..` segment cannot name a directory (no key is under it),
    /// and one through a reserved directory names nothing a listing shows.
    fn prefix(prefix: &str) -> Option<From> {
        let (dir, name) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let bad = dir.split('/').rev().skip(1).any(|c| {
            c.is_empty()
                || c == "."
                || c == ".."
                || c.contains('\0')
                || c.starts_with(INTERNAL_PREFIX)
        });
        (!bad).then(|| From {
            dir: dir.to_string(),
            name: name.to_string(),
        })
    }
}

/// The sorted entries of the directory `from` names, filtered by its name prefix; `None`
/// when that directory does not exist (or is not a directory): nothing is under it.
fn start_entries(root: &Path, from: &From) -> std::io::Result<Option<Vec<(String, bool)>>> {
    let dir = root.join(&from.dir);
    match sorted_entries(&dir) {
        Ok(mut v) => {
            v.retain(|(n, _)| n.starts_with(from.name.as_str()));
            Ok(Some(v))
        }
        Err(e)
            if !from.dir.is_empty()
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The blocking walk behind [`FsStore::list`] (from the root) and
/// [`FsStore::list_prefix`] (from the prefix's directory only: siblings of that directory
/// are never read); sends entries into `tx` in key order.
fn walk(
    root: PathBuf,
    from: From,
    start_after: Option<String>,
    tx: mpsc::Sender<Result<Vec<ObjectMeta>>>,
) {
    if !root.exists() {
        // Absent is not empty: the caller decides whether a missing directory is a
        // destination not created yet or a mistyped source.
        let _ = tx.blocking_send(Err(Error::location_not_found(format!(
            "directory {} does not exist",
            root.display()
        ))));
        return;
    }
    // Stack of (relative dir prefix, entries, next index).
    let mut stack: Vec<Level> = Vec::new();
    match start_entries(&root, &from) {
        Ok(Some(v)) => stack.push((from.dir, v, 0)),
        Ok(None) => return,
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
    }
    let mut page = Vec::with_capacity(super::LIST_PAGE);
    while let Some((prefix, entries, idx)) = stack.last_mut() {
        if *idx >= entries.len() {
            stack.pop();
            continue;
        }
        let (name, is_dir) = entries[*idx].clone();
        *idx += 1;
        let rel = format!("{prefix}{name}");
        let path = root.join(&rel);
        if let Some(after) = &start_after {
            // Skip whole subtrees that sort entirely at or before `after`.
            let subtree_done = is_dir
                && !after.starts_with(&format!("{rel}/"))
                && format!("{rel}/").as_str() < after.as_str();
            if subtree_done || (!is_dir && rel.as_str() <= after.as_str()) {
                continue;
            }
        }
        if is_dir {
            match sorted_entries(&path) {
                Ok(v) => stack.push((format!("{rel}/"), v, 0)),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            }
            continue;
        }
        match fs::metadata(&path) {
            Ok(md) => page.push(meta_of(rel, &path, &md)),
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        }
        if page.len() >= super::LIST_PAGE {
            let full = std::mem::replace(&mut page, Vec::with_capacity(super::LIST_PAGE));
            if tx.blocking_send(Ok(full)).is_err() {
                return; // the consumer went away
            }
        }
    }
    if !page.is_empty() {
        let _ = tx.blocking_send(Ok(page));
    }
}

/// One directory of [`FsStore::list_level`], sent into `tx` as pages: its files as
/// objects (with their metadata) and its subdirectories as common prefixes, in key order,
/// after `start_after`. Only that directory is read.
fn level(
    root: PathBuf,
    prefix: String,
    start_after: Option<String>,
    tx: mpsc::Sender<Result<Vec<LevelEntry>>>,
) {
    let fail = |e: Error| {
        let _ = tx.blocking_send(Err(e));
    };
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return fail(Error::invalid_input(format!(
            "a one-level listing needs a directory prefix (ending in '/'), not {prefix:?}"
        )));
    }
    if !root.exists() {
        return fail(Error::location_not_found(format!(
            "directory {} does not exist",
            root.display()
        )));
    }
    let Some(from) = From::prefix(&prefix) else {
        return;
    };
    let entries = match start_entries(&root, &from) {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(e) => return fail(e.into()),
    };
    let mut page = Vec::with_capacity(super::LIST_PAGE.min(entries.len()));
    for (name, is_dir) in entries {
        let rel = if is_dir {
            format!("{prefix}{name}/")
        } else {
            format!("{prefix}{name}")
        };
        if start_after.as_deref().is_some_and(|a| rel.as_str() <= a) {
            continue;
        }
        if is_dir {
            page.push(LevelEntry::Prefix(rel));
        } else {
            let path = root.join(&rel);
            match fs::metadata(&path) {
                Ok(md) => page.push(LevelEntry::Object(meta_of(rel, &path, &md))),
                Err(e) => return fail(e.into()),
            }
        }
        if page.len() >= super::LIST_PAGE
            && tx.blocking_send(Ok(std::mem::take(&mut page))).is_err()
        {
            return; // the consumer went away
        }
    }
    if !page.is_empty() {
        let _ = tx.blocking_send(Ok(page));
    }
}

#[async_trait]
impl Store for FsStore {
    fn describe(&self) -> String {
        if self.root.is_absolute() {
            format!("file://{}", self.root.display())
        } else {
            self.root.display().to_string()
        }
    }

    fn listing_has_records(&self) -> bool {
        true
    }

    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        let (tx, rx) = mpsc::channel(2);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(root, From::default(), start_after, tx));
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    fn list_prefix(&self, prefix: &str, start_after: Option<String>) -> ListStream<'_> {
        let Some(from) = From::prefix(prefix) else {
            return Box::pin(futures::stream::empty());
        };
        let (tx, rx) = mpsc::channel(2);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(root, from, start_after, tx));
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    fn lists_levels(&self) -> bool {
        true
    }

    fn list_level(&self, prefix: &str, start_after: Option<String>) -> LevelStream<'_> {
        let (tx, rx) = mpsc::channel(2);
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || level(root, prefix, start_after, tx));
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    async fn list_reserved(&self, dir: &str) -> Result<Vec<String>> {
        // Listings skip reserved names, so the directory is read directly. Our own
        // directory missing means none of our objects are there (it is made by the
        // first write into it).
        let path = self.path_of(dir)?;
        let dir = dir.to_string();
        blocking(move || {
            let rd = match fs::read_dir(&path) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for ent in rd {
                let ent = ent?;
                let Ok(name) = ent.file_name().into_string() else {
                    continue;
                };
                // Temp files of writes in progress are not objects.
                if !name.starts_with(INTERNAL_PREFIX) && ent.file_type()?.is_file() {
                    out.push(format!("{dir}/{name}"));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(move || match fs::metadata(&path) {
            Ok(md) if md.is_file() => Ok(Some(meta_of(key, &path, &md))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        _if_match: Option<&str>,
    ) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        let want = range.end.saturating_sub(range.start);
        let len = usize::try_from(want).map_err(|_| {
            Error::invalid_input(format!("{key}: a {want}-byte range does not fit in memory"))
        })?;
        // From the run's pool (taken here: the blocking thread is outside its scope), read
        // into its spare capacity, never zeroed first.
        let mut buf = crate::buffers::take(len);
        blocking(move || {
            use std::io::{Seek, SeekFrom};
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(range.start))?;
            let got = buf.read_from(&mut f, want)?;
            if got < len {
                return Err(Error::source_changed(format!(
                    "{key}: file is shorter than listed"
                )));
            }
            Ok(buf.freeze())
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        let target = self.path_of(key)?;
        let opts = opts.clone();
        let key = key.to_string();
        blocking(move || {
            if opts.if_match.is_some() {
                // Files carry no ETag to compare (callers read and compare instead).
                return Err(Error::precondition(format!(
                    "{key}: a directory store has no ETags to match"
                )));
            }
            let tmp = write_temp(&target, &data)?;
            verify_file(&tmp, crc32, data.len() as u64, &key)?;
            apply_options(&tmp, &opts)?;
            let placed = if opts.if_none_match {
                // link(2) fails if the target exists: an atomic create-if-absent.
                fs::hard_link(&tmp, &target).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Error::precondition(format!("{key} exists already"))
                    } else {
                        e.into()
                    }
                })
            } else {
                fs::rename(&tmp, &target).map_err(Error::from)
            };
            if opts.if_none_match || placed.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            placed
        })
        .await
    }

    async fn create_multipart(&self, key: &str, _opts: &PutOptions) -> Result<String> {
        self.path_of(key)?;
        let id = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let dir = self.upload_dir(&id)?;
        let key = key.to_string();
        blocking(move || {
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("key"), key.as_bytes())?;
            Ok(id)
        })
        .await
    }

    async fn upload_part(&self, key: &str, upload_id: &str, part: Part) -> Result<CompletedPart> {
        let (number, data, crc32) = (part.number, part.data, part.crc32);
        let dir = self.upload_dir(upload_id)?;
        let what = format!("{key} part {number}");
        blocking(move || {
            if !dir.join("key").exists() {
                return Err(Error::not_found(format!("{what}: upload no longer exists")));
            }
            let target = dir.join(format!("part-{number:05}"));
            let tmp = write_temp(&target, &data)?;
            verify_file(&tmp, crc32, data.len() as u64, &what)?;
            fs::rename(&tmp, &target)?;
            Ok(CompletedPart {
                number,
                etag: format!("{crc32:08x}"),
                crc32,
                size: data.len() as u64,
                crc64: None,
            })
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        opts: &PutOptions,
    ) -> Result<()> {
        let target = self.path_of(key)?;
        let dir = self.upload_dir(upload_id)?;
        let parts = parts.to_vec();
        let opts = opts.clone();
        let key = key.to_string();
        blocking(move || {
            if let Some(d) = target.parent() {
                fs::create_dir_all(d)?;
            }
            let assembled = assemble_in_place(&dir, &parts, &key)?;
            apply_options(&assembled, &opts)?;
            if let Err(e) = fs::rename(&assembled, &target) {
                if e.kind() != std::io::ErrorKind::CrossesDevices {
                    return Err(e.into());
                }
                // The key's directory is another filesystem than the root (a mount
                // inside it): copied once more, then renamed there.
                let tmp = temp_path_near(&target);
                let copied = fs::copy(&assembled, &tmp)
                    .map_err(Error::from)
                    .and_then(|_| Ok(File::open(&tmp)?.sync_all()?))
                    .and_then(|_| apply_options(&tmp, &opts))
                    .and_then(|_| Ok(fs::rename(&tmp, &target)?));
                if let Err(e) = copied {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
            fs::remove_dir_all(&dir)?;
            remove_if_empty(dir.parent());
            Ok(())
        })
        .await
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<()> {
        let dir = self.upload_dir(upload_id)?;
        blocking(move || {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            remove_if_empty(dir.parent());
            Ok(())
        })
        .await
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        let dir = self.uploads_dir();
        blocking(move || {
            let mut out = Vec::new();
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            for ent in rd {
                let ent = ent?;
                let id = ent.file_name().to_string_lossy().into_owned();
                let key = fs::read_to_string(ent.path().join("key")).unwrap_or_default();
                let initiated_ms = ent.metadata().ok().as_ref().and_then(mtime_ms);
                out.push(PendingUpload {
                    key,
                    upload_id: id,
                    initiated_ms,
                });
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn list_parts(&self, _key: &str, upload_id: &str) -> Result<Vec<CompletedPart>> {
        let dir = self.upload_dir(upload_id)?;
        blocking(move || {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::not_found(format!(
                        "upload {} no longer exists",
                        dir.display()
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            let mut parts = Vec::new();
            for ent in rd {
                let ent = ent?;
                let name = ent.file_name().to_string_lossy().into_owned();
                let Some(n) = name
                    .strip_prefix("part-")
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue; // the key file, or a temp file of a part not yet landed
                };
                // A part file is renamed into place only once read back and verified, so
                // its CRC32 (read again here, locally) is the one its bytes were sent with.
                let (crc32, size) = crc_of_file(&ent.path())?;
                parts.push(CompletedPart {
                    number: n,
                    etag: format!("{crc32:08x}"),
                    crc32,
                    size,
                    crc64: None,
                });
            }
            parts.sort_by_key(|p| p.number);
            Ok(parts)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            // Remove directories left empty, up to (not including) the root.
            let mut dir = path.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == root || fs::remove_dir(&d).is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
            Ok(())
        })
        .await
    }

    async fn preflight(&self) -> Result<Presence> {
        let root = self.root.clone();
        blocking(move || match fs::metadata(&root) {
            Ok(md) if md.is_dir() => {
                let mut rd = fs::read_dir(&root)?;
                let any = rd.try_fold(false, |any, ent| {
                    let name = ent?.file_name();
                    Ok::<_, std::io::Error>(
                        any || !name.to_string_lossy().starts_with(INTERNAL_PREFIX),
                    )
                })?;
                Ok(if any {
                    Presence::NotEmpty
                } else {
                    Presence::Empty
                })
            }
            Ok(_) => Err(Error::invalid_input(format!(
                "{} is not a directory; give a directory path",
                root.display()
            ))),
            // A missing root: a destination is created on the first write; whether a
            // missing source is acceptable is the caller's decision.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Presence::Missing),
            Err(e) => Err(e.into()),
        })
        .await
    }
}

/// The current time in Unix milliseconds (used by tests and reports).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
