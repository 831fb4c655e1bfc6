//! Micro benchmarks of the engine's hot loops (issue 6): the checksums every part goes
//! through, the differ's merge-join and compare rule, and part planning.
//!
//! ```text
//! cargo bench -p snapferry-bench --bench hot_loops [-- FILTER]
//! ```
//! Each benchmark calls the engine's public entry point, the one the pipeline calls, so
//! a regression in the engine shows up here and not only in a copy of its code:
//! - `checksum/*`: [`checksum::hash`] (inline up to 256 KiB, else on the blocking pool)
//!   with the CRC32, MD5 and CRC-64 the stores use, and [`checksum::verify_crc32_then`],
//!   the one-pass "re-check CRC32 and compute the protocol digest" of S3 (MD5) and OSS
//!   (CRC-64). Throughput is in bytes, over a 64 KiB and a 16 MiB buffer.
//! - `differ/*`: [`merge_join`] over two listings shaped like the `diff-memory` probe's
//!   (the destination holds every other key), and [`decide`] over the joined pairs.
//!   Throughput is in keys: the keys read from both listings, or the pairs decided.
//! - `scheduler/*`: [`part_ranges`] for one large object, and the per-object decision
//!   (single PUT, or how many parts) over a listing. Throughput is in parts or objects.
//!
//! Async code runs on a current-thread runtime: it measures the CPU cost of the loop
//! without the cross-thread wake-ups of the multi-thread one, which on a shared CI
//! machine mostly add noise.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use md5::{Digest, Md5};
use snapferry_engine::checksum;
use snapferry_engine::pipeline::differ::{decide, merge_join, DiffStats};
use snapferry_engine::pipeline::scheduler::{is_multipart, part_ranges};
use snapferry_engine::pipeline::SyncOptions;
use snapferry_engine::store::oss::crc64;
use snapferry_engine::store::ObjectMeta;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: u64 = 1 << 30;

