//! `snapferry migrate` between two real OpenSearch nodes, under live indexing:
//! baseline → incremental → cutover. Each cluster has an `fs` repository (the OpenSearch
//! S3 repository plugin is not on Maven Central), and each repository directory is served
//! by its own real S3 server (`rclone serve s3`): snapferry reads the source repository
//! and writes the destination's over S3 only.

use std::path::Path;

use serde_json::json;
use testkit::*;

fn index_docs(node: &SearchNode, index: &str, ids: std::ops::Range<u32>) {
    for i in ids {
        let (st, b) = node.call(
            "PUT",
            &format!("/{index}/_doc/{i}?refresh=true"),
            json!({"n": i, "msg": format!("doc {i}")}),
        );
        assert!(st == 200 || st == 201, "{b}");
    }
}

fn count(node: &SearchNode, index: &str) -> u64 {
    let (st, b) = node.call("GET", &format!("/{index}/_count"), serde_json::Value::Null);
    assert_eq!(st, 200, "{b}");
    b["count"].as_u64().unwrap()
}

/// Where snapferry reads/writes a repository: the directory itself, or bucket `repo` of an
/// S3 server that serves the directory's parent.
/// A side of the job whose snapferry store is the repository directory itself, or that
/// directory served over S3 by `s3`.
fn side(node: &SearchNode, name: &str, repo: &Path, s3: Option<&DirS3>) -> JobSide {
    let mut side = JobSide::fs(&node.endpoint, name, repo);
    if let Some(s) = s3 {
        side.lines = vec![
            format!(
                "store = \"s3://{}\"",
                repo.file_name().unwrap().to_string_lossy()
            ),
            format!("store_endpoint = \"{}\"", s.endpoint),
        ];
    }
    side
}

/// Writes the job file `path`: the indices matching `patterns`, from `src` to `dst`, each
/// repository read and written as its directory, or over S3 by the servers in `s3`.
fn job(
    path: &Path,
    src: &SearchNode,
    dst: &SearchNode,
    src_repo: &Path,
    dst_repo: &Path,
    patterns: &[&str],
    s3: Option<(&DirS3, &DirS3)>,
) {
    write_job(
        path,
        patterns,
        &side(src, "snapferry-src", src_repo, s3.map(|x| x.0)),
        &side(dst, "snapferry-dst", dst_repo, s3.map(|x| x.1)),
        "[copy]\nconcurrency = 4\n",
    );
}

fn migrate(job: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = snapferry();
    c.arg("migrate").arg(job).args(args);
    let out = run(c);
    let (so, se) = texts(&out);
    (out.status.code().unwrap_or(-1), so, se)
}

/// Runs `migrate` on `job` with `args`, which must succeed; returns its stdout.
fn migrated(job: &Path, args: &[&str]) -> String {
    let (code, so, se) = migrate(job, args);
    assert_eq!(code, 0, "{args:?}: {so}\n{se}");
    so
}

/// Runs the baseline phase of `job`, which must be refused with exit `code` and a single
/// line that says `says`.
fn baseline_refused(job: &Path, code: i32, says: &str) {
    let (got, _, se) = migrate(job, &["--phase", "baseline"]);
    assert_eq!(got, code, "{se}");
    assert!(se.contains(says) && se.lines().count() == 1, "{se}");
}

/// The HTTP status of a GET of `path` on `node`.
fn get_status(node: &SearchNode, path: &str) -> u16 {
    node.call("GET", path, serde_json::Value::Null).0
}

/// Writes `to`: the job file `from` with the first `old` replaced by `new`.
fn edited_job(from: &Path, to: &Path, old: &str, new: &str) {
    let text = std::fs::read_to_string(from).unwrap().replacen(old, new, 1);
    std::fs::write(to, text).unwrap();
}

