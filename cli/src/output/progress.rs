//! A sync's progress: the bar (a terminal) or periodic lines (a log file, a CronJob),
//! and its events — the dry-run plan on stdout, one action per line, and with `-v` what
//! was copied and deleted. The counters are the pipeline's; this only reads them.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use snapferry_engine::pipeline::{Event, Observer};
use snapferry_engine::stats::Counters;
use tokio_util::sync::CancellationToken;

use super::human;

/// When to show progress (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar on a terminal, a line every 10 s otherwise.
    Auto,
    /// As auto, but a line every second when stderr is not a terminal.
    Always,
    /// Nothing.
    Never,
}

/// Prints the plan in dry-run mode (stdout, one action per line) and events with -v, and
/// the banner once the run starts (after every refusal, so a refusal stays one line).
pub struct Printer {
    dry_run: bool,
    verbose: bool,
    banner: String,
}

impl Printer {
    /// `banner` is printed when the run starts; `verbose` adds copied and deleted keys.
    pub fn new(dry_run: bool, verbose: bool, banner: String) -> Self {
        Printer {
            dry_run,
            verbose,
            banner,
        }
    }
}

impl Observer for Printer {
    fn event(&self, e: &Event) {
        let mut out = std::io::stdout().lock();
        match e {
            Event::Started => err!("{}", self.banner),
            Event::PlanCopy { key, size, reason } => {
                let _ = writeln!(out, "copy   {key} ({}): {reason}", human(*size));
            }
            Event::PlanDelete { key } => {
                let _ = writeln!(out, "delete {key}: not in source");
            }
            Event::StaleUpload { key, aborted } => {
                let _ = writeln!(
                    out,
                    "{} {key}: incomplete multipart upload left by an earlier run",
                    if *aborted { "abort " } else { "would abort" }
                );
            }
            Event::Copied { key, size } if self.verbose && !self.dry_run => {
                let _ = writeln!(out, "copied {key} ({})", human(*size));
            }
            Event::Deleted { key } if self.verbose => {
                let _ = writeln!(out, "deleted {key}");
            }
            _ => {}
        }
    }
}

/// A running progress display.
pub struct Display {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Display {
    /// Stops the display (the bar is cleared) and waits for its last line.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

fn line(c: &Counters, started: Instant) -> String {
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let el = started.elapsed().as_secs_f64().max(0.001);
    format!(
        "{} of {} moved ({}/s); objects: {} listed, {} copied, {} skipped, {} failed",
        human(g(&c.transferred_bytes)),
        human(g(&c.planned_bytes)),
        human((g(&c.transferred_bytes) as f64 / el) as u64),
        g(&c.listed_objects),
        g(&c.copied_objects),
        g(&c.skipped_objects),
        g(&c.failed_objects),
    )
}

/// Starts the display for `mode`.
pub fn spawn(counters: Arc<Counters>, mode: Mode) -> Display {
    let stop = CancellationToken::new();
    let tty = std::io::stderr().is_terminal();
    let task = match (mode, tty) {
        (Mode::Never, _) => None,
        (_, true) => {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let stop2 = stop.clone();
            Some(tokio::spawn(async move {
                let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                loop {
                    bar.set_length(g(&counters.planned_bytes));
                    bar.set_position(g(&counters.transferred_bytes));
                    bar.set_message(format!(
                        "{} copied, {} skipped, {} failed",
                        g(&counters.copied_objects),
                        g(&counters.skipped_objects),
                        g(&counters.failed_objects)
                    ));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = stop2.cancelled() => break,
                    }
                }
                bar.finish_and_clear();
            }))
        }
        (_, false) => {
            let stop2 = stop.clone();
            let started = Instant::now();
            // Not a terminal: periodic lines (log files, CronJobs); `always` makes them
            // once a second, `auto` every 10 s.
            let every = if mode == Mode::Always { 1 } else { 10 };
            Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(every)) => {
                            err!("snapferry: progress: {}", line(&counters, started));
                        }
                        _ = stop2.cancelled() => break,
                    }
                }
            }))
        }
    };
    Display { stop, task }
}
