//! `repo ls` and `repo verify`: what a repository holds, and whether every byte it needs
//! is there and intact, judged from the repository's own metadata and checksums.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::blob;
use super::model::{
    classify, read_root, state_name, BlobKind, DataFile, FileInfo, Repository, RepositoryData,
    ShardSnapshot, INCOMPATIBLE_SNAPSHOTS,
};
use crate::pipeline::snapshot::planner::is_numeric;

/// The `files` of a shard-level `index-<gen>` (BlobStoreIndexShardSnapshots).
#[derive(serde::Deserialize)]
struct ShardIndexFiles {
    #[serde(default)]
    files: Vec<FileInfo>,
}
use crate::error::{Error, ErrorKind, Result};
use crate::store::Store;

/// Chunk size of deep reads.
const DEEP_CHUNK: u64 = 8 << 20;

/// One snapshot as `repo ls` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Snapshot name, as the cluster lists it.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// State (SUCCESS, PARTIAL, ...).
    pub state: String,
    /// Index names.
    pub indices: Vec<String>,
    /// Start time, ms since the epoch.
    pub start_time_ms: Option<i64>,
    /// End time, ms since the epoch.
    pub end_time_ms: Option<i64>,
    /// Total size of the Lucene files the snapshot references (with `--sizes`; null
    /// without, which reads only the root and the snapshots' own metadata).
    pub total_size_bytes: Option<u64>,
}

/// `repo ls`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Root generation.
    pub generation: u64,
    /// Repository UUID.
    pub repository_uuid: Option<String>,
    /// Snapshots, in repository order.
    pub snapshots: Vec<SnapshotSummary>,
}

/// The part of a root `snap-<uuid>.dat` (`SnapshotInfo`) `repo ls` reads.
#[derive(serde::Deserialize)]
struct SnapshotInfoBlob {
    snapshot: SnapshotTimes,
}

#[derive(serde::Deserialize)]
struct SnapshotTimes {
    #[serde(default)]
    start_time: Option<i64>,
    #[serde(default)]
    end_time: Option<i64>,
}

/// The shard-level `index-<gen>` as `repo ls --sizes` reads it: every file's length, and
/// which files each snapshot of the shard holds.
#[derive(serde::Deserialize)]
struct ShardIndexSizes {
    #[serde(default)]
    files: Vec<FileInfo>,
    #[serde(default)]
    snapshots: HashMap<String, ShardIndexSnapshot>,
}

#[derive(serde::Deserialize)]
struct ShardIndexSnapshot {
    #[serde(default)]
    files: Vec<String>,
}

/// Lists the snapshots of the repository at `store`, from its root `index-N` (found
/// through `index.latest`, without a listing) and, for the snapshots whose times the
/// root does not record, their root `snap-<uuid>.dat`, read in parallel. `sizes` also
/// reads one shard-level `index-<gen>` per shard (or each snapshot's shard `snap-*.dat`
/// for numeric generations) to total every snapshot's files.
pub async fn list(store: &dyn Store, sizes: bool, concurrency: usize) -> Result<Listing> {
    let data = match read_root(store, None).await? {
        Some((d, _)) => d,
        None => Repository::load(store).await?.data,
    };
    let conc = concurrency.max(1);
    let times: HashMap<String, (Option<i64>, Option<i64>)> = futures::stream::iter(
        data.snapshots
            .iter()
            .filter(|s| s.start_ms.is_none() || s.end_ms.is_none())
            .map(|s| s.uuid.clone()),
    )
    .map(|uuid| async move {
        let key = format!("snap-{uuid}.dat");
        let Some((_, bytes)) = crate::store::read_whole(store, &key).await? else {
            return Ok::<_, Error>((uuid, (None, None)));
        };
        let env = blob::parse_envelope(&key, &bytes)?;
        let info: SnapshotInfoBlob = blob::decode(&key, &env)?;
        Ok((uuid, (info.snapshot.start_time, info.snapshot.end_time)))
    })
    .buffer_unordered(conc)
    .try_collect()
    .await?;
    let totals = if sizes {
        Some(snapshot_sizes(store, &data, conc).await?)
    } else {
        None
    };
    let mut snapshots = Vec::new();
    for s in &data.snapshots {
        let mut indices: Vec<String> = data
            .indices
            .iter()
            .filter(|ix| ix.snapshots.contains(&s.uuid))
            .map(|ix| ix.name.clone())
            .collect();
        indices.sort();
        let (start, end) = times.get(&s.uuid).copied().unwrap_or((None, None));
        snapshots.push(SnapshotSummary {
            name: s.name.clone(),
            uuid: s.uuid.clone(),
            state: state_name(s.state).to_string(),
            indices,
            start_time_ms: s.start_ms.or(start),
            end_time_ms: s.end_ms.or(end),
            total_size_bytes: totals
                .as_ref()
                .map(|t| t.get(&s.name).copied().unwrap_or(0)),
        });
    }
    Ok(Listing {
        generation: data.generation,
        repository_uuid: data.uuid.clone(),
        snapshots,
    })
}

