//! A real OpenSearch reads, restores and extends repositories that `repo::filter` reduced
//! to some of a real repository's snapshots (the committed OpenSearch fixture: snap-1,
//! snap-3, and snap-4 of `orders` only).
//!
//! Read-only: each filtered repository lists exactly its snapshots and restores each with
//! the fixture's document counts. Writable: a new snapshot into a filtered repository
//! starts from the rewritten shard indexes: it reuses the files they list and uploads the
//! files of the dropped snapshot it meets in the shards (had a stale shard index still
//! listed them, it would have reused blobs that were never copied); the new snapshot and
//! the old ones restore; deleting an old snapshot (OpenSearch rewriting our shard indexes
//! once more) leaves the rest restorable; and snapferry's deep verify agrees throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use snapferry_engine::repo::filter::{filter, Filtered};
use snapferry_engine::repo::model::Repository;
use snapferry_engine::repo::verify::{verify_loaded, VerifyOptions};
use snapferry_engine::store::fs::FsStore;
use testkit::*;

fn opensearch_fixture() -> PathBuf {
    fixture_dir("opensearch")
}

/// Builds the repository holding `names` of `src` in `dst`, as a sync would lay it out:
/// the referenced source blobs, the new shard indexes, the root as index-N, index.latest.
fn build(src: &Path, names: &[&str], dst: &Path) -> Filtered {
    let f = rt().block_on(async {
        let store = FsStore::new(src);
        let repo = Repository::load(&store).await.expect("load the fixture");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let selected = repo.select(&names).expect("select");
        filter(&store, &repo, &selected).await.expect("filter")
    });
    let write = |key: &str, bytes: &[u8]| {
        let p = dst.join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    for key in f.refs.keys() {
        write(key, &std::fs::read(src.join(key)).unwrap());
    }
    for (key, bytes) in &f.shard_indexes {
        write(key, bytes);
    }
    write(&format!("index-{}", f.generation), &f.root);
    write("index.latest", &f.generation.to_be_bytes());
    f
}

/// snapferry's deep verify of a repository directory: (snapshot names, problems).
fn verify(dir: &Path) -> (BTreeSet<String>, Vec<String>) {
    rt().block_on(async {
        let store = FsStore::new(dir);
        let repo = Repository::load(&store).await.expect("load");
        let opts = VerifyOptions {
            deep: true,
            concurrency: 4,
            ..Default::default()
        };
        let report = verify_loaded(&store, &repo, &opts).await.expect("verify");
        (
            repo.data.snapshots.iter().map(|s| s.name.clone()).collect(),
            report
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.problem))
                .collect(),
        )
    })
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// index -> doc_count of a snapshot, from the fixture's manifest.
fn counts(manifest: &Value, snap: &str) -> BTreeMap<String, u64> {
    let snapshots = manifest["snapshots"].as_array().unwrap();
    let s = snapshots.iter().find(|s| s["name"] == snap);
    doc_counts(&s.unwrap_or_else(|| panic!("{snap} not in the manifest"))["indices"])
}

fn register(node: &SearchNode, repo: &str, dir: &Path, readonly: bool) {
    let (st, body) = node.call("DELETE", &format!("/_snapshot/{repo}"), Value::Null);
    assert!(st == 200 || st == 404, "{body}");
    let (st, body) = node.call(
        "PUT",
        &format!("/_snapshot/{repo}"),
        json!({"type": "fs", "settings": {"location": dir.to_str().unwrap(), "readonly": readonly}}),
    );
    assert_eq!(st, 200, "register {repo}: {body}");
}

