//! The metadata planner against a repository a real OpenSearch builds in rounds: after
//! each round its plan is exactly the full-listing planner's (no more, no fewer blobs),
//! the copy verifies deeply and restores with the source's counts; a destination root
//! snapferry did not write is planned from a full listing, with one line saying so; and
//! `--verify-destination full` finds a blob lost outside snapferry that the default
//! trusts.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use testkit::*;

/// The keys a dry run plans to copy (its `copy KEY (size): reason` lines).
fn planned(src: &Path, dst: &Path, extra: &[&str]) -> (BTreeSet<String>, serde_json::Value) {
    let args: Vec<&str> = ["--dry-run"].iter().chain(extra).copied().collect();
    let (report, stdout, _) = sync_snapshot_aware(src, dst, &args);
    let keys: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("copy   "))
        .filter_map(|l| l.split(" (").next())
        .map(str::to_string)
        .collect();
    let set: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(set.len(), keys.len(), "a key planned twice: {keys:?}");
    (set, report)
}

fn sync(src: &Path, dst: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let (report, _, stderr) = sync_snapshot_aware(src, dst, extra);
    (report, stderr)
}

fn verify_deep(dst: &Path) {
    let mut c = snapferry();
    c.args(["repo", "verify", dst.to_str().unwrap(), "--deep", "--json"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify JSON");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
}

fn ok(node: &SearchNode, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (st, b) = node.call(method, path, body);
    assert!((200..300).contains(&st), "{method} {path}: {st} {b}");
    b
}

/// One `_bulk` request (NDJSON), refreshed; every item must succeed.
fn bulk(node: &SearchNode, body: &str) {
    let (st, b) = http_request(
        &node.endpoint,
        "POST",
        "/_bulk?refresh=true",
        body.as_bytes(),
        None,
    );
    let b: serde_json::Value = serde_json::from_slice(&b).expect("bulk answer");
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["errors"], false, "{b}");
}

fn index_docs(node: &SearchNode, index: &str, from: u32, to: u32) {
    let mut body = String::new();
    for i in from..to {
        body.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{i}\"}}}}\n"
        ));
        body.push_str(&format!(
            "{{\"n\":{i},\"text\":\"document number {i} of {index}\"}}\n"
        ));
    }
    bulk(node, &body);
}

/// Deletes documents by id (the integration-test distribution has no delete-by-query).
fn delete_docs(node: &SearchNode, index: &str, from: u32, to: u32) {
    let body: String = (from..to)
        .map(|i| format!("{{\"delete\":{{\"_index\":\"{index}\",\"_id\":\"{i}\"}}}}\n"))
        .collect();
    bulk(node, &body);
}

fn count(node: &SearchNode, index: &str) -> u64 {
    ok(node, "POST", &format!("/{index}/_refresh"), json!(null));
    ok(node, "GET", &format!("/{index}/_count"), json!(null))["count"]
        .as_u64()
        .unwrap()
}

fn snapshot(node: &SearchNode, name: &str, indices: &str) {
    let b = ok(
        node,
        "PUT",
        &format!("/_snapshot/src/{name}?wait_for_completion=true"),
        json!({"indices": indices, "include_global_state": false}),
    );
    assert_eq!(b["snapshot"]["state"], "SUCCESS", "{b}");
}

/// Restores every snapshot of the copied repository (registered afresh, read-only) and
/// compares each index's count with what the source had when the snapshot was taken.
fn restores(node: &SearchNode, dst: &Path, expected: &[(String, Vec<(String, u64)>)]) {
    let _ = node.call("DELETE", "/_snapshot/copied", json!(null));
    ok(
        node,
        "PUT",
        "/_snapshot/copied",
        json!({"type": "fs", "settings": {"location": dst.to_str().unwrap(), "readonly": true}}),
    );
    let listed = ok(node, "GET", "/_snapshot/copied/_all", json!(null));
    let names: BTreeSet<&str> = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want, "snapshots of the copy");
    for (snap, indices) in expected {
        let b = ok(
            node,
            "POST",
            &format!("/_snapshot/copied/{snap}/_restore?wait_for_completion=true"),
            json!({"indices": "*", "include_global_state": false, "rename_pattern": "(.+)",
                   "rename_replacement": "restored-$1", "index_settings": {"index.number_of_replicas": 0}}),
        );
        assert_eq!(b["snapshot"]["shards"]["failed"], 0, "{b}");
        for (index, n) in indices {
            assert_eq!(
                count(node, &format!("restored-{index}")),
                *n,
                "{snap}/{index}"
            );
        }
        ok(node, "DELETE", "/restored-*", json!(null));
    }
}

