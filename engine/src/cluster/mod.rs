//! A thin Elasticsearch/OpenSearch client for the snapshot, restore and cutover calls
//! that `snapferry migrate` drives. Over reqwest (rustls), JSON in and out,
//! `Content-Type: application/json` always, tolerant of the response shapes of
//! Elasticsearch 5.x–8.x and OpenSearch 1.x–2.x.
//!
//! Auth: none, HTTP basic, API key, or AWS SigV4 (service `es`, payload hash signed) for
//! Amazon's Elasticsearch/OpenSearch Service. Errors: the `error.type`/`error.reason`
//! body (with root causes) becomes one line; a 403 on repository registration on
//! Amazon's service points at `role_arn` / `iam:PassRole` / the snapshot role mapping.

pub mod compat;
pub mod sigv4;

use std::time::Duration;

use base64::Engine as _;
pub use reqwest::Method;
use serde_json::{json, Value};

use crate::error::{root_cause, Error, ErrorKind, Result};

/// How to authenticate.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// HTTP basic.
    Basic {
        /// User name for HTTP basic auth.
        user: String,
        /// Password (never printed).
        password: String,
    },
    /// `Authorization: ApiKey <base64(id:key)>` (pass the encoded value).
    ApiKey(String),
    /// AWS SigV4 for Amazon's service.
    SigV4(sigv4::AwsSigner),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Basic { .. } => "Basic(<redacted>)",
            Auth::ApiKey(_) => "ApiKey(<redacted>)",
            Auth::SigV4(_) => "SigV4(<redacted>)",
        })
    }
}

/// How to reach one cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// Base URL, e.g. `https://search-domain.us-west-2.es.amazonaws.com`.
    pub url: String,
    /// How requests authenticate (none, basic, or SigV4 for managed clusters).
    pub auth: Auth,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<std::path::PathBuf>,
    /// Skip TLS verification (test clusters only).
    pub insecure: bool,
    /// Which cluster of a job this is (named in every error).
    pub side: Option<crate::error::Side>,
}

/// The cluster's identity (`GET /`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterVersion {
    /// `opensearch` or `elasticsearch`.
    pub distribution: String,
    /// Version number, e.g. `2.19.6`.
    pub number: String,
    /// Major version.
    pub major: u32,
}

/// A snapshot as `GET _snapshot/REPO/NAME` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// Snapshot name, as the cluster lists it.
    pub name: String,
    /// UUID.
    pub uuid: Option<String>,
    /// IN_PROGRESS, SUCCESS, FAILED, PARTIAL, INCOMPATIBLE.
    pub state: String,
    /// Indices the snapshot holds, as the cluster reports them.
    pub indices: Vec<String>,
    /// Shards that failed.
    pub failed_shards: u64,
    /// Shards in total.
    pub total_shards: u64,
}

impl SnapshotInfo {
    /// Success is `state == SUCCESS` with no failed shard (`_status` would call PARTIAL
    /// a success; this does not).
    pub fn succeeded(&self) -> bool {
        self.state == "SUCCESS" && self.failed_shards == 0
    }
}

/// The client.
pub struct Cluster {
    http: reqwest::Client,
    cfg: ClusterConfig,
}

