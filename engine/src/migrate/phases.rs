//! A phase as one list of steps ([`steps`]). A real run executes the steps in order;
//! `--dry-run` walks the same list and prints what each would do, so the plan an
//! operator reviews and the run that follows cannot disagree. Each step's description
//! sits next to its action (in `Migration::step`), and a dry run makes only the
//! read-only calls that decide what a step would do (is the repository registered,
//! which destination indices exist).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::job::{settings_json, settings_shown};
use super::{Migration, PhaseRecord, State};
use crate::cluster::compat;
use crate::error::{Error, Result};
use crate::pipeline::{NoObserver, Report, SyncRun};

/// Which phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Full snapshot, copy, restore.
    Baseline,
    /// Delta snapshot, copy, restore over closed indices.
    Incremental,
    /// Writes stopped: final round, verification, checklist.
    Cutover,
}

/// One step of a phase, in the order [`steps`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Cutover: every source index write-blocked (checked, or set with
    /// `--set-write-block`).
    StopWrites,
    /// Both clusters reachable and compatible, the stores reachable, the index patterns
    /// matching, no snapshot running. Read-only; a dry run makes it too.
    Preflight,
    /// The source repository registered where it is not yet.
    RegisterSource,
    /// A new snapshot of the indices on the source.
    Snapshot,
    /// The snapshot polled until it ends; anything but a full success stops the phase.
    AwaitSnapshot,
    /// Each index's document count on the source, at snapshot time.
    CountSource,
    /// The snapshot-aware copy of the repository store.
    Copy,
    /// The destination repository re-registered read-only, so that its cluster reads the
    /// generation just written.
    RefreshDestination,
    /// Destination indices that exist already are closed (a restore replaces them).
    CloseExisting,
    /// The snapshot restored on the destination.
    Restore,
    /// Each restored index polled until every shard is recovered.
    AwaitRecovery,
    /// Each index's document count on the destination.
    CountDestination,
}

/// The steps of `phase`, in order.
pub fn steps(phase: Phase) -> Vec<Step> {
    let mut s = Vec::new();
    if phase == Phase::Cutover {
        s.push(Step::StopWrites);
    }
    s.extend([
        Step::Preflight,
        Step::RegisterSource,
        Step::Snapshot,
        Step::AwaitSnapshot,
        Step::CountSource,
        Step::Copy,
        Step::RefreshDestination,
        Step::CloseExisting,
        Step::Restore,
        Step::AwaitRecovery,
        Step::CountDestination,
    ]);
    s
}

/// What the steps of one phase pass on to the later ones.
struct Progress {
    phase: Phase,
    /// `--set-write-block`.
    set_write_block: bool,
    /// `Some`: a dry run, collecting what each step would do, one line per call.
    plan: Option<Vec<String>>,
    snapshot: String,
    /// The source indices the patterns match (from the preflight).
    indices: Vec<String>,
    /// Per index: (source, destination) document counts.
    counts: BTreeMap<String, (u64, u64)>,
    /// The copy's report.
    report: Option<Report>,
    /// When the first destination index was closed: the downtime of the destination.
    closing: Option<Instant>,
    closed_ms: u64,
}

impl Progress {
    /// Records a planned call; true when this is a dry run (the step does nothing more).
    fn planned(&mut self, line: impl FnOnce() -> String) -> bool {
        match &mut self.plan {
            Some(p) => {
                p.push(line());
                true
            }
            None => false,
        }
    }

    fn dry(&self) -> bool {
        self.plan.is_some()
    }
}

impl Migration {
    /// Preflight: reachable, compatible, repositories in place, no snapshot running.
    /// Returns the source indices the patterns match.
    pub async fn preflight(&self) -> Result<Vec<String>> {
        let sv = self.src.version().await?;
        let dv = self.dst.version().await?;
        compat::check_restore(&sv, &dv, None).map_err(Error::invalid_input)?;
        // Both repository stores reachable, bucket present, credentials good, and the copy
        // settings valid: sync's own preflight, before anything changes on either cluster.
        SyncRun::new(
            self.src_store.clone(),
            self.dst_store.clone(),
            self.job.sync_options()?,
            Arc::new(NoObserver),
        )
        .preflight()
        .await?;
        let mut indices = Vec::new();
        for p in &self.job.indices {
            let m = self.src.indices(p).await?;
            if m.is_empty() {
                return Err(Error::invalid_input(format!("index pattern {p:?} matches no index on the source cluster; fix `indices` in the job file")));
            }
            indices.extend(m);
        }
        indices.sort();
        indices.dedup();
        if self.src.snapshot_running().await? {
            return Err(Error::invalid_input(
                "a snapshot is already running on the source cluster; wait for it to finish",
            ));
        }
        Ok(indices)
    }

    fn snapshot_name(phase: Phase) -> String {
        format!(
            "snapferry-{}-{}",
            match phase {
                Phase::Baseline => "baseline",
                Phase::Incremental => "incr",
                Phase::Cutover => "cutover",
            },
            crate::store::fs::now_ms()
        )
    }

