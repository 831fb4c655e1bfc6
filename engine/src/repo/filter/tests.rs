//! The filter on the committed real repositories (`fixtures/repos/`: OpenSearch 2.19.6,
//! Elasticsearch 7.17.29 and 8.19.21, each holding snap-1, snap-3 and snap-4, the last of
//! the `orders` index only), and on small documents for the edge cases they lack.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::*;
use crate::error::ErrorKind;
use crate::repo::model::{classify, RepositoryData};
use crate::repo::verify::{verify_loaded, VerifyOptions};
use crate::store::fs::FsStore;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/repos");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/repos")
        .map(|e| e.expect("fixture entry").path().join("repo"))
        .filter(|p| p.join("index.latest").is_file())
        .collect();
    v.sort();
    assert!(
        v.len() >= 3,
        "expected the three committed fixtures in {dir:?}"
    );
    v
}

async fn load(dir: &Path) -> (FsStore, Repository) {
    let store = FsStore::new(dir);
    let repo = Repository::load(&store).await.expect("load");
    (store, repo)
}

/// Lays the filtered repository out in `dst` the way a sync would: the source blobs of
/// `refs`, the new shard indexes, the root as index-N, index.latest.
fn materialize(src: &Path, f: &Filtered, dst: &Path) {
    let write = |key: &str, bytes: &[u8]| {
        let p = dst.join(key);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    };
    for key in f.refs.keys() {
        write(key, &std::fs::read(src.join(key)).expect("referenced blob"));
    }
    for (key, bytes) in &f.shard_indexes {
        write(key, bytes);
    }
    write(&format!("index-{}", f.generation), &f.root);
    write("index.latest", &f.generation.to_be_bytes());
}

/// Every shard index the repository's root names: each file every snapshot lists is
/// described, each described file is listed by some snapshot (as Elasticsearch writes
/// them), and each described file's blobs exist with their exact sizes.
async fn assert_shard_indexes_consistent(store: &FsStore, repo: &Repository) {
    let all: Vec<&SnapshotEntry> = repo.data.snapshots.iter().collect();
    let (refs, _) = repo.references(store, &all).await.expect("references");
    for key in refs
        .iter()
        .filter(|(_, r)| r.kind == BlobKind::ShardIndex)
        .map(|(k, _)| k)
    {
        let bytes = std::fs::read(store.root().join(key)).expect("shard index");
        let env = blob::parse_envelope(key, &bytes).expect("envelope");
        let SmileValue::Object(top) = blob::decode::<SmileValue>(key, &env).expect("smile") else {
            panic!("{key}: not an object");
        };
        let mut listed = BTreeSet::new();
        if let Some(SmileValue::Object(snaps)) = top.get("snapshots") {
            for entry in snaps.values() {
                let SmileValue::Object(e) = entry else {
                    panic!("{key}")
                };
                if let Some(SmileValue::Array(files)) = e.get("files") {
                    for f in files {
                        let SmileValue::String(n) = f else {
                            panic!("{key}")
                        };
                        listed.insert(n.clone());
                    }
                }
            }
        }
        let mut described = BTreeSet::new();
        let dir = key.rsplit_once('/').expect("dir").0;
        if let Some(SmileValue::Array(files)) = top.get("files") {
            for f in files {
                let info = file_info(key, f).expect("file info");
                for (blob, size) in info.blobs() {
                    let k = format!("{dir}/{blob}");
                    assert_eq!(repo.listing.get(&k), Some(&size), "{key} lists {k}");
                }
                described.insert(info.name);
            }
        }
        assert_eq!(listed, described, "{key}: listed vs described files");
    }
}

/// The shard index keys a repository's root names (UUID generations only).
fn named_shard_indexes(data: &RepositoryData) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for ix in &data.indices {
        for (shard, g) in ix.shard_generations.iter().enumerate() {
            if let Some(g) = g {
                out.insert(format!("indices/{}/{shard}/index-{g}", ix.id));
            }
        }
    }
    out
}

