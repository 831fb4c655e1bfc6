//! The harness's own S3 side, independent of snapferry's engine (aws-sdk-s3 through the
//! test kit's client): writing each workload once, checking every copy, the pipe limit,
//! and the servers' own request counters and CPU time, so every tool is counted alike.
//!
//! Object bytes are cut from one seeded pool of random bytes at an offset derived from
//! the key, so a key always has the same bytes (W4 writes identical objects on both
//! sides) and nothing compresses.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, ensure, Result};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng};

use crate::workloads::Obj;

/// The largest single PUT the harness makes, and its part size for larger objects
/// (Elasticsearch's S3 repository writes large blobs multipart too).
pub const MAX_CHUNK: u64 = 64 << 20;
const POOL_EXTRA: u64 = 16 << 20;

/// A client with no request checksums and (per request) no payload signing: the harness
/// is not what is measured, and the pipe limit should be the servers', not a client's.
pub fn client(endpoint: &str) -> Client {
    testkit::s3_client_with(endpoint, |b| {
        b.request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
    })
}

fn sdk<E: std::error::Error + 'static>(what: String) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow!("{what}: {}", DisplayErrorContext(&e))
}

/// Seeded random bytes that every generated object is cut from.
#[derive(Clone)]
pub struct Pool(Bytes);

impl Pool {
    pub fn new() -> Pool {
        let mut v = vec![0u8; (MAX_CHUNK + POOL_EXTRA) as usize];
        rand::rngs::StdRng::seed_from_u64(0x5eed_f3e7).fill_bytes(&mut v);
        Pool(Bytes::from(v))
    }

    /// `len` bytes (at most `MAX_CHUNK`) for chunk `n` of `key`, zero-copy.
    pub fn chunk(&self, key: &str, n: u64, len: u64) -> Bytes {
        assert!(len <= MAX_CHUNK, "chunk of {len} bytes is above the pool's");
        // FNV-1a of the key and the chunk number.
        let h = key
            .bytes()
            .chain(n.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
        let off = h % (POOL_EXTRA + MAX_CHUNK - len + 1);
        self.0.slice(off as usize..(off + len) as usize)
    }
}

async fn create_upload(c: &Client, bucket: &str, key: &str) -> Result<String> {
    let up = c.create_multipart_upload().bucket(bucket).key(key).send();
    let up = up.await.map_err(sdk(format!("create upload {key}")))?;
    Ok(up.upload_id().unwrap_or_default().to_string())
}

async fn upload_part(
    c: &Client,
    b: &str,
    key: &str,
    id: &str,
    n: i32,
    body: Bytes,
) -> Result<CompletedPart> {
    let r = c
        .upload_part()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .part_number(n);
    let r = r
        .body(ByteStream::from(body))
        .customize()
        .disable_payload_signing();
    let r = r
        .send()
        .await
        .map_err(sdk(format!("upload part {n} of {key}")))?;
    Ok(CompletedPart::builder()
        .part_number(n)
        .set_e_tag(r.e_tag().map(str::to_string))
        .build())
}

async fn complete(
    c: &Client,
    b: &str,
    key: &str,
    id: &str,
    mut parts: Vec<CompletedPart>,
) -> Result<()> {
    parts.sort_by_key(|p| p.part_number());
    let done = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    let r = c
        .complete_multipart_upload()
        .bucket(b)
        .key(key)
        .upload_id(id);
    r.multipart_upload(done)
        .send()
        .await
        .map_err(sdk(format!("complete {key}")))?;
    Ok(())
}

/// Writes one object: a single PUT up to `MAX_CHUNK`, else multipart in `MAX_CHUNK` parts.
async fn put_obj(c: &Client, bucket: &str, o: &Obj, pool: &Pool) -> Result<()> {
    if o.size <= MAX_CHUNK {
        let body = ByteStream::from(pool.chunk(&o.key, 0, o.size));
        let r = c.put_object().bucket(bucket).key(&o.key).body(body);
        let r = r.customize().disable_payload_signing().send().await;
        r.map_err(sdk(format!("put {}", o.key)))?;
        return Ok(());
    }
    let id = create_upload(c, bucket, &o.key).await?;
    let mut parts = Vec::new();
    for (i, a) in (0..o.size).step_by(MAX_CHUNK as usize).enumerate() {
        let n = i as i32 + 1;
        let body = pool.chunk(&o.key, n as u64, MAX_CHUNK.min(o.size - a));
        parts.push(upload_part(c, bucket, &o.key, &id, n, body).await?);
    }
    complete(c, bucket, &o.key, &id, parts).await
}

/// Writes every object of a workload, `conc` at a time.
pub async fn generate(
    c: &Client,
    bucket: &str,
    objects: &[Obj],
    pool: &Pool,
    conc: usize,
) -> Result<()> {
    futures::stream::iter(objects.iter().map(Ok::<_, anyhow::Error>))
        .try_for_each_concurrent(conc, |o| put_obj(c, bucket, o, pool))
        .await
}

/// Objects and bytes in a bucket (one full listing).
pub async fn bucket_totals(c: &Client, bucket: &str) -> Result<(u64, u64)> {
    let mut pages = c.list_objects_v2().bucket(bucket).into_paginator().send();
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(p) = pages.next().await {
        for o in p.map_err(sdk(format!("list {bucket}")))?.contents() {
            n += 1;
            bytes += o.size().unwrap_or(0).max(0) as u64;
        }
    }
    Ok((n, bytes))
}

/// One pipe-limit run: the source drained with ranged GETs and the destination filled
/// with multipart PUTs of generated bytes, both at once, each `conc` requests deep, the
/// same bytes each way; no copier in between.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipeRun {
    /// Bytes each way.
    pub bytes: u64,
    /// Until both sides finished.
    pub wall_seconds: f64,
    pub get_seconds: f64,
    pub put_seconds: f64,
}

