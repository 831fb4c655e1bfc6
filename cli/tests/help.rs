//! `--help` documents the knobs' memory cost, the credentials and the exit codes.
//! (Being an integration test of this package also makes `cargo test --workspace`
//! build the `snapferry` binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn sync_help_states_memory_credentials_and_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_snapferry"))
        .args(["sync", "--help"])
        .env_clear()
        .output()
        .expect("run snapferry");
    assert!(out.status.success());
    let h = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--concurrency",
        "--part-size",
        "--multipart-threshold",
        "--bwlimit",
        "--tpslimit",
        "--delete",
        "--dry-run",
        "--report",
        "--progress",
        "--src-endpoint",
        "--dst-region",
        "peak buffer memory is about --concurrency x --part-size",
        "SNAPFERRY_SRC_ACCESS_KEY_ID",
        "the same with DST_",
        "0 everything in sync; 1 some objects failed",
        "2 bad usage or configuration; 3 cannot reach or authenticate to a store",
        "4 another snapferry run holds the destination",
        "--max-delete",
        "--allow-empty-source",
        "--replace-repository",
        "--lease-ttl",
    ] {
        assert!(h.contains(want), "--help lacks {want:?}:\n{h}");
    }
}

#[test]
fn version_and_unknown_subcommand() {
    let bin = env!("CARGO_BIN_EXE_snapferry");
    let v = Command::new(bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("snapferry "));
    let bad = Command::new(bin).arg("frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
