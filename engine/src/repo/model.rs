//! The repository model: which generation is current, which snapshots it holds, and every
//! blob a snapshot needs — read from the repository's own metadata.
//!
//! Layouts handled (Elasticsearch 5.x–8.x, OpenSearch 1.x–2.x): root `index-N` as plain
//! JSON; snapshot entries as uuid strings (5.4.1+) or objects (older); numeric shard
//! generations (before 7.6, found by listing) or UUID ones from `shard_generations`;
//! index metadata per snapshot (`indices/<id>/meta-<snapshot uuid>.dat`) or deduplicated
//! through `index_metadata_lookup` / `index_metadata_identifiers` (7.9+). Refused with a
//! clear message: OpenSearch shallow snapshots (`shallow-snap-*`), hashed shard paths
//! (`snapshot_shard_paths/`), zstd-compressed metadata.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;

use super::blob;
use crate::error::{Error, Result};
use crate::store::Store;

/// Snapshot states as RepositoryData stores them (the codes 0..=4), named as
/// Elasticsearch names them in `repo verify`'s report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::FromRepr, strum::IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum SnapshotState {
    /// 0: still being written.
    InProgress = 0,
    /// 1: complete.
    Success = 1,
    /// 2: failed; its blobs may be partial.
    Failed = 2,
    /// 3: some shards failed.
    Partial = 3,
    /// 4: written by a version that cannot read it back.
    Incompatible = 4,
    /// No code recorded, or one this table does not know.
    Unknown = 255,
}

/// The name of a state code; `UNKNOWN` for none or an unknown one.
pub fn state_name(code: Option<u64>) -> &'static str {
    code.and_then(|c| u8::try_from(c).ok())
        .filter(|&c| c <= 4)
        .and_then(SnapshotState::from_repr)
        .unwrap_or(SnapshotState::Unknown)
        .into()
}

/// One snapshot in the root `index-N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Snapshot name, as the cluster lists it.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// State code (see [`state_name`]), when recorded.
    pub state: Option<u64>,
    /// Version that wrote it, when recorded.
    pub version: Option<String>,
    /// Start time (ms), when recorded.
    pub start_ms: Option<i64>,
    /// End time (ms), when recorded.
    pub end_ms: Option<i64>,
    /// index id -> metadata identifier (7.9+).
    pub index_metadata_lookup: HashMap<String, String>,
}

/// One index in the root `index-N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Index name.
    pub name: String,
    /// The repository's id for the index (its folder under `indices/`).
    pub id: String,
    /// UUIDs of the snapshots that contain it.
    pub snapshots: Vec<String>,
    /// Current shard generation per shard (`None`: find by listing).
    pub shard_generations: Vec<Option<String>>,
}

/// The parsed root `index-N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryData {
    /// The generation N of the root `index-N` this was read from.
    pub generation: u64,
    /// Repository UUID (7.12+).
    pub uuid: Option<String>,
    /// `min_version`, as written.
    pub min_version: Option<String>,
    /// Every snapshot the generation holds, in the file's order.
    pub snapshots: Vec<SnapshotEntry>,
    /// Every index some snapshot holds, with the snapshots that reference it.
    pub indices: Vec<IndexEntry>,
    /// metadata identifier -> `meta-<blob>.dat` id (7.9+).
    pub index_metadata_identifiers: HashMap<String, String>,
}

/// A string or a number (written as either by different versions), or anything else.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    N(serde_json::Number),
    Other(serde::de::IgnoredAny),
}

impl Scalar {
    fn text(self) -> Option<String> {
        match self {
            Scalar::S(s) => Some(s),
            Scalar::N(n) => Some(n.to_string()),
            Scalar::Other(_) => None,
        }
    }
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.and_then(Scalar::text))
}