/// Total bytes of the Lucene files of every snapshot, by name: one shard-level
/// `index-<gen>` per shard (UUID generations), or the shard `snap-*.dat` of each snapshot
/// (numeric ones, found by listing the index), streamed with bounded concurrency.
async fn snapshot_sizes(
    store: &dyn Store,
    data: &RepositoryData,
    conc: usize,
) -> Result<HashMap<String, u64>> {
    let names: HashMap<&str, &str> = data
        .snapshots
        .iter()
        .map(|s| (s.uuid.as_str(), s.name.as_str()))
        .collect();
    let mut reads: Vec<(String, bool)> = Vec::new(); // (key or index prefix, is_shard_index)
    for ix in &data.indices {
        if ix.shard_generations.is_empty()
            || ix.shard_generations.iter().flatten().any(|g| is_numeric(g))
        {
            reads.push((format!("indices/{}/", ix.id), false));
            continue;
        }
        for (position, g) in ix.shard_generations.iter().enumerate() {
            if let Some(g) = g {
                reads.push((format!("indices/{}/{position}/index-{g}", ix.id), true));
            }
        }
    }
    let names = &names;
    let parts: Vec<Vec<(String, u64)>> = futures::stream::iter(reads)
        .map(|(key, shard_index)| async move {
            let mut out = Vec::new();
            if shard_index {
                let Some((_, bytes)) = crate::store::read_whole(store, &key).await? else {
                    return Ok::<_, Error>(out);
                };
                let env = blob::parse_envelope(&key, &bytes)?;
                let idx: ShardIndexSizes = blob::decode(&key, &env)?;
                let len: HashMap<&str, u64> = idx
                    .files
                    .iter()
                    .map(|f| (f.name.as_str(), f.length))
                    .collect();
                for (snap, s) in &idx.snapshots {
                    let total = s.files.iter().filter_map(|f| len.get(f.as_str())).sum();
                    out.push((snap.clone(), total));
                }
                return Ok(out);
            }
            // Numeric generations: every shard snap-<uuid>.dat under the index.
            let mut pages = store.list_prefix(&key, None);
            let mut snaps = Vec::new();
            while let Some(page) = pages.next().await {
                for m in page? {
                    let rest = &m.key[key.len()..];
                    let Some((_, file)) = rest.split_once('/') else {
                        continue;
                    };
                    let uuid = file
                        .strip_prefix("snap-")
                        .and_then(|f| f.strip_suffix(".dat"));
                    if let Some(name) = uuid.and_then(|u| names.get(u)) {
                        snaps.push((m.key.clone(), m.size, name.to_string()));
                    }
                }
            }
            for (k, size, name) in snaps {
                let b = store.get_range(&k, 0..size, None).await?;
                let env = blob::parse_envelope(&k, &b)?;
                let snap: ShardSnapshot = blob::decode(&k, &env)?;
                out.push((name, snap.files.iter().map(|f| f.length).sum()));
            }
            Ok(out)
        })
        .buffer_unordered(conc)
        .try_collect()
        .await?;
    let mut totals: HashMap<String, u64> = HashMap::new();
    for (name, n) in parts.into_iter().flatten() {
        *totals.entry(name).or_default() += n;
    }
    Ok(totals)
}

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The blob's key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// The result of `repo verify`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    /// Root generation checked.
    pub generation: u64,
    /// Snapshots checked.
    pub snapshots_checked: usize,
    /// Referenced blobs checked for presence and size.
    pub blobs_checked: usize,
    /// Metadata blobs whose envelope checksum was checked.
    pub metadata_checked: usize,
    /// Data files whose Lucene footer checksum was checked (`--deep`).
    pub data_files_checked: usize,
    /// Bytes read.
    pub bytes_read: u64,
    /// Problems, with their blob paths.
    pub problems: Vec<Problem>,
}

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only these snapshots (all when empty).
    pub snapshots: Vec<String>,
    /// Also stream every data blob and check its Lucene checksum.
    pub deep: bool,
    /// Concurrent reads.
    pub concurrency: usize,
}

