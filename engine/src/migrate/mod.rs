//! `snapferry migrate`: baseline → incremental rounds → cutover, driven from a job file.
//!
//! Each phase: preflight (both clusters, versions compatible, repositories registered —
//! the destination's read-only —, no snapshot running on the source), a new snapshot on
//! the source (polled, never one long request), a snapshot-aware sync of the repository
//! store, a refresh of the destination repository (DELETE + PUT, so the cluster sees the
//! new generation), a restore (indices closed first when they exist), recovery, and a
//! per-index document count comparison. State is kept in `<job>.state.json` so phases can
//! run from cron days apart and a failed phase can be re-run.
//!
//! The cutover's own steps (writes stopped before the final round, the destination
//! repository verified after it) are in [`cutover`], so that the binary only renders
//! what the workflow reports.

mod cutover;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cluster::{compat, Cluster};
use crate::error::{Error, Result};
use crate::pipeline::{NoObserver, SnapshotAware, SyncOptions, SyncRun};
use crate::store::Store;

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
    pub repository_settings: BTreeMap<String, toml_value::Value>,
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
    /// service). Default: `basic` when `user` is set, else `none`.
    #[serde(default)]
    pub auth: Option<String>,
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
    /// How to reach this side's cluster. `side` is `SRC` or `DST`; secrets come from
    /// `env` (SNAPFERRY_{side}_CLUSTER_PASSWORD / _API_KEY / _ACCESS_KEY_ID /
    /// _SECRET_ACCESS_KEY / _SESSION_TOKEN), the password also from the job file, and
    /// SigV4 credentials otherwise from the AWS chain.
    pub async fn cluster_config(
        &self,
        side: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::cluster::ClusterConfig> {
        use crate::cluster::{sigv4::AwsSigner, Auth, ClusterConfig};
        let (name, cluster_side) = if side == "SRC" {
            ("source", crate::error::Side::SourceCluster)
        } else {
            ("destination", crate::error::Side::DestinationCluster)
        };
        let var = |k: &str| env(&format!("SNAPFERRY_{side}_CLUSTER_{k}")).filter(|v| !v.is_empty());
        let kind = match self.auth.as_deref() {
            Some(k) => k,
            None if self.user.is_some() => "basic",
            None => "none",
        };
        let auth = match kind {
            "none" => Auth::None,
            "basic" => {
                let Some(user) = self.user.clone() else {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster uses basic auth but has no `user`; add it to the job file"
                    )));
                };
                let Some(password) = var("PASSWORD").or_else(|| self.password.clone()) else {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster has a user but no password; set SNAPFERRY_{side}_CLUSTER_PASSWORD"
                    )));
                };
                Auth::Basic { user, password }
            }
            "api_key" => match var("API_KEY") {
                Some(k) => Auth::ApiKey(k),
                None => {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster uses an API key; set SNAPFERRY_{side}_CLUSTER_API_KEY (the base64 id:key)"
                    )))
                }
            },
            "sigv4" => {
                let Some(region) = self.aws_region.clone() else {
                    return Err(Error::invalid_input(format!(
                        "the {name} cluster uses SigV4 but has no `aws_region`; add it to the job file"
                    )));
                };
                let service = self.aws_service.clone().unwrap_or_else(|| "es".into());
                let provider = match (var("ACCESS_KEY_ID"), var("SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => {
                        aws_credential_types::provider::SharedCredentialsProvider::new(
                            aws_credential_types::Credentials::new(
                                id,
                                secret,
                                var("SESSION_TOKEN"),
                                None,
                                "snapferry-cluster-env",
                            ),
                        )
                    }
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(Error::invalid_input(format!(
                            "set both SNAPFERRY_{side}_CLUSTER_ACCESS_KEY_ID and SNAPFERRY_{side}_CLUSTER_SECRET_ACCESS_KEY, or neither (the AWS chain is used then)"
                        )))
                    }
                    (None, None) => {
                        let mut chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                            .region(aws_config::Region::new(region.clone()));
                        if let Some(p) = &self.aws_profile {
                            chain = chain.profile_name(p);
                        }
                        aws_credential_types::provider::SharedCredentialsProvider::new(
                            chain.build().await,
                        )
                    }
                };
                Auth::SigV4(
                    AwsSigner::from_provider(&region, &service, provider)
                        .await
                        .map_err(|e| e.on(cluster_side))?,
                )
            }
            other => {
                return Err(Error::invalid_input(format!(
                    "the {name} cluster's auth {other:?} is unknown; use none, basic, api_key or sigv4"
                )))
            }
        };
        Ok(ClusterConfig {
            url: self.url.clone(),
            auth,
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
            side: Some(cluster_side),
        })
    }
}