/// `(object index, part number, start, end)` of every `part`-sized range.
fn ranges(objects: &[Obj], part: u64) -> Vec<(usize, i32, u64, u64)> {
    let each = |(i, size): (usize, u64)| {
        (0..size.div_ceil(part))
            .map(move |p| (i, p as i32 + 1, p * part, ((p + 1) * part).min(size)))
    };
    objects
        .iter()
        .map(|o| o.size)
        .enumerate()
        .flat_map(each)
        .collect()
}

/// Measures the pipe limit over `objects` (read from `src`, written as `pipe/<key>` to
/// `dst`, the same bucket name on both) with `part`-sized ranges and parts.
pub async fn pipe_limit(
    src: &Client,
    dst: &Client,
    bucket: &str,
    objects: &[Obj],
    conc: usize,
    part: u64,
    pool: &Pool,
) -> Result<PipeRun> {
    let start = Instant::now();
    let jobs = ranges(objects, part);
    let get_side = async {
        let get = |&(i, _, a, b): &(usize, i32, u64, u64)| async move {
            let key = &objects[i].key;
            let r = src
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(format!("bytes={a}-{}", b - 1));
            // Drain the body chunk by chunk, holding no more than one at a time.
            let mut body = r.send().await.map_err(sdk(format!("get {key}")))?.body;
            let mut got = 0u64;
            while let Some(chunk) = body.try_next().await? {
                got += chunk.len() as u64;
            }
            ensure!(got == b - a, "short read of {key}: {got} of {}", b - a);
            Ok(())
        };
        futures::stream::iter(jobs.iter().map(Ok))
            .try_for_each_concurrent(conc, get)
            .await?;
        Ok::<_, anyhow::Error>(start.elapsed().as_secs_f64())
    };
    let put_side = async {
        // Every upload first, then all parts through one bounded pool.
        let keys: Vec<String> = objects.iter().map(|o| format!("pipe/{}", o.key)).collect();
        let mut ids = Vec::new();
        for k in &keys {
            ids.push(create_upload(dst, bucket, k).await?);
        }
        let (keys, ids) = (&keys, &ids);
        let put = |(i, n, a, b): (usize, i32, u64, u64)| async move {
            let body = pool.chunk(&keys[i], n as u64, b - a);
            Ok::<_, anyhow::Error>((
                i,
                upload_part(dst, bucket, &keys[i], &ids[i], n, body).await?,
            ))
        };
        let done: Vec<(usize, CompletedPart)> =
            futures::stream::iter(jobs.iter().copied().map(put))
                .buffer_unordered(conc)
                .try_collect()
                .await?;
        for (i, (k, id)) in keys.iter().zip(ids).enumerate() {
            let parts = done
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, p)| p.clone())
                .collect();
            complete(dst, bucket, k, id, parts).await?;
        }
        Ok::<_, anyhow::Error>(start.elapsed().as_secs_f64())
    };
    let (g, p) = tokio::join!(get_side, put_side);
    let (get_seconds, put_seconds) = (g?, p?);
    let bytes = objects.iter().map(|o| o.size).sum();
    Ok(PipeRun {
        bytes,
        wall_seconds: start.elapsed().as_secs_f64(),
        get_seconds,
        put_seconds,
    })
}

