//! The state file, `<job>.state.json`: the phases run so far, so that phases can run
//! from cron days apart, `--phase status` can tell what happened, and a failed phase is
//! simply run again. Written atomically: a reader never sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Phase;
use crate::error::{Error, Result};

/// One phase run, as kept in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Which phase this record is of.
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
                Error::invalid_input(format!("state file {} is unreadable: {e}", path.display()))
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
            serde_json::to_vec_pretty(self).map_err(|e| Error::other(e.to_string()))?,
        )?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