    /// `--dry-run`: the steps of the phase, one line per call each would make, in order;
    /// only read-only calls are made. At cutover, `set_write_block` plans setting
    /// `index.blocks.write` on the source indices instead of checking it.
    pub async fn plan(&self, phase: Phase, set_write_block: bool) -> Result<Vec<String>> {
        let mut p = self.progress(phase, set_write_block, Some(Vec::new()));
        for s in steps(phase) {
            self.step(s, &mut p).await?;
        }
        Ok(p.plan.unwrap_or_default())
    }

    /// Runs one phase: its steps in order, then the phase recorded in the state file.
    /// At cutover, writes to the source indices must be stopped first
    /// ([`Migration::stop_writes`]; `set_write_block` stops them instead of checking).
    pub async fn run(
        &self,
        phase: Phase,
        set_write_block: bool,
        state_file: &Path,
    ) -> Result<PhaseRecord> {
        let mut p = self.progress(phase, set_write_block, None);
        for s in steps(phase) {
            self.step(s, &mut p).await?;
        }
        let record = PhaseRecord {
            phase,
            generation: p
                .report
                .as_ref()
                .and_then(|r| r.snapshot.as_ref())
                .map(|s| s.source_generation),
            bytes_moved: p.report.as_ref().map_or(0, |r| r.copied_bytes),
            snapshot: p.snapshot,
            closed_ms: p.closed_ms,
            counts: p.counts,
            completed: true,
            finished_at: crate::store::fs::now_ms() / 1000,
        };
        let mut state = State::load(state_file)?;
        state.phases.push(record.clone());
        state.save(state_file)?;
        Ok(record)
    }

    fn progress(&self, phase: Phase, set_write_block: bool, plan: Option<Vec<String>>) -> Progress {
        Progress {
            phase,
            set_write_block,
            plan,
            snapshot: Self::snapshot_name(phase),
            indices: Vec::new(),
            counts: BTreeMap::new(),
            report: None,
            closing: None,
            closed_ms: 0,
        }
    }

    /// One step: in a dry run, what it would do (into `p.plan`); else, done.
    async fn step(&self, step: Step, p: &mut Progress) -> Result<()> {
        let (s, d) = (&self.job.source, &self.job.destination);
        let snap = p.snapshot.clone();
        let restore_body = |indices: &[String]| json!({"indices": indices.join(","), "include_global_state": false});
        match step {
            Step::StopWrites if p.dry() => {
                for i in self.source_indices().await? {
                    let set = p.set_write_block;
                    p.planned(|| {
                        if set {
                            format!(
                                "PUT {}/{i}/_settings {}",
                                s.url,
                                json!({"index.blocks.write": true})
                            )
                        } else {
                            format!(
                                "GET {}/{i}/_settings/index.blocks.write (must be true: writes stopped)",
                                s.url
                            )
                        }
                    });
                }
            }
            Step::StopWrites => self.stop_writes(p.set_write_block).await?,
            Step::Preflight => p.indices = self.preflight().await?,
            Step::RegisterSource => {
                if self.src.repository(&s.repository).await?.is_none()
                    && !p.planned(|| {
                        format!(
                            "PUT {}/_snapshot/{} {}",
                            s.url,
                            s.repository,
                            json!({"type": s.repository_type, "settings": settings_shown(s, false)})
                        )
                    })
                {
                    self.src
                        .register_repository(
                            &s.repository,
                            &s.repository_type,
                            settings_json(s, false),
                        )
                        .await?;
                }
                // The destination repository is registered read-only, and only once
                // snapferry has written a generation into it (an empty location would
                // fail verification): from then on its cluster never writes where
                // snapferry does.
            }
            Step::Snapshot => {
                let body = restore_body(&p.indices);
                if !p.planned(|| format!("PUT {}/_snapshot/{}/{snap} {body}", s.url, s.repository))
                {
                    self.src
                        .create_snapshot(&s.repository, &snap, &p.indices.join(","))
                        .await?;
                }
            }
            Step::AwaitSnapshot => {
                if !p.planned(|| {
                    format!(
                        "GET {}/_snapshot/{}/{snap} (polled until it ends)",
                        s.url, s.repository
                    )
                }) {
                    let info = self
                        .src
                        .wait_snapshot(&s.repository, &snap, Duration::from_secs(6 * 3600))
                        .await?;
                    if !info.succeeded() {
                        return Err(Error::other(format!(
                            "snapshot {snap} ended {} with {} failed shards; nothing was copied",
                            info.state, info.failed_shards
                        )));
                    }
                }
            }
            // Source counts at snapshot time (writes are expected to continue except at
            // cutover).
            Step::CountSource => {
                for i in p.indices.clone() {
                    if !p.planned(|| format!("GET {}/{i}/_count", s.url)) {
                        let n = self.src.count(&i).await?;
                        p.counts.insert(i, (n, 0));
                    }
                }
            }
            Step::Copy => {
                if !p.planned(|| format!("sync {} -> {} (snapshot-aware)", s.store, d.store)) {
                    p.report = Some(self.copy(p.phase).await?);
                }
            }
            Step::RefreshDestination => {
                if self.dst.repository(&d.repository).await?.is_some()
                    && !p.planned(|| format!("DELETE {}/_snapshot/{}", d.url, d.repository))
                {
                    self.dst.delete_repository(&d.repository).await?;
                }
                if !p.planned(|| {
                    format!(
                        "PUT {}/_snapshot/{} {}",
                        d.url,
                        d.repository,
                        json!({"type": d.repository_type, "settings": settings_shown(d, true)})
                    )
                }) {
                    self.dst
                        .register_repository(
                            &d.repository,
                            &d.repository_type,
                            settings_json(d, true),
                        )
                        .await?;
                }
            }
            Step::CloseExisting => {
                let existing = self.dst.indices("*").await?;
                p.closing = Some(Instant::now());
                for i in p.indices.clone() {
                    if existing.contains(&i) && !p.planned(|| format!("POST {}/{i}/_close", d.url))
                    {
                        self.dst.close_index(&i).await?;
                    }
                }
            }
            Step::Restore => {
                let body = restore_body(&p.indices);
                if !p.planned(|| {
                    format!(
                        "POST {}/_snapshot/{}/{snap}/_restore {body}",
                        d.url, d.repository
                    )
                }) {
                    self.dst.restore(&d.repository, &snap, body).await?;
                }
            }
            Step::AwaitRecovery => {
                for i in p.indices.clone() {
                    if !p.planned(|| {
                        format!("GET {}/{i}/_recovery (until every shard is DONE)", d.url)
                    }) {
                        self.dst
                            .wait_recovery(&i, Duration::from_secs(3600))
                            .await?;
                    }
                }
                p.closed_ms = p.closing.map_or(0, |t| t.elapsed().as_millis() as u64);
            }
            Step::CountDestination => {
                for i in p.indices.clone() {
                    if !p.planned(|| format!("GET {}/{i}/_count", d.url)) {
                        let n = self.dst.count(&i).await?;
                        p.counts.entry(i).or_default().1 = n;
                    }
                }
            }
        }
        Ok(())
    }

