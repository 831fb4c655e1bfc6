//! Command-line arguments and their validation into engine options: what the user typed
//! (flags, job-file store fields, `SNAPFERRY_*` and the clouds' credential variables) is
//! checked here, before any store or cluster is contacted, and becomes the engine's own
//! option types ([`SyncOptions`], [`StoreOptions`], [`ProbeOptions`]). Nothing here
//! prints or opens anything; the error is one line naming the problem and the fix.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use snapferry_engine::error::Side as StoreSide;
use snapferry_engine::location::Location;
use snapferry_engine::pipeline::{
    MaxDelete, PlanFrom, SnapshotAware, SyncOptions, VerifyDestination,
};
use snapferry_engine::probe::{ProbeOptions, SizeSpec};
use snapferry_engine::size::{parse_rate, parse_size};
use snapferry_engine::store::env as store_env;
use snapferry_engine::store::StoreOptions;

/// snapferry: move Elasticsearch snapshot repositories between object stores, verified.
#[derive(Debug, Parser)]
#[command(name = "snapferry", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug). SNAPFERRY_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DST hold exactly what SRC holds, copying only what differs.
    Sync(SyncArgs),
    /// Inspect and verify Elasticsearch/OpenSearch snapshot repositories.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Move indices between clusters through their snapshot repositories:
    /// baseline, incremental rounds, cutover (state kept in JOB.toml.state.json).
    Migrate(MigrateArgs),
    /// Benchmarks before a migration.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Plan a distributed round: pin the source, split what changed into --units units
    /// of similar bytes (shard directories), and write the plan beside the destination.
    /// Then run every unit (`sync --plan URL --unit I`, anywhere, in any order) and
    /// `commit --plan URL`.
    Plan(PlanArgs),
    /// Commit a distributed round: refuse unless every unit of the plan finished, then
    /// write the index and root metadata and the commit point.
    Commit(CommitArgs),
}

/// `snapferry plan SRC DST --units U [--control PREFIX] [--json] [sync options]`, or
/// `snapferry plan status URL`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
    /// Units to split the round into (a Kubernetes Indexed Job's completions).
    #[arg(long, value_name = "U", required = true)]
    pub units: Option<usize>,
    /// Where plans are kept: a prefix of the destination's bucket outside the repository
    /// (or a directory). Default: the destination's prefix with `.snapferry` appended.
    #[arg(long, value_name = "PREFIX")]
    pub control: Option<String>,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Name the plan (letters, digits, '.', '_', '-'): its URL is then known before it is
    /// made (Kubernetes Jobs that follow the plan Job). A plan of that id already there is
    /// used as it is. Default: the source generation and a random suffix.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// How many units run at once. With --bwlimit, the plan records that rate for the
    /// round and each unit run without a --bwlimit of its own takes 1/P of it.
    #[arg(long, value_name = "P")]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// The directory of a plan's URL (the URL itself, or the one holding its `plan.json`)
/// and how to reach it: with the destination's endpoint and credentials.
pub fn plan_location(
    url: &str,
    endpoint: &Option<String>,
    region: &Option<String>,
) -> Result<(Location, StoreOptions), String> {
    let loc = match Location::parse(url).map_err(|e| format!("--plan: {e}"))? {
        Location::S3 { bucket, prefix } => Location::S3 {
            prefix: prefix
                .strip_suffix("plan.json/")
                .unwrap_or(&prefix)
                .to_string(),
            bucket,
        },
        Location::Oss { bucket, prefix } => Location::Oss {
            prefix: prefix
                .strip_suffix("plan.json/")
                .unwrap_or(&prefix)
                .to_string(),
            bucket,
        },
        Location::Fs { path } if path.ends_with("plan.json") => Location::Fs {
            path: path.parent().map(PathBuf::from).unwrap_or_default(),
        },
        fs => fs,
    };
    let side = resolve_side(&loc, endpoint, region, "DST", "--dst")?;
    Ok((loc, side))
}

/// `snapferry plan ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// A round's progress from its units' markers: units finished and not, bytes and
    /// objects copied, wall times and stragglers. Exit 0 when every unit finished, 1 when
    /// some have not.
    Status(PlanStatusArgs),
}

/// `snapferry plan status URL`.
#[derive(Debug, clap::Args)]
pub struct PlanStatusArgs {
    /// The plan's URL (printed by `snapferry plan`).
    pub plan: String,
    /// The destination's endpoint (where the plan lives).
    #[arg(long, value_name = "URL")]
    pub dst_endpoint: Option<String>,
    /// The destination's region.
    #[arg(long, value_name = "REGION")]
    pub dst_region: Option<String>,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `snapferry commit --plan URL [sync options]`.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// `snapferry bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure listing, GET, PUT and copy rates between SRC and DST at increasing
    /// concurrency (scratch objects, removed afterwards); recommend --concurrency and
    /// --part-size and predict how long a sync of --size or of the source takes.
    Probe(ProbeArgs),
}

