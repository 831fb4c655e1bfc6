//! Pipeline tests over real local stores, with a fault-injecting wrapper: corrupted
//! uploads, throttling and server errors. Checks that a checksum mismatch is retried and
//! never reported as copied, and that retryable faults are retried.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::retry::RetryPolicy;
use crate::store::fs::FsStore;
use crate::store::{CompletedPart, ListStream, Part, PendingUpload};

/// What to inject.
#[derive(Default)]
struct Faults {
    /// Corrupt this many uploads (PUT or part) by flipping a byte after the CRC was taken.
    corrupt: AtomicU32,
    /// Fail this many GETs with a throttling error.
    throttle_gets: AtomicU32,
    /// Fail this many uploads with a 500.
    server_errors: AtomicU32,
}

fn take(c: &AtomicU32) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

struct Faulty {
    inner: FsStore,
    faults: Arc<Faults>,
}

impl Faulty {
    fn mangle(&self, key: &str, data: Bytes) -> Bytes {
        // snapferry's own objects (the lease) are not the copy under test.
        if !data.is_empty() && !crate::store::is_reserved(key) && take(&self.faults.corrupt) {
            let mut v = data.to_vec();
            v[0] ^= 0xff;
            return Bytes::from(v);
        }
        data
    }
    fn server_error(&self, key: &str) -> Result<()> {
        if !crate::store::is_reserved(key) && take(&self.faults.server_errors) {
            return Err(Error::server("HTTP 500 InternalError (injected)"));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Faulty {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        self.inner.list(start_after)
    }
    fn listing_has_records(&self) -> bool {
        true
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>, m: Option<&str>) -> Result<Bytes> {
        if !crate::store::is_reserved(key) && take(&self.faults.throttle_gets) {
            return Err(Error::throttled(
                "SlowDown (injected)",
                Some(Duration::from_millis(1)),
            ));
        }
        self.inner.get_range(key, range, m).await
    }
    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        self.server_error(key)?;
        self.inner
            .put(key, self.mangle(key, data), crc32, opts)
            .await
    }
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        self.inner.create_multipart(key, opts).await
    }
    async fn upload_part(&self, key: &str, id: &str, part: Part) -> Result<CompletedPart> {
        let (n, data, crc32) = (part.number, part.data, part.crc32);
        self.server_error(key)?;
        self.inner
            .upload_part(
                key,
                id,
                Part {
                    number: n,
                    data: self.mangle(key, data),
                    crc32,
                },
            )
            .await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        parts: &[CompletedPart],
        o: &PutOptions,
    ) -> Result<()> {
        self.inner.complete_multipart(key, id, parts, o).await
    }
    async fn abort_multipart(&self, key: &str, id: &str) -> Result<()> {
        self.inner.abort_multipart(key, id).await
    }
    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        self.inner.list_multipart_uploads().await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn preflight(&self) -> Result<crate::store::Presence> {
        self.inner.preflight().await
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(10),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
}

fn setup(files: &[(&str, usize)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    for (i, (k, n)) in files.iter().enumerate() {
        let p = src.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..*n).map(|j| (j * 31 + i * 7) as u8).collect();
        std::fs::write(p, data).unwrap();
    }
    Setup {
        _dir: dir,
        src,
        dst,
    }
}

async fn run_with(s: &Setup, faults: Arc<Faults>, opts: SyncOptions) -> Report {
    let src: Arc<dyn Store> = Arc::new(Faulty {
        inner: FsStore::new(&s.src),
        faults: faults.clone(),
    });
    let dst: Arc<dyn Store> = Arc::new(Faulty {
        inner: FsStore::new(&s.dst),
        faults,
    });
    let run = SyncRun::new(src, dst, opts, Arc::new(NoObserver));
    run.preflight().await.unwrap();
    run.run().await.unwrap()
}

fn opts() -> SyncOptions {
    SyncOptions {
        concurrency: 4,
        part_size: 5 << 20,
        multipart_threshold: 5 << 20,
        retry: fast_retry(),
        ..SyncOptions::default()
    }
}

const FILES: &[(&str, usize)] = &[("a", 10), ("b/c", 1000), ("big", 12 << 20)];

#[tokio::test]
async fn corruption_in_transit_is_retried_and_the_copy_is_exact() {
    let s = setup(FILES);
    let faults = Arc::new(Faults::default());
    faults.corrupt.store(3, Ordering::SeqCst);
    let r = run_with(&s, faults.clone(), opts()).await;
    assert_eq!(r.failed_objects, 0, "{:?}", r.failures);
    assert_eq!(r.copied_objects, 3);
    assert!(
        r.retries >= 3,
        "each corruption costs a retry: {}",
        r.retries
    );
    assert_eq!(faults.corrupt.load(Ordering::SeqCst), 0);
    for (k, _) in FILES {
        assert_eq!(
            std::fs::read(s.src.join(k)).unwrap(),
            std::fs::read(s.dst.join(k)).unwrap(),
            "{k}"
        );
    }
}

#[tokio::test]
async fn persistent_corruption_fails_the_object_and_never_counts_it_copied() {
    let s = setup(&[("only", 1000)]);
    let faults = Arc::new(Faults::default());
    faults.corrupt.store(u32::MAX, Ordering::SeqCst);
    let r = run_with(&s, faults, opts()).await;
    assert_eq!(r.copied_objects, 0);
    assert_eq!(r.copied_bytes, 0);
    assert_eq!(r.failed_objects, 1);
    assert!(
        r.failures[0].reason.contains("checksum mismatch"),
        "{:?}",
        r.failures
    );
    assert!(
        !s.dst.join("only").exists(),
        "a corrupt object must never land"
    );
}

#[tokio::test]
async fn persistent_corruption_of_a_part_aborts_the_upload() {
    let s = setup(&[("big", 12 << 20)]);
    let faults = Arc::new(Faults::default());
    faults.corrupt.store(u32::MAX, Ordering::SeqCst);
    let r = run_with(&s, faults, opts()).await;
    assert_eq!(r.copied_objects, 0);
    assert_eq!(r.failed_objects, 1);
    assert!(!s.dst.join("big").exists());
    let pending = FsStore::new(&s.dst).list_multipart_uploads().await.unwrap();
    assert!(pending.is_empty(), "failed upload left behind: {pending:?}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let s = setup(FILES);
    let faults = Arc::new(Faults::default());
    faults.throttle_gets.store(3, Ordering::SeqCst);
    faults.server_errors.store(3, Ordering::SeqCst);
    let r = run_with(&s, faults, opts()).await;
    assert_eq!(r.failed_objects, 0, "{:?}", r.failures);
    assert_eq!(r.copied_objects, 3);
    assert!(r.retries >= 6, "retries: {}", r.retries);
    // Requests are counted per attempt.
    assert!(r.requests["get"] >= 3 + 4);
}

#[tokio::test]
async fn same_size_rewrite_on_fs_is_copied_and_unchanged_is_skipped() {
    let s = setup(&[("index.latest", 8), ("x", 5)]);
    let r = run_with(&s, Arc::new(Faults::default()), opts()).await;
    assert_eq!(r.copied_objects, 2);
    let r = run_with(&s, Arc::new(Faults::default()), opts()).await;
    assert_eq!((r.copied_objects, r.skipped_objects), (0, 2));
    // Rewrite with the same size; the mtime moves (set it explicitly: same-second
    // rewrites are exactly the case the record must catch).
    let p = s.src.join("index.latest");
    std::fs::write(&p, [0, 0, 0, 0, 0, 0, 0, 2]).unwrap();
    let t = filetime::FileTime::from_unix_time(2_000_000_000, 0);
    filetime::set_file_mtime(&p, t).unwrap();
    let r = run_with(&s, Arc::new(Faults::default()), opts()).await;
    assert_eq!((r.copied_objects, r.skipped_objects), (1, 1));
    assert_eq!(
        std::fs::read(s.dst.join("index.latest")).unwrap(),
        [0, 0, 0, 0, 0, 0, 0, 2]
    );
}

#[tokio::test]
async fn cancellation_aborts_in_flight_uploads_and_reports_interrupted() {
    let s = setup(&[("big", 40 << 20)]);
    let src: Arc<dyn Store> = Arc::new(FsStore::new(&s.src));
    let dst: Arc<dyn Store> = Arc::new(FsStore::new(&s.dst));
    let o = SyncOptions {
        bwlimit: Some(8 << 20),
        concurrency: 1,
        ..opts()
    };
    let run = SyncRun::new(src, dst.clone(), o, Arc::new(NoObserver));
    let h = run.handle();
    let task = tokio::spawn(run.run());
    // Cancel once the upload exists (polling the store, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dst.list_multipart_uploads().await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "upload never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.cancel.cancel();
    let r = task.await.unwrap().unwrap();
    assert!(r.interrupted);
    assert_eq!(r.copied_objects, 0);
    assert_eq!(r.failed_objects, 1);
    assert!(
        dst.list_multipart_uploads().await.unwrap().is_empty(),
        "upload not aborted"
    );
    assert!(!s.dst.join("big").exists());
}

// ---- fast tests over the in-memory store (no directory, no server)

use crate::store::memory::MemoryStore;

/// Puts `objects` into a fresh in-memory store.
async fn memory_with(name: &str, objects: &[(String, Bytes)]) -> Arc<MemoryStore> {
    let s = Arc::new(MemoryStore::new(name));
    for (k, d) in objects {
        s.put(k, d.clone(), crc32fast::hash(d), &PutOptions::default())
            .await
            .unwrap();
    }
    s
}

async fn sync_memory(src: &Arc<MemoryStore>, dst: &Arc<MemoryStore>, o: SyncOptions) -> Report {
    let run = SyncRun::new(src.clone(), dst.clone(), o, Arc::new(NoObserver));
    run.preflight().await.unwrap();
    run.run().await.unwrap()
}

#[tokio::test]
async fn memory_stores_copy_exactly_then_the_round_is_a_no_op() {
    let objects: Vec<(String, Bytes)> = FILES
        .iter()
        .enumerate()
        .map(|(i, (k, n))| {
            let d: Vec<u8> = (0..*n).map(|j| (j * 31 + i * 7) as u8).collect();
            (k.to_string(), Bytes::from(d))
        })
        .collect();
    let src = memory_with("src", &objects).await;
    let dst = Arc::new(MemoryStore::new("dst"));
    let r = sync_memory(&src, &dst, opts()).await;
    assert_eq!(r.failed_objects, 0, "{:?}", r.failures);
    assert_eq!(r.copied_objects, 3);
    for (k, d) in &objects {
        assert_eq!(dst.bytes(k).as_ref(), Some(d), "{k}");
    }
    // The multipart copy (12 MiB in 5 MiB parts) left no upload behind.
    assert!(dst.list_multipart_uploads().await.unwrap().is_empty());
    let again = sync_memory(&src, &dst, opts()).await;
    assert_eq!((again.copied_objects, again.skipped_objects), (0, 3));
}

/// The committed OpenSearch fixture repository, loaded into memory.
async fn fixture_repository() -> Arc<MemoryStore> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/repos");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("opensearch"))
        })
        .collect();
    dirs.sort();
    let repo = dirs.pop().expect("an opensearch fixture").join("repo");
    let objects: Vec<(String, Bytes)> = walkdir::WalkDir::new(&repo)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.is_file())
        .map(|p| {
            let key = p
                .strip_prefix(&repo)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (key, Bytes::from(std::fs::read(&p).unwrap()))
        })
        .collect();
    memory_with("fixture", &objects).await
}

