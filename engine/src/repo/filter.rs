//! A repository holding only some of a source's snapshots: what Elasticsearch/OpenSearch
//! would leave behind after deleting every other snapshot, computed from the source's own
//! metadata without touching it.
//!
//! Copying the selected snapshots' blobs is not enough: the destination's root `index-N`
//! and every shard-level `index-<gen>` must also stop naming the other snapshots. A root
//! that lists a snapshot whose blobs were not copied fails `repo verify` and any restore of
//! that snapshot. A shard index that lists a file whose blob was not copied is worse: the
//! next snapshot of that shard into the repository finds the file there by physical name
//! and checksum (or a whole listed snapshot by its `shard_state_id`), reuses it instead of
//! uploading it, and so records a snapshot that cannot be restored, with no error anywhere
//! (`tests/tests/snapshot_filter.rs` shows a real OpenSearch doing exactly that when the
//! shard indexes are left as they were).
//!
//! # The steps, and why each is sound
//! Upstream files checked (elastic/elasticsearch and opensearch-project/OpenSearch, under
//! `server/src/main/java/org/{elasticsearch,opensearch}/`):
//! `repositories/blobstore/BlobStoreRepository.java` (snapshot deletion, `snapshotShard`),
//! `repositories/RepositoryData.java`, `repositories/IndexMetaDataGenerations.java`,
//! `repositories/ShardGenerations.java`,
//! `index/snapshots/blobstore/BlobStoreIndexShardSnapshots.java`,
//! `index/snapshots/blobstore/BlobStoreIndexShardSnapshot.java` (`FileInfo`),
//! `index/snapshots/blobstore/SnapshotFiles.java`,
//! `repositories/blobstore/ChecksumBlobStoreFormat.java`; and Jackson's `SmileParser.java`
//! (FasterXML/jackson-dataformats-binary) for the SMILE header.
//!
//! 1. **Root `index-N`.** `RepositoryData.removeSnapshots` drops the snapshots, drops
//!    every other snapshot from `indices.<name>.snapshots`, drops an index left with no
//!    snapshot, prunes its shard generations (`ShardGenerations.Builder
//!    .retainIndicesAndPruneDeletes`), and keeps only the `index_metadata_identifiers`
//!    some remaining snapshot's `index_metadata_lookup` uses
//!    (`IndexMetaDataGenerations.withRemovedSnapshots`). We do the same on the JSON
//!    itself: every field we do not change (`min_version`, `uuid`, `cluster_id`, a
//!    snapshot's `version`, `index_version`, times, OpenSearch's `shard_path_type`, fields
//!    of versions we have not seen) passes through byte for byte (`serde_json`'s
//!    `RawValue` inside insertion-ordered maps). Key order matters and is kept:
//!    `RepositoryData.snapshotsFromXContent` resolves `indices.*.snapshots` against the
//!    `snapshots` it has already read, so `snapshots` must stay first. (serde_json's
//!    `preserve_order` feature would also keep the order, but it is workspace-wide through
//!    feature unification and changes every `serde_json::Map` in every crate, `remove`
//!    included; the ordered maps here are local.) `min_version` stays as written: it
//!    records the oldest format the remaining snapshots need, and removing snapshots never
//!    lowers what the others need. Index entries in either form (uuid strings, or the
//!    `{name, uuid}` objects of repositories older than 5.4.1) are filtered alike.
//! 2. **Shard `index-<gen>`** (`BlobStoreIndexShardSnapshots`, codec `snapshots`):
//!    `{"files": [FileInfo...], "snapshots": {"<snapshot name>": {"files": ["__x", ...],
//!    "shard_state_id": ...}}}`, keyed by snapshot *name* (unique in a repository).
//!    Deleting snapshots, Elasticsearch reads the shard's current generation, keeps the
//!    surviving snapshots' entries and exactly the files they list
//!    (`BlobStoreIndexShardSnapshots.withRetainedSnapshots`), writes that under a new
//!    UUID generation and points the root's `shard_generations` at it
//!    (`ShardSnapshotsDeletion.deleteFromShardSnapshotMeta`); a shard left with no
//!    snapshot gets `DELETED_SHARD_GEN`, pruned to `null` in the root. We do the same,
//!    keeping every retained entry and every retained `FileInfo` exactly as decoded. A
//!    shard whose index already lists only selected snapshots keeps its generation and is
//!    copied as it is; a shard left with none is not copied. The new generation is
//!    deterministic (see [`new_generation`]), so a rerun writes the same blobs under the
//!    same names; shard generations are never overwritten with other content.
//! 3. **Encoding.** Bodies are decoded into a generic SMILE value that keeps binary as
//!    binary and every number's SMILE type ([`blob::SmileValue`]), filtered, encoded again
//!    ([`blob::encode_smile`]) and wrapped in the source envelope's codec and version
//!    ([`blob::write_envelope`]), uncompressed: `ChecksumBlobStoreFormat` checks codec and
//!    version and detects compression from the body, not from the repository's setting.
//!    The tests prove decode → encode → decode is the identity on every shard index of the
//!    committed OpenSearch 2.19.6 / Elasticsearch 7.17.29 / 8.19.21 repositories.
//! 4. **Numeric generations** (before 7.6: no `shard_generations`, or a null or all-digit
//!    entry, which `ShardGenerations.fixShardGeneration` also reads as numeric): the shard
//!    index is the largest `index-N` its folder lists, so a filtered one would need a
//!    numeric name of its own, either N again (overwriting a blob another copy may hold
//!    with other content) or N+1 (the name the source's next snapshot takes). A shard
//!    that needs no rewrite is copied as it is; one that does is refused
//!    ([`NUMERIC_GENERATIONS`]).
//!
//! [`filter`] returns the new root, the new shard indexes, and every source blob the
//! filtered repository needs ([`Filtered::refs`]); every file every kept shard index lists,
//! old or new, is among them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::blob::{self, SmileValue};
use super::model::{BlobKind, FileInfo, Referenced, Repository, SnapshotEntry};
use crate::error::{Error, Result};
use crate::store::Store;

