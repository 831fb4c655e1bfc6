//! A round over many machines: plan → units → commit.
//!
//! - **Plan** (`snapferry plan`): the source's root is pinned, the shard directories that
//!   changed since the destination's trusted root are found from the repository's
//!   metadata and weighed by what each needs copied ([`crate::pipeline::Role::Plan`]),
//!   and packed into `U` units of similar bytes (largest first, each into the lightest
//!   unit). The plan is written beside the destination, under a control prefix outside
//!   the repository: `plan.json` (the document, with the SHA-256 of its bytes) and
//!   `root` (the pinned root's bytes, so that the round does not depend on the source
//!   still holding them), in that order: a plan without `plan.json` does not exist.
//! - **Unit** (`snapferry sync --plan URL --unit I`): one unit's shard directories, data
//!   blobs then shard metadata, with every guarantee of a sync; then a completion marker
//!   `units/<I>.json` holding its counts and a digest of what the destination holds
//!   under its shards. Units may run in any order, twice, or at once: every blob they
//!   write is write-once content named by the source, and each unit holds a lease of its
//!   own (`units/<I>/`).
//! - **Commit** (`snapferry commit --plan URL`): refuses unless every unit has its marker
//!   and the destination's root is still the one planned against; then the index and
//!   root metadata, a confirmation that every planned shard's blobs are at the
//!   destination with their recorded sizes, and the commit point — the only global
//!   barrier ([`crate::pipeline::Role::Commit`]).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::snapshot::distributed::RootId;
use crate::pipeline::snapshot::planner::{Unit, Weighed};
use crate::pipeline::snapshot::state;
use crate::pipeline::{NoObserver, Observer, Pinned, Report, Role, SyncOptions, SyncRun};
use crate::probe::Prefixed;
use crate::store::{PutOptions, Store};

/// The plan document's format.
pub const FORMAT: u32 = 1;
/// The plan document's key in the plan's directory.
pub const PLAN_KEY: &str = "plan.json";
/// The pinned root's key in the plan's directory.
pub const ROOT_KEY: &str = "root";

/// A plan: what one distributed round copies, in units.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanDoc {
    /// [`FORMAT`].
    pub format: u32,
    /// Unique per plan (`<generation>-<hex>`); the name of its directory.
    pub id: String,
    /// When it was made (Unix ms).
    pub created_ms: i64,
    /// The source location, as given (no secrets).
    pub source: String,
    /// The destination location, as given (no secrets).
    pub destination: String,
    /// The pinned source generation.
    pub source_generation: u64,
    /// SHA-256 of the pinned root's bytes (kept as [`ROOT_KEY`]).
    pub source_root_sha256: String,
    /// The destination's root when planning; the commit refuses if it changed.
    pub destination_root: Option<RootId>,
    /// Bytes and blobs to copy, all units together.
    pub bytes: u64,
    /// Blobs to copy, all units together.
    pub objects: u64,
    /// The units, numbered from 0.
    pub units: Vec<PlanUnit>,
    /// The round's `--bwlimit`, all workers together (bytes per second).
    #[serde(default)]
    pub bwlimit: Option<u64>,
    /// How many units run at once (`--workers`): a unit run without a `--bwlimit` of its
    /// own takes this share of the round's.
    #[serde(default)]
    pub workers: Option<usize>,
    /// The SHA-256 `plan.json` records of this document (set when it is read): each
    /// marker names it, so a marker of another plan under the same id is not taken.
    #[serde(skip)]
    pub sealed_sha256: String,
}

/// One unit of a plan: shard directories of similar bytes in all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanUnit {
    /// Its number (`--unit`, `JOB_COMPLETION_INDEX`).
    pub index: usize,
    /// Bytes to copy.
    pub bytes: u64,
    /// Blobs to copy.
    pub objects: u64,
    /// Its shard directories, in key order.
    pub shards: Vec<Weighed>,
}

