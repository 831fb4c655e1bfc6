//! The thin cluster client: SigV4 against botocore, and every call against a real
//! OpenSearch node.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rand::{Rng, SeedableRng};
use serde_json::json;
use snapferry_engine::cluster::sigv4::AwsSigner;
use snapferry_engine::cluster::{Auth, Cluster, ClusterConfig};
use testkit::*;

#[test]
fn sigv4_matches_botocore_on_random_requests() {
    let seed: u64 = rand::random();
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut lines = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..300 {
        let method = ["GET", "PUT", "POST", "DELETE", "HEAD"][r.random_range(0..5)];
        let path = [
            "/",
            "/_snapshot/repo",
            "/_snapshot/repo/snap-1/_restore",
            "/logs-2026.11/_count",
            "/_cat/indices/logs*",
            "/idx/_recovery",
        ][r.random_range(0..6)];
        let query = [
            "",
            "?format=json",
            "?wait_for_completion=false",
            "?format=json&expand_wildcards=open%2Cclosed",
            "?a=b&a=c",
        ][r.random_range(0..5)];
        let url = format!(
            "https://search-dom-{}.us-west-2.es.amazonaws.com{path}{query}",
            r.random_range(0..100)
        );
        let body = if r.random_bool(0.5) {
            json!({"indices": "a,b", "n": r.random_range(0..1000)})
                .to_string()
                .into_bytes()
        } else {
            Vec::new()
        };
        let token = r
            .random_bool(0.3)
            .then(|| format!("tok{}", r.random_range(0..1000)));
        let time = r.random_range(1_600_000_000u64..1_900_000_000);
        let signer = AwsSigner {
            region: "us-west-2".into(),
            service: "es".into(),
            credentials: aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                token.clone(),
                None,
                "t",
            ),
            provider: None,
        };
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        let signed = signer
            .sign(
                method,
                &url,
                &headers,
                &body,
                UNIX_EPOCH + Duration::from_secs(time),
            )
            .unwrap();
        let auth = signed
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .expect("authorization")
            .1
            .clone();
        ours.push(auth);
        lines.push(
            json!({"method": method, "url": url, "headers": {"content-type": "application/json"},
                   "body_b64": base64::engine::general_purpose::STANDARD.encode(&body), "time": time,
                   "region": "us-west-2", "service": "es", "access_key_id": "AKIDEXAMPLE",
                   "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session_token": token})
            .to_string(),
        );
    }
    let mut child = Command::new(oss_python())
        .arg(repo_root().join("fixtures/aws/sigv4_batch.py"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setup failed: cannot run sigv4_batch.py");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    let w = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(theirs.len(), ours.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "request {i} (seed {seed}): {}", lines[i]);
    }
}

#[test]
fn every_client_call_works_against_a_real_opensearch() {
    let tmp = tempfile::tempdir().unwrap();
    let path_repo = tmp.path().join("repos");
    std::fs::create_dir_all(&path_repo).unwrap();
    let node = SearchNode::start(&path_repo);
    let rt = rt();
    let c = Cluster::new(ClusterConfig {
        url: node.endpoint.clone(),
        auth: Auth::None,
        ..Default::default()
    })
    .unwrap();
    rt.block_on(async {
        let v = c.version().await.unwrap();
        assert_eq!(v.distribution, "opensearch");
        assert_eq!(v.major, 2);
        // Index some documents.
        for i in 0..25 {
            node.call("PUT", &format!("/logs-a/_doc/{i}?refresh=true"), json!({"n": i}));
        }
        assert_eq!(c.count("logs-a").await.unwrap(), 25);
        assert_eq!(c.indices("logs-*").await.unwrap(), ["logs-a"]);
        assert!(c.indices("nomatch-*").await.unwrap().is_empty());
        // Repositories.
        assert!(c.repository("r1").await.unwrap().is_none());
        let loc = path_repo.join("r1");
        c.register_repository("r1", "fs", json!({"location": loc.to_str().unwrap()})).await.unwrap();
        let (kind, settings) = c.repository("r1").await.unwrap().unwrap();
        assert_eq!(kind, "fs");
        assert_eq!(settings["location"], loc.to_str().unwrap());
        let e = c.register_repository("bad", "fs", json!({"location": "/not/under/path/repo"})).await.unwrap_err();
        assert!(e.to_string().contains("repository_exception") || e.to_string().contains("path.repo"), "{e}");
        // Snapshot, polled to completion.
        c.create_snapshot("r1", "s1", "logs-*").await.unwrap();
        let s = c.wait_snapshot("r1", "s1", Duration::from_secs(60)).await.unwrap();
        assert!(s.succeeded(), "{s:?}");
        assert_eq!(s.indices, ["logs-a"]);
        assert!(s.total_shards > 0);
        let e = c.snapshot("r1", "nope").await.unwrap_err();
        assert!(e.to_string().contains("snapshot_missing_exception") || e.kind() == snapferry_engine::error::ErrorKind::NotFound, "{e}");
        // Restore over a closed index, then open and wait for recovery.
        node.call("PUT", "/logs-a/_doc/99?refresh=true", json!({"n": 99}));
        assert_eq!(c.count("logs-a").await.unwrap(), 26);
        let e = c.restore("r1", "s1", json!({"indices": "logs-a", "include_global_state": false})).await.unwrap_err();
        assert!(e.to_string().contains("snapshot_restore_exception"), "restoring over an open index must fail: {e}");
        c.close_index("logs-a").await.unwrap();
        c.restore("r1", "s1", json!({"indices": "logs-a", "include_global_state": false})).await.unwrap();
        c.wait_recovery("logs-a", Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.count("logs-a").await.unwrap(), 25, "restored to the snapshot's state");
        // Renamed restore with index settings.
        c.restore("r1", "s1", json!({"indices": "logs-a", "rename_pattern": "(.+)", "rename_replacement": "copy-$1", "index_settings": {"index.number_of_replicas": 0}})).await.unwrap();
        c.wait_recovery("copy-logs-a", Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.count("copy-logs-a").await.unwrap(), 25);
        c.close_index("copy-logs-a").await.unwrap();
        c.open_index("copy-logs-a").await.unwrap();
        c.wait_recovery("copy-logs-a", Duration::from_secs(60)).await.unwrap();
        // Errors are one line and typed.
        let e = c.count("does-not-exist").await.unwrap_err();
        assert!(e.kind() == snapferry_engine::error::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("index_not_found_exception") && !e.to_string().contains('\n'), "{e}");
        // Unreachable cluster.
        let dead = Cluster::new(ClusterConfig { url: format!("http://127.0.0.1:{}", free_port()), ..Default::default() }).unwrap();
        assert!(dead.version().await.unwrap_err().kind() == snapferry_engine::error::ErrorKind::Unreachable);
        // Basic auth header is sent (OpenSearch without security ignores it) and never printed.
        let with_auth = Cluster::new(ClusterConfig {
            url: node.endpoint.clone(),
            auth: Auth::Basic { user: "u".into(), password: "PASSWORD-SENTINEL".into() },
            ..Default::default()
        })
        .unwrap();
        assert!(with_auth.version().await.is_ok());
        assert!(!format!("{:?}", Auth::Basic { user: "u".into(), password: "PASSWORD-SENTINEL".into() }).contains("SENTINEL"));
    });
    let _ = SystemTime::now();
}
