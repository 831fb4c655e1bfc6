//! Medians and ranges of the samples, and the per-series figures the tables, the targets
//! and the chart show. Only runs without a problem count.

use std::collections::BTreeMap;

use crate::run::{Sample, Series, WorkloadResult};

/// Median (mean of the middle two for an even count), smallest and largest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub med: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(v: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut s: Vec<f64> = v.into_iter().collect();
        s.sort_by(f64::total_cmp);
        let (n, min, max) = (s.len(), *s.first()?, *s.last()?);
        let med = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Spread { med, min, max })
    }

    /// `12.3 (11.9–12.8)`, with `d` decimals.
    pub fn show(&self, d: usize) -> String {
        if (self.max - self.min).abs() < f64::EPSILON {
            format!("{:.d$}", self.med)
        } else {
            format!("{:.d$} ({:.d$}–{:.d$})", self.med, self.min, self.max)
        }
    }
}

/// The figures of one tool on one workload.
#[derive(Debug, Clone)]
pub struct Figures {
    pub wall: Spread,
    /// MiB/s moved (copy workloads).
    pub mibps: Spread,
    /// Objects per second (copied, or decided for W4).
    pub objps: Spread,
    /// CPU seconds, user + system.
    pub cpu: Spread,
    pub cpu_per_gib: Spread,
    /// Peak RSS, MiB.
    pub rss: Spread,
    /// Share of the machine's CPU time the copier and both servers used, percent.
    pub busy: Spread,
    /// Share other processes used meanwhile (the machine is shared), percent.
    pub others: Spread,
    /// The sample with the median wall time (requests and latencies come from it).
    pub median_sample: Sample,
    /// Requests of every counted run, by kind: the largest seen (they barely vary).
    pub requests_max: BTreeMap<String, u64>,
}

/// Figures of a series, when at least one run counted.
pub fn figures(w: &WorkloadResult, s: &Series, cores: f64) -> Option<Figures> {
    let mut ok: Vec<&Sample> = s.samples.iter().filter(|x| x.problem.is_none()).collect();
    ok.sort_by(|a, b| a.measured.wall_seconds.total_cmp(&b.measured.wall_seconds));
    let of = |f: &dyn Fn(&Sample) -> f64| Spread::of(ok.iter().map(|x| f(x)));
    let gib = (w.bytes as f64 / (1u64 << 30) as f64).max(1e-9);
    let share = |x: &Sample, cpu: f64| 100.0 * cpu / (x.measured.wall_seconds * cores);
    let mut requests_max = BTreeMap::new();
    for (k, v) in ok.iter().flat_map(|x| &x.requests) {
        let e = requests_max.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
    Some(Figures {
        wall: of(&|x| x.measured.wall_seconds)?,
        mibps: of(&|x| w.bytes as f64 / x.measured.wall_seconds / (1 << 20) as f64)?,
        objps: of(&|x| w.objects as f64 / x.measured.wall_seconds)?,
        cpu: of(&|x| x.measured.cpu())?,
        cpu_per_gib: of(&|x| x.measured.cpu() / gib)?,
        rss: of(&|x| x.measured.max_rss_kib as f64 / 1024.0)?,
        busy: of(&|x| share(x, x.measured.cpu() + x.server_cpu_seconds))?,
        others: of(&|x| share(x, x.other_cpu_seconds))?,
        median_sample: ok[ok.len() / 2].clone(),
        requests_max,
    })
}
