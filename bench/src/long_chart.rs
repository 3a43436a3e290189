//! `long.png`: per member (median) resident memory and data on disk against acknowledged
//! writes, the write throughput of each interval, and the restarted followers' catch-up
//! times; one line per system. Fonts and colours as in [`crate::chart`].

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::chart::{color, legend, register_fonts, under_subtitle, FONT};
use crate::long_report::LongReport;
use crate::report::{thousands, Status};

/// One system's points (acknowledged writes, value).
struct Line {
    name: String,
    pts: Vec<(f64, f64)>,
}

fn label(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x >= 100.0 || x == x.round() {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{x:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s + unit
}

/// One panel: x = acknowledged writes, y from 0.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    lines: &[Line],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let all = || lines.iter().flat_map(|l| l.pts.iter());
    if all().next().is_none() {
        area.draw(&Text::new(
            format!("{title}: nothing measured"),
            (40, 40),
            (FONT, 20).into_font().color(&BLACK),
        ))?;
        return Ok(());
    }
    let max_x = all().map(|p| p.0).fold(1.0f64, f64::max);
    let max_y = all().map(|p| p.1).fold(1e-3f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 24).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y * 1.15)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|x| label(*x))
        .y_labels(10)
        .y_label_formatter(&|y| label(*y))
        .x_desc("acknowledged writes")
        .y_desc(y_desc)
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()?;
    for (k, line) in lines.iter().enumerate() {
        let c = color(&line.name);
        // Last-value labels of nearby lines apart: above, below, left.
        let at = [(-30, -24), (-30, 8), (-75, -8)][k % 3];
        chart
            .draw_series(LineSeries::new(line.pts.clone(), c.stroke_width(3)))?
            .label(line.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart.draw_series(line.pts.iter().map(|p| Circle::new(*p, 5, c.filled())))?;
        // The last value, at the end of its line.
        if let Some(p) = line.pts.last() {
            chart.draw_series(std::iter::once(
                EmptyElement::at(*p) + Text::new(label(p.1), at, (FONT, 16).into_font().color(&c)),
            ))?;
        }
    }
    legend(&mut chart)
}

pub fn draw(report: &LongReport, path: &Path) -> anyhow::Result<()> {
    register_fonts();
    let systems: Vec<_> = report
        .systems
        .iter()
        .filter(|s| matches!(s.status, Status::Ok))
        .collect();
    let lines = |value: &dyn Fn(&crate::long_report::Checkpoint) -> Option<f64>| -> Vec<Line> {
        systems
            .iter()
            .map(|s| Line {
                name: s.system.clone(),
                pts: s
                    .checkpoints
                    .iter()
                    .filter_map(|c| Some((c.acked as f64, value(c)?)))
                    .collect(),
            })
            .collect()
    };
    let rss = lines(&|c| c.rss_median_mib);
    let disk = lines(&|c| c.disk_median_mib);
    let tput = lines(&|c| Some(c.interval_ops_per_sec));
    let restarts: Vec<Line> = systems
        .iter()
        .map(|s| Line {
            name: s.system.clone(),
            pts: s
                .restarts
                .iter()
                .map(|r| (r.acked_at_kill as f64, r.caught_up_s))
                .collect(),
        })
        .collect();

    let root = BitMapBackend::new(path, (1600, 1300)).into_drawing_area();
    root.fill(&WHITE)?;
    let s = &report.settings;
    let subtitle = format!(
        "Long run: {} acknowledged writes per system, {} closed-loop clients, {} members each on loopback, {} cores; snapshots and compaction on",
        thousands(s.entries as f64),
        s.clients,
        s.members,
        report.machine.cores
    );
    let ran = report
        .systems
        .iter()
        .map(|s| (s.system.as_str(), matches!(s.status, Status::Ok)));
    let body = under_subtitle(&root, subtitle, ran)?;
    let (upper, lower) = body.split_vertically(620);
    let (left, right) = upper.split_horizontally(800);
    panel(
        &left,
        "Resident memory per member, median (MiB)",
        "VmRSS, MiB",
        &rss,
    )?;
    panel(
        &right,
        "Data on disk per member, median (MiB)",
        "allocated MiB of its data",
        &disk,
    )?;
    let (left, right) = lower.split_horizontally(800);
    panel(
        &left,
        "Write throughput since the previous checkpoint",
        "acknowledged writes per second",
        &tput,
    )?;
    panel(
        &right,
        "Restarted follower: caught up after (s)",
        "seconds from restart",
        &restarts,
    )?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels() {
        assert_eq!(label(300_000.0), "300k");
        assert_eq!(label(1_500_000.0), "1.5M");
        assert_eq!(label(2_500.0), "2.5k");
        assert_eq!(label(25.0), "25");
        assert_eq!(label(8.0), "8");
        assert_eq!(label(0.52), "0.52");
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(0.0), "0");
    }
}