/// A snapshot in `indices.*.snapshots`: its uuid, or (before 5.4.1) `{name, uuid}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SnapshotRef {
    Uuid(String),
    Object {
        #[serde(default, deserialize_with = "text")]
        uuid: Option<String>,
    },
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct RawSnapshot {
    #[serde(default, deserialize_with = "text")]
    name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    uuid: Option<String>,
    #[serde(default)]
    state: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "text")]
    version: Option<String>,
    #[serde(default)]
    start_time_millis: Option<serde_json::Value>,
    #[serde(default)]
    end_time_millis: Option<serde_json::Value>,
    #[serde(default)]
    index_metadata_lookup: Option<HashMap<String, Scalar>>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default, deserialize_with = "text")]
    id: Option<String>,
    #[serde(default)]
    snapshots: Option<Vec<SnapshotRef>>,
    #[serde(default)]
    shard_generations: Option<Vec<Option<Scalar>>>,
}

/// The root `index-N`, as far as snapferry reads it: typed, so that a root of tens of
/// thousands of indices is read without building a JSON tree of it first.
#[derive(Deserialize)]
struct RawRoot {
    #[serde(default)]
    snapshots: Option<Vec<RawSnapshot>>,
    #[serde(default)]
    indices: Option<BTreeMap<String, RawIndex>>,
    #[serde(default, deserialize_with = "text")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "text")]
    min_version: Option<String>,
    #[serde(default)]
    index_metadata_identifiers: Option<HashMap<String, Scalar>>,
}

fn strings(m: Option<HashMap<String, Scalar>>) -> HashMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            Scalar::S(s) => Some((k, s)),
            _ => None,
        })
        .collect()
}

impl RepositoryData {
    /// A root with nothing in it (what a destination without a repository references).
    pub fn empty() -> Self {
        RepositoryData {
            generation: 0,
            uuid: None,
            min_version: None,
            snapshots: Vec::new(),
            indices: Vec::new(),
            index_metadata_identifiers: HashMap::new(),
        }
    }

    /// The key of the index metadata blob that snapshot `s` recorded for index `index_id`:
    /// `meta-<blob>.dat` through the deduplicating identifiers (7.9+), else the old layout's
    /// `meta-<snapshot uuid>.dat`.
    pub fn index_meta_key(&self, s: &SnapshotEntry, index_id: &str) -> String {
        match s
            .index_metadata_lookup
            .get(index_id)
            .and_then(|ident| self.index_metadata_identifiers.get(ident))
        {
            Some(blob) => format!("indices/{index_id}/meta-{blob}.dat"),
            None => format!("indices/{index_id}/meta-{}.dat", s.uuid),
        }
    }

    /// The snapshots selected by name (all when `names` is empty); unknown names fail.
    pub fn select(&self, names: &[String]) -> Result<Vec<&SnapshotEntry>> {
        if names.is_empty() {
            return Ok(self.snapshots.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.snapshots.iter().find(|s| &s.name == n).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "no snapshot named {n:?} in the repository (it has: {})",
                        self.snapshots
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect()
    }

    /// Parses a root `index-N` blob.
    pub fn parse(generation: u64, json: &[u8]) -> Result<Self> {
        let raw: RawRoot = serde_json::from_slice(json)
            .map_err(|e| Error::repository(format!("index-{generation}: not valid JSON: {e}")))?;
        let snapshots = raw
            .snapshots
            .unwrap_or_default()
            .into_iter()
            .filter_map(|sn| {
                Some(SnapshotEntry {
                    name: sn.name?,
                    uuid: sn.uuid?,
                    state: sn.state.as_ref().and_then(Value::as_u64),
                    version: sn.version,
                    start_ms: sn.start_time_millis.as_ref().and_then(Value::as_i64),
                    end_ms: sn.end_time_millis.as_ref().and_then(Value::as_i64),
                    index_metadata_lookup: strings(sn.index_metadata_lookup),
                })
            })
            .collect();
        let indices = raw
            .indices
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, ix)| {
                Some(IndexEntry {
                    name,
                    id: ix.id?,
                    snapshots: ix
                        .snapshots
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|e| match e {
                            SnapshotRef::Uuid(u) => Some(u),
                            SnapshotRef::Object { uuid } => uuid,
                            SnapshotRef::Other(_) => None,
                        })
                        .collect(),
                    shard_generations: ix
                        .shard_generations
                        .unwrap_or_default()
                        .into_iter()
                        .map(|g| {
                            g.and_then(Scalar::text)
                                .filter(|g| g != "_new" && g != "_deleted")
                        })
                        .collect(),
                })
            })
            .collect();
        Ok(RepositoryData {
            generation,
            uuid: raw.uuid,
            min_version: raw.min_version,
            snapshots,
            indices,
            index_metadata_identifiers: strings(raw.index_metadata_identifiers),
        })
    }
}

