//! The metadata planner: what a snapshot-aware round copies, read from the repository's
//! own metadata instead of from listings of everything, so that a round costs what
//! changed, not what exists.
//!
//! # Why each shortcut is sound
//! Upstream files read (elastic/elasticsearch and opensearch-project/OpenSearch,
//! `server/src/main/java/org/{elasticsearch,opensearch}/`):
//! `repositories/blobstore/BlobStoreRepository.java` (`finalizeSnapshot`,
//! `writeIndexGen`, `snapshotShard`, `deleteSnapshots`), `repositories/RepositoryData.java`,
//! `repositories/ShardGenerations.java`,
//! `index/snapshots/blobstore/BlobStoreIndexShardSnapshots.java`.
//!
//! 1. **Data blobs are write-once under unique names.** `snapshotShard` uploads each new
//!    Lucene file as `__<random UUID>` (split `.partN`), never rewriting one; a file a
//!    later snapshot still has is referenced again, not uploaded again. So a data blob
//!    present at the destination with the size the metadata records is the blob.
//! 2. **A shard's `index-<uuid>` generation names immutable content** (7.6+,
//!    `ShardGenerations`): every snapshot or delete that changes a shard writes a new
//!    `BlobStoreIndexShardSnapshots` under a new random generation and points the root at
//!    it; the blob lists every file of every snapshot of the shard, and its `snapshots`
//!    map names each snapshot whose shard-level `snap-<uuid>.dat` exists. So the blobs a
//!    shard needs are read from that one blob, and a shard whose generation is the same in
//!    the source root and in a destination root snapferry committed needs nothing: every
//!    blob that generation lists landed before that root was written (the commit point is
//!    last). Trust in the destination root is checked, not assumed: it must be the root
//!    recorded in `.snapferry-state.json` (see [`super::state`]); any other root is
//!    planned from a full listing of both sides.
//! 3. **Root `snap-*`/`meta-*` and index `meta-*` follow from the root `index-N`**
//!    (`RepositoryData`: snapshot UUIDs, and per index the metadata blob of each snapshot,
//!    deduplicated through `index_metadata_lookup`/`index_metadata_identifiers` on 7.9+).
//!    They are write-once too (named by snapshot UUID or metadata identifier): those the
//!    destination's trusted root already references are present; the others are looked
//!    up one by one (a HEAD on each side).
//! 4. **Numeric shard generations** (before 7.6, and shards not yet rewritten after an
//!    upgrade: `ShardGenerations.fixShardGeneration` reads all-digit generations so) are
//!    found by listing, and the name `index-5` may hold other content in two
//!    repositories; such shards are never trusted by name: their directory is listed on
//!    both sides every round and their blobs read from each snapshot's `snap-<uuid>.dat`
//!    (exact even where an old shard `index-N` was left stale).
//!
//! # Shape
//! Units (shard directories, or index directories for roots without shard generations)
//! are planned one at a time, in key order, with a small read-ahead: what a unit needs is
//! held only while its keys pass, so the planner's memory is flat in the repository's
//! size ([`Held`] counts it; the 1M-key test asserts it). Changed units are listed by
//! prefix on both sides; an untrusted destination, or `--verify-destination full`, is
//! listed once in full instead, and so is the source then. Data blobs are scheduled as
//! they are found; the shard `snap-*`/`index-*` and index/root `meta-*` blobs found
//! missing are spilled to temp files and copied in their phases afterwards, in the order
//! that keeps the destination restorable.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::super::differ::{merge_join, DiffStats, Joined};
use super::super::{lister, Ctx};
use crate::error::{Error, Result};
use crate::repo::blob;
use crate::repo::model::{
    classify, is_transient, BlobKind, FileInfo, IndexEntry, RepositoryData, ShardSnapshot,
    INCOMPATIBLE_SNAPSHOTS,
};
use crate::store::{ObjectMeta, Store};

/// Units planned ahead of the one whose keys are passing (their metadata reads and
/// listings run concurrently).
pub const READ_AHEAD: usize = 8;

/// One directory whose blobs a round may copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Unit {
    /// `indices/<id>/<shard>/`, or `indices/<id>/` for an index whose root records no
    /// shard generations (shards found by listing).
    pub prefix: String,
    /// The index's repository id.
    pub index_id: String,
    /// The UUID generation the source root names; `None`: numeric (found by listing).
    pub generation: Option<String>,
}

/// What the planner holds at once, for the report and the memory tests.
#[derive(Debug, Default)]
pub struct Held {
    units: AtomicUsize,
    max_units: AtomicUsize,
    names: AtomicUsize,
    max_names: AtomicUsize,
}

