//! The store conformance suite: what every `Store` backend must do, as public async
//! functions each backend's test calls in one line (object_store's `integration.rs`
//! pattern): `conformance(store)` on a fresh location, `missing_root(store)` on one whose
//! bucket or directory does not exist.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use snapferry_engine::error::ErrorKind;
use snapferry_engine::store::{LevelEntry, Part, Presence, PutOptions, SourceRecord, Store};

use crate::{data, md5_hex};

/// A whole listing from `after` on, as (key, size).
pub async fn list_all(s: &dyn Store, after: Option<&str>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut st = s.list(after.map(str::to_string));
    while let Some(page) = st.next().await {
        out.extend(
            page.expect("list page")
                .into_iter()
                .map(|m| (m.key, m.size)),
        );
    }
    out
}

/// A whole prefix listing from `after` on, as (key, size).
pub async fn list_prefix_all(
    s: &dyn Store,
    prefix: &str,
    after: Option<&str>,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut st = s.list_prefix(prefix, after.map(str::to_string));
    while let Some(page) = st.next().await {
        out.extend(
            page.unwrap_or_else(|e| panic!("list_prefix {prefix:?} page: {e}"))
                .into_iter()
                .map(|m| (m.key, m.size)),
        );
    }
    out
}

/// One level as `name` for objects (with the size) and `name/` for common prefixes; a
/// common prefix equal to `after` (which servers may list again) is dropped.
pub async fn list_level_all(s: &dyn Store, prefix: &str, after: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut st = s.list_level(prefix, after.map(str::to_string));
    while let Some(page) = st.next().await {
        for e in page.unwrap_or_else(|e| panic!("list_level {prefix:?} page: {e}")) {
            match e {
                LevelEntry::Object(m) => out.push(format!("{} {}", m.key, m.size)),
                LevelEntry::Prefix(p) if Some(p.as_str()) == after && out.is_empty() => {}
                LevelEntry::Prefix(p) => out.push(p),
            }
        }
    }
    out
}

/// The first item of a listing that must fail (a root that does not exist).
async fn first_error(
    mut l: impl futures::Stream<Item = snapferry_engine::error::Result<Vec<impl std::fmt::Debug>>>
        + Unpin,
) -> ErrorKind {
    match l.next().await {
        Some(Err(e)) => e.kind(),
        other => panic!("a missing root listed {other:?}"),
    }
}

/// Checks that `e`, an error of `s`, is of `kind`.
fn assert_kind(s: &dyn Store, e: &snapferry_engine::Error, kind: ErrorKind) {
    assert_eq!(e.kind(), kind, "{}: {e:?}", s.describe());
}

/// Puts `body` under `key` on the condition in `opts`, which `s` must find false.
async fn refused_put(s: &dyn Store, key: &str, body: &Bytes, opts: &PutOptions) {
    let e = s
        .put(key, body.clone(), crc32fast::hash(body), opts)
        .await
        .unwrap_err();
    assert_kind(s, &e, ErrorKind::PreconditionFailed);
}

/// `list_prefix` and `list_level` over the keys [`conformance`] wrote.
async fn prefix_conformance(s: &dyn Store, want: &[(String, u64)]) {
    let under = |p: &str| -> Vec<(String, u64)> {
        want.iter()
            .filter(|w| w.0.starts_with(p))
            .cloned()
            .collect()
    };
    // Only keys under the prefix, in byte order; a prefix not ending in '/' is a name
    // prefix (`a` holds `a-c`, `a/b`, `a/b0`, `a0`).
    for p in [
        "a/", "a", "a/b", "sp ace/", "z", "nope/", "nope", "a/b/", "",
    ] {
        assert_eq!(
            list_prefix_all(s, p, None).await,
            under(p),
            "{} {p:?}",
            s.describe()
        );
    }
    assert_eq!(under("a").len(), 4);
    // Resuming with start_after, inside the prefix and before it.
    let a = under("a");
    assert_eq!(list_prefix_all(s, "a", Some("a-c")).await, a[1..].to_vec());
    assert_eq!(list_prefix_all(s, "a", Some("a/b")).await, a[2..].to_vec());
    assert_eq!(list_prefix_all(s, "a/", Some("a/b0")).await, Vec::new());
    assert_eq!(list_prefix_all(s, "a/", Some("0")).await, under("a/"));
    assert_eq!(list_prefix_all(s, "a", Some("a0")).await, Vec::new());

    // One level: objects and common prefixes in byte order ('-' < '/' < '0').
    assert!(s.lists_levels(), "{}", s.describe());
    let size = |k: &str| want.iter().find(|w| w.0 == k).map(|w| w.1).unwrap();
    let obj = |k: &str| format!("{k} {}", size(k));
    let root = vec![
        obj("a-c"),
        "a/".to_string(),
        obj("a0"),
        obj("empty"),
        "sp ace/".to_string(),
        obj("z"),
    ];
    assert_eq!(list_level_all(s, "", None).await, root, "{}", s.describe());
    assert_eq!(list_level_all(s, "", Some("a/")).await, root[2..].to_vec());
    assert_eq!(list_level_all(s, "", Some("a-c")).await, root[1..].to_vec());
    assert_eq!(
        list_level_all(s, "a/", None).await,
        vec![obj("a/b"), obj("a/b0")]
    );
    assert_eq!(
        list_level_all(s, "sp ace/", None).await,
        vec![obj("sp ace/ünï+cødé%20.txt")]
    );
    assert!(list_level_all(s, "nope/", None).await.is_empty());
}

