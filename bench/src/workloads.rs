//! The workloads, shaped like Elasticsearch snapshot repositories (data blobs under
//! `indices/<index-uuid>/<shard>/__<blob-uuid>`): W1 8 × 512 MiB data blobs (bulk bytes,
//! multipart both ways), W2 20,000 blobs of 4–64 KiB (per-object cost), W3 a real
//! repository's mix ([`w3`]), W4 100,000 objects already in sync (a no-op re-sync). W5,
//! the differ's memory, needs no servers (`diff_memory.rs`). `scale` shrinks every
//! workload for a smoke run. Every workload is seeded: the same keys and sizes each run.

use std::path::Path;

use anyhow::{bail, Result};
use indicatif::HumanBytes;
use rand::{rngs::StdRng, Rng, SeedableRng};
pub use testkit::load::Obj;

/// A workload: its objects in key order, in a bucket of the same name on every server.
#[derive(Debug, Clone)]
pub struct Workload {
    pub id: &'static str,
    pub title: String,
    pub bucket: String,
    pub objects: Vec<Obj>,
    /// A no-op re-sync (W4) rather than a copy into an empty destination.
    pub noop: bool,
    /// How the mix was derived (W3), for RESULTS.md.
    pub note: String,
}

impl Workload {
    fn new(id: &'static str, title: String, mut objects: Vec<Obj>, noop: bool) -> Workload {
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let (bucket, note) = (format!("bench-{}", id.to_lowercase()), String::new());
        Workload {
            id,
            title,
            bucket,
            objects,
            noop,
            note,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

pub const MIB: u64 = 1 << 20;

fn uuid(rng: &mut StdRng) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let letter = |_| A[rng.random_range(0..A.len())] as char;
    (0..22).map(letter).collect()
}

/// `n` blobs of `min..=max` bytes spread over `indices` indices (default one per 1,000
/// blobs) of 5 shards each.
fn blobs(rng: &mut StdRng, n: u64, indices: Option<u64>, (min, max): (u64, u64)) -> Vec<Obj> {
    let n_ids = indices.unwrap_or(n / 1000).max(1);
    let ids: Vec<String> = (0..n_ids).map(|_| uuid(rng)).collect();
    let blob = |i: u64| {
        let idx = &ids[(i as usize) % ids.len()];
        let shard = (i / ids.len() as u64) % 5;
        let key = format!("indices/{idx}/{shard}/__{}", uuid(rng));
        Obj {
            key,
            size: rng.random_range(min..=max),
        }
    };
    (0..n).map(blob).collect()
}

fn count(n: f64, scale: f64) -> u64 {
    ((n * scale).round() as u64).max(10)
}

pub fn w1(scale: f64) -> Workload {
    let mut rng = StdRng::seed_from_u64(1);
    let size = ((512.0 * scale).round() as u64).max(1) * MIB;
    let idx = uuid(&mut rng);
    let blob = |i| Obj {
        key: format!("indices/{idx}/{}/__{}", i % 2, uuid(&mut rng)),
        size,
    };
    let objects = (0..8).map(blob).collect();
    Workload::new(
        "W1",
        format!("8 × {} MiB data blobs", size / MIB),
        objects,
        false,
    )
}

pub fn w2(scale: f64) -> Workload {
    let n = count(20_000.0, scale);
    let objects = blobs(&mut StdRng::seed_from_u64(2), n, None, (4 << 10, 64 << 10));
    Workload::new("W2", format!("{n} blobs of 4–64 KiB"), objects, false)
}

/// W4: blobs of 1–4 KiB, written identically to both sides beforehand, under `indices`
/// index directories of 5 shard directories each.
pub fn w4(scale: f64, indices: Option<u64>) -> Workload {
    let n = count(100_000.0, scale);
    let rng = &mut StdRng::seed_from_u64(4);
    let objects = blobs(rng, n, indices, (1 << 10, 4 << 10));
    let title = format!("no-op re-sync of {n} objects already in sync");
    Workload::new("W4", title, objects, true)
}

/// Data blobs above this size are the ones that grow with an index (stored fields,
/// postings, doc values, compound files); smaller ones and metadata keep their sizes.
const GROWS_ABOVE: u64 = 4 << 10;
const W3_REPLICAS: u64 = 2;

/// W3: the blobs of a real repository written by OpenSearch (the fixture at `repo`), its
/// indices replicated twice under new index UUIDs, and the data blobs that grow with an
/// index scaled by one factor so the whole is about `target` bytes.
pub fn w3(repo: &Path, target: u64) -> Result<Workload> {
    let size = |k: &String| Ok((k.clone(), std::fs::metadata(repo.join(k))?.len()));
    let files: Vec<(String, u64)> = testkit::tree(repo)
        .iter()
        .map(size)
        .collect::<Result<_>>()?;
    if files.is_empty() {
        bail!("no blobs under {}", repo.display());
    }
    let is_data = |k: &str| {
        let p: Vec<&str> = k.split('/').collect();
        p.len() == 4 && p[0] == "indices" && p[3].starts_with("__")
    };
    let grows = |k: &str, s: u64| is_data(k) && s > GROWS_ABOVE;
    let copies = |k: &str| [1, W3_REPLICAS][usize::from(k.starts_with("indices/"))];
    // Bytes of the blobs that keep their size, and of those that grow.
    let mut sums = [0u64; 2];
    for (k, s) in &files {
        sums[usize::from(grows(k, *s))] += s * copies(k);
    }
    let [fixed, growing] = sums;
    let factor = target.saturating_sub(fixed) as f64 / growing.max(1) as f64;
    // indices/<uuid>/... -> indices/<uuid>r<r>/...
    let replica = |k: &str, r: u64| match k.splitn(3, '/').collect::<Vec<_>>()[..] {
        [a, b, rest] => format!("{a}/{b}r{r}/{rest}"),
        _ => format!("{k}r{r}"),
    };
    let mut objects = Vec::new();
    for (k, s) in &files {
        let grown = (*s as f64 * factor).round() as u64;
        let size = if grows(k, *s) { grown } else { *s };
        let one = copies(k) == 1;
        let keys = (0..copies(k)).map(|r| if one { k.clone() } else { replica(k, r) });
        objects.extend(keys.map(|key| Obj { key, size }));
    }
    let data_blobs = files.iter().filter(|(k, _)| is_data(k)).count();
    let grown = files.iter().filter(|(k, s)| grows(k, *s)).count();
    let gib = objects.iter().map(|o| o.size).sum::<u64>() as f64 / (1u64 << 30) as f64;
    let title = format!("repository mix: {} blobs, {gib:.2} GiB", objects.len());
    let mut w = Workload::new("W3", title, objects, false);
    let (repo, n, meta) = (repo.display(), files.len(), files.len() - data_blobs);
    w.note = format!("from {repo} ({n} blobs: {data_blobs} data blobs, {meta} metadata blobs): its indices replicated {W3_REPLICAS}× under new index UUIDs; the {grown} data blobs larger than 4 KiB (the ones that grow with an index) scaled by {factor:.0}×, every other blob at its real size");
    Ok(w)
}

/// Count, smallest, median, largest and how many exceed `threshold` (multipart).
pub fn size_summary(objects: &[Obj], threshold: u64) -> String {
    let mut s: Vec<u64> = objects.iter().map(|o| o.size).collect();
    s.sort_unstable();
    let (Some(&min), Some(&max)) = (s.first(), s.last()) else {
        return "empty".into();
    };
    let (n, med, thr) = (s.len(), HumanBytes(s[s.len() / 2]), HumanBytes(threshold));
    let above = s.iter().filter(|&&x| x > threshold).count();
    let (min, max) = (HumanBytes(min), HumanBytes(max));
    format!("{n} objects; smallest {min}, median {med}, largest {max}; {above} above the {thr} multipart threshold")
}
