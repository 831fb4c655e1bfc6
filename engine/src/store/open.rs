//! [`open`]: the one place a [`Location`] becomes a [`Store`].
//!
//! `sync`, `repo`, `migrate` and `bench probe` all reach their stores through here, so
//! a backend is configured the same way whichever command asks for it (timeouts,
//! source verification, credentials, error tagging), and a new backend is added in one
//! match. What the user typed is checked before (the binary resolves flags and
//! environment into [`StoreOptions`]); this module only builds.

use std::sync::Arc;
use std::time::Duration;

use super::fs::FsStore;
use super::layer::{Layered, Policy};
use super::oss::creds::OssCredentialSource;
use super::oss::{Endpoint, OssConfig, OssStore};
use super::s3::{S3Config, S3Store, StaticCredentials};
use super::{Presence, Store, VerifySource};
use crate::error::{Error, Result, Side};
use crate::location::Location;

/// How to reach one location, resolved from flags, job files and the environment.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Which side the store is: named in every error it raises, and the request
    /// layer's accounting key.
    pub side: Side,
    /// `s3://`: a custom S3-compatible endpoint (path-style); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// `s3://`: the region (a custom endpoint with none uses us-east-1).
    pub region: Option<String>,
    /// `s3://`: static credentials (`SNAPFERRY_{SRC,DST}_*`); `None` uses the AWS chain.
    pub credentials: Option<StaticCredentials>,
    /// `s3://`: the AWS profile the chain reads (`SNAPFERRY_{SRC,DST}_PROFILE`).
    pub profile: Option<String>,
    /// `oss://`: the resolved endpoint; an `oss://` location without it is refused.
    pub oss_endpoint: Option<Endpoint>,
    /// `oss://`: where the credentials come from; required with `oss://`.
    pub oss_credentials: Option<OssCredentialSource>,
    /// A request fails when no byte has moved for this long; the backend's default
    /// when unset (`--io-timeout` sets it for sync).
    pub io_timeout: Option<Duration>,
    /// `--verify-source`: which of the source's own checksums a GET checks.
    pub verify_source: VerifySource,
    /// The request layer (retries, limits, accounting) to wrap the backend in. `None`
    /// returns the bare backend, for a caller that layers it with a policy shared by
    /// both sides of a run (the sync pipeline, the probe).
    pub layer: Option<Policy>,
}

impl StoreOptions {
    /// Options with every setting at its default, for `side`.
    pub fn new(side: Side) -> Self {
        StoreOptions {
            side,
            endpoint: None,
            region: None,
            credentials: None,
            profile: None,
            oss_endpoint: None,
            oss_credentials: None,
            io_timeout: None,
            verify_source: VerifySource::default(),
            layer: None,
        }
    }

    /// The same, through a request layer of its own (the default retry policy, no
    /// limits, no cancellation): for a command that is not a run, such as `repo`.
    pub fn with_standalone_layer(mut self) -> Self {
        self.layer = Some(Policy::standalone(Default::default()));
        self
    }
}

/// Builds the store for `loc` (for S3, the client and its credential chain; no request
/// is sent except what the SDK needs to resolve credentials). Errors carry the side.
pub async fn open(loc: &Location, o: &StoreOptions) -> Result<Arc<dyn Store>> {
    let raw = backend(loc, o).await.map_err(|e| e.on(o.side))?;
    Ok(match &o.layer {
        Some(policy) => Arc::new(Layered::new(raw, o.side, policy.clone())),
        None => raw,
    })
}

/// [`open`], then a preflight: a location that does not exist is
/// [`crate::error::ErrorKind::LocationNotFound`] (what a command that reads a repository
/// needs; a destination still to be created is opened with [`open`]).
pub async fn open_existing(loc: &Location, o: &StoreOptions) -> Result<Arc<dyn Store>> {
    let store = open(loc, o).await?;
    if store.preflight().await? == Presence::Missing {
        return Err(Error::location_not_found(format!(
            "{} does not exist; check the path",
            store.describe()
        ))
        .on(o.side));
    }
    Ok(store)
}

async fn backend(loc: &Location, o: &StoreOptions) -> Result<Arc<dyn Store>> {
    let side = o.side.name();
    match loc {
        Location::S3 { bucket, prefix } => {
            let st = S3Store::connect(S3Config {
                content_md5: false,
                io_timeout: o.io_timeout,
                verify_source: o.verify_source,
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: o.endpoint.clone(),
                region: o.region.clone(),
                profile: o.profile.clone(),
                credentials: o.credentials.clone(),
            })
            .await?;
            tracing::debug!("{side}: {}", st.describe());
            Ok(Arc::new(st))
        }
        Location::Oss { bucket, prefix } => {
            let (Some(endpoint), Some(credentials)) =
                (o.oss_endpoint.clone(), o.oss_credentials.clone())
            else {
                return Err(Error::invalid_input(format!(
                    "{side}: oss:// needs an endpoint and credentials"
                )));
            };
            Ok(Arc::new(OssStore::new(OssConfig {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                io_timeout: o.io_timeout,
                verify_source: o.verify_source,
                endpoint,
                credentials,
            })?))
        }
        Location::Fs { path } => Ok(Arc::new(FsStore::new(path.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test]
    async fn every_location_kind_opens_or_says_what_is_missing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fs = Location::Fs {
            path: dir.path().join("repo"),
        };
        let o = StoreOptions::new(Side::Repository);
        assert!(open(&fs, &o).await.is_ok());
        // A directory not created yet is no repository to read.
        let e = open_existing(&fs, &o)
            .await
            .err()
            .expect("missing is an error");
        assert_eq!(e.kind(), ErrorKind::LocationNotFound);
        let layered = StoreOptions::new(Side::Repository).with_standalone_layer();
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        assert!(open_existing(&fs, &layered).await.is_ok());

        let oss = Location::Oss {
            bucket: "b".into(),
            prefix: String::new(),
        };
        let e = open(&oss, &StoreOptions::new(Side::Destination))
            .await
            .err()
            .expect("oss without endpoint");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("needs an endpoint"), "{e}");
    }
}
