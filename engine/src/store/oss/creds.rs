//! Where OSS credentials come from, and fetching the temporary ones.
//!
//! Fixed AccessKeys never change; the others are STS tokens that expire (usually after
//! an hour) and are refreshed before they do by [`crate::credentials::Refreshing`]. The
//! sources, as Alibaba Cloud's credential SDKs name and read them:
//!
//! - **A command** (`SNAPFERRY_{SRC,DST}_CREDENTIAL_PROCESS`): run with `sh -c`, prints
//!   one JSON object — AWS's `credential_process` shape (`AccessKeyId`,
//!   `SecretAccessKey`, `SessionToken`, `Expiration`) or Alibaba's (`AccessKeySecret`,
//!   `SecurityToken`). For anything else (the `aliyun` CLI, a vault).
//! - **A credentials URI** (`ALIBABA_CLOUD_CREDENTIALS_URI`): `GET` answers
//!   `{"Code": "Success", "AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}`.
//! - **An ECS RAM role** (`ALIBABA_CLOUD_ECS_METADATA` = the role name): the instance
//!   metadata service at `100.100.100.200` (IMDSv2: a session token from
//!   `PUT /latest/api/token` first, falling back to a plain GET when that is refused),
//!   `GET /latest/meta-data/ram/security-credentials/<role>`, same JSON shape.
//! - **RRSA / OIDC** on ACK (`ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`,
//!   `ALIBABA_CLOUD_OIDC_TOKEN_FILE`; `ALIBABA_CLOUD_ROLE_SESSION_NAME`,
//!   `ALIBABA_CLOUD_STS_ENDPOINT` optional): STS `AssumeRoleWithOIDC`, which needs no
//!   signature — the token file (rotated by Kubernetes) is read again for every fetch.
//!
//! Each is a plain HTTP or process call, written here rather than pulling an SDK into
//! the build (no Alibaba credentials crate covers all four).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::sign::OssCredentials;
use crate::credentials::{Expiring, Fetch, Refreshing};
use crate::error::{Error, Result};

/// The ECS instance metadata service.
pub const ECS_METADATA: &str = "http://100.100.100.200";
/// Alibaba Cloud STS's public endpoint.
pub const STS_ENDPOINT: &str = "https://sts.aliyuncs.com";

/// Where one side's OSS credentials come from.
#[derive(Clone, Debug)]
pub enum OssCredentialSource {
    /// Fixed AccessKeys (and a token that is not refreshed).
    Static(OssCredentials),
    /// A command that prints them as JSON.
    Process {
        /// The command line (run with `sh -c`; may hold secrets: never shown).
        command: String,
    },
    /// `GET` a credentials URI.
    Uri {
        /// The URL.
        url: String,
    },
    /// An ECS instance's RAM role, from the metadata service.
    EcsRole {
        /// The role name (`None`: the one the metadata service lists).
        role: Option<String>,
        /// The metadata service (default [`ECS_METADATA`]).
        endpoint: String,
    },
    /// STS `AssumeRoleWithOIDC` (RRSA on ACK).
    Oidc {
        /// The RAM role to assume.
        role_arn: String,
        /// The OIDC identity provider.
        provider_arn: String,
        /// The OIDC token, read for every fetch.
        token_file: PathBuf,
        /// The session name.
        session_name: String,
        /// The STS endpoint (a URL, or a host for https).
        sts_endpoint: String,
    },
}

impl From<OssCredentials> for OssCredentialSource {
    fn from(c: OssCredentials) -> Self {
        OssCredentialSource::Static(c)
    }
}

impl OssCredentialSource {
    /// What the credentials come from, with no secret (the command's program only).
    pub fn describe(&self) -> String {
        match self {
            OssCredentialSource::Static(_) => "fixed AccessKeys".into(),
            OssCredentialSource::Process { command } => format!(
                "the credential process {:?}",
                command.split_whitespace().next().unwrap_or("")
            ),
            OssCredentialSource::Uri { url } => {
                format!(
                    "the credentials URI {}",
                    crate::location::redact_url(url.split('?').next().unwrap_or(url))
                )
            }
            OssCredentialSource::EcsRole { role, endpoint } => format!(
                "the ECS RAM role {} at {endpoint}",
                role.as_deref().unwrap_or("(listed)")
            ),
            OssCredentialSource::Oidc { role_arn, .. } => {
                format!("AssumeRoleWithOIDC for {role_arn}")
            }
        }
    }
}

/// A side's credentials at signing time.
pub(crate) enum OssCreds {
    Static(OssCredentials),
    Refreshing(Refreshing<OssCredentials>),
}