impl PlanDoc {
    /// A unit's share of the round's bandwidth limit, when the plan sets one and says
    /// how many units run at once.
    pub fn bwlimit_per_worker(&self) -> Option<u64> {
        let workers = self.workers.filter(|w| *w > 0)? as u64;
        Some((self.bwlimit? / workers).max(1))
    }

    /// Every unit's shard directories.
    pub fn all_shards(&self) -> Vec<Unit> {
        let mut all: Vec<Unit> = self
            .units
            .iter()
            .flat_map(|u| u.shards.iter().map(|s| s.unit.clone()))
            .collect();
        all.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        all
    }

    /// Unit `i`, or a one-line refusal naming the plan's range.
    pub fn unit(&self, i: usize) -> Result<&PlanUnit> {
        self.units.get(i).ok_or_else(|| {
            Error::invalid_input(format!(
                "--unit {i}: plan {} has units 0 to {}; check --unit (or JOB_COMPLETION_INDEX) against the plan's --units",
                self.id,
                self.units.len().saturating_sub(1)
            ))
        })
    }
}

/// Packs weighed shard directories into `n` units of similar bytes: largest first, each
/// into the unit with the fewest bytes so far (then the fewest shards), so no unit holds
/// much more than its share plus the largest shard. Units may be empty when there are
/// fewer shards than units (a job of `n` completions still finds each of its units).
pub fn pack(mut shards: Vec<Weighed>, n: usize) -> Vec<PlanUnit> {
    let n = n.max(1);
    shards.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.unit.prefix.cmp(&b.unit.prefix))
    });
    let mut units: Vec<PlanUnit> = (0..n)
        .map(|index| PlanUnit {
            index,
            bytes: 0,
            objects: 0,
            shards: Vec::new(),
        })
        .collect();
    for s in shards {
        // The slice is not empty (n >= 1), so a minimum exists.
        let Some(u) = units
            .iter_mut()
            .min_by_key(|u| (u.bytes, u.shards.len(), u.index))
        else {
            break;
        };
        u.bytes += s.bytes;
        u.objects += s.objects;
        u.shards.push(s);
    }
    for u in &mut units {
        u.shards.sort_by(|a, b| a.unit.prefix.cmp(&b.unit.prefix));
    }
    units
}

/// A document with the SHA-256 of its exact bytes, as stored.
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    sha256: String,
    #[serde(borrow)]
    body: &'a serde_json::value::RawValue,
}

/// `v` as a sealed document, and the SHA-256 it records.
fn seal<T: Serialize>(v: &T) -> Result<(Bytes, String)> {
    let body = serde_json::to_string_pretty(v).map_err(|e| Error::other(e.to_string()))?;
    let raw =
        serde_json::value::RawValue::from_string(body).map_err(|e| Error::other(e.to_string()))?;
    let sha256 = hex::encode(Sha256::digest(raw.get().as_bytes()));
    let sealed = Sealed {
        sha256: sha256.clone(),
        body: &raw,
    };
    let bytes = serde_json::to_vec_pretty(&sealed).map_err(|e| Error::other(e.to_string()))?;
    Ok((Bytes::from(bytes), sha256))
}

/// A sealed document read back: refused (with `fix`, what to do) unless its bytes have
/// the SHA-256 it records.
fn unseal<T: for<'de> Deserialize<'de>>(what: &str, fix: &str, bytes: &[u8]) -> Result<T> {
    Ok(unseal_sha(what, fix, bytes)?.0)
}

/// [`unseal`], with the SHA-256 the document records.
fn unseal_sha<T: for<'de> Deserialize<'de>>(
    what: &str,
    fix: &str,
    bytes: &[u8],
) -> Result<(T, String)> {
    let bad = |why: String| Error::repository(format!("{what} is damaged ({why}); {fix}"));
    let sealed: Sealed = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let got = hex::encode(Sha256::digest(sealed.body.get().as_bytes()));
    if got != sealed.sha256 {
        return Err(bad(format!(
            "its SHA-256 is {got}, not the {} it records",
            sealed.sha256
        )));
    }
    let v = serde_json::from_str(sealed.body.get()).map_err(|e| bad(e.to_string()))?;
    Ok((v, sealed.sha256))
}

