//! `snapferry bench probe SRC DST`: opens both stores, runs the engine's probe
//! ([`snapferry_engine::probe`]) with Ctrl-C wired to its cancel token, and prints what
//! it measured. The probe removes its scratch objects itself, also when interrupted.

use snapferry_engine::error::ErrorKind;
use snapferry_engine::probe::Probe;
use snapferry_engine::store;
use tokio_util::sync::CancellationToken;

use super::{fail, failed, interrupted};
use crate::args::{BenchCommand, ProbeArgs};
use crate::exit;
use crate::output::probe as show;

/// Runs a `bench` subcommand; returns the exit code.
pub async fn run(c: BenchCommand) -> u8 {
    match c {
        BenchCommand::Probe(a) => probe(a).await,
    }
}

/// Ctrl-C / SIGTERM: stop measuring; the probe still removes its scratch objects.
async fn on_signal(cancel: CancellationToken) {
    interrupted().await;
    err!("snapferry: interrupted: removing the probe's scratch objects");
    cancel.cancel();
}

async fn probe(a: ProbeArgs) -> u8 {
    let (opts, size, (sl, so), (dl, dof)) = match a.validate() {
        Ok(v) => v,
        Err(m) => return fail(exit::USAGE, m),
    };
    let src = match store::open(&sl, &so).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let dst = match store::open(&dl, &dof).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let (sd, dd) = (src.describe(), dst.describe());
    let probe = match Probe::prepare(src, dst, a.scratch_prefix.as_deref(), opts, size).await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    err!(
        "snapferry: probe {} -> {}: scratch objects under {} on both sides, removed afterwards",
        sd,
        dd,
        probe.scratch_prefix()
    );
    let signals = tokio::spawn(on_signal(probe.cancel_token()));
    let result = probe.run(&show::show).await;
    signals.abort();
    let r = match result {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Cancelled => {
            return fail(
                exit::FAILED,
                "interrupted; the probe's scratch objects were removed",
            )
        }
        Err(e) => return failed(e),
    };
    if a.json {
        match serde_json::to_string_pretty(&r) {
            Ok(j) => out!("{j}"),
            Err(e) => return fail(exit::FAILED, format!("cannot write the JSON output: {e}")),
        }
    } else {
        show::human_report(&r);
    }
    exit::OK
}
