//! The PNG: write throughput and p99 latency by client count (one line per system), read
//! throughput by client count (one line per system and read kind), and the failover gaps
//! (SIGKILL and SIGTERM, one pair of bars per system).
//!
//! Text is drawn with plotters' `ab_glyph` backend and the DejaVu Sans font embedded in the
//! binary (`dejavu` crate), so no fontconfig or other system library is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::failover::StopKind;
use crate::reads::ReadKind;
use crate::report::{Report, Status};

pub(crate) const FONT: &str = "sans-serif";

pub(crate) fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub(crate) fn color(system: &str) -> RGBColor {
    match system {
        "guessgame" => RGBColor(0xd6, 0x27, 0x28),
        "zookeeper" => RGBColor(0x1f, 0x77, 0xb4),
        "etcd" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// The legend box of a panel's lines, upper left.
pub(crate) fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `subtitle`, with the systems that did not run (`(name, ran)`), across the top of
/// `root`; the area under it.
pub(crate) fn under_subtitle<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    mut subtitle: String,
    systems: impl IntoIterator<Item = (&'a str, bool)>,
) -> anyhow::Result<DrawingArea<DB, plotters::coord::Shift>>
where
    DB::ErrorType: 'static,
{
    let not_run: Vec<&str> = systems
        .into_iter()
        .filter(|(_, ran)| !ran)
        .map(|(name, _)| name)
        .collect();
    if !not_run.is_empty() {
        subtitle.push_str(&format!("; not run: {}", not_run.join(", ")));
    }
    let (top, body) = root.split_vertically(60);
    top.draw(&Text::new(
        subtitle,
        (20, 20),
        (FONT, 20).into_font().color(&BLACK),
    ))?;
    Ok(body)
}

/// One line: its legend, colour, whether dashed, and (index of C, value) points.
struct Series {
    name: String,
    color: RGBColor,
    dashed: bool,
    pts: Vec<(usize, f64)>,
}

impl Series {
    fn of(name: &str, pts: Vec<(usize, f64)>) -> Series {
        Series {
            name: name.to_string(),
            color: color(name),
            dashed: false,
            pts,
        }
    }
}

/// One panel: x = index of the client count (evenly spaced, labelled with the count).
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    clients: &[usize],
    series: &[Series],
    log_y: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let max = series
        .iter()
        .flat_map(|s| s.pts.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let min = series
        .iter()
        .flat_map(|s| s.pts.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let xr = -0.3f64..(clients.len() as f64 - 0.7);
    let x_label = |x: &f64| -> String {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < clients.len() {
            clients[i as usize].to_string()
        } else {
            String::new()
        }
    };
    let y_label = |v: &f64| -> String {
        if *v >= 10.0 || *v == 0.0 {
            format!("{v:.0}")
        } else if *v >= 1.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(80);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_labels(clients.len() * 2 + 1)
                .x_label_formatter(&x_label)
                .y_labels(12)
                .y_label_formatter(&y_label)
                .x_desc("concurrent clients (C)")
                .y_desc(y_desc)
                .label_style((FONT, 18))
                .axis_desc_style((FONT, 20))
                .light_line_style(RGBColor(0xee, 0xee, 0xee))
                .draw()?;
            for (k, line) in series.iter().enumerate() {
                let c = line.color;
                // Value labels: first system left of its points, the others right, above and
                // below, so nearby points of different systems keep readable labels.
                let (dx, dy) = match k % 3 {
                    0 => (-58, -22),
                    1 => (10, -22),
                    _ => (10, 6),
                };
                let pts: Vec<(f64, f64)> = line.pts.iter().map(|(i, v)| (*i as f64, *v)).collect();
                let dashed = line.dashed;
                let legend = move |(x, y): (i32, i32)| {
                    if dashed {
                        PathElement::new(vec![(x, y), (x + 8, y)], c.stroke_width(3))
                    } else {
                        PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                    }
                };
                if dashed {
                    chart
                        .draw_series(DashedLineSeries::new(pts.clone(), 10, 6, c.stroke_width(3)))?
                        .label(line.name.as_str())
                        .legend(legend);
                } else {
                    chart
                        .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))?
                        .label(line.name.as_str())
                        .legend(legend);
                }
                chart.draw_series(pts.iter().map(|p| Circle::new(*p, 5, c.filled())))?;
                chart.draw_series(pts.iter().map(|p| {
                    let text = if p.1 >= 100.0 {
                        format!("{:.0}", p.1)
                    } else {
                        format!("{:.1}", p.1)
                    };
                    EmptyElement::at(*p)
                        + Text::new(text, (dx, dy), (FONT, 16).into_font().color(&c))
                }))?;
            }
            legend(&mut chart)?;
        }};
    }
    if log_y {
        // Whole decades, so the axis has its 1-2-5 labels at both ends.
        let lo = if min.is_finite() {
            10f64.powf(min.log10().floor())
        } else {
            0.1
        };
        let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0);
        draw!(builder.build_cartesian_2d(xr, (lo..hi).log_scale())?);
    } else {
        draw!(builder.build_cartesian_2d(xr, 0.0..max * 1.15)?);
    }
    Ok(())
}