#[tokio::test]
async fn each_selection_yields_exactly_those_snapshots_and_verifies_clean() {
    let selections: [&[&str]; 6] = [
        &["snap-1"],
        &["snap-3"],
        &["snap-4"],
        &["snap-1", "snap-4"],
        &["snap-4", "snap-3"],
        &["snap-1", "snap-3", "snap-4"],
    ];
    for src in fixtures() {
        let (store, repo) = load(&src).await;
        let source_root = std::fs::read(src.join(format!("index-{}", repo.data.generation)))
            .expect("source root");
        for names in selections {
            let what = format!("{} {names:?}", src.display());
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let selected = repo.select(&names).expect("select");
            let numeric = repo
                .data
                .indices
                .iter()
                .all(|i| i.shard_generations.is_empty());
            if numeric {
                // Before 7.6 a shard that needs a rewrite cannot get a name of its own
                // (copying every snapshot needs none); the checks below read the
                // root's shard generations, which such roots do not have.
                if let Err(e) = filter(&store, &repo, &selected).await {
                    assert_eq!(e.message(), NUMERIC_GENERATIONS, "{what}");
                    assert!(names.len() < repo.data.snapshots.len(), "{what}");
                }
                continue;
            }
            let f = filter(&store, &repo, &selected).await.expect(&what);
            assert_eq!(
                f,
                filter(&store, &repo, &selected).await.unwrap(),
                "{what}: rerun"
            );

            // The root lists exactly the selection and keeps the repository's identity.
            let data = RepositoryData::parse(f.generation, &f.root).expect(&what);
            let got: BTreeSet<&str> = data.snapshots.iter().map(|s| s.name.as_str()).collect();
            let want: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            assert_eq!(got, want, "{what}");
            assert_eq!(
                (&data.uuid, &data.min_version),
                (&repo.data.uuid, &repo.data.min_version),
                "{what}"
            );
            let uuids: BTreeSet<&str> = selected.iter().map(|s| s.uuid.as_str()).collect();
            let kept: BTreeSet<&str> = repo
                .data
                .indices
                .iter()
                .filter(|ix| ix.snapshots.iter().any(|u| uuids.contains(u.as_str())))
                .map(|ix| ix.name.as_str())
                .collect();
            assert_eq!(
                data.indices
                    .iter()
                    .map(|ix| ix.name.as_str())
                    .collect::<BTreeSet<_>>(),
                kept,
                "{what}: indices"
            );
            for ix in &data.indices {
                assert!(!ix.snapshots.is_empty(), "{what}: {} kept empty", ix.name);
                assert!(
                    ix.snapshots.iter().all(|u| uuids.contains(u.as_str())),
                    "{what}"
                );
            }
            let used: BTreeSet<&str> = data
                .snapshots
                .iter()
                .flat_map(|s| s.index_metadata_lookup.values().map(String::as_str))
                .collect();
            assert_eq!(
                data.index_metadata_identifiers
                    .keys()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>(),
                used,
                "{what}: index_metadata_identifiers"
            );

            // Every referenced blob is a source blob of the recorded size; the shard
            // indexes the new root names are exactly the kept ones plus the new ones.
            assert!(!f.refs.contains_key(&format!("index-{}", f.generation)));
            for (key, r) in &f.refs {
                let size = repo.listing.get(key);
                assert!(size.is_some(), "{what}: {key} is not in the fixture");
                if let Some(want) = r.size {
                    assert_eq!(size, Some(&want), "{what}: {key}");
                }
            }
            let copied: BTreeSet<String> = f
                .refs
                .iter()
                .filter(|(_, r)| r.kind == BlobKind::ShardIndex)
                .map(|(k, _)| k.clone())
                .chain(f.shard_indexes.iter().map(|(k, _)| k.clone()))
                .collect();
            assert_eq!(copied, named_shard_indexes(&data), "{what}: shard indexes");

            if names.len() == repo.data.snapshots.len() {
                // Nothing to remove: nothing rewritten, the root byte for byte the source's.
                assert!(f.shard_indexes.is_empty(), "{what}");
                assert_eq!(f.root, source_root, "{what}: root");
            } else {
                assert!(!f.shard_indexes.is_empty(), "{what}");
            }
            if names == ["snap-4"] {
                // orders only: both of its shards listed snap-1 and snap-3 as well.
                assert_eq!(f.shard_indexes.len(), 2, "{what}");
            }

            // The repository laid out from it verifies clean, deeply, and says the same.
            let dst = tempfile::tempdir().expect("tempdir");
            materialize(&src, &f, dst.path());
            let (dstore, drepo) = load(dst.path()).await;
            assert_eq!(drepo.data, data, "{what}");
            let report = verify_loaded(
                &dstore,
                &drepo,
                &VerifyOptions {
                    deep: true,
                    concurrency: 4,
                    ..Default::default()
                },
            )
            .await
            .expect(&what);
            assert_eq!(report.problems, [], "{what}");
            assert_eq!(report.snapshots_checked, names.len(), "{what}");
            assert!(report.data_files_checked > 0, "{what}");
            assert_shard_indexes_consistent(&dstore, &drepo).await;
            // Filtering the filtered repository to the same snapshots changes nothing.
            let again = filter(&dstore, &drepo, &drepo.select(&[]).unwrap())
                .await
                .unwrap();
            assert_eq!(
                (again.root, again.shard_indexes),
                (f.root.clone(), vec![]),
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn fixture_shard_indexes_round_trip_through_smile() {
    fn has_binary(v: &SmileValue) -> bool {
        match v {
            SmileValue::Binary(_) => true,
            SmileValue::Array(a) => a.iter().any(has_binary),
            SmileValue::Object(m) => m.values().any(has_binary),
            _ => false,
        }
    }
    let mut checked = 0;
    let mut with_binary = 0;
    for src in fixtures() {
        let (_, repo) = load(&src).await;
        for key in repo
            .listing
            .keys()
            .filter(|k| classify(k) == Some(BlobKind::ShardIndex))
        {
            let bytes = std::fs::read(src.join(key)).unwrap();
            let env = blob::parse_envelope(key, &bytes).unwrap();
            let original: SmileValue = blob::decode(key, &env).unwrap();
            with_binary += usize::from(has_binary(&original));
            // Filter nothing, encode, wrap, parse: the same value.
            let names: BTreeSet<String> = match &original {
                SmileValue::Object(m) => match m.get("snapshots") {
                    Some(SmileValue::Object(s)) => s.keys().cloned().collect(),
                    _ => panic!("{key}: no snapshots"),
                },
                _ => panic!("{key}: not an object"),
            };
            let keep: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            let value: SmileValue = blob::decode(key, &env).unwrap();
            assert!(
                matches!(
                    retain_snapshots(key, value, &keep).unwrap(),
                    Retained::Unchanged(_)
                ),
                "{key}"
            );
            let value: SmileValue = blob::decode(key, &env).unwrap();
            let smile = blob::encode_smile(key, &value).unwrap();
            assert_eq!(
                &smile[..4],
                b":)\n\x04",
                "{key}: header (raw binary, nothing shared)"
            );
            let written = blob::write_envelope(&env.codec, env.version, &smile);
            let back = blob::parse_envelope(key, &written).unwrap();
            assert_eq!(
                (back.codec.as_str(), back.version, back.compressed),
                (env.codec.as_str(), env.version, false),
                "{key}"
            );
            assert_eq!(
                blob::decode::<SmileValue>(key, &back).unwrap(),
                original,
                "{key}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 21, "{checked} shard indexes");
    assert_eq!(
        with_binary, checked,
        "meta_hash is binary in every shard index"
    );
}

#[tokio::test]
async fn numeric_shard_generations_are_refused_only_when_a_rewrite_is_needed() {
    // A pre-7.6 layout made from a real repository: no shard_generations in the root, and
    // each shard's index named index-0, found by listing.
    let src = fixtures()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("elasticsearch-7"))
        .expect("es 7 fixture");
    let dir = tempfile::tempdir().unwrap();
    let (_, repo) = load(&src).await;
    let root_key = format!("index-{}", repo.data.generation);
    for key in repo.listing.keys() {
        let to = match classify(key) {
            Some(BlobKind::ShardIndex) => format!("{}/index-0", key.rsplit_once('/').unwrap().0),
            _ => key.clone(),
        };
        let p = dir.path().join(&to);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut bytes = std::fs::read(src.join(key)).unwrap();
        if *key == root_key {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for ix in v["indices"].as_object_mut().unwrap().values_mut() {
                ix.as_object_mut().unwrap().remove("shard_generations");
            }
            v.as_object_mut().unwrap().remove("min_version");
            bytes = serde_json::to_vec(&v).unwrap();
        }
        std::fs::write(p, bytes).unwrap();
    }
    let (store, repo) = load(dir.path()).await;
    let all = filter(&store, &repo, &repo.select(&[]).unwrap())
        .await
        .unwrap();
    assert!(all.shard_indexes.is_empty());
    assert!(all.refs.keys().any(|k| k.ends_with("/0/index-0")));
    let one = filter(&store, &repo, &repo.select(&["snap-4".into()]).unwrap()).await;
    match one {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            assert_eq!(e.message(), NUMERIC_GENERATIONS)
        }
        other => panic!("expected the numeric-generation refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_snapshot_of_another_repository_is_refused() {
    let src = fixtures();
    let (store, repo) = load(&src[0]).await;
    let (_, other) = load(&src[1]).await;
    let foreign = &other.data.snapshots[0];
    assert_eq!(
        filter(&store, &repo, &[foreign]).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn root_rewrite_keeps_order_and_every_other_field() {
    let src = br#"{"min_version":"7.9.0","uuid":"U","cluster_id":"C","future":{"z":1,"a":[1.5,2]},"snapshots":[{"name":"s1","uuid":"A","state":1,"index_metadata_lookup":{"i1":"id1","i2":"id2"},"version":"7.10.2","zzz":true},{"name":"s2","uuid":"B","index_metadata_lookup":{"i1":"id3"}}],"indices":{"logs":{"id":"i1","snapshots":["A","B"],"shard_generations":["g0","g1",null],"extra":5},"old":{"id":"i2","snapshots":[{"name":"s1","uuid":"A"}]},"gone":{"id":"i3","snapshots":["B"],"shard_generations":["x"]}},"index_metadata_identifiers":{"id3":"m3","id1":"m1","id2":"m2"}}"#;
    let keep: BTreeSet<&str> = ["A"].into();
    let gens: HashMap<String, BTreeMap<usize, Option<String>>> = [(
        "logs".to_string(),
        [(0, Some("n0".to_string())), (1, None)].into(),
    )]
    .into();
    let out = rewrite_root("index-3", src, &keep, &gens).unwrap();
    let want = r#"{"min_version":"7.9.0","uuid":"U","cluster_id":"C","future":{"z":1,"a":[1.5,2]},"snapshots":[{"name":"s1","uuid":"A","state":1,"index_metadata_lookup":{"i1":"id1","i2":"id2"},"version":"7.10.2","zzz":true}],"indices":{"logs":{"id":"i1","snapshots":["A"],"shard_generations":["n0",null,null],"extra":5},"old":{"id":"i2","snapshots":[{"name":"s1","uuid":"A"}]}},"index_metadata_identifiers":{"id1":"m1","id2":"m2"}}"#;
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert_eq!(
        rewrite_root("index-3", b"{\"snapshots\":", &keep, &gens)
            .unwrap_err()
            .kind(),
        ErrorKind::RepositoryFormat
    );
}

#[test]
fn shard_index_retention_follows_with_retained_snapshots() {
    fn doc() -> SmileValue {
        let file = |n: &str, len: i32| {
            SmileValue::Object(
                [
                    ("name".to_string(), SmileValue::String(n.into())),
                    (
                        "physical_name".to_string(),
                        SmileValue::String(format!("_{n}.si")),
                    ),
                    ("length".to_string(), SmileValue::Integer(len)),
                    (
                        "meta_hash".to_string(),
                        SmileValue::Binary(vec![0xff, 0, 0xfe]),
                    ),
                ]
                .into_iter()
                .collect(),
            )
        };
        let snap = |files: &[&str]| {
            SmileValue::Object(
                [
                    (
                        "files".to_string(),
                        SmileValue::Array(
                            files
                                .iter()
                                .map(|f| SmileValue::String(f.to_string()))
                                .collect(),
                        ),
                    ),
                    ("shard_state_id".to_string(), SmileValue::String("h".into())),
                ]
                .into_iter()
                .collect(),
            )
        };
        SmileValue::Object(
            [
                (
                    "files".to_string(),
                    SmileValue::Array(vec![file("__a", 1), file("__b", 2), file("__c", 3)]),
                ),
                (
                    "snapshots".to_string(),
                    SmileValue::Object(
                        [
                            ("s1".to_string(), snap(&["__a", "__b"])),
                            ("s2".to_string(), snap(&["__b", "__c"])),
                        ]
                        .into_iter()
                        .collect(),
                    ),
                ),
            ]
            .into_iter()
            .collect(),
        )
    }
    let names = |r: &Retained| match r {
        Retained::Unchanged(f) | Retained::Rewritten(_, f) => {
            f.iter().map(|f| f.name.clone()).collect::<Vec<_>>()
        }
        Retained::Empty => vec![],
    };
    let both = retain_snapshots("t", doc(), &["s1", "s2", "other"].into()).unwrap();
    assert!(matches!(both, Retained::Unchanged(_)));
    assert_eq!(names(&both), ["__a", "__b", "__c"]);
    let s2 = retain_snapshots("t", doc(), &["s2"].into()).unwrap();
    assert_eq!(names(&s2), ["__b", "__c"]);
    let Retained::Rewritten(SmileValue::Object(top), _) = s2 else {
        panic!("s2 alone is a rewrite")
    };
    let SmileValue::Object(snaps) = &top["snapshots"] else {
        panic!()
    };
    assert_eq!(snaps.keys().collect::<Vec<_>>(), ["s2"]);
    // The retained entry is untouched (shard_state_id kept), and so are the files.
    let SmileValue::Object(entry) = &snaps["s2"] else {
        panic!()
    };
    assert!(entry.contains_key("shard_state_id"));
    let SmileValue::Array(files) = &top["files"] else {
        panic!()
    };
    assert!(
        matches!(&files[0], SmileValue::Object(m) if m["meta_hash"] == SmileValue::Binary(vec![0xff, 0, 0xfe]))
    );
    assert_eq!(
        retain_snapshots("t", doc(), &["x"].into()).unwrap(),
        Retained::Empty
    );
    // A snapshot listing a file `files` does not describe is never written.
    let SmileValue::Object(mut broken) = doc() else {
        panic!()
    };
    if let Some(SmileValue::Array(files)) = broken.get_mut("files") {
        files.remove(2);
    }
    assert_eq!(
        retain_snapshots("t", SmileValue::Object(broken), &["s2"].into())
            .unwrap_err()
            .kind(),
        ErrorKind::RepositoryFormat
    );
}

#[test]
fn new_generations_are_deterministic_and_shaped_like_uuids() {
    let g = new_generation("948bFezPQ2iYfzWWdo_bwA", &["A", "B"]);
    assert_eq!(g, new_generation("948bFezPQ2iYfzWWdo_bwA", &["A", "B"]));
    assert_eq!(g.len(), 22);
    assert!(g
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(!is_numeric(&g));
    assert_ne!(g, new_generation("948bFezPQ2iYfzWWdo_bwA", &["A"]));
    assert_ne!(g, new_generation("948bFezPQ2iYfzWWdo_bwB", &["A", "B"]));
    // The separator keeps ("AB") and ("A", "B") apart.
    assert_ne!(
        new_generation("x", &["AB"]),
        new_generation("x", &["A", "B"])
    );
    assert!(is_numeric("12") && !is_numeric("") && !is_numeric("1a"));
}
