//! `snapferry sync SRC DST`: validate everything, open and preflight both stores, run
//! the pipeline with progress and Ctrl-C handling, then the summary, the report file and
//! the exit code. Every refusal happens before the banner, so it stays one line.

use std::sync::Arc;

use snapferry_engine::pipeline::{Report, SyncRun};
use snapferry_engine::store;
use snapferry_engine::Error;

use super::{fail, failed, on_signal};
use crate::args::{Plan, ProgressMode, SyncArgs};
use crate::exit;
use crate::output::{progress, report};

/// Runs `sync`; returns the exit code.
pub async fn run(a: SyncArgs) -> u8 {
    if a.plan.is_some() {
        return super::plan::unit(a).await;
    }
    // 1. Everything the user typed is checked before any store is contacted.
    let plan = match a.validate() {
        Ok(p) => p,
        Err(msg) => return fail(exit::USAGE, msg),
    };
    // 2. Stores: built, then preflighted (reachable, authenticated, bucket exists).
    let src = match store::open(&plan.src, &plan.src_side).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let dst = match store::open(&plan.dst, &plan.dst_side).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let banner = format!(
        "snapferry: sync {} -> {}{}",
        src.describe(),
        dst.describe(),
        if plan.opts.dry_run {
            " (dry run: nothing will be written)"
        } else {
            ""
        }
    );
    let observer = Arc::new(progress::Printer::new(
        plan.opts.dry_run,
        a.verbose > 0,
        banner,
    ));
    let run = SyncRun::new(src, dst, plan.opts.clone(), observer);
    if let Err(e) = run.preflight().await {
        return failed(e);
    }
    // 3. Run, with progress and Ctrl-C / SIGTERM handling.
    let r = match drive(run, plan.progress).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    // 4. Report and exit code.
    report::sync_summary(&r);
    finish(&plan, &r)
}

/// Runs a prepared sync with the progress display and Ctrl-C / SIGTERM handling.
pub(super) async fn drive(run: SyncRun, progress: ProgressMode) -> Result<Report, Error> {
    let handle = run.handle();
    let signals = tokio::spawn(on_signal(handle.cancel.clone()));
    let mode = match progress {
        ProgressMode::Auto => progress::Mode::Auto,
        ProgressMode::Always => progress::Mode::Always,
        ProgressMode::Never => progress::Mode::Never,
    };
    let display = progress::spawn(handle.counters.clone(), mode);
    let result = run.run().await;
    display.finish().await;
    signals.abort();
    result
}

/// `--report`, then the run's exit code.
pub(super) fn finish(plan: &Plan, r: &Report) -> u8 {
    if let Some(path) = &plan.report_path {
        if let Err(e) = report::write_report(path, r) {
            return fail(
                exit::FAILED,
                format!("cannot write the report to {}: {e}", path.display()),
            );
        }
    }
    exit::for_report(r)
}