impl Held {
    /// The most units whose needs were held at once.
    pub fn max_units(&self) -> usize {
        self.max_units.load(Ordering::Relaxed)
    }
    /// The most referenced names held at once.
    pub fn max_names(&self) -> usize {
        self.max_names.load(Ordering::Relaxed)
    }
    fn add(&self, names: usize) {
        let u = self.units.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_units.fetch_max(u, Ordering::Relaxed);
        let n = self.names.fetch_add(names, Ordering::Relaxed) + names;
        self.max_names.fetch_max(n, Ordering::Relaxed);
    }
    fn sub(&self, names: usize) {
        self.units.fetch_sub(1, Ordering::Relaxed);
        self.names.fetch_sub(names, Ordering::Relaxed);
    }
}

/// A blob a unit needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// Its kind (data, shard `snap-*`, shard `index-*`).
    pub kind: BlobKind,
    /// Its size, where the metadata records it.
    pub size: Option<u64>,
    /// What its bytes are checked against as they stream by: the Lucene checksum of a
    /// whole-file data blob, `""` for a checksummed metadata envelope.
    pub check: Option<String>,
}

/// What one unit needs, by name relative to its prefix; counted in [`Held`] while alive.
pub struct UnitRefs {
    /// The unit.
    pub unit: Unit,
    /// Name -> what is known of it.
    pub names: HashMap<String, Ref>,
    /// The source's listing of the unit, where reading the needs took one.
    src_listing: Option<Vec<ObjectMeta>>,
    held: Arc<Held>,
}

impl Drop for UnitRefs {
    fn drop(&mut self) {
        self.held.sub(self.names.len());
    }
}

impl UnitRefs {
    fn new(
        unit: Unit,
        names: HashMap<String, Ref>,
        src_listing: Option<Vec<ObjectMeta>>,
        held: &Arc<Held>,
    ) -> Self {
        held.add(names.len());
        UnitRefs {
            unit,
            names,
            src_listing,
            held: held.clone(),
        }
    }

    fn get(&self, key: &str) -> Option<&Ref> {
        self.names.get(key.strip_prefix(&self.unit.prefix)?)
    }
}

/// Whether a shard generation is a pre-7.6 numeric one.
pub fn is_numeric(generation: &str) -> bool {
    !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit())
}

