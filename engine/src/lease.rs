//! One writer per destination: a lease object, `.snapferry-lease`, at the destination's
//! root, held for the whole run.
//!
//! Two scheduled rounds on one destination would both copy everything, and the second
//! would abort the first one's in-flight uploads as "stale". The lease prevents it:
//!
//! - **Acquire**: read the lease; if a live holder has it, stop with [`ErrorKind::Locked`]
//!   naming the holder. If there is none, create it with a create-if-absent write (S3
//!   `If-None-Match: *`, OSS `x-oss-forbid-overwrite`, a hard link on a directory), so
//!   two runs starting at the same instant cannot both succeed. A lease past its expiry,
//!   or held by a process of this host that no longer runs (a `kill -9`), is taken over
//!   (an `If-Match` overwrite where the store has ETags, else compare-then-replace).
//!   After writing, the lease is read back: only the run whose id is there proceeds.
//! - **Renew**: every third of the time to live; each renewal first checks that the
//!   lease is still ours. A run that finds it taken, or cannot renew before it expires,
//!   cancels itself (it fences itself off rather than race a newer holder).
//! - **Release**: at the end of the run (also after errors and Ctrl-C), deleted if ours.
//!
//! Limits, plainly: a store that ignores conditional writes (some S3 emulations) could
//! let two runs starting within the same few milliseconds both write; the read-back and
//! the first renewal then stop one of them. Expiry compares the holder's clock with
//! ours, so hosts need roughly synchronised clocks (NTP); liveness by PID works only
//! for holders on the same host.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{PutOptions, Store, LEASE_KEY};

/// Default time to live of a lease (renewed every third of it while the run lasts).
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);
/// The shortest time to live accepted (tests use short ones).
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest a run waits to release its lease at the end.
const RELEASE_DEADLINE: Duration = Duration::from_secs(20);

/// Who holds a lease: what the lease object says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// Random id of the holding run.
    pub id: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Start time of that process (Linux: clock ticks after boot), to tell a reused pid.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// When the run took the lease (Unix ms).
    pub started_ms: i64,
    /// Last renewal (Unix ms).
    pub renewed_ms: i64,
    /// The lease is free after this instant (Unix ms) unless renewed.
    pub expires_ms: i64,
    /// snapferry version of the holder.
    #[serde(default)]
    pub version: String,
    /// The holder host's boot id (Linux), so that a host name shared by several machines
    /// or a reboot is never taken for the same running system.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The holder's PID namespace (Linux), so that a container's pid is never looked up
    /// among the host's processes.
    #[serde(default)]
    pub pid_ns: Option<String>,
}

impl Holder {
    /// One line naming the holder, for the "destination in use" error.
    pub fn describe(&self, now_ms: i64) -> String {
        format!(
            "held by {} pid {} since {} (run {}), lease {}",
            self.host,
            self.pid,
            rfc3339(self.started_ms),
            self.id,
            if self.expires_ms > now_ms {
                format!(
                    "expires in {}s unless renewed",
                    (self.expires_ms - now_ms + 999) / 1000
                )
            } else {
                "expired".into()
            }
        )
    }
}

/// What held the lease before this run took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// Nobody (or a run that released it).
    None,
    /// A holder that let it expire (crashed elsewhere, or stopped).
    Expired(Holder),
    /// A holder on this host whose process is gone (killed): everything it left is stale.
    Dead(Holder),
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn now_ms() -> i64 {
    crate::store::fs::now_ms()
}

/// This host's name (Linux: the kernel's; else `HOSTNAME`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown-host".into())
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), if it runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // after its closing parenthesis, where field 3 is the first.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn pid_ns() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether the holder is provably gone: it ran on this very system (same host name, boot
/// id and PID namespace) and its process no longer runs, or the pid now belongs to a
/// process started at another time; or its host has rebooted since. `None`: cannot tell
/// (another machine, another container, an older holder that did not record these).
fn holder_is_dead(h: &Holder, host: &str) -> Option<bool> {
    if h.host != host {
        return None;
    }
    let (my_boot, my_ns) = (boot_id(), pid_ns());
    match (&h.boot_id, &my_boot) {
        (Some(a), Some(b)) if a != b => return Some(true), // rebooted since
        (Some(_), Some(_)) => {}
        _ => return None,
    }
    if h.pid_ns.is_none() || h.pid_ns != my_ns {
        return None;
    }
    match (process_start(h.pid), h.pid_start) {
        (None, _) => Some(true),
        (Some(now), Some(then)) => Some(now != then),
        (Some(_), None) => None,
    }
}

