//! `oss`: Alibaba Cloud OSS through its native API (V4 signatures, `x-oss-*` headers,
//! CRC-64 verification, ListMultipartUploads).
//!
//! - Requests are signed with [`sign`] (OSS4-HMAC-SHA256) using the local clock plus an
//!   offset learned from the server's `Date` after a `RequestTimeTooSkewed`.
//! - Every PUT and part is verified against the server's `x-oss-hash-crc64ecma`; the
//!   whole object's CRC-64 is combined from the part CRCs (no re-read) and compared with
//!   CompleteMultipartUpload's.
//! - Endpoints: `oss-<region>[-internal].aliyuncs.com` (region derived, virtual-hosted
//!   addressing, https), `oss-accelerate[-overseas].aliyuncs.com` (region from the
//!   flag), or a full URL (`http://127.0.0.1:PORT`: path-style).
//! - Errors: the OSS error XML (`Code`, `Message`, `RequestId`, `EC`; for HEAD, base64 in
//!   `x-oss-err`) becomes one line; 5xx, 408, 429 and the 503 throttling codes are
//!   retryable (with `x-oss-qos-delay-time` as the wait hint).

pub mod creds;
pub mod sign;
mod xml;

use std::ops::Range;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use self::creds::OssCredentialSource;
use self::sign::{encode_path, encode_query, SignInput};
use super::listing::{self, Cursor, ListPage, Listed};
use super::watch::{ProgressBody, Watch};
use super::{
    normalize_etag, CompletedPart, LevelStream, ListStream, ObjectMeta, Part, PendingUpload,
    Presence, PutOptions, SourceRecord, Store, Stored, VerifiedBy, VerifySource,
};
use crate::checksum::verify_crc32_then;
use crate::error::{root_cause, Error, ErrorKind, Result};

/// The most parts an OSS multipart upload may have.
pub const MAX_PARTS: u32 = 10_000;
/// The smallest part OSS accepts (every part but the last).
pub const MIN_PART: u64 = 100 << 10;
/// The largest part.
pub const MAX_PART: u64 = 5 << 30;
/// The most user metadata OSS stores per object.
pub const MAX_USER_METADATA: usize = 8 << 10;

const CRC64: crc_fast::CrcAlgorithm = crc_fast::CrcAlgorithm::Crc64Xz;

/// CRC-64/XZ (ECMA-182), as OSS computes `x-oss-hash-crc64ecma`.
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CRC64, data)
}

/// The CRC-64 of `a ++ b` from the CRCs of `a` and `b` and the length of `b`.
pub fn crc64_combine(a: u64, b: u64, b_len: u64) -> u64 {
    crc_fast::checksum_combine(CRC64, a, b, b_len)
}

/// Where and how to reach OSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// Host (and port).
    pub host: String,
    /// `bucket.host` addressing (aliyuncs.com) rather than `host/bucket`.
    pub virtual_hosted: bool,
    /// Signing region, e.g. `cn-hangzhou`.
    pub region: String,
}