/// The units of the source root, in key order: every one (`changed_only` false), or only
/// those a trusted destination root `dst` does not already hold at the same generation.
pub fn units(src: &RepositoryData, dst: Option<&RepositoryData>) -> Vec<Unit> {
    let dst_by_id: HashMap<&str, &IndexEntry> = dst
        .map(|d| d.indices.iter().map(|i| (i.id.as_str(), i)).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for ix in &src.indices {
        if ix.snapshots.is_empty() {
            continue;
        }
        if ix.shard_generations.is_empty() {
            // No shard generations in the root (before 7.6): the index directory.
            out.push(Unit {
                prefix: format!("indices/{}/", ix.id),
                index_id: ix.id.clone(),
                generation: None,
            });
            continue;
        }
        let theirs = dst_by_id.get(ix.id.as_str());
        for (position, g) in ix.shard_generations.iter().enumerate() {
            let Some(g) = g else {
                continue; // no generation: nothing of this shard in the repository
            };
            let numeric = is_numeric(g);
            let same = !numeric
                && theirs
                    .and_then(|d| d.shard_generations.get(position))
                    .is_some_and(|d| d.as_deref() == Some(g.as_str()));
            if dst.is_some() && same {
                continue;
            }
            out.push(Unit {
                prefix: format!("indices/{}/{position}/", ix.id),
                index_id: ix.id.clone(),
                generation: (!numeric).then(|| g.clone()),
            });
        }
    }
    out.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    out
}

/// The index `meta-*.dat` keys an index's snapshots need.
pub fn index_meta_keys(data: &RepositoryData, ix: &IndexEntry) -> BTreeSet<String> {
    ix.snapshots
        .iter()
        .filter_map(|uuid| data.snapshots.iter().find(|s| &s.uuid == uuid))
        .map(|s| data.index_meta_key(s, &ix.id))
        .collect()
}

/// The root `snap-*`/`meta-*` keys of a root's snapshots.
pub fn root_meta_keys(data: &RepositoryData) -> BTreeSet<String> {
    data.snapshots
        .iter()
        .flat_map(|s| {
            [
                format!("snap-{}.dat", s.uuid),
                format!("meta-{}.dat", s.uuid),
            ]
        })
        .collect()
}

/// The shard-level `index-<gen>` blob (`BlobStoreIndexShardSnapshots`).
#[derive(Debug, Deserialize)]
struct ShardIndexBlob {
    #[serde(default)]
    files: Vec<FileInfo>,
    #[serde(default)]
    snapshots: HashMap<String, serde::de::IgnoredAny>,
}

fn data_refs(names: &mut HashMap<String, Ref>, dir: &str, f: &FileInfo) {
    let blobs = f.blobs();
    let whole = blobs.len() == 1;
    for (n, size) in blobs {
        names.insert(
            format!("{dir}{n}"),
            Ref {
                kind: BlobKind::Data,
                size: Some(size),
                check: if whole { f.checksum.clone() } else { None },
            },
        );
    }
}

fn envelope_ref(kind: BlobKind, size: Option<u64>) -> Ref {
    Ref {
        kind,
        size,
        check: Some(String::new()),
    }
}

/// What a unit needs, read from the source.
/// The source root's indices by id and snapshot uuids by name, built once per round.
struct Lookup {
    index: HashMap<String, usize>,
    uuid: HashMap<String, String>,
}

impl Lookup {
    fn of(src: &RepositoryData) -> Self {
        Lookup {
            index: src
                .indices
                .iter()
                .enumerate()
                .map(|(i, ix)| (ix.id.clone(), i))
                .collect(),
            uuid: src
                .snapshots
                .iter()
                .map(|s| (s.name.clone(), s.uuid.clone()))
                .collect(),
        }
    }
}

async fn unit_refs(
    store: &dyn Store,
    src: &RepositoryData,
    lookup: &Lookup,
    unit: Unit,
    listing: Option<Vec<ObjectMeta>>,
    held: &Arc<Held>,
) -> Result<UnitRefs> {
    let ix = lookup
        .index
        .get(&unit.index_id)
        .and_then(|&i| src.indices.get(i))
        .ok_or_else(|| Error::other(format!("no index {} in the source root", unit.index_id)))?;
    let mut names = HashMap::new();
    let Some(generation) = unit.generation.clone() else {
        return numeric_refs(store, ix, unit, held).await;
    };
    let key = format!("{}index-{generation}", unit.prefix);
    let missing = || {
        Error::repository(format!(
            "{key}: the source root names this shard generation, but it is missing (see `snapferry repo verify`)"
        ))
        .at_key(&key)
    };
    // With the directory listed already, its size is known: one GET, no HEAD.
    let bytes = match &listing {
        Some(l) => match l.iter().find(|m| m.key == key) {
            Some(m) => store.get_range(&key, 0..m.size, None).await?,
            None => return Err(missing()),
        },
        None => match crate::store::read_whole(store, &key).await? {
            Some((_, b)) => b,
            None => return Err(missing()),
        },
    };
    let env = blob::parse_envelope(&key, &bytes)?;
    let shard: ShardIndexBlob = blob::decode(&key, &env)?;
    names.insert(
        format!("index-{generation}"),
        envelope_ref(BlobKind::ShardIndex, Some(bytes.len() as u64)),
    );
    for name in shard.snapshots.keys() {
        // A name the root does not know was deleted (its entry is not referenced).
        if let Some(uuid) = lookup.uuid.get(name) {
            names.insert(
                format!("snap-{uuid}.dat"),
                envelope_ref(BlobKind::ShardSnapshot, None),
            );
        }
    }
    for f in &shard.files {
        data_refs(&mut names, "", f);
    }
    Ok(UnitRefs::new(unit, names, listing, held))
}

/// A unit of numeric generations: listed, and read through each snapshot's
/// `snap-<uuid>.dat` (exact even where an old shard `index-N` is stale).
async fn numeric_refs(
    store: &dyn Store,
    ix: &IndexEntry,
    unit: Unit,
    held: &Arc<Held>,
) -> Result<UnitRefs> {
    let listing: Vec<ObjectMeta> = store
        .list_prefix(&unit.prefix, None)
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok::<_, Error>)))
        .try_flatten()
        .try_collect()
        .await?;
    let mut names = HashMap::new();
    // dir (relative, "" or "<shard>/") -> largest numeric index-N
    let mut newest: HashMap<String, (u64, u64)> = HashMap::new();
    let mut snaps = Vec::new();
    let wanted: HashSet<String> = ix
        .snapshots
        .iter()
        .map(|u| format!("snap-{u}.dat"))
        .collect();
    for m in &listing {
        let rel = &m.key[unit.prefix.len()..];
        let (dir, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            // Directly under an index directory: index metadata, planned from the root.
            None if unit.prefix.matches('/').count() == 2 => continue,
            None => (String::new(), rel),
        };
        if let Some(n) = name
            .strip_prefix("index-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            let e = newest.entry(dir.clone()).or_insert((n, m.size));
            if n >= e.0 {
                *e = (n, m.size);
            }
        } else if wanted.contains(name) {
            names.insert(
                format!("{dir}{name}"),
                envelope_ref(BlobKind::ShardSnapshot, Some(m.size)),
            );
            snaps.push((m.key.clone(), dir, m.size));
        }
    }
    for (dir, (n, size)) in newest {
        names.insert(
            format!("{dir}index-{n}"),
            envelope_ref(BlobKind::ShardIndex, Some(size)),
        );
    }
    let read: Vec<(String, ShardSnapshot)> = futures::stream::iter(snaps)
        .map(|(key, dir, size)| async move {
            let bytes = store.get_range(&key, 0..size, None).await?;
            let env = blob::parse_envelope(&key, &bytes)?;
            Ok::<_, Error>((dir, blob::decode::<ShardSnapshot>(&key, &env)?))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    for (dir, snap) in read {
        for f in &snap.files {
            data_refs(&mut names, &dir, f);
        }
    }
    Ok(UnitRefs::new(unit, names, Some(listing), held))
}

/// A unit's needs, with its listings on both sides when the round lists by prefix.
pub struct UnitWork {
    refs: UnitRefs,
    lists: Option<(Vec<ObjectMeta>, Vec<ObjectMeta>)>,
}

async fn collect(store: &dyn Store, prefix: &str) -> Result<Vec<ObjectMeta>> {
    store
        .list_prefix(prefix, None)
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok::<_, Error>)))
        .try_flatten()
        .try_collect()
        .await
}

