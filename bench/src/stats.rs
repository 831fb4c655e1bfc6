//! Medians and ranges of the samples, and the per-series figures the tables and the
//! chart show. Only runs without a problem count.

use std::collections::BTreeMap;

use crate::run::{Sample, Series, WorkloadResult};

/// Median, smallest and largest of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub med: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(v: &[f64]) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let med = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Spread {
            med,
            min: s[0],
            max: s[n - 1],
        })
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
    /// Wall seconds.
    pub wall: Spread,
    /// MiB/s moved (copy workloads).
    pub mibps: Spread,
    /// Objects per second (copied, or decided for W4).
    pub objps: Spread,
    /// CPU seconds, user + system.
    pub cpu: Spread,
    /// CPU seconds per GiB moved (copy workloads).
    pub cpu_per_gib: Spread,
    /// Peak RSS, MiB.
    pub rss: Spread,
    /// Share of the machine's CPU time the copier and both servers used.
    pub busy: Spread,
    /// Share of the machine's CPU time other processes used meanwhile (shared machine).
    pub others: Spread,
    /// The sample with the median wall time (requests and latencies come from it).
    pub median_sample: Sample,
    /// Requests of every counted run, by kind: the largest seen (they barely vary).
    pub requests_max: BTreeMap<String, u64>,
}

/// Figures of a series, when at least one run counted.
pub fn figures(w: &WorkloadResult, s: &Series, cores: f64) -> Option<Figures> {
    let ok: Vec<&Sample> = s.samples.iter().filter(|x| x.problem.is_none()).collect();
    if ok.is_empty() {
        return None;
    }
    let gib = w.bytes as f64 / (1u64 << 30) as f64;
    let walls: Vec<f64> = ok.iter().map(|x| x.measured.wall_seconds).collect();
    let cpu: Vec<f64> = ok
        .iter()
        .map(|x| x.measured.user_seconds + x.measured.sys_seconds)
        .collect();
    let mut by_wall: Vec<&&Sample> = ok.iter().collect();
    by_wall.sort_by(|a, b| a.measured.wall_seconds.total_cmp(&b.measured.wall_seconds));
    let mut requests_max = BTreeMap::new();
    for x in &ok {
        for (k, v) in &x.requests {
            let e = requests_max.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
    Some(Figures {
        wall: Spread::of(&walls)?,
        mibps: Spread::of(
            &walls
                .iter()
                .map(|t| w.bytes as f64 / t / (1 << 20) as f64)
                .collect::<Vec<_>>(),
        )?,
        objps: Spread::of(
            &walls
                .iter()
                .map(|t| w.objects as f64 / t)
                .collect::<Vec<_>>(),
        )?,
        cpu_per_gib: Spread::of(&cpu.iter().map(|c| c / gib.max(1e-9)).collect::<Vec<_>>())?,
        cpu: Spread::of(&cpu)?,
        rss: Spread::of(
            &ok.iter()
                .map(|x| x.measured.max_rss_kib as f64 / 1024.0)
                .collect::<Vec<_>>(),
        )?,
        busy: Spread::of(
            &ok.iter()
                .map(|x| {
                    let c = x.measured.user_seconds + x.measured.sys_seconds;
                    100.0 * (c + x.server_cpu_seconds) / (x.measured.wall_seconds * cores)
                })
                .collect::<Vec<_>>(),
        )?,
        others: Spread::of(
            &ok.iter()
                .map(|x| 100.0 * x.other_cpu_seconds / (x.measured.wall_seconds * cores))
                .collect::<Vec<_>>(),
        )?,
        median_sample: (*by_wall[by_wall.len() / 2]).clone(),
        requests_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.med, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).expect("values");
        assert_eq!(s.med, 2.5);
        assert_eq!(s.show(1), "2.5 (1.0–4.0)");
        assert!(Spread::of(&[]).is_none());
    }
}
