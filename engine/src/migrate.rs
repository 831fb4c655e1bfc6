//! `snapferry migrate`: baseline → incremental rounds → cutover, driven from a job file.
//!
//! Each phase: preflight (both clusters, versions compatible, repositories registered —
//! the destination's read-only —, no snapshot running on the source), a new snapshot on
//! the source (polled, never one long request), a snapshot-aware sync of the repository
//! store, a refresh of the destination repository (DELETE + PUT, so the cluster sees the
//! new generation), a restore (indices closed first when they exist), recovery, and a
//! per-index document count comparison. State is kept in `<job>.state.json` so phases can
//! run from cron days apart and a failed phase can be re-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cluster::{compat, Cluster};
use crate::error::{Error, Result};
use crate::pipeline::{NoObserver, SnapshotAware, SyncOptions, SyncRun};
use crate::store::Store;

/// One side of a job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Side {
    /// Cluster URL.
    pub url: String,
    /// Basic auth user.
    #[serde(default)]
    pub user: Option<String>,
    /// Basic auth password (prefer the environment: SNAPFERRY_{SRC,DST}_CLUSTER_PASSWORD).
    #[serde(default)]
    pub password: Option<String>,
    /// Repository name on the cluster.
    pub repository: String,
    /// Repository type: s3, oss, fs.
    pub repository_type: String,
    /// Repository settings as the cluster takes them (bucket, base_path, location, ...).
    #[serde(default)]
    pub repository_settings: BTreeMap<String, toml_value::Value>,
    /// Where snapferry reads/writes the repository: s3://, oss://, file:// or a path.
    pub store: String,
    /// Store endpoint.
    #[serde(default)]
    pub store_endpoint: Option<String>,
    /// Store region.
    #[serde(default)]
    pub store_region: Option<String>,
}

/// Scalar TOML values for repository settings.
pub mod toml_value {
    use serde::Deserialize;
    /// A setting value.
    #[derive(Debug, Clone, Deserialize, PartialEq)]
    #[serde(untagged)]
    pub enum Value {
        /// Boolean.
        Bool(bool),
        /// Integer.
        Int(i64),
        /// String.
        Str(String),
    }
    impl Value {
        /// As JSON.
        pub fn json(&self) -> serde_json::Value {
            match self {
                Value::Bool(b) => (*b).into(),
                Value::Int(i) => (*i).into(),
                Value::Str(s) => s.clone().into(),
            }
        }
    }
}

/// A migration job (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Index patterns to move.
    pub indices: Vec<String>,
    /// The source cluster and repository.
    pub source: Side,
    /// The destination cluster and repository.
    pub destination: Side,
    /// Copy settings (as `sync`'s flags).
    #[serde(default)]
    pub copy: CopySettings,
}

/// `[copy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySettings {
    /// Parts in flight.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Part size (e.g. "16MiB").
    #[serde(default)]
    pub part_size: Option<String>,
    /// Multipart threshold.
    #[serde(default)]
    pub multipart_threshold: Option<String>,
    /// Bandwidth limit (e.g. "200MiB/s").
    #[serde(default)]
    pub bwlimit: Option<String>,
}

impl Job {
    /// Reads and checks a job file.
    pub fn load(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!("cannot read job file {}: {e}", path.display()))
        })?;
        let job: Job = toml::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!(
                "job file {}: {}",
                path.display(),
                e.to_string().lines().next().unwrap_or("")
            ))
        })?;
        if job.indices.is_empty() {
            return Err(Error::InvalidInput(format!(
                "job file {}: `indices` is empty; name the index patterns to move",
                path.display()
            )));
        }
        Ok(job)
    }

    /// The sync options of the copy settings.
    pub fn sync_options(&self) -> Result<SyncOptions> {
        let mut o = SyncOptions {
            snapshot_aware: SnapshotAware::On,
            ..SyncOptions::default()
        };
        if let Some(c) = self.copy.concurrency {
            o.concurrency = c;
        }
        if let Some(p) = &self.copy.part_size {
            o.part_size = crate::size::parse_size(p)?;
        }
        if let Some(p) = &self.copy.multipart_threshold {
            o.multipart_threshold = crate::size::parse_size(p)?;
        }
        if let Some(b) = &self.copy.bwlimit {
            o.bwlimit = Some(crate::size::parse_rate(b)?);
        }
        o.validate()?;
        Ok(o)
    }
}

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

