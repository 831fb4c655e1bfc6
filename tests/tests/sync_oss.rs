//! `snapferry sync s3://… oss://…` through the signature-verifying OSS gateway (the
//! official Python SDK checks every request's V4 signature), and back.

use std::process::Command;

use serde_json::json;
use testkit::*;

const MIB: usize = 1 << 20;
const SMALL_PARTS: [&str; 4] = ["--multipart-threshold", "8MiB", "--part-size", "5MiB"];

/// Runs `cmd`, which must exit with `code` and say `text` on stderr.
fn fails_with(cmd: Command, code: i32, text: &str) {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(code), "{:?}", texts(&out));
    assert!(texts(&out).1.contains(text), "{:?}", texts(&out));
}

/// A sync from MinIO to the gateway, with the OSS credentials for the destination.
fn to_oss(s3: &Minio, gw: &OssGateway, src: &str, dst: &str) -> Command {
    let mut c = snapferry();
    c.args([
        "sync",
        src,
        dst,
        "--src-endpoint",
        &s3.endpoint,
        "--dst-endpoint",
        &gw.endpoint,
        "--progress",
        "never",
    ])
    .env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
    .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK);
    c
}

fn assert_gateway_holds(
    gw: &OssGateway,
    bucket: &str,
    prefix: &str,
    objects: &[(String, Vec<u8>)],
) {
    let mut want: Vec<String> = objects
        .iter()
        .map(|(k, _)| format!("{prefix}{k}"))
        .collect();
    want.sort();
    assert_eq!(gw.keys(bucket), want);
    for (k, d) in objects {
        let got = gw
            .object(bucket, &format!("{prefix}{k}"))
            .unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(got.len(), d.len(), "{k}: length");
        assert_eq!(md5_hex(&got), md5_hex(d), "{k}: bytes differ");
    }
}

fn mixed_set() -> Vec<(String, Vec<u8>)> {
    [
        ("empty", 0),
        ("one-byte", 1),
        ("under-threshold", 8 * MIB - 1),
        ("at-threshold", 8 * MIB),
        ("over-threshold", 8 * MIB + 1),
        ("big-40MiB", 40 * MIB),
        ("dir with spaces/file name.dat", 1000),
        ("unicode/ünïcødé-文件-😀.bin", 4096),
        ("plus+sign/a+b=c&d%20.dat", 77),
        ("index.latest", 8),
    ]
    .iter()
    .enumerate()
    .map(|(i, (k, n))| (k.to_string(), data(*n, 100 + i as u64)))
    .collect()
}

