//! `snapferry migrate` against a real Elasticsearch with security on (the 7.17 integ-test
//! zip carries x-pack-security; the node gets a file-realm superuser): the right password
//! passes preflight, a wrong one on either side ends with one line and changes nothing,
//! and the password never appears in any output.

use std::path::Path;

use serde_json::{json, Value};
use testkit::*;

const USER: &str = "snapferry-admin";
const PASSWORD: &str = "right-horse-battery-7";
const WRONG: &str = "wrong-password-31337";

fn job_file(path: &Path, node: &SearchNode, src_repo: &Path, dst_repo: &Path) {
    let user = format!("user = \"{USER}\"");
    write_job(
        path,
        &["logs-*"],
        &JobSide::fs(&node.endpoint, "snapferry-src", src_repo).line(&user),
        &JobSide::fs(&node.endpoint, "snapferry-dst", dst_repo).line(&user),
        "",
    );
}

fn migrate(job: &Path, src_pw: &str, dst_pw: &str, args: &[&str]) -> (i32, String, String) {
    let mut c = snapferry();
    c.arg("migrate")
        .arg(job)
        .args(args)
        .env("SNAPFERRY_SRC_CLUSTER_PASSWORD", src_pw)
        .env("SNAPFERRY_DST_CLUSTER_PASSWORD", dst_pw);
    let out = run(c);
    let (so, se) = texts(&out);
    assert!(
        !so.contains(PASSWORD)
            && !se.contains(PASSWORD)
            && !so.contains(WRONG)
            && !se.contains(WRONG),
        "a password was printed:\n{so}\n{se}"
    );
    (out.status.code().unwrap_or(-1), so, se)
}

/// Everything a migration could change: repositories, snapshots' target dirs, indices.
fn cluster_state(node: &SearchNode, repos: &[&Path]) -> (Value, Value, Vec<bool>) {
    let (st, r) = node.call("GET", "/_snapshot", Value::Null);
    assert_eq!(st, 200, "{r}");
    let (st, i) = node.call(
        "GET",
        "/_cat/indices?format=json&h=index,docs.count",
        Value::Null,
    );
    assert_eq!(st, 200, "{i}");
    let dirs = repos
        .iter()
        .map(|p| p.exists() && std::fs::read_dir(p).unwrap().next().is_some())
        .collect();
    (r, i, dirs)
}

#[test]
fn wrong_password_changes_nothing_and_the_right_one_passes_preflight() {
    let tmp = tempfile::tempdir().unwrap();
    let path_repo = tmp.path().join("repos");
    std::fs::create_dir_all(&path_repo).unwrap();
    let node = SearchNode::start_secured(&engine_home("elasticsearch"), &path_repo, USER, PASSWORD);
    // Security is really on: no credentials, no answer.
    let (st, _) = http(&node.endpoint, "GET", "/", b"");
    assert_eq!(st, 401, "the node must demand credentials");
    for i in 0..5 {
        let (st, b) = node.call(
            "PUT",
            &format!("/logs-1/_doc/{i}?refresh=true"),
            json!({ "n": i }),
        );
        assert!(st == 200 || st == 201, "{b}");
    }
    let (src_repo, dst_repo) = (path_repo.join("src"), path_repo.join("dst"));
    let job = tmp.path().join("job.toml");
    job_file(&job, &node, &src_repo, &dst_repo);
    let before = cluster_state(&node, &[&src_repo, &dst_repo]);

    let (code, _, se) = migrate(&job, WRONG, PASSWORD, &["--phase", "baseline"]);
    assert_eq!(code, 3, "{se}");
    assert_eq!(se.lines().count(), 1, "{se}");
    assert!(
        se.contains("source cluster") && se.contains("password"),
        "{se}"
    );
    assert_eq!(cluster_state(&node, &[&src_repo, &dst_repo]), before);

    let (code, _, se) = migrate(&job, PASSWORD, WRONG, &["--phase", "baseline"]);
    assert_eq!(code, 3, "{se}");
    assert_eq!(se.lines().count(), 1, "{se}");
    assert!(
        se.contains("destination cluster") && se.contains("password"),
        "{se}"
    );
    assert_eq!(cluster_state(&node, &[&src_repo, &dst_repo]), before);

    // The right password: preflight passes (version, indices, running snapshots) and the
    // dry run lists the calls; still nothing changes.
    let (code, so, se) = migrate(
        &job,
        PASSWORD,
        PASSWORD,
        &["--phase", "baseline", "--dry-run"],
    );
    assert_eq!(code, 0, "{so}\n{se}");
    assert!(so.contains("logs-1") && so.contains("_restore"), "{so}");
    assert_eq!(cluster_state(&node, &[&src_repo, &dst_repo]), before);
}
