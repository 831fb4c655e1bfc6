//! Placeholder: replaced by the filter module (a repository holding exactly the selected
//! snapshots).

use std::collections::BTreeMap;

use super::model::{Referenced, Repository, SnapshotEntry};
use crate::error::{Error, Result};
use crate::store::Store;

/// A repository filtered to the selected snapshots.
pub struct Filtered {
    /// The root index-N JSON.
    pub root: Vec<u8>,
    /// New shard-level index blobs.
    pub shard_indexes: Vec<(String, Vec<u8>)>,
    /// Blobs to copy from the source.
    pub refs: BTreeMap<String, Referenced>,
}

/// Filters `repo` to `selected`.
pub async fn filter(
    _store: &dyn Store,
    _repo: &Repository,
    _selected: &[&SnapshotEntry],
) -> Result<Filtered> {
    Err(Error::invalid_input("not yet"))
}
