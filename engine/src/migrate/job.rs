//! The job file: what to move, between which clusters and repository stores, with which
//! copy settings. Parsed with serde into typed fields, checked once at load, so every
//! later step works on values that are known to be well-formed (a mistyped `auth` is a
//! load error naming its line, not a failure after the stores were opened).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::pipeline::{SnapshotAware, SyncOptions};

/// One side of a job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Side {
    /// Cluster URL.
    pub url: String,
    /// Basic auth user.
    #[serde(default)]
    pub user: Option<String>,
    /// Basic auth password (prefer the environment: SNAPFERRY_{SRC,DST}_CLUSTER_PASSWORD).
    #[serde(default)]
    pub password: Option<String>,
    /// Repository name on the cluster.
    pub repository: String,
    /// Repository type: s3, oss, fs.
    pub repository_type: String,
    /// Repository settings as the cluster takes them (bucket, base_path, location, ...).
    #[serde(default)]
    pub repository_settings: BTreeMap<String, Setting>,
    /// Where snapferry reads/writes the repository: s3://, oss://, file:// or a path.
    pub store: String,
    /// Store endpoint.
    #[serde(default)]
    pub store_endpoint: Option<String>,
    /// Store region.
    #[serde(default)]
    pub store_region: Option<String>,
    /// How to authenticate to the cluster: `none`, `basic` (`user` + password), `api_key`
    /// (SNAPFERRY_{SRC,DST}_CLUSTER_API_KEY: the base64 `id:key`), or `sigv4` (Amazon's
    /// service). Default: `basic` when `user` is set, else `none` ([`Side::auth_kind`]).
    #[serde(default)]
    pub auth: Option<AuthKind>,
    /// SigV4 region (e.g. `us-west-2`); required with `auth = "sigv4"`.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// SigV4 service name: `es` (default; managed domains) or `aoss` (serverless).
    #[serde(default)]
    pub aws_service: Option<String>,
    /// AWS profile for the credential chain (else the chain's default).
    #[serde(default)]
    pub aws_profile: Option<String>,
    /// Extra CA certificate (PEM) to trust for this cluster.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification (test clusters only).
    #[serde(default)]
    pub insecure: bool,
}

impl Side {
    /// The `auth` in effect: as written, else `basic` when `user` is set, else `none`.
    pub fn auth_kind(&self) -> AuthKind {
        match self.auth {
            Some(k) => k,
            None if self.user.is_some() => AuthKind::Basic,
            None => AuthKind::None,
        }
    }
}

/// How snapferry authenticates to a cluster (`auth` in the job file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AuthKind {
    /// No credentials.
    None,
    /// HTTP basic: `user`, and the password from SNAPFERRY_{SRC,DST}_CLUSTER_PASSWORD
    /// (or the job file).
    Basic,
    /// An API key from SNAPFERRY_{SRC,DST}_CLUSTER_API_KEY.
    ApiKey,
    /// AWS SigV4, for Amazon's managed service.
    Sigv4,
}

impl TryFrom<String> for AuthKind {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "none" => Ok(AuthKind::None),
            "basic" => Ok(AuthKind::Basic),
            "api_key" => Ok(AuthKind::ApiKey),
            "sigv4" => Ok(AuthKind::Sigv4),
            other => Err(format!(
                "auth {other:?} is unknown; use none, basic, api_key or sigv4"
            )),
        }
    }
}

/// A repository setting's value: the scalars a cluster's repository settings take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    /// `readonly = true`, `compress = false`.
    Bool(bool),
    /// An integer (a count, a size in bytes).
    Int(i64),
    /// Everything else (`bucket`, `base_path`, `location`, rates such as `"40mb"`).
    Str(String),
}

/// A migration job (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Index patterns to move.
    pub indices: Vec<String>,
    /// The source cluster and repository.
    pub source: Side,
    /// The destination cluster and repository.
    pub destination: Side,
    /// Copy settings (as `sync`'s flags).
    #[serde(default)]
    pub copy: CopySettings,
}

/// `[copy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySettings {
    /// Parts in flight.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Part size (e.g. "16MiB").
    #[serde(default)]
    pub part_size: Option<String>,
    /// Multipart threshold.
    #[serde(default)]
    pub multipart_threshold: Option<String>,
    /// Bandwidth limit (e.g. "200MiB/s").
    #[serde(default)]
    pub bwlimit: Option<String>,
}

