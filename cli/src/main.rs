//! The `snapferry` binary: a thin layer over [`snapferry_engine`], in the manner of
//! ripgrep's `core/main.rs` — `main` only calls [`run`], which returns the exit code.
//!
//! # Layout
//! Dependencies flow one way: `main` → [`commands`] → {[`args`], [`output`], [`exit`]};
//! the three leaves know nothing of each other or of the commands.
//! - [`args`]: flags, job-file store fields and the environment, checked and turned into
//!   the engine's option types before anything is contacted.
//! - [`commands`]: one module per command (`sync`, `repo`, `migrate`, `bench`), each the
//!   flow of its command from validated arguments to an exit code.
//! - [`output`]: everything printed — results, progress, messages, logs — and never a
//!   panic on a closed pipe.
//! - [`exit`]: the exit codes, a contract with scripts, decided in one place.
//!
//! No copy logic, store construction or cluster call lives here: those are the engine's.

#[macro_use]
mod output;
mod args;
mod commands;
mod exit;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    run()
}

/// Parses the command line, starts the runtime and runs the command.
fn run() -> ExitCode {
    let cli = args::Cli::parse();
    output::init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("snapferry: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    ExitCode::from(rt.block_on(commands::run(cli)))
}