/// Migration phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    /// Full snapshot, copy, restore, compare counts.
    Baseline,
    /// New snapshot, copy the deltas, restore over the closed destination indices.
    Incremental,
    /// Writes stopped: final round, repository verification, switchover checklist.
    Cutover,
    /// Show the phases run so far.
    Status,
}

/// `snapferry migrate JOB.toml --phase ...`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// Which phase to run.
    #[arg(long, value_enum)]
    pub phase: PhaseArg,
    /// Print every call it would make; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At cutover, set index.blocks.write on the source indices instead of requiring it.
    #[arg(long)]
    pub set_write_block: bool,
}

/// `snapferry repo ...`.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// List the snapshots of the repository at URL.
    Ls(LsArgs),
    /// Check that every blob the snapshots need exists with its exact length and that
    /// every metadata checksum holds; with --deep, also every data file's checksum.
    /// Exit 1 on any problem.
    Verify(VerifyArgs),
    /// Which snapshots are on one side only, and which blobs the source needs that the
    /// destination lacks or holds with another size. Exit 1 when they differ.
    Diff(RepoDiffArgs),
}

/// A location with its checked settings.
pub type Side = (Location, StoreOptions);

/// `repo diff SRC DST` (credentials and endpoints as for sync).
#[derive(Debug, clap::Args)]
pub struct RepoDiffArgs {
    /// Source repository location.
    pub src: String,
    /// Destination repository location.
    pub dst: String,
    #[command(flatten)]
    pub ends: Endpoints,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

impl RepoDiffArgs {
    /// Both sides, checked.
    pub fn resolve(&self) -> Result<(Side, Side), String> {
        self.ends.resolve(&self.src, &self.dst)
    }
}

/// Where a repository is (credentials as a sync source: SNAPFERRY_SRC_*, then the chains).
#[derive(Debug, clap::Args)]
pub struct RepoArgs {
    /// Repository location: s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a path.
    pub url: String,
    /// Endpoint (as --src-endpoint of sync).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region (as --src-region of sync).
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `repo ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also total each snapshot's files (reads one shard-level index per shard; without
    /// it, ls reads only the root index-N and the snapshots' own metadata).
    #[arg(long)]
    pub sizes: bool,
    /// Concurrent reads.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// `repo verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only this snapshot (repeatable).
    #[arg(long, value_name = "NAME")]
    pub snapshot: Vec<String>,
    /// Stream every data blob and check its Lucene footer checksum (what a restore checks).
    #[arg(long)]
    pub deep: bool,
    /// Concurrent reads.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
}

impl RepoArgs {
    /// The location and its side settings, checked (credentials as a sync source's).
    pub fn resolve(&self) -> Result<Side, String> {
        let loc = Location::parse(&self.url).map_err(|e| e.to_string())?;
        check_endpoint("--endpoint", &self.endpoint, &loc)?;
        let mut side = resolve_side(&loc, &self.endpoint, &self.region, "SRC", "-")?;
        side.side = StoreSide::Repository;
        Ok((loc, side))
    }
}

/// When to show a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, periodic lines otherwise.
    Auto,
    /// Progress even when stderr is not a terminal (then a line every second).
    Always,
    /// No progress output.
    Never,
}

const SYNC_AFTER_HELP: &str = "\
Memory: peak buffer memory is about --concurrency x --part-size (defaults: 16 x 16MiB = 256MiB);
objects at or below --multipart-threshold are held whole, so keep the threshold near the part size.

Credentials, per side: SNAPFERRY_SRC_ACCESS_KEY_ID / SNAPFERRY_SRC_SECRET_ACCESS_KEY /
SNAPFERRY_SRC_SESSION_TOKEN and the same with DST_. When unset, s3:// uses the standard AWS
chain (environment, SNAPFERRY_SRC_PROFILE / SNAPFERRY_DST_PROFILE or AWS_PROFILE with
credential_process, web identity / IRSA, ECS, instance metadata); oss:// uses, in order,
SNAPFERRY_{SRC,DST}_CREDENTIAL_PROCESS, ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET / _SECURITY_TOKEN,
RRSA (ALIBABA_CLOUD_ROLE_ARN, _OIDC_PROVIDER_ARN, _OIDC_TOKEN_FILE), ALIBABA_CLOUD_ECS_METADATA
(a RAM role), ALIBABA_CLOUD_CREDENTIALS_URI, else OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET.
Temporary credentials are refreshed before they expire; a request refused with an expired
token is retried once with fresh ones.

Safety: a source that does not exist or holds nothing is an error (--allow-empty-source); deletes
never run after errors, nor when the source listed nothing, nor beyond --max-delete; overlapping
source and destination are refused; one run per destination at a time (the lease
.snapferry-lease at the destination's root; a crashed run's lease is taken over when it expires,
or at once when its process on this host is gone).