/// Why a selection cannot be made from a repository with numeric shard generations.
pub const NUMERIC_GENERATIONS: &str = "--snapshot needs a repository written by Elasticsearch 7.6+ or OpenSearch (UUID shard generations); copy the whole repository instead";

/// Shard indexes read at once.
const CONCURRENT_READS: usize = 16;

/// A repository holding exactly the selected snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The source generation N the filter was computed from; [`Filtered::root`] is the
    /// filtered repository's `index-N`.
    pub generation: u64,
    /// The root `index-N` JSON holding only the selected snapshots.
    pub root: Vec<u8>,
    /// New shard-level index blobs: (key relative to the repository root, envelope bytes),
    /// in key order.
    pub shard_indexes: Vec<(String, Vec<u8>)>,
    /// Every blob of the source the filtered repository needs copied (data, shard `snap-*`
    /// and the shard `index-<gen>` kept as they are, index `meta-*`, root
    /// `meta-*`/`snap-*`), as [`Repository::references`] classifies them; without the root
    /// `index-N` and without the shard indexes that [`Filtered::shard_indexes`] replaces.
    pub refs: BTreeMap<String, Referenced>,
}

/// Bad input: a selection this repository cannot satisfy.
fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_input(message)
}

/// A source blob that does not say what the repository format says it must.
fn damaged(key: &str, problem: impl Display) -> Error {
    Error::repository(format!("{key}: {problem}")).at_key(key)
}

