//! The `snapferry` binary: parses arguments, validates them into engine options,
//! renders progress and reports, and maps outcomes to exit codes. No copy logic here.
//!
//! Exit codes (a contract with scripts) are decided in one place, [`exit`].

#[macro_use]
mod output;
mod args;
mod exit;
mod probe;
mod progress;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use snapferry_engine::cluster::Method;
use snapferry_engine::error::Side;
use snapferry_engine::location::Location;
use snapferry_engine::pipeline::{Report, SyncRun};
use snapferry_engine::retry::RetryPolicy;
use snapferry_engine::store::fs::FsStore;
use snapferry_engine::store::layer::{Layered, Policy};
use snapferry_engine::store::oss::{OssConfig, OssStore};
use snapferry_engine::store::s3::{S3Config, S3Store, StaticCredentials};
use snapferry_engine::store::Store;
use snapferry_engine::Error;

use args::{
    Cli, Command, LsArgs, MigrateArgs, PhaseArg, RepoArgs, RepoCommand, RepoDiffArgs, SideArgs,
    SyncArgs, VerifyArgs,
};

use exit::{FAILED as EXIT_FAILED, OK as EXIT_OK, USAGE as EXIT_USAGE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("snapferry: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Sync(mut a) => {
                a.verbose = cli.verbose;
                sync(a).await
            }
            Command::Repo(RepoCommand::Ls(a)) => repo_ls(a).await,
            Command::Repo(RepoCommand::Verify(a)) => repo_verify(a).await,
            Command::Repo(RepoCommand::Diff(a)) => repo_diff(a).await,
            Command::Migrate(a) => migrate(a).await,
            Command::Bench(args::BenchCommand::Probe(a)) => probe::run(a).await,
        }
    });
    ExitCode::from(code)
}

