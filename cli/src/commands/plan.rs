//! A distributed round: `snapferry plan` (pin, weigh, pack, write the plan),
//! `snapferry sync --plan URL --unit I` (one unit, then its marker) and
//! `snapferry commit --plan URL` (the barrier). The engine does each step
//! ([`snapferry_engine::distributed`]); this reads the arguments, opens the stores,
//! prints and decides the exit code.

use std::sync::Arc;

use snapferry_engine::distributed;
use snapferry_engine::error::ErrorKind;
use snapferry_engine::store::{self, Store};

use super::{fail, failed, sync};
use crate::args::{
    plan_location, CommitArgs, Plan, PlanArgs, PlanCommand, PlanStatusArgs, SyncArgs,
};
use crate::exit;
use crate::output::{progress, report};

/// `snapferry plan status URL`.
async fn status(a: PlanStatusArgs) -> u8 {
    let (loc, side) = match plan_location(&a.plan, &a.dst_endpoint, &a.dst_region) {
        Ok(x) => x,
        Err(msg) => return fail(exit::USAGE, msg),
    };
    let store = match store::open_existing(&loc, &side).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let st = match distributed::read_plan(store.as_ref()).await {
        Ok((doc, _)) => distributed::status(store.as_ref(), &doc).await,
        Err(e) => Err(e),
    };
    match st {
        Ok(st) => {
            report::plan_status(&st, a.json);
            if st.unfinished.is_empty() {
                exit::OK
            } else {
                exit::FAILED
            }
        }
        Err(e) => failed(e),
    }
}

/// `snapferry plan SRC DST --units U`, or `plan status URL`.
pub async fn plan(a: PlanArgs) -> u8 {
    if let Some(PlanCommand::Status(s)) = a.command {
        return status(s).await;
    }
    let Some(units) = a.units else {
        return fail(exit::USAGE, "plan needs --units U");
    };
    if a.sync.plan.is_some() {
        return fail(
            exit::USAGE,
            "plan makes a plan from SRC and DST; --plan belongs to sync --unit and commit",
        );
    }
    let p = match a.sync.validate() {
        Ok(p) => p,
        Err(msg) => return fail(exit::USAGE, msg),
    };
    if let Some(Err(e)) = a.id.as_deref().map(distributed::check_id) {
        return failed(e);
    }
    // Recorded as absolute locations without secrets: every step reads them back.
    let (src_loc, dst_loc) = match (p.src.absolute(), p.dst.absolute()) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let control = match dst_loc.control(a.control.as_deref()) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let eps = &a.sync.ends;
    if control.overlaps(
        eps.dst_endpoint.as_deref(),
        &src_loc,
        eps.src_endpoint.as_deref(),
    ) {
        return fail(
            exit::USAGE,
            format!(
                "--control {} lies inside the source {} (or holds it); give a prefix beside the destination's repository",
                control.url(),
                src_loc.url()
            ),
        );
    }
    let (src, dst, control_store) = match open3(&p, &control).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let ends = (src_loc.url(), dst_loc.url());
    let how = (units, a.id.clone(), a.workers);
    match distributed::plan(src, dst, control_store, p.opts, how, ends).await {
        Ok((doc, dir, reused)) => {
            if reused {
                err!("snapferry: plan {} exists; using it as it is", doc.id);
            }
            report::plan(
                &doc,
                &control.join(&dir).join(distributed::PLAN_KEY).url(),
                a.json,
            );
            exit::OK
        }
        Err(e) => failed(e),
    }
}