Faults: every request is retried through transient failures for --retry-budget (5m), and
fails when no byte moved for --io-timeout (30s); connecting gives up after 5s, a preflight after
10s. A fault that persists ends the run within about --retry-budget + --io-timeout. Corrupted
bytes are retried a few times only. A killed run's multipart uploads are resumed by the next
run (parts that landed are kept). A full destination stops the run with one error.

Exit codes: 0 everything in sync; 1 some objects failed (listed in the report), the run was
interrupted, or deletes were refused;
2 bad usage or configuration; 3 cannot reach or authenticate to a store (also: temporary
credentials expired and their provider gave none that work, the source location does not
exist, or the endpoint does not answer as S3/OSS does);
4 another snapferry run holds the destination.";

/// Endpoints and regions of both sides (`sync`, `repo diff`).
#[derive(Debug, clap::Args)]
pub struct Endpoints {
    /// Source endpoint: a custom S3-compatible URL (path-style), or for oss:// an OSS
    /// endpoint such as oss-cn-hangzhou.aliyuncs.com (-internal, oss-accelerate) or a URL.
    #[arg(long, value_name = "URL")]
    pub src_endpoint: Option<String>,
    /// Destination endpoint (as --src-endpoint).
    #[arg(long, value_name = "URL")]
    pub dst_endpoint: Option<String>,
    /// Source region (a custom S3 endpoint with no region uses us-east-1; for OSS derived
    /// from the endpoint when possible).
    #[arg(long, value_name = "R")]
    pub src_region: Option<String>,
    /// Destination region.
    #[arg(long, value_name = "R")]
    pub dst_region: Option<String>,
}

impl Endpoints {
    /// Both sides of `src` → `dst`, checked.
    pub fn resolve(&self, src: &str, dst: &str) -> Result<(Side, Side), String> {
        let src = Location::parse(src).map_err(|e| format!("source: {e}"))?;
        let dst = Location::parse(dst).map_err(|e| format!("destination: {e}"))?;
        check_endpoint("--src-endpoint", &self.src_endpoint, &src)?;
        check_endpoint("--dst-endpoint", &self.dst_endpoint, &dst)?;
        let s = resolve_side(&src, &self.src_endpoint, &self.src_region, "SRC", "--src")?;
        let d = resolve_side(&dst, &self.dst_endpoint, &self.dst_region, "DST", "--dst")?;
        Ok(((src, s), (dst, d)))
    }
}

/// `--verify-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifySourceArg {
    /// Every check that costs no extra read (stored CRC-64/CRC32, Lucene footers); the
    /// MD5 of a single-part ETag only where nothing else exists.
    Auto,
    /// As auto, and the MD5 of every single-part ETag too (about 1.2 CPU-s/GiB).
    Md5,
    /// No source-side check.
    Off,
}

/// `--snapshot-aware`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotAwareArg {
    /// When the source holds a repository.
    Auto,
    /// Always (fail when the source holds no repository).
    On,
    /// Never: a plain object sync.
    Off,
}

/// `--verify-destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyDestinationArg {
    /// List the shard directories whose generation changed; trust what the last
    /// generation snapferry committed references elsewhere.
    Changed,
    /// List the whole destination once and check every referenced blob against it.
    Full,
}

/// `--plan-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFromArg {
    /// The repository's metadata (root index-N, shard generations).
    Metadata,
    /// Full listings of both sides and every shard snapshot (a cross-check).
    Listing,
}