/// The root generation files of a listing: the largest numeric `index-N`.
pub fn current_generation<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<u64> {
    keys.into_iter()
        .filter_map(|k| k.strip_prefix("index-"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .max()
}

/// One Lucene file in a shard snapshot.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct FileInfo {
    /// Blob name (`__<uuid>`; `v__` names have no blob).
    pub name: String,
    /// Lucene file name.
    #[serde(default)]
    pub physical_name: String,
    /// Length in bytes.
    pub length: u64,
    /// The Lucene footer CRC32, base 36.
    #[serde(default)]
    pub checksum: Option<String>,
    /// Part size when the blob is split into `name.part0..N`.
    #[serde(default)]
    pub part_size: Option<u64>,
}

impl FileInfo {
    /// The blobs holding this file, with their sizes (none for `v__` files).
    pub fn blobs(&self) -> Vec<(String, u64)> {
        if self.name.starts_with("v__") {
            return Vec::new();
        }
        match self.part_size {
            Some(ps) if ps > 0 && ps < self.length => {
                let n = self.length.div_ceil(ps);
                (0..n)
                    .map(|i| {
                        (
                            format!("{}.part{i}", self.name),
                            ps.min(self.length - i * ps),
                        )
                    })
                    .collect()
            }
            _ => vec![(self.name.clone(), self.length)],
        }
    }
}

/// A shard-level `snap-<uuid>.dat`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShardSnapshot {
    /// Snapshot name.
    pub name: String,
    /// Files of the shard at snapshot time.
    #[serde(default)]
    pub files: Vec<FileInfo>,
}

/// What a blob is, in the order a safe copy lands them.
///
/// The string form is the phase's name in a snapshot-aware sync report (`data`,
/// `shard-snapshots`, ..., `index.latest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::IntoStaticStr)]
pub enum BlobKind {
    /// Lucene file bytes (`__*`, `__*.partN`).
    #[strum(serialize = "data")]
    Data,
    /// Shard-level `snap-*.dat`.
    #[strum(serialize = "shard-snapshots")]
    ShardSnapshot,
    /// Shard-level `index-<gen>`.
    #[strum(serialize = "shard-indexes")]
    ShardIndex,
    /// `indices/<id>/meta-*.dat`.
    #[strum(serialize = "index-metadata")]
    IndexMeta,
    /// Root `meta-*.dat` and `snap-*.dat`.
    #[strum(serialize = "root-metadata")]
    RootMeta,
    /// Root `index-N` (the commit point).
    #[strum(serialize = "root-index")]
    RootIndex,
    /// `index.latest`.
    #[strum(serialize = "index.latest")]
    IndexLatest,
}

/// A blob the repository needs, with what we know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referenced {
    /// What the blob is, which decides the phase it is copied in.
    pub kind: BlobKind,
    /// Exact size, when the metadata records it (data blobs).
    pub size: Option<u64>,
}

/// A data file to check deeply: its blobs in order, total length and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Blob keys with sizes, in order.
    pub blobs: Vec<(String, u64)>,
    /// Total length.
    pub length: u64,
    /// Expected Lucene checksum (base 36).
    pub checksum: Option<String>,
}

/// A repository read from a store.
pub struct Repository {
    /// Every key and size under the root (what the repository holds).
    pub listing: BTreeMap<String, u64>,
    /// The current root generation's data.
    pub data: RepositoryData,
    /// The root `index-N` blob as read (written verbatim by a copy of it).
    pub root_bytes: Vec<u8>,
}