/// Computes the repository that holds exactly `selected` of `repo` (read from `store`).
/// Reads the root `index-N` and the shard indexes of every index a selected snapshot
/// contains; writes nothing.
pub async fn filter(
    store: &dyn Store,
    repo: &Repository,
    selected: &[&SnapshotEntry],
) -> Result<Filtered> {
    let known: BTreeSet<&str> = repo
        .data
        .snapshots
        .iter()
        .map(|s| s.uuid.as_str())
        .collect();
    if let Some(s) = selected.iter().find(|s| !known.contains(s.uuid.as_str())) {
        return Err(invalid(format!(
            "snapshot {:?} ({}) is not in generation {} of the repository",
            s.name, s.uuid, repo.data.generation
        )));
    }
    let uuids: BTreeSet<&str> = selected.iter().map(|s| s.uuid.as_str()).collect();
    let names: BTreeSet<&str> = selected.iter().map(|s| s.name.as_str()).collect();
    let generation = repo.data.generation;
    let root_key = format!("index-{generation}");
    let root_size = *repo.listing.get(&root_key).ok_or_else(|| {
        damaged(
            &root_key,
            "the current root generation is not in the listing",
        )
    })?;
    let root_json = store.get_range(&root_key, 0..root_size, None).await?;

    // The shard indexes of every index that keeps a snapshot.
    struct Shard<'a> {
        index: &'a str,
        position: usize,
        key: String,
        size: u64,
        /// The UUID generation the root names; None: numeric (found by listing).
        uuid_generation: Option<&'a str>,
    }
    let mut shards = Vec::new();
    for ix in &repo.data.indices {
        if !ix.snapshots.iter().any(|u| uuids.contains(u.as_str())) {
            continue; // dropped with all its shards
        }
        let dirs = repo.shard_dirs(&ix.id);
        let count = dirs
            .last()
            .map_or(0, |&d| d as usize + 1)
            .max(ix.shard_generations.len());
        for position in 0..count {
            // Shard numbers are folder names parsed as u32, and the root's arrays are far
            // shorter than u32::MAX: the conversion cannot fail.
            let Ok(shard) = u32::try_from(position) else {
                break;
            };
            let Some(key) = repo.shard_index_blob(ix, shard) else {
                continue; // nothing was ever snapshotted into this shard
            };
            let size = *repo.listing.get(&key).ok_or_else(|| {
                damaged(
                    &key,
                    "the root index-N names this shard index, but it is missing (see `snapferry repo verify`)",
                )
            })?;
            let uuid_generation = ix
                .shard_generations
                .get(position)
                .and_then(Option::as_deref)
                .filter(|g| !is_numeric(g));
            shards.push(Shard {
                index: &ix.name,
                position,
                key,
                size,
                uuid_generation,
            });
        }
    }
    // Owned (key, size) pairs, not `Shard`s: a future that borrows through a closure
    // argument is not `Send` for every lifetime, which a spawned sync needs.
    let wanted: Vec<(String, u64)> = shards.iter().map(|s| (s.key.clone(), s.size)).collect();
    let envelopes: Vec<blob::Envelope> = futures::stream::iter(wanted)
        .map(|(key, size)| async move {
            let bytes = store.get_range(&key, 0..size, None).await?;
            blob::parse_envelope(&key, &bytes)
        })
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let read = shards.into_iter().zip(envelopes);

    let sorted_uuids: Vec<&str> = uuids.iter().copied().collect();
    let mut generations: HashMap<String, BTreeMap<usize, Option<String>>> = HashMap::new();
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    let mut listed: Vec<(String, FileInfo)> = Vec::new();
    let mut shard_indexes = Vec::new();
    for (shard, env) in read {
        let dir = shard
            .key
            .rsplit_once('/')
            .map_or("", |(d, _)| d)
            .to_string();
        let value: SmileValue = blob::decode(&shard.key, &env)?;
        match retain_snapshots(&shard.key, value, &names)? {
            Retained::Unchanged(files) => {
                listed.extend(files.into_iter().map(|f| (dir.clone(), f)));
            }
            Retained::Empty => {
                replaced.insert(shard.key);
                if shard.uuid_generation.is_some() {
                    generations
                        .entry(shard.index.to_string())
                        .or_default()
                        .insert(shard.position, None);
                }
            }
            Retained::Rewritten(value, files) => {
                let Some(old) = shard.uuid_generation else {
                    return Err(invalid(NUMERIC_GENERATIONS));
                };
                let gen = new_generation(old, &sorted_uuids);
                let key = format!("{dir}/index-{gen}");
                let smile = blob::encode_smile(&key, &value)?;
                shard_indexes.push((key, blob::write_envelope(&env.codec, env.version, &smile)));
                replaced.insert(shard.key);
                generations
                    .entry(shard.index.to_string())
                    .or_default()
                    .insert(shard.position, Some(gen));
                listed.extend(files.into_iter().map(|f| (dir.clone(), f)));
            }
        }
    }
    shard_indexes.sort();

    let (mut refs, _) = repo.references(store, selected).await?;
    refs.remove(&root_key);
    for key in &replaced {
        refs.remove(key);
    }
    // Every file a kept shard index lists must be copied, whether or not a selected
    // snapshot's snap-*.dat names it: a later snapshot may reuse any of them.
    for (dir, f) in listed {
        for (name, size) in f.blobs() {
            refs.entry(format!("{dir}/{name}")).or_insert(Referenced {
                kind: BlobKind::Data,
                size: Some(size),
            });
        }
    }
    let root = rewrite_root(&root_key, &root_json, &uuids, &generations)?;
    Ok(Filtered {
        generation,
        root,
        shard_indexes,
        refs,
    })
}

