//! One module per command (mini-redis's `cmd/` pattern): each takes its validated
//! arguments, drives the engine, hands results to [`crate::output`] and returns the exit
//! code [`crate::exit`] decides. The flow of a command reads top to bottom in its file;
//! what is shared — the one-line failure, Ctrl-C handling — is here.

pub mod bench;
pub mod migrate;
pub mod plan;
pub mod repo;
pub mod sync;

use snapferry_engine::Error;
use tokio_util::sync::CancellationToken;

use crate::args::{Cli, Command};
use crate::exit;

/// Runs the command `cli` names; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Sync(mut a) => {
            a.verbose = cli.verbose;
            sync::run(a).await
        }
        Command::Repo(c) => repo::run(c).await,
        Command::Migrate(a) => migrate::run(a).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Plan(mut a) => {
            a.sync.verbose = cli.verbose;
            plan::plan(a).await
        }
        Command::Commit(mut a) => {
            a.sync.verbose = cli.verbose;
            plan::commit(a).await
        }
    }
}

/// One clear line on stderr, and the exit code to return.
pub fn fail(code: u8, msg: impl std::fmt::Display) -> u8 {
    err!("snapferry: error: {msg}");
    code
}

/// [`fail`] with the code of the error's kind.
pub fn failed(e: Error) -> u8 {
    fail(exit::for_error(&e), e)
}

/// Cancels a run on Ctrl-C or SIGTERM (a second Ctrl-C exits at once): in-flight
/// uploads are aborted, the lease released and the report written.
pub async fn on_signal(cancel: CancellationToken) {
    interrupted().await;
    err!("snapferry: interrupted: aborting in-flight uploads and writing the report (Ctrl-C again to quit at once)");
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(1);
    }
}

/// Returns at the first Ctrl-C or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
