//! The harness's own S3 client (aws-sdk-s3, independent of snapferry's engine): it
//! creates buckets, writes each workload once, checks every copy (count and bytes), and
//! measures the pipe limit.
//!
//! Object bytes come from one seeded pool of random bytes, sliced per object at an offset
//! derived from its key, so the same key always has the same bytes (W4 writes identical
//! objects on both sides) and nothing is compressible.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng};

use crate::servers::{ACCESS_KEY, SECRET_KEY};
use crate::workloads::Obj;

/// The largest single chunk (single PUT body or part) the pool serves.
pub const MAX_CHUNK: u64 = 64 << 20;
/// Parts of generated multipart objects (Elasticsearch's S3 repository uploads large
/// blobs multipart too; its part size is its `buffer_size`).
pub const GEN_PART: u64 = 64 << 20;
const POOL_EXTRA: u64 = 16 << 20;

/// A client for one server: path-style, no SDK retries beyond the default, no request
/// checksums and no payload signing (the harness is not what is measured, and the pipe
/// limit should be the servers' and the loopback's, not a client's hashing).
pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "bench",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Seeded random bytes that every generated object is cut from.
#[derive(Clone)]
pub struct Pool(Bytes);

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

impl Pool {
    /// `MAX_CHUNK + 16 MiB` of random bytes from a fixed seed.
    pub fn new() -> Pool {
        let mut v = vec![0u8; (MAX_CHUNK + POOL_EXTRA) as usize];
        rand::rngs::StdRng::seed_from_u64(0x5eed_f3e7).fill_bytes(&mut v);
        Pool(Bytes::from(v))
    }

    /// `len` bytes (<= MAX_CHUNK) for chunk `n` of `key`, zero-copy.
    pub fn chunk(&self, key: &str, n: u64, len: u64) -> Bytes {
        assert!(
            len <= MAX_CHUNK,
            "chunk of {len} bytes is above the pool's chunk size"
        );
        let off = fnv(key, n) % (POOL_EXTRA + MAX_CHUNK - len + 1);
        self.0.slice(off as usize..(off + len) as usize)
    }
}

fn fnv(key: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(n.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Creates a bucket.
pub async fn create_bucket(c: &aws_sdk_s3::Client, bucket: &str) -> Result<()> {
    c.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| anyhow!("create bucket {bucket}: {}", DisplayErrorContext(&e)))?;
    Ok(())
}

/// Writes one object: a single PUT up to `MAX_CHUNK`, else multipart in `GEN_PART` parts.
async fn put_obj(c: &aws_sdk_s3::Client, bucket: &str, o: &Obj, pool: &Pool) -> Result<()> {
    if o.size <= MAX_CHUNK {
        c.put_object()
            .bucket(bucket)
            .key(&o.key)
            .body(ByteStream::from(pool.chunk(&o.key, 0, o.size)))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| anyhow!("put {}: {}", o.key, DisplayErrorContext(&e)))?;
        return Ok(());
    }
    let up = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(&o.key)
        .send()
        .await
        .map_err(|e| anyhow!("create upload {}: {}", o.key, DisplayErrorContext(&e)))?;
    let id = up.upload_id().unwrap_or_default().to_string();
    let mut parts = Vec::new();
    let mut off = 0;
    let mut n = 1;
    while off < o.size {
        let len = GEN_PART.min(o.size - off);
        let r = c
            .upload_part()
            .bucket(bucket)
            .key(&o.key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(pool.chunk(&o.key, n as u64, len)))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "upload part {} of {}: {}",
                    n,
                    o.key,
                    DisplayErrorContext(&e)
                )
            })?;
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(r.e_tag().map(str::to_string))
                .build(),
        );
        off += len;
        n += 1;
    }
    c.complete_multipart_upload()
        .bucket(bucket)
        .key(&o.key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| anyhow!("complete {}: {}", o.key, DisplayErrorContext(&e)))?;
    Ok(())
}

/// Writes every object of a workload, `conc` at a time.
pub async fn generate(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    objects: &[Obj],
    pool: &Pool,
    conc: usize,
) -> Result<()> {
    futures::stream::iter(objects.iter().map(Ok::<_, anyhow::Error>))
        .try_for_each_concurrent(conc, |o| async move { put_obj(c, bucket, o, pool).await })
        .await
}

/// Objects and bytes in a bucket (one full listing).
pub async fn bucket_totals(c: &aws_sdk_s3::Client, bucket: &str) -> Result<(u64, u64)> {
    let mut pages = c.list_objects_v2().bucket(bucket).into_paginator().send();
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(p) = pages.next().await {
        let p = p.map_err(|e| anyhow!("list {bucket}: {}", DisplayErrorContext(&e)))?;
        for o in p.contents() {
            n += 1;
            bytes += o.size().unwrap_or(0).max(0) as u64;
        }
    }
    Ok((n, bytes))
}