/// `snapferry sync SRC DST [options]`.
#[derive(Debug, clap::Args)]
#[command(after_help = SYNC_AFTER_HELP)]
pub struct SyncArgs {
    /// Source: s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a plain path.
    #[arg(required_unless_present = "plan")]
    pub src: Option<String>,
    /// Destination: s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a plain path.
    #[arg(required_unless_present = "plan")]
    pub dst: Option<String>,
    /// A distributed round's plan (the URL `snapferry plan` prints): SRC and DST come from
    /// it. With `sync`, run one unit of it (--unit); with `commit`, commit it.
    #[arg(long, value_name = "URL", conflicts_with_all = ["src", "dst"])]
    pub plan: Option<String>,
    /// With --plan: the unit to run, from 0 (default: JOB_COMPLETION_INDEX, which a
    /// Kubernetes Indexed Job sets).
    #[arg(
        long,
        value_name = "I",
        env = "JOB_COMPLETION_INDEX",
        requires = "plan"
    )]
    pub unit: Option<usize>,
    /// With --plan: when another run holds the unit's lease, try again every 10s for up
    /// to this long (a crashed worker's lease on another host frees after --lease-ttl).
    #[arg(long, value_name = "DURATION", default_value = "0s", requires = "plan")]
    pub lease_wait: String,
    #[command(flatten)]
    pub ends: Endpoints,
    /// Print every planned action with its reason; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Parts (or small objects) in flight at once; memory ≈ N x part size.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub concurrency: usize,
    /// Multipart part size, 5MiB..5GiB (grown automatically past 10,000 parts).
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub part_size: String,
    /// Objects larger than this are copied in parts; at least the part size, at most 5GiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    pub multipart_threshold: String,
    /// Bandwidth limit for all workers together, e.g. 200MiB/s.
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
    /// Requests per second for all workers together.
    #[arg(long, value_name = "N")]
    pub tpslimit: Option<u32>,
    /// Remove destination objects that the source no longer has (after all copies land).
    #[arg(long)]
    pub delete: bool,
    /// Write a JSON report to PATH.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Treat the source as an Elasticsearch/OpenSearch snapshot repository: copy in an
    /// order that keeps the destination restorable at every instant (auto: when the
    /// source has index.latest).
    #[arg(long, value_enum, default_value_t = SnapshotAwareArg::Auto)]
    pub snapshot_aware: SnapshotAwareArg,
    /// A plain sync lists both sides one directory level per request, up to
    /// --concurrency LIST requests at once, instead of one flat listing each (more
    /// requests; faster only where listing is latency-bound).
    #[arg(long)]
    pub list_fan_out: bool,
    /// Copy exactly these snapshots (repeatable; snapshot-aware mode): the destination
    /// then holds a repository of just them, as if the others had been deleted.
    #[arg(long, value_name = "NAME")]
    pub snapshot: Vec<String>,
    /// Snapshot-aware rounds: what is checked of the destination before a blob is
    /// skipped (changed: the shard directories whose generation changed, trusting the
    /// generation snapferry committed last; full: one listing of the whole destination).
    #[arg(long, value_enum, default_value_t = VerifyDestinationArg::Changed)]
    pub verify_destination: VerifyDestinationArg,
    /// Snapshot-aware rounds: plan from the repository's metadata (default), or from full
    /// listings of both sides and every shard snapshot (slower; a cross-check).
    #[arg(long, value_enum, default_value_t = PlanFromArg::Metadata)]
    pub plan_from: PlanFromArg,
    /// Snapshot-aware rounds: before the commit point, list the changed shards at the
    /// destination and confirm every blob they and the new snapshots need is there with
    /// its size (migrate's cutover round does this).
    #[arg(long)]
    pub confirm_before_commit: bool,
    /// Accept a source that does not exist or holds no object (by default that is an
    /// error: it is usually a typo in the URL or prefix).
    #[arg(long)]
    pub allow_empty_source: bool,
    /// With --delete: the most destination objects one run may delete, a count or a
    /// percentage of what the destination holds (100% allows any).
    #[arg(long, value_name = "N|P%", default_value = "50%")]
    pub max_delete: String,
    /// Write over a destination that holds another snapshot repository (another
    /// repository UUID or snapshot lineage); its catalogue is replaced.
    #[arg(long)]
    pub replace_repository: bool,
    /// Time to live of the destination lease (renewed every third of it while the run
    /// lasts; a crashed run's lease is taken over after it).
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub lease_ttl: String,
    /// Multipart uploads younger than this, found at the start, may belong to a live run
    /// and are left alone (unless the lease shows their run is gone).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub stale_upload_age: String,
    /// How long one request keeps being retried through transient failures (throttling,
    /// 5xx, resets, timeouts, an unreachable server), with capped exponential backoff.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub retry_budget: String,
    /// Check every object against a checksum the source itself holds, as its bytes
    /// stream by: what was read must be what the source holds, not just what was sent.
    #[arg(long, value_enum, default_value_t = VerifySourceArg::Auto)]
    pub verify_source: VerifySourceArg,
    /// A request fails (and is retried) when no byte has moved for this long: a stalled
    /// connection is noticed in seconds. CompleteMultipartUpload may take 15m to answer;
    /// a preflight gives up after 10s.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub io_timeout: String,
    /// (set by -v on the top level)
    #[arg(skip)]
    pub verbose: u8,
}

/// A validated sync.
#[derive(Debug)]
pub struct Plan {
    /// Where from.
    pub src: Location,
    /// Where to.
    pub dst: Location,
    /// How to reach the source (credentials, endpoint, `--io-timeout`, `--verify-source`).
    pub src_side: StoreOptions,
    /// How to reach the destination.
    pub dst_side: StoreOptions,
    /// The pipeline's options.
    pub opts: SyncOptions,
    /// `--report`, checked writable.
    pub report_path: Option<PathBuf>,
    /// `--progress`.
    pub progress: ProgressMode,
}

