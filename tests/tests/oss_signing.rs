//! snapferry's OSS V4 signer against the official Alibaba Cloud OSS Python SDK v2:
//! 1,200 random requests (unicode, spaces, `+`, `%`, empty query values, tokens,
//! additional headers), each signed by both; every Authorization header must match.

use std::io::Write;
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};
use snapferry_engine::store::oss::sign::{sign, OssCredentials, SignInput};
use testkit::*;

const N: usize = 1200;

fn pick<'a>(r: &mut impl Rng, xs: &[&'a str]) -> &'a str {
    xs[r.random_range(0..xs.len())]
}

fn random_text(r: &mut impl Rng, max: usize) -> String {
    const PIECES: &[&str] = &[
        "a", "Z", "0", "9", "-", "_", ".", "~", " ", "+", "%", "%2F", "=", "&", "?", "#", "!", "*",
        "'", "(", ")", ";", ":", "@", "$", ",", "[", "]", "|", "ü", "文件", "😀", "é", "\u{00a0}",
        "snap", "index-", "__",
    ];
    let n = r.random_range(0..=max);
    (0..n).map(|_| pick(r, PIECES)).collect()
}

#[test]
fn signatures_match_the_official_python_sdk_on_random_requests() {
    let seed: u64 = std::env::var("SNAPFERRY_SIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut lines = Vec::with_capacity(N);
    let mut ours = Vec::with_capacity(N);
    for _ in 0..N {
        let method = pick(&mut r, &["GET", "PUT", "POST", "DELETE", "HEAD"]);
        let bucket = pick(&mut r, &["bucket", "snap-repo-01", "a1b"]);
        let key: String = (0..r.random_range(0..4))
            .map(|_| random_text(&mut r, 6))
            .collect::<Vec<_>>()
            .join("/");
        let key = if key.is_empty() { "k".to_string() } else { key };
        let mut query: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..r.random_range(0..5) {
            let k = match r.random_range(0..4) {
                0 => pick(
                    &mut r,
                    &[
                        "uploads",
                        "uploadId",
                        "partNumber",
                        "list-type",
                        "prefix",
                        "encoding-type",
                        "continuation-token",
                        "delete",
                    ],
                )
                .to_string(),
                _ => random_text(&mut r, 4),
            };
            if k.is_empty() || !seen.insert(k.clone()) {
                continue;
            }
            let v = if r.random_bool(0.3) {
                String::new()
            } else {
                random_text(&mut r, 5)
            };
            query.push((k, v));
        }
        let mut headers: Vec<(String, String)> = vec![];
        if r.random_bool(0.5) {
            headers.push((
                "Content-Type".into(),
                pick(
                    &mut r,
                    &["application/octet-stream", "text/plain", "application/xml"],
                )
                .into(),
            ));
        }
        if r.random_bool(0.3) {
            headers.push(("Content-MD5".into(), "ICy5YqxZB1uWSwcVLSNLcA==".into()));
        }
        for i in 0..r.random_range(0..3) {
            headers.push((
                format!("x-oss-meta-m{i}"),
                pick(
                    &mut r,
                    &["v", "value with spaces", "a+b=c", "0123456789abcdef"],
                )
                .into(),
            ));
        }
        let mut additional: Vec<&str> = vec![];
        for h in ["Content-Disposition", "abc", "X-Custom"] {
            if r.random_bool(0.3) {
                headers.push((
                    h.into(),
                    pick(&mut r, &["attachment", "value", "x y"]).into(),
                ));
                if r.random_bool(0.6) {
                    additional.push(h);
                }
            }
        }
        if r.random_bool(0.1) {
            additional.push("x-oss-not-present");
        }
        let time: i64 = r.random_range(1_600_000_000..1_900_000_000);
        let region = pick(
            &mut r,
            &[
                "cn-hangzhou",
                "cn-beijing",
                "ap-southeast-1",
                "eu-central-1",
            ],
        );
        let cred = OssCredentials {
            access_key_id: format!("LTAI{}", r.random_range(1000..9999)),
            access_key_secret: format!("secret{}", r.random_range(0..1_000_000)),
            security_token: if r.random_bool(0.3) {
                Some(format!("tok{}", r.random_range(0..1000)))
            } else {
                None
            },
        };
        let signed = sign(
            &SignInput {
                method,
                bucket,
                key: &key,
                query: &query,
                headers: &headers,
                additional_headers: &additional,
                time,
                region,
            },
            &cred,
        );
        let auth = signed
            .headers
            .iter()
            .find(|(k, _)| k == "Authorization")
            .map(|(_, v)| v.clone())
            .expect("Authorization");
        ours.push(auth);
        let hdrs: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        lines.push(
            serde_json::json!({
                "method": method, "bucket": bucket, "key": key, "query": query,
                "headers": hdrs, "additional_headers": additional, "time": time,
                "access_key_id": cred.access_key_id, "access_key_secret": cred.access_key_secret,
                "security_token": cred.security_token, "region": region,
            })
            .to_string(),
        );
    }
    let mut child = Command::new(oss_python())
        .arg(repo_root().join("fixtures/oss-gateway/sign_batch.py"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TZ", "Asia/Shanghai") // the SDK must not depend on the local zone
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setup failed: cannot run sign_batch.py");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("sign_batch.py output");
    writer.join().expect("writer").expect("write requests");
    assert!(
        out.status.success(),
        "sign_batch.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(theirs.len(), N, "one signature per request");
    let mut mismatches = 0;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if a != b {
            mismatches += 1;
            if mismatches <= 5 {
                eprintln!("request {i}: {}\n ours:   {a}\n theirs: {b}", lines[i]);
            }
        }
    }
    assert_eq!(mismatches, 0, "{mismatches} of {N} signatures differ (seed {seed}; rerun with SNAPFERRY_SIGN_SEED={seed})");
}
