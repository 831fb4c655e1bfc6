//! The harness end to end at a tiny scale: the same command `bench/run.sh` runs, with
//! real MinIO servers and rclone, writes a RESULTS.md that has the machine, every
//! workload, every target with a verdict, a chart and the raw samples. (The full-size run
//! takes 16–28 minutes and is not part of the test suite; its output is bench/RESULTS.md.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn cache_bin(var: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("SNAPFERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&home).join(".cache/snapferry"));
    cache.join("bin").join(name)
}

#[test]
fn one_command_writes_results_with_every_target_and_a_chart() {
    let minio = cache_bin(
        "SNAPFERRY_MINIO",
        "minio-v0.0.0-20260212201848-7aac2a2c5b7c",
    );
    let rclone = cache_bin("SNAPFERRY_RCLONE", "rclone-v1.76.0");
    for b in [&minio, &rclone] {
        assert!(
            b.exists(),
            "setup failed: {} not found; run fixtures/test.sh (it installs MinIO and rclone)",
            b.display()
        );
    }
    // target/<profile>/deps/harness_smoke-* -> target/<profile>/snapferry
    let exe = std::env::current_exe().expect("test path");
    let snapferry = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("snapferry");
    assert!(
        snapferry.exists(),
        "setup failed: {} not built (cargo test --workspace builds it)",
        snapferry.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let (md, svg, json) = (
        tmp.path().join("RESULTS.md"),
        tmp.path().join("chart.svg"),
        tmp.path().join("results.json"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_snapferry-bench"))
        .arg("run")
        .arg("--snapferry")
        .arg(&snapferry)
        .arg("--minio")
        .arg(&minio)
        .arg("--rclone")
        .arg(&rclone)
        .args(["--unavailable", "mc=not installed for the smoke test"])
        .args(["--unavailable", "s3sync=not installed for the smoke test"])
        .args(["--scale", "0.002", "--reps", "1", "--diff-keys", "20000"])
        .arg("--fixture-repo")
        .arg(root.join("fixtures/repos/opensearch-2.19.6/repo"))
        .arg("--work-dir")
        .arg(tmp.path())
        .arg("--out")
        .arg(&md)
        .arg("--chart")
        .arg(&svg)
        .arg("--json")
        .arg(&json)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .output()
        .expect("run snapferry-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "snapferry-bench run failed:\n{stderr}"
    );
    let text = std::fs::read_to_string(&md).expect("RESULTS.md written");
    for section in [
        "## Machine",
        "## Tools",
        "## Workloads",
        "### W1",
        "### W2",
        "### W3",
        "### W4",
        "### W5",
        "## Targets",
    ] {
        assert!(text.contains(section), "missing {section:?} in:\n{text}");
    }
    for target in [
        "W1: at least 1.5× rclone's throughput",
        "W1: at least 85% of the pipe limit",
        "W2: at least 3× rclone's objects per second",
        "W4: at least 10× faster than rclone",
        "W4: zero per-object HEAD requests",
        "CPU: at most 0.5 CPU-s per GiB",
        "Memory (W1)",
        "Memory (W5)",
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {target}")))
            .unwrap_or_else(|| panic!("no target row {target:?} in:\n{text}"));
        assert!(
            row.contains("**MET**") || row.contains("**MISSED**"),
            "no verdict: {row}"
        );
    }
    assert!(
        text.contains("not installed for the smoke test"),
        "peers listed with the reason"
    );
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(chart.contains("<svg"), "not an SVG");
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid JSON");
    assert!(raw.is_object(), "{raw}");
}
