//! snapferry's engine: everything that lists, compares, moves and verifies objects.
//!
//! # Layout
//! - [`store`]: the storage trait and one module per backend (`s3`, `fs`; `oss` next).
//! - [`pipeline`]: the sync pipeline, one file per stage — `lister` → `differ` →
//!   (checker, in `mod.rs`) → `scheduler` → `transfer` (fetchers, uploaders, committer).
//! - [`buffers`]: the pool of part buffers fetches read into and uploads give back.
//! - [`retry`]: the one retry policy; [`limits`]: shared rate limits; [`stats`]:
//!   counters and latency histograms; [`location`] and [`size`]: parsing user input.
//! - [`probe`]: `bench probe`, measuring what a sync will achieve through the pipeline.
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
