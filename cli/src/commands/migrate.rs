//! `snapferry migrate JOB.toml --phase ...`: loads and checks the job, opens both
//! repository stores, and runs (or with `--dry-run` prints) one phase of the engine's
//! workflow ([`snapferry_engine::migrate`]); `status` reads the state file only.

use std::path::Path;

use snapferry_engine::migrate::{state_path, Job, Migration, Phase, State};
use snapferry_engine::store;

use super::{fail, failed, on_signal};
use crate::args::{self, MigrateArgs, PhaseArg};
use crate::exit;
use crate::output::report;

/// Runs `migrate`; returns the exit code.
pub async fn run(a: MigrateArgs) -> u8 {
    let state_file = state_path(&a.job);
    // The job file first, for every phase: a mistyped path is an error, not "no phase
    // has run yet".
    let job = match Job::load(&a.job) {
        Ok(j) => j,
        Err(e) => return fail(exit::USAGE, e),
    };
    let phase = match a.phase {
        PhaseArg::Status => {
            return match State::load(&state_file) {
                Ok(st) => {
                    report::migrate_status(&st, &state_file);
                    exit::OK
                }
                Err(e) => failed(e),
            }
        }
        PhaseArg::Baseline => Phase::Baseline,
        PhaseArg::Incremental => Phase::Incremental,
        PhaseArg::Cutover => Phase::Cutover,
    };
    // Each side checked and opened in turn (the source's problem is reported first).
    let mut stores = Vec::new();
    let mut locations = Vec::new();
    for (name, side) in [("SRC", &job.source), ("DST", &job.destination)] {
        let (loc, o) =
            match args::job_store(name, &side.store, &side.store_endpoint, &side.store_region) {
                Ok(v) => v,
                Err(m) => return fail(exit::USAGE, m),
            };
        match store::open(&loc, &o).await {
            Ok(s) => stores.push(s),
            Err(e) => return failed(e),
        }
        locations.push((loc, side.store_endpoint.clone()));
    }
    if let [(a, ea), (b, eb)] = &locations[..] {
        if a.overlaps(ea.as_deref(), b, eb.as_deref()) {
            return fail(
                exit::USAGE,
                "job file: the source and destination stores are the same location or one lies inside the other; give the destination repository its own location",
            );
        }
    }
    let (Some(dst_store), Some(src_store)) = (stores.pop(), stores.pop()) else {
        return fail(exit::FAILED, "the repository stores were not opened");
    };
    let env = |k: &str| std::env::var(k).ok();
    let m = match Migration::new(job, src_store, dst_store, &env).await {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    // Ctrl-C / SIGTERM during the copy: uploads aborted, the lease released.
    let signals = tokio::spawn(on_signal(m.cancel.clone()));
    let code = phase_run(&m, &a, phase, &state_file).await;
    signals.abort();
    code
}

async fn phase_run(m: &Migration, a: &MigrateArgs, phase: Phase, state_file: &Path) -> u8 {
    if a.dry_run {
        return match m.plan(phase, a.set_write_block).await {
            Ok(calls) => {
                report::lines(calls);
                exit::OK
            }
            Err(e) => failed(e),
        };
    }
    let rec = match m.run(phase, a.set_write_block, state_file).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mismatch = report::migrate_phase(&rec);
    if phase == Phase::Cutover {
        match m.verify_destination().await {
            Ok(r) => {
                report::cutover_verified(&r);
                if !r.problems.is_empty() {
                    return exit::FAILED;
                }
            }
            Err(e) => return failed(e),
        }
        if !mismatch {
            out!("{}", m.switchover_checklist());
        }
    }
    if mismatch {
        exit::FAILED
    } else {
        exit::OK
    }
}