/// Reads the lease: its holder and ETag, or `None` when there is none.
async fn read(store: &dyn Store) -> Result<Option<(Holder, Option<String>)>> {
    Ok(read_body(store).await?.map(|(h, etag, _)| (h, etag)))
}

/// As [`read`], with the MD5 of the body.
async fn read_body(store: &dyn Store) -> Result<Option<(Holder, Option<String>, String)>> {
    // Absent, or released between the HEAD and the GET: no lease.
    let Some((m, body)) = crate::store::read_whole(store, LEASE_KEY).await? else {
        return Ok(None);
    };
    let h: Holder = serde_json::from_slice(&body).map_err(|e| {
        Error::locked(format!(
            "{} holds a {LEASE_KEY} that is not a snapferry lease ({e}); if no snapferry run uses this destination, delete that object",
            store.describe()
        ))
    })?;
    let md5 = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(&body))
    };
    Ok(Some((h, m.etag, md5)))
}

/// Writes the lease; returns the MD5 of the body, which is its ETag on S3 and OSS (so a
/// HEAD can tell our lease from another without reading it).
async fn write(store: &dyn Store, h: &Holder, opts: PutOptions) -> Result<String> {
    use md5::{Digest, Md5};
    let body = serde_json::to_vec_pretty(h)
        .map_err(|e| Error::other(format!("cannot encode the lease: {e}")))?;
    let md5 = hex::encode(Md5::digest(&body));
    let data = Bytes::from(body);
    let crc = crc32fast::hash(&data);
    store.put(LEASE_KEY, data, crc, &opts).await?;
    Ok(md5)
}

/// What the lease object is now, seen from the run `me` whose last write had body MD5
/// `mine`.
enum Seen {
    /// No lease.
    Absent,
    /// Ours, with its ETag when the store gives one.
    Ours(Option<String>),
    /// Someone else's.
    Other(Holder),
}

/// One HEAD when the store's ETag is the body's MD5 (S3, OSS); else the body is read.
/// `mine` is updated to the MD5 of the body there when that body is ours.
async fn look(store: &dyn Store, me: &Holder, mine: &mut String) -> Result<Seen> {
    let Some(m) = store.head(LEASE_KEY).await? else {
        return Ok(Seen::Absent);
    };
    if m.etag.as_deref() == Some(mine.as_str()) {
        return Ok(Seen::Ours(m.etag));
    }
    Ok(match read_body(store).await? {
        None => Seen::Absent,
        Some((h, etag, md5)) if h.id == me.id => {
            *mine = md5;
            Seen::Ours(etag)
        }
        Some((h, _, _)) => Seen::Other(h),
    })
}

/// Reads who holds the destination's lease, without taking it (`--dry-run`).
pub async fn peek(store: &dyn Store) -> Result<Option<Holder>> {
    Ok(read(store)
        .await?
        .map(|(h, _)| h)
        .filter(|h| h.expires_ms > now_ms() && holder_is_dead(h, &host_name()) != Some(true)))
}

/// How long before its expiry a lease stops counting as held: the time a write may take
/// to land after the check, so that no write of ours lands after another run could
/// have taken the lease over.
fn margin(ttl: Duration) -> i64 {
    (ttl.as_millis() / 4) as i64
}

/// Whether this run may still write as the destination's only writer: the lease was
/// last confirmed valid until a known instant (its expiry less a margin). A run paused
/// for longer (SIGSTOP, a frozen VM) finds it past and stops before its next dangerous
/// write, even before its renewer has noticed.
#[derive(Clone, Debug)]
pub struct Fence {
    valid_until_ms: Arc<AtomicI64>,
}

impl Fence {
    /// `Locked` when the lease can no longer be counted on.
    pub fn check(&self) -> Result<()> {
        let until = self.valid_until_ms.load(Ordering::Acquire);
        if now_ms() < until {
            return Ok(());
        }
        Err(Error::locked(format!(
            "the destination lease was not renewed in time (valid until {}); stopping before a write another run could race",
            rfc3339(until)
        )))
    }