/// Scalar TOML values for repository settings.
pub mod toml_value {
    use serde::Deserialize;
    /// A setting value.
    #[derive(Debug, Clone, Deserialize, PartialEq)]
    #[serde(untagged)]
    pub enum Value {
        /// Boolean.
        Bool(bool),
        /// Integer.
        Int(i64),
        /// String.
        Str(String),
    }
    impl Value {
        /// As JSON.
        pub fn json(&self) -> serde_json::Value {
            match self {
                Value::Bool(b) => (*b).into(),
                Value::Int(i) => (*i).into(),
                Value::Str(s) => s.clone().into(),
            }
        }
    }
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

/// Which phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Full snapshot, copy, restore.
    Baseline,
    /// Delta snapshot, copy, restore over closed indices.
    Incremental,
    /// Writes stopped: final round, verification, checklist.
    Cutover,
}

/// One phase run, as kept in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Phase.
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

/// Everything a phase needs.
pub struct Migration {
    /// The job.
    pub job: Job,
    /// Source cluster.
    pub src: Cluster,
    /// Destination cluster.
    pub dst: Cluster,
    /// Source repository store.
    pub src_store: Arc<dyn Store>,
    /// Destination repository store.
    pub dst_store: Arc<dyn Store>,
    /// Cancels the phase's copy (Ctrl-C / SIGTERM): in-flight uploads are aborted and the
    /// destination's lease released, as in `sync`.
    pub cancel: tokio_util::sync::CancellationToken,
}

