//! `s3`: any S3-compatible endpoint through aws-sdk-s3.
//!
//! - Custom endpoints use path-style addressing (MinIO and most S3-compatible servers
//!   want it); AWS itself keeps virtual-hosted style.
//! - The SDK's own retries are off: [`crate::retry`] is the one retry policy, so that
//!   attempts are counted and bounded in one place.
//! - The SDK's automatic request checksums (aws-chunked trailers) are off; we send the
//!   CRC32 we computed while streaming as `x-amz-checksum-crc32` and require the server
//!   to echo it (it rejects the request if the bytes do not match). Servers that ignore
//!   checksum headers fall back to comparing the returned ETag with the MD5 of the bytes.
//! - SDK errors are mapped to [`Error`] here and nowhere else.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::listing::{self, Cursor, ListPage, Listed};
use super::watch::{ProgressBody, Watch};
use super::{
    normalize_etag, CompletedPart, LevelStream, ListStream, ObjectMeta, Part, PendingUpload,
    Presence, PutOptions, SourceRecord, Store, Stored, VerifiedBy, VerifySource,
};
use crate::checksum::verify_crc32_then;
use crate::error::{find_source, io_kind, root_cause, Error, ErrorKind, Result};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{
    future::ProvideCredentials as CredentialsFuture, ProvideCredentials,
};
use aws_sdk_s3::config::IdentityCache;
use std::sync::Arc;

use crate::credentials::{Expiring, Fetch, Refreshing};

/// Static credentials for one side (from `SNAPFERRY_{SRC,DST}_*`).
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key; never printed (see the `Debug` impl).
    pub secret_access_key: String,
    /// Optional session token; never printed.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How to reach one S3 bucket.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Root prefix inside the bucket ("" or ending with `/`).
    pub prefix: String,
    /// Custom endpoint URL (path-style is used with it).
    pub endpoint: Option<String>,
    /// Region; a custom endpoint without one uses us-east-1.
    pub region: Option<String>,
    /// Static credentials; `None` uses the standard AWS chain (refreshed before expiry,
    /// see [`crate::credentials`]).
    pub credentials: Option<StaticCredentials>,
    /// The AWS profile the chain reads (`SNAPFERRY_{SRC,DST}_PROFILE`); `None`: the
    /// chain's own choice (`AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Verify uploads with `Content-MD5` (and the MD5 ETag) instead of CRC32 checksum
    /// headers. Set automatically for OSS's S3-compatible endpoint (`*.aliyuncs.com`),
    /// which ignores `x-amz-checksum-*` and rejects aws-chunked uploads.
    pub content_md5: bool,
    /// A request fails when no byte has moved for this long (default 30 s).
    pub io_timeout: Option<Duration>,
    /// Which checks of its own stored checksums a GET of a whole object makes.
    pub verify_source: VerifySource,
}

/// The default idle limit of a request ([`crate::store::watch`]).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long CompleteMultipartUpload may take to answer: the server assembles the object
/// first (AWS documents minutes for large ones), sending nothing meanwhile.
pub const COMPLETE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The idle limit of a preflight request: an endpoint that answers nothing fails fast.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// An S3 bucket (and prefix) as a store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    content_md5: bool,
    /// OSS's S3-compatible endpoint, which has no ListMultipartUploads.
    oss_compat: bool,
    io_timeout: Duration,
    verify_source: VerifySource,
    /// The AWS chain's credentials behind our refreshing cache; `None` for static ones.
    chain: Option<Arc<Refreshing<Credentials>>>,
}

/// The AWS default credential chain (environment, profile with `credential_process`,
/// web identity / IRSA, ECS container credentials, IMDS), built afresh for every fetch so
/// that a changed credentials or config file is read again, behind [`Refreshing`].
#[derive(Debug)]
struct ChainCredentials(Arc<Refreshing<Credentials>>);

impl ProvideCredentials for ChainCredentials {
    fn provide_credentials<'a>(&'a self) -> CredentialsFuture<'a>
    where
        Self: 'a,
    {
        CredentialsFuture::new(async move {
            self.0.get().await.map_err(CredentialsError::provider_error)
        })
    }
}

