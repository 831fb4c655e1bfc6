//! The cutover's own steps around its final round: writes to the source must be stopped
//! before it (else documents written during the round are lost at switchover), and the
//! destination repository is verified after it (the operator switches clients over
//! only to a cluster restored from a repository whose every blob is in place).

use super::Migration;
use crate::error::{Error, Result};
use crate::repo::verify::{verify, VerifyOptions, VerifyReport};

impl Migration {
    /// Cutover needs writes stopped: every source index the job's patterns match is
    /// write-blocked, or (with `set`) is blocked now.
    pub async fn stop_writes(&self, set: bool) -> Result<()> {
        for i in &self.source_indices().await? {
            if set {
                self.src.set_write_block(i).await?;
            } else if !self.src.write_blocked(i).await? {
                return Err(Error::invalid_input(format!(
                    "writes to {i} are not stopped; set index.blocks.write on the source indices (or pass --set-write-block) before cutover"
                )));
            }
        }
        Ok(())
    }

    /// Verifies the destination repository after the final round: every blob the
    /// snapshots need is present with its size and every metadata checksum holds (data
    /// files are not read again: that would cost a second pass over the repository).
    pub async fn verify_destination(&self) -> Result<VerifyReport> {
        let opts = VerifyOptions {
            deep: false,
            concurrency: 8,
            ..Default::default()
        };
        verify(self.dst_store.as_ref(), &opts).await
    }

    /// What the operator does once the cutover has passed every check.
    pub fn switchover_checklist(&self) -> String {
        format!(
            "switchover checklist:\n  1. point clients at {}\n  2. re-enable writes there (the source indices stay write-blocked)\n  3. re-create aliases, templates and ILM policies not carried by the snapshot\n  4. keep the source cluster until the new one has run cleanly",
            self.job.destination.url
        )
    }
}