async fn put(store: &dyn Store, key: &str, data: Bytes) -> Result<()> {
    let crc = crc32fast::hash(&data);
    store.put(key, data, crc, &PutOptions::default()).await
}

/// Writes a plan into its directory `store`: the pinned root first, then the document.
/// Returns the SHA-256 the document records.
pub async fn write_plan(store: &dyn Store, plan: &PlanDoc, root: &[u8]) -> Result<String> {
    put(store, ROOT_KEY, Bytes::copy_from_slice(root)).await?;
    let (bytes, sha) = seal(plan)?;
    put(store, PLAN_KEY, bytes).await?;
    Ok(sha)
}

/// Reads the plan of directory `store` and its pinned root, both checked.
pub async fn read_plan(store: &dyn Store) -> Result<(PlanDoc, Vec<u8>)> {
    let Some((_, body)) = crate::store::read_whole(store, PLAN_KEY).await? else {
        return Err(Error::location_not_found(format!(
            "{} holds no {PLAN_KEY}; check the --plan URL (it is printed by snapferry plan)",
            store.describe()
        )));
    };
    let (mut plan, sha): (PlanDoc, String) = unseal_sha(
        &format!("the plan in {}", store.describe()),
        "make a new plan",
        &body,
    )?;
    plan.sealed_sha256 = sha;
    if plan.format != FORMAT {
        return Err(Error::invalid_input(format!(
            "plan {} has format {}, this snapferry reads {FORMAT}; use the version that made it",
            plan.id, plan.format
        )));
    }
    let Some((_, root)) = crate::store::read_whole(store, ROOT_KEY).await? else {
        return Err(Error::repository(format!(
            "plan {} has no pinned root ({ROOT_KEY}); make a new plan",
            plan.id
        )));
    };
    if state::root_hash(&root) != plan.source_root_sha256 {
        return Err(Error::repository(format!(
            "plan {}'s pinned root does not have the SHA-256 the plan records; make a new plan",
            plan.id
        )));
    }
    Ok((plan, root.to_vec()))
}

/// A unit's completion marker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    /// The plan's id.
    pub plan: String,
    /// The SHA-256 its `plan.json` records.
    #[serde(default)]
    pub plan_sha256: String,
    /// The unit's number.
    pub unit: usize,
    /// Objects this run copied.
    pub copied_objects: u64,
    /// Bytes this run copied.
    pub copied_bytes: u64,
    /// Objects already in place.
    pub skipped_objects: u64,
    /// Wall time of the run, seconds.
    pub duration_seconds: f64,
    /// Which host ran it.
    pub host: String,
    /// When it finished (Unix ms).
    pub finished_ms: i64,
    /// What the destination holds under the unit's shard directories once it finished.
    pub landed: Landed,
}

/// A digest of what a unit's shard directories hold at the destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Landed {
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
    /// SHA-256 over `key\tsize\n` of every object, in key order.
    pub sha256: String,
}

/// The marker key of unit `i`.
pub fn marker_key(i: usize) -> String {
    format!("units/{i}.json")
}

/// The directory of unit `i`'s lease (relative to the plan's).
pub fn lease_dir(i: usize) -> String {
    format!("units/{i}/")
}

/// What the destination holds under `shards`: listed, counted and digested.
pub async fn landed(dst: &dyn Store, shards: &[Unit]) -> Result<Landed> {
    use futures::TryStreamExt;
    let mut h = Sha256::new();
    let (mut objects, mut bytes) = (0, 0);
    for s in shards {
        let mut pages = dst.list_prefix(&s.prefix, None);
        while let Some(page) = pages.try_next().await? {
            for o in page {
                h.update(format!("{}\t{}\n", o.key, o.size).as_bytes());
                objects += 1;
                bytes += o.size;
            }
        }
    }
    Ok(Landed {
        objects,
        bytes,
        sha256: hex::encode(h.finalize()),
    })
}

/// Writes unit `m.unit`'s marker.
pub async fn write_marker(store: &dyn Store, m: &Marker) -> Result<()> {
    put(store, &marker_key(m.unit), seal(m)?.0).await
}