impl Endpoint {
    /// Parses `--dst-endpoint` (host or URL) with an optional `--dst-region`.
    pub fn parse(endpoint: &str, region: Option<&str>) -> Result<Self> {
        let ep = endpoint.trim();
        // Never echo userinfo or a query string: they may hold secrets.
        let shown = crate::location::redact_url(ep);
        let (scheme, rest) = match ep.split_once("://") {
            Some((s, r)) if s == "http" || s == "https" => (s.to_string(), r),
            Some((s, _)) => {
                return Err(Error::invalid_input(format!(
                    "OSS endpoint {shown:?} has scheme {:?}; use oss-REGION.aliyuncs.com or an http(s):// URL",
                    crate::location::redact_url(s)
                )))
            }
            None => ("https".to_string(), ep),
        };
        let host = rest.split('/').next().unwrap_or("").to_string();
        if host.contains('@') || rest.contains(['?', '#']) {
            return Err(Error::invalid_input(format!(
                "OSS endpoint {shown:?} carries credentials or a query string; give only the host (e.g. oss-cn-hangzhou.aliyuncs.com) and the credentials in the environment (SNAPFERRY_SRC_/DST_ACCESS_KEY_ID and _SECRET_ACCESS_KEY)"
            )));
        }
        if host.is_empty() || host.contains(' ') {
            return Err(Error::invalid_input(format!(
                "OSS endpoint {shown:?} has no host; write e.g. oss-cn-hangzhou.aliyuncs.com"
            )));
        }
        let bare = host.split(':').next().unwrap_or("").to_ascii_lowercase();
        if bare.starts_with("s3.oss-") {
            return Err(Error::invalid_input(format!(
                "{shown:?} is OSS's S3-compatible endpoint; use an s3:// URL with it, or the native endpoint {} with oss://",
                &bare[3..]
            )));
        }
        let aliyun = bare.ends_with(".aliyuncs.com");
        let derived = bare
            .strip_suffix(".aliyuncs.com")
            .and_then(|h| h.strip_prefix("oss-"))
            .map(|r| r.strip_suffix("-internal").unwrap_or(r).to_string())
            .filter(|r| !r.starts_with("accelerate"));
        let region = match (region, derived) {
            (Some(r), _) if !r.is_empty() => r.trim_start_matches("oss-").to_string(),
            (_, Some(d)) => d,
            (_, None) if aliyun => {
                return Err(Error::invalid_input(format!(
                    "cannot derive the OSS region from {shown:?}; give it with --src-region/--dst-region (e.g. cn-hangzhou)"
                )))
            }
            (_, None) => {
                // A custom (test or proxy) endpoint: the region only scopes the signature.
                tracing::debug!("no OSS region given for {shown}; signing for cn-hangzhou");
                "cn-hangzhou".to_string()
            }
        };
        Ok(Endpoint {
            scheme,
            host,
            virtual_hosted: aliyun,
            region,
        })
    }
}

/// How to reach one OSS bucket.
#[derive(Debug, Clone)]
pub struct OssConfig {
    /// Bucket the location names.
    pub bucket: String,
    /// Root prefix ("" or ending in `/`).
    pub prefix: String,
    /// Where requests go (region or explicit endpoint, resolved once).
    pub endpoint: Endpoint,
    /// Where the credentials come from (fixed, or temporary ones refreshed before
    /// they expire: [`creds`]).
    pub credentials: OssCredentialSource,
    /// A request fails when no byte has moved for this long (default 30 s).
    pub io_timeout: Option<Duration>,
    /// Which checks of its own stored checksums a GET of a whole object makes.
    pub verify_source: VerifySource,
}

/// An OSS bucket (and prefix) as a store.
pub struct OssStore {
    http: reqwest::Client,
    cfg: OssConfig,
    io_timeout: Duration,
    /// Seconds to add to the local clock when signing (learned from the server).
    clock_offset: AtomicI64,
    creds: creds::OssCreds,
}

/// A response whose status was a success.
struct Resp {
    headers: HeaderMap,
    body: Bytes,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Decodes OSS's `encoding-type=url` values (`+` as space, like the SDKs' QueryUnescape).