/// Requests by kind, as the results tables show them.
pub const KINDS: [&str; 7] = ["LIST", "HEAD", "GET", "PUT", "PART", "MPU", "OTHER"];

/// The table column of a MinIO API name.
fn kind_of(api: &str) -> &'static str {
    match api {
        "ListObjectsV2" | "ListObjectsV1" | "ListObjectVersions" | "ListObjectVersionsM" => "LIST",
        "HeadObject" => "HEAD",
        "GetObject" => "GET",
        "PutObject" => "PUT",
        "PutObjectPart" => "PART",
        "NewMultipartUpload"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListMultipartUploads"
        | "ListObjectParts" => "MPU",
        _ => "OTHER",
    }
}

/// Requests a server has answered so far, by API name: its `minio_api_requests_total`
/// (computed on each scrape; `MINIO_PROMETHEUS_AUTH_TYPE=public`).
pub fn api_counts(endpoint: &str) -> Result<BTreeMap<String, u64>> {
    let (status, body) = testkit::http(endpoint, "GET", "/minio/metrics/v3/api/requests", b"");
    ensure!(
        status == 200,
        "GET {endpoint}/minio/metrics/v3/api/requests: {status}"
    );
    Ok(parse_api_totals(&body))
}

fn parse_api_totals(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((labels, value)) = line
            .strip_prefix("minio_api_requests_total{")
            .and_then(|r| r.split_once('}'))
        else {
            continue;
        };
        let name = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("name=\"")?.strip_suffix('"'));
        if let Some(n) = name {
            *out.entry(n.to_string()).or_insert(0) +=
                value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        }
    }
    out
}

/// `after - before` summed by [`KINDS`] into `kinds` and by API into `apis`.
pub fn add_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    kinds: &mut BTreeMap<String, u64>,
    apis: &mut BTreeMap<String, u64>,
) {
    for k in KINDS {
        kinds.entry(k.to_string()).or_insert(0);
    }
    for (api, &a) in after {
        let d = a.saturating_sub(before.get(api).copied().unwrap_or(0));
        if d > 0 {
            *kinds.entry(kind_of(api).to_string()).or_insert(0) += d;
            *apis.entry(api.clone()).or_insert(0) += d;
        }
    }
}

fn ticks(t: f64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    t / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0)
}

/// CPU seconds (user + system) of a live process, from /proc/PID/stat.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime: the 12th and 13th fields after the parenthesised command name.
    let f: Vec<f64> = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    ticks(f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0))
}

/// CPU seconds the whole machine has been busy (user, nice, system, irq, softirq, steal),
/// from /proc/stat: the machine is shared, and this tells how much of it was not ours.
pub fn machine_busy_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ticks([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gets_the_same_bytes_and_keys_differ() {
        let p = Pool::new();
        assert_eq!(p.chunk("a", 0, 1000), p.chunk("a", 0, 1000));
        assert_ne!(p.chunk("a", 0, 1000), p.chunk("b", 0, 1000));
        assert_eq!(p.chunk("a", 1, MAX_CHUNK).len() as u64, MAX_CHUNK);
    }

    #[test]
    fn parses_v3_request_totals_by_name() {
        let text = "# TYPE minio_api_requests_total counter\n\
            minio_api_requests_total{name=\"PutObject\",server=\"127.0.0.1:9000\",type=\"s3\"} 12\n\
            minio_api_requests_total{name=\"ListObjectsV2\",server=\"127.0.0.1:9000\",type=\"s3\"} 3\n\
            minio_api_requests_errors_total{name=\"PutObject\",type=\"s3\"} 1\n";
        let m = parse_api_totals(text);
        assert_eq!((m["PutObject"], m["ListObjectsV2"], m.len()), (12, 3, 2));
        let before = BTreeMap::from([("PutObject".to_string(), 2u64)]);
        let (mut kinds, mut apis) = (BTreeMap::new(), BTreeMap::new());
        add_delta(&before, &m, &mut kinds, &mut apis);
        assert_eq!(
            (
                kinds["PUT"],
                kinds["LIST"],
                kinds["HEAD"],
                apis["PutObject"]
            ),
            (10, 3, 0, 10)
        );
    }
}