/// `snapferry sync --plan URL [--unit I]`.
pub async fn unit(a: SyncArgs) -> u8 {
    let Some(i) = a.unit else {
        return fail(
            exit::USAGE,
            "sync --plan needs --unit I (or JOB_COMPLETION_INDEX); to commit the round, run snapferry commit --plan URL",
        );
    };
    let wait = match crate::args::parse_duration("--lease-wait", &a.lease_wait) {
        Ok(w) => w,
        Err(msg) => return fail(exit::USAGE, msg),
    };
    let deadline = std::time::Instant::now() + wait;
    // Another run holds the unit's lease (a crashed worker's, until it expires; or a
    // second worker on the unit): nothing was written, so trying again later is safe.
    let (r, end, p) = loop {
        let (step, p) = match open_step(&a, &format!("unit {i}")).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let (run, end) = match distributed::prepare_unit(step, i).await {
            Ok(x) => x,
            Err(e) => return failed(e),
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match sync::drive(run, p.progress).await {
            Ok(r) => break (r, end, p),
            Err(e) if e.kind() == ErrorKind::Locked && !left.is_zero() => {
                err!(
                    "snapferry: {e}; trying again in 10s (--lease-wait, {}s left)",
                    left.as_secs()
                );
                tokio::select! {
                    _ = tokio::time::sleep(left.min(std::time::Duration::from_secs(10))) => {}
                    _ = super::interrupted() => return fail(exit::FAILED, "interrupted while waiting for the unit's lease"),
                }
            }
            Err(e) => return failed(e),
        }
    };
    report::sync_summary(&r);
    match end.finish(&r).await {
        Ok(marker) => report::unit_marker(i, marker.as_ref()),
        Err(e) => return failed(e),
    }
    sync::finish(&p, &r)
}

/// `snapferry commit --plan URL`.
pub async fn commit(a: CommitArgs) -> u8 {
    let (step, p) = match open_step(&a.sync, "commit").await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let run = match distributed::prepare_commit(step).await {
        Ok(run) => run,
        Err(e) => return failed(e),
    };
    match sync::drive(run, p.progress).await {
        Ok(r) => {
            report::sync_summary(&r);
            sync::finish(&p, &r)
        }
        Err(e) => failed(e),
    }
}

/// A step of a plan (a unit, the commit), opened: the plan of `--plan` and its pinned
/// root, the run's arguments checked against the plan's SRC and DST, both stores, and the
/// progress printer with the step's banner.
async fn open_step(a: &SyncArgs, what: &str) -> Result<(distributed::Step, Plan), u8> {
    let (loc, side) = match a.plan_dir() {
        Ok(Some(x)) => x,
        Ok(None) => {
            return Err(fail(
                exit::USAGE,
                "give --plan URL (printed by snapferry plan)",
            ))
        }
        Err(msg) => return Err(fail(exit::USAGE, msg)),
    };
    let plan_store = store::open_existing(&loc, &side).await.map_err(failed)?;
    let (doc, root) = distributed::read_plan(plan_store.as_ref())
        .await
        .map_err(failed)?;
    let p = a
        .validate_for(&doc.source, &doc.destination)
        .map_err(|msg| fail(exit::USAGE, msg))?;
    let (src, dst) = open2(&p).await?;
    let banner = format!(
        "snapferry: plan {} {what}: {} -> {}",
        doc.id,
        src.describe(),
        dst.describe()
    );
    let observer = Arc::new(progress::Printer::new(false, a.verbose > 0, banner));
    let step = distributed::Step {
        plan_store,
        doc,
        root,
        src,
        dst,
        opts: p.opts.clone(),
        observer,
    };
    Ok((step, p))
}

async fn open2(p: &Plan) -> Result<(Arc<dyn Store>, Arc<dyn Store>), u8> {
    let src = store::open(&p.src, &p.src_side).await.map_err(failed)?;
    let dst = store::open(&p.dst, &p.dst_side).await.map_err(failed)?;
    Ok((src, dst))
}

async fn open3(
    p: &Plan,
    control: &snapferry_engine::location::Location,
) -> Result<(Arc<dyn Store>, Arc<dyn Store>, Arc<dyn Store>), u8> {
    let (src, dst) = open2(p).await?;
    let control = store::open(control, &p.dst_side).await.map_err(failed)?;
    Ok((src, dst, control))
}