/// Where a classified key sits in the safe copy order.
pub fn classify(key: &str) -> Option<BlobKind> {
    let parts: Vec<&str> = key.split('/').collect();
    let last = *parts.last()?;
    match parts.len() {
        1 if key == "index.latest" => Some(BlobKind::IndexLatest),
        1 if current_generation([key]).is_some() => Some(BlobKind::RootIndex),
        1 if (last.starts_with("snap-") || last.starts_with("meta-")) && last.ends_with(".dat") => {
            Some(BlobKind::RootMeta)
        }
        // 5.x/6.x: the snapshots this version cannot read (rewritten in place).
        1 if key == INCOMPATIBLE_SNAPSHOTS => Some(BlobKind::RootMeta),
        3 if parts[0] == "indices" && last.starts_with("meta-") => Some(BlobKind::IndexMeta),
        4 if parts[0] == "indices" && last.starts_with("snap-") => Some(BlobKind::ShardSnapshot),
        4 if parts[0] == "indices" && last.starts_with("index-") => Some(BlobKind::ShardIndex),
        4 if parts[0] == "indices" && last.starts_with("__") => Some(BlobKind::Data),
        _ => None,
    }
}

/// The root blob where Elasticsearch 5.x/6.x list snapshots written by a version they
/// cannot read; part of the repository, but not named by the root `index-N`.
pub const INCOMPATIBLE_SNAPSHOTS: &str = "incompatible-snapshots";

/// Keys a copier must never copy: repository verification and 5.x temporaries.
pub fn is_transient(key: &str) -> bool {
    let first = key.split('/').next().unwrap_or("");
    first.starts_with("tests-") || first.starts_with("pending-")
}

async fn read_all(store: &dyn Store, key: &str, size: u64) -> Result<Vec<u8>> {
    Ok(store.get_range(key, 0..size, None).await?.to_vec())
}

/// Reads the current root the cheap way, without listing: `index.latest` names N, and
/// `index-N` is read (and `index-{N+1}` must be absent: readers take the largest root
/// they list, so a newer one means `index.latest` lags). `None` when that does not hold
/// (no `index.latest`, or it names a root that is not the newest), so that the caller
/// falls back to [`Repository::load`]. Refuses hashed shard paths (OpenSearch remote
/// store), which a listing of `snapshot_shard_paths/` shows.
///
/// `latest` is what a HEAD of `index.latest` already returned, when the caller made one.
pub async fn read_root(
    store: &dyn Store,
    latest: Option<crate::store::ObjectMeta>,
) -> Result<Option<(RepositoryData, Vec<u8>)>> {
    match read_root_bytes(store, latest).await? {
        Some((n, root)) => Ok(Some((RepositoryData::parse(n, &root)?, root))),
        None => Ok(None),
    }
}

/// As [`read_root`], without parsing the root: its generation and bytes.
pub async fn read_root_bytes(
    store: &dyn Store,
    latest: Option<crate::store::ObjectMeta>,
) -> Result<Option<(u64, Vec<u8>)>> {
    let latest = match latest {
        Some(m) if m.size == 8 => store.get_range("index.latest", 0..8, None).await?,
        Some(_) => return Ok(None),
        None => match crate::store::read_whole(store, "index.latest").await? {
            Some((_, b)) => b,
            None => return Ok(None),
        },
    };
    let Ok(raw) = <[u8; 8]>::try_from(&latest[..]) else {
        tracing::debug!(
            "index.latest is {} bytes, not 8; listing instead",
            latest.len()
        );
        return Ok(None);
    };
    let n = u64::from_be_bytes(raw);
    let Some((_, root)) = crate::store::read_whole(store, &format!("index-{n}")).await? else {
        return Ok(None);
    };
    if store.head(&format!("index-{}", n + 1)).await?.is_some() {
        return Ok(None);
    }
    let mut hashed = store.list_prefix("snapshot_shard_paths/", None);
    if let Some(page) = hashed.next().await {
        if let Some(k) = page?.into_iter().find(|m| m.key != "snapshot_shard_paths/") {
            return Err(Error::invalid_input(format!(
                "{}: the repository uses OpenSearch remote-store features ({}); shallow snapshots and hashed shard paths are not supported",
                store.describe(),
                k.key
            )));
        }
    }
    Ok(Some((n, root.to_vec())))
}

