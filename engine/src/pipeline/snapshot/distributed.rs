//! The two steps of a distributed round that run inside the snapshot pipeline (the
//! barrier, `commit`, is the whole round's commit path with no units of its own; see
//! [`super::run`]): weighing the changed units for a plan, and copying one unit's shard
//! directories. The plan document, its units and markers are [`crate::distributed`]'s.

use std::sync::Arc;

use serde::Serialize;

use super::{commit, data_phase, metadata_phases, planner, state, Outcome, SnapshotReport};
use crate::error::Result;
use crate::pipeline::Ctx;
use crate::repo::model::{BlobKind, RepositoryData};

/// A root as a plan records it, to check later that nothing else committed meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RootId {
    /// Its generation N (`index-N`).
    pub generation: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// What `snapferry plan` found: each changed unit weighed, and the destination root the
/// plan was made against.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    /// The units, in key order.
    pub units: Vec<planner::Weighed>,
    /// The destination's root when planning (`None`: it holds no repository).
    pub destination_root: Option<RootId>,
    /// The pinned source root's bytes.
    #[serde(skip)]
    pub root: Vec<u8>,
}

/// The destination's current root, identified.
pub(crate) async fn destination_root(ctx: &Ctx) -> Result<Option<RootId>> {
    Ok(commit::destination_root(ctx)
        .await?
        .map(|(generation, bytes)| RootId {
            generation,
            sha256: state::root_hash(&bytes),
        }))
}

/// The plan step: every unit listed on both sides and weighed; nothing is written.
pub(super) async fn weigh(
    ctx: &Arc<Ctx>,
    mut report: SnapshotReport,
    src: Arc<RepositoryData>,
    root: &[u8],
    units: Vec<planner::Unit>,
    held: Arc<planner::Held>,
) -> Result<Outcome> {
    let work = planner::unit_stream(ctx.clone(), src, units, true, held);
    let units = planner::weigh(work).await?;
    report.examined_units = units.len() as u64;
    report.planned = Some(Planned {
        units,
        destination_root: destination_root(ctx).await?,
        root: root.to_vec(),
    });
    Ok(Outcome::new(report))
}

/// One unit: its shard directories' data blobs, then their shard `snap-*`, then their
/// shard `index-*` (each phase only after the one before landed in full). Index and
/// root metadata and the root are the barrier's.
pub(super) async fn unit(
    ctx: &Arc<Ctx>,
    mut report: SnapshotReport,
    src: Arc<RepositoryData>,
    units: Vec<planner::Unit>,
    held: Arc<planner::Held>,
) -> Result<Outcome> {
    report.planned_from = "metadata".into();
    let mut out = Outcome::new(report.clone());
    let Some(found) = data_phase(ctx, &src, units, true, &held, &mut report, &mut out).await?
    else {
        return Ok(out);
    };
    let shard_level = [BlobKind::ShardSnapshot, BlobKind::ShardIndex];
    if metadata_phases(ctx, found.deferred, &shard_level, &mut report, &mut out).await? {
        return Ok(out);
    }
    out.report = report;
    Ok(out)
}

/// The barrier's check that nothing committed since the plan: the destination's root is
/// still the one the plan was made against.
/// (Or already holds the pinned root: this barrier ran before.)
pub(super) async fn unchanged_since_plan(
    ctx: &Ctx,
    planned: &Option<RootId>,
    pinned: &[u8],
) -> Result<()> {
    let now = destination_root(ctx).await?;
    let done = now
        .as_ref()
        .is_some_and(|r| r.sha256 == state::root_hash(pinned));
    if now == *planned || done {
        return Ok(());
    }
    let show = |r: &Option<RootId>| match r {
        Some(r) => format!("index-{}", r.generation),
        None => "no repository".to_string(),
    };
    Err(crate::Error::precondition(format!(
        "not committing: the destination's root changed since the plan was made (it was {}, it is {} now with other bytes): another round committed meanwhile; make a new plan",
        show(planned),
        show(&now)
    )))
}
