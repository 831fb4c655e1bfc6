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

use self::sign::{encode_path, encode_query, OssCredentials, SignInput};
use super::{
    normalize_etag, CompletedPart, ListStream, ObjectMeta, PendingUpload, PutOptions, SourceRecord,
    Store,
};
use crate::checksum::verify_crc32_then;
use crate::error::{root_cause, Error, Result};

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
        let (scheme, rest) = match ep.split_once("://") {
            Some((s, r)) if s == "http" || s == "https" => (s.to_string(), r),
            Some((s, _)) => {
                return Err(Error::InvalidInput(format!(
                    "OSS endpoint {endpoint:?} has scheme {s:?}; use oss-REGION.aliyuncs.com or an http(s):// URL"
                )))
            }
            None => ("https".to_string(), ep),
        };
        let host = rest.split('/').next().unwrap_or("").to_string();
        if host.is_empty() || host.contains(['?', '#', '@', ' ']) {
            return Err(Error::InvalidInput(format!(
                "OSS endpoint {endpoint:?} has no host; write e.g. oss-cn-hangzhou.aliyuncs.com"
            )));
        }
        let bare = host.split(':').next().unwrap_or("").to_ascii_lowercase();
        if bare.starts_with("s3.oss-") {
            return Err(Error::InvalidInput(format!(
                "{endpoint:?} is OSS's S3-compatible endpoint; use an s3:// URL with it, or the native endpoint {} with oss://",
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
                return Err(Error::InvalidInput(format!(
                    "cannot derive the OSS region from {endpoint:?}; give it with --dst-region (e.g. cn-hangzhou)"
                )))
            }
            (_, None) => {
                // A custom (test or proxy) endpoint: the region only scopes the signature.
                tracing::debug!("no OSS region given for {endpoint}; signing for cn-hangzhou");
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
    /// Bucket.
    pub bucket: String,
    /// Root prefix ("" or ending in `/`).
    pub prefix: String,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Credentials.
    pub credentials: OssCredentials,
}

/// An OSS bucket (and prefix) as a store.
pub struct OssStore {
    http: reqwest::Client,
    cfg: OssConfig,
    /// Seconds to add to the local clock when signing (learned from the server).
    clock_offset: AtomicI64,
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
            return Err(Error::InvalidInput(
                "missing OSS bucket; write oss://BUCKET[/PREFIX]".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .no_proxy()
            .build()
            .map_err(|e| Error::Other(format!("cannot build the HTTP client: {e}")))?;
        Ok(OssStore {
            http,
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
            &self.cfg.credentials,
        );
        let mut req = self.http.request(method.clone(), self.url(full_key, query));
        for (k, v) in headers.iter().chain(signed.headers.iter()) {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| Error::InvalidInput(format!("{ctx}: bad header {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| {
                Error::InvalidInput(format!("{ctx}: bad value for header {k}: {e}"))
            })?;
            req = req.header(name, value);
        }
        if let Some(b) = body {
            // Explicit, so that an empty body still says `Content-Length: 0`.
            req = req
                .header(reqwest::header::CONTENT_LENGTH, b.len().to_string())
                .body(b);
        } else if method == Method::PUT || method == Method::POST {
            req = req.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let resp = req.send().await.map_err(|e| transport_error(ctx, &e))?;
        let status = resp.status();
        let h = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            Error::Timeout(format!(
                "{ctx}: reading the response failed: {}",
                root_cause(&e)
            ))
        })?;
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
                Error::ClockSkew(detail)
            }
            (_, "NoSuchBucket") => Error::NoSuchBucket(detail),
            (404, _) => Error::NotFound(detail),
            (412, _) | (_, "PreconditionFailed") => Error::SourceChanged(detail),
            (_, "InvalidDigest") | (_, "BadDigest") => Error::ChecksumMismatch(detail),
            (429, _) | (503, _) => Error::Throttled {
                message: detail,
                retry_after: header(h, "x-oss-qos-delay-time")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis),
            },
            (401, _) | (403, _) => Error::AccessDenied(detail),
            (408, _) | (_, "RequestTimeout") => Error::Timeout(detail),
            (s, _) if s >= 500 => Error::Server(detail),
            _ => Error::Other(detail),
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
                return Err(Error::InvalidInput(format!(
                    "user metadata name {k:?} is not valid for OSS (letters, digits and '-' only)"
                )));
            }
            total += k.len() + v.len();
            out.push((format!("x-oss-meta-{}", k.to_ascii_lowercase()), v.clone()));
        }
        if total > MAX_USER_METADATA {
            return Err(Error::InvalidInput(format!(
                "user metadata of {total} bytes exceeds OSS's 8 KiB limit"
            )));
        }
        Ok(out)
    }

    fn check_crc(ctx: &str, h: &HeaderMap, want: u64) -> Result<()> {
        match header(h, "x-oss-hash-crc64ecma").map(|v| v.parse::<u64>()) {
            Some(Ok(got)) if got == want => Ok(()),
            Some(Ok(got)) => Err(Error::ChecksumMismatch(format!(
                "{ctx}: server CRC-64 {got} differs from the {want} of the bytes sent"
            ))),
            _ => Err(Error::ChecksumMismatch(format!(
                "{ctx}: server returned no usable x-oss-hash-crc64ecma"
            ))),
        }
    }
}