/// Verifies the repository at `store`.
/// Reads the root through `index.latest` and checks shard by shard
/// ([`super::verify_stream`]); a missing or lagging `index.latest` is checked from a
/// listing instead (which reports it).
pub async fn verify(store: &dyn Store, opts: &VerifyOptions) -> Result<VerifyReport> {
    if let Some((data, _)) = read_root(store, None).await? {
        return super::verify_stream::verify(store, &data, opts).await;
    }
    let repo = Repository::load(store).await?;
    verify_loaded(store, &repo, opts).await
}

/// Verifies an already loaded repository.
pub async fn verify_loaded(
    store: &dyn Store,
    repo: &Repository,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let conc = opts.concurrency.max(1);
    let selected = repo.select(&opts.snapshots)?;
    let mut report = VerifyReport {
        generation: repo.data.generation,
        snapshots_checked: selected.len(),
        ..Default::default()
    };
    // Shard snapshots that cannot be read are reported, not fatal.
    let (refs, data_files) = match repo.references(store, &selected).await {
        Ok(r) => r,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ChecksumMismatch | ErrorKind::RepositoryFormat
            ) =>
        {
            report.problems.push(Problem {
                key: e.key().unwrap_or("").to_string(),
                problem: e.message().to_string(),
            });
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    // index.latest, when present, must name the current generation.
    if let Some(&sz) = repo.listing.get("index.latest") {
        let b = store.get_range("index.latest", 0..sz, None).await?;
        report.bytes_read += sz;
        let n = (b.len() == 8).then(|| u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8])));
        if n != Some(repo.data.generation) {
            report.problems.push(Problem {
                key: "index.latest".into(),
                problem: format!(
                    "names generation {n:?}, but the current root is index-{}",
                    repo.data.generation
                ),
            });
        }
    }
    let mut metadata = Vec::new();
    for (key, r) in &refs {
        report.blobs_checked += 1;
        match repo.listing.get(key) {
            None => report.problems.push(Problem {
                key: key.clone(),
                problem: "missing".into(),
            }),
            Some(&actual) => {
                if let Some(want) = r.size {
                    if want != actual {
                        report.problems.push(Problem {
                            key: key.clone(),
                            problem: format!("size {actual}, expected {want}"),
                        });
                    }
                }
                // Every metadata blob is a checksummed envelope, but for the plain JSON
                // list of incompatible snapshots (5.x/6.x).
                if matches!(
                    r.kind,
                    BlobKind::RootMeta
                        | BlobKind::IndexMeta
                        | BlobKind::ShardSnapshot
                        | BlobKind::ShardIndex
                ) && key != INCOMPATIBLE_SNAPSHOTS
                {
                    metadata.push((key.clone(), actual));
                }
            }
        }
    }
    // Envelope checksums of every metadata blob; and every file a shard-level index-<gen>
    // lists must exist with its length: a later snapshot into this repository reuses
    // listed files by name and checksum, so a listed but missing blob would silently
    // corrupt it.
    let refs = &refs;
    let results: Vec<(String, u64, Option<String>, Vec<Problem>)> = futures::stream::iter(metadata)
        .map(|(key, size)| async move {
            let env = store
                .get_range(&key, 0..size, None)
                .await
                .and_then(|b| blob::parse_envelope(&key, &b));
            let mut listed = Vec::new();
            let err = match env {
                Err(e) => Some(e.to_string()),
                Ok(env) if classify(&key) == Some(BlobKind::ShardIndex) => {
                    match blob::decode::<ShardIndexFiles>(&key, &env) {
                        Err(e) => Some(e.to_string()),
                        Ok(idx) => {
                            let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
                            for f in idx.files {
                                for (name, want) in f.blobs() {
                                    let blob = format!("{dir}/{name}");
                                    if refs.contains_key(&blob) {
                                        continue; // checked above already
                                    }
                                    let problem = match repo.listing.get(&blob) {
                                        None => format!("listed by {key}, missing"),
                                        Some(&got) if got != want => format!(
                                            "listed by {key} with {want} bytes, holds {got}"
                                        ),
                                        Some(_) => continue,
                                    };
                                    listed.push(Problem { key: blob, problem });
                                }
                            }
                            None
                        }
                    }
                }
                Ok(_) => None,
            };
            (key, size, err, listed)
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    for (key, size, err, listed) in results {
        report.metadata_checked += 1;
        report.bytes_read += size;
        if let Some(e) = err {
            report.problems.push(Problem { key, problem: e });
        }
        report.problems.extend(listed);
    }
    if opts.deep {
        let listing = &repo.listing;
        let present: Vec<&DataFile> = data_files
            .iter()
            .filter(|f| f.blobs.iter().all(|(k, s)| listing.get(k) == Some(s)))
            .collect();
        let results: Vec<(String, u64, Option<String>)> = futures::stream::iter(present)
            .map(|f| async move {
                let (read, res) = deep_check(store, f).await;
                (f.blobs[0].0.clone(), read, res.err().map(|e| e.to_string()))
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        for (key, read, err) in results {
            report.data_files_checked += 1;
            report.bytes_read += read;
            if let Some(e) = err {
                report.problems.push(Problem { key, problem: e });
            }
        }
    }
    report.problems.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(report)
}

/// Streams one data file (all its parts) and checks its Lucene footer against the
/// checksum the repository recorded — the check Elasticsearch runs on restore.
pub(crate) async fn deep_check(store: &dyn Store, f: &DataFile) -> (u64, Result<()>) {
    let what = &f.blobs[0].0;
    let mut hasher = crc32fast::Hasher::new();
    let mut tail: Vec<u8> = Vec::with_capacity(16);
    let mut read = 0u64;
    let total: u64 = f.blobs.iter().map(|(_, s)| s).sum();
    if total != f.length {
        return (
            0,
            Err(Error::checksum(format!(
                "{what}: parts hold {total} bytes, the file has {}",
                f.length
            ))),
        );
    }
    if f.length < 16 {
        return (
            0,
            Err(Error::checksum(format!(
                "{what}: {} bytes is too short for a Lucene file",
                f.length
            ))),
        );
    }
    let mut pos = 0u64; // position within the logical file
    for (key, size) in &f.blobs {
        let mut off = 0;
        while off < *size {
            let end = (off + DEEP_CHUNK).min(*size);
            let chunk = match store.get_range(key, off..end, None).await {
                Ok(c) => c,
                Err(e) => return (read, Err(e)),
            };
            read += chunk.len() as u64;
            // The CRC covers everything but the last 8 bytes of the whole file.
            let crc_end = f.length - 8;
            let c_start = pos;
            let c_end = pos + chunk.len() as u64;
            if c_start < crc_end {
                let upto = (crc_end.min(c_end) - c_start) as usize;
                hasher.update(&chunk[..upto]);
            }
            if c_end > f.length - 16 {
                let from = (f.length - 16).saturating_sub(c_start) as usize;
                tail.extend_from_slice(&chunk[from..]);
            }
            pos = c_end;
            off = end;
        }
    }
    let computed = hasher.finalize() as u64;
    if tail.len() != 16
        || u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]) != blob::FOOTER_MAGIC
    {
        return (
            read,
            Err(Error::checksum(format!("{what}: no Lucene footer"))),
        );
    }
    let stored = u64::from_be_bytes(tail[8..16].try_into().unwrap_or([0; 8]));
    if stored != computed {
        return (
            read,
            Err(Error::checksum(format!(
                "{what}: footer CRC32 {stored:08x}, computed {computed:08x}"
            ))),
        );
    }
    if let Some(want) = &f.checksum {
        if blob::base36(computed) != *want {
            return (
                read,
                Err(Error::checksum(format!(
                    "{what}: checksum {} differs from the recorded {want}",
                    blob::base36(computed)
                ))),
            );
        }
    }
    (read, Ok(()))
}

/// Renders `repo ls` as a table.
pub fn table(l: &Listing) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "UUID".into(),
        "STATE".into(),
        "INDICES".into(),
        "START (UTC)".into(),
        "END (UTC)".into(),
        "SIZE".into(),
    ]];
    let fmt_t = |ms: Option<i64>| {
        ms.and_then(|m| time::OffsetDateTime::from_unix_timestamp(m / 1000).ok())
            .map(|t| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    for s in &l.snapshots {
        rows.push([
            s.name.clone(),
            s.uuid.clone(),
            s.state.clone(),
            s.indices.join(","),
            fmt_t(s.start_time_ms),
            fmt_t(s.end_time_ms),
            s.total_size_bytes
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Keys whose problems count per kind, for summaries.
pub fn problem_summary(r: &VerifyReport) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in &r.problems {
        *m.entry(p.problem.split(':').next().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    m
}

/// `repo diff`: how two repositories differ.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DiffReport {
    /// Source generation.
    pub source_generation: u64,
    /// Destination generation (None: no repository there).
    pub destination_generation: Option<u64>,
    /// Snapshots (name) only in the source.
    pub only_in_source: Vec<String>,
    /// Snapshots only in the destination.
    pub only_in_destination: Vec<String>,
    /// Blobs the source's snapshots need that the destination lacks or holds with another size.
    pub differing_blobs: Vec<Problem>,
}

/// Compares the repositories at `src` and `dst` (snapshots, and the blobs the source needs).
pub async fn diff(src: &dyn Store, dst: &dyn Store) -> Result<DiffReport> {
    let s = Repository::load(src).await?;
    let d = match Repository::load(dst).await {
        Ok(d) => Some(d),
        Err(e) if e.kind() == ErrorKind::NoRepository => None,
        Err(e) => return Err(e),
    };
    let names = |r: &Repository| {
        r.data
            .snapshots
            .iter()
            .map(|x| (x.name.clone(), x.uuid.clone()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let sn = names(&s);
    let dn = d.as_ref().map(names).unwrap_or_default();
    let all: Vec<_> = s.data.snapshots.iter().collect();
    let (refs, _) = s.references(src, &all).await?;
    let empty = BTreeMap::new();
    let dl = d.as_ref().map(|d| &d.listing).unwrap_or(&empty);
    let mut differing = Vec::new();
    for key in refs.keys() {
        let want = s.listing.get(key);
        match (want, dl.get(key)) {
            (_, None) => differing.push(Problem {
                key: key.clone(),
                problem: "missing at destination".into(),
            }),
            (Some(a), Some(b)) if a != b => differing.push(Problem {
                key: key.clone(),
                problem: format!("size {b} at destination, {a} at source"),
            }),
            _ => {}
        }
    }
    Ok(DiffReport {
        source_generation: s.data.generation,
        destination_generation: d.as_ref().map(|d| d.data.generation),
        only_in_source: sn.difference(&dn).map(|x| x.0.clone()).collect(),
        only_in_destination: dn.difference(&sn).map(|x| x.0.clone()).collect(),
        differing_blobs: differing,
    })
}