/// Unit `i`'s marker of `plan`: `None` when there is none, or when the one there was left
/// by another plan (of that id, or copied here: the unit has not run for this plan); an
/// error when it is damaged.
async fn read_marker(store: &dyn Store, plan: &PlanDoc, i: usize) -> Result<Option<Marker>> {
    let Some((_, body)) = crate::store::read_whole(store, &marker_key(i)).await? else {
        return Ok(None);
    };
    let what = format!("unit {i}'s marker");
    let m: Marker = unseal(&what, "run the unit again: it rewrites its marker", &body)?;
    if m.plan != plan.id || m.unit != i || m.plan_sha256 != plan.sealed_sha256 {
        tracing::warn!(
            "{}: the marker of unit {i} is plan {} unit {}'s, not this plan's; counting the unit as not finished",
            store.describe(),
            m.plan,
            m.unit
        );
        return Ok(None);
    }
    Ok(Some(m))
}

/// Every unit's marker; fails with [`crate::ErrorKind::Incomplete`] naming the units
/// that have none.
pub async fn markers(store: &dyn Store, plan: &PlanDoc) -> Result<Vec<Marker>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for u in &plan.units {
        match read_marker(store, plan, u.index).await? {
            Some(m) => found.push(m),
            None => missing.push(u.index),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let list: Vec<String> = missing.iter().map(usize::to_string).collect();
    Err(Error::incomplete(format!(
        "not committing plan {}: unit{} {} of {} {} not finished (no completion marker); run {} (snapferry sync --plan URL --unit I), then commit again",
        plan.id,
        if missing.len() == 1 { "" } else { "s" },
        list.join(", "),
        plan.units.len(),
        if missing.len() == 1 { "has" } else { "have" },
        if missing.len() == 1 { "it" } else { "them" },
    )))
}

/// Checks a plan id given by `--id`: it names a directory on every store.
pub fn check_id(id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !id.starts_with('.');
    if ok {
        return Ok(());
    }
    Err(Error::invalid_input(format!(
        "--id {id:?}: a plan id is 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'; e.g. round-2026-12-01"
    )))
}

/// `snapferry plan`: pins the source, weighs the changed shard directories, packs them
/// into `units` units and writes the plan under `control` (the control prefix's store),
/// in `plans/<id>/`. Returns the plan, its directory relative to `control`, and whether
/// a plan of that `id` was there already (then it is returned as it is, so a plan step
/// run again, by a Job's retry say, does not make a second plan). Nothing is written to
/// the destination.
pub async fn plan(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    control: Arc<dyn Store>,
    mut opts: SyncOptions,
    (units, id, workers): (usize, Option<String>, Option<usize>),
    (source, destination): (String, String),
) -> Result<(PlanDoc, String, bool)> {
    if units == 0 {
        return Err(Error::invalid_input(
            "--units 0 plans nothing; give the number of units to split the round into (e.g. the workers times 4)",
        ));
    }
    if workers == Some(0) {
        return Err(Error::invalid_input(
            "--workers 0 runs no unit; give how many units run at once",
        ));
    }
    if let Some(id) = &id {
        check_id(id)?;
        let dir = format!("plans/{id}/");
        let store = Prefixed::new(control.clone(), &dir);
        if store.head(PLAN_KEY).await?.is_some() {
            let (doc, _) = read_plan(&store).await?;
            if doc.source != source || doc.destination != destination || doc.units.len() != units {
                return Err(Error::invalid_input(format!(
                    "plan {id} exists for {} -> {} in {} units; give another --id for this round",
                    doc.source,
                    doc.destination,
                    doc.units.len()
                )));
            }
            if let Some((_, current)) =
                crate::repo::model::read_root_bytes(dst.as_ref(), None).await?
            {
                if state::root_hash(&current) == doc.source_root_sha256 {
                    return Err(Error::invalid_input(format!(
                        "plan {id} was committed already (the destination's root is its pinned root); give a new --id for the next round"
                    )));
                }
            }
            return Ok((doc, dir, true));
        }
    }
    let (bwlimit, dry_run) = (opts.bwlimit, opts.dry_run);
    // The plan step writes nothing but the plan; a dry run not even that.
    opts.dry_run = true;
    opts.role = Role::Plan;
    let run = SyncRun::new(src, dst, opts, Arc::new(NoObserver));
    run.preflight().await?;
    let report = run.run().await?;
    if let Some(e) = report.fatal_error {
        return Err(Error::new(
            report.fatal_error_kind.unwrap_or(ErrorKind::Other),
            e,
        ));
    }
    let Some(planned) = report
        .snapshot
        .and_then(|s| s.planned.map(|p| (s.source_generation, p)))
    else {
        return Err(Error::invalid_input(format!(
            "{source} holds no snapshot repository (no index.latest or root index-N); plan splits repositories by shard, so copy other data with a plain sync"
        )));
    };
    let (generation, planned) = planned;
    let units = pack(planned.units, units);
    let mut doc = PlanDoc {
        format: FORMAT,
        id: id.unwrap_or_else(|| format!("{generation}-{:08x}", rand::random::<u32>())),
        created_ms: crate::store::fs::now_ms(),
        source,
        destination,
        source_generation: generation,
        source_root_sha256: state::root_hash(&planned.root),
        destination_root: planned.destination_root,
        bytes: units.iter().map(|u| u.bytes).sum(),
        objects: units.iter().map(|u| u.objects).sum(),
        units,
        bwlimit,
        workers,
        sealed_sha256: String::new(),
    };
    let dir = format!("plans/{}/", doc.id);
    let store = Prefixed::new(control, &dir);
    if !dry_run {
        doc.sealed_sha256 = write_plan(&store, &doc, &planned.root).await?;
    }
    Ok((doc, dir, false))
}

/// The pinned root of a plan, as a run's role takes it.
fn pinned(doc: &PlanDoc, root: Vec<u8>) -> Arc<Pinned> {
    Arc::new(Pinned {
        generation: doc.source_generation,
        root,
        destination_root: doc.destination_root.clone(),
    })
}

/// What a step of a plan (a unit, the commit) runs with: the plan's directory, the plan
/// and its pinned root, both stores, the options and the observer.
pub struct Step {
    /// The plan's directory.
    pub plan_store: Arc<dyn Store>,
    /// The plan.
    pub doc: PlanDoc,
    /// Its pinned root.
    pub root: Vec<u8>,
    /// The source.
    pub src: Arc<dyn Store>,
    /// The destination.
    pub dst: Arc<dyn Store>,
    /// The run's options (its role is set here).
    pub opts: SyncOptions,
    /// Progress and events.
    pub observer: Arc<dyn Observer>,
}

/// `snapferry sync --plan URL --unit I`: unit `i` of the plan, preflighted and ready to
/// run (the caller drives it: progress, Ctrl-C); hand its report to [`UnitEnd::finish`],
/// which writes the marker when every blob landed verified.
pub async fn prepare_unit(step: Step, i: usize) -> Result<(SyncRun, UnitEnd)> {
    let Step {
        plan_store,
        doc,
        root,
        src,
        dst,
        mut opts,
        observer,
    } = step;
    let unit = doc.unit(i)?;
    let shards: Vec<Unit> = unit.shards.iter().map(|s| s.unit.clone()).collect();
    if opts.bwlimit.is_none() {
        opts.bwlimit = doc.bwlimit_per_worker();
    }
    opts.role = Role::Unit(pinned(&doc, root), shards.clone());
    let lease = Arc::new(Prefixed::new(plan_store.clone(), &lease_dir(i)));
    let run = SyncRun::new(src, dst.clone(), opts, observer).with_unit_lease(lease);
    run.preflight().await?;
    let end = UnitEnd {
        plan_store,
        dst,
        plan_sha256: doc.sealed_sha256.clone(),
        plan: doc.id.clone(),
        unit: i,
        shards,
    };
    Ok((run, end))
}

/// What is left of a unit once its run ended: the marker.
pub struct UnitEnd {
    plan_store: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    plan: String,
    plan_sha256: String,
    unit: usize,
    shards: Vec<Unit>,
}

impl UnitEnd {
    /// Writes the unit's marker if its run finished with every blob verified (no fatal
    /// error, no failure, not interrupted); `None`: it did not, and nothing is written.
    pub async fn finish(self, report: &Report) -> Result<Option<Marker>> {
        // A dry run copied nothing: it is no unit's completion.
        let finished = !report.dry_run
            && report.fatal_error.is_none()
            && report.failed_objects == 0
            && !report.interrupted;
        if !finished {
            return Ok(None);
        }
        let marker = Marker {
            plan: self.plan,
            plan_sha256: self.plan_sha256,
            unit: self.unit,
            copied_objects: report.copied_objects,
            copied_bytes: report.copied_bytes,
            skipped_objects: report.skipped_objects,
            duration_seconds: report.duration_seconds,
            host: crate::lease::host_name(),
            finished_ms: crate::store::fs::now_ms(),
            landed: landed(self.dst.as_ref(), &self.shards).await?,
        };
        write_marker(self.plan_store.as_ref(), &marker).await?;
        Ok(Some(marker))
    }
}

/// `snapferry commit --plan URL`: refuses with [`ErrorKind::Incomplete`] naming the
/// units without a marker; else the barrier (index and root metadata, every planned
/// shard confirmed at the destination, the commit point), under the destination's lease,
/// preflighted and ready to run.
pub async fn prepare_commit(step: Step) -> Result<SyncRun> {
    markers(step.plan_store.as_ref(), &step.doc).await?;
    let mut opts = step.opts;
    opts.role = Role::Commit(pinned(&step.doc, step.root), step.doc.all_shards());
    let run = SyncRun::new(step.src, step.dst, opts, step.observer);
    run.preflight().await?;
    Ok(run)
}

/// One unit in `plan status`.
#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    /// Its number.
    pub unit: usize,
    /// Shard directories.
    pub shards: usize,
    /// Bytes the plan weighed.
    pub planned_bytes: u64,
    /// Its marker, once it finished.
    pub marker: Option<Marker>,
}