/// The process's environment, as the engine's resolvers read it.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Credentials and endpoint of one side, checked. `name` is SRC or DST (the variable
/// prefix, and the side the store is: source or destination), `flag` the option prefix
/// (`--src`, `--dst`, or `-` for `repo` commands).
pub fn resolve_side(
    loc: &Location,
    endpoint: &Option<String>,
    region: &Option<String>,
    name: &str,
    flag: &str,
) -> Result<StoreOptions, String> {
    let mut oss_source = None;
    let (credentials, oss_endpoint) = match loc {
        Location::S3 { .. } => (store_env::static_credentials(&env, name)?, None),
        Location::Oss { .. } => {
            let ep = match (endpoint, region) {
                (Some(e), _) => e.clone(),
                (None, Some(r)) => format!("oss-{}.aliyuncs.com", r.trim_start_matches("oss-")),
                (None, None) => {
                    return Err(format!(
                        "oss:// needs {flag}-endpoint (e.g. oss-cn-hangzhou.aliyuncs.com) or {flag}-region"
                    ))
                }
            };
            let resolved = snapferry_engine::store::oss::Endpoint::parse(&ep, region.as_deref())
                .map_err(|e| format!("{flag}-endpoint: {e}"))?;
            oss_source = Some(store_env::oss_credentials(&env, name)?);
            (None, Some(resolved))
        }
        Location::Fs { .. } => (None, None),
    };
    let mut o = StoreOptions::new(if name == "SRC" {
        StoreSide::Source
    } else {
        StoreSide::Destination
    });
    o.endpoint = endpoint.clone();
    o.region = region.clone();
    o.credentials = credentials;
    o.profile = match loc {
        Location::S3 { .. } => store_env::nonempty(&env, &format!("SNAPFERRY_{name}_PROFILE")),
        _ => None,
    };
    o.oss_credentials = oss_source;
    o.oss_endpoint = oss_endpoint;
    Ok(o)
}

/// One side's repository store of a migration job file (`store`, `store_endpoint`,
/// `store_region`), checked as the sync flags are; `name` is SRC or DST.
pub fn job_store(
    name: &str,
    store: &str,
    endpoint: &Option<String>,
    region: &Option<String>,
) -> Result<Side, String> {
    let loc = Location::parse(store).map_err(|e| format!("job file: {name} store: {e}"))?;
    check_endpoint("store_endpoint", endpoint, &loc)
        .map_err(|m| format!("job file: {name} {m}"))?;
    let side = resolve_side(&loc, endpoint, region, name, "store")?;
    Ok((loc, side))
}

/// Checks an S3 endpoint flag (scheme, host, port; no userinfo or query string).
///
/// Kept as string checks rather than `url::Url::parse`, which would change what is
/// accepted (pinned in `endpoint_checks_accept_and_refuse_as_before`): the WHATWG parser
/// takes `HTTP://h` and `http:/h` (we refuse: the scheme must be written `http://`),
/// `http://h:` (we refuse an empty port), and refuses `http://exa mple:9000` and
/// `http://[::1:9000` (we pass them on for the SDK to refuse when it connects).
pub fn check_endpoint(flag: &str, ep: &Option<String>, loc: &Location) -> Result<(), String> {
    let Some(ep) = ep else { return Ok(()) };
    if matches!(loc, Location::Oss { .. }) {
        return Ok(()); // checked with the region when the OSS endpoint is resolved
    }
    if !matches!(loc, Location::S3 { .. }) {
        return Err(format!(
            "{flag} applies to s3:// and oss:// locations only; remove it or use such a URL"
        ));
    }
    let shown = snapferry_engine::location::redact_url(ep);
    let rest = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "{flag} {shown:?} must start with http:// or https://, e.g. http://127.0.0.1:9000"
            )
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.contains('@') || rest.contains(['?', '#']) {
        return Err(format!(
            "{flag} {shown:?} carries credentials or a query string; give only scheme, host and port (e.g. http://127.0.0.1:9000), and the credentials in SNAPFERRY_SRC_/DST_ACCESS_KEY_ID and _SECRET_ACCESS_KEY"
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "{flag} {shown:?} has no host; write e.g. http://127.0.0.1:9000"
        ));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if !host.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!(
                "{flag} {shown:?} has a bad port {port:?}; use a number 1..65535"
            ));
        }
    }
    Ok(())
}

/// `2m`, `90s`, `1h`, `500ms` (humantime), for duration flags.
pub fn parse_duration(flag: &str, s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{flag}: cannot read {s:?} ({e}); write e.g. 90s, 2m or 1h"))
}

impl SyncArgs {
    /// Checks every argument; the error is one line naming the problem and the fix.
    pub fn validate(&self) -> Result<Plan, String> {
        match (&self.src, &self.dst) {
            (Some(src), Some(dst)) => self.validate_for(src, dst),
            _ => Err("give SRC and DST, or --plan URL".into()),
        }
    }

