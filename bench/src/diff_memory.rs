//! The differ memory probe (W5): merge-joins two generated listings of KEYS keys each
//! (the destination holds every other key) through the engine's real differ and prints
//! the process's peak resident set size (VmHWM) and the most entries the differ held.
//!
//! ```text
//! cargo run --release -p snapferry-bench -- diff-memory [KEYS]
//! ```
//! `run` executes this probe in a child process for W5, so the figure is the whole
//! process's peak as the OS reports it.

use std::sync::Arc;

use anyhow::Context;
use snapferry_engine::pipeline::differ::{merge_join, DiffStats};
use snapferry_engine::store::ObjectMeta;
use tokio::sync::mpsc;

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn listing(n: u64, step: u64) -> mpsc::Receiver<snapferry_engine::Result<ObjectMeta>> {
    let (tx, rx) = mpsc::channel(1000);
    tokio::spawn(async move {
        for i in (0..n).step_by(step as usize) {
            let m = ObjectMeta {
                key: format!("indices/{:08x}/0/__{:020}", i / 1000, i),
                size: 4096 + i % 65536,
                mtime_ms: Some(1_764_000_000_000),
                etag: Some(format!("{:032x}", i)),
                ..Default::default()
            };
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs the probe over `n` source keys and prints its one-line result.
pub fn main(n: u64) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    let rt = rt.worker_threads(2).enable_all().build();
    let rt = rt.context("start the runtime")?;
    let before = peak_rss_kib().unwrap_or(0);
    let t = std::time::Instant::now();
    let (steps, held) = rt.block_on(async {
        let stats = Arc::new(DiffStats::default());
        let (tx, mut rx) = mpsc::channel(1000);
        let st = stats.clone();
        let join =
            tokio::spawn(async move { merge_join(listing(n, 1), listing(n, 2), tx, &st).await });
        let mut steps = 0u64;
        while rx.recv().await.is_some() {
            steps += 1;
        }
        join.await?.context("the differ failed")?;
        Ok::<_, anyhow::Error>((steps, stats.max_held()))
    })?;
    let (dst, secs) = (n.div_ceil(2), t.elapsed().as_secs_f64());
    let (peak, before) = (
        peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
        before as f64 / 1024.0,
    );
    println!("diff-memory: {n} source keys x {dst} destination keys, {steps} steps in {secs:.2}s; differ held at most {held} entries; peak RSS {peak:.1} MiB (before the diff {before:.1} MiB)");
    Ok(())
}
