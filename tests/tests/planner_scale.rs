//! The planner at a million keys: a repository cloned from the committed OpenSearch
//! fixture (fixtures/repos/clone.py: its indices under 24,600 ids, blobs hard-linked,
//! root rewritten) on file://. The planner holds a few shards' worth of state however
//! many there are; a no-op round against a destination snapferry committed costs a
//! handful of requests and reads no shard.

use std::path::Path;
use std::process::Command;

use testkit::*;

/// Units the planner may hold at once: its read-ahead, the unit whose keys pass, and
/// one being dropped.
const UNITS_BOUND: u64 = 10;

fn sync(src: &Path, dst: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let (report, stdout, _) = sync_snapshot_aware(src, dst, extra);
    (report, stdout)
}

#[test]
fn a_million_key_repository_is_planned_with_a_few_shards_of_state() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let made = clone_fixture("opensearch", &src, 8200);
    let blobs = made["blobs"].as_u64().unwrap();
    assert!(blobs >= 1_000_000, "{made}");

    // First round (dry run; nothing at the destination): every shard is planned, one at
    // a time, from one listing of the source.
    let (r, stdout) = sync(&src, &tmp.path().join("absent"), &["--dry-run"]);
    let s = &r["snapshot"];
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("copy ")).count() as u64,
        blobs,
        "{s}"
    );
    assert_eq!(s["planned_from"], "listing", "{s}");
    assert!(s["examined_units"].as_u64().unwrap() > 50_000, "{s}");
    assert!(
        s["planner_max_units_held"].as_u64().unwrap() <= UNITS_BOUND,
        "{s}"
    );
    assert!(
        s["planner_max_names_held"].as_u64().unwrap() <= 1_000,
        "{s}"
    );
    assert!(r["differ_max_held"].as_u64().unwrap() <= 2, "{r}");

    // A destination holding the same repository, committed by snapferry (its state
    // record names this very root): the no-op round reads no shard at all.
    let dst = tmp.path().join("dst");
    let st = Command::new("cp")
        .args(["-al"])
        .arg(&src)
        .arg(&dst)
        .status()
        .expect("cp -al");
    assert!(st.success());
    let latest = u64::from_be_bytes(
        std::fs::read(dst.join("index.latest")).unwrap()[..8]
            .try_into()
            .unwrap(),
    );
    let root = std::fs::read(dst.join(format!("index-{latest}"))).unwrap();
    std::fs::write(
        dst.join(".snapferry-state.json"),
        serde_json::json!({"format": 1, "generation": latest, "root_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&root)),
                           "source_generation": latest, "committed_ms": 0})
        .to_string(),
    )
    .unwrap();
    let (r, _) = sync(&src, &dst, &[]);
    let s = &r["snapshot"];
    assert_eq!(s["planned_from"], "metadata", "{s}");
    assert_eq!(s["examined_units"], 0, "{s}");
    assert!(s["unchanged_units"].as_u64().unwrap() > 50_000, "{s}");
    assert_eq!(r["copied_objects"], 0, "{r}");
    assert!(r["requests"]["list"].as_u64().unwrap() <= 5, "{r}");
    assert!(r["requests"]["get"].as_u64().unwrap() <= 20, "{r}");

    // Checking the whole destination lists each side once, still shard by shard.
    let (r, stdout) = sync(&src, &dst, &["--dry-run", "--verify-destination", "full"]);
    let s = &r["snapshot"];
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("copy ")).count(),
        0,
        "{s}"
    );
    assert_eq!(s["planned_from"], "listing", "{s}");
    assert!(
        s["planner_max_units_held"].as_u64().unwrap() <= UNITS_BOUND,
        "{s}"
    );
    let lists = r["requests"]["list"].as_u64().unwrap();
    assert!(
        lists <= 2 * blobs / 1000 + 10,
        "one listing per side: {lists} LISTs, {r}"
    );
}
