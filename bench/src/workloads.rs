//! The workloads, shaped like Elasticsearch snapshot repositories (keys
//! `indices/<index-uuid>/<shard>/__<blob-uuid>` for data blobs).
//!
//! - W1: 8 × 512 MiB data blobs (bulk bytes; multipart both ways).
//! - W2: 20,000 blobs of 4–64 KiB (per-object cost).
//! - W3: a realistic repository mix whose size distribution is a real repository's
//!   (`fixtures/repos/opensearch-2.19.6`, written by OpenSearch itself): see [`w3`].
//! - W4: 100,000 objects already in sync on both sides: a no-op re-sync.
//! - W5: a diff of 1,000,000 keys (memory), the `diff-memory` probe; no servers.
//!
//! `scale` shrinks every workload proportionally for a smoke run of the harness.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

/// One object of a workload.
#[derive(Debug, Clone)]
pub struct Obj {
    /// Key in the bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A workload on the servers.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `W1`..`W4`.
    pub id: &'static str,
    /// One line for the tables.
    pub title: String,
    /// Bucket name on both servers.
    pub bucket: String,
    /// Objects in key order.
    pub objects: Vec<Obj>,
    /// A copy into an empty destination (W1–W3) or a no-op re-sync (W4).
    pub noop: bool,
    /// How the mix was derived (W3), for RESULTS.md.
    pub note: String,
}