fn url_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn iso_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn http_date_ms(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

impl OssStore {
    /// Builds the client (no request is sent).
    pub fn new(cfg: OssConfig) -> Result<Self> {
        if cfg.bucket.is_empty() {
            return Err(Error::invalid_input(
                "missing OSS bucket; write oss://BUCKET[/PREFIX]",
            ));
        }
        // Connecting fails fast; every request is bounded by an idle watch
        // (`store::watch`), so reqwest's own read timeout is only a backstop.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(crate::store::s3::COMPLETE_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(OssStore {
            creds: creds::OssCreds::new(&cfg.credentials)?,
            http,
            io_timeout: cfg
                .io_timeout
                .unwrap_or(crate::store::s3::DEFAULT_IO_TIMEOUT),
            cfg,
            clock_offset: AtomicI64::new(0),
        })
    }

    /// The clock offset in use (seconds), for tests and logs.
    pub fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::Relaxed)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.cfg.prefix, key)
    }

    fn ctx(&self, op: &str, key: &str) -> String {
        format!("{op} oss://{}/{}{}", self.cfg.bucket, self.cfg.prefix, key)
    }

    fn url(&self, full_key: &str, query: &[(String, String)]) -> String {
        let ep = &self.cfg.endpoint;
        let mut u = if ep.virtual_hosted {
            format!(
                "{}://{}.{}/{}",
                ep.scheme,
                self.cfg.bucket,
                ep.host,
                encode_path(full_key)
            )
        } else {
            format!(
                "{}://{}/{}/{}",
                ep.scheme,
                ep.host,
                self.cfg.bucket,
                encode_path(full_key)
            )
        };
        if !query.is_empty() {
            u.push('?');
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        encode_query(k)
                    } else {
                        format!("{}={}", encode_query(k), encode_query(v))
                    }
                })
                .collect();
            u.push_str(&q.join("&"));
        }
        u
    }

    /// Signs and sends one request; maps non-2xx answers to errors.
    async fn send(
        &self,
        ctx: &str,
        method: Method,
        full_key: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<Bytes>,
    ) -> Result<Resp> {
        self.send_idle(ctx, method, full_key, query, headers, body, self.io_timeout)
            .await
    }

    /// [`OssStore::send`] with another idle limit (CompleteMultipartUpload answers only
    /// once the object is assembled; a preflight should fail fast).
    #[allow(clippy::too_many_arguments)]
    async fn send_idle(
        &self,
        ctx: &str,
        method: Method,
        full_key: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<Bytes>,
        idle: Duration,
    ) -> Result<Resp> {
        let watch = Watch::new(idle);
        watch
            .guard(
                ctx,
                self.send_watched(ctx, method, full_key, query, headers, body, &watch),
            )
            .await
    }

    /// [`OssStore::send`] under an idle watch: the upload ticks it as it goes out, the
    /// download as it comes in.
    #[allow(clippy::too_many_arguments)]
    async fn send_watched(
        &self,
        ctx: &str,
        method: Method,
        full_key: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<Bytes>,
        watch: &std::sync::Arc<Watch>,
    ) -> Result<Resp> {
        let credentials = self
            .creds
            .get()
            .await
            .map_err(|e| Error::new(e.kind(), format!("{ctx}: {e}")))?;
        let signed = sign::sign(
            &SignInput {
                method: method.as_str(),
                bucket: &self.cfg.bucket,
                key: full_key,
                query,
                headers,
                additional_headers: &[],
                time: now_secs() + self.clock_offset(),
                region: &self.cfg.endpoint.region,
            },
            &credentials,
        );
        let mut req = self.http.request(method.clone(), self.url(full_key, query));
        for (k, v) in headers.iter().chain(signed.headers.iter()) {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| Error::invalid_input(format!("{ctx}: bad header {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| {
                Error::invalid_input(format!("{ctx}: bad value for header {k}: {e}"))
            })?;
            req = req.header(name, value);
        }
        if let Some(b) = body {
            // Explicit, so that an empty body still says `Content-Length: 0`.
            req = req
                .header(reqwest::header::CONTENT_LENGTH, b.len().to_string())
                .body(reqwest::Body::wrap(ProgressBody::new(b, watch.clone())));
        } else if method == Method::PUT || method == Method::POST {
            req = req.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let mut resp = req.send().await.map_err(|e| transport_error(ctx, e))?;
        watch.tick();
        let status = resp.status();
        let h = resp.headers().clone();
        // A GET's body goes into a buffer of the run's pool (see `crate::buffers`): a part's
        // memory reused rather than faulted in anew; small answers get a plain allocation.
        let mut body: Option<crate::buffers::Buf> = None;
        loop {
            let chunk = resp.chunk().await.map_err(|e| {
                Error::timeout(format!(
                    "{ctx}: reading the response failed: {}",
                    root_cause(&e)
                ))
                .with_source(e)
            })?;
            let Some(chunk) = chunk else { break };
            watch.tick();
            body.get_or_insert_with(|| {
                crate::buffers::take(
                    resp.content_length()
                        .map_or(chunk.len(), |n| usize::try_from(n).unwrap_or(usize::MAX))
                        // At most 64 MiB ahead of a Content-Length from the network
                        // (the buffer grows past it if more comes), at least the chunk.
                        .min(64 << 20)
                        .max(chunk.len()),
                )
            })
            .extend_from_slice(&chunk);
        }
        let body = body.map(crate::buffers::Buf::freeze).unwrap_or_default();
        // Every OSS answer carries a request id; a web server, proxy page or another
        // service at the endpoint does not. Such an answer is never taken for OSS's.
        if header(&h, "x-oss-request-id").is_none() {
            return Err(Error::protocol(format!(
                "{ctx}: HTTP {} from {} without an x-oss-request-id: the endpoint does not speak OSS",
                status.as_u16(),
                self.cfg.endpoint.host
            )));
        }
        if status.is_success() {
            return Ok(Resp { headers: h, body });
        }
        Err(self.service_error(ctx, status, &h, &body))
    }

    fn service_error(&self, ctx: &str, status: StatusCode, h: &HeaderMap, body: &[u8]) -> Error {
        let parsed: xml::ErrorBody = if body.is_empty() {
            header(h, "x-oss-err")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|x| quick_xml::de::from_str(&String::from_utf8_lossy(&x)).ok())
                .unwrap_or_default()
        } else {
            quick_xml::de::from_str(&String::from_utf8_lossy(body)).unwrap_or_default()
        };
        let code = if parsed.code.is_empty() {
            header(h, "x-oss-ec").map(|_| "").unwrap_or("")
        } else {
            parsed.code.as_str()
        };
        let mut detail = format!("{ctx}: HTTP {}", status.as_u16());
        if !code.is_empty() {
            detail.push_str(&format!(" {code}"));
        }
        if !parsed.message.is_empty() {
            detail.push_str(&format!(": {}", parsed.message));
        }
        let rid = if parsed.request_id.is_empty() {
            header(h, "x-oss-request-id").unwrap_or("")
        } else {
            &parsed.request_id
        };
        let ec = if parsed.ec.is_empty() {
            header(h, "x-oss-ec").unwrap_or("")
        } else {
            &parsed.ec
        };
        if !rid.is_empty() || !ec.is_empty() {
            detail.push_str(&format!(" (RequestId {rid}, EC {ec})"));
        }
        let s = status.as_u16();
        match (s, code) {
            (_, "RequestTimeTooSkewed") => {
                if let Some(server) = header(h, "date").and_then(http_date_ms) {
                    let offset = server / 1000 - now_secs();
                    self.clock_offset.store(offset, Ordering::Relaxed);
                    tracing::warn!("OSS says our clock is skewed; signing with an offset of {offset}s from now on");
                }
                Error::clock_skew(detail)
            }
            (_, "NoSuchBucket") => Error::location_not_found(detail),
            (_, "FileAlreadyExists") => Error::precondition(detail),
            (404, _) => Error::not_found(detail),
            (412, _) | (_, "PreconditionFailed") => Error::source_changed(detail),
            (_, "InvalidDigest") | (_, "BadDigest") => Error::checksum(detail),
            (429, _) | (503, _) => Error::throttled(
                detail,
                header(h, "x-oss-qos-delay-time")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis),
            ),
            // An STS token past its expiry (EC 0002-00000007); Alibaba also lists an
            // expired temporary AccessKey among the causes of InvalidAccessKeyId.
            (_, "SecurityTokenExpired") => Error::credentials_expired(detail),
            (403, "InvalidAccessKeyId") if self.creds.refreshes() => {
                Error::credentials_expired(detail)
            }
            (401, _) | (403, _) => Error::access_denied(detail),
            (408, _) | (_, "RequestTimeout") => Error::timeout(detail),
            (s, _) if s >= 500 => Error::server(detail),
            _ => Error::other(detail),
        }
    }

    fn meta_headers(opts: &PutOptions) -> Result<Vec<(String, String)>> {
        let mut total = 0;
        let mut out = Vec::with_capacity(opts.metadata.len());
        for (k, v) in &opts.metadata {
            if k.contains('_')
                || k.is_empty()
                || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(Error::invalid_input(format!(
                    "user metadata name {k:?} is not valid for OSS (letters, digits and '-' only)"
                )));
            }
            total += k.len() + v.len();
            out.push((format!("x-oss-meta-{}", k.to_ascii_lowercase()), v.clone()));
        }
        if total > MAX_USER_METADATA {
            return Err(Error::invalid_input(format!(
                "user metadata of {total} bytes exceeds OSS's 8 KiB limit"
            )));
        }
        Ok(out)
    }

    /// One ListObjectsV2 page under `sub` (relative), decoded (keys are URL-encoded, as
    /// asked) and checked by [`listing::check_page`].
    fn page(&self, ctx: &str, sub: &str, body: &[u8]) -> Result<ListPage> {
        let out: xml::ListBucketResult = xml::parse(ctx, body, "ListBucketResult")?;
        let objects = out.contents.into_iter().map(|c| Listed {
            full: url_decode(&c.key),
            size: c.size,
            mtime_ms: c.last_modified.as_deref().and_then(iso_ms),
            etag: c.etag.as_deref().map(normalize_etag),
        });
        let prefixes = out
            .common_prefixes
            .into_iter()
            .map(|cp| url_decode(&cp.prefix));
        let token = out.next_continuation_token.map(|t| url_decode(&t));
        listing::check_page(
            ctx,
            &self.cfg.prefix,
            sub,
            objects,
            prefixes,
            out.is_truncated,
            token,
        )
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
            let full = self.full_key(&c.sub);
            let mut query = q(&[
                ("list-type", "2"),
                ("prefix", &full),
                ("max-keys", "1000"),
                ("encoding-type", "url"),
            ]);
            if delimiter {
                query.push(("delimiter".into(), "/".into()));
            }
            if let Some(t) = &c.token {
                query.push(("continuation-token".into(), t.clone()));
            } else if let Some(a) = &c.start_after {
                query.push(("start-after".into(), self.full_key(a)));
            }
            let ctx = self.ctx("list", &c.sub);
            let r = self.send(&ctx, Method::GET, "", &query, &[], None).await?;
            self.page(&ctx, &c.sub, &r.body)
        })
    }

    fn check_crc(ctx: &str, h: &HeaderMap, want: u64) -> Result<()> {
        match header(h, "x-oss-hash-crc64ecma").map(|v| v.parse::<u64>()) {
            Some(Ok(got)) if got == want => Ok(()),
            Some(Ok(got)) => Err(Error::checksum(format!(
                "{ctx}: server CRC-64 {got} differs from the {want} of the bytes sent"
            ))),
            _ => Err(Error::checksum(format!(
                "{ctx}: server returned no usable x-oss-hash-crc64ecma"
            ))),
        }
    }
}