/// `snapferry plan status URL`: every unit's marker, summed.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The plan's id.
    pub plan: String,
    /// Units in the plan.
    pub units: usize,
    /// Units with a marker.
    pub finished: usize,
    /// Units without one, by number.
    pub unfinished: Vec<usize>,
    /// Bytes and objects the finished units copied, and skipped as already there.
    pub copied_bytes: u64,
    /// Objects the finished units copied.
    pub copied_objects: u64,
    /// Objects the finished units found in place.
    pub skipped_objects: u64,
    /// The finished units' wall times, seconds: the longest, and the median.
    pub longest_seconds: f64,
    /// The median of the finished units' wall times.
    pub median_seconds: f64,
    /// Finished units that took more than twice the median (and over a second): the
    /// stragglers, slowest first.
    pub stragglers: Vec<usize>,
    /// Each unit.
    pub detail: Vec<UnitStatus>,
}

/// Reads every unit's marker of the plan in `store` and sums them.
pub async fn status(store: &dyn Store, doc: &PlanDoc) -> Result<Status> {
    let mut detail = Vec::new();
    for u in &doc.units {
        // A damaged marker is no finished unit here either, but it is said, not fatal
        // to the status (the commit refuses on it).
        let marker = match read_marker(store, doc, u.index).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        detail.push(UnitStatus {
            unit: u.index,
            shards: u.shards.len(),
            planned_bytes: u.bytes,
            marker,
        });
    }
    let done: Vec<&Marker> = detail.iter().filter_map(|d| d.marker.as_ref()).collect();
    let mut times: Vec<f64> = done.iter().map(|m| m.duration_seconds).collect();
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let mut slow: Vec<&Marker> = done
        .iter()
        .copied()
        .filter(|m| m.duration_seconds > (2.0 * median).max(1.0))
        .collect();
    slow.sort_by(|a, b| b.duration_seconds.total_cmp(&a.duration_seconds));
    Ok(Status {
        plan: doc.id.clone(),
        units: doc.units.len(),
        finished: done.len(),
        unfinished: detail
            .iter()
            .filter(|d| d.marker.is_none())
            .map(|d| d.unit)
            .collect(),
        copied_bytes: done.iter().map(|m| m.copied_bytes).sum(),
        copied_objects: done.iter().map(|m| m.copied_objects).sum(),
        skipped_objects: done.iter().map(|m| m.skipped_objects).sum(),
        longest_seconds: times.last().copied().unwrap_or(0.0),
        median_seconds: median,
        stragglers: slow.iter().map(|m| m.unit).collect(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(prefix: &str, bytes: u64) -> Weighed {
        Weighed {
            unit: Unit {
                prefix: prefix.into(),
                index_id: "i".into(),
                generation: Some("g".into()),
            },
            bytes,
            objects: 1,
        }
    }

    #[test]
    fn packing_balances_bytes_and_keeps_every_shard_once() {
        let sizes = [90, 10, 40, 40, 30, 20, 20, 5, 0, 0];
        let shards: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, b)| shard(&format!("indices/i/{i}/"), *b))
            .collect();
        let units = pack(shards, 3);
        assert_eq!(units.len(), 3);
        let mut all: Vec<_> = units
            .iter()
            .flat_map(|u| u.shards.iter().map(|s| s.unit.prefix.clone()))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), sizes.len(), "every shard in exactly one unit");
        let total: u64 = sizes.iter().sum();
        let most = units.iter().map(|u| u.bytes).max().unwrap();
        assert!(most <= total / 3 + 90, "{most} of {total}");
        assert_eq!(units.iter().map(|u| u.bytes).sum::<u64>(), total);
        // More units than shards: the rest are empty, still numbered.
        let units = pack(vec![shard("indices/i/0/", 1)], 4);
        assert_eq!(
            units.iter().map(|u| u.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(units.iter().filter(|u| u.shards.is_empty()).count(), 3);
    }

    #[test]
    fn a_unit_takes_its_share_of_the_rounds_rate_when_the_plan_gives_both() {
        let mut doc = PlanDoc {
            format: FORMAT,
            id: "p".into(),
            created_ms: 0,
            source: "s".into(),
            destination: "d".into(),
            source_generation: 1,
            source_root_sha256: String::new(),
            destination_root: None,
            bytes: 0,
            objects: 0,
            units: Vec::new(),
            bwlimit: Some(100 << 20),
            workers: Some(4),
            sealed_sha256: String::new(),
        };
        assert_eq!(doc.bwlimit_per_worker(), Some(25 << 20));
        doc.workers = None;
        assert_eq!(doc.bwlimit_per_worker(), None, "no parallelism: no share");
        doc.workers = Some(0);
        assert_eq!(doc.bwlimit_per_worker(), None);
        doc.workers = Some(4);
        doc.bwlimit = None;
        assert_eq!(doc.bwlimit_per_worker(), None, "no rate: none");
    }

    #[test]
    fn a_sealed_document_that_was_altered_is_refused() {
        let m = Marker {
            plan: "p".into(),
            plan_sha256: "s".into(),
            unit: 1,
            copied_objects: 2,
            copied_bytes: 3,
            skipped_objects: 4,
            duration_seconds: 0.5,
            host: "h".into(),
            finished_ms: 6,
            landed: Landed {
                objects: 1,
                bytes: 2,
                sha256: "x".into(),
            },
        };
        let (bytes, _) = seal(&m).unwrap();
        assert_eq!(unseal::<Marker>("m", "fix", &bytes).unwrap(), m);
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let altered = text.replace("\"copied_bytes\": 3", "\"copied_bytes\": 4");
        assert_ne!(altered, text);
        let e = unseal::<Marker>("m", "fix", altered.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::RepositoryFormat, "{e}");
        assert!(unseal::<Marker>("m", "fix", b"{}").is_err());
    }
}
