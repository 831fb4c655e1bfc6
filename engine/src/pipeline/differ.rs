//! The differ: a sorted merge-join of the source and destination listings, and the
//! compare rule that decides what moves.
//!
//! Invariant: the differ holds at most one pending entry per side, whatever the number
//! of keys (`max_held` in [`DiffStats`] proves it in tests). Both inputs must be in
//! strictly increasing key order; a listing that is not is an error, because a
//! merge-join over an unordered listing would plan wrong deletes.
//!
//! The compare rule is the Alibaba migration guide's `isSkipExistFile` (size +
//! LastModified) made safe for same-size rewrites (Elasticsearch's `index.latest` is
//! always 8 bytes): an object is skipped only when the destination has the same size
//! and provably holds the same source version. See [`decide`].

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::store::ObjectMeta;

/// What the compare rule says about one source object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Copy, with the reason shown in `--dry-run`.
    Copy(String),
    /// In sync, with the reason.
    Skip(&'static str),
    /// The listing cannot tell: HEAD the destination for its recorded source version.
    NeedHead,
}

/// The compare rule. `dst_has_record_info` says whether `dst.record` is authoritative
/// (it came from a HEAD, or from a listing that carries records).
pub fn decide(src: &ObjectMeta, dst: Option<&ObjectMeta>, dst_has_record_info: bool) -> Decision {
    let Some(dst) = dst else {
        return Decision::Copy("missing at destination".into());
    };
    if src.size != dst.size {
        return Decision::Copy(format!(
            "size differs (source {} bytes, destination {} bytes)",
            src.size, dst.size
        ));
    }
    // Same ETag on both sides means the same bytes (an MD5, or an MD5 of part MD5s).
    if let (Some(a), Some(b)) = (&src.etag, &dst.etag) {
        if !a.is_empty() && a == b {
            return Decision::Skip("same size and same ETag");
        }
    }
    if let Some(rec) = &dst.record {
        let etag_ok = match (&src.etag, &rec.etag) {
            (Some(s), Some(r)) => Some(s == r),
            _ => None,
        };
        let mtime_ok = match (src.mtime_ms, rec.mtime_ms) {
            (Some(s), Some(r)) => Some(s == r),
            _ => None,
        };
        return match (etag_ok, mtime_ok) {
            (Some(false), _) => Decision::Copy(
                "source rewritten since the last copy (ETag differs from the recorded one)".into(),
            ),
            (_, Some(false)) => Decision::Copy(
                "source rewritten since the last copy (LastModified differs from the recorded one)"
                    .into(),
            ),
            (Some(true), _) | (None, Some(true)) => match rec.content_mismatch(dst) {
                Some(why) => Decision::Copy(why),
                None => Decision::Skip("destination was copied from this source version"),
            },
            (None, None) => Decision::Copy("recorded source version cannot be compared".into()),
        };
    }
    if !dst_has_record_info {
        return Decision::NeedHead;
    }
    // No record: the guide's fallback, size + LastModified.
    match (src.mtime_ms, dst.mtime_ms) {
        (Some(s), Some(d)) if d >= s => {
            Decision::Skip("no copy record; same size and destination not older than source")
        }
        (Some(_), Some(_)) => {
            Decision::Copy("no copy record; destination older than source".into())
        }
        _ => Decision::Copy("no copy record and no LastModified to compare".into()),
    }
}

/// One step of the merge-join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// A source key, with the destination entry of the same key if there is one.
    Source(ObjectMeta, Option<ObjectMeta>),
    /// A destination key the source does not have.
    DestOnly(ObjectMeta),
}

/// Instrumentation of a merge-join run.
#[derive(Debug, Default)]
pub struct DiffStats {
    held: AtomicUsize,
    max_held: AtomicUsize,
}

impl DiffStats {
    /// The most entries the differ ever held at once.
    pub fn max_held(&self) -> usize {
        self.max_held.load(Ordering::Relaxed)
    }
    fn set(&self, n: usize) {
        self.held.store(n, Ordering::Relaxed);
        self.max_held.fetch_max(n, Ordering::Relaxed);
    }
}

/// Pulls the next entry and checks that keys strictly increase.
async fn next_checked(
    rx: &mut mpsc::Receiver<Result<ObjectMeta>>,
    last: &mut Option<String>,
    side: &str,
) -> Result<Option<ObjectMeta>> {
    match rx.recv().await {
        None => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok(m)) => {
            if let Some(prev) = last.as_deref() {
                if m.key.as_str() <= prev {
                    return Err(Error::protocol(format!(
                        "the {side} listing is not in key order ({:?} after {prev:?}); refusing to continue",
                        m.key
                    )));
                }
            }
            *last = Some(m.key.clone());
            Ok(Some(m))
        }
    }
}