/// A request that got no answer, classified by reqwest's own error kinds.
fn transport_error(ctx: &str, e: reqwest::Error) -> Error {
    let cause = root_cause(&e);
    let err = if e.is_timeout() {
        Error::timeout(format!("{ctx}: timed out: {cause}"))
    } else if e.is_connect() {
        Error::unreachable(format!("{ctx}: {cause}"))
    } else if e.is_builder() {
        Error::invalid_input(format!("{ctx}: {cause}"))
    } else {
        Error::timeout(format!("{ctx}: connection error: {cause}"))
    };
    err.with_source(e)
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[async_trait]
impl Store for OssStore {
    async fn credentials_refused(&self) {
        self.creds.invalidate().await;
    }

    fn describe(&self) -> String {
        let ep = &self.cfg.endpoint;
        format!(
            "oss://{}/{} @ {}://{} ({})",
            self.cfg.bucket, self.cfg.prefix, ep.scheme, ep.host, ep.region
        )
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
        let ctx = self.ctx("head", key);
        match self
            .send(&ctx, Method::HEAD, &self.full_key(key), &[], &[], None)
            .await
        {
            Ok(r) => {
                let h = &r.headers;
                let record = SourceRecord::from_metadata(h.iter().filter_map(|(k, v)| {
                    Some((k.as_str().strip_prefix("x-oss-meta-")?, v.to_str().ok()?))
                }));
                let Some(size) = header(h, "content-length").and_then(|v| v.parse().ok()) else {
                    return Err(Error::protocol(format!(
                        "{ctx}: the answer has no valid Content-Length"
                    )));
                };
                Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size,
                    mtime_ms: header(h, "last-modified").and_then(http_date_ms),
                    etag: header(h, "etag").map(normalize_etag),
                    record,
                    crc64: header(h, "x-oss-hash-crc64ecma").and_then(|v| v.parse().ok()),
                    ..Default::default()
                }))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        Ok(self.get_range_stored(key, range, if_match).await?.0)
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
        let mut headers = vec![(
            "Range".to_string(),
            format!("bytes={}-{}", range.start, range.end - 1),
        )];
        if let Some(e) = if_match {
            headers.push((
                "If-Match".to_string(),
                format!("\"{}\"", e.to_ascii_uppercase()),
            ));
        }
        let r = self
            .send(&ctx, Method::GET, &self.full_key(key), &[], &headers, None)
            .await?;
        if r.body.len() as u64 > want {
            return Err(Error::protocol(format!(
                "{ctx}: the server sent {} bytes for a {want}-byte range (it ignored Range)",
                r.body.len()
            )));
        }
        if (r.body.len() as u64) < want {
            return Err(Error::timeout(format!(
                "{ctx}: short read: got {} of {want} bytes",
                r.body.len()
            )));
        }
        // Every GET carries the whole object's CRC-64: the caller combines the parts'
        // for a ranged copy; a GET of the whole object is checked here (and retried by
        // the request layer when the bytes do not match).
        let crc = header(&r.headers, "x-oss-hash-crc64ecma").and_then(|v| v.parse::<u64>().ok());
        let total = header(&r.headers, "content-range")
            .and_then(|v| v.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok());
        let whole = range.start == 0 && total.is_none_or(|t| t == want);
        let mut stored = Stored {
            crc64: crc,
            ..Stored::default()
        };
        if whole && self.cfg.verify_source != VerifySource::Off {
            if let Some(want_crc) = crc {
                let got = crate::checksum::hash(&r.body, crc64).await;
                if got != want_crc {
                    return Err(Error::checksum(format!(
                        "{ctx}: the bytes read have CRC-64 {got}, the source stores {want_crc}"
                    )));
                }
                stored.verified_by = Some(VerifiedBy::Crc64);
            }
        }
        Ok((r.body, stored))
    }

    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        let ctx = self.ctx("put", key);
        let mut headers = Self::meta_headers(opts)?;
        if opts.if_none_match {
            headers.push(("x-oss-forbid-overwrite".into(), "true".into()));
        }
        if let Some(want) = &opts.if_match {
            // OSS has no conditional overwrite: compare first. A writer racing between
            // the HEAD and the PUT is not caught here; the lease re-reads after writing.
            let current = self.head(key).await?.and_then(|m| m.etag);
            if current.as_deref() != Some(want.as_str()) {
                return Err(Error::precondition(format!(
                    "{ctx}: the object's ETag is {current:?}, not {want:?}"
                )));
            }
        }
        let want = verify_crc32_then(&ctx, &data, crc32, crc64).await?;
        let r = self
            .send(
                &ctx,
                Method::PUT,
                &self.full_key(key),
                &[],
                &headers,
                Some(data),
            )
            .await?;
        Self::check_crc(&ctx, &r.headers, want)
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        let ctx = self.ctx("create-multipart", key);
        let headers = Self::meta_headers(opts)?;
        let r = self
            .send(
                &ctx,
                Method::POST,
                &self.full_key(key),
                &q(&[("uploads", "")]),
                &headers,
                None,
            )
            .await?;
        let x: xml::InitiateMultipartUploadResult =
            xml::parse(&ctx, &r.body, "InitiateMultipartUploadResult")?;
        Ok(x.upload_id)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, part: Part) -> Result<CompletedPart> {
        let (number, data, crc32) = (part.number, part.data, part.crc32);
        let ctx = format!("{} part {number}", self.ctx("upload-part", key));
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(Error::invalid_input(format!(
                "{ctx}: part numbers run 1..10000"
            )));
        }
        if data.len() as u64 > MAX_PART {
            return Err(Error::invalid_input(format!(
                "{ctx}: a part may hold at most 5 GiB"
            )));
        }
        let size = data.len() as u64;
        let want = verify_crc32_then(&ctx, &data, crc32, crc64).await?;
        let n = number.to_string();
        let r = self
            .send(
                &ctx,
                Method::PUT,
                &self.full_key(key),
                &q(&[("partNumber", &n), ("uploadId", upload_id)]),
                &[],
                Some(data),
            )
            .await?;
        Self::check_crc(&ctx, &r.headers, want)?;
        let etag = header(&r.headers, "etag")
            .map(str::to_string)
            .ok_or_else(|| Error::protocol(format!("{ctx}: response had no ETag")))?;
        Ok(CompletedPart {
            number,
            etag,
            crc32,
            size,
            crc64: Some(want),
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
        for w in parts.windows(2) {
            if w[0].size < MIN_PART || w[0].number >= w[1].number {
                return Err(Error::invalid_input(format!(
                    "{ctx}: parts must ascend and all but the last hold at least 100 KiB"
                )));
            }
        }
        let mut body = String::from("<CompleteMultipartUpload>");
        let mut whole: Option<u64> = Some(0);
        for p in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                p.number,
                xml::escape(&p.etag)
            ));
            whole = match (whole, p.crc64) {
                (Some(w), Some(c)) => Some(crc64_combine(w, c, p.size)),
                _ => None,
            };
        }
        body.push_str("</CompleteMultipartUpload>");
        let r = self
            .send_idle(
                &ctx,
                Method::POST,
                &self.full_key(key),
                &q(&[("uploadId", upload_id)]),
                &[("Content-Type".into(), "application/xml".into())],
                Some(Bytes::from(body)),
                crate::store::s3::COMPLETE_TIMEOUT,
            )
            .await?;
        match whole {
            Some(w) => Self::check_crc(&ctx, &r.headers, w),
            None => Err(Error::checksum(format!(
                "{ctx}: a part has no CRC-64 to check the object against"
            ))),
        }
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let ctx = self.ctx("abort-multipart", key);
        match self
            .send(
                &ctx,
                Method::DELETE,
                &self.full_key(key),
                &q(&[("uploadId", upload_id)]),
                &[],
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>> {
        let ctx = self.ctx("list-multipart-uploads", "");
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut query = q(&[
                ("uploads", ""),
                ("prefix", &self.cfg.prefix),
                ("max-uploads", "1000"),
                ("encoding-type", "url"),
            ]);
            if !key_marker.is_empty() {
                query.push(("key-marker".into(), key_marker.clone()));
                query.push(("upload-id-marker".into(), id_marker.clone()));
            }
            let r = self.send(&ctx, Method::GET, "", &query, &[], None).await?;
            let x: xml::ListMultipartUploadsResult =
                xml::parse(&ctx, &r.body, "ListMultipartUploadsResult")?;
            for u in x.upload {
                if let Some(rel) = url_decode(&u.key).strip_prefix(self.cfg.prefix.as_str()) {
                    out.push(PendingUpload {
                        key: rel.to_string(),
                        upload_id: u.upload_id,
                        initiated_ms: u.initiated.as_deref().and_then(iso_ms),
                    });
                }
            }
            match (x.is_truncated, x.next_key_marker) {
                (false, _) => break,
                (true, Some(k)) if !k.is_empty() => {
                    key_marker = url_decode(&k);
                    id_marker = x.next_upload_id_marker.unwrap_or_default();
                }
                (true, _) => {
                    return Err(Error::protocol(format!(
                    "{ctx}: the upload listing says it is truncated but gives no next key marker"
                )))
                }
            }
        }
        Ok(out)
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<CompletedPart>> {
        let ctx = self.ctx("list-parts", key);
        let mut parts = Vec::new();
        let mut marker = String::from("0");
        loop {
            let query = q(&[
                ("uploadId", upload_id),
                ("max-parts", "1000"),
                ("part-number-marker", &marker),
            ]);
            let r = self
                .send(&ctx, Method::GET, &self.full_key(key), &query, &[], None)
                .await?;
            let x: xml::ListPartsResult = xml::parse(&ctx, &r.body, "ListPartsResult")?;
            for p in x.part {
                // The CRC-64 OSS computed of the part as it arrived; without it a part
                // cannot be kept (the object's CRC is combined from the parts').
                let Some(crc64) = p.hash_crc64ecma else {
                    continue;
                };
                parts.push(CompletedPart {
                    number: p.part_number,
                    etag: p.etag,
                    crc32: 0,
                    size: p.size,
                    crc64: Some(crc64),
                });
            }
            match (x.is_truncated, x.next_part_number_marker) {
                (false, _) => break,
                (true, Some(m)) if !m.is_empty() && m != marker => marker = m,
                (true, _) => {
                    return Err(Error::protocol(format!(
                        "{ctx}: the part listing says it is truncated but gives no new marker"
                    )))
                }
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let ctx = self.ctx("delete", key);
        match self
            .send(&ctx, Method::DELETE, &self.full_key(key), &[], &[], None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn preflight(&self) -> Result<Presence> {
        let ctx = format!("list oss://{}/{}", self.cfg.bucket, self.cfg.prefix);
        // Three keys: the prefix's own directory marker and snapferry's reserved objects
        // do not make a location hold data.
        let query = q(&[
            ("list-type", "2"),
            ("prefix", &self.cfg.prefix),
            ("max-keys", "3"),
            ("encoding-type", "url"),
        ]);
        let idle = crate::store::s3::PREFLIGHT_TIMEOUT.min(self.io_timeout);
        let r = match self
            .send_idle(&ctx, Method::GET, "", &query, &[], None, idle)
            .await
        {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::LocationNotFound => {
                return Err(Error::location_not_found(format!(
                    "bucket {:?} does not exist at {}; create it or fix the URL",
                    self.cfg.bucket, self.cfg.endpoint.host
                )))
            }
            Err(e) => return Err(e),
        };
        let page = self.page(&ctx, "", &r.body)?;
        let (page, token) = (page.objects, page.token);
        let data = page.iter().any(|m| !super::is_reserved(&m.key));
        Ok(if data || token.is_some() {
            Presence::NotEmpty
        } else {
            Presence::Empty
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_check_values_and_combine() {
        assert_eq!(crc64(b"123456789"), 0x995DC9BBDF1939FA);
        assert_eq!(
            crc64(b"This is a test of the emergency broadcast system."),
            0x27DB187FC15BBC72
        );
        assert_eq!(crc64(b""), 0);
        let (a, b) = (b"hello, ".as_slice(), b"world".as_slice());
        assert_eq!(
            crc64_combine(crc64(a), crc64(b), b.len() as u64),
            crc64(b"hello, world")
        );
        assert_eq!(crc64_combine(0, crc64(b), b.len() as u64), crc64(b));
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("oss-cn-hangzhou.aliyuncs.com", None).unwrap();
        assert_eq!(
            (
                e.scheme.as_str(),
                e.host.as_str(),
                e.virtual_hosted,
                e.region.as_str()
            ),
            ("https", "oss-cn-hangzhou.aliyuncs.com", true, "cn-hangzhou")
        );
        let e = Endpoint::parse("oss-cn-beijing-internal.aliyuncs.com", None).unwrap();
        assert_eq!(e.region, "cn-beijing");
        let e = Endpoint::parse("https://oss-ap-southeast-1.aliyuncs.com/", None).unwrap();
        assert_eq!(e.region, "ap-southeast-1");
        assert!(Endpoint::parse("oss-accelerate.aliyuncs.com", None)
            .unwrap_err()
            .to_string()
            .contains("--dst-region"));
        let e = Endpoint::parse("oss-accelerate.aliyuncs.com", Some("cn-shanghai")).unwrap();
        assert_eq!((e.region.as_str(), e.virtual_hosted), ("cn-shanghai", true));
        let e = Endpoint::parse("http://127.0.0.1:9000", Some("cn-hangzhou")).unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.virtual_hosted),
            ("http", "127.0.0.1:9000", false)
        );
        assert!(Endpoint::parse("s3.oss-cn-hangzhou.aliyuncs.com", None)
            .unwrap_err()
            .to_string()
            .contains("S3-compatible"));
        assert!(Endpoint::parse("ftp://x", None).is_err());
        assert!(Endpoint::parse("http://", None).is_err());
    }

    #[test]
    fn urls_and_metadata_limits() {
        let s = OssStore::new(OssConfig {
            bucket: "bkt".into(),
            prefix: "p/".into(),
            endpoint: Endpoint::parse("oss-cn-hangzhou.aliyuncs.com", None).unwrap(),
            credentials: crate::store::oss::sign::OssCredentials {
                access_key_id: "a".into(),
                access_key_secret: "s".into(),
                security_token: None,
            }
            .into(),
            io_timeout: None,
            verify_source: VerifySource::Auto,
        })
        .unwrap();
        assert_eq!(
            s.url("p/a b+c/ü", &q(&[("uploadId", "x+y"), ("uploads", "")])),
            "https://bkt.oss-cn-hangzhou.aliyuncs.com/p/a%20b%2Bc/%C3%BC?uploadId=x%2By&uploads"
        );
        let bad = PutOptions {
            metadata: vec![("has_underscore".into(), "v".into())],
            ..Default::default()
        };
        assert!(OssStore::meta_headers(&bad).is_err());
        let big = PutOptions {
            metadata: vec![("big".into(), "v".repeat(9000))],
            ..Default::default()
        };
        assert!(OssStore::meta_headers(&big).is_err());
        assert_eq!(url_decode("a%2Bb+c%20d"), "a+b c d");
    }
}
