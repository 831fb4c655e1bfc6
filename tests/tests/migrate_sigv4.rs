//! `snapferry migrate` with `auth = "sigv4"`: the source cluster (a real OpenSearch) sits
//! behind a proxy that checks every request's SigV4 signature with botocore the way
//! Amazon's service does (service `es`, payload hash signed) and forwards only the ones
//! that verify. A whole baseline runs through it; a wrong secret ends with one line,
//! exit 3, and changes nothing.

use std::path::Path;

use serde_json::{json, Value};
use testkit::*;

const AK: &str = "AKIDSNAPFERRYTEST01";
const SK: &str = "sigv4-proxy-secret/0123456789abcdefABCDEF";

fn job_file(path: &Path, src_url: &str, dst: &SearchNode, src_repo: &Path, dst_repo: &Path) {
    write_job(
        path,
        &["logs-*"],
        &JobSide::fs(src_url, "snapferry-src", src_repo)
            .line("auth = \"sigv4\"")
            .line("aws_region = \"us-west-2\""),
        &JobSide::fs(&dst.endpoint, "snapferry-dst", dst_repo),
        "",
    );
}

fn migrate(job: &Path, secret: &str) -> (i32, String, String) {
    let mut c = snapferry();
    c.arg("migrate")
        .arg(job)
        .args(["--phase", "baseline"])
        .env("SNAPFERRY_SRC_CLUSTER_ACCESS_KEY_ID", AK)
        .env("SNAPFERRY_SRC_CLUSTER_SECRET_ACCESS_KEY", secret);
    let out = run(c);
    let (so, se) = texts(&out);
    assert!(
        !so.contains(secret) && !se.contains(secret),
        "a secret was printed:\n{so}\n{se}"
    );
    (out.status.code().unwrap_or(-1), so, se)
}

#[test]
fn sigv4_signed_baseline_through_a_verifying_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let [(a, src), (b, dst)] = search_pair(tmp.path());
    let proxy = SigV4Proxy::start(&src.endpoint, AK, SK, "us-west-2");
    // The proxy really refuses what is not signed.
    let (st, _) = http(&proxy.endpoint, "GET", "/", b"");
    assert_eq!(st, 403, "an unsigned request must be refused");
    for i in 0..12 {
        let (st, body) = src.call(
            "PUT",
            &format!("/logs-1/_doc/{i}?refresh=true"),
            json!({ "n": i }),
        );
        assert!(st == 200 || st == 201, "{body}");
    }
    let job = tmp.path().join("job.toml");
    job_file(
        &job,
        &proxy.endpoint,
        &dst,
        &a.join("repo"),
        &b.join("repo"),
    );

    // A wrong secret: one line, exit 3, nothing registered or written anywhere.
    let (_, rejected_before) = proxy.stats();
    let (code, _, se) = migrate(&job, "not-the-secret-000000000000000000000000");
    assert_eq!(code, 3, "{se}");
    assert_eq!(se.lines().count(), 1, "{se}");
    assert!(se.contains("source cluster"), "{se}");
    assert!(
        proxy.stats().1 > rejected_before,
        "the proxy saw the bad signature"
    );
    assert_eq!(src.call("GET", "/_snapshot", Value::Null).1, json!({}));
    assert_eq!(dst.call("GET", "/_snapshot", Value::Null).1, json!({}));
    assert!(!b.join("repo").exists());

    // The right secret: every source call is signed, verified and forwarded.
    let (_, rejected) = proxy.stats();
    let (code, so, se) = migrate(&job, SK);
    assert_eq!(code, 0, "{so}\n{se}");
    let (verified, rejected_after) = proxy.stats();
    assert_eq!(
        rejected_after, rejected,
        "no request of the good run was refused"
    );
    assert!(
        verified >= 6,
        "version, indices, status, repository, snapshot, counts: {verified}"
    );
    let (st, c) = dst.call("GET", "/logs-1/_count", Value::Null);
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["count"], 12);
}