/// Merge-joins two key-ordered listings, sending each [`Joined`] step to `out`.
/// Returns when both inputs end, `out` closes, or a listing fails.
pub async fn merge_join(
    mut src: mpsc::Receiver<Result<ObjectMeta>>,
    mut dst: mpsc::Receiver<Result<ObjectMeta>>,
    out: mpsc::Sender<Joined>,
    stats: &DiffStats,
) -> Result<()> {
    let (mut last_s, mut last_d) = (None, None);
    let mut s = next_checked(&mut src, &mut last_s, "source").await?;
    let mut d = next_checked(&mut dst, &mut last_d, "destination").await?;
    loop {
        stats.set(s.is_some() as usize + d.is_some() as usize);
        let step = match (s.take(), d.take()) {
            (None, None) => return Ok(()),
            (Some(a), None) => {
                s = next_checked(&mut src, &mut last_s, "source").await?;
                Joined::Source(a, None)
            }
            (None, Some(b)) => {
                d = next_checked(&mut dst, &mut last_d, "destination").await?;
                Joined::DestOnly(b)
            }
            (Some(a), Some(b)) => match a.key.cmp(&b.key) {
                std::cmp::Ordering::Less => {
                    d = Some(b);
                    s = next_checked(&mut src, &mut last_s, "source").await?;
                    Joined::Source(a, None)
                }
                std::cmp::Ordering::Greater => {
                    s = Some(a);
                    d = next_checked(&mut dst, &mut last_d, "destination").await?;
                    Joined::DestOnly(b)
                }
                std::cmp::Ordering::Equal => {
                    s = next_checked(&mut src, &mut last_s, "source").await?;
                    d = next_checked(&mut dst, &mut last_d, "destination").await?;
                    Joined::Source(a, Some(b))
                }
            },
        };
        if out.send(step).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SourceRecord;

    fn m(key: &str, size: u64, mtime: i64, etag: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            mtime_ms: Some(mtime),
            etag: etag.map(str::to_string),
            record: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_destination_holding_other_bytes_than_recorded_is_copied_again() {
        let data = b"the bytes that were copied";
        let src = m("k", data.len() as u64, 2_000, Some("aaa"));
        let rec = SourceRecord {
            etag: Some("aaa".into()),
            mtime_ms: Some(2_000),
            crc32: Some(crc32fast::hash(data)),
            crc64: Some(crate::store::oss::crc64(data)),
        };
        let held = |crc32: Option<String>, crc64: Option<u64>| ObjectMeta {
            record: Some(rec.clone()),
            crc32,
            crc64,
            // The destination's ETag is its own (an OSS or MinIO MD5), not the source's.
            ..m("k", data.len() as u64, 3_000, Some("other"))
        };
        let good32 = crate::checksum::crc32_b64(crc32fast::hash(data));
        let bad32 = crate::checksum::crc32_b64(crc32fast::hash(b"the bytes that were c0pied"));
        let skip = |d: &Decision| matches!(d, Decision::Skip(_));
        assert!(skip(&decide(
            &src,
            Some(&held(Some(good32.clone()), None)),
            true
        )));
        assert!(skip(&decide(
            &src,
            Some(&held(None, Some(rec.crc64.unwrap()))),
            true
        )));
        assert!(
            skip(&decide(&src, Some(&held(None, None)), true)),
            "nothing to compare"
        );
        assert!(
            skip(&decide(
                &src,
                Some(&held(Some("AAAA-3".into()), None)),
                true
            )),
            "a composite checksum is not compared"
        );
        for d in [held(Some(bad32), None), held(Some(good32), Some(7))] {
            match decide(&src, Some(&d), true) {
                Decision::Copy(why) => {
                    assert!(why.contains("differs from the one recorded"), "{why}")
                }
                other => panic!("{other:?}"),
            }
        }
        // The record survives its metadata round trip.
        let pairs = rec.to_metadata();
        let back = SourceRecord::from_metadata(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, Some(rec));
    }

    #[test]
    fn compare_rule_table() {
        let src = m("index.latest", 8, 2_000, Some("aaa"));
        let rec = |etag: &str, mtime: i64| SourceRecord {
            etag: Some(etag.into()),
            mtime_ms: Some(mtime),
            ..Default::default()
        };
        let with_rec = |d: ObjectMeta, r: SourceRecord| ObjectMeta {
            record: Some(r),
            ..d
        };
        type Case = (
            &'static str,
            Option<ObjectMeta>,
            bool,
            fn(&Decision) -> bool,
        );
        let cases: Vec<Case> = vec![
            ("missing", None, false, |d| matches!(d, Decision::Copy(_))),
            (
                "size differs",
                Some(m("k", 9, 5_000, Some("aaa"))),
                false,
                |d| matches!(d, Decision::Copy(_)),
            ),
            (
                "same etag",
                Some(m("k", 8, 1_000, Some("aaa"))),
                false,
                |d| matches!(d, Decision::Skip(_)),
            ),
            // Same-size rewrite: dest newer than source, but its record names an older version.
            (
                "record etag differs",
                Some(with_rec(m("k", 8, 9_000, Some("bbb")), rec("old", 2_000))),
                false,
                |d| matches!(d, Decision::Copy(_)),
            ),
            (
                "record mtime differs",
                Some(with_rec(m("k", 8, 9_000, Some("bbb")), rec("aaa", 1_000))),
                false,
                |d| matches!(d, Decision::Copy(_)),
            ),
            (
                "record matches",
                Some(with_rec(m("k", 8, 9_000, Some("bbb")), rec("aaa", 2_000))),
                false,
                |d| matches!(d, Decision::Skip(_)),
            ),
            (
                "listing cannot tell",
                Some(m("k", 8, 9_000, Some("bbb"))),
                false,
                |d| *d == Decision::NeedHead,
            ),
            (
                "fallback dest newer",
                Some(m("k", 8, 9_000, Some("bbb"))),
                true,
                |d| matches!(d, Decision::Skip(_)),
            ),
            (
                "fallback dest equal",
                Some(m("k", 8, 2_000, Some("bbb"))),
                true,
                |d| matches!(d, Decision::Skip(_)),
            ),
            (
                "fallback dest older",
                Some(m("k", 8, 1_999, Some("bbb"))),
                true,
                |d| matches!(d, Decision::Copy(_)),
            ),
        ];
        for (name, dst, info, ok) in cases {
            let d = decide(&src, dst.as_ref(), info);
            assert!(ok(&d), "{name}: got {d:?}");
        }
        // A source without ETag (fs) is matched on the recorded mtime.
        let fs_src = m("k", 8, 2_000, None);
        let dst = with_rec(
            m("k", 8, 9_000, None),
            SourceRecord {
                etag: None,
                mtime_ms: Some(2_000),
                ..Default::default()
            },
        );
        assert!(matches!(
            decide(&fs_src, Some(&dst), true),
            Decision::Skip(_)
        ));
        let dst = with_rec(
            m("k", 8, 9_000, None),
            SourceRecord {
                etag: None,
                mtime_ms: Some(1_000),
                ..Default::default()
            },
        );
        assert!(matches!(
            decide(&fs_src, Some(&dst), true),
            Decision::Copy(_)
        ));
    }

    async fn feed(keys: Vec<&'static str>) -> mpsc::Receiver<Result<ObjectMeta>> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for k in keys {
                if tx.send(Ok(m(k, 1, 0, None))).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    #[tokio::test]
    async fn merge_join_pairs_and_orders() {
        let src = feed(vec!["a", "b", "d", "e/1"]).await;
        let dst = feed(vec!["b", "c", "e/1", "z"]).await;
        let (tx, mut rx) = mpsc::channel(2);
        let stats = DiffStats::default();
        let join = tokio::spawn(async move {
            let stats = stats;
            merge_join(src, dst, tx, &stats)
                .await
                .map(|_| stats.max_held())
        });
        let mut got = Vec::new();
        while let Some(j) = rx.recv().await {
            got.push(match j {
                Joined::Source(s, Some(_)) => format!("both:{}", s.key),
                Joined::Source(s, None) => format!("src:{}", s.key),
                Joined::DestOnly(d) => format!("dst:{}", d.key),
            });
        }
        assert_eq!(
            got,
            ["src:a", "both:b", "dst:c", "src:d", "both:e/1", "dst:z"]
        );
        assert!(join.await.unwrap().unwrap() <= 2);
    }

    #[tokio::test]
    async fn unordered_listing_is_refused() {
        let src = feed(vec!["b", "a"]).await;
        let dst = feed(vec![]).await;
        let (tx, mut rx) = mpsc::channel(8);
        let stats = DiffStats::default();
        let h = tokio::spawn(async move { merge_join(src, dst, tx, &stats).await });
        while rx.recv().await.is_some() {}
        let err = h.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("not in key order"), "{err}");
    }

    /// 1,000,000 keys per side, generated as streams: the differ holds O(1) entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn million_keys_in_flat_memory() {
        const N: u64 = 1_000_000;
        let gen = |offset: u64, step: u64| {
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                let mut i = offset;
                while i < N {
                    let meta = ObjectMeta {
                        key: format!("indices/{:012}", i),
                        size: 100,
                        mtime_ms: Some(1),
                        etag: Some(format!("{i:x}")),
                        record: None,
                        ..Default::default()
                    };
                    if tx.send(Ok(meta)).await.is_err() {
                        return;
                    }
                    i += step;
                }
            });
            rx
        };
        let src = gen(0, 1); // every key
        let dst = gen(0, 2); // every other key
        let (tx, mut rx) = mpsc::channel(1024);
        let stats = std::sync::Arc::new(DiffStats::default());
        let st = stats.clone();
        let h = tokio::spawn(async move { merge_join(src, dst, tx, &st).await });
        let (mut both, mut only) = (0u64, 0u64);
        while let Some(j) = rx.recv().await {
            match j {
                Joined::Source(_, Some(_)) => both += 1,
                Joined::Source(_, None) => only += 1,
                Joined::DestOnly(_) => panic!("dest has no extra keys"),
            }
        }
        h.await.unwrap().unwrap();
        assert_eq!(both, N / 2);
        assert_eq!(only, N / 2);
        assert!(
            stats.max_held() <= 2,
            "differ held {} entries",
            stats.max_held()
        );
    }
}