/// Whether a shard generation is a pre-7.6 numeric one (Elasticsearch's
/// `ShardGenerations.fixShardGeneration` reads every all-digit generation so).
fn is_numeric(generation: &str) -> bool {
    !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit())
}

/// The generation of a rewritten shard index: URL-safe base64 without padding (the form
/// and length of Elasticsearch's `UUIDs.randomBase64UUID`) of the first 16 bytes of
/// SHA-256 over the old generation and the sorted selected snapshot UUIDs, NUL-separated.
/// The old generation names immutable content and the selection decides what is kept, so
/// one name always means one content: a rerun rewrites nothing differently, and a
/// different selection gets a different name.
pub fn new_generation(old: &str, sorted_uuids: &[&str]) -> String {
    let mut salt: u32 = 0;
    loop {
        let mut h = Sha256::new();
        h.update(old.as_bytes());
        for u in sorted_uuids {
            h.update([0]);
            h.update(u.as_bytes());
        }
        if salt > 0 {
            h.update([0]);
            h.update(salt.to_be_bytes());
        }
        let gen = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..16]);
        // An all-digit name would be read as a numeric generation (probability 10^22/64^22).
        if !is_numeric(&gen) {
            return gen;
        }
        salt += 1;
    }
}

/// What is left of a shard index once only the selected snapshots remain.
#[derive(Debug, PartialEq)]
enum Retained {
    /// It lists only selected snapshots: keep it; these are the files it describes.
    Unchanged(Vec<FileInfo>),
    /// It lists no selected snapshot: the shard has nothing in the filtered repository.
    Empty,
    /// The filtered document, and the files it describes.
    Rewritten(SmileValue, Vec<FileInfo>),
}

