//! The throughput chart: grouped bars by tool per workload, medians with min–max
//! whiskers. Two panels, because the units differ: MiB/s for the byte-bound copies (W1
//! with the pipe limit, W3) and objects/s for the object-bound ones (W2 copied, W4
//! decided).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::run::Results;
use crate::stats::{figures, Spread};
use crate::tools::ToolId;

/// One bar: label, colour, median/min/max.
struct Bar {
    label: String,
    color: RGBColor,
    value: Spread,
}

fn color(t: Option<ToolId>) -> RGBColor {
    let rgb = [(230, 120, 20), (40, 110, 190), (200, 50, 60), (60, 150, 80)];
    let (r, g, b) = t.map_or((140, 140, 140), |t| rgb[t as usize]);
    RGBColor(r, g, b)
}

/// Bars per workload: MiB/s (and the pipe limit) or objects/s.
fn groups(r: &Results, ids: &[&str], objects: bool) -> Vec<(String, Vec<Bar>)> {
    let mut out = Vec::new();
    let bar = |t: Option<ToolId>, value| {
        let label = t.map_or("pipe limit", ToolId::name).to_string();
        Bar {
            label,
            color: color(t),
            value,
        }
    };
    for w in ids
        .iter()
        .filter_map(|id| r.workloads.iter().find(|w| w.id == *id))
    {
        let fig = |s| figures(w, s, r.cores).map(|f| if objects { f.objps } else { f.mibps });
        let mut bars: Vec<Bar> = w
            .series
            .iter()
            .filter_map(|s| Some(bar(Some(s.tool), fig(s)?)))
            .collect();
        let mibps = |p: &crate::run::PipeRun| p.bytes as f64 / p.wall_seconds / (1 << 20) as f64;
        if let (false, Some(value)) = (objects, Spread::of(w.pipe.iter().map(mibps))) {
            bars.push(bar(None, value));
        }
        let name = if w.noop {
            format!("{} (no-op, decided)", w.id)
        } else {
            w.id.clone()
        };
        if !bars.is_empty() {
            out.push((name, bars));
        }
    }
    out
}

fn chart_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("chart: {e:?}")
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area,
    title: &str,
    unit: &str,
    groups: &[(String, Vec<Bar>)],
    legend: bool,
) -> Result<()> {
    let e = chart_err;
    if groups.is_empty() {
        return Ok(());
    }
    let top = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|x| x.value.max));
    let ymax = top.fold(1.0f64, f64::max) * 1.18;
    let n = groups.len();
    let names: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 20 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - (i as f64 + 0.5)).abs() < 0.026 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(e)?;
    // One series per label (tool), so the legend names each colour once.
    let mut labels: Vec<(String, RGBColor)> = Vec::new();
    for (_, bars) in groups {
        for b in bars {
            if !labels.iter().any(|(l, _)| *l == b.label) {
                labels.push((b.label.clone(), b.color));
            }
        }
    }
    for (label, col) in &labels {
        let mut rects = Vec::new();
        let mut whiskers = Vec::new();
        let mut texts = Vec::new();
        for (gi, (_, bars)) in groups.iter().enumerate() {
            let width = 0.84 / bars.len() as f64;
            let Some(bi) = bars.iter().position(|b| b.label == *label) else {
                continue;
            };
            let v = bars[bi].value;
            let x0 = gi as f64 + 0.08 + bi as f64 * width;
            let x1 = x0 + width * 0.9;
            rects.push(Rectangle::new([(x0, 0.0), (x1, v.med)], col.filled()));
            whiskers.push(ErrorBar::new_vertical(
                (x0 + x1) / 2.0,
                v.min,
                v.med,
                v.max,
                BLACK.stroke_width(1),
                6,
            ));
            texts.push(Text::new(
                format!("{:.0}", v.med),
                (x0, v.max + ymax * 0.045),
                ("sans-serif", 11).into_font(),
            ));
        }
        let c = *col;
        chart
            .draw_series(rects)
            .map_err(e)?
            .label(label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        chart.draw_series(whiskers).map_err(e)?;
        chart.draw_series(texts).map_err(e)?;
    }
    if !legend {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Writes the SVG chart.
pub fn write(r: &Results, path: &Path) -> Result<()> {
    let bytes = groups(r, &["W1", "W3"], false);
    let copied = groups(r, &["W2"], true);
    let decided = groups(r, &["W4"], true);
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let (top, bottom) = root.split_vertically(40);
    top.titled(
        "snapferry vs peers on two MinIO servers: median throughput, min–max whiskers (higher is better)",
        ("sans-serif", 18),
    )
    .map_err(chart_err)?;
    let (left, rest) = bottom.split_horizontally(560);
    let (mid, right) = rest.split_horizontally(320);
    panel(&left, "Bytes copied", "MiB/s", &bytes, true)?;
    panel(&mid, "Small objects copied", "objects/s", &copied, false)?;
    let title = "Objects decided, nothing to copy";
    panel(&right, title, "objects/s", &decided, false)?;
    root.present().map_err(chart_err)?;
    Ok(())
}