    /// A fence that always holds (dry runs, which write nothing).
    pub fn open() -> Self {
        Fence {
            valid_until_ms: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }
}

/// A held lease; renewed in the background until [`Lease::release`].
pub struct Lease {
    store: Arc<dyn Store>,
    /// Our holder record and the MD5 of the body last written.
    holder: Arc<Mutex<(Holder, String)>>,
    fence: Fence,
    lost: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease of `store` (a destination; give it a store whose requests survive
    /// cancellation, so that release works after Ctrl-C). When the lease is lost later,
    /// `on_lost` is cancelled. Fails with [`ErrorKind::Locked`] naming a live holder.
    pub async fn acquire(
        store: Arc<dyn Store>,
        ttl: Duration,
        on_lost: CancellationToken,
    ) -> Result<(Lease, Previous)> {
        let ttl = ttl.max(MIN_TTL);
        let host = host_name();
        let pid = std::process::id();
        let start = now_ms();
        let me = Holder {
            id: format!("{:016x}", rand::random::<u64>()),
            host: host.clone(),
            pid,
            pid_start: process_start(pid),
            started_ms: start,
            renewed_ms: start,
            expires_ms: start + ttl.as_millis() as i64,
            version: env!("CARGO_PKG_VERSION").into(),
            boot_id: boot_id(),
            pid_ns: pid_ns(),
        };
        let mut previous = Previous::None;
        // A few rounds: a competitor may create or release the lease between our write
        // and our read; each round starts again with a create-if-absent.
        for _ in 0..4 {
            let created = write(
                store.as_ref(),
                &me,
                PutOptions {
                    if_none_match: true,
                    ..Default::default()
                },
            )
            .await;
            let mut mine = match created {
                Ok(md5) => md5,
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    let now = now_ms();
                    let Some((h, etag, md5)) = read_body(store.as_ref()).await? else {
                        continue; // released meanwhile
                    };
                    if h.id == me.id {
                        // Our own earlier attempt, whose answer was lost.
                        let lease = Lease::start(store, me, md5, ttl, on_lost);
                        return Ok((lease, previous));
                    }
                    let dead = holder_is_dead(&h, &host) == Some(true);
                    if h.expires_ms > now && !dead {
                        return Err(Error::locked(format!(
                            "another snapferry run is writing to {} ({}); wait for it to finish (a crashed holder's lease is taken over once it expires)",
                            store.describe(),
                            h.describe(now)
                        )));
                    }
                    previous = if dead {
                        Previous::Dead(h.clone())
                    } else {
                        Previous::Expired(h.clone())
                    };
                    match take_over(store.as_ref(), &me, &h, etag).await {
                        Ok(md5) => md5,
                        Err(e) if e.kind() == ErrorKind::PreconditionFailed => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            // Read back: only the run whose lease is there proceeds (a store that ignores
            // conditional writes lets two creates succeed; the later one is there).
            match look(store.as_ref(), &me, &mut mine).await? {
                Seen::Ours(_) => {
                    let lease = Lease::start(store, me, mine, ttl, on_lost);
                    return Ok((lease, previous));
                }
                Seen::Other(h) => {
                    return Err(Error::locked(format!(
                        "another snapferry run took {} at the same moment ({})",
                        store.describe(),
                        h.describe(now_ms())
                    )))
                }
                Seen::Absent => continue,
            }
        }
        Err(Error::locked(format!(
            "could not take the lease of {}: other runs keep taking and releasing it",
            store.describe()
        )))
    }

    fn start(
        store: Arc<dyn Store>,
        me: Holder,
        mine: String,
        ttl: Duration,
        on_lost: CancellationToken,
    ) -> Lease {
        let fence = Fence {
            valid_until_ms: Arc::new(AtomicI64::new(me.expires_ms - margin(ttl))),
        };
        let holder = Arc::new(Mutex::new((me, mine)));
        let lost = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew_loop(
            store.clone(),
            holder.clone(),
            lost.clone(),
            ttl,
            fence.clone(),
            stop.clone(),
            on_lost,
        ));
        Lease {
            store,
            holder,
            lost,
            fence,
            stop,
            renewer,
        }
    }

    /// The check a run makes right before a write that must not race a newer holder
    /// (the commit point, `index.latest`, deletes).
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Why the lease was lost during the run, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// The holder record of this run.
    pub fn holder(&self) -> Option<Holder> {
        self.holder.lock().ok().map(|h| h.0.clone())
    }

    /// Stops renewing and deletes the lease if it is still ours.
    pub async fn release(self) {
        let Lease {
            store,
            holder,
            stop,
            renewer,
            ..
        } = self;
        stop.cancel();
        let _ = renewer.await;
        let Some((me, mut mine)) = holder.lock().ok().map(|h| h.clone()) else {
            return;
        };
        // Bounded: a stopping run never waits long on a destination that does not answer;
        // an unreleased lease only makes the next run wait for its expiry.
        let release = async {
            match look(store.as_ref(), &me, &mut mine).await? {
                Seen::Ours(_) => store.delete(LEASE_KEY).await,
                _ => Ok(()),
            }
        };
        match tokio::time::timeout(RELEASE_DEADLINE, release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                "could not release the lease {LEASE_KEY} ({e}); the next run takes it over once it expires"
            ),
            Err(_) => tracing::warn!(
                "releasing the lease {LEASE_KEY} took longer than {RELEASE_DEADLINE:?}; the next run takes it over once it expires"
            ),
        }
    }
}

/// Replaces `old` (expired or dead) with `me`: an `If-Match` overwrite where the store
/// gives ETags, else re-check and replace (delete, then create-if-absent).
async fn take_over(
    store: &dyn Store,
    me: &Holder,
    old: &Holder,
    etag: Option<String>,
) -> Result<String> {
    tracing::info!(
        "taking over the lease of {} ({})",
        store.describe(),
        old.describe(now_ms())
    );
    if let Some(etag) = etag {
        return write(
            store,
            me,
            PutOptions {
                if_match: Some(etag),
                ..Default::default()
            },
        )
        .await;
    }
    match read(store).await? {
        Some((h, _)) if &h == old => store.delete(LEASE_KEY).await?,
        // Changed under us: let the caller read again.
        Some(_) => {
            return Err(Error::precondition(
                "the lease changed while taking it over",
            ))
        }
        None => {}
    }
    write(
        store,
        me,
        PutOptions {
            if_none_match: true,
            ..Default::default()
        },
    )
    .await
}

async fn renew_loop(
    store: Arc<dyn Store>,
    holder: Arc<Mutex<(Holder, String)>>,
    lost: Arc<Mutex<Option<String>>>,
    ttl: Duration,
    fence: Fence,
    stop: CancellationToken,
    on_lost: CancellationToken,
) {
    let every = ttl / 3;
    let lose = |why: String| {
        tracing::warn!("lost the destination lease: {why}");
        if let Ok(mut l) = lost.lock() {
            l.get_or_insert(why);
        }
        // Nothing may count on the lease any more, whatever the clock says.
        fence.valid_until_ms.store(i64::MIN, Ordering::Release);
        on_lost.cancel();
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let Some((mut me, mut mine)) = holder.lock().ok().map(|h| h.clone()) else {
            return;
        };
        let expires = me.expires_ms;
        let renewal = async {
            let etag = match look(store.as_ref(), &me, &mut mine).await? {
                Seen::Ours(etag) => etag,
                Seen::Other(h) => {
                    return Ok(Err(format!(
                        "another run took it over ({})",
                        h.describe(now_ms())
                    )))
                }
                Seen::Absent => return Ok(Err("it was deleted by someone else".to_string())),
            };
            let now = now_ms();
            me.renewed_ms = now;
            me.expires_ms = now + ttl.as_millis() as i64;
            let written = write(
                store.as_ref(),
                &me,
                PutOptions {
                    if_match: etag,
                    ..Default::default()
                },
            )
            .await;
            match written {
                Ok(md5) => Ok(Ok((me.clone(), md5))),
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    Ok(Err("it changed while being renewed".to_string()))
                }
                Err(e) => Err(e),
            }
        };
        // A renewal that cannot finish before the lease runs out is as good as lost.
        let left = Duration::from_millis((expires - now_ms()).max(0) as u64);
        let renewed = tokio::select! {
            r = tokio::time::timeout(left, renewal) => r.unwrap_or_else(|_| {
                Err(Error::timeout("the renewal did not finish before the lease expired"))
            }),
            _ = stop.cancelled() => return,
        };
        match renewed {
            Ok(Ok(new)) => {
                fence
                    .valid_until_ms
                    .store(new.0.expires_ms - margin(ttl), Ordering::Release);
                if let Ok(mut h) = holder.lock() {
                    *h = new;
                }
            }
            Ok(Err(why)) => {
                lose(why);
                return;
            }
            Err(e) => {
                // Transient trouble: keep trying until the lease would expire, then fence
                // ourselves off (another run may take it over from then on).
                if now_ms() + every.as_millis() as i64 >= expires {
                    lose(format!("it could not be renewed before it expired ({e})"));
                    return;
                }
                tracing::warn!("could not renew the destination lease ({e}); trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FsStore::new(dir.path()));
        let (a, prev) = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(prev, Previous::None);
        let e = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
            .await
            .err()
            .expect("second run refused");
        assert_eq!(e.kind(), ErrorKind::Locked);
        assert!(e.to_string().contains(&host_name()), "{e}");
        assert!(peek(store.as_ref()).await.unwrap().is_some());
        a.release().await;
        assert!(store.head(LEASE_KEY).await.unwrap().is_none());
        let (b, prev) = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(prev, Previous::None);
        b.release().await;
    }

    #[tokio::test]
    async fn expired_and_dead_holders_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FsStore::new(dir.path()));
        let now = now_ms();
        let foreign = Holder {
            id: "old".into(),
            host: "elsewhere".into(),
            pid: 1,
            pid_start: None,
            started_ms: now - 10_000,
            renewed_ms: now - 10_000,
            expires_ms: now - 1,
            version: "0".into(),
            boot_id: None,
            pid_ns: None,
        };
        write(store.as_ref(), &foreign, PutOptions::default())
            .await
            .unwrap();
        let (l, prev) = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(prev, Previous::Expired(foreign.clone()));
        l.release().await;

        // Live by its expiry, but a process of this host that no longer runs.
        let dead = Holder {
            host: host_name(),
            pid: u32::MAX - 7,
            expires_ms: now + 3_600_000,
            boot_id: boot_id(),
            pid_ns: pid_ns(),
            ..foreign.clone()
        };
        write(store.as_ref(), &dead, PutOptions::default())
            .await
            .unwrap();
        let (l, prev) = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(prev, Previous::Dead(dead));
        l.release().await;

        // The same host name, but another machine (or a reboot): a boot id that is not
        // ours, with the pid gone, still proves nothing about a holder elsewhere...
        let elsewhere = Holder {
            host: host_name(),
            pid: u32::MAX - 7,
            expires_ms: now + 3_600_000,
            boot_id: None,
            pid_ns: pid_ns(),
            ..foreign.clone()
        };
        write(store.as_ref(), &elsewhere, PutOptions::default())
            .await
            .unwrap();
        let e = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
            .await
            .err()
            .expect("a holder that may be alive keeps its lease");
        assert_eq!(e.kind(), ErrorKind::Locked);
        // ...and one in another PID namespace (a container) neither.
        let container = Holder {
            boot_id: boot_id(),
            pid_ns: Some("pid:[1]".into()),
            ..elsewhere.clone()
        };
        write(store.as_ref(), &container, PutOptions::default())
            .await
            .unwrap();
        assert!(
            Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
                .await
                .is_err()
        );
        // A host that has rebooted since: its processes are gone.
        if boot_id().is_some() {
            let rebooted = Holder {
                boot_id: Some("00000000-0000-0000-0000-000000000000".into()),
                ..container.clone()
            };
            write(store.as_ref(), &rebooted, PutOptions::default())
                .await
                .unwrap();
            let (l, prev) = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(prev, Previous::Dead(rebooted));
            l.release().await;
        }

        // Live elsewhere: refused.
        let live = Holder {
            expires_ms: now + 3_600_000,
            ..foreign
        };
        write(store.as_ref(), &live, PutOptions::default())
            .await
            .unwrap();
        let e = Lease::acquire(store.clone(), DEFAULT_TTL, CancellationToken::new())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Locked);
        assert!(e.to_string().contains("elsewhere pid 1"), "{e}");
    }