fn chain_fetch(region: Option<Region>, profile: Option<String>) -> Fetch<Credentials> {
    Arc::new(move || {
        let (region, profile) = (region.clone(), profile.clone());
        Box::pin(async move {
            let mut b =
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder();
            if let Some(r) = region {
                b = b.region(r);
            }
            if let Some(p) = &profile {
                b = b.profile_name(p);
            }
            let chain = b.build().await;
            let c = chain.provide_credentials().await.map_err(|e| {
                Error::access_denied(format!(
                    "no usable AWS credentials ({})",
                    short(&root_cause(&e))
                ))
                .with_source(e)
            })?;
            Ok(Expiring {
                expires: c.expiry(),
                value: c,
            })
        })
    })
}

impl S3Store {
    /// Builds the client. Loads the AWS credential/region chain only when it is needed.
    pub async fn connect(cfg: S3Config) -> Result<Self> {
        // Connecting fails fast; the rest is bounded per request by an idle watch (see
        // `store::watch`): the SDK's read timeout would also count the upload itself, so
        // it is only a backstop as long as the longest CompleteMultipartUpload.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(COMPLETE_TIMEOUT)
            .build();
        let region = match (&cfg.region, &cfg.endpoint) {
            (Some(r), _) => Some(Region::new(r.clone())),
            (None, Some(_)) => Some(Region::new("us-east-1")),
            (None, None) => None,
        };
        let mut chain = None;
        let mut builder = match (&cfg.credentials, &region) {
            (Some(c), Some(r)) => aws_sdk_s3::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .region(r.clone())
                .credentials_provider(Credentials::new(
                    c.access_key_id.clone(),
                    c.secret_access_key.clone(),
                    c.session_token.clone(),
                    None,
                    "snapferry-env",
                )),
            _ => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(r) = &region {
                    loader = loader.region(r.clone());
                }
                if let Some(p) = &cfg.profile {
                    loader = loader.profile_name(p);
                }
                if let Some(c) = &cfg.credentials {
                    loader = loader.credentials_provider(Credentials::new(
                        c.access_key_id.clone(),
                        c.secret_access_key.clone(),
                        c.session_token.clone(),
                        None,
                        "snapferry-env",
                    ));
                }
                let sdk = loader.load().await;
                let mut b = aws_sdk_s3::config::Builder::from(&sdk);
                let resolved = sdk.region().cloned();
                if resolved.is_none() {
                    b = b.region(Region::new("us-east-1"));
                }
                if cfg.credentials.is_none() {
                    let cache = Arc::new(Refreshing::new(
                        "the AWS credential chain",
                        chain_fetch(resolved.or(region.clone()), cfg.profile.clone()),
                    ));
                    chain = Some(cache.clone());
                    // Our cache decides when to fetch (and forgets refused credentials).
                    b = b
                        .credentials_provider(ChainCredentials(cache))
                        .identity_cache(IdentityCache::no_cache());
                }
                b
            }
        };
        builder = builder
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let oss_compat = cfg
            .endpoint
            .as_deref()
            .is_some_and(|e| e.contains(".aliyuncs.com"));
        if let Some(ep) = &cfg.endpoint {
            // OSS's S3-compatible endpoint wants virtual-hosted style; others path-style.
            builder = builder
                .endpoint_url(ep.clone())
                .force_path_style(!oss_compat);
        }
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: cfg.bucket,
            prefix: cfg.prefix,
            endpoint: cfg.endpoint,
            content_md5: cfg.content_md5 || oss_compat,
            oss_compat,
            io_timeout: cfg.io_timeout.unwrap_or(DEFAULT_IO_TIMEOUT),
            verify_source: cfg.verify_source,
            chain,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn rel_key(&self, full: &str) -> Option<String> {
        full.strip_prefix(self.prefix.as_str()).map(str::to_string)
    }

    fn ctx(&self, op: &str, key: &str) -> String {
        format!("{op} s3://{}/{}{}", self.bucket, self.prefix, key)
    }

