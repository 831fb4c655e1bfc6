//! `repo verify` shard by shard: the same checks as [`super::verify::verify_loaded`],
//! without a listing of the whole repository or a map of every blob it references.
//!
//! The root comes from `index.latest` (a lagging or missing one falls back to the listing
//! verifier, which reports it). Root and index metadata are read one by one. Then each
//! shard directory (or index directory, for numeric generations) of the selected
//! snapshots' indices is listed by prefix and checked on its own: its shard `snap-*.dat`
//! and shard `index-*` envelopes, every file they name present with its length, and with
//! `--deep` every data file of the selected snapshots streamed against its Lucene
//! checksum. Shards are checked `concurrency` at a time, so memory is a few shards' worth.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};

use super::blob;
use super::model::{DataFile, FileInfo, RepositoryData, ShardSnapshot, SnapshotEntry};
use super::verify::{deep_check, Problem, VerifyOptions, VerifyReport};
use crate::error::{Error, Result};
use crate::pipeline::snapshot::planner::is_numeric;
use crate::store::{ObjectMeta, Store};

/// The shard-level `index-<gen>` as verify reads it.
#[derive(serde::Deserialize)]
struct ShardIndex {
    #[serde(default)]
    files: Vec<FileInfo>,
    #[serde(default)]
    snapshots: HashMap<String, serde::de::IgnoredAny>,
}

/// What one directory's check found.
#[derive(Default)]
struct Found {
    problems: Vec<Problem>,
    blobs: usize,
    metadata: usize,
    data_files: usize,
    bytes: u64,
}

impl Found {
    fn problem(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            problem: problem.into(),
        });
    }
}

/// One directory to check: its prefix, the shard generation the root names (`None`:
/// numeric), and the selected snapshots of its index.
struct Dir {
    prefix: String,
    generation: Option<String>,
    snapshots: Vec<SnapshotEntry>,
}

/// Verifies a repository whose root was read through `index.latest`.
pub async fn verify(
    store: &dyn Store,
    data: &RepositoryData,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let conc = opts.concurrency.max(1);
    let selected = data.select(&opts.snapshots)?;
    let mut report = VerifyReport {
        generation: data.generation,
        snapshots_checked: selected.len(),
        ..Default::default()
    };
    // Root and index metadata of the selected snapshots.
    let mut meta: Vec<String> = Vec::new();
    for s in &selected {
        meta.push(format!("snap-{}.dat", s.uuid));
        meta.push(format!("meta-{}.dat", s.uuid));
    }
    let mut dirs = Vec::new();
    for ix in &data.indices {
        let in_sel: Vec<SnapshotEntry> = selected
            .iter()
            .filter(|s| ix.snapshots.contains(&s.uuid))
            .map(|s| (*s).clone())
            .collect();
        if in_sel.is_empty() {
            continue;
        }
        // The selected snapshots' metadata of this index.
        for s in &in_sel {
            meta.push(data.index_meta_key(s, &ix.id));
        }
        let numeric = ix.shard_generations.is_empty()
            || ix.shard_generations.iter().flatten().any(|g| is_numeric(g));
        if numeric {
            dirs.push(Dir {
                prefix: format!("indices/{}/", ix.id),
                generation: None,
                snapshots: in_sel,
            });
            continue;
        }
        for (position, g) in ix.shard_generations.iter().enumerate() {
            if let Some(g) = g {
                dirs.push(Dir {
                    prefix: format!("indices/{}/{position}/", ix.id),
                    generation: Some(g.clone()),
                    snapshots: in_sel.clone(),
                });
            }
        }
    }
    let metas: Vec<Found> = futures::stream::iter(meta)
        .map(|key| async move {
            let mut f = Found {
                blobs: 1,
                ..Default::default()
            };
            match crate::store::read_whole(store, &key).await? {
                None => f.problem(&key, "missing"),
                Some((_, b)) => {
                    f.metadata += 1;
                    f.bytes += b.len() as u64;
                    if let Err(e) = blob::parse_envelope(&key, &b) {
                        f.problem(&key, e.to_string());
                    }
                }
            }
            Ok::<_, Error>(f)
        })
        .buffer_unordered(conc)
        .try_collect()
        .await?;
    let deep = opts.deep;
    let shards: Vec<Found> = futures::stream::iter(dirs)
        .map(|d| async move { check_dir(store, d, deep).await })
        .buffer_unordered(conc)
        .try_collect()
        .await?;
    for f in metas.into_iter().chain(shards) {
        report.blobs_checked += f.blobs;
        report.metadata_checked += f.metadata;
        report.data_files_checked += f.data_files;
        report.bytes_read += f.bytes;
        report.problems.extend(f.problems);
    }
    report.problems.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(report)
}

