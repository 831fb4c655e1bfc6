//! Temporary credentials that expire during a run, on both sides: an S3 source whose
//! AWS profile gets STS sessions from a `credential_process` (the STS stand-in in front
//! of MinIO, fixtures/sts), and OSS destinations whose STS tokens come from each of the
//! providers Alibaba Cloud's SDKs read (a command, a credentials URI, an ECS RAM role,
//! RRSA/OIDC) — the OSS gateway issues and enforces them. Sessions last a few seconds
//! here, so a run of some seconds outlives several; forced expiry mid-run checks that a
//! refused token is replaced and the request retried.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::*;

const KIB: usize = 1 << 10;

/// Objects that take a few seconds to copy at the rate used below.
fn objects(n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("obj/{i:03}"), data(size, 7000 + i as u64)))
        .collect()
}

fn fill(m: &Minio, objs: &[(String, Vec<u8>)]) {
    let c = m.client();
    rt().block_on(async {
        create_bucket(&c, "src").await;
        for (k, d) in objs {
            put(&c, "src", k, d.clone()).await;
        }
    });
}

fn assert_gateway_holds(gw: &OssGateway, objs: &[(String, Vec<u8>)]) {
    let mut want: Vec<String> = objs.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(gw.keys("dst"), want);
    for (k, d) in objs {
        let got = gw.object("dst", k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(sha256_hex(&got), sha256_hex(d), "{k}: bytes differ");
    }
}

/// `sync s3://src oss://dst` with no OSS credentials set (the caller picks a provider).
fn to_oss(src: &str, gw: &OssGateway, report: &std::path::Path, rate: &str) -> Command {
    let mut c = snapferry();
    c.env_remove("SNAPFERRY_DST_ACCESS_KEY_ID")
        .env_remove("SNAPFERRY_DST_SECRET_ACCESS_KEY")
        .args([
            "sync",
            "s3://src",
            "oss://dst",
            "--src-endpoint",
            src,
            "--dst-endpoint",
            &gw.endpoint,
            "--bwlimit",
            rate,
            "--concurrency",
            "4",
            "--progress",
            "never",
            "-v",
        ])
        .arg(format!("--report={}", report.display()));
    c
}

/// Runs `c`, calling `mid` once `ready()` holds (polled), and returns the output.
fn run_with(mut c: Command, ready: impl Fn() -> bool, mid: impl FnOnce()) -> Output {
    use std::process::Stdio;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn snapferry");
    let t = Instant::now();
    loop {
        if ready() {
            mid();
            break;
        }
        if child.try_wait().expect("poll snapferry").is_some() {
            break; // ended before: the caller's assertions say how
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the run never got under way"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait for snapferry")
}

fn fault_counts(report: &serde_json::Value, kind: &str) -> (u64, u64) {
    let f = &report["faults"][kind];
    (
        f["recovered"].as_u64().unwrap_or(0),
        f["gave_up"].as_u64().unwrap_or(0),
    )
}

/// A sync from the S3 source behind the STS stand-in (an AWS profile whose
/// `credential_process` asks it for sessions of `s3_secs`) to the gateway (a
/// `SNAPFERRY_DST_CREDENTIAL_PROCESS` asking for tokens of `oss_secs`).
fn sts_run(
    sts: &StsProxy,
    gw: &OssGateway,
    dir: &std::path::Path,
    secs: u64,
    rate: &str,
) -> (Command, std::path::PathBuf) {
    let config = write_aws_config(dir, "snapsrc", &sts.credential_process(secs));
    let report = dir.join("report.json");
    let mut c = to_oss(&sts.endpoint, gw, &report, rate);
    c.env_remove("SNAPFERRY_SRC_ACCESS_KEY_ID")
        .env_remove("SNAPFERRY_SRC_SECRET_ACCESS_KEY")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SNAPFERRY_SRC_PROFILE", "snapsrc")
        .env(
            "SNAPFERRY_DST_CREDENTIAL_PROCESS",
            gw.sts_credential_process(secs),
        );
    (c, report)
}

fn no_secret_in(se: &str) {
    for secret in [SECRET_KEY, OSS_SK] {
        assert!(!se.contains(secret), "a secret in the log");
    }
}

#[test]
fn sessions_that_expire_mid_run_are_refreshed_before_they_do_on_both_sides() {
    let m = Minio::start();
    // Small objects: a request takes a fraction of a second at this rate, inside the
    // margin a refresh leaves before expiry.
    let objs = objects(200, 64 * KIB);
    fill(&m, &objs);
    let sts = StsProxy::start(&m);
    let gw = OssGateway::start(&["dst"]);
    let tmp = tempfile::tempdir().unwrap();
    // Sessions of 6 s, refreshed after about 4.5 s; the run lasts about 13 s.
    let (c, report) = sts_run(&sts, &gw, tmp.path(), 6, "1MiB/s");
    let out = run_with(c, || true, || {});
    let (_, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert_gateway_holds(&gw, &objs);
    let r = read_report(&report);
    assert!(
        r["duration_seconds"].as_f64().unwrap() > 9.0,
        "outlived sessions: {r}"
    );
    // Several sessions on each side, and not one request refused as expired.
    let st = sts.stats();
    let keys_used = st["by_key"].as_object().map_or(0, |o| o.len());
    assert!(keys_used >= 3, "sessions were refreshed: {st}");
    assert_eq!(st["expired"], 0, "{st}");
    let g = gw.stats()["sts"].clone();
    assert!(g["issued"].as_u64().unwrap() >= 3, "{g}");
    assert_eq!(g["expired_rejections"], 0, "{g}");
    assert!(r["faults"].get("CredentialsExpired").is_none(), "{r}");
    no_secret_in(&se);
}

#[test]
fn credentials_refused_as_expired_are_replaced_and_the_request_retried_on_both_sides() {
    let m = Minio::start();
    let objs = objects(48, 128 * KIB);
    fill(&m, &objs);
    let sts = StsProxy::start(&m);
    let gw = OssGateway::start(&["dst"]);
    let tmp = tempfile::tempdir().unwrap();
    // Long sessions: only the revocation below makes a server refuse them.
    let (c, report) = sts_run(&sts, &gw, tmp.path(), 600, "1MiB/s");
    // Once a quarter has landed, every token in use on both sides is revoked: the
    // servers answer ExpiredToken / SecurityTokenExpired to the next request.
    let mut revoked = (0, 0);
    let out = run_with(
        c,
        || gw.keys("dst").len() >= objs.len() / 4,
        || revoked = (sts.expire_all(), gw.expire_sts()),
    );
    let (_, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert!(revoked.0 >= 1 && revoked.1 >= 1, "{revoked:?}");
    assert_gateway_holds(&gw, &objs);
    let r = read_report(&report);
    assert_eq!(r["failed_objects"], 0, "{r}");
    let (recovered, gave_up) = fault_counts(&r, "CredentialsExpired");
    assert!(recovered >= 2, "refusals on both sides were retried: {r}");
    assert_eq!(gave_up, 0, "{r}");
    let st = sts.stats();
    assert!(st["expired"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["by_key"].as_object().map_or(0, |o| o.len()) >= 2, "{st}");
    let g = gw.stats()["sts"].clone();
    assert!(g["expired_rejections"].as_u64().unwrap() >= 1, "{g}");
    assert!(g["issued"].as_u64().unwrap() >= 2, "{g}");
    // Each refusal cost one retry, not a storm: at most one per request in flight.
    let retried = r["faults"]["CredentialsExpired"]["retried_attempts"]
        .as_u64()
        .unwrap();
    assert!(
        retried <= 2 * 4 + 2,
        "{retried} retries for 4 workers a side: {r}"
    );
    no_secret_in(&se);
}

#[test]
fn oss_tokens_from_a_credentials_uri_an_ecs_role_and_oidc_are_refreshed() {
    let m = Minio::start();
    // Small objects: each request takes a fraction of a second at the rate below, well
    // inside the margin a refresh leaves before expiry.
    let objs = objects(96, 64 * KIB);
    fill(&m, &objs);
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("oidc-token");
    std::fs::write(&token_file, "eyJ.first-token").unwrap();
    for provider in ["uri", "ecs", "oidc"] {
        // Tokens of 6 s (refreshed after 4 s or so); the run takes about 6 s.
        let gw = OssGateway::start_with(&["dst"], &["--sts-duration", "6"]);
        let report = tmp.path().join(format!("{provider}.json"));
        let mut c = to_oss(&m.endpoint, &gw, &report, "1MiB/s");
        match provider {
            "uri" => {
                c.env(
                    "ALIBABA_CLOUD_CREDENTIALS_URI",
                    format!("{}/__gateway/sts/uri", gw.endpoint),
                );
            }
            "ecs" => {
                c.env("ALIBABA_CLOUD_ECS_METADATA", "snapferry-ecs-role")
                    .env(
                        "SNAPFERRY_ECS_METADATA_ENDPOINT",
                        format!("{}/__gateway/ecs", gw.endpoint),
                    );
            }
            _ => {
                c.env("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/snapferry")
                    .env(
                        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                        "acs:ram::1:oidc-provider/ack",
                    )
                    .env("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &token_file)
                    .env(
                        "ALIBABA_CLOUD_STS_ENDPOINT",
                        format!("{}/__gateway/sts-oidc", gw.endpoint),
                    );
            }
        }
        // Mid-run, Kubernetes rotates the projected token: the next fetch reads it.
        let out = run_with(
            c,
            || gw.keys("dst").len() >= 4,
            || std::fs::write(&token_file, "eyJ.rotated-token").unwrap(),
        );
        std::fs::write(&token_file, "eyJ.first-token").unwrap();
        let (_, se) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{provider}: {se} {}",
            std::fs::read_to_string(&report).unwrap_or_default()
        );
        assert_gateway_holds(&gw, &objs);
        let g = gw.stats()["sts"].clone();
        let calls = g["provider_calls"][provider].as_u64().unwrap();
        assert!(calls >= 2, "{provider}: refreshed during the run: {g}");
        assert_eq!(
            g["expired_rejections"], 0,
            "{provider}: refreshed before expiry: {g}"
        );
        if provider == "oidc" {
            let seen: Vec<&str> = g["oidc_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(seen.first(), Some(&"eyJ.first-token"), "{g}");
            assert_eq!(seen.last(), Some(&"eyJ.rotated-token"), "{g}");
        }
        assert!(
            !se.contains("eyJ."),
            "{provider}: the OIDC token in the log"
        );
    }
}

#[test]
fn a_credential_provider_that_fails_is_one_line_and_exit_3_with_nothing_written() {
    let m = Minio::start();
    let objs = objects(2, KIB);
    fill(&m, &objs);
    let gw = OssGateway::start(&["dst"]);
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r.json");
    for (name, value) in [
        (
            "SNAPFERRY_DST_CREDENTIAL_PROCESS",
            "echo 'vault sealed' >&2; exit 2".to_string(),
        ),
        (
            "ALIBABA_CLOUD_CREDENTIALS_URI",
            format!("{}/__gateway/no-such-endpoint", gw.endpoint),
        ),
    ] {
        let mut c = to_oss(&m.endpoint, &gw, &report, "100MiB/s");
        c.env(name, &value);
        let out = c.output().unwrap();
        let (_, se) = texts(&out);
        assert_eq!(out.status.code(), Some(3), "{name}: {se}");
        let errors: Vec<&str> = se
            .lines()
            .filter(|l| l.starts_with("snapferry: error"))
            .collect();
        assert_eq!(errors.len(), 1, "{name}: one line: {se}");
        assert!(
            errors[0].contains("credential") && errors[0].contains("destination"),
            "{name}: says what failed: {se}"
        );
        assert!(gw.keys("dst").is_empty(), "{name}: nothing written");
    }
    // Half an OIDC configuration is bad usage, found before anything is contacted.
    let mut c = to_oss(&m.endpoint, &gw, &report, "100MiB/s");
    c.env("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/x");
    let out = c.output().unwrap();
    let (_, se) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("ALIBABA_CLOUD_OIDC_TOKEN_FILE"), "{se}");
}