    /// The source indices the job's patterns match, pattern by pattern.
    pub(super) async fn source_indices(&self) -> Result<Vec<String>> {
        let mut indices = Vec::new();
        for p in &self.job.indices {
            indices.extend(self.src.indices(p).await?);
        }
        Ok(indices)
    }

    /// The phase's copy: a snapshot-aware sync of the repository store, cancelled with
    /// the migration; anything short of a complete copy stops the phase (the
    /// destination keeps its previous generation).
    async fn copy(&self, phase: Phase) -> Result<Report> {
        let mut opts = self.job.sync_options()?;
        // The cutover round is the downtime: what it copied is confirmed at the
        // destination before its commit point, at a listing per changed shard.
        opts.confirm_before_commit = phase == Phase::Cutover;
        let run = SyncRun::new(
            self.src_store.clone(),
            self.dst_store.clone(),
            opts,
            Arc::new(NoObserver),
        );
        run.preflight().await?;
        let handle = run.handle();
        let cancel = self.cancel.clone();
        let forward = tokio::spawn(async move {
            cancel.cancelled().await;
            handle.cancel.cancel();
        });
        let report = run.run().await;
        forward.abort();
        let report = report?;
        if report.interrupted {
            return Err(Error::cancelled());
        }
        if report.failed_objects > 0
            || report.fatal_error.is_some()
            || report.snapshot.as_ref().is_none_or(|s| !s.completed)
        {
            let first = report
                .failures
                .first()
                .map(|f| format!(", first: {}: {}", f.key, f.reason))
                .unwrap_or_default();
            return Err(Error::other(format!(
                "the repository copy did not complete ({} failed objects{first}{}); the destination keeps its previous generation; re-run the phase",
                report.failed_objects,
                report.fatal_error.map(|e| format!(", {e}")).unwrap_or_default()
            )));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_stops_writes_only_at_cutover_and_ends_with_the_counts() {
        for phase in [Phase::Baseline, Phase::Incremental, Phase::Cutover] {
            let s = steps(phase);
            assert_eq!(s.contains(&Step::StopWrites), phase == Phase::Cutover);
            assert_eq!(
                s.first() == Some(&Step::StopWrites),
                phase == Phase::Cutover
            );
            assert_eq!(s.last(), Some(&Step::CountDestination));
            let at = |x| s.iter().position(|y| *y == x);
            // The copy comes after the snapshot ended and before the destination changes.
            assert!(at(Step::AwaitSnapshot) < at(Step::Copy));
            assert!(at(Step::Copy) < at(Step::RefreshDestination));
            assert!(at(Step::CloseExisting) < at(Step::Restore));
        }
    }
}