#[tokio::test]
async fn a_repository_in_memory_copies_snapshot_aware_and_the_next_round_costs_nothing() {
    let src = fixture_repository().await;
    let dst = Arc::new(MemoryStore::new("dst"));
    let r = sync_memory(&src, &dst, opts()).await;
    assert_eq!(r.failed_objects, 0, "{:?}", r.failures);
    let snap = r.snapshot.as_ref().expect("the source is a repository");
    assert!(snap.completed, "{snap:?}");
    // Every blob arrived byte for byte (the state record is snapferry's own, extra).
    for k in src.keys() {
        assert_eq!(dst.bytes(&k), src.bytes(&k), "{k}");
    }
    let extra: Vec<String> = dst
        .keys()
        .into_iter()
        .filter(|k| src.bytes(k).is_none())
        .collect();
    assert!(
        extra.iter().all(|k| crate::store::is_reserved(k)),
        "{extra:?}"
    );
    // The destination now holds the root snapferry wrote: the next round plans from
    // metadata, finds the roots identical and examines no shard.
    let again = sync_memory(&src, &dst, opts()).await;
    let snap = again.snapshot.as_ref().expect("still a repository");
    assert_eq!(again.copied_objects, 0);
    assert_eq!(snap.planned_from, "metadata", "{snap:?}");
    assert_eq!(snap.examined_units, 0, "{snap:?}");
}