    /// Checks a whole object's bytes against what S3 stored for it: its full-object
    /// CRC32 or CRC64NVME when there is one (free), else — `--verify-source md5`, or
    /// `auto` with nothing better — the ETag of a single-part, non-KMS object as their MD5.
    async fn check_whole(
        &self,
        ctx: &str,
        body: &Bytes,
        out: &aws_sdk_s3::operation::get_object::GetObjectOutput,
    ) -> Result<Option<VerifiedBy>> {
        let mismatch = |what: &str, got: String, want: &str| {
            Err(Error::checksum(format!(
                "{ctx}: the bytes read have {what} {got}, the source stores {want}"
            )))
        };
        let mut by = None;
        if let Some(want) = full_object(out.checksum_crc32()) {
            let got = crc_b64(crate::checksum::hash(body, crc32fast::hash).await);
            if got != want {
                return mismatch("CRC32", got, want);
            }
            by = Some(VerifiedBy::Crc32);
        } else if let Some(want) = full_object(out.checksum_crc64_nvme()) {
            let got = crate::checksum::hash(body, |d| {
                base64::engine::general_purpose::STANDARD
                    .encode(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, d).to_be_bytes())
            })
            .await;
            if got != want {
                return mismatch("CRC64NVME", got, want);
            }
            by = Some(VerifiedBy::Crc64);
        }
        let kms = matches!(
            out.server_side_encryption(),
            Some(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                | Some(aws_sdk_s3::types::ServerSideEncryption::AwsKmsDsse)
        ) || out.sse_customer_algorithm().is_some();
        let md5_wanted = match self.verify_source {
            VerifySource::Md5 => true,
            VerifySource::Auto => by.is_none(),
            VerifySource::Off => false,
        };
        let etag = out.e_tag().map(normalize_etag);
        if let Some(want) = etag.filter(|e| md5_wanted && !kms && e.len() == 32 && !e.contains('-'))
        {
            let got = crate::checksum::hash(body, md5_hex).await;
            if got != want {
                return mismatch("MD5", got, &want);
            }
            by = by.or(Some(VerifiedBy::Md5));
        }
        Ok(by)
    }

    /// A request body that reports progress to `watch`; a plain one where the payload is
    /// signed (Content-MD5 mode: the signer reads the body, which must be replayable).
    fn body(&self, data: &Bytes, signed: bool, watch: &std::sync::Arc<Watch>) -> ByteStream {
        if signed {
            ByteStream::from(data.clone())
        } else {
            ByteStream::from_body_1_x(ProgressBody::new(data.clone(), watch.clone()))
        }
    }

    /// The idle limit of a request with a body: a signed body (Content-MD5 mode) cannot
    /// report progress, so only a generous bound applies to it.
    fn body_idle(&self) -> Duration {
        if self.content_md5 {
            COMPLETE_TIMEOUT
        } else {
            self.io_timeout
        }
    }

