//! snapferry's engine: everything that lists, compares, moves and verifies objects.
//!
//! # Layout
//! Folders and files in the order a sync meets them:
//! - Input: [`location`] parses `s3://`, `oss://`, `file://` URLs and plain paths;
//!   [`size`] parses sizes and rates (`64MiB`, `100MB/s`).
//! - Stores: [`store`] holds the storage trait, [`store::open`] (the one factory every
//!   command, test and bench uses) and one module per backend (`s3`, `oss/`, `fs`,
//!   `memory`); `layer` wraps each backend with the request policy below;
//!   [`credentials`] refreshes expiring credentials (STS sessions) for the S3 and OSS
//!   stores and the clusters of a migration before they expire.
//! - Request policy, applied by `store::layer` to every request: [`retry`] (the one retry
//!   policy), [`limits`] (shared rate limits), [`stats`] (counters and latency histograms
//!   for the report).
//! - The walk and the copy: [`pipeline`], one file per stage — `lister` → `differ` →
//!   (checker, in `mod.rs`) → `scheduler` → `transfer` (fetchers, uploaders, committer) →
//!   `deletes`; `snapshot/` plans a snapshot repository's phases; [`buffers`] is the pool
//!   of part buffers fetches read into and uploads give back; [`lease`] keeps one writer
//!   per destination.
//! - Integrity: [`checksum`] hashes off the reactor for the pipeline and the stores.
//! - Snapshot repositories and clusters: [`repo`] reads, verifies and filters a
//!   repository from its own metadata; [`cluster`] is the Elasticsearch/OpenSearch client
//!   and [`migrate`] the workflow `snapferry migrate` runs over it.
//! - [`distributed`]: a round over many machines — the plan (pinned root, shard
//!   directories packed into units), one unit's run and its marker, the commit barrier;
//!   the pipeline runs each step by its [`pipeline::Role`].
//! - [`probe`]: `bench probe`, measuring what a sync will achieve through the pipeline.
//! - [`error`]: the one public error, its kinds and the side it belongs to.
//!
//! The root stays flat: each of these is one file or one folder already, and a folder per
//! group (`input/`, `policy/`) would only lengthen every path that cli/, bench/, testkit/
//! and tests/ import.
//!
//! # Invariants
//! - The differ holds at most one listing entry per side (flat memory for any number of
//!   keys); listings must be in key order or the run stops.
//! - An object is counted as copied only after the destination confirmed the checksum
//!   of every byte; objects appear on the destination atomically (single PUT, completed
//!   multipart, or rename), so an interrupted run never leaves a partial object.
//! - Deletes run only after every copy has landed.
#![warn(missing_docs)]

pub mod buffers;
pub mod checksum;
pub mod cluster;
pub mod credentials;
pub mod distributed;
pub mod error;
pub mod lease;
pub mod limits;
pub mod location;
pub mod migrate;
pub mod pipeline;
pub mod probe;
pub mod repo;
pub mod retry;
pub mod size;
pub mod stats;
pub mod store;

pub use error::{Error, Result};