/// The units' needs (and listings, with `listed`), in order, [`READ_AHEAD`] ahead.
pub fn unit_stream(
    ctx: Arc<Ctx>,
    src: Arc<RepositoryData>,
    units: Vec<Unit>,
    listed: bool,
    held: Arc<Held>,
) -> impl Stream<Item = Result<UnitWork>> + Send + 'static {
    let lookup = Arc::new(Lookup::of(&src));
    // Each unit is read by a task of its own, so that its requests keep moving while
    // the consumer waits (on the scheduler, say): a read started inside a stream that is
    // not polled would see its idle timeout fire. At most READ_AHEAD run ahead.
    let work = move |unit: Unit| {
        let (ctx, src, lookup, held) = (ctx.clone(), src.clone(), lookup.clone(), held.clone());
        tokio::spawn(async move {
            // Listed rounds list the source directory first (numeric units list it
            // themselves), so that reading the shard index needs no HEAD.
            let first = if listed && unit.generation.is_some() {
                Some(collect(ctx.src.as_ref(), &unit.prefix).await?)
            } else {
                None
            };
            let mut refs = unit_refs(ctx.src.as_ref(), &src, &lookup, unit, first, &held).await?;
            let lists = if listed {
                let prefix = refs.unit.prefix.clone();
                let src_list = match refs.src_listing.take() {
                    Some(l) => l,
                    None => collect(ctx.src.as_ref(), &prefix).await?,
                };
                let dst_list = if ctx.dst_missing() {
                    Vec::new()
                } else {
                    collect(ctx.dst.as_ref(), &prefix).await?
                };
                Some((src_list, dst_list))
            } else {
                refs.src_listing = None;
                None
            };
            Ok::<_, Error>(UnitWork { refs, lists })
        })
    };
    let queue: std::collections::VecDeque<tokio::task::JoinHandle<Result<UnitWork>>> =
        std::collections::VecDeque::new();
    futures::stream::unfold(
        (units.into_iter(), queue, work),
        |(mut it, mut queue, work)| async move {
            while queue.len() < READ_AHEAD {
                match it.next() {
                    Some(u) => queue.push_back(work(u)),
                    None => break,
                }
            }
            let next = queue.pop_front()?;
            let r = next
                .await
                .unwrap_or_else(|e| Err(Error::other(format!("a planner task failed: {e}"))));
            Some((r, (it, queue, work)))
        },
    )
    // Callers may poll again after the end (an unfold must not be).
    .fuse()
}

/// Source/destination pairs spilled to a temp file (JSON lines) until their phase.
#[derive(Default)]
pub struct JoinSpill {
    file: Option<std::io::BufWriter<tempfile::NamedTempFile>>,
    /// Entries spilled.
    pub count: u64,
}

