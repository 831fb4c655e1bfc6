//! The throughput chart: grouped bars by tool per workload, medians with min–max
//! whiskers. Two panels, because the units differ: MiB/s for the byte-bound copies (W1
//! with the pipe limit, W3) and objects/s for the object-bound ones (W2 copied, W4
//! decided).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::pipe_mibps;
use crate::run::{Results, Series};
use crate::stats::{figures, Spread};
use crate::tools::ToolId;

/// One bar: label, colour, median/min/max.
struct Bar(String, RGBColor, Spread);

fn color(t: Option<ToolId>) -> RGBColor {
    let rgb = [(230, 120, 20), (40, 110, 190), (200, 50, 60), (60, 150, 80)];
    let (r, g, b) = t.map_or((140, 140, 140), |t| rgb[t as usize]);
    RGBColor(r, g, b)
}

/// Bars per workload: MiB/s (and the pipe limit) or objects/s.
fn groups(r: &Results, ids: &[&str], objects: bool) -> Vec<(String, Vec<Bar>)> {
    let bar = |t: Option<ToolId>, v| Bar(t.map_or("pipe limit", ToolId::name).into(), color(t), v);
    let mut out = Vec::new();
    for w in r.workloads.iter().filter(|w| ids.contains(&w.id.as_str())) {
        let fig =
            |s: &Series| figures(w, s, r.cores).map(|f| if objects { f.objps } else { f.mibps });
        let tool_bar = |s: &Series| Some(bar(Some(s.tool), fig(s)?));
        let mut bars: Vec<Bar> = w.series.iter().filter_map(tool_bar).collect();
        if let (false, Some(value)) = (objects, pipe_mibps(w)) {
            bars.push(bar(None, value));
        }
        let noop = if w.noop { " (no-op, decided)" } else { "" };
        if !bars.is_empty() {
            out.push((format!("{}{noop}", w.id), bars));
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
    (title, unit): (&str, &str),
    groups: &[(String, Vec<Bar>)],
    legend: bool,
) -> Result<()> {
    let e = chart_err;
    if groups.is_empty() {
        return Ok(());
    }
    let top = groups.iter().flat_map(|(_, b)| b.iter().map(|x| x.2.max));
    let (ymax, n) = (top.fold(1.0f64, f64::max) * 1.18, groups.len());
    let mut chart = ChartBuilder::on(area);
    let chart = chart.caption(title, ("sans-serif", 18)).margin(12);
    let chart = chart.x_label_area_size(30).y_label_area_size(60);
    let (x, y) = (0f64..n as f64, 0f64..ymax);
    let mut chart = chart.build_cartesian_2d(x, y).map_err(e)?;
    // A group's name under its middle, nothing at the other ticks.
    let name = |x: &f64| {
        let i = x.floor() as usize;
        let mid = (x - (i as f64 + 0.5)).abs() < 0.026;
        let g = groups.get(i).filter(|_| mid);
        g.map_or(String::new(), |g| g.0.clone())
    };
    let mut mesh = chart.configure_mesh();
    let mesh = mesh.disable_x_mesh().x_labels(n * 20 + 1);
    let mesh = mesh.x_label_formatter(&name);
    let mesh = mesh.y_desc(unit).y_label_formatter(&|y| format!("{y:.0}"));
    mesh.light_line_style(WHITE).draw().map_err(e)?;
    // One series per label (tool), so the legend names each colour once.
    let mut labels: Vec<(&str, RGBColor)> = Vec::new();
    for b in groups.iter().flat_map(|(_, bars)| bars) {
        if !labels.iter().any(|(l, _)| *l == b.0) {
            labels.push((&b.0, b.1));
        }
    }
    for &(label, col) in &labels {
        let (mut rects, mut whiskers, mut texts) = (Vec::new(), Vec::new(), Vec::new());
        for (gi, (_, bars)) in groups.iter().enumerate() {
            let width = 0.84 / bars.len() as f64;
            let Some(bi) = bars.iter().position(|b| b.0 == label) else {
                continue;
            };
            let v = bars[bi].2;
            let x0 = gi as f64 + 0.08 + bi as f64 * width;
            let x1 = x0 + width * 0.9;
            rects.push(Rectangle::new([(x0, 0.0), (x1, v.med)], col.filled()));
            let style = BLACK.stroke_width(1);
            whiskers.push(ErrorBar::new_vertical(
                (x0 + x1) / 2.0,
                v.min,
                v.med,
                v.max,
                style,
                6,
            ));
            let (at, font) = ((x0, v.max + ymax * 0.045), ("sans-serif", 11).into_font());
            texts.push(Text::new(format!("{:.0}", v.med), at, font));
        }
        let key = move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled());
        let bars = chart.draw_series(rects).map_err(e)?;
        bars.label(label).legend(key);
        chart.draw_series(whiskers).map_err(e)?;
        chart.draw_series(texts).map_err(e)?;
    }
    if legend {
        let mut l = chart.configure_series_labels();
        let l = l.position(SeriesLabelPosition::UpperRight);
        let l = l.border_style(BLACK).background_style(WHITE.mix(0.85));
        let l = l.label_font(("sans-serif", 12));
        l.draw().map_err(e)?;
    }
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
    panel(&left, ("Bytes copied", "MiB/s"), &bytes, true)?;
    panel(&mid, ("Small objects copied", "objects/s"), &copied, false)?;
    let title = "Objects decided, nothing to copy";
    panel(&right, (title, "objects/s"), &decided, false)?;
    root.present().map_err(chart_err)?;
    Ok(())
}