impl Workload {
    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

const MIB: u64 = 1 << 20;

fn uuid(rng: &mut rand::rngs::StdRng) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

fn sorted(mut v: Vec<Obj>) -> Vec<Obj> {
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

/// W1: 8 data blobs of 512 MiB.
pub fn w1(scale: f64) -> Workload {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let size = ((512.0 * scale).round() as u64).max(1) * MIB;
    let idx = uuid(&mut rng);
    let objects = (0..8)
        .map(|i| Obj {
            key: format!("indices/{idx}/{}/__{}", i % 2, uuid(&mut rng)),
            size,
        })
        .collect();
    Workload {
        id: "W1",
        title: format!("8 × {} MiB data blobs", size / MIB),
        bucket: "bench-w1".into(),
        objects: sorted(objects),
        noop: false,
        note: String::new(),
    }
}

/// Small blobs spread over indices and shards like a repository's.
fn small_blobs(rng: &mut rand::rngs::StdRng, n: u64, min: u64, max: u64) -> Vec<Obj> {
    blobs_in(rng, n, (n / 1000).max(1), min, max)
}

/// Small blobs spread over `indices` indices of 5 shards each.
fn blobs_in(rng: &mut rand::rngs::StdRng, n: u64, indices: u64, min: u64, max: u64) -> Vec<Obj> {
    let indices: Vec<String> = (0..indices).map(|_| uuid(rng)).collect();
    (0..n)
        .map(|i| {
            let idx = &indices[(i as usize) % indices.len()];
            let shard = (i / indices.len() as u64) % 5;
            Obj {
                key: format!("indices/{idx}/{shard}/__{}", uuid(rng)),
                size: rng.random_range(min..=max),
            }
        })
        .collect()
}

/// W2: 20,000 blobs of 4–64 KiB (uniform).
pub fn w2(scale: f64) -> Workload {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let n = ((20_000.0 * scale).round() as u64).max(10);
    Workload {
        id: "W2",
        title: format!("{n} blobs of 4–64 KiB"),
        bucket: "bench-w2".into(),
        objects: sorted(small_blobs(&mut rng, n, 4 << 10, 64 << 10)),
        noop: false,
        note: String::new(),
    }
}

/// W4: 100,000 blobs of 1–4 KiB, written identically to both sides beforehand, under
/// `indices` index directories of 5 shard directories each (default: one index per
/// 1,000 blobs).
pub fn w4(scale: f64, indices: Option<u64>) -> Workload {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let n = ((100_000.0 * scale).round() as u64).max(10);
    let objects = match indices {
        None => small_blobs(&mut rng, n, 1 << 10, 4 << 10),
        Some(i) => blobs_in(&mut rng, n, i.max(1), 1 << 10, 4 << 10),
    };
    Workload {
        id: "W4",
        title: format!("no-op re-sync of {n} objects already in sync"),
        bucket: "bench-w4".into(),
        objects: sorted(objects),
        noop: true,
        note: String::new(),
    }
}

/// Data blobs above this size are the ones that grow with an index (stored fields,
/// postings, doc values, compound files); smaller ones (segment infos, field infos) and
/// every metadata blob keep their real sizes.
const GROWS_ABOVE: u64 = 4 << 10;
/// Copies of the repository's indices in W3.
const W3_REPLICAS: usize = 2;

/// W3: the blobs of a real repository written by OpenSearch (the fixture at `repo`),
/// its indices replicated twice under new index UUIDs, and the data blobs that grow
/// with an index (> 4 KiB in the fixture) scaled by one factor so the whole is about
/// `target` bytes (2 GiB); metadata and small blobs keep their real sizes.
pub fn w3(repo: &Path, target: u64) -> Result<Workload> {
    let mut files = Vec::new();
    walk(repo, repo, &mut files).with_context(|| format!("read {}", repo.display()))?;
    if files.is_empty() {
        bail!("no blobs under {}", repo.display());
    }
    let is_data = |k: &str| {
        let p: Vec<&str> = k.split('/').collect();
        p.len() == 4 && p[0] == "indices" && p[3].starts_with("__")
    };
    let grows = |k: &str, s: u64| is_data(k) && s > GROWS_ABOVE;
    let replicated = |k: &str| k.starts_with("indices/");
    let mut fixed = 0u64;
    let mut growing = 0u64;
    for (k, s) in &files {
        let copies = if replicated(k) { W3_REPLICAS as u64 } else { 1 };
        if grows(k, *s) {
            growing += s * copies;
        } else {
            fixed += s * copies;
        }
    }
    let factor = (target.saturating_sub(fixed)) as f64 / growing.max(1) as f64;
    let mut objects = Vec::new();
    for (k, s) in &files {
        let size = if grows(k, *s) {
            (*s as f64 * factor).round() as u64
        } else {
            *s
        };
        if replicated(k) {
            for r in 0..W3_REPLICAS {
                // indices/<uuid>/... -> indices/<uuid>r<r>/...
                let mut parts = k.splitn(3, '/');
                let (a, b, rest) = (parts.next(), parts.next(), parts.next());
                let key = match (a, b, rest) {
                    (Some(a), Some(b), Some(rest)) => format!("{a}/{b}r{r}/{rest}"),
                    _ => format!("{k}r{r}"),
                };
                objects.push(Obj { key, size });
            }
        } else {
            objects.push(Obj {
                key: k.clone(),
                size,
            });
        }
    }
    let objects = sorted(objects);
    let data_blobs = files.iter().filter(|(k, _)| is_data(k)).count();
    let grown = files.iter().filter(|(k, s)| grows(k, *s)).count();
    let note = format!(
        "from {} ({} blobs: {} data blobs, {} metadata blobs): its indices replicated {}× under new index UUIDs; the {} data blobs larger than 4 KiB (the ones that grow with an index) scaled by {:.0}×, every other blob at its real size",
        repo.display(),
        files.len(),
        data_blobs,
        files.len() - data_blobs,
        W3_REPLICAS,
        grown,
        factor
    );
    let total: u64 = objects.iter().map(|o| o.size).sum();
    Ok(Workload {
        id: "W3",
        title: format!(
            "repository mix: {} blobs, {:.2} GiB",
            objects.len(),
            total as f64 / (1u64 << 30) as f64
        ),
        bucket: "bench-w3".into(),
        objects,
        noop: false,
        note,
    })
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let t = e.file_type()?;
        if t.is_dir() {
            walk(root, &p, out)?;
        } else if t.is_file() {
            let rel = p.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            out.push((rel, e.metadata()?.len()));
        }
    }
    Ok(())
}

/// Count, smallest, median, largest and how many exceed `threshold` (multipart).
pub fn size_summary(objects: &[Obj], threshold: u64) -> String {
    let mut s: Vec<u64> = objects.iter().map(|o| o.size).collect();
    s.sort_unstable();
    if s.is_empty() {
        return "empty".into();
    }
    let multipart = s.iter().filter(|&&x| x > threshold).count();
    format!(
        "{} objects; smallest {}, median {}, largest {}; {} above the {} multipart threshold",
        s.len(),
        human(s[0]),
        human(s[s.len() / 2]),
        human(s[s.len() - 1]),
        multipart,
        human(threshold)
    )
}

/// Bytes in B/KiB/MiB/GiB with one decimal.
pub fn human(b: u64) -> String {
    let f = b as f64;
    if b < 1 << 10 {
        format!("{b} B")
    } else if b < 1 << 20 {
        format!("{:.1} KiB", f / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.1} MiB", f / (1 << 20) as f64)
    } else {
        format!("{:.2} GiB", f / (1u64 << 30) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_have_their_shapes() {
        let w1 = w1(1.0);
        assert_eq!(w1.objects.len(), 8);
        assert_eq!(w1.bytes(), 8 * 512 * MIB);
        let w2 = w2(1.0);
        assert_eq!(w2.objects.len(), 20_000);
        assert!(w2.objects.iter().all(|o| (4096..=65536).contains(&o.size)));
        let w4 = w4(1.0, None);
        assert_eq!(w4.objects.len(), 100_000);
        let mut keys: Vec<&str> = w4.objects.iter().map(|o| o.key.as_str()).collect();
        keys.dedup();
        assert_eq!(keys.len(), 100_000, "keys are unique");
    }

    #[test]
    fn w3_scales_a_real_repository_to_the_target() {
        let repo =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/repos/opensearch-2.19.6/repo");
        let w = w3(&repo, 2 << 30).expect("fixture repository");
        let total = w.bytes() as f64;
        assert!((total / (2u64 << 30) as f64 - 1.0).abs() < 0.01, "{total}");
        assert!(w
            .objects
            .iter()
            .any(|o| o.key == "index.latest" && o.size == 8));
        assert!(
            w.objects.iter().any(|o| o.size > 64 * MIB),
            "some go multipart"
        );
    }
}