/// Reads and checks one metadata blob of a listed directory; `None` when it is missing or
/// damaged (reported).
async fn envelope(
    store: &dyn Store,
    listing: &BTreeMap<String, u64>,
    key: &str,
    f: &mut Found,
) -> Result<Option<blob::Envelope>> {
    f.blobs += 1;
    let Some(&size) = listing.get(key) else {
        f.problem(key, "missing");
        return Ok(None);
    };
    let b = store.get_range(key, 0..size, None).await?;
    f.metadata += 1;
    f.bytes += size;
    match blob::parse_envelope(key, &b) {
        Ok(env) => Ok(Some(env)),
        Err(e) => {
            f.problem(key, e.to_string());
            Ok(None)
        }
    }
}

async fn check_dir(store: &dyn Store, d: Dir, deep: bool) -> Result<Found> {
    let mut f = Found::default();
    let listed: Vec<ObjectMeta> = store
        .list_prefix(&d.prefix, None)
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok::<_, Error>)))
        .try_flatten()
        .try_collect()
        .await?;
    let listing: BTreeMap<String, u64> = listed.into_iter().map(|m| (m.key, m.size)).collect();
    // Shard directories (relative "" for a shard prefix, "<n>/" under an index prefix).
    let shard_dirs: BTreeSet<String> = match &d.generation {
        Some(_) => BTreeSet::from([d.prefix.clone()]),
        None => listing
            .keys()
            .filter_map(|k| {
                let rest = &k[d.prefix.len()..];
                let (dir, _) = rest.split_once('/')?;
                Some(format!("{}{dir}/", d.prefix))
            })
            .collect(),
    };
    // Files the selected snapshots need (from their shard snap-*.dat), and the files each
    // shard index lists (a later snapshot reuses them by name).
    let mut needed: BTreeMap<String, u64> = BTreeMap::new();
    let mut data_files: BTreeMap<String, DataFile> = BTreeMap::new();
    for dir in &shard_dirs {
        // The shard index: the generation the root names, or the largest numeric one.
        let index_key = match &d.generation {
            Some(g) => Some(format!("{dir}index-{g}")),
            None => listing
                .keys()
                .filter_map(|k| k.strip_prefix(dir.as_str()))
                .filter_map(|n| n.strip_prefix("index-")?.parse::<u64>().ok())
                .max()
                .map(|n| format!("{dir}index-{n}")),
        };
        let mut listed_by: Vec<(String, String, u64)> = Vec::new();
        let mut in_index: HashMap<String, ()> = HashMap::new();
        if let Some(key) = &index_key {
            if let Some(env) = envelope(store, &listing, key, &mut f).await? {
                match blob::decode::<ShardIndex>(key, &env) {
                    Err(e) => f.problem(key, e.to_string()),
                    Ok(idx) => {
                        in_index = idx.snapshots.keys().map(|k| (k.clone(), ())).collect();
                        for file in idx.files {
                            for (name, size) in file.blobs() {
                                listed_by.push((format!("{dir}{name}"), key.clone(), size));
                            }
                        }
                    }
                }
            }
        }
        for s in &d.snapshots {
            // Every selected snapshot that holds this index has this shard, unless it is
            // partial and the shard index says this shard is not in it.
            if s.state == Some(3) && !in_index.contains_key(&s.name) {
                continue;
            }
            let key = format!("{dir}snap-{}.dat", s.uuid);
            let Some(env) = envelope(store, &listing, &key, &mut f).await? else {
                continue;
            };
            match blob::decode::<ShardSnapshot>(&key, &env) {
                Err(e) => f.problem(&key, e.to_string()),
                Ok(snap) => {
                    for file in snap.files {
                        let blobs: Vec<(String, u64)> = file
                            .blobs()
                            .into_iter()
                            .map(|(n, sz)| (format!("{dir}{n}"), sz))
                            .collect();
                        let Some(first) = blobs.first().map(|b| b.0.clone()) else {
                            continue;
                        };
                        for (k, sz) in &blobs {
                            needed.insert(k.clone(), *sz);
                        }
                        data_files.entry(first).or_insert(DataFile {
                            blobs,
                            length: file.length,
                            checksum: file.checksum,
                        });
                    }
                }
            }
        }
        for (blob_key, by, want) in listed_by {
            if needed.contains_key(&blob_key) {
                continue; // checked below with the snapshots' needs
            }
            let problem = match listing.get(&blob_key) {
                None => format!("listed by {by}, missing"),
                Some(&got) if got != want => {
                    format!("listed by {by} with {want} bytes, holds {got}")
                }
                Some(_) => continue,
            };
            f.problem(blob_key, problem);
        }
    }
    for (key, want) in &needed {
        f.blobs += 1;
        match listing.get(key) {
            None => f.problem(key, "missing"),
            Some(&got) if got != *want => f.problem(key, format!("size {got}, expected {want}")),
            Some(_) => {}
        }
    }
    if deep {
        for file in data_files.values() {
            if !file.blobs.iter().all(|(k, s)| listing.get(k) == Some(s)) {
                continue; // reported above
            }
            let (read, res) = deep_check(store, file).await;
            f.data_files += 1;
            f.bytes += read;
            if let Err(e) = res {
                f.problem(file.blobs[0].0.clone(), e.to_string());
            }
        }
    }
    Ok(f)
}