    /// The directory of the `--plan` URL (the URL itself, or the one holding its
    /// `plan.json`) and how to reach it: with the destination's endpoint and credentials.
    pub fn plan_dir(&self) -> Result<Option<(Location, StoreOptions)>, String> {
        let Some(url) = &self.plan else {
            return Ok(None);
        };
        let (loc, mut side) = plan_location(url, &self.ends.dst_endpoint, &self.ends.dst_region)?;
        side.io_timeout = Some(parse_duration("--io-timeout", &self.io_timeout)?);
        Ok(Some((loc, side)))
    }

    /// As [`SyncArgs::validate`], for a source and destination given apart from the
    /// arguments (a plan's).
    pub fn validate_for(&self, src: &str, dst: &str) -> Result<Plan, String> {
        let src = Location::parse(src).map_err(|e| format!("source: {e}"))?;
        let dst = Location::parse(dst).map_err(|e| format!("destination: {e}"))?;
        check_endpoint("--src-endpoint", &self.ends.src_endpoint, &src)?;
        check_endpoint("--dst-endpoint", &self.ends.dst_endpoint, &dst)?;
        if src.overlaps(
            self.ends.src_endpoint.as_deref(),
            &dst,
            self.ends.dst_endpoint.as_deref(),
        ) {
            return Err(format!(
                "source {} and destination {} are the same location or one lies inside the other; a sync would copy into its own source or delete it; give two separate locations",
                snapferry_engine::location::redact_url(&src.url()),
                snapferry_engine::location::redact_url(&dst.url())
            ));
        }
        let part_size = parse_size(&self.part_size).map_err(|e| format!("--part-size: {e}"))?;
        let multipart_threshold = parse_size(&self.multipart_threshold)
            .map_err(|e| format!("--multipart-threshold: {e}"))?;
        let bwlimit = match &self.bwlimit {
            Some(b) => Some(parse_rate(b).map_err(|e| format!("--bwlimit: {e}"))?),
            None => None,
        };
        if !self.snapshot.is_empty() && self.snapshot_aware == SnapshotAwareArg::Off {
            return Err("--snapshot needs --snapshot-aware auto or on".into());
        }
        if self.tpslimit == Some(0) {
            return Err(
                "--tpslimit 0 would send nothing; give a positive number or leave it out".into(),
            );
        }
        let opts = SyncOptions {
            concurrency: self.concurrency,
            part_size,
            multipart_threshold,
            bwlimit,
            tpslimit: self.tpslimit,
            delete: self.delete,
            dry_run: self.dry_run,
            snapshot_aware: match self.snapshot_aware {
                SnapshotAwareArg::Auto => SnapshotAware::Auto,
                SnapshotAwareArg::On => SnapshotAware::On,
                SnapshotAwareArg::Off => SnapshotAware::Off,
            },
            snapshots: self.snapshot.clone(),
            allow_empty_source: self.allow_empty_source,
            list_fan_out: self.list_fan_out,
            max_delete: MaxDelete::parse(&self.max_delete).map_err(|e| e.to_string())?,
            replace_repository: self.replace_repository,
            lease_ttl: parse_duration("--lease-ttl", &self.lease_ttl)?,
            stale_upload_age: parse_duration("--stale-upload-age", &self.stale_upload_age)?,
            verify_destination: match self.verify_destination {
                VerifyDestinationArg::Changed => VerifyDestination::Changed,
                VerifyDestinationArg::Full => VerifyDestination::Full,
            },
            confirm_before_commit: self.confirm_before_commit,
            role: Default::default(),
            plan_from: match self.plan_from {
                PlanFromArg::Metadata => PlanFrom::Metadata,
                PlanFromArg::Listing => PlanFrom::Listing,
            },
            retry: snapferry_engine::retry::RetryPolicy::with_budget(parse_duration(
                "--retry-budget",
                &self.retry_budget,
            )?),
        };
        let io_timeout = parse_duration("--io-timeout", &self.io_timeout)?;
        if io_timeout < std::time::Duration::from_secs(1) {
            return Err(format!(
                "--io-timeout {:?} is too short; use at least 1s (the default is 30s)",
                self.io_timeout
            ));
        }
        opts.validate().map_err(|e| e.to_string())?;
        if let Some(p) = &self.report {
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(d) = parent {
                if !d.is_dir() {
                    return Err(format!(
                        "--report {}: directory {} does not exist; create it or choose another path",
                        p.display(),
                        d.display()
                    ));
                }
            }
            if p.is_dir() {
                return Err(format!(
                    "--report {} is a directory; give a file path",
                    p.display()
                ));
            }
            // Found out now, not after hours of copying: the report's directory must take
            // a new file (the report is written there atomically, through a temp file).
            let dir = parent
                .map(std::path::Path::to_path_buf)
                .unwrap_or_else(|| ".".into());
            if let Err(e) = tempfile::NamedTempFile::new_in(&dir) {
                return Err(format!(
                    "--report {}: cannot write in {} ({e}); choose a writable path",
                    p.display(),
                    dir.display()
                ));
            }
            if std::fs::metadata(p).is_ok_and(|m| m.permissions().readonly()) {
                return Err(format!(
                    "--report {} exists and is read-only; choose another path",
                    p.display()
                ));
            }
        }
        let side =
            |loc: &Location, endpoint: &Option<String>, region: &Option<String>, name: &str| {
                resolve_side(
                    loc,
                    endpoint,
                    region,
                    name,
                    if name == "SRC" { "--src" } else { "--dst" },
                )
            };
        let verify_source = match self.verify_source {
            VerifySourceArg::Auto => snapferry_engine::store::VerifySource::Auto,
            VerifySourceArg::Md5 => snapferry_engine::store::VerifySource::Md5,
            VerifySourceArg::Off => snapferry_engine::store::VerifySource::Off,
        };
        let timed = |mut s: StoreOptions| {
            s.io_timeout = Some(io_timeout);
            s.verify_source = verify_source;
            s
        };
        Ok(Plan {
            src_side: timed(side(
                &src,
                &self.ends.src_endpoint,
                &self.ends.src_region,
                "SRC",
            )?),
            dst_side: timed(side(
                &dst,
                &self.ends.dst_endpoint,
                &self.ends.dst_region,
                "DST",
            )?),
            src,
            dst,
            opts,
            report_path: self.report.clone(),
            progress: self.progress,
        })
    }
}

