//! `--delete`: the guard that decides whether planned deletes may run, and the deletes
//! themselves, from keys spilled to a temp file.

use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;

use super::{Ctx, Event};
use crate::error::{Error, Result};

/// Why the planned deletes must not run, if they must not: errors in the run, a source
/// that listed nothing, or more than `--max-delete` allows (shown by the caller).
pub(crate) fn delete_guard(ctx: &Ctx, planned: u64, dst_objects: u64) -> Option<String> {
    let c = &ctx.counters;
    let why = if planned == 0 {
        return None;
    } else if c.failed_objects.load(Ordering::Relaxed) > 0 {
        "there were errors in this run".to_string()
    } else if c.listed_objects.load(Ordering::Relaxed) == 0 {
        "the source listed no object".to_string()
    } else if planned > ctx.opts.max_delete.limit(dst_objects) {
        format!(
            "that is more than --max-delete {} of the destination's {dst_objects} objects allows; pass --max-delete with a higher bound (100% allows any) if this is intended",
            ctx.opts.max_delete.describe()
        )
    } else {
        return None;
    };
    Some(format!("not deleting {planned} destination objects: {why}"))
}

pub(crate) async fn run_or_plan_deletes(ctx: &Arc<Ctx>, deletes: DeleteSpill) -> Result<()> {
    if ctx.opts.dry_run {
        for key in deletes.keys()? {
            ctx.observer_event(&Event::PlanDelete { key: key? });
        }
        Ok(())
    } else {
        run_deletes(ctx, deletes).await
    }
}

pub(crate) async fn run_deletes(ctx: &Arc<Ctx>, deletes: DeleteSpill) -> Result<()> {
    ctx.fenced()?;
    let keys = deletes.keys()?;
    let stream = futures::stream::iter(keys).map(|key| {
        let ctx = ctx.clone();
        async move {
            let key = match key {
                Ok(k) => k,
                Err(e) => return Err(e),
            };
            // Every delete only while the lease is ours: a paused run that wakes up
            // after another took over deletes nothing more.
            ctx.fenced()?;
            match ctx.dst.delete(&key).await {
                Ok(()) => {
                    ctx.counters.deleted_objects.fetch_add(1, Ordering::Relaxed);
                    ctx.observer.event(&Event::Deleted { key });
                }
                Err(e) => ctx.failed(&key, &e),
            }
            Ok(())
        }
    });
    let mut s = stream.buffer_unordered(ctx.opts.concurrency);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}

/// Keys planned for deletion, spilled to a temp file as JSON strings (one per line,
/// so any key, newlines included, round-trips) to keep memory flat.
pub(crate) struct DeleteSpill {
    file: Option<std::io::BufWriter<tempfile::NamedTempFile>>,
    pub(crate) count: u64,
}

impl DeleteSpill {
    pub(crate) fn new() -> Result<Self> {
        Ok(DeleteSpill {
            file: None,
            count: 0,
        })
    }

    pub(crate) fn push(&mut self, key: &str) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(std::io::BufWriter::new(tempfile::NamedTempFile::new()?));
        }
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(key).map_err(|e| Error::other(e.to_string()))?;
            writeln!(f, "{line}")?;
        }
        self.count += 1;
        Ok(())
    }

    pub(crate) fn keys(self) -> Result<Box<dyn Iterator<Item = Result<String>> + Send>> {
        let Some(f) = self.file else {
            return Ok(Box::new(std::iter::empty()));
        };
        let tmp = f.into_inner().map_err(|e| Error::io(e.to_string()))?;
        let reader = std::io::BufReader::new(tmp.reopen()?);
        // Keep the temp file alive for as long as the iterator.
        let lines = reader.lines().map(move |l| {
            let _keep = &tmp;
            let l = l?;
            serde_json::from_str::<String>(&l).map_err(|e| Error::other(e.to_string()))
        });
        Ok(Box::new(lines))
    }
}