/// The pipe limit of one run: the source drained with ranged GETs and the destination
/// filled with multipart PUTs of generated bytes, both at once, each `conc` requests
/// deep, the same bytes each way; no copier in between.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipeRun {
    /// Bytes each way.
    pub bytes: u64,
    /// Until both sides finished.
    pub wall_seconds: f64,
    /// When the GET side finished.
    pub get_seconds: f64,
    /// When the PUT side finished.
    pub put_seconds: f64,
}

/// Measures the pipe limit over `objects` (read from `src_bucket`, written as
/// `pipe/<key>` to `dst_bucket`) with `part`-sized ranges and parts.
pub async fn pipe_limit(
    (src, src_bucket): (&aws_sdk_s3::Client, &str),
    (dst, dst_bucket): (&aws_sdk_s3::Client, &str),
    objects: &[Obj],
    conc: usize,
    part: u64,
    pool: &Pool,
) -> Result<PipeRun> {
    let bytes: u64 = objects.iter().map(|o| o.size).sum();
    let start = Instant::now();
    let ranges: Vec<(String, u64, u64)> = objects
        .iter()
        .flat_map(|o| {
            (0..o.size.div_ceil(part)).map(move |i| {
                let a = i * part;
                (o.key.clone(), a, (a + part).min(o.size))
            })
        })
        .collect();
    let get_side = async {
        futures::stream::iter(ranges.iter().map(Ok::<_, anyhow::Error>))
            .try_for_each_concurrent(conc, |(key, a, b)| async move {
                let r = src
                    .get_object()
                    .bucket(src_bucket)
                    .key(key)
                    .range(format!("bytes={a}-{}", b - 1))
                    .send()
                    .await
                    .map_err(|e| anyhow!("get {key}: {}", DisplayErrorContext(&e)))?;
                // Drain the body chunk by chunk, holding no more than one at a time.
                let mut body = r.body;
                let mut got = 0u64;
                while let Some(chunk) = body.try_next().await.context("read body")? {
                    got += chunk.len() as u64;
                }
                anyhow::ensure!(got == b - a, "short read of {key}: {got} of {}", b - a);
                Ok(())
            })
            .await?;
        Ok::<_, anyhow::Error>(start.elapsed().as_secs_f64())
    };
    let put_side = async {
        // Create every upload first, then stream all parts through one bounded pool.
        let mut uploads = Vec::new();
        for o in objects {
            let key = format!("pipe/{}", o.key);
            let up = dst
                .create_multipart_upload()
                .bucket(dst_bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| anyhow!("create upload {key}: {}", DisplayErrorContext(&e)))?;
            uploads.push((key, up.upload_id().unwrap_or_default().to_string(), o.size));
        }
        let jobs: Vec<(usize, i32, u64, u64)> = uploads
            .iter()
            .enumerate()
            .flat_map(|(i, (_, _, size))| {
                (0..size.div_ceil(part)).map(move |p| {
                    let a = p * part;
                    (i, p as i32 + 1, a, (a + part).min(*size))
                })
            })
            .collect();
        let uploads = Arc::new(uploads);
        let done: Vec<(usize, CompletedPart)> =
            futures::stream::iter(jobs.into_iter().map(|(i, n, a, b)| {
                let uploads = uploads.clone();
                async move {
                    let (key, id, _) = &uploads[i];
                    let r = dst
                        .upload_part()
                        .bucket(dst_bucket)
                        .key(key)
                        .upload_id(id)
                        .part_number(n)
                        .body(ByteStream::from(pool.chunk(key, n as u64, b - a)))
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| {
                            anyhow!("upload part {n} of {key}: {}", DisplayErrorContext(&e))
                        })?;
                    Ok::<_, anyhow::Error>((
                        i,
                        CompletedPart::builder()
                            .part_number(n)
                            .set_e_tag(r.e_tag().map(str::to_string))
                            .build(),
                    ))
                }
            }))
            .buffer_unordered(conc)
            .try_collect()
            .await?;
        for (i, (key, id, _)) in uploads.iter().enumerate() {
            let mut parts: Vec<CompletedPart> = done
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, p)| p.clone())
                .collect();
            parts.sort_by_key(|p| p.part_number());
            dst.complete_multipart_upload()
                .bucket(dst_bucket)
                .key(key)
                .upload_id(id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| anyhow!("complete {key}: {}", DisplayErrorContext(&e)))?;
        }
        Ok::<_, anyhow::Error>(start.elapsed().as_secs_f64())
    };
    let (g, p) = tokio::join!(get_side, put_side);
    let (get_seconds, put_seconds) = (g?, p?);
    Ok(PipeRun {
        bytes,
        wall_seconds: start.elapsed().as_secs_f64(),
        get_seconds,
        put_seconds,
    })
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
}
