//! The differ's memory stays flat: ten times the keys, (almost) the same peak RSS.

use std::process::Command;

fn peak_mib(keys: u64) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_snapferry-bench"))
        .args(["diff-memory", &keys.to_string()])
        .output()
        .expect("run snapferry-bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(s.contains("differ held at most 2 entries"), "{s}");
    let peak = s
        .split("peak RSS ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("peak RSS in output");
    peak.parse().expect("a number")
}

#[test]
fn diff_of_a_million_keys_runs_in_flat_memory() {
    let small = peak_mib(100_000);
    let large = peak_mib(1_000_000);
    // A map of a million keys would need well over 100 MiB; flat means a few MiB apart.
    assert!(large < 32.0, "1,000,000 keys peaked at {large} MiB");
    assert!(
        large - small < 8.0,
        "100k keys: {small} MiB, 1M keys: {large} MiB"
    );
}