impl JoinSpill {
    /// Adds one pair.
    pub fn push(&mut self, src: &ObjectMeta, dst: Option<&ObjectMeta>) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(std::io::BufWriter::new(tempfile::NamedTempFile::new()?));
        }
        if let Some(f) = &mut self.file {
            let line =
                serde_json::to_string(&(src, dst)).map_err(|e| Error::other(e.to_string()))?;
            writeln!(f, "{line}")?;
        }
        self.count += 1;
        Ok(())
    }

    /// Feeds the pairs, in the order spilled, to `tx` (a pass's input).
    pub fn feed(
        self,
        ctx: Arc<Ctx>,
        tx: mpsc::Sender<Joined>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        tokio::task::spawn_blocking(move || {
            let Some(f) = self.file else {
                return Ok(());
            };
            let tmp = f.into_inner().map_err(|e| Error::io(e.to_string()))?;
            let reader = std::io::BufReader::new(tmp.reopen()?);
            for line in reader.lines() {
                let (s, d): (ObjectMeta, Option<ObjectMeta>) =
                    serde_json::from_str(&line?).map_err(|e| Error::other(e.to_string()))?;
                // Metadata blobs are checksummed envelopes: their own footer checks them
                // (all but the plain JSON list of incompatible snapshots).
                if s.key != INCOMPATIBLE_SNAPSHOTS {
                    ctx.expect_lucene(&s.key, String::new());
                }
                if tx.blocking_send(Joined::Source(s, d)).is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// The spills of one round, one per later phase.
#[derive(Default)]
pub struct Deferred {
    /// Shard `snap-*.dat`.
    pub shard_snapshots: JoinSpill,
    /// Shard `index-*`.
    pub shard_indexes: JoinSpill,
    /// Index `meta-*.dat`.
    pub index_meta: JoinSpill,
    /// Root `snap-*`/`meta-*`.
    pub root_meta: JoinSpill,
}

impl Deferred {
    fn push(&mut self, kind: BlobKind, src: &ObjectMeta, dst: Option<&ObjectMeta>) -> Result<()> {
        match kind {
            BlobKind::ShardSnapshot => self.shard_snapshots.push(src, dst),
            BlobKind::ShardIndex => self.shard_indexes.push(src, dst),
            BlobKind::IndexMeta => self.index_meta.push(src, dst),
            BlobKind::RootMeta => self.root_meta.push(src, dst),
            _ => Ok(()),
        }
    }
}

/// What the data phase found, besides what it scheduled.
pub struct Found {
    /// The later phases' blobs.
    pub deferred: Deferred,
    /// Blobs the examined units and the root need (the report's `referenced_blobs`).
    pub referenced: u64,
    /// Units examined.
    pub units: u64,
}

/// The needs of the root and index metadata of the source root, looked up per key (for
/// full listings, where they pass by among the data).
struct RootNeeds {
    root: BTreeSet<String>,
    src: Arc<RepositoryData>,
    by_id: HashMap<String, usize>,
    /// The index whose metadata keys were computed last, and those keys.
    current: Option<(String, BTreeSet<String>)>,
}

impl RootNeeds {
    fn new(src: Arc<RepositoryData>) -> Self {
        let mut root = root_meta_keys(&src);
        root.insert(INCOMPATIBLE_SNAPSHOTS.to_string());
        RootNeeds {
            root,
            by_id: src
                .indices
                .iter()
                .enumerate()
                .map(|(i, ix)| (ix.id.clone(), i))
                .collect(),
            src,
            current: None,
        }
    }

    fn wanted(&mut self, key: &str, kind: BlobKind) -> bool {
        match kind {
            BlobKind::RootMeta => self.root.contains(key),
            BlobKind::IndexMeta => {
                let Some(id) = key
                    .strip_prefix("indices/")
                    .and_then(|r| r.split('/').next())
                else {
                    return false;
                };
                if self.current.as_ref().is_none_or(|(c, _)| c != id) {
                    let keys = self
                        .by_id
                        .get(id)
                        .and_then(|&i| self.src.indices.get(i))
                        .map(|ix| index_meta_keys(&self.src, ix))
                        .unwrap_or_default();
                    self.current = Some((id.to_string(), keys));
                }
                self.current.as_ref().is_some_and(|(_, k)| k.contains(key))
            }
            _ => false,
        }
    }
}

/// Refuses remote-store features met in a listing.
fn check_key(key: &str) -> Result<()> {
    if key
        .rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("shallow-snap-"))
    {
        return Err(Error::invalid_input(format!(
            "the source repository uses OpenSearch remote-store features ({key}); shallow snapshots are not supported"
        )));
    }
    Ok(())
}

/// Routes one joined entry: a needed data blob goes on to the scheduler, a needed
/// metadata blob to its phase's spill, anything else is dropped.
#[allow(clippy::too_many_arguments)]
async fn route(
    ctx: &Ctx,
    j: Joined,
    unit: Option<&UnitRefs>,
    roots: Option<&mut RootNeeds>,
    out: &mpsc::Sender<Joined>,
    deferred: &mut Deferred,
    by_name: bool,
) -> Result<bool> {
    let Joined::Source(s, d) = j else {
        return Ok(true); // destination-only keys: deletes are planned after the commit
    };
    check_key(&s.key)?;
    if is_transient(&s.key) {
        return Ok(true);
    }
    let Some(kind) = classify(&s.key) else {
        return Ok(true);
    };
    match kind {
        BlobKind::Data | BlobKind::ShardSnapshot | BlobKind::ShardIndex => {
            let Some(u) = unit else {
                return Ok(true); // in no changed shard
            };
            let Some(r) = u.get(&s.key) else {
                return Ok(true); // not referenced by the pinned generation
            };
            // Write-once names (data blobs, shard `snap-<uuid>.dat`, UUID shard
            // generations): present at the destination with the source's size is the
            // blob (see the module docs, 1 and 2). Numeric `index-N` never are.
            let write_once = r.kind != BlobKind::ShardIndex || u.unit.generation.is_some();
            if by_name
                && write_once
                && d.as_ref().is_some_and(|d| d.size == s.size)
                && r.size.is_none_or(|want| want == s.size)
            {
                ctx.counters.listed_objects.fetch_add(1, Ordering::Relaxed);
                ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            if r.kind == BlobKind::Data {
                if let Some(c) = &r.check {
                    ctx.expect_lucene(&s.key, c.clone());
                }
                return Ok(out.send(Joined::Source(s, d)).await.is_ok());
            }
            deferred.push(r.kind, &s, d.as_ref())?;
        }
        BlobKind::IndexMeta | BlobKind::RootMeta => {
            if let Some(roots) = roots {
                if roots.wanted(&s.key, kind) {
                    deferred.push(kind, &s, d.as_ref())?;
                }
            }
        }
        BlobKind::RootIndex | BlobKind::IndexLatest => {} // written by the commit, never copied
    }
    Ok(true)
}

/// The data phase of a round planned by prefix listings: every unit's two listings are
/// joined in memory and routed. Sends data blobs to `out`.
pub async fn by_prefix(
    ctx: Arc<Ctx>,
    work: impl Stream<Item = Result<UnitWork>> + Send,
    out: mpsc::Sender<Joined>,
) -> Result<Found> {
    let mut deferred = Deferred::default();
    let (mut referenced, mut units) = (0u64, 0u64);
    futures::pin_mut!(work);
    while let Some(w) = work.next().await {
        let w = w?;
        units += 1;
        referenced += w.refs.names.len() as u64;
        let Some((src, dst)) = w.lists else {
            continue;
        };
        for j in join_sorted(src, dst)? {
            if !route(&ctx, j, Some(&w.refs), None, &out, &mut deferred, true).await? {
                return Ok(Found {
                    deferred,
                    referenced,
                    units,
                });
            }
        }
    }
    Ok(Found {
        deferred,
        referenced,
        units,
    })
}

/// The data phase of a round planned from full listings: both sides are listed once, and
/// each key is routed with the needs of the unit it falls in (the units arrive in key
/// order, like the keys) and of the source root.
pub async fn by_full_listing(
    ctx: Arc<Ctx>,
    work: impl Stream<Item = Result<UnitWork>> + Send,
    src_root: Arc<RepositoryData>,
    out: mpsc::Sender<Joined>,
    stats: Arc<DiffStats>,
) -> Result<Found> {
    let src_rx = lister::spawn(
        ctx.clone(),
        ctx.src.clone(),
        None,
        false,
        ctx.opts.list_fan_out,
    );
    let dst_rx = lister::spawn(
        ctx.clone(),
        ctx.dst.clone(),
        None,
        ctx.dst_missing(),
        ctx.opts.list_fan_out,
    );
    let (join_tx, mut join_rx) = mpsc::channel::<Joined>(lister::LIST_CHANNEL);
    let differ = tokio::spawn(async move { merge_join(src_rx, dst_rx, join_tx, &stats).await });
    let mut roots = RootNeeds::new(src_root);
    let mut deferred = Deferred::default();
    let (mut referenced, mut units) = (roots.root.len() as u64, 0u64);
    futures::pin_mut!(work);
    let mut current: Option<UnitWork> = None;
    let mut exhausted = false;
    while let Some(j) = join_rx.recv().await {
        let key = match &j {
            Joined::Source(s, _) => s.key.clone(),
            Joined::DestOnly(_) => continue,
        };
        // Advance to the unit this key falls in, or past the units entirely before it.
        loop {
            if let Some(c) = &current {
                let p = &c.refs.unit.prefix;
                if key.starts_with(p.as_str()) || p.as_str() > key.as_str() {
                    break;
                }
            } else if exhausted {
                break;
            }
            match work.next().await {
                Some(w) => {
                    let w = w?;
                    units += 1;
                    referenced += w.refs.names.len() as u64;
                    current = Some(w);
                }
                None => {
                    current = None;
                    exhausted = true;
                }
            }
        }
        let unit = current
            .as_ref()
            .filter(|c| key.starts_with(c.refs.unit.prefix.as_str()))
            .map(|c| &c.refs);
        if !route(&ctx, j, unit, Some(&mut roots), &out, &mut deferred, false).await? {
            break;
        }
    }
    drop(current);
    // Units after the last key still count as examined (their blobs are all missing at
    // the source, which `repo verify` reports).
    while let Some(w) = work.next().await {
        let w = w?;
        units += 1;
        referenced += w.refs.names.len() as u64;
    }
    differ
        .await
        .unwrap_or_else(|e| Err(Error::other(format!("differ task failed: {e}"))))?;
    Ok(Found {
        deferred,
        referenced,
        units,
    })
}

/// Merge-joins two sorted listings of one unit (strictly increasing keys, or an error:
/// a listing out of order would plan wrong copies).
/// What one unit needs copied: the blobs its source generation references that the
/// destination lacks or holds at another size, counted and summed (a plan's weights).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Weighed {
    /// The unit.
    #[serde(flatten)]
    pub unit: Unit,
    /// Bytes to copy.
    pub bytes: u64,
    /// Blobs to copy.
    pub objects: u64,
}

/// Weighs each unit from its two listings (units planned with `listed`).
pub async fn weigh(work: impl Stream<Item = Result<UnitWork>> + Send) -> Result<Vec<Weighed>> {
    let mut out = Vec::new();
    futures::pin_mut!(work);
    while let Some(w) = work.next().await {
        let w = w?;
        let (mut bytes, mut objects) = (0, 0);
        if let Some((src, dst)) = w.lists {
            for j in join_sorted(src, dst)? {
                if let Joined::Source(s, d) = j {
                    let needed = w.refs.get(&s.key).is_some();
                    if needed && d.as_ref().is_none_or(|d| d.size != s.size) {
                        bytes += s.size;
                        objects += 1;
                    }
                }
            }
        }
        out.push(Weighed {
            unit: w.refs.unit.clone(),
            bytes,
            objects,
        });
    }
    Ok(out)
}

fn join_sorted(src: Vec<ObjectMeta>, dst: Vec<ObjectMeta>) -> Result<Vec<Joined>> {
    for (side, v) in [("source", &src), ("destination", &dst)] {
        if let Some(w) = v.windows(2).find(|w| w[0].key >= w[1].key) {
            return Err(Error::protocol(format!(
                "the {side} listing is not in key order ({:?} after {:?}); refusing to continue",
                w[1].key, w[0].key
            )));
        }
    }
    let mut out = Vec::with_capacity(src.len());
    let mut d = dst.into_iter().peekable();
    for s in src {
        while d.peek().is_some_and(|x| x.key < s.key) {
            if let Some(x) = d.next() {
                out.push(Joined::DestOnly(x));
            }
        }
        let same = d.next_if(|x| x.key == s.key);
        out.push(Joined::Source(s, same));
    }
    out.extend(d.map(Joined::DestOnly));
    Ok(out)
}

/// The index and root metadata keys the source root needs and the destination root
/// does not reference, with their kinds.
fn metadata_wanted(src: &RepositoryData, dst: &RepositoryData) -> Vec<(String, BlobKind)> {
    let dst_by_id: HashMap<&str, &IndexEntry> =
        dst.indices.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut wanted: Vec<(String, BlobKind)> = Vec::new();
    for ix in &src.indices {
        let have = dst_by_id
            .get(ix.id.as_str())
            .map(|d| index_meta_keys(dst, d))
            .unwrap_or_default();
        for k in index_meta_keys(src, ix) {
            if !have.contains(&k) {
                wanted.push((k, BlobKind::IndexMeta));
            }
        }
    }
    let have = root_meta_keys(dst);
    for k in root_meta_keys(src) {
        if !have.contains(&k) {
            wanted.push((k, BlobKind::RootMeta));
        }
    }
    wanted
}

/// The metadata blobs of what the source root adds to a destination root.
pub fn new_metadata(src: &RepositoryData, dst: &RepositoryData) -> Vec<String> {
    metadata_wanted(src, dst)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Index and root metadata a trusted destination root does not reference: looked up one
/// by one (a HEAD on each side) and spilled to their phases.
pub async fn metadata_not_held(
    ctx: &Arc<Ctx>,
    src: &RepositoryData,
    dst: &RepositoryData,
    deferred: &mut Deferred,
) -> Result<u64> {
    let mut wanted = metadata_wanted(src, dst);
    // Rewritten in place, and named by no root: looked at every round (a HEAD; two
    // when the source has one).
    wanted.push((INCOMPATIBLE_SNAPSHOTS.to_string(), BlobKind::RootMeta));
    let n = wanted.len() as u64;
    let looked: Vec<_> = futures::stream::iter(wanted)
        .map(|(k, kind)| {
            let ctx = ctx.clone();
            async move {
                let s = ctx.src.head(&k).await?;
                let d = match &s {
                    Some(_) => ctx.dst.head(&k).await?,
                    None => None,
                };
                Ok::<_, Error>((k, kind, s, d))
            }
        })
        .buffered(ctx.opts.concurrency.max(4))
        .try_collect()
        .await?;
    for (k, kind, s, d) in looked {
        match s {
            Some(s) => deferred.push(kind, &s, d.as_ref())?,
            None if k == INCOMPATIBLE_SNAPSHOTS => {}
            None => tracing::warn!(
                "{k}: the source root references it, but the source does not hold it (see `snapferry repo verify`)"
            ),
        }
    }
    Ok(n)
}

/// Confirms, before the commit point, that the destination holds every blob the given
/// units and the new snapshots' metadata need, with the sizes the metadata records: one
/// listing of each unit's directory on the destination (and a read of its needs), one
/// HEAD per new metadata blob. Returns the keys found missing or of another size, with
/// what is wrong.
pub async fn confirm(
    ctx: &Arc<Ctx>,
    src: Arc<RepositoryData>,
    units: Vec<Unit>,
    metadata: Vec<String>,
) -> Result<Vec<(String, String)>> {
    let held = Arc::new(Held::default());
    let lookup = Arc::new(Lookup::of(&src));
    let mut bad = Vec::new();
    let mut work = futures::stream::iter(units)
        .map(|unit| {
            let (ctx, src, lookup, held) = (ctx.clone(), src.clone(), lookup.clone(), held.clone());
            async move {
                let refs = unit_refs(ctx.src.as_ref(), &src, &lookup, unit, None, &held).await?;
                let there = collect(ctx.dst.as_ref(), &refs.unit.prefix).await?;
                Ok::<_, Error>((refs, there))
            }
        })
        .buffered(READ_AHEAD);
    while let Some(r) = work.next().await {
        let (refs, there) = r?;
        let sizes: HashMap<&str, u64> = there
            .iter()
            .map(|m| (&m.key[refs.unit.prefix.len()..], m.size))
            .collect();
        for (name, r) in &refs.names {
            let key = format!("{}{name}", refs.unit.prefix);
            match (sizes.get(name.as_str()), r.size) {
                (None, _) => bad.push((key, "missing at the destination".to_string())),
                (Some(&got), Some(want)) if got != want => bad.push((
                    key,
                    format!("{got} bytes at the destination, {want} expected"),
                )),
                _ => {}
            }
        }
    }
    let heads: Vec<(String, bool)> = futures::stream::iter(metadata)
        .map(|k| {
            let ctx = ctx.clone();
            async move {
                let there = ctx.dst.head(&k).await?.is_some();
                Ok::<_, Error>((k, there))
            }
        })
        .buffered(ctx.opts.concurrency.max(4))
        .try_collect()
        .await?;
    for (k, there) in heads {
        if !there {
            bad.push((k, "missing at the destination".into()));
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(json: &str) -> RepositoryData {
        RepositoryData::parse(1, json.as_bytes()).unwrap()
    }

    #[test]
    fn only_shards_whose_generation_moved_are_units() {
        let src = root(
            r#"{"snapshots":[{"name":"a","uuid":"A"},{"name":"b","uuid":"B"}],
               "indices":{"x":{"id":"X","snapshots":["A","B"],"shard_generations":["g1","g2",null,"7"]},
                          "y":{"id":"Y","snapshots":["B"],"shard_generations":["h1"]},
                          "z":{"id":"Z","snapshots":["A"]}}}"#,
        );
        let dst = root(
            r#"{"snapshots":[{"name":"a","uuid":"A"}],
               "indices":{"x":{"id":"X","snapshots":["A"],"shard_generations":["g1","old",null,"7"]}}}"#,
        );
        let prefixes = |u: Vec<Unit>| u.into_iter().map(|u| u.prefix).collect::<Vec<_>>();
        // Trusted destination: shard 0 is the same generation; 1 moved; 3 is numeric
        // (never trusted by name); Y is new; Z has no shard generations (listed whole).
        assert_eq!(
            prefixes(units(&src, Some(&dst))),
            ["indices/X/1/", "indices/X/3/", "indices/Y/0/", "indices/Z/"]
        );
        // Untrusted (or none): every shard that has a generation.
        assert_eq!(
            prefixes(units(&src, None)),
            [
                "indices/X/0/",
                "indices/X/1/",
                "indices/X/3/",
                "indices/Y/0/",
                "indices/Z/"
            ]
        );
        let u = units(&src, None);
        assert_eq!(u[0].generation.as_deref(), Some("g1"));
        assert_eq!(u[2].generation, None, "numeric");
    }

    #[test]
    fn units_sort_in_key_order_not_shard_order() {
        let gens: Vec<String> = (0..12).map(|i| format!("\"g{i}\"")).collect();
        let src = root(&format!(
            r#"{{"snapshots":[{{"name":"a","uuid":"A"}}],"indices":{{"x":{{"id":"X","snapshots":["A"],"shard_generations":[{}]}}}}}}"#,
            gens.join(",")
        ));
        let p: Vec<String> = units(&src, None).into_iter().map(|u| u.prefix).collect();
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(p, sorted);
        assert_eq!(p[1], "indices/X/1/");
        assert_eq!(p[2], "indices/X/10/");
    }

    #[test]
    fn metadata_keys_follow_the_root() {
        let src = root(
            r#"{"snapshots":[{"name":"a","uuid":"A","index_metadata_lookup":{"X":"i1"}},{"name":"b","uuid":"B"}],
               "indices":{"x":{"id":"X","snapshots":["A","B"],"shard_generations":["g"]}},
               "index_metadata_identifiers":{"i1":"blob1"}}"#,
        );
        let ix = &src.indices[0];
        assert_eq!(
            index_meta_keys(&src, ix).into_iter().collect::<Vec<_>>(),
            ["indices/X/meta-B.dat", "indices/X/meta-blob1.dat"]
        );
        assert_eq!(root_meta_keys(&src).len(), 4);
    }

    #[test]
    fn joins_sorted_listings_and_refuses_unsorted_ones() {
        let m = |k: &str| ObjectMeta {
            key: k.into(),
            ..Default::default()
        };
        let j = join_sorted(vec![m("a"), m("c")], vec![m("b"), m("c"), m("d")]).unwrap();
        let shape: Vec<String> = j
            .iter()
            .map(|j| match j {
                Joined::Source(s, d) => format!("{}{}", s.key, if d.is_some() { "=" } else { "+" }),
                Joined::DestOnly(d) => format!("{}-", d.key),
            })
            .collect();
        assert_eq!(shape, ["a+", "b-", "c=", "d-"]);
        assert!(join_sorted(vec![m("b"), m("a")], vec![]).is_err());
    }
}