/// One line from an Elasticsearch error body.
pub fn error_line(status: u16, body: &Value) -> String {
    let e = &body["error"];
    if let Some(s) = e.as_str() {
        return format!("HTTP {status}: {s}");
    }
    let ty = e["type"].as_str().unwrap_or("");
    let reason = e["reason"].as_str().unwrap_or("");
    let mut line = if ty.is_empty() && reason.is_empty() {
        let raw = body.to_string();
        format!(
            "HTTP {status}: {}",
            raw.chars().take(300).collect::<String>()
        )
    } else {
        format!("HTTP {status} {ty}: {reason}")
    };
    if let Some(rc) = e["root_cause"].as_array() {
        for c in rc {
            let (t, r) = (
                c["type"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
            );
            if !r.is_empty() && r != reason {
                line.push_str(&format!(" (caused by {t}: {r})"));
            }
        }
    }
    if let Some(c) = e["caused_by"].as_object() {
        let r = c.get("reason").and_then(Value::as_str).unwrap_or("");
        if !r.is_empty() && !line.contains(r) {
            line.push_str(&format!(
                " (caused by {}: {r})",
                c.get("type").and_then(Value::as_str).unwrap_or("")
            ));
        }
    }
    line
}

impl Cluster {
    /// Builds the client (no request is sent).
    pub fn new(cfg: ClusterConfig) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .no_proxy();
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::invalid_input(format!("cannot read CA file {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Error::invalid_input(format!(
                    "CA file {} is not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            b = b.add_root_certificate(cert);
        }
        if cfg.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b
            .build()
            .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))?;
        if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
            return Err(Error::invalid_input(format!(
                "cluster URL {:?} must start with http:// or https://",
                crate::location::redact_url(&cfg.url)
            )));
        }
        Ok(Cluster { http, cfg })
    }

    /// Sends one request; returns the JSON body of a 2xx answer, maps anything else.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let r = self.call_untagged(method, path, body).await;
        match self.cfg.side {
            Some(side) => r.map_err(|e| e.on(side)),
            None => r,
        }
    }

    async fn call_untagged(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{}", self.cfg.url.trim_end_matches('/'), path);
        let bytes = body
            .as_ref()
            .map(|b| b.to_string().into_bytes())
            .unwrap_or_default();
        let mut headers: Vec<(String, String)> =
            vec![("content-type".into(), "application/json".into())];
        match &self.cfg.auth {
            Auth::None => {}
            Auth::Basic { user, password } => headers.push((
                "authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ),
            )),
            Auth::ApiKey(k) => headers.push(("authorization".into(), format!("ApiKey {k}"))),
            Auth::SigV4(s) => {
                let signed = s.fresh().await?.sign(
                    method.as_str(),
                    &url,
                    &headers,
                    &bytes,
                    std::time::SystemTime::now(),
                )?;
                headers.extend(signed);
            }
        }
        let mut req = self.http.request(method.clone(), &url);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if !bytes.is_empty() {
            req = req.body(bytes);
        }
        let what = format!("{method} {path}");
        let resp = req.send().await.map_err(|e| {
            let cause = root_cause(&e);
            if e.is_connect() {
                Error::unreachable(format!("{what} at {}: {cause}", self.cfg.url)).with_source(e)
            } else {
                Error::timeout(format!("{what} at {}: {cause}", self.cfg.url)).with_source(e)
            }
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::timeout(format!("{what}: {}", root_cause(&e))))?;
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            // An answer that is not JSON is not the cluster's (a web server, a proxy
            // page, a wrong port); 401/403 pages of proxies still say who refused.
            Err(_) if !matches!(status, 401 | 403) => {
                return Err(Error::protocol(format!(
                    "{what} at {}: HTTP {status} with a body that is not JSON: not an Elasticsearch/OpenSearch endpoint",
                    self.cfg.url
                )))
            }
            Err(_) => Value::String(text),
        };
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let line = format!("{what}: {}", error_line(status, &v));
        Err(match status {
            401 => Error::access_denied(line),
            403 if path.starts_with("/_snapshot/") && matches!(self.cfg.auth, Auth::SigV4(_)) && method == Method::PUT => Error::access_denied(format!(
                "{line}; on Amazon's service, registering a repository needs role_arn in the settings, iam:PassRole on that role for the caller, and (with fine-grained access control) the caller mapped to the manage_snapshots role"
            )),
            403 => Error::access_denied(line),
            404 => Error::not_found(line),
            429 => Error::throttled(line, None),
            s if s >= 500 => Error::server(line),
            _ => Error::cluster(line),
        })
    }

    /// `GET /` (falls back to `GET /_nodes/_local` where `/` is not served).
    pub async fn version(&self) -> Result<ClusterVersion> {
        let v = match self.call(Method::GET, "/", None).await {
            Ok(v) if v["version"]["number"].is_string() => v["version"].clone(),
            Ok(_) => self.node_version().await?,
            Err(e) if e.kind() == ErrorKind::Cluster => self.node_version().await?,
            Err(e) => return Err(e),
        };
        let number = v["number"].as_str().unwrap_or("").to_string();
        let distribution = v["distribution"]
            .as_str()
            .unwrap_or("elasticsearch")
            .to_string();
        let major = number
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if number.is_empty() {
            return Err(Error::protocol(format!(
                "GET / at {}: the answer names no version: not an Elasticsearch/OpenSearch endpoint",
                self.cfg.url
            )));
        }
        Ok(ClusterVersion {
            distribution,
            number,
            major,
        })
    }

    /// `GET /_nodes/_local`'s version, where `GET /` is not served.
    async fn node_version(&self) -> Result<Value> {
        let n = self.call(Method::GET, "/_nodes/_local", None).await?;
        let node = n["nodes"]
            .as_object()
            .and_then(|m| m.values().next())
            .cloned()
            .unwrap_or_default();
        // Where `GET /` is not served, the node's settings tell the distribution apart:
        // OpenSearch's name its own keys and paths (`opensearch.*`, `.../opensearch-x.y`).
        fn mentions(v: &Value, word: &str) -> bool {
            match v {
                Value::String(s) => s.contains(word),
                Value::Array(a) => a.iter().any(|x| mentions(x, word)),
                Value::Object(m) => m.iter().any(|(k, x)| k.contains(word) || mentions(x, word)),
                _ => false,
            }
        }
        let dist = if mentions(&node["settings"], "opensearch") {
            "opensearch"
        } else {
            "elasticsearch"
        };
        Ok(json!({"number": node["version"], "distribution": dist}))
    }

    /// `PUT _snapshot/REPO` with a type and settings.
    pub async fn register_repository(&self, repo: &str, kind: &str, settings: Value) -> Result<()> {
        self.call(
            Method::PUT,
            &format!("/_snapshot/{repo}"),
            Some(json!({"type": kind, "settings": settings})),
        )
        .await?;
        Ok(())
    }

    /// `GET _snapshot/REPO` → (type, settings); `None` when it is not registered.
    pub async fn repository(&self, repo: &str) -> Result<Option<(String, Value)>> {
        match self
            .call(Method::GET, &format!("/_snapshot/{repo}"), None)
            .await
        {
            Ok(v) => Ok(v.get(repo).map(|r| {
                (
                    r["type"].as_str().unwrap_or("").to_string(),
                    r["settings"].clone(),
                )
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE _snapshot/REPO`: unregisters the repository (its data stays where it is).
    pub async fn delete_repository(&self, repo: &str) -> Result<()> {
        self.call(Method::DELETE, &format!("/_snapshot/{repo}"), None)
            .await
            .map(|_| ())
    }

    /// `GET _snapshot/_status`: whether any snapshot is running on the cluster (a new one
    /// would be refused, or queue behind it).
    pub async fn snapshot_running(&self) -> Result<bool> {
        let v = self.call(Method::GET, "/_snapshot/_status", None).await?;
        Ok(v["snapshots"].as_array().is_some_and(|a| !a.is_empty()))
    }

    /// `PUT INDEX/_settings {"index.blocks.write": true}`: stops writes to the index
    /// (reads, snapshots and metadata changes still work).
    pub async fn set_write_block(&self, index: &str) -> Result<()> {
        self.call(
            Method::PUT,
            &format!("/{index}/_settings"),
            Some(json!({"index.blocks.write": true})),
        )
        .await
        .map(|_| ())
    }

    /// `GET INDEX/_settings/index.blocks.write`: whether writes to the index are blocked.
    pub async fn write_blocked(&self, index: &str) -> Result<bool> {
        let v = self
            .call(
                Method::GET,
                &format!("/{index}/_settings/index.blocks.write"),
                None,
            )
            .await?;
        Ok(v[index]["settings"]["index"]["blocks"]["write"].as_str() == Some("true"))
    }

    /// `PUT _snapshot/REPO/NAME` without waiting (gateways time out long requests).
    pub async fn create_snapshot(&self, repo: &str, name: &str, indices: &str) -> Result<()> {
        self.call(
            Method::PUT,
            &format!("/_snapshot/{repo}/{name}"),
            Some(json!({"indices": indices, "include_global_state": false})),
        )
        .await?;
        Ok(())
    }

    /// `GET _snapshot/REPO/NAME`.
    pub async fn snapshot(&self, repo: &str, name: &str) -> Result<SnapshotInfo> {
        let v = self
            .call(Method::GET, &format!("/_snapshot/{repo}/{name}"), None)
            .await?;
        // 5.x/6.x/7.x+/OpenSearch: {"snapshots":[...]}; 6.x multi-repo: {"responses":[{"snapshots":[...]}]}.
        let s = v["snapshots"]
            .as_array()
            .and_then(|a| a.first())
            .or_else(|| {
                v["responses"][0]["snapshots"]
                    .as_array()
                    .and_then(|a| a.first())
            })
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("snapshot {name} not found in repository {repo}"))
            })?;
        Ok(SnapshotInfo {
            name: s["snapshot"].as_str().unwrap_or(name).to_string(),
            uuid: s["uuid"].as_str().map(str::to_string),
            state: s["state"].as_str().unwrap_or("").to_string(),
            indices: s["indices"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            failed_shards: s["shards"]["failed"].as_u64().unwrap_or(0),
            total_shards: s["shards"]["total"].as_u64().unwrap_or(0),
        })
    }

    /// Polls a snapshot until it is no longer IN_PROGRESS (bounded by `timeout`).
    pub async fn wait_snapshot(
        &self,
        repo: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<SnapshotInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = Duration::from_millis(200);
        loop {
            let s = self.snapshot(repo, name).await?;
            if s.state != "IN_PROGRESS" && s.state != "STARTED" && !s.state.is_empty() {
                return Ok(s);
            }
            if tokio::time::Instant::now() + wait > deadline {
                // Not a connectivity problem: the cluster answers, the work is slow.
                return Err(Error::cluster(format!(
                    "snapshot {name} still {} after {timeout:?}",
                    s.state
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// `POST _snapshot/REPO/NAME/_restore` (returns once accepted; follow with
    /// [`Cluster::wait_recovery`]).
    pub async fn restore(&self, repo: &str, name: &str, body: Value) -> Result<()> {
        self.call(
            Method::POST,
            &format!("/_snapshot/{repo}/{name}/_restore"),
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// `POST INDEX/_close`.
    pub async fn close_index(&self, index: &str) -> Result<()> {
        self.call(Method::POST, &format!("/{index}/_close"), None)
            .await
            .map(|_| ())
    }

    /// `POST INDEX/_open`.
    pub async fn open_index(&self, index: &str) -> Result<()> {
        self.call(Method::POST, &format!("/{index}/_open"), None)
            .await
            .map(|_| ())
    }

    /// Polls `INDEX/_recovery` until every shard is DONE (bounded by `timeout`).
    pub async fn wait_recovery(&self, index: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self
                .call(Method::GET, &format!("/{index}/_recovery"), None)
                .await?;
            let shards: Vec<&Value> = v
                .as_object()
                .map(|m| {
                    m.values()
                        .flat_map(|i| i["shards"].as_array().into_iter().flatten())
                        .collect()
                })
                .unwrap_or_default();
            if !shards.is_empty() && shards.iter().all(|s| s["stage"].as_str() == Some("DONE")) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::cluster(format!(
                    "{index}: recovery not done after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `GET INDEX/_count`.
    pub async fn count(&self, index: &str) -> Result<u64> {
        let v = self
            .call(Method::GET, &format!("/{index}/_count"), None)
            .await?;
        v["count"]
            .as_u64()
            .ok_or_else(|| Error::protocol(format!("{index}/_count answered without a count")))
    }

    /// `GET _cat/indices/PATTERN?format=json` → index names (sorted).
    pub async fn indices(&self, pattern: &str) -> Result<Vec<String>> {
        let v = self
            .call(
                Method::GET,
                &format!("/_cat/indices/{pattern}?format=json&expand_wildcards=open,closed"),
                None,
            )
            .await?;
        let mut out: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["index"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_line() {
        let v = json!({"error": {"root_cause": [{"type": "repository_missing_exception", "reason": "[r] missing"}], "type": "repository_missing_exception", "reason": "[r] missing"}, "status": 404});
        assert_eq!(
            error_line(404, &v),
            "HTTP 404 repository_missing_exception: [r] missing"
        );
        let v = json!({"error": {"type": "snapshot_restore_exception", "reason": "cannot restore", "root_cause": [{"type": "x", "reason": "open index with same name"}]}});
        assert!(error_line(500, &v).contains("caused by x: open index with same name"));
        assert_eq!(
            error_line(400, &json!({"error": "old style"})),
            "HTTP 400: old style"
        );
    }

    #[test]
    fn partial_is_not_success() {
        let mut s = SnapshotInfo {
            name: "s".into(),
            uuid: None,
            state: "SUCCESS".into(),
            indices: vec![],
            failed_shards: 0,
            total_shards: 3,
        };
        assert!(s.succeeded());
        s.failed_shards = 1;
        assert!(!s.succeeded());
        s.state = "PARTIAL".into();
        assert!(!s.succeeded());
    }
}