/// The snapshot names of a root `index-N`, read without building the rest of it (a
/// round that finds nothing to do needs no more).
pub fn snapshot_names(generation: u64, json: &[u8]) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Names {
        #[serde(default)]
        snapshots: Vec<Named>,
    }
    #[derive(Deserialize)]
    struct Named {
        #[serde(default, deserialize_with = "text")]
        name: Option<String>,
    }
    let n: Names = serde_json::from_slice(json)
        .map_err(|e| Error::repository(format!("index-{generation}: not valid JSON: {e}")))?;
    Ok(n.snapshots.into_iter().filter_map(|s| s.name).collect())
}

impl Repository {
    /// Lists the store and reads the current generation. Fails with a clear message when
    /// the store holds no repository or one of a layout this version does not support.
    pub async fn load(store: &dyn Store) -> Result<Self> {
        let mut listing = BTreeMap::new();
        let mut pages = store.list(None);
        while let Some(page) = pages.next().await {
            for m in page? {
                if !crate::store::is_reserved(&m.key) {
                    listing.insert(m.key, m.size);
                }
            }
        }
        Self::from_listing(store, listing).await
    }

    /// As [`Repository::load`], from a listing already made.
    pub async fn from_listing(store: &dyn Store, listing: BTreeMap<String, u64>) -> Result<Self> {
        if let Some(k) = listing.keys().find(|k| {
            // A bare `snapshot_shard_paths/` is the empty directory OpenSearch 2.x creates
            // (listed as a directory marker by servers over plain directories); only
            // blobs under it mean hashed shard paths.
            k.strip_prefix("snapshot_shard_paths/")
                .is_some_and(|rest| !rest.is_empty())
                || k.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("shallow-snap-"))
        }) {
            return Err(Error::invalid_input(format!(
                "{}: the repository uses OpenSearch remote-store features ({k}); shallow snapshots and hashed shard paths are not supported",
                store.describe()
            )));
        }
        let generation = match current_generation(listing.keys().map(String::as_str)) {
            Some(g) => g,
            None => match listing.get("index.latest") {
                Some(&8) => {
                    let b = read_all(store, "index.latest", 8).await?;
                    u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]))
                }
                _ => {
                    return Err(Error::no_repository(format!(
                        "{} holds no snapshot repository (no root index-N blob)",
                        store.describe()
                    )))
                }
            },
        };
        let root = format!("index-{generation}");
        let size = *listing.get(&root).ok_or_else(|| {
            Error::no_repository(format!(
                "{} holds no snapshot repository (index.latest names {root}, which does not exist)",
                store.describe()
            ))
        })?;
        let root_bytes = read_all(store, &root, size).await?;
        let data = RepositoryData::parse(generation, &root_bytes)?;
        Ok(Repository {
            listing,
            data,
            root_bytes,
        })
    }

    /// The snapshots selected by name (all when `names` is empty); unknown names fail.
    pub fn select(&self, names: &[String]) -> Result<Vec<&SnapshotEntry>> {
        self.data.select(names)
    }

    pub(crate) fn shard_dirs(&self, index_id: &str) -> Vec<u32> {
        let prefix = format!("indices/{index_id}/");
        let mut shards: BTreeSet<u32> = BTreeSet::new();
        for k in self
            .listing
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
        {
            if let Some(n) = k[prefix.len()..]
                .split('/')
                .next()
                .and_then(|d| d.parse().ok())
            {
                if k[prefix.len()..].contains('/') {
                    shards.insert(n);
                }
            }
        }
        shards.into_iter().collect()
    }

    pub(crate) fn shard_index_blob(&self, ix: &IndexEntry, shard: u32) -> Option<String> {
        let dir = format!("indices/{}/{shard}/", ix.id);
        if let Some(Some(g)) = ix.shard_generations.get(shard as usize) {
            return Some(format!("{dir}index-{g}"));
        }
        // Before 7.6: the largest numeric index-N in the shard folder.
        self.listing
            .range(dir.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&dir))
            .filter_map(|k| k[dir.len()..].strip_prefix("index-")?.parse::<u64>().ok())
            .max()
            .map(|n| format!("{dir}index-{n}"))
    }

    /// Every blob the selected snapshots need (plus the root generation files), and the
    /// data files for deep checks. Reads shard snapshot blobs with bounded concurrency.
    pub async fn references(
        &self,
        store: &dyn Store,
        snapshots: &[&SnapshotEntry],
    ) -> Result<(BTreeMap<String, Referenced>, Vec<DataFile>)> {
        let mut refs: BTreeMap<String, Referenced> = BTreeMap::new();
        let add = |refs: &mut BTreeMap<String, Referenced>,
                   k: String,
                   kind: BlobKind,
                   size: Option<u64>| {
            refs.entry(k).or_insert(Referenced { kind, size });
        };
        add(
            &mut refs,
            format!("index-{}", self.data.generation),
            BlobKind::RootIndex,
            None,
        );
        if self.listing.contains_key(INCOMPATIBLE_SNAPSHOTS) {
            add(
                &mut refs,
                INCOMPATIBLE_SNAPSHOTS.to_string(),
                BlobKind::RootMeta,
                None,
            );
        }
        for s in snapshots {
            add(
                &mut refs,
                format!("snap-{}.dat", s.uuid),
                BlobKind::RootMeta,
                None,
            );
            add(
                &mut refs,
                format!("meta-{}.dat", s.uuid),
                BlobKind::RootMeta,
                None,
            );
        }
        let wanted: BTreeSet<&str> = snapshots.iter().map(|s| s.uuid.as_str()).collect();
        let mut shard_snaps = Vec::new();
        for ix in &self.data.indices {
            let in_sel: Vec<&&SnapshotEntry> = snapshots
                .iter()
                .filter(|s| ix.snapshots.iter().any(|u| u == &s.uuid))
                .collect();
            if in_sel.is_empty() {
                continue;
            }
            for s in &in_sel {
                let meta = self.data.index_meta_key(s, &ix.id);
                add(&mut refs, meta, BlobKind::IndexMeta, None);
            }
            for shard in self.shard_dirs(&ix.id) {
                if let Some(b) = self.shard_index_blob(ix, shard) {
                    add(&mut refs, b, BlobKind::ShardIndex, None);
                }
                for s in &in_sel {
                    let key = format!("indices/{}/{shard}/snap-{}.dat", ix.id, s.uuid);
                    if wanted.contains(s.uuid.as_str()) {
                        add(&mut refs, key.clone(), BlobKind::ShardSnapshot, None);
                        shard_snaps.push((key, ix.id.clone(), shard));
                    }
                }
            }
        }
        // Read the shard snapshots (present ones; missing ones are reported by verify).
        let present: Vec<(String, String, u32, u64)> = shard_snaps
            .into_iter()
            .filter_map(|(k, id, sh)| self.listing.get(&k).map(|&sz| (k, id, sh, sz)))
            .collect();
        let parsed: Vec<(String, u32, ShardSnapshot)> = futures::stream::iter(present)
            .map(|(k, id, sh, sz)| async move {
                let bytes = read_all(store, &k, sz).await?;
                let env = blob::parse_envelope(&k, &bytes)?;
                Ok::<_, Error>((id, sh, blob::decode::<ShardSnapshot>(&k, &env)?))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut data_files = BTreeMap::new();
        for (id, shard, snap) in parsed {
            for f in snap.files {
                let blobs: Vec<(String, u64)> = f
                    .blobs()
                    .into_iter()
                    .map(|(n, sz)| (format!("indices/{id}/{shard}/{n}"), sz))
                    .collect();
                if blobs.is_empty() {
                    continue;
                }
                for (k, sz) in &blobs {
                    add(&mut refs, k.clone(), BlobKind::Data, Some(*sz));
                }
                data_files.entry(blobs[0].0.clone()).or_insert(DataFile {
                    blobs,
                    length: f.length,
                    checksum: f.checksum,
                });
            }
        }
        Ok((refs, data_files.into_values().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in reports are a contract: pinned as they were written by hand.
    #[test]
    fn state_and_phase_names() {
        let states: Vec<&str> = [None, Some(0), Some(1), Some(2), Some(3), Some(4), Some(5)]
            .into_iter()
            .chain([Some(255), Some(256), Some(u64::MAX)])
            .map(state_name)
            .collect();
        assert_eq!(
            states,
            [
                "UNKNOWN",
                "IN_PROGRESS",
                "SUCCESS",
                "FAILED",
                "PARTIAL",
                "INCOMPATIBLE",
                "UNKNOWN",
                "UNKNOWN",
                "UNKNOWN",
                "UNKNOWN"
            ]
        );
        let phases: Vec<&str> = crate::pipeline::snapshot::PHASES
            .into_iter()
            .map(<&str>::from)
            .collect();
        assert_eq!(
            phases,
            [
                "data",
                "shard-snapshots",
                "shard-indexes",
                "index-metadata",
                "root-metadata",
                "root-index",
                "index.latest"
            ]
        );
    }

    #[test]
    fn generation_and_classification() {
        assert_eq!(
            current_generation([
                "index-2",
                "index-10",
                "index.latest",
                "index-x",
                "indices/a/0/index-99"
            ]),
            Some(10)
        );
        assert_eq!(current_generation(["index.latest"]), None);
        let cases = [
            ("index.latest", Some(BlobKind::IndexLatest)),
            ("index-7", Some(BlobKind::RootIndex)),
            ("snap-abc.dat", Some(BlobKind::RootMeta)),
            ("meta-abc.dat", Some(BlobKind::RootMeta)),
            ("indices/id/meta-x.dat", Some(BlobKind::IndexMeta)),
            ("indices/id/0/snap-u.dat", Some(BlobKind::ShardSnapshot)),
            ("indices/id/0/index-Zx_y", Some(BlobKind::ShardIndex)),
            ("indices/id/0/__abc", Some(BlobKind::Data)),
            ("indices/id/0/__abc.part3", Some(BlobKind::Data)),
            ("incompatible-snapshots", Some(BlobKind::RootMeta)),
            ("tests-x", None),
        ];
        for (k, want) in cases {
            assert_eq!(classify(k), want, "{k}");
        }
        assert!(is_transient("tests-abc/data-node.dat"));
        assert!(is_transient("pending-index-5"));
        assert!(!is_transient("indices/x"));
    }

    #[test]
    fn parts_of_a_file() {
        let f = FileInfo {
            name: "__a".into(),
            physical_name: "_0.cfs".into(),
            length: 10,
            checksum: None,
            part_size: Some(4),
        };
        assert_eq!(
            f.blobs(),
            [
                ("__a.part0".to_string(), 4),
                ("__a.part1".to_string(), 4),
                ("__a.part2".to_string(), 2)
            ]
        );
        let v = FileInfo {
            name: "v__x".into(),
            physical_name: "segments_1".into(),
            length: 5,
            checksum: None,
            part_size: None,
        };
        assert!(v.blobs().is_empty());
    }

    #[test]
    fn parses_old_and_new_root_shapes() {
        let new = br#"{"min_version":"7.9.0","uuid":"U","snapshots":[{"name":"s1","uuid":"A","state":1,"index_metadata_lookup":{"ix":"ident"},"version":"7.10.2","start_time_millis":5,"end_time_millis":9}],
            "indices":{"logs":{"id":"ix","snapshots":["A"],"shard_generations":["g0",null,"_new"]}},"index_metadata_identifiers":{"ident":"blob1"}}"#;
        let d = RepositoryData::parse(3, new).unwrap();
        assert_eq!(d.snapshots[0].state, Some(1));
        assert_eq!(
            d.indices[0].shard_generations,
            [Some("g0".to_string()), None, None]
        );
        assert_eq!(d.index_metadata_identifiers["ident"], "blob1");
        let old = br#"{"snapshots":[{"name":"s1","uuid":"A"}],"indices":{"logs":{"id":"ix","snapshots":[{"name":"s1","uuid":"A"}]}}}"#;
        let d = RepositoryData::parse(0, old).unwrap();
        assert_eq!(d.indices[0].snapshots, ["A"]);
        assert!(d.indices[0].shard_generations.is_empty());
    }
}