#[test]
fn migrate_baseline_incremental_cutover_under_live_indexing() {
    let tmp = tempfile::tempdir().unwrap();
    let [(a, src), (b, dst)] = search_pair(tmp.path());
    // path.repo/s3/repo is each cluster's fs repository; path.repo/s3 is served over S3,
    // so the repository is bucket `repo` there.
    let (src_repo, dst_repo) = (a.join("s3/repo"), b.join("s3/repo"));
    std::fs::create_dir_all(&src_repo).unwrap();
    std::fs::create_dir_all(&dst_repo).unwrap();
    let src_s3 = DirS3::start(&a.join("s3"));
    let dst_s3 = DirS3::start(&b.join("s3"));
    index_docs(&src, "logs-1", 0..40);
    index_docs(&src, "logs-2", 0..20);
    index_docs(&src, "other", 0..5);
    // A job between the two clusters, each repository over S3.
    let job_over_s3 = |path: &Path, patterns: &[&str]| {
        job(
            path,
            &src,
            &dst,
            &src_repo,
            &dst_repo,
            patterns,
            Some((&src_s3, &dst_s3)),
        )
    };
    let job_file = tmp.path().join("job.toml");
    job_over_s3(&job_file, &["logs-*"]);

    // Bad input changes nothing: a pattern that matches nothing, an unreachable cluster.
    let bad = tmp.path().join("bad.toml");
    job_over_s3(&bad, &["nomatch-*"]);
    baseline_refused(&bad, 2, "matches no index");
    assert_eq!(
        get_status(&src, "/_snapshot/snapferry-src"),
        404,
        "a refused baseline must not register anything"
    );
    let dead = tmp.path().join("dead.toml");
    let closed = format!("http://127.0.0.1:{}", free_port());
    edited_job(&job_file, &dead, &dst.endpoint, &closed);
    baseline_refused(&dead, 3, "destination cluster");

    // A repository store that does not exist (no such bucket on the source S3 server).
    let nobucket = tmp.path().join("nobucket.toml");
    edited_job(
        &job_file,
        &nobucket,
        "store = \"s3://repo\"",
        "store = \"s3://no-such-bucket\"",
    );
    baseline_refused(&nobucket, 3, "no-such-bucket");
    assert_eq!(
        get_status(&src, "/_snapshot/snapferry-src"),
        404,
        "a refused baseline must not register anything"
    );
    assert!(std::fs::read_dir(&dst_repo).unwrap().next().is_none());

    // --dry-run prints the calls and changes nothing.
    let so = migrated(&job_file, &["--phase", "baseline", "--dry-run"]);
    assert!(
        so.contains("_restore") && so.contains("snapferry-src"),
        "{so}"
    );
    assert_eq!(get_status(&src, "/_snapshot/snapferry-src"), 404);
    // Secrets in repository_settings (Alibaba's `oss` type takes its keys there) and in
    // every cluster secret variable never reach the dry run, also with -vv.
    let secret_job = tmp.path().join("secret-job.toml");
    edited_job(
        &job_file,
        &secret_job,
        &format!("location = \"{}\" }}", dst_repo.display()),
        &format!(
            "location = \"{}\", access_key_id = \"LTAIkeyidSENTINEL\", secret_access_key = \"SENTINEL-SK\", security_token = \"SENTINEL-TOKEN\" }}",
            dst_repo.display()
        ),
    );
    let mut c = snapferry();
    c.arg("migrate")
        .arg(&secret_job)
        .args(["--phase", "baseline", "--dry-run", "-vv"]);
    for v in [
        "SNAPFERRY_SRC_CLUSTER_PASSWORD",
        "SNAPFERRY_DST_CLUSTER_PASSWORD",
        "SNAPFERRY_SRC_CLUSTER_API_KEY",
        "SNAPFERRY_DST_CLUSTER_SECRET_ACCESS_KEY",
    ] {
        c.env(v, "SENTINEL-ENV");
    }
    let out = run(c);
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert!(
        so.contains("secret_access_key") && so.contains("<redacted>"),
        "{so}"
    );
    assert!(
        so.contains("LTAI<redacted>"),
        "an access key id is shown masked: {so}"
    );
    assert!(
        !so.contains("SENTINEL") && !se.contains("SENTINEL"),
        "{so}{se}"
    );

    migrated(&job_file, &["--phase", "baseline"]);
    assert_eq!(count(&dst, "logs-1"), 40);
    assert_eq!(count(&dst, "logs-2"), 20);
    assert_eq!(get_status(&dst, "/other/_count"), 404, "not in the job");

    // Live indexing between phases: new documents and a deletion.
    index_docs(&src, "logs-1", 40..55);
    let (st, bdy) = src.call(
        "DELETE",
        "/logs-2/_doc/3?refresh=true",
        serde_json::Value::Null,
    );
    assert_eq!(st, 200, "{bdy}");
    migrated(&job_file, &["--phase", "incremental"]);
    assert_eq!(count(&dst, "logs-1"), 55);
    assert_eq!(count(&dst, "logs-2"), 19);
    assert_eq!(
        get_status(&dst, "/logs-2/_doc/3"),
        404,
        "deleted on the source, gone on the destination"
    );

    // Cutover requires writes stopped.
    index_docs(&src, "logs-2", 100..110);
    let (code, _, se) = migrate(&job_file, &["--phase", "cutover"]);
    assert_eq!(code, 2, "{se}");
    assert!(se.contains("index.blocks.write"), "{se}");
    let so = migrated(&job_file, &["--phase", "cutover", "--set-write-block"]);
    assert!(
        so.contains("switchover checklist") && so.contains("destination repository verified"),
        "{so}"
    );
    assert_eq!(count(&dst, "logs-1"), count(&src, "logs-1"));
    assert_eq!(count(&dst, "logs-2"), 29);
    let so = migrated(&job_file, &["--phase", "status"]);
    assert_eq!(so.lines().count(), 3, "{so}");
    assert!(
        so.contains("Baseline") && so.contains("Incremental") && so.contains("Cutover"),
        "{so}"
    );
}

#[test]
fn migrate_refuses_opensearch_to_elasticsearch_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let src = SearchNode::start(&a);
    let dst = SearchNode::start_home(&engine_home("elasticsearch"), &b);
    index_docs(&src, "logs-1", 0..3);
    let job_file = tmp.path().join("job.toml");
    job(
        &job_file,
        &src,
        &dst,
        &a.join("repo"),
        &b.join("repo"),
        &["logs-*"],
        None,
    );
    baseline_refused(&job_file, 2, "cannot be restored into Elasticsearch");
    assert_eq!(get_status(&src, "/_snapshot/snapferry-src"), 404);
    assert!(!b.join("repo").exists());
}