    /// HEADs an object (pinned to `if_match` when given) with its stored checksums (the
    /// CRC32, composite for multipart objects, confirms a completed upload whose response
    /// was lost; OSS's S3-compatible endpoint has none). `None` when it does not exist.
    async fn head_object(
        &self,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        let ctx = self.ctx("head", key);
        let mut req = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_checksum_mode((!self.content_md5).then_some(ChecksumMode::Enabled));
        if let Some(e) = if_match {
            req = req.if_match(format!("\"{e}\""));
        }
        let res = Watch::new(self.io_timeout)
            .guard(&ctx, async { Ok(req.send().await) })
            .await?;
        match res {
            Ok(out) => Ok(Some(out)),
            Err(SdkError::ServiceError(se))
                if self.chain.is_some()
                    && se.raw().status().as_u16() == 400
                    && se.err().code().is_none() =>
            {
                // A HEAD answer has no body, so S3 cannot say `ExpiredToken` there; with
                // temporary credentials a bare 400 is most likely that. One retry with
                // fresh ones tells (the kind's retry limit).
                Err(Error::credentials_expired(format!(
                    "{ctx}: HTTP 400 without a reason (S3 gives none for HEAD); retried with fresh credentials"
                )))
            }
            Err(e) => match map_err(&ctx, e) {
                e if e.kind() == ErrorKind::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Runs one small request (no body to speak of) under the idle limit.
    async fn io<T, E>(
        &self,
        ctx: &str,
        fut: impl std::future::Future<
            Output = std::result::Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
        >,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        io_within(self.io_timeout, ctx, fut).await
    }

    /// One ListObjectsV2 page under `sub` (relative), checked by [`listing::check_page`].
    fn page(
        &self,
        ctx: &str,
        sub: &str,
        out: aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output,
    ) -> Result<ListPage> {
        let objects = out.contents().iter().map(|o| Listed {
            full: o.key().unwrap_or("").to_string(),
            size: o.size().and_then(|s| u64::try_from(s).ok()),
            mtime_ms: dt_ms(o.last_modified()),
            etag: o.e_tag().map(normalize_etag),
        });
        let prefixes = out
            .common_prefixes()
            .iter()
            .map(|cp| cp.prefix().unwrap_or("").to_string());
        let truncated = out.is_truncated().unwrap_or(false);
        let token = out.next_continuation_token().map(str::to_string);
        listing::check_page(ctx, &self.prefix, sub, objects, prefixes, truncated, token)
    }

    /// The ListObjectsV2 pages of the keys under `sub` (relative to the root), one level
    /// (delimiter `/`) or all, after `start_after`.
    fn pages(
        &self,
        sub: String,
        delimiter: bool,
        start_after: Option<String>,
    ) -> super::RawPages<'_> {
        listing::paginate(sub, start_after, move |c: Cursor| async move {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(&c.sub))
                .max_keys(1000);
            if delimiter {
                req = req.delimiter("/");
            }
            if let Some(t) = &c.token {
                req = req.continuation_token(t);
            } else if let Some(a) = &c.start_after {
                req = req.start_after(self.full_key(a));
            }
            let ctx = self.ctx("list", &c.sub);
            let out = self.io(&ctx, req.send()).await?;
            self.page(&ctx, &c.sub, out)
        })
    }
}

use crate::checksum::{crc32_b64 as crc_b64, md5_hex};

/// In Content-MD5 mode: the server checked the MD5 we sent; its ETag must echo it.
fn verify_md5_etag(ctx: &str, md5: &[u8; 16], etag: Option<&str>) -> Result<()> {
    let want = hex::encode(md5);
    match etag.map(normalize_etag) {
        Some(e) if e == want => Ok(()),
        Some(e) => Err(Error::checksum(format!(
            "{ctx}: server ETag {e} is not the MD5 {want} of the bytes sent"
        ))),
        None => Err(Error::checksum(format!(
            "{ctx}: server returned no ETag to verify"
        ))),
    }
}

/// Maps an SDK error into ours. `ctx` names the operation and object; no secrets.
///
/// The kind comes from the SDK's error variants and the types in their source chains
/// (hyper-util's connect errors, `std::io::ErrorKind`, the credential providers' error
/// type), the HTTP status and S3's error code — never from message text.
fn map_err<E>(ctx: &str, err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let chain: &(dyn std::error::Error + 'static) = &err;
    if find_source::<CredentialsError>(chain).is_some() {
        // The AWS chain found nothing usable (env, profile, web identity, IMDS).
        return Error::access_denied(format!(
            "{ctx}: no usable AWS credentials ({}); set SNAPFERRY_SRC_/DST_ACCESS_KEY_ID and _SECRET_ACCESS_KEY, or configure the AWS credential chain",
            short(&root_cause(chain))
        ));
    }
    let connect_failed =
        find_source::<hyper_util::client::legacy::Error>(chain).is_some_and(|e| e.is_connect());
    let e = match &err {
        SdkError::TimeoutError(_) => Error::timeout(format!("{ctx}: request timed out")),
        SdkError::DispatchFailure(d) => {
            let text = short(&root_cause(chain));
            if d.is_timeout() {
                Error::timeout(format!("{ctx}: {text}"))
            } else if connect_failed {
                Error::unreachable(format!("{ctx}: {text}"))
            } else if d.is_io() {
                match io_kind(chain) {
                    Some(ErrorKind::Unreachable) => Error::unreachable(format!("{ctx}: {text}")),
                    _ => Error::timeout(format!("{ctx}: connection error: {text}")),
                }
            } else if d.is_user() {
                Error::invalid_input(format!("{ctx}: {text}"))
            } else {
                Error::unreachable(format!("{ctx}: {text}"))
            }
        }
        SdkError::ResponseError(_) => {
            // The answer could not be read: a dropped connection (transient), or a body
            // that is not the API's (HTML from a web server, a wrong document root).
            let text = short(&DisplayErrorContext(&err).to_string());
            match io_kind(chain) {
                Some(_) => Error::timeout(format!("{ctx}: reading the response failed: {text}")),
                None => Error::protocol(format!("{ctx}: the response is not S3's: {text}")),
            }
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let msg = se.err().message().unwrap_or("").to_string();
            let detail = if code.is_empty() && msg.is_empty() {
                format!("{ctx}: HTTP {status}")
            } else {
                format!("{ctx}: HTTP {status} {code}: {msg}")
            };
            match (status, code.as_str()) {
                (_, "NoSuchBucket") => Error::location_not_found(detail),
                (_, "NoSuchKey") | (_, "NoSuchUpload") | (_, "NotFound") => {
                    Error::not_found(detail)
                }
                (_, "PreconditionFailed") | (412, _) => Error::source_changed(detail),
                (_, "ConditionalRequestConflict") | (409, "OperationAborted") => {
                    Error::throttled(detail, None)
                }
                (_, "SlowDown") | (429, _) | (503, _) => Error::throttled(detail, None),
                (_, "RequestTimeTooSkewed") => Error::clock_skew(detail),
                // 507 Insufficient Storage (MinIO's XMinioStorageFull): no retry helps.
                (507, _) | (_, "XMinioStorageFull") => Error::storage_full(detail),
                // Temporary credentials past their expiry (S3 documents both codes).
                (_, "ExpiredToken") | (_, "TokenRefreshRequired") => {
                    Error::credentials_expired(detail)
                }
                (_, "InvalidAccessKeyId")
                | (_, "SignatureDoesNotMatch")
                | (_, "AccessDenied")
                | (_, "InvalidToken")
                | (401, _)
                | (403, _) => Error::access_denied(detail),
                (_, "BadDigest") | (_, "InvalidDigest") | (_, "XAmzContentChecksumMismatch") => {
                    Error::checksum(detail)
                }
                (_, "RequestTimeout") | (408, _) => Error::timeout(detail),
                (s, _) if s >= 500 => Error::server(detail),
                // An error status without an S3 error code: the endpoint is not S3 (an
                // HTML 404 from a web server, a proxy's error page).
                (_, "") => Error::protocol(format!(
                    "{ctx}: HTTP {status} without an S3 error code: the endpoint does not speak S3"
                )),
                _ => Error::other(detail),
            }
        }
        _ => Error::other(format!(
            "{ctx}: {}",
            short(&DisplayErrorContext(&err).to_string())
        )),
    };
    e.with_source(err)
}

/// Runs one request whose answer may take up to `idle` to start, its error mapped.
async fn io_within<T, E>(
    idle: Duration,
    ctx: &str,
    fut: impl std::future::Future<
        Output = std::result::Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
    >,
) -> Result<T>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    Watch::new(idle)
        .guard(ctx, async { fut.await.map_err(|e| map_err(ctx, e)) })
        .await
}

/// A stored checksum of the whole object's bytes: not a composite one (`...-N`, of the
/// uploader's own parts), which no other cut of the object can be checked against.
fn full_object(c: Option<&str>) -> Option<&str> {
    c.filter(|c| !c.contains('-'))
}

/// Keeps error texts to one readable line.
fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.len() > 300 {
        let mut end = 300;
        while !one.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &one[..end])
    } else {
        one
    }
}

