//! Snapshot repositories: the model ([`model`]), the checksummed blob formats
//! ([`blob`]), verification ([`verify`]), and a repository reduced to some of its
//! snapshots ([`filter`]).

pub mod blob;
pub mod filter;
pub mod model;
pub mod verify;
pub mod verify_stream;
