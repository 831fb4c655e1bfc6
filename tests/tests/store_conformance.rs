//! One conformance suite for the `Store` trait, run against every backend: `fs` on a
//! temp directory, `s3` on a real MinIO server (in both checksum modes), and `oss` on the
//! signature-verifying OSS gateway.

use std::sync::Arc;

use futures::StreamExt;
use snapferry_engine::store::fs::FsStore;
use snapferry_engine::store::s3::{S3Config, S3Store, StaticCredentials};
use snapferry_engine::store::Store;
use testkit::conformance::{conformance, list_level_all, list_prefix_all, missing_root};
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    conformance(Arc::new(FsStore::new(&root))).await;
    // An empty directory holds no key: an empty listing under it, and one level of it;
    // the level above lists it as a common prefix (a directory), under which nothing is.
    std::fs::create_dir_all(root.join("hollow/deeper")).unwrap();
    let s = FsStore::new(&root);
    assert!(list_prefix_all(&s, "hollow/", None).await.is_empty());
    assert!(list_prefix_all(&s, "hollow/deeper/", None).await.is_empty());
    assert_eq!(
        list_level_all(&s, "hollow/", None).await,
        vec!["hollow/deeper/".to_string()]
    );
    assert!(list_level_all(&s, "hollow/deeper/", None).await.is_empty());
    // Reserved directories and temp files are never listed, under a prefix either.
    std::fs::create_dir_all(root.join(".snapferry-uploads/u")).unwrap();
    std::fs::write(root.join(".snapferry-uploads/u/1"), b"part").unwrap();
    std::fs::write(root.join("a/.snapferry-tmp-0123456789abcdef"), b"tmp").unwrap();
    assert!(list_prefix_all(&s, ".snapferry-uploads/", None)
        .await
        .is_empty());
    assert!(list_prefix_all(&s, ".snapferry", None).await.is_empty());
    assert!(list_level_all(&s, ".snapferry-uploads/", None)
        .await
        .is_empty());
    assert!(!list_prefix_all(&s, "a/", None)
        .await
        .iter()
        .any(|(k, _)| k.contains(".snapferry")));
    assert!(!list_level_all(&s, "", None)
        .await
        .iter()
        .any(|k| k.contains(".snapferry")));
    assert!(!list_level_all(&s, "a/", None)
        .await
        .iter()
        .any(|k| k.contains(".snapferry")));
}

/// A listing under a prefix only reads that prefix's directory: a sibling directory
/// the walk cannot list (it holds a dangling symlink, whose metadata cannot be read)
/// fails the whole listing, never one under another prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_list_prefix_reads_only_the_prefix_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for k in [
        "indices/a/0/x",
        "indices/a/0/y",
        "indices/a/1/z",
        "indices/b/0/w",
    ] {
        let p = root.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, k).unwrap();
    }
    std::os::unix::fs::symlink(
        dir.path().join("nowhere"),
        root.join("indices/b/0/dangling"),
    )
    .unwrap();
    let s = FsStore::new(&root);
    let mut l = s.list(None);
    let mut failed = false;
    while let Some(p) = l.next().await {
        failed |= p.is_err();
    }
    assert!(failed, "the whole listing reads the broken sibling");
    let got = list_prefix_all(&s, "indices/a/0/", None).await;
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["indices/a/0/x", "indices/a/0/y"]
    );
    assert_eq!(
        list_prefix_all(&s, "indices/a/", Some("indices/a/0/x"))
            .await
            .len(),
        2
    );
    assert_eq!(list_prefix_all(&s, "indices/a", None).await.len(), 3);
    assert_eq!(
        list_level_all(&s, "indices/a/", None).await,
        ["indices/a/0/", "indices/a/1/"]
    );
    assert_eq!(
        list_level_all(&s, "indices/", None).await,
        ["indices/a/", "indices/b/"]
    );
}

async fn s3_store(m: &Minio, bucket: &str, content_md5: bool) -> S3Store {
    S3Store::connect(S3Config {
        bucket: bucket.into(),
        prefix: "some/prefix/".into(),
        endpoint: Some(m.endpoint.clone()),
        region: None,
        profile: None,
        credentials: Some(StaticCredentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
        }),
        content_md5,
        io_timeout: None,
        verify_source: Default::default(),
    })
    .await
    .unwrap()
}

async fn s3_conformance(content_md5: bool) {
    let m = Minio::start();
    create_bucket(&m.client(), "conf").await;
    let s = s3_store(&m, "conf", content_md5).await;
    conformance(Arc::new(s)).await;
    missing_root(&s3_store(&m, "absent", content_md5).await).await;
    // The prefix isolates: nothing outside it was touched.
    let all = keys(&m.client(), "conf", "").await;
    assert!(all.iter().all(|k| k.starts_with("some/prefix/")), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms() {
    s3_conformance(false).await;
}

/// The mode used for OSS's S3-compatible endpoint: Content-MD5 instead of checksum headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_in_content_md5_mode() {
    s3_conformance(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oss_store_conforms() {
    let gw = OssGateway::start(&["conf"]);
    let oss = |bucket: &str| gw.store(bucket, "some/prefix/");
    conformance(Arc::new(oss("conf"))).await;
    missing_root(&oss("absent")).await;
    assert!(gw
        .keys("conf")
        .iter()
        .all(|k| k.starts_with("some/prefix/")));
    let stats = gw.stats();
    assert_eq!(stats["signature_failures"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    use snapferry_engine::store::memory::MemoryStore;
    conformance(Arc::new(MemoryStore::new("conf"))).await;
    missing_root(&MemoryStore::missing("absent")).await;
}