fn listed(node: &SearchNode, repo: &str) -> BTreeSet<String> {
    let (st, body) = node.call("GET", &format!("/_snapshot/{repo}/_all"), Value::Null);
    assert_eq!(st, 200, "{body}");
    body["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["state"], "SUCCESS", "{s}");
            s["snapshot"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn opensearch_reads_restores_and_extends_a_filtered_repository() {
    let fixture = opensearch_fixture();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("manifest.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path_repo = tmp.path().join("path-repo");
    // a drops snap-3 (every shard index rewritten: all list snap-3); b keeps snap-3 only
    // (customers and products whole, orders without snap-1 and snap-4).
    let a = path_repo.join("keep-1-4");
    let b = path_repo.join("keep-3");
    let fa = build(&fixture.join("repo"), &["snap-1", "snap-4"], &a);
    let fb = build(&fixture.join("repo"), &["snap-3"], &b);
    assert_eq!(
        fa.shard_indexes.len(),
        7,
        "every shard of the three indices"
    );
    assert_eq!(fb.shard_indexes.len(), 7);
    assert_eq!(verify(&a), (set(&["snap-1", "snap-4"]), vec![]));
    assert_eq!(verify(&b), (set(&["snap-3"]), vec![]));

    let node = SearchNode::start(&path_repo);
    for (repo, dir, names) in [
        ("a", &a, &["snap-1", "snap-4"][..]),
        ("b", &b, &["snap-3"][..]),
    ] {
        register(&node, repo, dir, true);
        assert_eq!(listed(&node, repo), set(names), "{repo}");
        for snap in names {
            restore_and_count(&node, repo, snap, &counts(&manifest, snap));
        }
    }

    // Writable: a new snapshot into a, of shards holding files that only snap-3 (which a
    // dropped) had. Restored from the source repository itself, products is snap-3's
    // force-merged segments, none of which a holds: had a's shard indexes still listed
    // snap-3, OpenSearch would find every one of them there by name and checksum, upload
    // none, and record a snapshot whose files a does not have.
    let source = path_repo.join("source");
    copy_tree(&fixture.join("repo"), &source);
    register(&node, "src", &source, true);
    register(&node, "a", &a, false);
    let (st, body) = node.call(
        "POST",
        "/_snapshot/src/snap-3/_restore?wait_for_completion=true",
        json!({"indices": "products,orders", "include_global_state": false,
               "index_settings": {"index.number_of_replicas": 0}}),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["snapshot"]["shards"]["failed"], 0, "{body}");
    let added = 7;
    for i in 0..added {
        let id = 20_000 + i;
        let (st, body) = node.call(
            "PUT",
            &format!("/orders/_doc/{id}?refresh=true"),
            json!({"id": id, "name": format!("order-{id}"), "tag": "filtered",
                   "qty": 3, "note": "added after filtering", "rev": 9}),
        );
        assert!(st == 200 || st == 201, "{body}");
    }
    let snap3 = counts(&manifest, "snap-3");
    let snap5: BTreeMap<String, u64> = [
        ("orders".to_string(), snap3["orders"] + added),
        ("products".to_string(), snap3["products"]),
    ]
    .into();
    let (st, body) = node.call(
        "PUT",
        "/_snapshot/a/snap-5?wait_for_completion=true",
        json!({"indices": "products,orders", "include_global_state": false}),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["snapshot"]["state"], "SUCCESS", "{body}");
    assert_eq!(body["snapshot"]["shards"]["failed"], 0, "{body}");
    let (st, body) = node.call("GET", "/_snapshot/a/snap-5/_status", Value::Null);
    assert_eq!(st, 200, "{body}");
    let files = |index: &str, kind: &str| {
        body["snapshots"][0]["indices"][index]["stats"][kind]["file_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no {index} {kind} stats: {body}"))
    };
    // products: every file uploaded; orders: snap-4's files (listed by the rewritten
    // shard indexes, and present) reused, only the rest uploaded.
    assert_eq!(files("products", "incremental"), files("products", "total"));
    assert!(files("orders", "incremental") < files("orders", "total"));
    let (st, body) = node.call("DELETE", "/products,orders", Value::Null);
    assert_eq!(st, 200, "{body}");

    assert_eq!(listed(&node, "a"), set(&["snap-1", "snap-4", "snap-5"]));
    restore_and_count(&node, "a", "snap-5", &snap5);
    for snap in ["snap-1", "snap-4"] {
        restore_and_count(&node, "a", snap, &counts(&manifest, snap));
    }
    assert_eq!(
        verify(&a),
        (set(&["snap-1", "snap-4", "snap-5"]), vec![]),
        "after OpenSearch wrote snap-5"
    );

    // Deleting snap-1 makes OpenSearch read the shard indexes (built on ours) once more,
    // write new ones without it, drop customers, and delete the blobs nothing lists.
    let (st, body) = node.call("DELETE", "/_snapshot/a/snap-1", Value::Null);
    assert_eq!(st, 200, "{body}");
    assert_eq!(listed(&node, "a"), set(&["snap-4", "snap-5"]));
    restore_and_count(&node, "a", "snap-4", &counts(&manifest, "snap-4"));
    restore_and_count(&node, "a", "snap-5", &snap5);
    drop(node);
    assert_eq!(
        verify(&a),
        (set(&["snap-4", "snap-5"]), vec![]),
        "after OpenSearch deleted snap-1"
    );
}
