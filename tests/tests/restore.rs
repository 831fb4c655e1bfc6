//! A real OpenSearch node restores every snapshot of a repository that snapferry copied
//! (fs → S3 → fs, snapshot-aware both ways), with the document counts the source had.

use serde_json::json;
use testkit::*;

/// The names of the snapshots `node` lists in repository `repo`.
fn listed_snapshots(node: &SearchNode, repo: &str) -> Vec<String> {
    let (st, body) = node.call(
        "GET",
        &format!("/_snapshot/{repo}/_all"),
        serde_json::Value::Null,
    );
    assert_eq!(st, 200, "{body}");
    body["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn opensearch_restores_every_snapshot_from_a_copied_repository() {
    let fixture = fixture_dir("opensearch");
    let manifest = fixture_manifest(&fixture);
    let tmp = tempfile::tempdir().unwrap();
    let path_repo = tmp.path().join("path-repo");
    let dest = path_repo.join("copied");
    // fs -> s3 -> fs, both snapshot-aware.
    ferry_through_s3(&fixture.join("repo"), &dest);

    let node = SearchNode::start(&path_repo);
    let (st, body) = node.call(
        "PUT",
        "/_snapshot/copied",
        json!({"type": "fs", "settings": {"location": dest.to_str().unwrap(), "readonly": true}}),
    );
    assert_eq!(st, 200, "{body}");
    let listed = listed_snapshots(&node, "copied");
    for snap in manifest["snapshots"].as_array().unwrap() {
        let name = snap["name"].as_str().unwrap();
        assert!(
            listed.iter().any(|l| l == name),
            "{name} not listed: {listed:?}"
        );
        restore_and_count(&node, "copied", name, &doc_counts(&snap["indices"]));
    }
}

/// `sync --snapshot` yields a repository of exactly the selected snapshots: a real
/// OpenSearch lists just those, restores each with its document counts, and takes a new
/// snapshot into it that restores too (the rewritten shard generations are sound).
#[test]
fn opensearch_lists_and_restores_exactly_the_snapshots_sync_selected() {
    let fixture = fixture_dir("opensearch");
    let manifest = fixture_manifest(&fixture);
    let tmp = tempfile::tempdir().unwrap();
    let path_repo = tmp.path().join("path-repo");
    let dest = path_repo.join("selected");
    let selected = ["snap-1", "snap-4"];
    let mut c = snapferry();
    c.args([
        "sync",
        fixture.join("repo").to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    for s in selected {
        c.args(["--snapshot", s]);
    }
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));

    let node = SearchNode::start(&path_repo);
    let (st, body) = node.call(
        "PUT",
        "/_snapshot/selected",
        json!({"type": "fs", "settings": {"location": dest.to_str().unwrap()}}),
    );
    assert_eq!(st, 200, "{body}");
    let mut listed = listed_snapshots(&node, "selected");
    listed.sort();
    assert_eq!(listed, selected, "exactly the selected snapshots");
    for snap in manifest["snapshots"].as_array().unwrap() {
        let name = snap["name"].as_str().unwrap();
        if selected.contains(&name) {
            restore_and_count(&node, "selected", name, &doc_counts(&snap["indices"]));
        }
    }
    // Writable: a new snapshot of data restored from the fixture's own snap-3 (which the
    // selection left out) lands and restores.
    let snap3 = manifest["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "snap-3")
        .unwrap();
    // The full fixture, copied as a second (read-only) repository, provides snap-3's
    // indices.
    let mut c = snapferry();
    c.args([
        "sync",
        fixture.join("repo").to_str().unwrap(),
        path_repo.join("full").to_str().unwrap(),
    ]);
    assert_eq!(run(c).status.code(), Some(0));
    let (st, body) = node.call(
        "PUT",
        "/_snapshot/full",
        json!({"type": "fs", "settings": {"location": path_repo.join("full").to_str().unwrap(), "readonly": true}}),
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = node.call(
        "POST",
        "/_snapshot/full/snap-3/_restore?wait_for_completion=true",
        json!({"indices": "*", "include_global_state": false, "index_settings": {"index.number_of_replicas": 0}}),
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = node.call(
        "PUT",
        "/_snapshot/selected/new-1?wait_for_completion=true",
        json!({"indices": "*", "include_global_state": false}),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["snapshot"]["state"], "SUCCESS", "{body}");
    let names: Vec<&str> = snap3["indices"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let (st, body) = node.call(
        "DELETE",
        &format!("/{}", names.join(",")),
        serde_json::Value::Null,
    );
    assert_eq!(st, 200, "{body}");
    restore_and_count(&node, "selected", "new-1", &doc_counts(&snap3["indices"]));
    // And snapferry's own deep check agrees.
    let mut c = snapferry();
    c.args(["repo", "verify", dest.to_str().unwrap(), "--deep"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
}
