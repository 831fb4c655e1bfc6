//! `snapferry migrate`: baseline → incremental rounds → cutover, driven from a job file.
//!
//! Each phase: preflight (both clusters, versions compatible, repositories registered —
//! the destination's read-only —, no snapshot running on the source), a new snapshot on
//! the source (polled, never one long request), a snapshot-aware sync of the repository
//! store, a refresh of the destination repository (DELETE + PUT, so the cluster sees the
//! new generation), a restore (indices closed first when they exist), recovery, and a
//! per-index document count comparison. State is kept in `<job>.state.json` so phases can
//! run from cron days apart and a failed phase can be re-run.
//!
//! # Layout
//! - [`job`]: the job file, parsed into typed fields and checked at load.
//! - `auth`: who snapferry is to each cluster (the job's `auth` and the environment).
//! - [`phases`]: a phase as one list of steps, run or (`--dry-run`) printed.
//! - `cutover`: the cutover's own checks around its final round.
//! - [`state`]: the state file of the phases run so far.

mod auth;
mod cutover;
pub mod job;
pub mod phases;
pub mod state;

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::store::Store;

pub use job::{is_secret_setting, AuthKind, CopySettings, Job, Setting, Side};
pub use phases::{steps, Phase, Step};
pub use state::{state_path, PhaseRecord, State};

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
    /// Cancels the phase's copy (Ctrl-C / SIGTERM): in-flight uploads are aborted and the
    /// destination's lease released, as in `sync`.
    pub cancel: tokio_util::sync::CancellationToken,
}

impl Migration {
    /// Both clusters' clients ([`Side::cluster_config`], secrets from `env`) around the
    /// two repository stores. No request is sent yet.
    pub async fn new(
        job: Job,
        src_store: Arc<dyn Store>,
        dst_store: Arc<dyn Store>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Migration> {
        // Both sides are resolved before either error is returned (the source's first).
        let src = job.source.cluster_config("SRC", env).await;
        let dst = job.destination.cluster_config("DST", env).await;
        let (src, dst) = (Cluster::new(src?)?, Cluster::new(dst?)?);
        Ok(Migration {
            job,
            src,
            dst,
            src_store,
            dst_store,
            cancel: tokio_util::sync::CancellationToken::new(),
        })
    }
}