const PROBE_AFTER_HELP: &str = "\
The probe writes scratch objects under a temporary prefix on each side (at most about
--max-scratch bytes at once), measures listing, GETs and PUTs alone, and a real copy through
sync's pipeline at concurrency 1, 2, 4, ... until the gain drops below 10%, then removes
every scratch object and aborts every scratch upload (also on errors and Ctrl-C).
It refuses a location that already holds objects unless --scratch-prefix names an empty
prefix (relative to each location) for its scratch objects.

Credentials and endpoints as for sync (SNAPFERRY_SRC_* / SNAPFERRY_DST_*, then the chains).

Exit codes: 0 measured (and predicted); 1 the probe failed or was interrupted (scratch
objects removed), or its scratch objects could not all be removed (the message names the
prefix); 2 bad usage, or a location that holds data without --scratch-prefix; 3 cannot
reach or authenticate to a store.";

/// `snapferry bench probe SRC DST [options]`.
#[derive(Debug, clap::Args)]
#[command(after_help = PROBE_AFTER_HELP)]
pub struct ProbeArgs {
    /// Source: s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a plain path.
    pub src: String,
    /// Destination: s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a plain path.
    pub dst: String,
    #[command(flatten)]
    pub ends: Endpoints,
    /// Predict the time to move this much data (e.g. 12TiB), in objects of --object-size.
    #[arg(long, value_name = "SIZE", conflicts_with = "from_source")]
    pub size: Option<String>,
    /// Predict the time to move what SRC holds (its listing is summed; SRC then holds
    /// data, so give --scratch-prefix).
    #[arg(long)]
    pub from_source: bool,
    /// JSON output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Put the scratch objects under this prefix of each location (must be empty there);
    /// needed when a location already holds objects.
    #[arg(long, value_name = "P")]
    pub scratch_prefix: Option<String>,
    /// Time budget of one level (a quarter each for GETs and PUTs, half for the copy;
    /// the chosen setting is copied once more for the whole budget).
    #[arg(long, value_name = "DURATION", default_value = "4s")]
    pub duration: String,
    /// Highest --concurrency tried.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_concurrency: usize,
    /// Most scratch bytes on either side at once (also bounds a level's copy).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub max_scratch: String,
    /// Size of the scratch objects: what the data blobs to move look like.
    #[arg(long, value_name = "SIZE", default_value = "128MiB")]
    pub object_size: String,
    /// Probe only this part size (default: 16MiB for the sweep, then 8, 32, 64MiB).
    #[arg(long, value_name = "SIZE")]
    pub part_size: Option<String>,
    /// Small objects written to measure listing and per-object costs (0: skip).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub list_objects: usize,
}

/// `--duration`: `2s`, `500ms`, `1m`, `1.5s`, or plain seconds (which humantime's
/// [`parse_duration`] refuses; the probe has always read them).
fn probe_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(std::time::Duration::from_secs_f64(v * scale)),
        _ => Err(format!(
            "--duration: cannot read {s:?}; write e.g. 4s, 500ms or 1m"
        )),
    }
}