/// The whole suite against one store, which must start empty (its location fresh):
/// listings in key order and resumable, by prefix and by level, absent versus empty,
/// every write path with its checksums, multipart uploads, records, deletes.
pub async fn conformance(s: Arc<dyn Store>) {
    // Absent is not empty: a fresh location is Empty (a bucket prefix) or Missing (a
    // directory not created yet), and a missing directory does not list as empty.
    match s.preflight().await.expect("preflight") {
        Presence::Empty => assert!(list_all(s.as_ref(), None).await.is_empty()),
        Presence::Missing => {
            let mut l = s.list(None);
            let first = l.next().await.expect("an answer");
            assert_eq!(
                first.unwrap_err().kind(),
                ErrorKind::LocationNotFound,
                "{}",
                s.describe()
            );
            // Absent is not empty under a prefix or one level either.
            assert_eq!(
                first_error(s.list_prefix("a/", None)).await,
                ErrorKind::LocationNotFound
            );
            assert_eq!(
                first_error(s.list_level("", None)).await,
                ErrorKind::LocationNotFound
            );
            assert_eq!(
                first_error(s.list_level("a/", None)).await,
                ErrorKind::LocationNotFound
            );
        }
        Presence::NotEmpty => panic!("{}: a fresh location holds objects", s.describe()),
    }
    let rec = SourceRecord {
        etag: Some("abc123".into()),
        mtime_ms: Some(1_700_000_000_123),
        crc32: Some(0x1234_abcd),
        crc64: Some(0x0123_4567_89ab_cdef),
    };
    let opts = PutOptions {
        metadata: rec.to_metadata(),
        mtime_ms: rec.mtime_ms,
        ..Default::default()
    };
    // Keys chosen so that a naive directory walk would list them out of byte order.
    let keys = ["a-c", "a/b", "a/b0", "a0", "sp ace/ünï+cødé%20.txt", "z"];
    for (i, k) in keys.iter().enumerate() {
        let d = Bytes::from(data(100 + i, i as u64));
        let crc = crc32fast::hash(&d);
        s.put(k, d, crc, &opts)
            .await
            .unwrap_or_else(|e| panic!("put {k}: {e}"));
    }
    // Empty object.
    s.put("empty", Bytes::new(), crc32fast::hash(b""), &opts)
        .await
        .expect("put empty");

    // Listing: byte order, sizes, resumable with start_after.
    let listed = list_all(s.as_ref(), None).await;
    let mut want: Vec<(String, u64)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), 100 + i as u64))
        .collect();
    want.push(("empty".into(), 0));
    want.sort();
    assert_eq!(listed, want, "{}", s.describe());
    let after = list_all(s.as_ref(), Some("a/b")).await;
    assert_eq!(
        after,
        want[want.iter().position(|w| w.0 == "a/b").unwrap() + 1..].to_vec()
    );
    prefix_conformance(s.as_ref(), &want).await;

    // HEAD returns the recorded source version; a missing key is None.
    let h = s.head("a/b").await.expect("head").expect("exists");
    assert_eq!(h.size, 101);
    assert_eq!(h.record.as_ref(), Some(&rec));
    assert!(s.head("nope").await.expect("head missing").is_none());

    // Ranged reads.
    let full = data(101, 1);
    assert_eq!(
        &s.get_range("a/b", 0..101, None).await.unwrap()[..],
        &full[..]
    );
    assert_eq!(
        &s.get_range("a/b", 10..20, None).await.unwrap()[..],
        &full[10..20]
    );
    assert!(s.get_range("a/b", 0..0, None).await.unwrap().is_empty());

    // A wrong checksum is refused and nothing lands under the key.
    let d = Bytes::from(vec![7u8; 1000]);
    let err = s
        .put("bad", d.clone(), crc32fast::hash(&d) ^ 1, &opts)
        .await
        .unwrap_err();
    assert_kind(&*s, &err, ErrorKind::ChecksumMismatch);
    assert!(s.head("bad").await.unwrap().is_none());
    assert_eq!(s.preflight().await.unwrap(), Presence::NotEmpty);

    // Create-if-absent (the destination lease): refused when the key exists, and the
    // object is left as it was.
    let lease = Bytes::from_static(b"first");
    let once = PutOptions {
        if_none_match: true,
        ..Default::default()
    };
    s.put("cond", lease.clone(), crc32fast::hash(&lease), &once)
        .await
        .expect("created");
    let other = Bytes::from_static(b"second");
    refused_put(&*s, "cond", &other, &once).await;
    assert_eq!(
        &s.get_range("cond", 0..5, None).await.unwrap()[..],
        b"first"
    );
    // Overwrite only if unchanged, where the store has ETags.
    if let Some(etag) = s.head("cond").await.unwrap().unwrap().etag {
        let stale = PutOptions {
            if_match: Some("0123456789abcdef0123456789abcdef".into()),
            ..Default::default()
        };
        refused_put(&*s, "cond", &other, &stale).await;
        let fresh = PutOptions {
            if_match: Some(etag),
            ..Default::default()
        };
        s.put("cond", other.clone(), crc32fast::hash(&other), &fresh)
            .await
            .expect("overwrite with the current ETag");
        assert_eq!(
            &s.get_range("cond", 0..6, None).await.unwrap()[..],
            b"second"
        );
    }
    s.delete("cond").await.unwrap();

    // Multipart: parts of 5 MiB, completed atomically; listed while in progress.
    let big = data(11 << 20, 9);
    let id = s.create_multipart("mp/obj", &opts).await.expect("create");
    assert!(
        s.head("mp/obj").await.unwrap().is_none(),
        "no object before completion"
    );
    let pending = s.list_multipart_uploads().await.expect("list uploads");
    assert!(
        pending
            .iter()
            .any(|u| u.key == "mp/obj" && u.upload_id == id),
        "{pending:?}"
    );
    let mut parts = Vec::new();
    for (i, chunk) in big.chunks(5 << 20).enumerate() {
        let b = Bytes::copy_from_slice(chunk);
        let c = crc32fast::hash(&b);
        parts.push(
            s.upload_part(
                "mp/obj",
                &id,
                Part {
                    number: i as u32 + 1,
                    data: b,
                    crc32: c,
                },
            )
            .await
            .expect("part"),
        );
    }
    // A part with a wrong checksum is refused.
    let b = Bytes::from(vec![1u8; 5 << 20]);
    let e = s
        .upload_part(
            "mp/obj",
            &id,
            Part {
                number: 9,
                data: b.clone(),
                crc32: crc32fast::hash(&b) ^ 1,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{e:?}");
    assert!(
        pending.iter().all(|u| u.initiated_ms.is_some()),
        "{}: uploads carry their start time: {pending:?}",
        s.describe()
    );
    s.complete_multipart("mp/obj", &id, &parts, &opts)
        .await
        .expect("complete");
    // A HEAD confirms a completed upload from its parts (what a retried complete whose
    // first response was lost relies on), on every store that can: fs has no network.
    let head = s.head("mp/obj").await.unwrap().unwrap();
    if !s.describe().starts_with("file://") {
        assert_eq!(
            snapferry_engine::store::layer::confirms(&head, &parts, &opts),
            Ok(if head.crc64.is_some() {
                "CRC-64 of the parts"
            } else if head.crc32.is_some() {
                "CRC32 of the parts"
            } else {
                "ETag of the parts"
            }),
            "{}",
            s.describe()
        );
    }
    let got = s
        .get_range("mp/obj", 0..big.len() as u64, None)
        .await
        .unwrap();
    assert_eq!(md5_hex(&got), md5_hex(&big));
    assert_eq!(
        s.head("mp/obj").await.unwrap().unwrap().record.as_ref(),
        Some(&rec)
    );
    assert!(s.list_multipart_uploads().await.unwrap().is_empty());

    // Abort leaves nothing.
    let id = s.create_multipart("mp/aborted", &opts).await.unwrap();
    let b = Bytes::from(vec![3u8; 5 << 20]);
    s.upload_part(
        "mp/aborted",
        &id,
        Part {
            number: 1,
            data: b.clone(),
            crc32: crc32fast::hash(&b),
        },
    )
    .await
    .unwrap();
    s.abort_multipart("mp/aborted", &id).await.unwrap();
    assert!(s.list_multipart_uploads().await.unwrap().is_empty());
    assert!(s.head("mp/aborted").await.unwrap().is_none());

    // Delete, idempotent.
    s.delete("a/b").await.unwrap();
    s.delete("a/b").await.unwrap();
    assert!(s.head("a/b").await.unwrap().is_none());
    assert!(!list_all(s.as_ref(), None)
        .await
        .iter()
        .any(|(k, _)| k == "a/b"));
}

/// Absent is not empty: every listing of a bucket that does not exist fails so.
pub async fn missing_root(s: &dyn Store) {
    assert_eq!(
        first_error(s.list(None)).await,
        ErrorKind::LocationNotFound,
        "{}",
        s.describe()
    );
    assert_eq!(
        first_error(s.list_prefix("a/", None)).await,
        ErrorKind::LocationNotFound,
        "{}",
        s.describe()
    );
    assert_eq!(
        first_error(s.list_level("", None)).await,
        ErrorKind::LocationNotFound,
        "{}",
        s.describe()
    );
    assert_eq!(
        first_error(s.list_level("a/", None)).await,
        ErrorKind::LocationNotFound,
        "{}",
        s.describe()
    );
}