/// One phase run, as kept in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Phase.
    pub phase: Phase,
    /// Snapshot taken.
    pub snapshot: String,
    /// Repository generation copied.
    pub generation: Option<u64>,
    /// Bytes the sync moved.
    pub bytes_moved: u64,
    /// How long the destination indices were closed (ms).
    pub closed_ms: u64,
    /// Document counts per index: (source, destination).
    pub counts: BTreeMap<String, (u64, u64)>,
    /// Whether the phase completed.
    pub completed: bool,
    /// Unix seconds at the end.
    pub finished_at: i64,
}

/// The state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Phases run, oldest first.
    pub phases: Vec<PhaseRecord>,
}

/// `<job>.state.json`.
pub fn state_path(job: &Path) -> PathBuf {
    let mut p = job.as_os_str().to_owned();
    p.push(".state.json");
    PathBuf::from(p)
}

impl State {
    /// Reads the state (empty when missing).
    pub fn load(path: &Path) -> Result<State> {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| {
                Error::InvalidInput(format!("state file {} is unreadable: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(|e| Error::Other(e.to_string()))?,
        )?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Everything a phase needs.
pub struct Migration {
    /// The job.
    pub job: Job,
    /// Source cluster.
    pub src: Cluster,
    /// Destination cluster.
    pub dst: Cluster,
    /// Source repository store.
    pub src_store: Arc<dyn Store>,
    /// Destination repository store.
    pub dst_store: Arc<dyn Store>,
    /// Print calls instead of making changes.
    pub dry_run: bool,
}

fn settings_json(s: &Side, readonly: bool) -> Value {
    let mut m: serde_json::Map<String, Value> = s
        .repository_settings
        .iter()
        .map(|(k, v)| (k.clone(), v.json()))
        .collect();
    if readonly {
        m.insert("readonly".into(), true.into());
    }
    Value::Object(m)
}

impl Migration {
    /// Preflight: reachable, compatible, repositories in place, no snapshot running.
    /// Returns the source indices the patterns match.
    pub async fn preflight(&self) -> Result<Vec<String>> {
        let sv = self
            .src
            .version()
            .await
            .map_err(|e| side_err("source cluster", e))?;
        let dv = self
            .dst
            .version()
            .await
            .map_err(|e| side_err("destination cluster", e))?;
        compat::check_restore(&sv, &dv, None).map_err(Error::InvalidInput)?;
        let mut indices = Vec::new();
        for p in &self.job.indices {
            let m = self.src.indices(p).await?;
            if m.is_empty() {
                return Err(Error::InvalidInput(format!("index pattern {p:?} matches no index on the source cluster; fix `indices` in the job file")));
            }
            indices.extend(m);
        }
        indices.sort();
        indices.dedup();
        let running = self
            .src
            .call(reqwest::Method::GET, "/_snapshot/_status", None)
            .await?;
        if running["snapshots"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            return Err(Error::InvalidInput(
                "a snapshot is already running on the source cluster; wait for it to finish".into(),
            ));
        }
        Ok(indices)
    }

    async fn ensure_repositories(&self) -> Result<()> {
        let s = &self.job.source;
        if self.src.repository(&s.repository).await?.is_none() {
            self.src
                .register_repository(&s.repository, &s.repository_type, settings_json(s, false))
                .await?;
        }
        // The destination repository is registered read-only, and only once snapferry has
        // written a generation into it (an empty location would fail verification); from
        // then on the cluster never writes where snapferry does.
        Ok(())
    }

    /// Re-registers the destination repository read-only (DELETE + PUT) so that the
    /// cluster reads the generation snapferry just wrote.
    async fn refresh_destination_repository(&self) -> Result<()> {
        let d = &self.job.destination;
        if self.dst.repository(&d.repository).await?.is_some() {
            self.dst
                .call(
                    reqwest::Method::DELETE,
                    &format!("/_snapshot/{}", d.repository),
                    None,
                )
                .await?;
        }
        self.dst
            .register_repository(&d.repository, &d.repository_type, settings_json(d, true))
            .await
    }

    /// Runs one phase.
    pub async fn run(&self, phase: Phase, state_file: &Path) -> Result<PhaseRecord> {
        let indices = self.preflight().await?;
        let snapshot = format!(
            "snapferry-{}-{}",
            match phase {
                Phase::Baseline => "baseline",
                Phase::Incremental => "incr",
                Phase::Cutover => "cutover",
            },
            crate::store::fs::now_ms()
        );
        if self.dry_run {
            println!(
                "PUT {}/_snapshot/{} (if missing)",
                self.job.source.url, self.job.source.repository
            );
            println!("PUT {}/_snapshot/{}/{snapshot} {{\"indices\":\"{}\",\"include_global_state\":false}}", self.job.source.url, self.job.source.repository, indices.join(","));
            println!(
                "sync {} -> {} (snapshot-aware)",
                self.job.source.store, self.job.destination.store
            );
            println!(
                "DELETE+PUT {}/_snapshot/{} (readonly)",
                self.job.destination.url, self.job.destination.repository
            );
            println!(
                "POST {}/_snapshot/{}/{snapshot}/_restore (closing existing indices first)",
                self.job.destination.url, self.job.destination.repository
            );
            return Ok(PhaseRecord {
                phase,
                snapshot,
                generation: None,
                bytes_moved: 0,
                closed_ms: 0,
                counts: BTreeMap::new(),
                completed: false,
                finished_at: 0,
            });
        }
        self.ensure_repositories().await?;
        let repo = &self.job.source.repository;
        self.src
            .create_snapshot(repo, &snapshot, &indices.join(","))
            .await?;
        let info = self
            .src
            .wait_snapshot(repo, &snapshot, Duration::from_secs(6 * 3600))
            .await?;
        if !info.succeeded() {
            return Err(Error::Other(format!(
                "snapshot {snapshot} ended {} with {} failed shards; nothing was copied",
                info.state, info.failed_shards
            )));
        }
        // Source counts at snapshot time (writes are expected to continue except at cutover).
        let mut counts = BTreeMap::new();
        for i in &indices {
            counts.insert(i.clone(), (self.src.count(i).await?, 0));
        }
        let run = SyncRun::new(
            self.src_store.clone(),
            self.dst_store.clone(),
            self.job.sync_options()?,
            Arc::new(NoObserver),
        );
        run.preflight().await?;
        let report = run.run().await?;
        if report.failed_objects > 0
            || report.fatal_error.is_some()
            || report.snapshot.as_ref().is_none_or(|s| !s.completed)
        {
            return Err(Error::Other(format!(
                "the repository copy did not complete ({} failed objects{}); the destination keeps its previous generation; re-run the phase",
                report.failed_objects,
                report.fatal_error.map(|e| format!(", {e}")).unwrap_or_default()
            )));
        }
        self.refresh_destination_repository().await?;
        let existing = self.dst.indices("*").await?;
        let t = std::time::Instant::now();
        for i in &indices {
            if existing.contains(i) {
                self.dst.close_index(i).await?;
            }
        }
        self.dst
            .restore(
                &self.job.destination.repository,
                &snapshot,
                json!({"indices": indices.join(","), "include_global_state": false}),
            )
            .await?;
        for i in &indices {
            self.dst.wait_recovery(i, Duration::from_secs(3600)).await?;
        }
        let closed_ms = t.elapsed().as_millis() as u64;
        for (i, c) in counts.iter_mut() {
            c.1 = self.dst.count(i).await?;
        }
        let record = PhaseRecord {
            phase,
            snapshot,
            generation: report.snapshot.as_ref().map(|s| s.source_generation),
            bytes_moved: report.copied_bytes,
            closed_ms,
            counts,
            completed: true,
            finished_at: crate::store::fs::now_ms() / 1000,
        };
        let mut state = State::load(state_file)?;
        state.phases.push(record.clone());
        state.save(state_file)?;
        Ok(record)
    }
}

fn side_err(side: &str, e: Error) -> Error {
    match e {
        Error::Unreachable(m) => {
            Error::Unreachable(format!("{side}: {m}; check its url in the job file"))
        }
        Error::AccessDenied(m) => Error::AccessDenied(format!("{side}: {m}")),
        other => other,
    }
}