fn transport_error(ctx: &str, e: &reqwest::Error) -> Error {
    let cause = root_cause(e);
    if e.is_timeout() {
        Error::Timeout(format!("{ctx}: timed out: {cause}"))
    } else if e.is_connect() {
        Error::Unreachable(format!("{ctx}: {cause}"))
    } else {
        Error::Timeout(format!("{ctx}: connection error: {cause}"))
    }
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[async_trait]
impl Store for OssStore {
    fn describe(&self) -> String {
        let ep = &self.cfg.endpoint;
        format!(
            "oss://{}/{} @ {}://{} ({})",
            self.cfg.bucket, self.cfg.prefix, ep.scheme, ep.host, ep.region
        )
    }

    fn list(&self, start_after: Option<String>) -> ListStream<'_> {
        struct St {
            token: Option<String>,
            start_after: Option<String>,
            done: bool,
        }
        let init = St {
            token: None,
            start_after,
            done: false,
        };
        Box::pin(futures::stream::unfold(init, move |mut st| async move {
            if st.done {
                return None;
            }
            let mut query = q(&[
                ("list-type", "2"),
                ("prefix", &self.cfg.prefix),
                ("max-keys", "1000"),
                ("encoding-type", "url"),
            ]);
            if let Some(t) = &st.token {
                query.push(("continuation-token".into(), t.clone()));
            } else if let Some(a) = &st.start_after {
                query.push(("start-after".into(), self.full_key(a)));
            }
            let ctx = self.ctx("list", "");
            let res = self
                .send(&ctx, Method::GET, "", &query, &[], None)
                .await
                .and_then(|r| {
                    quick_xml::de::from_str::<xml::ListBucketResult>(&String::from_utf8_lossy(
                        &r.body,
                    ))
                    .map_err(|e| Error::Server(format!("{ctx}: unreadable listing: {e}")))
                });
            match res {
                Ok(out) => {
                    let page = out
                        .contents
                        .into_iter()
                        .filter_map(|c| {
                            let full = url_decode(&c.key);
                            let key = full.strip_prefix(self.cfg.prefix.as_str())?.to_string();
                            (!key.is_empty()).then(|| ObjectMeta {
                                key,
                                size: c.size,
                                mtime_ms: c.last_modified.as_deref().and_then(iso_ms),
                                etag: c.etag.as_deref().map(normalize_etag),
                                record: None,
                            })
                        })
                        .collect();
                    st.token = out.next_continuation_token.map(|t| url_decode(&t));
                    st.done = !out.is_truncated || st.token.is_none();
                    Some((Ok(page), st))
                }
                Err(e) => {
                    st.done = true;
                    Some((Err(e), st))
                }
            }
        }))
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
                Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size: header(h, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    mtime_ms: header(h, "last-modified").and_then(http_date_ms),
                    etag: header(h, "etag").map(normalize_etag),
                    record,
                }))
            }
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let want = range.end.saturating_sub(range.start);
        if want == 0 {
            return Ok(Bytes::new());
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
        if r.body.len() as u64 != want {
            return Err(Error::Timeout(format!(
                "{ctx}: short read: got {} of {want} bytes",
                r.body.len()
            )));
        }
        Ok(r.body)
    }

    async fn put(&self, key: &str, data: Bytes, crc32: u32, opts: &PutOptions) -> Result<()> {
        let ctx = self.ctx("put", key);
        let headers = Self::meta_headers(opts)?;
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
            quick_xml::de::from_str(&String::from_utf8_lossy(&r.body))
                .map_err(|e| Error::Server(format!("{ctx}: unreadable response: {e}")))?;
        Ok(x.upload_id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
        crc32: u32,
    ) -> Result<CompletedPart> {
        let ctx = format!("{} part {number}", self.ctx("upload-part", key));
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(Error::InvalidInput(format!(
                "{ctx}: part numbers run 1..10000"
            )));
        }
        if data.len() as u64 > MAX_PART {
            return Err(Error::InvalidInput(format!(
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
            .ok_or_else(|| Error::Server(format!("{ctx}: response had no ETag")))?;
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
                return Err(Error::InvalidInput(format!(
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
            .send(
                &ctx,
                Method::POST,
                &self.full_key(key),
                &q(&[("uploadId", upload_id)]),
                &[("Content-Type".into(), "application/xml".into())],
                Some(Bytes::from(body)),
            )
            .await?;
        match whole {
            Some(w) => Self::check_crc(&ctx, &r.headers, w),
            None => Err(Error::ChecksumMismatch(format!(
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
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
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
                quick_xml::de::from_str(&String::from_utf8_lossy(&r.body))
                    .map_err(|e| Error::Server(format!("{ctx}: unreadable response: {e}")))?;
            for u in x.upload {
                if let Some(rel) = url_decode(&u.key).strip_prefix(self.cfg.prefix.as_str()) {
                    out.push(PendingUpload {
                        key: rel.to_string(),
                        upload_id: u.upload_id,
                    });
                }
            }
            match (x.is_truncated, x.next_key_marker) {
                (true, Some(k)) if !k.is_empty() => {
                    key_marker = url_decode(&k);
                    id_marker = x.next_upload_id_marker.unwrap_or_default();
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let ctx = self.ctx("delete", key);
        match self
            .send(&ctx, Method::DELETE, &self.full_key(key), &[], &[], None)
            .await
        {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn preflight(&self) -> Result<()> {
        let ctx = format!("list oss://{}/{}", self.cfg.bucket, self.cfg.prefix);
        let query = q(&[
            ("list-type", "2"),
            ("prefix", &self.cfg.prefix),
            ("max-keys", "1"),
        ]);
        match self.send(&ctx, Method::GET, "", &query, &[], None).await {
            Ok(_) => Ok(()),
            Err(Error::NoSuchBucket(_)) => Err(Error::NoSuchBucket(format!(
                "bucket {:?} does not exist at {}; create it or fix the URL",
                self.cfg.bucket, self.cfg.endpoint.host
            ))),
            Err(e) => Err(e),
        }
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
            credentials: OssCredentials {
                access_key_id: "a".into(),
                access_key_secret: "s".into(),
                security_token: None,
            },
        })
        .unwrap();
        assert_eq!(
            s.url("p/a b+c/ü", &q(&[("uploadId", "x+y"), ("uploads", "")])),
            "https://bkt.oss-cn-hangzhou.aliyuncs.com/p/a%20b%2Bc/%C3%BC?uploadId=x%2By&uploads"
        );
        let bad = PutOptions {
            metadata: vec![("has_underscore".into(), "v".into())],
            mtime_ms: None,
        };
        assert!(OssStore::meta_headers(&bad).is_err());
        let big = PutOptions {
            metadata: vec![("big".into(), "v".repeat(9000))],
            mtime_ms: None,
        };
        assert!(OssStore::meta_headers(&big).is_err());
        assert_eq!(url_decode("a%2Bb+c%20d"), "a+b c d");
    }
}
