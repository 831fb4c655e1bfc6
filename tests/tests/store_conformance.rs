//! One conformance suite for the `Store` trait, run against every backend: `fs` on a
//! temp directory, `s3` on a real MinIO server (in both checksum modes), and `oss` on the
//! signature-verifying OSS gateway.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use snapferry_e2e::*;
use snapferry_engine::error::ErrorKind;
use snapferry_engine::store::fs::FsStore;
use snapferry_engine::store::oss::sign::OssCredentials;
use snapferry_engine::store::oss::{Endpoint, OssConfig, OssStore};
use snapferry_engine::store::s3::{S3Config, S3Store, StaticCredentials};
use snapferry_engine::store::{Presence, PutOptions, SourceRecord, Store};

async fn list_all(s: &dyn Store, after: Option<&str>) -> Vec<(String, u64)> {
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

async fn conformance(s: Arc<dyn Store>) {
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
    assert_eq!(
        err.kind(),
        ErrorKind::ChecksumMismatch,
        "{}: {err:?}",
        s.describe()
    );
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
    let e = s
        .put("cond", other.clone(), crc32fast::hash(&other), &once)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::PreconditionFailed,
        "{}: {e:?}",
        s.describe()
    );
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
        let e = s
            .put("cond", other.clone(), crc32fast::hash(&other), &stale)
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::PreconditionFailed,
            "{}: {e:?}",
            s.describe()
        );
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
            s.upload_part("mp/obj", &id, i as u32 + 1, b, c)
                .await
                .expect("part"),
        );
    }
    // A part with a wrong checksum is refused.
    let b = Bytes::from(vec![1u8; 5 << 20]);
    let e = s
        .upload_part("mp/obj", &id, 9, b.clone(), crc32fast::hash(&b) ^ 1)
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
    s.upload_part("mp/aborted", &id, 1, b.clone(), crc32fast::hash(&b))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(FsStore::new(dir.path().join("root")))).await;
}

async fn s3_conformance(content_md5: bool) {
    let m = Minio::start();
    create_bucket(&m.client(), "conf").await;
    let s = S3Store::connect(S3Config {
        bucket: "conf".into(),
        prefix: "some/prefix/".into(),
        endpoint: Some(m.endpoint.clone()),
        region: None,
        profile: None,
        credentials: Some(StaticCredentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
        }),
        content_md5,
        io_timeout: None,
        verify_source: Default::default(),
    })
    .await
    .unwrap();
    conformance(Arc::new(s)).await;
    // The prefix isolates: nothing outside it was touched.
    let all = keys(&m.client(), "conf", "").await;
    assert!(all.iter().all(|k| k.starts_with("some/prefix/")), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms() {
    s3_conformance(false).await;
}

/// The mode used for OSS's S3-compatible endpoint: Content-MD5 instead of checksum headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_in_content_md5_mode() {
    s3_conformance(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oss_store_conforms() {
    let gw = OssGateway::start(&["conf"]);
    let s = OssStore::new(OssConfig {
        bucket: "conf".into(),
        prefix: "some/prefix/".into(),
        endpoint: Endpoint::parse(&gw.endpoint, Some("cn-hangzhou")).unwrap(),
        credentials: OssCredentials {
            access_key_id: OSS_AK.into(),
            access_key_secret: OSS_SK.into(),
            security_token: None,
        }
        .into(),
        io_timeout: None,
        verify_source: Default::default(),
    })
    .unwrap();
    conformance(Arc::new(s)).await;
    assert!(gw
        .keys("conf")
        .iter()
        .all(|k| k.starts_with("some/prefix/")));
    assert_eq!(gw.stats()["signature_failures"], 0);
}