#[test]
fn sync_s3_to_oss_is_byte_identical_idempotent_and_back() {
    let s3 = Minio::start();
    let gw = OssGateway::start(&["dst"]);
    let c = s3.client();
    let rt = rt();
    let objects = mixed_set();
    rt.block_on(async {
        create_bucket(&c, "src").await;
        create_bucket(&c, "back").await;
        for (k, d) in &objects {
            put(&c, "src", &format!("repo/{k}"), d.clone()).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (out, r) =
        run_reported(to_oss(&s3, &gw, "s3://src/repo", "oss://dst/snapshots").args(SMALL_PARTS));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(r["copied_objects"], objects.len());
    assert_eq!(r["failed_objects"], 0);
    assert!(r["requests"]["upload_part"].as_u64().unwrap() > 0);
    assert_gateway_holds(&gw, "dst", "snapshots/", &objects);
    assert_eq!(gw.stats()["signature_failures"], 0);

    // Idempotent: nothing moves, and single-part objects are decided from listings.
    let (out, r) =
        run_reported(to_oss(&s3, &gw, "s3://src/repo", "oss://dst/snapshots").args(SMALL_PARTS));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(r["copied_objects"], 0);
    assert_eq!(r["skipped_objects"], objects.len());
    // Repository detection (index.latest and the root it names), at most one per
    // multipart object, and the destination lease's.
    assert!(
        r["requests"]["head"].as_u64().unwrap() <= 4 + LEASE_HEADS,
        "{}",
        r["requests"]
    );

    // A same-size rewrite in the same second is caught by the recorded source version.
    rt.block_on(put(
        &c,
        "src",
        "repo/index.latest",
        vec![0, 0, 0, 0, 0, 0, 0, 7],
    ));
    let r3 = dir.path().join("r3.json");
    let out = {
        let mut cmd = to_oss(&s3, &gw, "s3://src/repo", "oss://dst/snapshots");
        cmd.args(SMALL_PARTS).arg("--report").arg(&r3);
        run(cmd)
    };
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(read_report(&r3)["copied_objects"], 1);
    assert_eq!(
        gw.object("dst", "snapshots/index.latest").unwrap(),
        [0, 0, 0, 0, 0, 0, 0, 7]
    );

    // And back: OSS as the source, into a second S3 bucket, compared with the original.
    let mut cmd = snapferry();
    cmd.args([
        "sync",
        "oss://dst/snapshots",
        "s3://back/repo",
        "--src-endpoint",
        &gw.endpoint,
        "--dst-endpoint",
        &s3.endpoint,
    ])
    .args(SMALL_PARTS)
    .env("ALIBABA_CLOUD_ACCESS_KEY_ID", OSS_AK)
    .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", OSS_SK)
    .env_remove("SNAPFERRY_SRC_ACCESS_KEY_ID")
    .env_remove("SNAPFERRY_SRC_SECRET_ACCESS_KEY");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    rt.block_on(assert_identical(&c, "src", "repo/", &c, "back", "repo/"));
    assert_eq!(gw.stats()["signature_failures"], 0);
}

#[test]
fn sync_to_oss_killed_mid_upload_then_rerun_is_identical_with_no_uploads_left() {
    let s3 = Minio::start();
    let gw = OssGateway::start(&["dst"]);
    let c = s3.client();
    let rt = rt();
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("indices/x/0/__big".into(), data(40 * MIB, 5)),
        ("index-2".into(), data(500, 6)),
    ];
    rt.block_on(async {
        create_bucket(&c, "src").await;
        for (k, d) in &objects {
            put(&c, "src", k, d.clone()).await;
        }
    });
    let mut child = {
        let mut cmd = to_oss(&s3, &gw, "s3://src", "oss://dst/repo");
        cmd.args(SMALL_PARTS)
            .args(["--bwlimit", "8MiB/s", "--concurrency", "2"]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().unwrap()
    };
    kill_at_first_upload(&mut child, || !gw.uploads("dst").is_empty());
    assert_eq!(gw.uploads("dst"), ["repo/indices/x/0/__big"]);
    assert!(
        gw.object("dst", "repo/indices/x/0/__big").is_none(),
        "no partial object under the key"
    );

    let (out, r) = run_reported(to_oss(&s3, &gw, "s3://src", "oss://dst/repo").args(SMALL_PARTS));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    // Continued (its resume record was written) or, killed before that, aborted as stale.
    assert_eq!(
        r["aborted_stale_uploads"].as_u64().unwrap() + r["resumed_uploads"].as_u64().unwrap(),
        1,
        "{r}"
    );
    assert_gateway_holds(&gw, "dst", "repo/", &objects);
    assert!(gw.uploads("dst").is_empty(), "an upload was left behind");
}

#[test]
fn sync_to_oss_survives_throttling_skew_server_errors_resets_and_bad_part_crcs() {
    let s3 = Minio::start();
    // The gateway's clock runs an hour ahead: every first request is RequestTimeTooSkewed
    // until snapferry learns the offset from the server's Date.
    let gw = OssGateway::start_with(&["dst"], &["--clock-offset", "3600"]);
    let c = s3.client();
    let rt = rt();
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("big".into(), data(12 * MIB, 1)),
        ("small".into(), data(3000, 2)),
        ("other".into(), data(10, 3)),
    ];
    rt.block_on(async {
        create_bucket(&c, "src").await;
        for (k, d) in &objects {
            put(&c, "src", k, d.clone()).await;
        }
    });
    gw.faults(json!([
        {"op": "UploadPart", "kind": "throttle", "count": 3},
        {"op": "PutObject", "kind": "throttle", "count": 2},
        {"op": "UploadPart", "kind": "bad-crc", "count": 1},
        {"op": "PutObject", "kind": "server-error", "count": 1},
        {"op": "InitiateMultipartUpload", "kind": "skew", "count": 1},
        {"op": "CompleteMultipartUpload", "kind": "server-error", "count": 1},
        {"op": "UploadPart", "kind": "reset", "count": 1, "skip": 1},
    ]));
    let (out, r) = run_reported(to_oss(&s3, &gw, "s3://src", "oss://dst").args(SMALL_PARTS));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(r["copied_objects"], objects.len());
    assert!(
        r["retries"].as_u64().unwrap() >= 9,
        "retries: {}",
        r["retries"]
    );
    assert_gateway_holds(&gw, "dst", "", &objects);
    let st = gw.stats();
    for kind in ["throttle", "bad-crc", "server-error", "skew", "reset"] {
        assert!(
            st["faults_injected"][kind].as_u64().unwrap_or(0) >= 1,
            "{kind} was not injected: {st}"
        );
    }
    assert!(gw.uploads("dst").is_empty());
}

#[test]
fn crc_mismatch_is_never_reported_copied() {
    let s3 = Minio::start();
    let gw = OssGateway::start(&["dst"]);
    let c = s3.client();
    let rt = rt();
    rt.block_on(async {
        create_bucket(&c, "src").await;
        put(&c, "src", "corrupt-me", data(5000, 1)).await;
        put(&c, "src", "big-corrupt", data(11 * MIB, 2)).await;
        put(&c, "src", "fine", data(100, 3)).await;
    });
    // The gateway stores a flipped byte (and honestly reports its CRC) every time.
    gw.faults(json!([
        {"op": "PutObject", "kind": "corrupt", "count": 1000, "key_contains": "corrupt-me"},
        {"op": "UploadPart", "kind": "corrupt", "count": 1000, "key_contains": "big-corrupt"},
    ]));
    let (out, r) = run_reported(to_oss(&s3, &gw, "s3://src", "oss://dst").args(SMALL_PARTS));
    let (_, se) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert_eq!(r["copied_objects"], 1);
    assert_eq!(r["failed_objects"], 2);
    let failures = r["failures"].as_array().unwrap();
    let keys: Vec<&str> = failures
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"corrupt-me") && keys.contains(&"big-corrupt"),
        "{failures:?}"
    );
    for f in failures {
        assert!(f["reason"].as_str().unwrap().contains("CRC-64"), "{f}");
    }
    assert!(se.contains("corrupt-me"), "{se}");
    // The multipart one was aborted, never completed.
    assert!(gw.uploads("dst").is_empty());
    assert!(gw.object("dst", "big-corrupt").is_none());
}

