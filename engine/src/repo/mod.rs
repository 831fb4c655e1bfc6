//! Snapshot repositories: the model ([`model`]), the checksummed blob formats
//! ([`blob`]), and verification ([`verify`]).

pub mod blob;
pub mod filter;
pub mod model;
pub mod verify;
