//! `snapferry repo ls|verify|diff`: read-only looks at snapshot repositories. Each store
//! is opened through the request layer (retries, accounting; no shared limits: there is
//! no run to share them with); a repository that must be read has to exist.

use snapferry_engine::repo::verify::{self, VerifyOptions};
use snapferry_engine::store;

use super::{fail, failed};
use crate::args::{LsArgs, RepoArgs, RepoCommand, RepoDiffArgs, VerifyArgs};
use crate::exit;
use crate::output::{self, report};

/// Runs a `repo` subcommand; returns the exit code.
pub async fn run(c: RepoCommand) -> u8 {
    match c {
        RepoCommand::Ls(a) => ls(a).await,
        RepoCommand::Verify(a) => verify(a).await,
        RepoCommand::Diff(a) => diff(a).await,
    }
}

/// The repository a `repo ls` or `repo verify` reads; `Err` is the exit code, the
/// message printed.
async fn open(a: &RepoArgs) -> Result<std::sync::Arc<dyn store::Store>, u8> {
    let (loc, o) = a.resolve().map_err(|m| fail(exit::USAGE, m))?;
    store::open_existing(&loc, &o.with_standalone_layer())
        .await
        .map_err(failed)
}

async fn ls(a: LsArgs) -> u8 {
    let store = match open(&a.repo).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match verify::list(store.as_ref(), a.sizes, a.concurrency).await {
        Ok(l) if a.repo.json => {
            output::json(&l);
            exit::OK
        }
        Ok(l) => {
            output::out_text(&verify::table(&l));
            exit::OK
        }
        Err(e) => failed(e),
    }
}

async fn verify(a: VerifyArgs) -> u8 {
    let store = match open(&a.repo).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = VerifyOptions {
        snapshots: a.snapshot.clone(),
        deep: a.deep,
        concurrency: a.concurrency,
    };
    let r = match verify::verify(store.as_ref(), &opts).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if a.repo.json {
        output::json(&r);
    } else {
        report::verify(&r, a.deep);
    }
    if r.problems.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    }
}

async fn diff(a: RepoDiffArgs) -> u8 {
    let ((sl, so), (dl, dof)) = match a.resolve() {
        Ok(v) => v,
        Err(m) => return fail(exit::USAGE, m),
    };
    let src = match store::open_existing(&sl, &so.with_standalone_layer()).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    // A destination not created yet holds no repository: everything is only in source.
    let dst = match store::open(&dl, &dof.with_standalone_layer()).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let r = match verify::diff(src.as_ref(), dst.as_ref()).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if a.json {
        output::json(&r);
    } else {
        report::diff(&r);
    }
    let same = r.only_in_source.is_empty()
        && r.only_in_destination.is_empty()
        && r.differing_blobs.is_empty();
    if same {
        exit::OK
    } else {
        exit::FAILED
    }
}