#[test]
fn oss_bad_credentials_and_endpoints_get_one_clear_line() {
    let s3 = Minio::start();
    let gw = OssGateway::start(&["dst"]);
    rt().block_on(create_bucket(&s3.client(), "src"));
    // Wrong secret: the SDK-verified signature does not match; exit 3, secret not shown.
    let mut cmd = to_oss(&s3, &gw, "s3://src", "oss://dst");
    cmd.env("SNAPFERRY_DST_SECRET_ACCESS_KEY", "WRONG-oss-SENTINEL");
    let out = run(cmd);
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    assert!(
        se.contains("SignatureDoesNotMatch") && se.contains("destination"),
        "{se}"
    );
    assert!(!se.contains("SENTINEL") && !so.contains("SENTINEL"));
    assert_eq!(se.lines().count(), 1, "{se}");
    // Missing bucket: exit 3.
    fails_with(
        to_oss(&s3, &gw, "s3://src", "oss://nosuch"),
        3,
        "does not exist",
    );
    // No credentials at all for oss://: exit 2 naming the variables.
    let mut cmd = to_oss(&s3, &gw, "s3://src", "oss://dst");
    cmd.env_remove("SNAPFERRY_DST_ACCESS_KEY_ID")
        .env_remove("SNAPFERRY_DST_SECRET_ACCESS_KEY");
    fails_with(cmd, 2, "ALIBABA_CLOUD_ACCESS_KEY_ID");
    // A sync to oss://dst with the gateway's keys, but not its endpoint.
    let to_oss_dst = |extra: &[&str]| {
        let mut c = snapferry();
        c.args(["sync", "s3://src", "oss://dst"])
            .args(["--src-endpoint", &s3.endpoint])
            .args(extra)
            .env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
            .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK);
        c
    };
    // The S3-compatible endpoint with oss:// is pointed at s3://.
    fails_with(
        to_oss_dst(&["--dst-endpoint", "s3.oss-cn-hangzhou.aliyuncs.com"]),
        2,
        "S3-compatible",
    );
    // oss:// with neither endpoint nor region.
    fails_with(to_oss_dst(&[]), 2, "--dst-endpoint");
    assert_eq!(gw.keys("dst"), Vec::<String>::new(), "nothing written");
}