fn init_logging(verbose: u8) {
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

/// One clear line on stderr and the exit code.
fn fail(code: u8, msg: impl std::fmt::Display) -> u8 {
    err!("snapferry: error: {msg}");
    code
}

fn exit_code_for(e: &Error) -> u8 {
    exit::for_error(e)
}

async fn open_store(side: Side, loc: &Location, s: &SideArgs) -> Result<Arc<dyn Store>, Error> {
    open_backend(side, loc, s).await.map_err(|e| e.on(side))
}

async fn open_backend(side: Side, loc: &Location, s: &SideArgs) -> Result<Arc<dyn Store>, Error> {
    let side = side.name();
    match loc {
        Location::S3 { bucket, prefix } => {
            let cfg = S3Config {
                content_md5: false,
                io_timeout: s.io_timeout,
                verify_source: s.verify_source,
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                profile: s.profile.clone(),
                credentials: s.credentials.as_ref().map(|c| StaticCredentials {
                    access_key_id: c.0.clone(),
                    secret_access_key: c.1.clone(),
                    session_token: c.2.clone(),
                }),
            };
            let st = S3Store::connect(cfg).await?;
            tracing::debug!("{side}: {}", st.describe());
            Ok(Arc::new(st))
        }
        Location::Oss { bucket, prefix } => {
            let (Some(endpoint), Some(c)) = (s.oss_endpoint.clone(), s.oss_credentials.clone())
            else {
                return Err(Error::invalid_input(format!(
                    "{side}: oss:// needs an endpoint and credentials"
                )));
            };
            let st = OssStore::new(OssConfig {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                io_timeout: s.io_timeout,
                verify_source: s.verify_source,
                endpoint,
                credentials: c,
            })?;
            Ok(Arc::new(st))
        }
        Location::Fs { path } => Ok(Arc::new(FsStore::new(path.clone()))),
    }
}

async fn sync(a: SyncArgs) -> u8 {
    // 1. Everything the user typed is checked before any store is contacted.
    let plan = match a.validate() {
        Ok(p) => p,
        Err(msg) => return fail(EXIT_USAGE, msg),
    };
    // 2. Stores: built, then preflighted (reachable, authenticated, bucket exists).
    let src = match open_store(Side::Source, &plan.src, &plan.src_side).await {
        Ok(s) => s,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    let dst = match open_store(Side::Destination, &plan.dst, &plan.dst_side).await {
        Ok(s) => s,
        Err(e) => return fail(exit_code_for(&e), e),
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
    let run = SyncRun::new(
        src.clone(),
        dst.clone(),
        plan.opts.clone(),
        observer.clone(),
    );
    if let Err(e) = run.preflight().await {
        return fail(exit_code_for(&e), e);
    }
    // 3. Run, with progress and Ctrl-C / SIGTERM handling.
    let handle = run.handle();
    let signals = tokio::spawn(progress::on_signal(handle.cancel.clone()));
    let display = progress::spawn(
        handle.counters.clone(),
        plan.progress,
        handle.cancel.clone(),
    );
    let result = run.run().await;
    display.finish().await;
    signals.abort();
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    // 4. Report and exit code.
    print_summary(&report);
    if let Some(path) = &plan.report_path {
        if let Err(e) = write_report(path, &report) {
            return fail(
                EXIT_FAILED,
                format!("cannot write the report to {}: {e}", path.display()),
            );
        }
    }
    exit::for_report(&report)
}

/// A store of a `repo` command, through the request layer (retries, accounting).
async fn layered(side: Side, loc: &Location, s: &SideArgs) -> Result<Arc<dyn Store>, Error> {
    let raw = open_store(side, loc, s).await?;
    let store = Layered::new(raw, side, Policy::standalone(RetryPolicy::default()));
    if store.preflight().await? == snapferry_engine::store::Presence::Missing {
        return Err(Error::location_not_found(format!(
            "{} does not exist; check the path",
            store.describe()
        ))
        .on(side));
    }
    Ok(Arc::new(store))
}

async fn open_repo(a: &RepoArgs) -> Result<Arc<dyn Store>, u8> {
    let (loc, side) = a.resolve().map_err(|m| fail(EXIT_USAGE, m))?;
    layered(Side::Repository, &loc, &side)
        .await
        .map_err(|e| fail(exit_code_for(&e), e))
}

async fn cluster_for(
    side: &str,
    s: &snapferry_engine::migrate::Side,
) -> Result<snapferry_engine::cluster::Cluster, Error> {
    let cfg = s
        .cluster_config(side, &|k: &str| std::env::var(k).ok())
        .await?;
    snapferry_engine::cluster::Cluster::new(cfg)
}

async fn migrate(a: MigrateArgs) -> u8 {
    use snapferry_engine::migrate::{state_path, Job, Migration, Phase, State};
    let state_file = state_path(&a.job);
    // The job file first, for every phase: a mistyped path is an error, not "no phase
    // has run yet".
    let job = match Job::load(&a.job) {
        Ok(j) => j,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    if a.phase == PhaseArg::Status {
        return match State::load(&state_file) {
            Ok(st) => {
                if st.phases.is_empty() {
                    out!(
                        "no phase has run yet ({} does not exist)",
                        state_file.display()
                    );
                }
                for p in &st.phases {
                    out!(
                        "{:?}  snapshot {}  generation {}  moved {}  closed {} ms  counts {}",
                        p.phase,
                        p.snapshot,
                        p.generation
                            .map(|g| g.to_string())
                            .unwrap_or_else(|| "-".into()),
                        progress::human(p.bytes_moved),
                        p.closed_ms,
                        p.counts
                            .iter()
                            .map(|(i, (s, d))| format!("{i}={s}/{d}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                }
                EXIT_OK
            }
            Err(e) => fail(exit_code_for(&e), e),
        };
    }
    let mut stores = Vec::new();
    let mut locations = Vec::new();
    for (name, side) in [("SRC", &job.source), ("DST", &job.destination)] {
        let loc = match Location::parse(&side.store) {
            Ok(l) => l,
            Err(e) => return fail(EXIT_USAGE, format!("job file: {name} store: {e}")),
        };
        if let Err(m) = args::check_endpoint("store_endpoint", &side.store_endpoint, &loc) {
            return fail(EXIT_USAGE, format!("job file: {name} {m}"));
        }
        locations.push((loc.clone(), side.store_endpoint.clone()));
        let sa = match args::resolve_side(
            &loc,
            &side.store_endpoint,
            &side.store_region,
            name,
            "store",
        ) {
            Ok(s) => s,
            Err(m) => return fail(EXIT_USAGE, m),
        };
        let tag = if name == "SRC" {
            Side::Source
        } else {
            Side::Destination
        };
        match open_store(tag, &loc, &sa).await {
            Ok(s) => stores.push(s),
            Err(e) => return fail(exit_code_for(&e), e),
        }
    }
    if let [(a, ea), (b, eb)] = &locations[..] {
        if a.overlaps(ea.as_deref(), b, eb.as_deref()) {
            return fail(
                EXIT_USAGE,
                "job file: the source and destination stores are the same location or one lies inside the other; give the destination repository its own location",
            );
        }
    }
    let (src, dst) = match (
        cluster_for("SRC", &job.source).await,
        cluster_for("DST", &job.destination).await,
    ) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return fail(exit_code_for(&e), e),
    };
    let dst_store = stores.pop().expect("two stores were opened");
    let src_store = stores.pop().expect("two stores were opened");
    let phase = match a.phase {
        PhaseArg::Baseline => Phase::Baseline,
        PhaseArg::Incremental => Phase::Incremental,
        _ => Phase::Cutover,
    };
    let m = Migration {
        job,
        src,
        dst,
        src_store,
        dst_store: dst_store.clone(),
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    // Ctrl-C / SIGTERM during the copy: uploads aborted, the lease released.
    let signals = tokio::spawn(progress::on_signal(m.cancel.clone()));
    let code = migrate_phase(&m, &a, phase, &state_file, &dst_store).await;
    signals.abort();
    code
}

async fn migrate_phase(
    m: &snapferry_engine::migrate::Migration,
    a: &MigrateArgs,
    phase: snapferry_engine::migrate::Phase,
    state_file: &std::path::Path,
    dst_store: &Arc<dyn Store>,
) -> u8 {
    use snapferry_engine::migrate::Phase;
    if a.dry_run {
        return match m.plan(phase, a.set_write_block).await {
            Ok(calls) => {
                for c in calls {
                    out!("{c}");
                }
                EXIT_OK
            }
            Err(e) => fail(exit_code_for(&e), e),
        };
    }
    if phase == Phase::Cutover {
        if let Err(e) = write_blocked(m, a.set_write_block).await {
            return fail(exit_code_for(&e), e);
        }
    }
    let rec = match m.run(phase, state_file).await {
        Ok(r) => r,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    let mut mismatch = false;
    for (i, (s, d)) in &rec.counts {
        out!(
            "{i}: source {s} documents, destination {d}{}",
            if s == d { "" } else { "  <- differs" }
        );
        mismatch |= s != d;
    }
    out!(
        "{:?} done: snapshot {}, moved {}, destination indices closed for {} ms",
        rec.phase,
        rec.snapshot,
        progress::human(rec.bytes_moved),
        rec.closed_ms
    );
    if phase == Phase::Cutover {
        let opts = snapferry_engine::repo::verify::VerifyOptions {
            deep: false,
            concurrency: 8,
            ..Default::default()
        };
        match snapferry_engine::repo::verify::verify(dst_store.as_ref(), &opts).await {
            Ok(r) if r.problems.is_empty() => out!(
                "destination repository verified: generation {}, {} blobs",
                r.generation,
                r.blobs_checked
            ),
            Ok(r) => {
                out!(
                    "destination repository has {} problems; do not switch over",
                    r.problems.len()
                );
                return EXIT_FAILED;
            }
            Err(e) => return fail(exit_code_for(&e), e),
        }
        if !mismatch {
            out!("switchover checklist:\n  1. point clients at {}\n  2. re-enable writes there (the source indices stay write-blocked)\n  3. re-create aliases, templates and ILM policies not carried by the snapshot\n  4. keep the source cluster until the new one has run cleanly", m.job.destination.url);
        }
    }
    if mismatch {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// Cutover needs writes stopped: every source index write-blocked (or blocked by us).
async fn write_blocked(m: &snapferry_engine::migrate::Migration, set: bool) -> Result<(), Error> {
    let mut indices = Vec::new();
    for p in &m.job.indices {
        indices.extend(m.src.indices(p).await?);
    }
    for i in &indices {
        if set {
            m.src
                .call(
                    Method::PUT,
                    &format!("/{i}/_settings"),
                    Some(serde_json::json!({"index.blocks.write": true})),
                )
                .await?;
            continue;
        }
        let v = m
            .src
            .call(
                Method::GET,
                &format!("/{i}/_settings/index.blocks.write"),
                None,
            )
            .await?;
        let blocked =
            v[i.as_str()]["settings"]["index"]["blocks"]["write"].as_str() == Some("true");
        if !blocked {
            return Err(Error::invalid_input(format!(
                "writes to {i} are not stopped; set index.blocks.write on the source indices (or pass --set-write-block) before cutover"
            )));
        }
    }
    Ok(())
}

async fn repo_diff(a: RepoDiffArgs) -> u8 {
    let ((sl, ss), (dl, ds)) = match a.resolve() {
        Ok(v) => v,
        Err(m) => return fail(EXIT_USAGE, m),
    };
    let src = match layered(Side::Source, &sl, &ss).await {
        Ok(s) => s,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    // A destination not created yet holds no repository: everything is only in source.
    let dst = match open_store(Side::Destination, &dl, &ds).await {
        Ok(s) => Arc::new(Layered::new(
            s,
            Side::Destination,
            Policy::standalone(RetryPolicy::default()),
        )),
        Err(e) => return fail(exit_code_for(&e), e),
    };
    let r = match snapferry_engine::repo::verify::diff(src.as_ref(), dst.as_ref()).await {
        Ok(r) => r,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    if a.json {
        out!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        for n in &r.only_in_source {
            out!("only in source       {n}");
        }
        for n in &r.only_in_destination {
            out!("only in destination  {n}");
        }
        for p in &r.differing_blobs {
            out!("differs              {}: {}", p.key, p.problem);
        }
        out!(
            "source generation {}, destination generation {}; {} snapshots only in source, {} only in destination, {} blobs differ",
            r.source_generation,
            r.destination_generation.map(|g| g.to_string()).unwrap_or_else(|| "none".into()),
            r.only_in_source.len(),
            r.only_in_destination.len(),
            r.differing_blobs.len()
        );
    }
    let same = r.only_in_source.is_empty()
        && r.only_in_destination.is_empty()
        && r.differing_blobs.is_empty();
    if same {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

async fn repo_ls(a: LsArgs) -> u8 {
    let store = match open_repo(&a.repo).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match snapferry_engine::repo::verify::list(store.as_ref(), a.sizes, a.concurrency).await {
        Ok(l) if a.repo.json => {
            out!("{}", serde_json::to_string_pretty(&l).unwrap_or_default());
            EXIT_OK
        }
        Ok(l) => {
            crate::output::out_text(&snapferry_engine::repo::verify::table(&l));
            EXIT_OK
        }
        Err(e) => fail(exit_code_for(&e), e),
    }
}

async fn repo_verify(a: VerifyArgs) -> u8 {
    let store = match open_repo(&a.repo).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = snapferry_engine::repo::verify::VerifyOptions {
        snapshots: a.snapshot.clone(),
        deep: a.deep,
        concurrency: a.concurrency,
    };
    let r = match snapferry_engine::repo::verify::verify(store.as_ref(), &opts).await {
        Ok(r) => r,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    if a.repo.json {
        out!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        for p in &r.problems {
            out!("problem  {}: {}", p.key, p.problem);
        }
        out!(
            "verified generation {}: {} snapshots, {} blobs present, {} metadata checksums, {} data files checked{}, {} read; {} problems",
            r.generation,
            r.snapshots_checked,
            r.blobs_checked,
            r.metadata_checked,
            r.data_files_checked,
            if a.deep { "" } else { " (add --deep to check data)" },
            progress::human(r.bytes_read),
            r.problems.len()
        );
    }
    if r.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn print_summary(r: &Report) {
    let mut err = std::io::stderr().lock();
    if let Some(f) = &r.fatal_error {
        let _ = writeln!(err, "snapferry: error: the run stopped: {f}");
    }
    if let Some(d) = &r.deletes_refused {
        let _ = writeln!(err, "snapferry: error: {d}");
    }
    for f in r.failures.iter().take(20) {
        let _ = writeln!(err, "snapferry: failed: {}: {}", f.key, f.reason);
    }
    if r.failures.len() > 20 {
        let _ = writeln!(
            err,
            "snapferry: … and {} more failures (see --report)",
            r.failed_objects - 20
        );
    }
    let _ =
        writeln!(
        err,
        "snapferry: {}copied {} objects ({}), skipped {}, deleted {}, failed {} in {:.1}s ({}/s){}",
        if r.dry_run { "dry run: would have " } else { "" },
        if r.dry_run { r.planned_copy_objects } else { r.copied_objects },
        progress::human(if r.dry_run { r.planned_copy_bytes } else { r.copied_bytes }),
        r.skipped_objects,
        if r.dry_run { r.planned_delete_objects } else { r.deleted_objects },
        r.failed_objects,
        r.duration_seconds,
        progress::human(r.throughput_bytes_per_second as u64),
        if r.interrupted { " — interrupted" } else { "" },
    );
}

fn write_report(path: &std::path::Path, r: &Report) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    // Atomic: a reader never sees a half-written report.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}