    #[tokio::test]
    async fn a_taken_lease_cancels_the_run_at_the_next_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FsStore::new(dir.path()));
        let on_lost = CancellationToken::new();
        let (l, _) = Lease::acquire(store.clone(), Duration::from_millis(1500), on_lost.clone())
            .await
            .unwrap();
        let mut other = l.holder().unwrap();
        other.id = "intruder".into();
        write(store.as_ref(), &other, PutOptions::default())
            .await
            .unwrap();
        let fence = l.fence();
        assert!(fence.check().is_ok());
        tokio::time::timeout(Duration::from_secs(5), on_lost.cancelled())
            .await
            .expect("lost within a renewal interval");
        assert!(l.lost().unwrap().contains("took it over"), "{:?}", l.lost());
        assert_eq!(fence.check().unwrap_err().kind(), ErrorKind::Locked);
        l.release().await;
        // Not ours: release left the intruder's lease alone.
        assert!(store.head(LEASE_KEY).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_lease_not_renewed_in_time_fences_its_holder_off() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FsStore::new(dir.path()));
        let (l, _) = Lease::acquire(store, MIN_TTL, CancellationToken::new())
            .await
            .unwrap();
        let fence = l.fence();
        assert!(fence.check().is_ok());
        // As if the process had been paused: the renewer never ran.
        l.stop.cancel();
        let t = std::time::Instant::now();
        while fence.check().is_ok() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the fence never closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(t.elapsed() <= MIN_TTL, "closed before the lease's expiry");
    }

    #[test]
    fn own_process_start_is_readable_and_stable() {
        let me = std::process::id();
        if std::path::Path::new("/proc/self/stat").exists() {
            let a = process_start(me).expect("own start time");
            assert_eq!(process_start(me), Some(a));
        }
    }
}
