//! What snapferry committed last to a repository destination: the generation of the root
//! it wrote and a SHA-256 of that root's bytes, in `.snapferry-state.json` beside the
//! lease (a reserved name: never listed, copied or deleted as a repository blob).
//!
//! The metadata planner trusts the destination's current root to describe what the
//! destination holds only when that root is exactly the one recorded here: then every
//! blob it references landed before it was written (the commit point comes last), so a
//! shard whose generation is the same on both sides needs no request. Any other root (a
//! cluster that wrote to the destination repository, another tool, another repository)
//! is not trusted, and the round is planned from a full listing instead.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{PutOptions, Store};

/// The state record's key, relative to the repository root.
pub const STATE_KEY: &str = ".snapferry-state.json";

/// The record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitState {
    /// Record format.
    pub format: u32,
    /// The root generation snapferry wrote (`index-<generation>`).
    pub generation: u64,
    /// SHA-256 (hex) of that root's bytes.
    pub root_sha256: String,
    /// The source generation it was copied from.
    pub source_generation: u64,
    /// When it was committed (Unix ms).
    pub committed_ms: i64,
}

/// SHA-256 of a root blob, hex.
pub fn root_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the record: `None` when there is none, or when it cannot be read as one (then
/// nothing is trusted, which is always safe).
pub async fn read(store: &dyn Store) -> Result<Option<CommitState>> {
    let Some((_, bytes)) = crate::store::read_whole(store, STATE_KEY).await? else {
        return Ok(None);
    };
    match serde_json::from_slice::<CommitState>(&bytes) {
        Ok(s) if s.format == 1 => Ok(Some(s)),
        Ok(s) => {
            tracing::info!(
                "{STATE_KEY} has format {}, which this version does not read; not trusting it",
                s.format
            );
            Ok(None)
        }
        Err(e) => {
            tracing::info!("{STATE_KEY} cannot be read ({e}); not trusting it");
            Ok(None)
        }
    }
}

/// Writes the record (after the commit point and `index.latest` landed).
pub async fn write(store: &dyn Store, state: &CommitState) -> Result<()> {
    let body = serde_json::to_vec_pretty(state).map_err(|e| crate::Error::other(e.to_string()))?;
    let data = Bytes::from(body);
    let crc = crc32fast::hash(&data);
    store
        .put(STATE_KEY, data, crc, &PutOptions::default())
        .await
}

/// Why the destination's current root is not trusted, or `None` when it is the one
/// recorded.
pub fn distrust(state: Option<&CommitState>, generation: u64, root: &[u8]) -> Option<String> {
    match state {
        None => Some("no record of a commit by snapferry".into()),
        Some(s) if s.generation != generation => Some(format!(
            "snapferry committed index-{} last, the destination's current root is index-{generation}",
            s.generation
        )),
        Some(s) if s.root_sha256 != root_hash(root) => Some(format!(
            "index-{generation} has other bytes than the root snapferry committed"
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusts_only_the_recorded_root() {
        let root = b"{\"snapshots\":[]}";
        let s = CommitState {
            format: 1,
            generation: 7,
            root_sha256: root_hash(root),
            source_generation: 7,
            committed_ms: 0,
        };
        assert_eq!(distrust(Some(&s), 7, root), None);
        assert!(distrust(Some(&s), 8, root)
            .unwrap()
            .contains("index-7 last"));
        assert!(distrust(Some(&s), 7, b"{}")
            .unwrap()
            .contains("other bytes"));
        assert!(distrust(None, 7, root).unwrap().contains("no record"));
    }
}