fn settings_json(s: &Side, readonly: bool) -> Value {
    let mut m: serde_json::Map<String, Value> = s
        .repository_settings
        .iter()
        .map(|(k, v)| (k.clone(), v.json()))
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
fn settings_shown(s: &Side, readonly: bool) -> Value {
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

impl Migration {
    /// Both clusters' clients ([`Side::cluster_config`], secrets from `env`) around the
    /// two repository stores. No request is sent yet.
    pub async fn new(
        job: Job,
        src_store: Arc<dyn Store>,
        dst_store: Arc<dyn Store>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Migration> {
        // Both sides are resolved before either error is returned (the source's first).
        let src = job.source.cluster_config("SRC", env).await;
        let dst = job.destination.cluster_config("DST", env).await;
        let (src, dst) = (Cluster::new(src?)?, Cluster::new(dst?)?);
        Ok(Migration {
            job,
            src,
            dst,
            src_store,
            dst_store,
            cancel: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Preflight: reachable, compatible, repositories in place, no snapshot running.
    /// Returns the source indices the patterns match.
    pub async fn preflight(&self) -> Result<Vec<String>> {
        let sv = self.src.version().await?;
        let dv = self.dst.version().await?;
        compat::check_restore(&sv, &dv, None).map_err(Error::invalid_input)?;
        // Both repository stores reachable, bucket present, credentials good, and the copy
        // settings valid: sync's own preflight, before anything changes on either cluster.
        SyncRun::new(
            self.src_store.clone(),
            self.dst_store.clone(),
            self.job.sync_options()?,
            Arc::new(NoObserver),
        )
        .preflight()
        .await?;
        let mut indices = Vec::new();
        for p in &self.job.indices {
            let m = self.src.indices(p).await?;
            if m.is_empty() {
                return Err(Error::invalid_input(format!("index pattern {p:?} matches no index on the source cluster; fix `indices` in the job file")));
            }
            indices.extend(m);
        }
        indices.sort();
        indices.dedup();
        if self.src.snapshot_running().await? {
            return Err(Error::invalid_input(
                "a snapshot is already running on the source cluster; wait for it to finish",
            ));
        }
        Ok(indices)
    }

    async fn ensure_repositories(&self) -> Result<()> {
        let s = &self.job.source;
        if self.src.repository(&s.repository).await?.is_none() {
            self.src
                .register_repository(&s.repository, &s.repository_type, settings_json(s, false))
                .await?;
        }
        // The destination repository is registered read-only, and only once snapferry has
        // written a generation into it (an empty location would fail verification); from
        // then on the cluster never writes where snapferry does.
        Ok(())
    }

    /// Re-registers the destination repository read-only (DELETE + PUT) so that the
    /// cluster reads the generation snapferry just wrote.
    async fn refresh_destination_repository(&self) -> Result<()> {
        let d = &self.job.destination;
        if self.dst.repository(&d.repository).await?.is_some() {
            self.dst.delete_repository(&d.repository).await?;
        }
        self.dst
            .register_repository(&d.repository, &d.repository_type, settings_json(d, true))
            .await
    }

    fn snapshot_name(phase: Phase) -> String {
        format!(
            "snapferry-{}-{}",
            match phase {
                Phase::Baseline => "baseline",
                Phase::Incremental => "incr",
                Phase::Cutover => "cutover",
            },
            crate::store::fs::now_ms()
        )
    }

    /// `--dry-run`: the preflight (read-only calls), then the calls and the copy the phase
    /// would make, one line each, in order. Changes nothing.
    /// At cutover, `set_write_block` plans setting `index.blocks.write` on the source
    /// indices instead of checking it.
    pub async fn plan(&self, phase: Phase, set_write_block: bool) -> Result<Vec<String>> {
        let indices = self.preflight().await?;
        let snapshot = Self::snapshot_name(phase);
        let (s, d) = (&self.job.source, &self.job.destination);
        let mut calls = Vec::new();
        if phase == Phase::Cutover {
            for i in &indices {
                calls.push(if set_write_block {
                    format!(
                        "PUT {}/{i}/_settings {}",
                        s.url,
                        json!({"index.blocks.write": true})
                    )
                } else {
                    format!(
                        "GET {}/{i}/_settings/index.blocks.write (must be true: writes stopped)",
                        s.url
                    )
                });
            }
        }
        if self.src.repository(&s.repository).await?.is_none() {
            calls.push(format!(
                "PUT {}/_snapshot/{} {}",
                s.url,
                s.repository,
                json!({"type": s.repository_type, "settings": settings_shown(s, false)})
            ));
        }
        calls.push(format!(
            "PUT {}/_snapshot/{}/{snapshot} {}",
            s.url,
            s.repository,
            json!({"indices": indices.join(","), "include_global_state": false})
        ));
        calls.push(format!(
            "GET {}/_snapshot/{}/{snapshot} (polled until it ends)",
            s.url, s.repository
        ));
        calls.push(format!("sync {} -> {} (snapshot-aware)", s.store, d.store));
        if self.dst.repository(&d.repository).await?.is_some() {
            calls.push(format!("DELETE {}/_snapshot/{}", d.url, d.repository));
        }
        calls.push(format!(
            "PUT {}/_snapshot/{} {}",
            d.url,
            d.repository,
            json!({"type": d.repository_type, "settings": settings_shown(d, true)})
        ));
        let existing = self.dst.indices("*").await?;
        for i in indices.iter().filter(|i| existing.contains(*i)) {
            calls.push(format!("POST {}/{i}/_close", d.url));
        }
        calls.push(format!(
            "POST {}/_snapshot/{}/{snapshot}/_restore {}",
            d.url,
            d.repository,
            json!({"indices": indices.join(","), "include_global_state": false})
        ));
        for i in &indices {
            calls.push(format!(
                "GET {}/{i}/_recovery (until every shard is DONE)",
                d.url
            ));
            calls.push(format!("GET {}/{i}/_count and {}/{i}/_count", s.url, d.url));
        }
        Ok(calls)
    }

    /// Runs one phase. At cutover, writes to the source indices must be stopped first
    /// ([`Migration::stop_writes`]; `set_write_block` stops them instead of checking).
    pub async fn run(
        &self,
        phase: Phase,
        set_write_block: bool,
        state_file: &Path,
    ) -> Result<PhaseRecord> {
        if phase == Phase::Cutover {
            self.stop_writes(set_write_block).await?;
        }
        let indices = self.preflight().await?;
        let snapshot = Self::snapshot_name(phase);
        self.ensure_repositories().await?;
        let repo = &self.job.source.repository;
        self.src
            .create_snapshot(repo, &snapshot, &indices.join(","))
            .await?;
        let info = self
            .src
            .wait_snapshot(repo, &snapshot, Duration::from_secs(6 * 3600))
            .await?;
        if !info.succeeded() {
            return Err(Error::other(format!(
                "snapshot {snapshot} ended {} with {} failed shards; nothing was copied",
                info.state, info.failed_shards
            )));
        }
        // Source counts at snapshot time (writes are expected to continue except at cutover).
        let mut counts = BTreeMap::new();
        for i in &indices {
            counts.insert(i.clone(), (self.src.count(i).await?, 0));
        }
        let mut opts = self.job.sync_options()?;
        // The cutover round is the downtime: what it copied is confirmed at the
        // destination before its commit point, at a listing per changed shard.
        opts.confirm_before_commit = phase == Phase::Cutover;
        let run = SyncRun::new(
            self.src_store.clone(),
            self.dst_store.clone(),
            opts,
            Arc::new(NoObserver),
        );
        run.preflight().await?;
        let handle = run.handle();
        let cancel = self.cancel.clone();
        let forward = tokio::spawn(async move {
            cancel.cancelled().await;
            handle.cancel.cancel();
        });
        let report = run.run().await;
        forward.abort();
        let report = report?;
        if report.interrupted {
            return Err(Error::cancelled());
        }
        if report.failed_objects > 0
            || report.fatal_error.is_some()
            || report.snapshot.as_ref().is_none_or(|s| !s.completed)
        {
            let first = report
                .failures
                .first()
                .map(|f| format!(", first: {}: {}", f.key, f.reason))
                .unwrap_or_default();
            return Err(Error::other(format!(
                "the repository copy did not complete ({} failed objects{first}{}); the destination keeps its previous generation; re-run the phase",
                report.failed_objects,
                report.fatal_error.map(|e| format!(", {e}")).unwrap_or_default()
            )));
        }
        self.refresh_destination_repository().await?;
        let existing = self.dst.indices("*").await?;
        let t = std::time::Instant::now();
        for i in &indices {
            if existing.contains(i) {
                self.dst.close_index(i).await?;
            }
        }
        self.dst
            .restore(
                &self.job.destination.repository,
                &snapshot,
                json!({"indices": indices.join(","), "include_global_state": false}),
            )
            .await?;
        for i in &indices {
            self.dst.wait_recovery(i, Duration::from_secs(3600)).await?;
        }
        let closed_ms = t.elapsed().as_millis() as u64;
        for (i, c) in counts.iter_mut() {
            c.1 = self.dst.count(i).await?;
        }
        let record = PhaseRecord {
            phase,
            snapshot,
            generation: report.snapshot.as_ref().map(|s| s.source_generation),
            bytes_moved: report.copied_bytes,
            closed_ms,
            counts,
            completed: true,
            finished_at: crate::store::fs::now_ms() / 1000,
        };
        let mut state = State::load(state_file)?;
        state.phases.push(record.clone());
        state.save(state_file)?;
        Ok(record)
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;
    use crate::cluster::Auth;

    fn side(extra: &str) -> Side {
        let text = format!(
            "url = \"http://127.0.0.1:9200\"\nrepository = \"r\"\nrepository_type = \"fs\"\nstore = \"/tmp/r\"\n{extra}"
        );
        toml::from_str(&text).expect("side parses")
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[tokio::test]
    async fn auth_kinds_from_the_job_and_the_environment() {
        let none = side("").cluster_config("SRC", &env_of(&[])).await.unwrap();
        assert!(matches!(none.auth, Auth::None));

        let s = side("user = \"u\"");
        let e = s.cluster_config("SRC", &env_of(&[])).await.unwrap_err();
        assert!(
            e.to_string().contains("SNAPFERRY_SRC_CLUSTER_PASSWORD"),
            "{e}"
        );
        let c = s
            .cluster_config("SRC", &env_of(&[("SNAPFERRY_SRC_CLUSTER_PASSWORD", "pw")]))
            .await
            .unwrap();
        assert!(
            matches!(c.auth, Auth::Basic { ref user, ref password } if user == "u" && password == "pw")
        );

        let s = side("auth = \"api_key\"");
        let e = s.cluster_config("DST", &env_of(&[])).await.unwrap_err();
        assert!(
            e.to_string().contains("SNAPFERRY_DST_CLUSTER_API_KEY"),
            "{e}"
        );
        let c = s
            .cluster_config(
                "DST",
                &env_of(&[("SNAPFERRY_DST_CLUSTER_API_KEY", "aWQ6a2V5")]),
            )
            .await
            .unwrap();
        assert!(matches!(c.auth, Auth::ApiKey(ref k) if k == "aWQ6a2V5"));

        let s = side("auth = \"sigv4\"");
        let e = s.cluster_config("SRC", &env_of(&[])).await.unwrap_err();
        assert!(e.to_string().contains("aws_region"), "{e}");
        let s = side("auth = \"sigv4\"\naws_region = \"us-west-2\"\ninsecure = true");
        let e = s
            .cluster_config(
                "SRC",
                &env_of(&[("SNAPFERRY_SRC_CLUSTER_ACCESS_KEY_ID", "AKID")]),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("SECRET_ACCESS_KEY"), "{e}");
        let c = s
            .cluster_config(
                "SRC",
                &env_of(&[
                    ("SNAPFERRY_SRC_CLUSTER_ACCESS_KEY_ID", "AKID"),
                    ("SNAPFERRY_SRC_CLUSTER_SECRET_ACCESS_KEY", "SECRET"),
                ]),
            )
            .await
            .unwrap();
        assert!(c.insecure);
        match c.auth {
            Auth::SigV4(s) => {
                assert_eq!((s.region.as_str(), s.service.as_str()), ("us-west-2", "es"));
                assert_eq!(s.credentials.access_key_id(), "AKID");
            }
            other => panic!("expected SigV4, got {other:?}"),
        }
        assert_eq!(c.url, "http://127.0.0.1:9200");

        let e = side("auth = \"kerberos\"")
            .cluster_config("SRC", &env_of(&[]))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("none, basic, api_key or sigv4"),
            "{e}"
        );
    }
}