impl OssCreds {
    pub(crate) fn new(source: &OssCredentialSource) -> Result<Self> {
        let http = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(15))
                .no_proxy()
                .build()
                .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))
        };
        let fetch: Fetch<OssCredentials> = match source.clone() {
            OssCredentialSource::Static(c) => return Ok(OssCreds::Static(c)),
            OssCredentialSource::Process { command } => Arc::new(move || {
                let command = command.clone();
                Box::pin(async move { run_process(&command).await })
            }),
            OssCredentialSource::Uri { url } => {
                let client = http()?;
                Arc::new(move || {
                    let (client, url) = (client.clone(), url.clone());
                    Box::pin(async move {
                        let what = "the credentials URI";
                        let r = client.get(&url).send().await;
                        parse_answer(what, read(what, r).await?)
                    })
                })
            }
            OssCredentialSource::EcsRole { role, endpoint } => {
                let client = http()?;
                Arc::new(move || {
                    let (client, role, ep) = (client.clone(), role.clone(), endpoint.clone());
                    Box::pin(async move { ecs_role(&client, &ep, role.as_deref()).await })
                })
            }
            OssCredentialSource::Oidc {
                role_arn,
                provider_arn,
                token_file,
                session_name,
                sts_endpoint,
            } => {
                let client = http()?;
                Arc::new(move || {
                    let client = client.clone();
                    let (role, provider, file, session, ep) = (
                        role_arn.clone(),
                        provider_arn.clone(),
                        token_file.clone(),
                        session_name.clone(),
                        sts_endpoint.clone(),
                    );
                    Box::pin(async move {
                        assume_role_with_oidc(&client, &ep, &role, &provider, &file, &session).await
                    })
                })
            }
        };
        Ok(OssCreds::Refreshing(Refreshing::new(
            source.describe(),
            fetch,
        )))
    }

    pub(crate) async fn get(&self) -> Result<OssCredentials> {
        match self {
            OssCreds::Static(c) => Ok(c.clone()),
            OssCreds::Refreshing(r) => r.get().await,
        }
    }

    pub(crate) async fn invalidate(&self) {
        if let OssCreds::Refreshing(r) = self {
            r.invalidate().await;
        }
    }

    /// Whether the credentials are temporary (an `InvalidAccessKeyId` may mean expired).
    pub(crate) fn refreshes(&self) -> bool {
        matches!(self, OssCreds::Refreshing(_))
    }
}

/// The JSON any source answers with: Alibaba's names, or AWS's `credential_process` ones.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default, alias = "SecretAccessKey")]
    access_key_secret: Option<String>,
    #[serde(default, alias = "SessionToken")]
    security_token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