fn dt_ms(dt: Option<&aws_smithy_types::DateTime>) -> Option<i64> {
    dt.and_then(|d| d.to_millis().ok())
}

/// Checks the server's echo of our CRC32, or (server ignores checksums) its MD5 ETag.
fn verify_echo(
    ctx: &str,
    data: &[u8],
    crc32: u32,
    echoed: Option<&str>,
    etag: Option<&str>,
) -> Result<()> {
    let want = crc_b64(crc32);
    match echoed {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(Error::checksum(format!(
            "{ctx}: server stored crc32 {got}, we sent {want}"
        ))),
        None => {
            let md5 = md5_hex(data);
            match etag.map(normalize_etag) {
                Some(e) if e == md5 => Ok(()),
                Some(e) => Err(Error::checksum(format!(
                    "{ctx}: server echoed no checksum and its ETag {e} is not the MD5 {md5} of the bytes sent"
                ))),
                None => Err(Error::checksum(format!(
                    "{ctx}: server confirmed neither checksum nor ETag"
                ))),
            }
        }
    }
}

#[async_trait]
impl Store for S3Store {
    async fn credentials_refused(&self) {
        if let Some(c) = &self.chain {
            c.invalidate().await;
        }
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Some(ep) => format!("s3://{}/{} @ {}", self.bucket, self.prefix, ep),
            None => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        super::objects_of(self.pages(String::new(), false, start_after))
    }