/// Bars of the longest gap between acknowledged writes, per system and signal.
fn gaps<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let stops = [StopKind::Kill, StopKind::Term];
    let systems: Vec<&crate::report::SystemReport> = report
        .systems
        .iter()
        .filter(|s| matches!(s.status, Status::Ok) && !s.failovers.is_empty())
        .collect();
    let max = systems
        .iter()
        .flat_map(|s| s.failovers.iter().map(|f| f.longest_gap_s))
        .fold(0.0f64, f64::max)
        .max(0.1);
    let title = "Failover: longest gap between acknowledged writes (s, lower is better)";
    if systems.is_empty() {
        area.draw(&Text::new(
            format!("{title}: no failover case ran"),
            (40, 40),
            (FONT, 20).into_font().color(&BLACK),
        ))?;
        return Ok(());
    }
    let n = systems.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 24).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, 0f64..max * 1.2)?;
    let names: Vec<String> = systems.iter().map(|s| s.system.clone()).collect();
    let x_label = |x: &f64| -> String {
        let i = (x - 0.5).round();
        if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&x_label)
        .y_labels(10)
        .y_desc("seconds without any acknowledged write")
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()?;
    for (k, stop) in stops.iter().enumerate() {
        let mut bars = Vec::new();
        let mut labels = Vec::new();
        for (i, sys) in systems.iter().enumerate() {
            let Some(f) = sys.failovers.iter().find(|f| f.stop == *stop) else {
                continue;
            };
            let c = color(&sys.system);
            let x0 = i as f64 + 0.12 + k as f64 * 0.38;
            let x1 = x0 + 0.36;
            let style = if *stop == StopKind::Kill {
                c.filled()
            } else {
                c.mix(0.45).filled()
            };
            bars.push(Rectangle::new([(x0, 0.0), (x1, f.longest_gap_s)], style));
            labels.push(
                EmptyElement::at((x0, f.longest_gap_s))
                    + Text::new(
                        format!("{} {:.2}", stop.signal(), f.longest_gap_s),
                        (0, -20),
                        (FONT, 15).into_font().color(&c),
                    ),
            );
        }
        chart.draw_series(bars)?;
        chart.draw_series(labels)?;
    }
    Ok(())
}

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    register_fonts();
    let clients = report.settings.clients.clone();
    let idx = |c: usize| clients.iter().position(|x| *x == c);
    let mut tput: Vec<Series> = Vec::new();
    let mut p99: Vec<Series> = Vec::new();
    let mut reads: Vec<Series> = Vec::new();
    for sys in &report.systems {
        if !matches!(sys.status, Status::Ok) {
            continue;
        }
        if !sys.runs.is_empty() {
            tput.push(Series::of(
                &sys.system,
                sys.runs
                    .iter()
                    .filter_map(|r| Some((idx(r.clients)?, r.ops_per_sec)))
                    .collect(),
            ));
            p99.push(Series::of(
                &sys.system,
                sys.runs
                    .iter()
                    .filter_map(|r| Some((idx(r.clients)?, r.p99_ms)))
                    .collect(),
            ));
        }
        for kind in [ReadKind::Local, ReadKind::Linearizable] {
            let pts: Vec<(usize, f64)> = sys
                .reads
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| Some((idx(r.run.clients)?, r.run.ops_per_sec)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let what = if kind == ReadKind::Linearizable
                && !crate::reads::is_linearizable(&sys.system, kind)
            {
                "sync+read (not linearizable)"
            } else {
                kind.label()
            };
            reads.push(Series {
                name: format!("{} {what}", sys.system),
                color: color(&sys.system),
                dashed: kind == ReadKind::Linearizable,
                pts,
            });
        }
    }
    let root = BitMapBackend::new(path, (1600, 1400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut subtitle = format!(
        "{} members each on loopback, closed-loop clients, {:.0} s per write point, {:.0} s per read point, {} cores",
        report.settings.members,
        report.settings.window_s,
        report.settings.read_window_s,
        report.machine.cores
    );
    if let Some(f) = &report.fsync {
        subtitle.push_str(&format!("; fsync floor p50 {:.3} ms", f.p50_ms));
    }
    let ran = report
        .systems
        .iter()
        .map(|s| (s.system.as_str(), matches!(s.status, Status::Ok)));
    let body = under_subtitle(&root, subtitle, ran)?;
    let (upper, lower) = body.split_vertically(670);
    let (left, right) = upper.split_horizontally(800);
    panel(
        &left,
        "Write throughput (ops/s, higher is better)",
        "acknowledged writes per second",
        &clients,
        &tput,
        false,
    )?;
    panel(
        &right,
        "Write p99 latency (ms, log scale, lower is better)",
        "p99 write latency, ms",
        &clients,
        &p99,
        true,
    )?;
    let (left, right) = lower.split_horizontally(800);
    panel(
        &left,
        "Read throughput (ops/s; dashed: linearizable)",
        "reads answered per second",
        &clients,
        &reads,
        false,
    )?;
    gaps(&right, report)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