fn parse_answer(what: &str, body: bytes::Bytes) -> Result<Expiring<OssCredentials>> {
    // Never echo the body: it holds the secret.
    let a: Answer = serde_json::from_slice(&body).map_err(|e| {
        Error::access_denied(format!(
            "{what} did not answer with credentials JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if let Some(code) = a.code.as_deref().filter(|c| *c != "Success") {
        return Err(Error::access_denied(format!(
            "{what} answered Code {code:?} instead of \"Success\""
        )));
    }
    let (Some(id), Some(secret)) = (
        a.access_key_id.filter(|s| !s.is_empty()),
        a.access_key_secret.filter(|s| !s.is_empty()),
    ) else {
        return Err(Error::access_denied(format!(
            "{what} answered without AccessKeyId and AccessKeySecret"
        )));
    };
    let expires = match a.expiration.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(parse_expiration(s).ok_or_else(|| {
            Error::access_denied(format!(
                "{what} answered an Expiration that is not RFC 3339: {s:?}"
            ))
        })?),
    };
    Ok(Expiring {
        value: OssCredentials {
            access_key_id: id,
            access_key_secret: secret,
            security_token: a.security_token.filter(|s| !s.is_empty()),
        },
        expires,
    })
}

fn parse_expiration(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

async fn read(
    what: &str,
    r: std::result::Result<reqwest::Response, reqwest::Error>,
) -> Result<bytes::Bytes> {
    let r = r.map_err(|e| super::transport_error(what, e))?;
    let status = r.status();
    let body = r
        .bytes()
        .await
        .map_err(|e| super::transport_error(what, e))?;
    if !status.is_success() {
        return Err(Error::access_denied(format!(
            "{what} answered HTTP {}",
            status.as_u16()
        )));
    }
    Ok(body)
}

async fn run_process(command: &str) -> Result<Expiring<OssCredentials>> {
    let program = command.split_whitespace().next().unwrap_or("").to_string();
    let what = format!("the credential process {program:?}");
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::access_denied(format!("cannot run {what}: {e}")).with_source(e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").chars().take(200);
        return Err(Error::access_denied(format!(
            "{what} failed ({}): {}",
            out.status,
            first.collect::<String>()
        )));
    }
    parse_answer(&what, out.stdout.into())
}

async fn ecs_role(
    client: &reqwest::Client,
    endpoint: &str,
    role: Option<&str>,
) -> Result<Expiring<OssCredentials>> {
    let base = endpoint.trim_end_matches('/');
    let what = "the ECS metadata service";
    // IMDSv2 when the instance offers it; an instance that refuses the token request
    // (IMDSv1 only) is asked without one.
    let token = match client
        .put(format!("{base}/latest/api/token"))
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", "21600")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.text().await.ok(),
        Ok(_) => None,
        Err(e) => return Err(super::transport_error(what, e)),
    };
    let get = |url: String| {
        let mut req = client.get(url);
        if let Some(t) = &token {
            req = req.header("X-aliyun-ecs-metadata-token", t);
        }
        req.send()
    };
    let dir = format!("{base}/latest/meta-data/ram/security-credentials/");
    let role = match role {
        Some(r) => r.to_string(),
        None => {
            let body = read(what, get(dir.clone()).await).await?;
            let listed = String::from_utf8_lossy(&body);
            listed
                .lines()
                .next()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .ok_or_else(|| Error::access_denied("the ECS instance has no RAM role attached"))?
                .to_string()
        }
    };
    let body = read(what, get(format!("{dir}{role}")).await).await?;
    parse_answer(what, body)
}

async fn assume_role_with_oidc(
    client: &reqwest::Client,
    endpoint: &str,
    role_arn: &str,
    provider_arn: &str,
    token_file: &std::path::Path,
    session: &str,
) -> Result<Expiring<OssCredentials>> {
    let what = "STS AssumeRoleWithOIDC";
    let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
        Error::access_denied(format!(
            "cannot read the OIDC token file {} (ALIBABA_CLOUD_OIDC_TOKEN_FILE): {e}",
            token_file.display()
        ))
        .with_source(e)
    })?;
    let base = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", endpoint.trim_end_matches('/'))
    };
    let timestamp = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let r = client
        .post(format!("{base}/"))
        .query(&[
            ("Action", "AssumeRoleWithOIDC"),
            ("Format", "JSON"),
            ("Version", "2015-04-01"),
            ("Timestamp", timestamp.as_str()),
        ])
        .form(&[
            ("RoleArn", role_arn),
            ("OIDCProviderArn", provider_arn),
            ("OIDCToken", token.trim()),
            ("RoleSessionName", session),
        ])
        .send()
        .await;
    let body = read(what, r).await?;
    #[derive(Deserialize)]
    struct Resp {
        #[serde(rename = "Credentials")]
        credentials: serde_json::Value,
    }
    let resp: Resp = serde_json::from_slice(&body).map_err(|e| {
        Error::access_denied(format!(
            "{what} did not answer with Credentials ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    parse_answer(what, resp.credentials.to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_alibaba_and_aws_shapes_parse_and_secrets_are_never_echoed() {
        let ali = br#"{"Code":"Success","AccessKeyId":"STS.a","AccessKeySecret":"s3cr3t","SecurityToken":"tok","Expiration":"2030-01-01T00:00:00Z","LastUpdated":"2029-12-31T18:00:00Z"}"#;
        let c = parse_answer("x", bytes::Bytes::from_static(ali)).unwrap();
        assert_eq!(c.value.access_key_id, "STS.a");
        assert_eq!(c.value.access_key_secret, "s3cr3t");
        assert_eq!(c.value.security_token.as_deref(), Some("tok"));
        assert_eq!(
            c.expires,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        let aws = br#"{"Version":1,"AccessKeyId":"STS.b","SecretAccessKey":"k","SessionToken":"t","Expiration":"2030-01-01T00:00:00Z"}"#;
        let c = parse_answer("x", bytes::Bytes::from_static(aws)).unwrap();
        assert_eq!(
            (
                c.value.access_key_secret.as_str(),
                c.value.security_token.as_deref()
            ),
            ("k", Some("t"))
        );
        let refused = br#"{"Code":"Failed","AccessKeyId":"a","AccessKeySecret":"s3cr3t"}"#;
        let e = parse_answer("x", bytes::Bytes::from_static(refused)).unwrap_err();
        assert!(
            e.to_string().contains("Failed") && !e.to_string().contains("s3cr3t"),
            "{e}"
        );
        let broken = br#"{"AccessKeyId":"a","AccessKeySecret":"s3cr3t""#;
        let e = parse_answer("x", bytes::Bytes::from_static(broken)).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let bad_time = br#"{"AccessKeyId":"a","AccessKeySecret":"b","Expiration":"tomorrow"}"#;
        assert!(parse_answer("x", bytes::Bytes::from_static(bad_time)).is_err());
    }

    #[test]
    fn descriptions_hold_no_secret() {
        let p = OssCredentialSource::Process {
            command: "fetch-creds --secret hunter2".into(),
        };
        assert!(!p.describe().contains("hunter2"), "{}", p.describe());
        let u = OssCredentialSource::Uri {
            url: "http://user:pw@host/creds?sig=abc".into(),
        };
        let d = u.describe();
        assert!(!d.contains("pw") && !d.contains("abc"), "{d}");
    }

    #[tokio::test]
    async fn a_failing_process_says_so_in_one_line() {
        let e = run_process("echo nope >&2; exit 3").await.unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::AccessDenied);
        assert!(e.to_string().contains("nope"), "{e}");
        let ok = run_process(
            r#"printf '{"AccessKeyId":"STS.x","AccessKeySecret":"y","SecurityToken":"z"}'"#,
        )
        .await
        .unwrap();
        assert_eq!(ok.value.access_key_id, "STS.x");
        assert_eq!(ok.expires, None);
    }
}
