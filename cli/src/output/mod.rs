//! Everything the binary prints: results on stdout (tables, JSON, the dry-run plan),
//! messages, progress and logs on stderr. Kept apart from the commands so that what a
//! script parses (a contract, like the exit codes) is written in one folder:
//! [`progress`] (the bar, periodic lines and plan events of a sync), [`report`] (sync
//! summaries and report files, `repo` and `migrate` results), [`probe`] (`bench probe`).
//!
//! Output never panics: `println!` and `eprintln!` panic when the reader has gone
//! (`snapferry repo ls | head -1`, a closed stderr). The writers here ignore failures;
//! once stdout is closed, further output is skipped and the command ends with the exit
//! code it would have had.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout; remembers a closed stdout.
pub fn out_line(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if o.write_fmt(args).and_then(|_| o.write_all(b"\n")).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes text to stdout as it is; remembers a closed stdout.
pub fn out_text(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if o.write_all(text.as_bytes())
        .and_then(|_| o.flush())
        .is_err()
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes one line to stderr, ignoring a closed stderr.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|_| e.write_all(b"\n"));
}

/// `println!` that never panics.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::out_line(format_args!($($t)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::output::err_line(format_args!($($t)*)) };
}

// After the macros: the submodules use them.
pub mod probe;
pub mod progress;
pub mod report;

/// Human-readable binary size (`1.5 MiB`; bytes below 1 KiB as `512 B`).
///
/// Ours rather than a crate's: `indicatif::HumanBytes` prints two decimals (`1.50 MiB`),
/// and `bytesize`'s IEC display, identical below 1 EiB, switches to `EiB` where this
/// stays in `PiB`; the progress lines and reports keep the figures they always had.
pub fn human(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A result as pretty JSON on stdout (`--json`).
pub fn json(v: &impl serde::Serialize) {
    out_line(format_args!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// Logs go to stderr, filtered by `-v` / `-vv` or `SNAPFERRY_LOG`.
pub fn init_logging(verbose: u8) {
    // Only our own crates log: SDK internals at debug/trace can include request headers
    // (secrets must never reach a log), and their warnings would break the one-line
    // error contract; what matters of them reaches the user through our errors.
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = std::env::var("SNAPFERRY_LOG")
        .unwrap_or_else(|_| format!("off,snapferry={level},snapferry_engine={level}"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // A closed stderr (`2>&1 | head`) must not turn a log line into a panic.
        .log_internal_errors(false)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_read_as_they_always_have() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1024 * 1024 - 1, "1024.0 KiB"),
            (5 << 20, "5.0 MiB"),
            (3 << 30, "3.0 GiB"),
            (1 << 40, "1.0 TiB"),
            (1 << 50, "1.0 PiB"),
            (1 << 60, "1024.0 PiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human(n), want, "{n}");
        }
    }
}
