//! snapferry's benchmark harness.
//!
//! ```text
//! snapferry-bench run --out bench/RESULTS.md --chart bench/throughput.svg [options]
//! snapferry-bench report --json bench/results.json --out bench/RESULTS.md
//! snapferry-bench diff-memory [KEYS]
//! ```
//! `run` starts its own MinIO servers on loopback (through the test kit), writes each
//! workload to the source once, runs snapferry, rclone, `mc mirror` and s3sync against
//! the same data in alternating order, measures the pipe limit, and writes a JSON file
//! of every sample, the SVG chart and the generated blocks of RESULTS.md; `report`
//! renders the last two again from a saved JSON. `bash bench/run.sh` builds and
//! installs everything and runs it. `diff-memory` is the differ memory probe (W5).
//!
//! Layout: `run.rs` (the orchestration and the pipe limit), `workloads.rs` (W1–W4),
//! `tools.rs` (command lines and the measured child process), `stats.rs`, `report.rs`
//! (RESULTS.md's blocks, the targets table, the merge that keeps the prose), `chart.rs`
//! (SVG), `diff_memory.rs` (W5). Writing generated objects, the servers' request
//! counters and process accounting are the test kit's (`testkit::load`,
//! `testkit::usage`); `main.rs` is the command line.

pub mod chart;
pub mod diff_memory;
pub mod report;
pub mod run;
pub mod stats;
pub mod tools;
pub mod workloads;