impl Job {
    /// Reads and checks a job file.
    pub fn load(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid_input(format!("cannot read job file {}: {e}", path.display()))
        })?;
        let job: Job = toml::from_str(&text).map_err(|e| {
            // The parser's own message names the field (`unknown field `x`, expected one
            // of ...`, `missing field `store``); keep it on one line with its line number.
            let line = e
                .span()
                .map(|s| {
                    format!(
                        ", line {}",
                        text[..s.start.min(text.len())].lines().count().max(1)
                    )
                })
                .unwrap_or_default();
            Error::invalid_input(format!(
                "job file {}{line}: {}; see the job file format in the README",
                path.display(),
                e.message().trim().replace('\n', " ")
            ))
        })?;
        if job.indices.is_empty() {
            return Err(Error::invalid_input(format!(
                "job file {}: `indices` is empty; name the index patterns to move",
                path.display()
            )));
        }
        for (name, side) in [("SRC", &job.source), ("DST", &job.destination)] {
            let url = &side.url;
            let authority = url
                .split_once("://")
                .map_or(url.as_str(), |(_, r)| r)
                .split('/')
                .next()
                .unwrap_or("");
            if url.contains(['?', '#']) {
                return Err(Error::invalid_input(format!(
                    "job file {}: the {} cluster url {} carries a query string; give only scheme, host, port and path",
                    path.display(),
                    if name == "SRC" { "source" } else { "destination" },
                    crate::location::redact_url(url)
                )));
            }
            if authority.contains('@') {
                return Err(Error::invalid_input(format!(
                    "job file {}: the {} cluster url {} carries credentials; remove them from the url and set `user` plus SNAPFERRY_{name}_CLUSTER_PASSWORD (or SNAPFERRY_{name}_CLUSTER_API_KEY)",
                    path.display(),
                    if name == "SRC" { "source" } else { "destination" },
                    crate::location::redact_url(url)
                )));
            }
        }
        Ok(job)
    }

    /// The sync options of the copy settings.
    pub fn sync_options(&self) -> Result<SyncOptions> {
        let mut o = SyncOptions {
            snapshot_aware: SnapshotAware::On,
            // The source repository may be empty until the phase's snapshot is taken.
            allow_empty_source: true,
            ..SyncOptions::default()
        };
        if let Some(c) = self.copy.concurrency {
            o.concurrency = c;
        }
        if let Some(p) = &self.copy.part_size {
            o.part_size = crate::size::parse_size(p)?;
        }
        if let Some(p) = &self.copy.multipart_threshold {
            o.multipart_threshold = crate::size::parse_size(p)?;
        }
        if let Some(b) = &self.copy.bwlimit {
            o.bwlimit = Some(crate::size::parse_rate(b)?);
        }
        o.validate()?;
        Ok(o)
    }
}

/// The repository settings as the cluster takes them (`readonly` added for the
/// destination, which only snapferry writes).
pub(super) fn settings_json(s: &Side, readonly: bool) -> Value {
    let mut m: serde_json::Map<String, Value> = s
        .repository_settings
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    if readonly {
        m.insert("readonly".into(), true.into());
    }
    Value::Object(m)
}
/// Whether a repository setting holds a secret (Alibaba's `oss` type takes its keys in
/// the settings; s3 can too): such values are never printed.
pub fn is_secret_setting(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "access_key",
        "credential",
        "api_key",
        "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The settings as `--dry-run` prints them: secrets masked (an access key id keeps its
/// first four characters, so the operator can tell which key it is).
pub(super) fn settings_shown(s: &Side, readonly: bool) -> Value {
    let mut v = settings_json(s, readonly);
    if let Value::Object(m) = &mut v {
        for (k, val) in m.iter_mut() {
            if is_secret_setting(k) {
                let keep = if k.to_ascii_lowercase().contains("access_key_id") {
                    val.as_str().map(|t| t.chars().take(4).collect::<String>())
                } else {
                    None
                };
                *val = Value::String(format!("{}<redacted>", keep.unwrap_or_default()));
            }
        }
    }
    v
}