/// `BlobStoreIndexShardSnapshots.withRetainedSnapshots` on the decoded document: the
/// retained snapshots' entries (untouched, in order) and the `files` entries they name
/// (untouched, in order); any other top-level field is kept.
fn retain_snapshots(what: &str, value: SmileValue, keep: &BTreeSet<&str>) -> Result<Retained> {
    let SmileValue::Object(mut top) = value else {
        return Err(damaged(what, "its body is not an object"));
    };
    let mut used: BTreeSet<String> = BTreeSet::new();
    let changed = match top.get_mut("snapshots") {
        None => false,
        Some(SmileValue::Object(snapshots)) => {
            let before = snapshots.len();
            snapshots.retain(|name, _| keep.contains(name.as_str()));
            for (name, entry) in snapshots.iter() {
                let names = match entry {
                    SmileValue::Object(e) => match e.get("files") {
                        Some(SmileValue::Array(a)) => a,
                        None => continue,
                        Some(_) => {
                            return Err(damaged(what, format!("{name}.files is not a list")))
                        }
                    },
                    _ => return Err(damaged(what, format!("snapshot {name} is not an object"))),
                };
                for n in names {
                    match n {
                        SmileValue::String(n) => {
                            used.insert(n.clone());
                        }
                        _ => return Err(damaged(what, format!("{name}.files holds a non-string"))),
                    }
                }
            }
            if snapshots.is_empty() && before > 0 {
                return Ok(Retained::Empty);
            }
            snapshots.len() != before
        }
        Some(_) => return Err(damaged(what, "`snapshots` is not an object")),
    };
    let files = match top.get_mut("files") {
        None => None,
        Some(SmileValue::Array(files)) => Some(files),
        Some(_) => return Err(damaged(what, "`files` is not a list")),
    };
    let mut infos = Vec::new();
    if let Some(files) = files {
        if changed {
            files.retain(|f| file_name(f).is_some_and(|n| used.contains(n)));
        }
        for f in files.iter() {
            infos.push(file_info(what, f)?);
        }
    }
    if !changed {
        return Ok(Retained::Unchanged(infos));
    }
    // Never write a shard index its readers would fail on: every file a snapshot lists
    // is described (Elasticsearch asserts this when it reads one).
    let described: BTreeSet<&str> = infos.iter().map(|f| f.name.as_str()).collect();
    if let Some(missing) = used.iter().find(|n| !described.contains(n.as_str())) {
        return Err(damaged(
            what,
            format!("a snapshot lists file {missing}, which `files` does not describe"),
        ));
    }
    Ok(Retained::Rewritten(SmileValue::Object(top), infos))
}

