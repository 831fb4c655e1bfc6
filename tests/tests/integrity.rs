//! A destination object that holds other bytes than its copy record says were written
//! (a repair that failed, bit rot, a hand edit that kept the metadata) is copied again:
//! single PUTs record the CRC32 and CRC-64 of their content, and the HEAD a rerun makes
//! anyway returns the checksum the store holds for the object (S3's CRC32, OSS's CRC-64).

use std::process::Command;

use bytes::Bytes;
use snapferry_engine::store::{PutOptions, Store};
use testkit::*;

fn source() -> (Minio, Vec<(String, Vec<u8>)>) {
    let m = Minio::start();
    let objs: Vec<(String, Vec<u8>)> = [("a", 1000), ("b", 5000)]
        .iter()
        .enumerate()
        .map(|(i, (k, n))| (k.to_string(), data(*n, 500 + i as u64)))
        .collect();
    let c = m.client();
    rt().block_on(async {
        create_bucket(&c, "src").await;
        for (k, d) in &objs {
            put(&c, "src", k, d.clone()).await;
        }
    });
    (m, objs)
}

fn sync_report(mut c: Command, dir: &std::path::Path, n: u32) -> serde_json::Value {
    let report = dir.join(format!("r{n}.json"));
    c.arg(format!("--report={}", report.display()))
        .args(["--progress", "never"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    read_report(&report)
}

/// The same length, other bytes.
fn tampered(d: &[u8]) -> Vec<u8> {
    let mut t = d.to_vec();
    t[d.len() / 2] ^= 0x40;
    t
}

#[test]
fn s3_destination_bytes_that_disagree_with_their_record_are_copied_again() {
    let (src, objs) = source();
    let dst = Minio::start();
    let dc = dst.client();
    let tmp = tempfile::tempdir().unwrap();
    rt().block_on(create_bucket(&dc, "dst"));
    let run = |n| {
        let mut c = snapferry();
        c.args([
            "sync",
            "s3://src",
            "s3://dst",
            "--src-endpoint",
            &src.endpoint,
            "--dst-endpoint",
            &dst.endpoint,
        ]);
        sync_report(c, tmp.path(), n)
    };
    assert_eq!(run(1)["copied_objects"], 2);
    // Other bytes under "a", with exactly the metadata snapferry wrote (its copy record
    // and content checksums): only the store's own checksum tells them apart.
    rt().block_on(async {
        let h = dc
            .head_object()
            .bucket("dst")
            .key("a")
            .send()
            .await
            .unwrap();
        let meta = h.metadata().cloned().unwrap_or_default();
        assert!(meta.contains_key("snapferry-crc32"), "{meta:?}");
        dc.put_object()
            .bucket("dst")
            .key("a")
            .set_metadata(Some(meta))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
            .body(tampered(&objs[0].1).into())
            .send()
            .await
            .unwrap();
    });
    let r = run(2);
    assert_eq!(
        (r["copied_objects"].as_u64(), r["skipped_objects"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    rt().block_on(assert_identical(&src.client(), "src", "", &dc, "dst", ""));
    assert_eq!(run(3)["copied_objects"], 0, "then in sync");
}

#[test]
fn oss_destination_bytes_that_disagree_with_their_record_are_copied_again() {
    let (src, objs) = source();
    let gw = OssGateway::start(&["dst"]);
    let tmp = tempfile::tempdir().unwrap();
    let run = |n| {
        let mut c = snapferry();
        c.args([
            "sync",
            "s3://src",
            "oss://dst",
            "--src-endpoint",
            &src.endpoint,
            "--dst-endpoint",
            &gw.endpoint,
        ])
        .env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
        .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK);
        sync_report(c, tmp.path(), n)
    };
    assert_eq!(run(1)["copied_objects"], 2);
    let oss = gw.store("dst", "");
    rt().block_on(async {
        let held = oss.head("a").await.unwrap().expect("a copied");
        let rec = held.record.expect("a copy record");
        assert!(rec.crc64.is_some() && rec.crc32.is_some(), "{rec:?}");
        let bytes = tampered(&objs[0].1);
        let crc = crc32fast::hash(&bytes);
        let opts = PutOptions {
            metadata: rec.to_metadata(),
            ..Default::default()
        };
        oss.put("a", Bytes::from(bytes), crc, &opts).await.unwrap();
    });
    let r = run(2);
    assert_eq!(
        (r["copied_objects"].as_u64(), r["skipped_objects"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    for (k, d) in &objs {
        assert_eq!(
            sha256_hex(&gw.object("dst", k).unwrap()),
            sha256_hex(d),
            "{k}"
        );
    }
    assert_eq!(run(3)["copied_objects"], 0, "then in sync");
}