#[test]
fn metadata_plans_equal_listing_plans_round_after_round_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let path_repo = tmp.path().join("path-repo");
    let src = path_repo.join("src");
    let dst = path_repo.join("dst");
    std::fs::create_dir_all(&src).unwrap();
    let node = SearchNode::start(&path_repo);
    ok(
        &node,
        "PUT",
        "/_snapshot/src",
        json!({"type": "fs", "settings": {"location": src.to_str().unwrap()}}),
    );
    let create = |name: &str, shards: u32| {
        ok(
            &node,
            "PUT",
            &format!("/{name}"),
            json!({"settings": {"number_of_shards": shards, "number_of_replicas": 0}}),
        );
    };
    // Snapshots kept in the source, with each index's count when taken.
    let mut expected: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    let take = |node: &SearchNode,
                expected: &mut Vec<(String, Vec<(String, u64)>)>,
                name: &str,
                indices: &[&str]| {
        snapshot(node, name, &indices.join(","));
        expected.push((
            name.to_string(),
            indices
                .iter()
                .map(|i| (i.to_string(), count(node, i)))
                .collect(),
        ));
    };

    let round = |n: u32, expected: &[(String, Vec<(String, u64)>)], extra: &[&str]| {
        let (meta, meta_report) = planned(&src, &dst, &[]);
        let (listing, listing_report) = planned(&src, &dst, &["--plan-from", "listing"]);
        assert_eq!(
            meta, listing,
            "round {n}: the metadata plan differs from the full-listing plan\nonly metadata: {:?}\nonly listing: {:?}",
            meta.difference(&listing).collect::<Vec<_>>(),
            listing.difference(&meta).collect::<Vec<_>>()
        );
        assert!(!meta.is_empty(), "round {n} has something to copy");
        assert_eq!(listing_report["snapshot"]["planned_from"], "listing");
        let (r, _) = sync(&src, &dst, extra);
        assert_eq!(r["failed_objects"], 0, "{r}");
        assert_eq!(
            r["copied_objects"].as_u64(),
            Some(meta.len() as u64),
            "round {n}: copied what was planned: {r}"
        );
        assert_eq!(r["snapshot"]["completed"], true);
        // Then nothing is left to do, and the no-op round reads no shard.
        let (again, again_report) = planned(&src, &dst, &[]);
        assert!(again.is_empty(), "round {n}: planned again: {again:?}");
        assert_eq!(
            again_report["snapshot"]["planned_from"], "metadata",
            "{again_report}"
        );
        assert_eq!(
            again_report["snapshot"]["examined_units"], 0,
            "{again_report}"
        );
        verify_deep(&dst);
        restores(&node, &dst, expected);
        meta_report
    };

    // Round 1: two indices, first snapshot (the destination holds nothing: full listing).
    create("logs", 3);
    create("users", 2);
    index_docs(&node, "logs", 0, 300);
    index_docs(&node, "users", 0, 80);
    take(&node, &mut expected, "snap-1", &["logs", "users"]);
    let r1 = round(1, &expected, &[]);
    assert_eq!(r1["snapshot"]["planned_from"], "listing", "{r1}");

    // Round 2: new documents and deletes in one index (every shard of a new snapshot
    // gets a new generation, changed data or not).
    index_docs(&node, "logs", 300, 420);
    delete_docs(&node, "logs", 0, 40);
    take(&node, &mut expected, "snap-2", &["logs", "users"]);
    let r2 = round(2, &expected, &[]);
    assert_eq!(r2["snapshot"]["planned_from"], "metadata", "{r2}");
    assert_eq!(r2["snapshot"]["examined_units"], 5, "{r2}");

    // Round 3: a new index, and a snapshot deleted at the source.
    create("orders", 2);
    index_docs(&node, "orders", 0, 50);
    ok(&node, "DELETE", "/_snapshot/src/snap-1", json!(null));
    expected.retain(|(n, _)| n != "snap-1");
    take(&node, &mut expected, "snap-3", &["logs", "users", "orders"]);
    // The cutover's confirmation before the commit point passes on a complete copy.
    let r3 = round(3, &expected, &["--confirm-before-commit"]);
    assert_eq!(r3["snapshot"]["planned_from"], "metadata", "{r3}");

    // Round 4: a force-merge rewrites one index's segments; a snapshot of one index only.
    index_docs(&node, "users", 80, 130);
    ok(
        &node,
        "POST",
        "/users/_forcemerge?max_num_segments=1",
        json!(null),
    );
    take(&node, &mut expected, "snap-4", &["users"]);
    let r4 = round(4, &expected, &[]);
    // Only users' two shards moved: logs' three and orders' two cost no request.
    assert_eq!(r4["snapshot"]["examined_units"], 2, "{r4}");
    assert_eq!(r4["snapshot"]["unchanged_units"], 5, "{r4}");

    // A blob lost outside snapferry in a shard that did not change: the default trusts
    // the committed generation; --verify-destination full lists everything and finds it.
    let root = current_root(&dst);
    let orders = root["indices"]["orders"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lost = tree(&dst)
        .into_iter()
        .find(|p| {
            p.starts_with(&format!("indices/{orders}/"))
                && p.rsplit('/').next().is_some_and(|n| n.starts_with("__"))
        })
        .expect("a data blob of orders");
    std::fs::remove_file(dst.join(&lost)).unwrap();
    let (trusting, _) = planned(&src, &dst, &[]);
    assert!(
        trusting.is_empty(),
        "the default trusts the committed generation: {trusting:?}"
    );
    let (full, full_report) = planned(&src, &dst, &["--verify-destination", "full"]);
    assert_eq!(full, BTreeSet::from([lost.clone()]), "{full_report}");
    assert_eq!(full_report["snapshot"]["planned_from"], "listing");
    let (r, _) = sync(&src, &dst, &["--verify-destination", "full"]);
    assert_eq!(r["copied_objects"], 1, "{r}");
    verify_deep(&dst);

    // A destination root snapferry did not write (here: the same catalogue, rewritten by
    // hand as the next generation): planned from a full listing, with one line saying so,
    // and the plan is still the listing planner's.
    let latest = u64::from_be_bytes(
        std::fs::read(dst.join("index.latest")).unwrap()[..8]
            .try_into()
            .unwrap(),
    );
    let root = current_root(&dst);
    std::fs::write(
        dst.join(format!("index-{}", latest + 1)),
        serde_json::to_vec_pretty(&root).unwrap(),
    )
    .unwrap();
    std::fs::write(dst.join("index.latest"), (latest + 1).to_be_bytes()).unwrap();
    index_docs(&node, "orders", 50, 90);
    take(&node, &mut expected, "snap-5", &["orders"]);
    let (meta, meta_report) = planned(&src, &dst, &[]);
    let (listing, _) = planned(&src, &dst, &["--plan-from", "listing"]);
    assert_eq!(meta, listing);
    assert_eq!(
        meta_report["snapshot"]["planned_from"], "listing",
        "{meta_report}"
    );
    assert!(
        meta_report["snapshot"]["planned_from_reason"]
            .as_str()
            .is_some_and(|r| r.contains("committed")),
        "{meta_report}"
    );
    let (r, stderr) = sync(&src, &dst, &[]);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("not the one snapferry committed last"))
        .collect();
    assert_eq!(lines.len(), 1, "one line says why: {stderr}");
    assert!(lines[0].contains("full listing"), "{stderr}");
    assert_eq!(r["failed_objects"], 0, "{r}");
    verify_deep(&dst);
    restores(&node, &dst, &expected);
    // Committed by snapferry again: the next round trusts it.
    let (again, again_report) = planned(&src, &dst, &[]);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(again_report["snapshot"]["planned_from"], "metadata");
}

/// The current root `index-N` of a directory repository, parsed.
fn current_root(dir: &Path) -> serde_json::Value {
    let latest = u64::from_be_bytes(
        std::fs::read(dir.join("index.latest")).unwrap()[..8]
            .try_into()
            .unwrap(),
    );
    serde_json::from_slice(&std::fs::read(dir.join(format!("index-{latest}"))).unwrap()).unwrap()
}