/// Keys per source listing in the differ benchmarks.
const DIFF_KEYS: u64 = 100_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// Bytes that do not compress to a pattern (xorshift64), so no hash gets a lucky path.
fn noise(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn md5(d: &[u8]) -> [u8; 16] {
    Md5::digest(d).into()
}

fn checksums(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("checksum");
    for (label, len) in [("64KiB", 64 * KIB), ("16MiB", 16 * MIB)] {
        let data = noise(len);
        let crc = crc32fast::hash(&data);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("crc32", label), &data, |b, d| {
            b.iter(|| rt.block_on(checksum::hash(d, crc32fast::hash)))
        });
        g.bench_with_input(BenchmarkId::new("md5", label), &data, |b, d| {
            b.iter(|| rt.block_on(checksum::hash(d, md5)))
        });
        g.bench_with_input(BenchmarkId::new("crc64", label), &data, |b, d| {
            b.iter(|| rt.block_on(checksum::hash(d, crc64)))
        });
        g.bench_with_input(
            BenchmarkId::new("verify_crc32+md5", label),
            &data,
            |b, d| {
                b.iter(|| {
                    rt.block_on(checksum::verify_crc32_then("bench", d, crc, md5))
                        .expect("same crc32")
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("verify_crc32+crc64", label),
            &data,
            |b, d| {
                b.iter(|| {
                    rt.block_on(checksum::verify_crc32_then("bench", d, crc, crc64))
                        .expect("same crc32")
                })
            },
        );
    }
    g.finish();
}

/// Every `step`-th of `n` keys, shaped like a snapshot repository's blobs (the same
/// listing as the `diff-memory` probe's).
fn listing(n: u64, step: u64) -> Vec<ObjectMeta> {
    (0..n)
        .step_by(step as usize)
        .map(|i| ObjectMeta {
            key: format!("indices/{:08x}/0/__{:020}", i / 1000, i),
            size: 4096 + i % 65536,
            mtime_ms: Some(1_764_000_000_000),
            etag: Some(format!("{i:032x}")),
            record: None,
            ..Default::default()
        })
        .collect()
}

fn feed(v: Vec<ObjectMeta>) -> mpsc::Receiver<snapferry_engine::Result<ObjectMeta>> {
    let (tx, rx) = mpsc::channel(1000);
    tokio::spawn(async move {
        for m in v {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs the merge-join to the end, returning the number of steps it emitted.
async fn join(src: Vec<ObjectMeta>, dst: Vec<ObjectMeta>) -> u64 {
    let stats = DiffStats::default();
    let (tx, mut rx) = mpsc::channel(1000);
    let differ = merge_join(feed(src), feed(dst), tx, &stats);
    let consumer = async {
        let mut steps = 0u64;
        while let Some(j) = rx.recv().await {
            black_box(&j);
            steps += 1;
        }
        steps
    };
    let (result, steps) = tokio::join!(differ, consumer);
    result.expect("generated listings are in key order");
    steps
}

fn differ(c: &mut Criterion) {
    let rt = runtime();
    let src = listing(DIFF_KEYS, 1);
    let dst = listing(DIFF_KEYS, 2);
    let mut g = c.benchmark_group("differ");
    // One merge-join of 150,000 keys takes tens of milliseconds: 10 samples suffice.
    g.sample_size(10);
    g.throughput(Throughput::Elements((src.len() + dst.len()) as u64));
    g.bench_function(BenchmarkId::new("merge_join", "100k+50k keys"), |b| {
        b.iter_batched(
            || (src.clone(), dst.clone()),
            |(s, d)| rt.block_on(join(s, d)),
            BatchSize::LargeInput,
        )
    });
    // The compare rule on every joined pair: half have a same-ETag destination (skip),
    // half none (copy, which formats a reason).
    let pairs: Vec<(ObjectMeta, Option<ObjectMeta>)> = {
        let mut d = dst.iter().peekable();
        src.iter()
            .map(|s| {
                let m = d.next_if(|m| m.key == s.key).cloned();
                (s.clone(), m)
            })
            .collect()
    };
    g.throughput(Throughput::Elements(pairs.len() as u64));
    g.bench_function(BenchmarkId::new("decide", "100k pairs"), |b| {
        b.iter(|| {
            for (s, d) in &pairs {
                black_box(decide(s, d.as_ref(), true));
            }
        })
    });
    g.finish();
}

fn scheduler(c: &mut Criterion) {
    let opts = SyncOptions::default();
    let (ps, threshold) = (opts.part_size, opts.multipart_threshold);
    let mut g = c.benchmark_group("scheduler");
    for (label, size) in [
        ("5GiB", 5 * GIB),
        ("50GiB", 50 * GIB),
        // Past 10,000 parts of the default size: the part size grows.
        ("5TiB", 5 * 1024 * GIB),
    ] {
        let parts = part_ranges(size, ps).count() as u64;
        g.throughput(Throughput::Elements(parts));
        g.bench_with_input(BenchmarkId::new("part_ranges", label), &size, |b, &s| {
            // As the scheduler does: the ranges collected, then sent one job per part.
            b.iter(|| part_ranges(black_box(s), black_box(ps)).collect::<Vec<_>>())
        });
    }
    // The per-object decision over a listing: mostly small blobs, one in a hundred a
    // large segment file (1 to 21 GiB) that goes multipart.
    let sizes: Vec<u64> = (0..DIFF_KEYS)
        .map(|i| {
            if i % 100 == 0 {
                GIB + (i % 21) * GIB
            } else {
                4096 + i % 65536
            }
        })
        .collect();
    g.throughput(Throughput::Elements(sizes.len() as u64));
    g.bench_function(BenchmarkId::new("plan_listing", "100k objects"), |b| {
        b.iter(|| {
            let mut jobs = 0u64;
            for &s in &sizes {
                // As the scheduler does: a multipart object's ranges are collected first.
                jobs += if is_multipart(s, threshold) {
                    black_box(part_ranges(s, ps).collect::<Vec<_>>()).len() as u64
                } else {
                    1
                };
            }
            jobs
        })
    });
    g.finish();
}

criterion_group!(hot_loops, checksums, differ, scheduler);
criterion_main!(hot_loops);