    fn list_prefix(&self, prefix: &str, start_after: Option<String>) -> ListStream<'_> {
        super::objects_of(self.pages(prefix.to_string(), false, start_after))
    }

    fn lists_levels(&self) -> bool {
        true
    }

    fn list_level(&self, prefix: &str, start_after: Option<String>) -> LevelStream<'_> {
        super::level_of(self.pages(prefix.to_string(), true, start_after))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let Some(out) = self.head_object(key, None).await? else {
            return Ok(None);
        };
        let record = out.metadata().and_then(|m| {
            SourceRecord::from_metadata(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        });
        Ok(Some(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            mtime_ms: dt_ms(out.last_modified()),
            etag: out.e_tag().map(normalize_etag),
            record,
            crc32: out.checksum_crc32().map(str::to_string),
            ..Default::default()
        }))
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        Ok(self.get_range_stored(key, range, if_match).await?.0)
    }

    async fn whole_checksums(&self, key: &str, if_match: Option<&str>) -> Result<Stored> {
        // OSS's S3-compatible endpoint stores none; `off` asks for none.
        if self.content_md5 || self.verify_source == VerifySource::Off {
            return Ok(Stored::default());
        }
        let Some(out) = self.head_object(key, if_match).await? else {
            return Err(Error::not_found(format!(
                "{}: the object is gone",
                self.ctx("head", key)
            )));
        };
        Ok(Stored {
            crc32: full_object(out.checksum_crc32()).map(str::to_string),
            crc64nvme: full_object(out.checksum_crc64_nvme()).map(str::to_string),
            ..Stored::default()
        })
    }

    async fn get_range_stored(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<(Bytes, Stored)> {
        let want = range.end.saturating_sub(range.start);
        if want == 0 {
            return Ok((Bytes::new(), Stored::default()));
        }
        let ctx = self.ctx("get", key);
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            // The object's stored checksum comes with the answer: the source checks
            // itself at no extra read. OSS's S3-compatible endpoint has none.
            .set_checksum_mode((!self.content_md5).then_some(ChecksumMode::Enabled));
        if let Some(e) = if_match {
            req = req.if_match(format!("\"{e}\""));
        }
        // Idle-bounded: the time to the response head, then every gap between chunks.
        let watch = Watch::new(self.io_timeout);
        let mut out = watch
            .guard(&ctx, async {
                req.send().await.map_err(|e| map_err(&ctx, e))
            })
            .await?;
        // Read straight into one buffer of the range's size: `collect().into_bytes()` would
        // hold the chunks and a contiguous copy at once (twice the part size per request
        // in flight, and a memcpy of every byte). The buffer is the run's pool's (a part's
        // memory reused, not faulted in anew); dropped on an error, it goes back.
        let cap = usize::try_from(want).map_err(|_| {
            Error::invalid_input(format!("{ctx}: a {want}-byte range does not fit in memory"))
        })?;
        let mut buf = crate::buffers::take(cap);
        loop {
            let next = watch.guard(&ctx, async {
                out.body.try_next().await.map_err(|e| {
                    Error::timeout(format!(
                        "{ctx}: body read failed: {}",
                        short(&e.to_string())
                    ))
                    .with_source(e)
                })
            });
            let Some(chunk) = next.await? else { break };
            watch.tick();
            if buf.len() + chunk.len() > cap {
                return Err(Error::protocol(format!(
                    "{ctx}: the server sent more than the {want} bytes asked for"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        let body = buf.freeze();
        if body.len() as u64 != want {
            return Err(Error::timeout(format!(
                "{ctx}: short read: got {} of {want} bytes",
                body.len()
            )));
        }
        // What the source says of the whole object, and, when these bytes are the whole
        // object, whether they are what it holds.
        let total = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok());
        let whole = range.start == 0 && total.is_none_or(|t| t == want);
        let mut stored = Stored {
            crc32: full_object(out.checksum_crc32()).map(str::to_string),
            ..Stored::default()
        };
        if whole && self.verify_source != VerifySource::Off {
            stored.verified_by = self.check_whole(&ctx, &body, &out).await?;
        }
        Ok((body, stored))
    }

    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        let ctx = self.ctx("put", key);
        let md5 = if self.content_md5 {
            Some(verify_crc32_then(&ctx, &data, crc32, |d| <[u8; 16]>::from(Md5::digest(d))).await?)
        } else {
            None
        };
        let watch = Watch::new(self.body_idle());
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(data.len() as i64)
            .body(self.body(&data, md5.is_some(), &watch));
        req = match &md5 {
            Some(m) => req.content_md5(base64::engine::general_purpose::STANDARD.encode(m)),
            None => req.checksum_crc32(crc_b64(crc32)),
        };
        for (k, v) in &opts.metadata {
            req = req.metadata(k, v);
        }
        if opts.if_none_match {
            req = req.if_none_match("*");
        }
        if let Some(e) = &opts.if_match {
            req = req.if_match(format!("\"{e}\""));
        }
        let conditional = opts.if_none_match || opts.if_match.is_some();
        let sent = watch.guard(&ctx, async {
            Ok(if md5.is_none() {
                // The body's integrity is the CRC32 header the server checks (and echoes),
                // so the SigV4 SHA-256 of the payload is skipped: it was a third of the CPU
                // of a large copy over plain HTTP (bench/RESULTS.md). In Content-MD5 mode
                // (OSS's S3-compatible endpoint) the payload stays signed.
                req.customize().disable_payload_signing().send().await
            } else {
                req.send().await
            })
        });
        let out = sent.await?.map_err(|e| match map_err(&ctx, e) {
            // On a write, 412 means the condition failed (on a read, the source moved).
            e if conditional && e.kind() == ErrorKind::SourceChanged => {
                Error::precondition(e.message().to_string())
            }
            e => e,
        })?;
        match &md5 {
            Some(m) => verify_md5_etag(&ctx, m, out.e_tag()),
            None => verify_echo(&ctx, &data, crc32, out.checksum_crc32(), out.e_tag()),
        }
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        let ctx = self.ctx("create-multipart", key);
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_checksum_algorithm((!self.content_md5).then_some(ChecksumAlgorithm::Crc32));
        for (k, v) in &opts.metadata {
            req = req.metadata(k, v);
        }
        let out = self.io(&ctx, req.send()).await?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| Error::protocol(format!("{ctx}: response had no UploadId")))
    }

    async fn upload_part(&self, key: &str, upload_id: &str, part: Part) -> Result<CompletedPart> {
        let (number, data, crc32) = (part.number, part.data, part.crc32);
        let ctx = format!("{} part {number}", self.ctx("upload-part", key));
        let size = data.len() as u64;
        let md5 = if self.content_md5 {
            Some(verify_crc32_then(&ctx, &data, crc32, |d| <[u8; 16]>::from(Md5::digest(d))).await?)
        } else {
            None
        };
        let watch = Watch::new(self.body_idle());
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .part_number(number as i32)
            .set_checksum_crc32(md5.is_none().then(|| crc_b64(crc32)))
            .set_content_md5(md5.map(|m| base64::engine::general_purpose::STANDARD.encode(m)))
            .content_length(size as i64)
            .body(self.body(&data, md5.is_some(), &watch));
        // As in `put`: the CRC32 header is the integrity check; no payload SHA-256.
        let out = watch
            .guard(&ctx, async {
                if md5.is_none() {
                    req.customize().disable_payload_signing().send().await
                } else {
                    req.send().await
                }
                .map_err(|e| map_err(&ctx, e))
            })
            .await?;
        match &md5 {
            Some(m) => verify_md5_etag(&ctx, m, out.e_tag())?,
            None => verify_echo(&ctx, &data, crc32, out.checksum_crc32(), out.e_tag())?,
        }
        let etag = out
            .e_tag()
            .map(str::to_string)
            .ok_or_else(|| Error::protocol(format!("{ctx}: response had no ETag")))?;
        Ok(CompletedPart {
            number,
            etag,
            crc32,
            size,
            crc64: None,
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        _opts: &PutOptions,
    ) -> Result<()> {
        let ctx = self.ctx("complete-multipart", key);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(p.number as i32)
                            .e_tag(&p.etag)
                            .set_checksum_crc32((!self.content_md5).then(|| crc_b64(p.crc32)))
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .multipart_upload(completed);
        // The server assembles the object before it answers: a long idle allowance.
        let out = io_within(COMPLETE_TIMEOUT, &ctx, req.send()).await?;
        // The server's whole-object checksum: either composite ("crc-of-crcs-N") or a
        // full-object CRC32. Both are derived from the part CRCs without re-reading.
        if let Some(got) = out.checksum_crc32() {
            let (composite, full) = crate::checksum::crc32_of_parts(parts);
            if got != composite && got != full {
                return Err(Error::checksum(format!(
                    "{ctx}: server's object checksum {got} matches neither {composite} nor {full}"
                )));
            }
        }
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let ctx = self.ctx("abort-multipart", key);
        let req = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id);
        match self.io(&ctx, req.send()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        if self.oss_compat {
            tracing::warn!(
                "OSS's S3-compatible endpoint cannot list multipart uploads, so uploads left by a killed run are not cleaned up; use oss:// for that"
            );
            return Ok(Vec::new());
        }
        let ctx = self.ctx("list-multipart-uploads", "");
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            // Bucket-wide, filtered here: MinIO lists uploads only for an empty prefix or
            // an exact key, so a prefix filter on the server would miss them there.
            let mut req = self.client.list_multipart_uploads().bucket(&self.bucket);
            if let Some(k) = &key_marker {
                req = req.key_marker(k);
            }
            if let Some(i) = &id_marker {
                req = req.upload_id_marker(i);
            }
            let sent = Watch::new(self.io_timeout)
                .guard(&ctx, async { Ok(req.send().await) })
                .await?;
            let res = match sent {
                Ok(r) => r,
                // gofakes3-based servers (`rclone serve s3`) answer 404 NoSuchUpload for a
                // bucket that has no uploads at all: nothing is pending.
                Err(e) if e.code() == Some("NoSuchUpload") => break,
                Err(e) => return Err(map_err(&ctx, e)),
            };
            for u in res.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    if let Some(rel) = self.rel_key(k) {
                        out.push(PendingUpload {
                            key: rel,
                            upload_id: id.to_string(),
                            initiated_ms: dt_ms(u.initiated()),
                        });
                    }
                }
            }
            if !res.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = res.next_key_marker().map(str::to_string);
            id_marker = res.next_upload_id_marker().map(str::to_string);
            if key_marker.as_deref().unwrap_or("").is_empty() {
                return Err(Error::protocol(format!(
                    "{ctx}: the upload listing says it is truncated but gives no next key marker"
                )));
            }
        }
        Ok(out)
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<CompletedPart>> {
        let ctx = self.ctx("list-parts", key);
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .upload_id(upload_id)
                .max_parts(1000);
            if let Some(m) = &marker {
                req = req.part_number_marker(m);
            }
            let out = self.io(&ctx, req.send()).await?;
            for p in out.parts() {
                let (Some(n), Some(etag), Some(size)) = (p.part_number(), p.e_tag(), p.size())
                else {
                    return Err(Error::protocol(format!(
                        "{ctx}: a listed part lacks its number, ETag or size"
                    )));
                };
                // The CRC32 the server checked the part against when it arrived; without
                // it (Content-MD5 mode) a part cannot be kept.
                let crc32 = p
                    .checksum_crc32()
                    .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
                    .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                    .map(u32::from_be_bytes);
                let Some(crc32) = crc32 else { continue };
                parts.push(CompletedPart {
                    number: u32::try_from(n).unwrap_or(0),
                    etag: etag.to_string(),
                    crc32,
                    size: u64::try_from(size).unwrap_or(0),
                    crc64: None,
                });
            }
            match (out.is_truncated(), out.next_part_number_marker()) {
                (Some(true), Some(m)) if !m.is_empty() => marker = Some(m.to_string()),
                (Some(true), _) => {
                    return Err(Error::protocol(format!(
                        "{ctx}: the part listing says it is truncated but gives no marker"
                    )))
                }
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let ctx = self.ctx("delete", key);
        let req = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        match self.io(&ctx, req.send()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn preflight(&self) -> Result<Presence> {
        let ctx = format!("list s3://{}/{}", self.bucket, self.prefix);
        // Three keys: the prefix's own directory marker and snapferry's reserved objects
        // do not make a location hold data.
        let req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(3);
        // An endpoint that accepts connections and answers nothing fails fast here.
        let out = io_within(PREFLIGHT_TIMEOUT.min(self.io_timeout), &ctx, req.send())
            .await
            .map_err(|e| match e {
                e if e.kind() == ErrorKind::LocationNotFound => Error::location_not_found(format!(
                    "bucket {:?} does not exist{}; create it or fix the URL",
                    self.bucket,
                    self.endpoint
                        .as_ref()
                        .map(|e| format!(" at {e}"))
                        .unwrap_or_default()
                )),
                other => other,
            })?;
        let page = self.page(&ctx, "", out)?;
        let data = page.objects.iter().any(|m| !super::is_reserved(&m.key));
        Ok(if data || page.token.is_some() {
            Presence::NotEmpty
        } else {
            Presence::Empty
        })
    }
}