impl ProbeArgs {
    /// Checks every argument; the error is one line naming the problem and the fix.
    pub fn validate(&self) -> Result<(ProbeOptions, SizeSpec, Side, Side), String> {
        let (src, dst) = self.ends.resolve(&self.src, &self.dst)?;
        if src.0 == dst.0 && self.ends.src_endpoint == self.ends.dst_endpoint {
            return Err(
                "source and destination are the same location; give two different ones".into(),
            );
        }
        let size = match (&self.size, self.from_source) {
            (Some(s), _) => SizeSpec::Bytes(parse_size(s).map_err(|e| format!("--size: {e}"))?),
            (None, true) => SizeSpec::FromSource,
            (None, false) => SizeSpec::None,
        };
        let part_size = match &self.part_size {
            Some(p) => Some(parse_size(p).map_err(|e| format!("--part-size: {e}"))?),
            None => None,
        };
        let opts = ProbeOptions {
            part_size,
            object_size: parse_size(&self.object_size)
                .map_err(|e| format!("--object-size: {e}"))?,
            max_concurrency: self.max_concurrency,
            duration: probe_duration(&self.duration)?,
            max_scratch: parse_size(&self.max_scratch)
                .map_err(|e| format!("--max-scratch: {e}"))?,
            list_objects: self.list_objects,
            ..ProbeOptions::default()
        };
        opts.validate().map_err(|e| e.to_string())?;
        Ok((opts, size, src, dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `check_endpoint` accepts and refuses, with the start of each message.
    #[test]
    fn endpoint_checks_accept_and_refuse_as_before() {
        let s3 = Location::parse("s3://bkt/p").unwrap();
        let oss = Location::parse("oss://bkt/p").unwrap();
        let fs = Location::parse("/tmp/x").unwrap();
        let f = "--src-endpoint";
        let cases: &[(&Location, Option<&str>, Result<(), &str>)] = &[
            (&s3, None, Ok(())),
            (&fs, None, Ok(())),
            (&oss, Some("anything at all"), Ok(())),
            (&s3, Some("http://127.0.0.1:9000"), Ok(())),
            (&s3, Some("https://s3.example.com"), Ok(())),
            (&s3, Some("http://h:9000/base/path"), Ok(())),
            (&s3, Some("http://[::1]:9000"), Ok(())),
            (&s3, Some("http://[::1]"), Ok(())),
            (&s3, Some("http://h:0"), Ok(())),
            (&s3, Some("http://h:09000"), Ok(())),
            // Accepted today, refused by url::Url (see check_endpoint's doc).
            (&s3, Some("http://exa mple:9000"), Ok(())),
            (&s3, Some("http://[::1:9000"), Ok(())),
            (&fs, Some("http://h"), Err("--src-endpoint applies to s3:// and oss:// locations only; remove it or use such a URL")),
            (&s3, Some("127.0.0.1:9000"), Err("--src-endpoint \"127.0.0.1:9000\" must start with http:// or https://, e.g. http://127.0.0.1:9000")),
            (&s3, Some("HTTP://h"), Err("--src-endpoint \"HTTP://h\" must start with http://")),
            (&s3, Some("http:/h"), Err("--src-endpoint \"http:/h\" must start with http://")),
            (&s3, Some("ftp://h"), Err("--src-endpoint \"ftp://h\" must start with http://")),
            (&s3, Some("http://"), Err("--src-endpoint \"http://\" has no host; write e.g. http://127.0.0.1:9000")),
            (&s3, Some("http:///p"), Err("--src-endpoint \"http:///p\" has no host")),
            (&s3, Some("http://h:x"), Err("--src-endpoint \"http://h:x\" has a bad port \"x\"; use a number 1..65535")),
            (&s3, Some("http://h:"), Err("--src-endpoint \"http://h:\" has a bad port \"\"")),
            (&s3, Some("http://h:65536"), Err("--src-endpoint \"http://h:65536\" has a bad port")),
            (&s3, Some("http://h?x=1"), Err("--src-endpoint \"http://h?<redacted>\" carries credentials or a query string; give only scheme, host and port (e.g. http://127.0.0.1:9000), and the credentials in SNAPFERRY_SRC_/DST_ACCESS_KEY_ID and _SECRET_ACCESS_KEY")),
            (&s3, Some("http://h/p#f"), Err("carries credentials or a query string")),
            (&s3, Some("http://u@h"), Err("carries credentials or a query string")),
        ];
        for (loc, ep, want) in cases {
            let got = check_endpoint(f, &ep.map(str::to_string), loc);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(w), Err(m))
                    if m.contains(w) && (m.starts_with(w) || w.starts_with("carries")) => {}
                _ => panic!("{ep:?} on {loc:?}: got {got:?}, want {want:?}"),
            }
        }
        // A password in the endpoint never reaches the message.
        let m = check_endpoint(f, &Some("http://u:secret@h".into()), &s3).unwrap_err();
        assert!(!m.contains("secret"), "{m}");
    }

    #[test]
    fn probe_durations_read_as_operators_write_them() {
        let cases: &[(&str, Option<f64>)] = &[
            ("4s", Some(4.0)),
            ("500ms", Some(0.5)),
            ("1m", Some(60.0)),
            ("2.5", Some(2.5)),
            ("soon", None),
            ("-1s", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                probe_duration(s).ok().map(|d| d.as_secs_f64()),
                *want,
                "{s:?}"
            );
        }
    }
}