fn file_name(f: &SmileValue) -> Option<&str> {
    match f {
        SmileValue::Object(m) => match m.get("name") {
            Some(SmileValue::String(n)) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

/// The parts of a `FileInfo` that say which blobs hold the file.
fn file_info(what: &str, f: &SmileValue) -> Result<FileInfo> {
    let SmileValue::Object(m) = f else {
        return Err(damaged(what, "a `files` entry is not an object"));
    };
    let int = |k: &str| match m.get(k) {
        Some(SmileValue::Integer(i)) => u64::try_from(*i).ok(),
        Some(SmileValue::Long(l)) => u64::try_from(*l).ok(),
        _ => None,
    };
    let string = |k: &str| match m.get(k) {
        Some(SmileValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let name = string("name").ok_or_else(|| damaged(what, "a `files` entry has no name"))?;
    let length =
        int("length").ok_or_else(|| damaged(what, format!("file {name} has no valid length")))?;
    Ok(FileInfo {
        physical_name: string("physical_name").unwrap_or_default(),
        length,
        checksum: string("checksum"),
        part_size: int("part_size"),
        name,
    })
}

/// A JSON object whose values are kept as written, in order.
type RawObject = IndexMap<String, Box<RawValue>>;

/// The fields of a root `snapshots` entry the filter reads; the entry itself is copied as
/// written.
#[derive(Deserialize)]
struct SnapshotFields {
    uuid: Option<String>,
    #[serde(default)]
    index_metadata_lookup: IndexMap<String, serde_json::Value>,
}

/// An `indices.<name>.snapshots` element: a uuid (5.4.1+) or `{name, uuid}` (older).
#[derive(Deserialize)]
#[serde(untagged)]
enum SnapshotRef {
    Uuid(String),
    Named { uuid: String },
}

impl SnapshotRef {
    fn uuid(raw: &RawValue) -> Option<String> {
        match serde_json::from_str(raw.get()).ok()? {
            SnapshotRef::Uuid(u) | SnapshotRef::Named { uuid: u } => Some(u),
        }
    }
}

/// The root `index-N` keeping only the snapshots in `keep` (step 1 of the module docs);
/// `generations` replaces shard generations (index name → shard → new generation, None
/// for a shard left with no snapshot).
fn rewrite_root(
    what: &str,
    json: &[u8],
    keep: &BTreeSet<&str>,
    generations: &HashMap<String, BTreeMap<usize, Option<String>>>,
) -> Result<Vec<u8>> {
    let bad = |e: serde_json::Error| damaged(what, format!("not valid repository data: {e}"));
    let raw = |v: &dyn ToRaw| v.to_raw().map_err(bad);
    let mut top: RawObject = serde_json::from_slice(json).map_err(bad)?;
    let mut identifiers: BTreeSet<String> = BTreeSet::new();
    if let Some(field) = top.get_mut("snapshots") {
        let all: Vec<Box<RawValue>> = serde_json::from_str(field.get()).map_err(bad)?;
        let mut kept = Vec::new();
        for entry in all {
            let fields: SnapshotFields = serde_json::from_str(entry.get()).map_err(bad)?;
            if fields.uuid.as_deref().is_some_and(|u| keep.contains(u)) {
                identifiers.extend(
                    fields
                        .index_metadata_lookup
                        .into_values()
                        .filter_map(|v| v.as_str().map(str::to_string)),
                );
                kept.push(entry);
            }
        }
        *field = raw(&kept)?;
    }
    if let Some(field) = top.get_mut("indices") {
        let all: IndexMap<String, RawObject> = serde_json::from_str(field.get()).map_err(bad)?;
        let mut kept: IndexMap<String, RawObject> = IndexMap::new();
        for (name, mut index) in all {
            let Some(snapshots) = index.get_mut("snapshots") else {
                continue; // no snapshot, so none selected
            };
            let list: Vec<Box<RawValue>> = serde_json::from_str(snapshots.get()).map_err(bad)?;
            let list: Vec<Box<RawValue>> = list
                .into_iter()
                .filter(|e| SnapshotRef::uuid(e).is_some_and(|u| keep.contains(u.as_str())))
                .collect();
            if list.is_empty() {
                continue;
            }
            *snapshots = raw(&list)?;
            if let Some(updates) = generations.get(&name) {
                let field = index.get_mut("shard_generations").ok_or_else(|| {
                    damaged(what, format!("index {name} has no shard_generations"))
                })?;
                let mut gens: Vec<serde_json::Value> =
                    serde_json::from_str(field.get()).map_err(bad)?;
                for (&shard, gen) in updates {
                    if let Some(slot) = gens.get_mut(shard) {
                        *slot = gen
                            .clone()
                            .map_or(serde_json::Value::Null, serde_json::Value::String);
                    }
                }
                *field = raw(&gens)?;
            }
            kept.insert(name, index);
        }
        *field = raw(&kept)?;
    }
    if let Some(field) = top.get_mut("index_metadata_identifiers") {
        let all: RawObject = serde_json::from_str(field.get()).map_err(bad)?;
        let kept: RawObject = all
            .into_iter()
            .filter(|(ident, _)| identifiers.contains(ident))
            .collect();
        *field = raw(&kept)?;
    }
    serde_json::to_vec(&top).map_err(bad)
}

/// `serde_json::value::to_raw_value` as an object-safe call, so that `rewrite_root` maps
/// its errors in one closure.
trait ToRaw {
    fn to_raw(&self) -> serde_json::Result<Box<RawValue>>;
}

impl<T: serde::Serialize> ToRaw for T {
    fn to_raw(&self) -> serde_json::Result<Box<RawValue>> {
        serde_json::value::to_raw_value(self)
    }
}

#[cfg(test)]
mod tests;
