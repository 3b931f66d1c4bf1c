//! The chart model of `plot.rs` drawn as inline SVG text for `report.html`: no script, no font
//! file, no external reference (inline SVG in HTML needs no namespace URL). Every point and bar
//! carries a `<title>`, so hovering shows its value in any browser.

use std::fmt::Write as _;

use super::plot::{Figure, LineChart, Mark, YAxis, MARKER_COLOR};

/// Width of every chart's coordinate system (the SVG scales to its container).
const WIDTH: f64 = 760.0;
const PANEL_HEIGHT: f64 = 280.0;
/// Points of a line beyond which it is drawn without a marker per point, and thinned.
const MAX_MARKED_POINTS: usize = 60;
const MAX_LINE_POINTS: usize = 1500;

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as a tick or tooltip shows it: whole above 100, else up to 2 decimals, trimmed.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn rgb((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Round tick values from 0 to `max`: a step of 1, 2 or 5 × 10ⁿ giving at most `n` intervals.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || n == 0 {
        return vec![lo];
    }
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| span / s <= n as f64).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..=n + 1).map(|i| first + i as f64 * step).take_while(|t| *t <= hi + step * 1e-9).collect()
}

/// Every `k`-th point so that at most `max` remain (the last one always kept).
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let k = points.len().div_ceil(max);
    let last = *points.last().unwrap_or(&(0.0, 0.0));
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(k).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

/// One chart as a standalone `<svg>` element.
pub fn chart(c: &LineChart) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {PANEL_HEIGHT}" role="img" aria-label="{}">"#,
        esc(&c.title)
    );
    panel(&mut out, c, 0.0);
    out.push_str("</svg>");
    out
}

/// Panels one above the other in one `<svg>`, under the figure's title.
pub fn figure(f: &Figure) -> String {
    let title_h = 28.0;
    let height = title_h + PANEL_HEIGHT * f.panels.len().max(1) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart figure" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}"><text class="fig-title" x="{x}" y="20" text-anchor="middle">{t}</text>"#,
        x = WIDTH / 2.0,
        t = esc(&f.title)
    );
    for (i, p) in f.panels.iter().enumerate() {
        panel(&mut out, p, title_h + i as f64 * PANEL_HEIGHT);
    }
    out.push_str("</svg>");
    out
}

/// Draws one chart into a band of height `PANEL_HEIGHT` starting at `top`.
fn panel(out: &mut String, c: &LineChart, top: f64) {
    let has_right = c.y2_label.is_some() || c.series.iter().any(|s| s.axis == YAxis::Right);
    let legend_rows = legend_rows(c);
    let (left, right) = (64.0, if has_right { WIDTH - 64.0 } else { WIDTH - 16.0 });
    let plot_top = top + 28.0 + 16.0 * legend_rows as f64;
    let plot_bottom = top + PANEL_HEIGHT - 42.0;
    let (x0, x1) = c.x_range();
    let (y1, y2) = (c.y_max(YAxis::Left), c.y_max(YAxis::Right));
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (right - left);
    let sy = |y: f64, axis: YAxis| {
        let max = if axis == YAxis::Left { y1 } else { y2 };
        plot_bottom - y / max * (plot_bottom - plot_top)
    };
    let _ = write!(out, r#"<g class="panel"><text class="title" x="{}" y="{}" text-anchor="middle">{}</text>"#, WIDTH / 2.0, top + 18.0, esc(&c.title));
    legend(out, c, top + 36.0, left, right);
    // Grid and y ticks.
    let _ = write!(out, r#"<g class="axis">"#);
    for t in nice_ticks(0.0, y1, 6) {
        let y = sy(t, YAxis::Left);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{left:.1}" x2="{right:.1}" y1="{y:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            num(t)
        );
    }
    if has_right {
        for t in nice_ticks(0.0, y2, 6) {
            let y = sy(t, YAxis::Right);
            let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="start">{}</text>"#, right + 6.0, y + 4.0, num(t));
        }
    }
    let x_ticks: Vec<f64> = if c.integer_x {
        LineChart::integer_ticks(x0, x1, 20).into_iter().map(|t| t as f64).collect()
    } else {
        nice_ticks(x0, x1, 8)
    };
    for t in x_ticks {
        let x = sx(t);
        let _ = write!(
            out,
            r#"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{plot_bottom:.1}" y2="{:.1}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            plot_bottom + 4.0,
            plot_bottom + 16.0,
            num(t)
        );
    }
    let _ = write!(
        out,
        r#"<line class="frame" x1="{left:.1}" x2="{right:.1}" y1="{plot_bottom:.1}" y2="{plot_bottom:.1}"/><line class="frame" x1="{left:.1}" x2="{left:.1}" y1="{plot_top:.1}" y2="{plot_bottom:.1}"/>"#
    );
    let _ = write!(out, r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, (left + right) / 2.0, plot_bottom + 34.0, esc(&c.x_label));
    let mid = (plot_top + plot_bottom) / 2.0;
    let _ = write!(
        out,
        r#"<text class="label" transform="translate(14 {mid:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        esc(&c.y_label)
    );
    if let Some(l2) = &c.y2_label {
        let _ = write!(
            out,
            r#"<text class="label" transform="translate({:.1} {mid:.1}) rotate(90)" text-anchor="middle">{}</text>"#,
            WIDTH - 10.0,
            esc(l2)
        );
    }
    out.push_str("</g>");
    // Bars, stacked per x.
    let bar_half = if c.integer_x { 0.35 } else { (x1 - x0) / 80.0 } * (right - left) / (x1 - x0);
    for axis in [YAxis::Left, YAxis::Right] {
        for (x, segs) in c.bar_stacks(axis) {
            for (i, lo, hi) in segs {
                let s = &c.series[i];
                let (ya, yb) = (sy(hi, axis), sy(lo, axis));
                let _ = write!(
                    out,
                    r#"<rect class="bar" x="{:.1}" y="{ya:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} at {}</title></rect>"#,
                    sx(x) - bar_half,
                    2.0 * bar_half,
                    (yb - ya).max(0.0),
                    rgb(s.rgb(i)),
                    esc(&s.label),
                    num(hi - lo),
                    num(x)
                );
            }
        }
    }
    // Lines, with a hoverable marker per point when there are few.
    for (i, s) in c.series.iter().enumerate().filter(|(_, s)| s.mark == Mark::Line) {
        let color = rgb(s.rgb(i));
        let points = thin(s.finite().collect(), MAX_LINE_POINTS);
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points.iter().map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y, s.axis))).collect();
        let _ = write!(out, r#"<polyline class="line" points="{}" stroke="{color}"/>"#, path.join(" "));
        if points.len() <= MAX_MARKED_POINTS {
            for (x, y) in &points {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}: {} at {}</title></circle>"#,
                    sx(*x),
                    sy(*y, s.axis),
                    esc(&s.label),
                    num(*y),
                    num(*x)
                );
            }
        }
    }
    if let Some(m) = &c.marker {
        let x = sx(m.x);
        let _ = write!(
            out,
            r#"<line class="marker" x1="{x:.1}" x2="{x:.1}" y1="{plot_top:.1}" y2="{plot_bottom:.1}" stroke="{}"><title>{}</title></line>"#,
            rgb(MARKER_COLOR),
            esc(&m.label)
        );
    }
    out.push_str("</g>");
}

/// Legend entries (series, then the marker) per row of the legend.
const LEGEND_PER_ROW: usize = 4;

fn legend_rows(c: &LineChart) -> usize {
    (c.series.len() + usize::from(c.marker.is_some())).div_ceil(LEGEND_PER_ROW)
}

fn legend(out: &mut String, c: &LineChart, y: f64, left: f64, right: f64) {
    let mut entries: Vec<(String, String, bool)> = c
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let side = if s.axis == YAxis::Right { " (right axis)" } else { "" };
            (format!("{}{side}", s.label), rgb(s.rgb(i)), s.mark == Mark::Bar)
        })
        .collect();
    if let Some(m) = &c.marker {
        entries.push((m.label.clone(), rgb(MARKER_COLOR), false));
    }
    let col = (right - left) / LEGEND_PER_ROW as f64;
    for (k, (label, color, bar)) in entries.iter().enumerate() {
        let x = left + (k % LEGEND_PER_ROW) as f64 * col;
        let y = y + (k / LEGEND_PER_ROW) as f64 * 16.0;
        if *bar {
            let _ = write!(out, r#"<rect x="{x:.1}" y="{:.1}" width="14" height="10" fill="{color}"/>"#, y - 9.0);
        } else {
            let _ = write!(out, r#"<line class="swatch" x1="{x:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}"/>"#, x + 14.0, y - 4.0, y - 4.0);
        }
        let _ = write!(out, r#"<text class="legend" x="{:.1}" y="{y:.1}">{}</text>"#, x + 18.0, esc(label));
    }
}

/// Horizontal bars of named counts (e.g. the reasons cache reuse fell short).
pub fn hbars(title: &str, items: &[(String, f64)], unit: &str) -> String {
    let row = 26.0;
    let height = 40.0 + row * items.len().max(1) as f64;
    let (left, right) = (220.0, WIDTH - 80.0);
    let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1.0);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart hbars" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}"><text class="title" x="{}" y="18" text-anchor="middle">{t}</text>"#,
        WIDTH / 2.0,
        t = esc(title)
    );
    for (k, (label, v)) in items.iter().enumerate() {
        let y = 32.0 + k as f64 * row;
        let w = v / max * (right - left);
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect class="bar" x="{left}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}: {} {}</title></rect><text x="{:.1}" y="{:.1}">{}</text>"#,
            left - 8.0,
            y + 14.0,
            esc(label),
            row - 8.0,
            rgb(super::plot::PALETTE[3]),
            esc(label),
            num(*v),
            esc(unit),
            left + w + 6.0,
            y + 14.0,
            num(*v)
        );
    }
    if items.is_empty() {
        let _ = write!(out, r#"<text x="{}" y="46" text-anchor="middle">none</text>"#, WIDTH / 2.0);
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plot::{Marker, Series};

    #[test]
    fn numbers_and_ticks_read_well() {
        assert_eq!((num(2.0), num(2.5), num(12.25), num(1234.6), num(0.126)), ("2".into(), "2.5".into(), "12.2".into(), "1235".into(), "0.13".into()));
        assert_eq!(nice_ticks(0.0, 110.0, 6), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(0.0, 110.0, 5), [0.0, 50.0, 100.0]);
        let shown: Vec<String> = nice_ticks(0.0, 1.0, 6).into_iter().map(num).collect();
        assert_eq!(shown, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(nice_ticks(0.5, 3.5, 8), [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn a_chart_draws_every_point_bar_and_the_marker() {
        let c = LineChart {
            integer_x: true,
            marker: Some(Marker { x: 2.0, label: "saturation (b)".into() }),
            y2_label: Some("tokens".into()),
            ..LineChart::new(
                "T <1>",
                "turn",
                "ms",
                vec![
                    Series::line("TTFT", vec![(1.0, 400.0), (2.0, 50.0), (3.0, f64::NAN)]),
                    Series::bars("cached", vec![(1.0, 0.0), (2.0, 992.0)]).on_right(),
                    Series::bars("uncached", vec![(1.0, 1000.0), (2.0, 108.0)]).on_right(),
                ],
            )
        };
        let svg = chart(&c);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("http"), "no namespace or other URL");
        assert_eq!(svg.matches("<circle").count(), 2, "the NaN point is left out");
        assert_eq!(svg.matches(r#"<rect class="bar""#).count(), 3, "zero-height cached bar of turn 1 left out");
        assert!(svg.contains("<title>cached: 992 at 2</title>"), "{svg}");
        assert!(svg.contains(r#"class="marker""#) && svg.contains("saturation (b)"));
        assert!(svg.contains("T &lt;1&gt;"), "titles escaped");
        assert!(svg.contains(">2</text>") && !svg.contains(">1.5</text>") && !svg.contains(">2.5</text>"), "whole-number turn ticks only");
        assert!(svg.contains("cached (right axis)"));
    }

    #[test]
    fn long_lines_are_thinned_and_unmarked() {
        let points: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, (i % 7) as f64)).collect();
        let svg = figure(&Figure { title: "f".into(), panels: vec![LineChart::new("p", "s", "%", vec![Series::line("cpu", points)])] });
        assert_eq!(svg.matches("<circle").count(), 0);
        let coords = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap().split(' ').count();
        assert!(coords <= MAX_LINE_POINTS + 1, "{coords}");
    }

    #[test]
    fn horizontal_bars_name_each_item() {
        let svg = hbars("why", &[("capacity_eviction".into(), 3.0), ("concurrent".into(), 1.0)], "turns");
        assert_eq!(svg.matches(r#"<rect class="bar""#).count(), 2);
        assert!(svg.contains("<title>capacity_eviction: 3 turns</title>"));
        assert!(hbars("why", &[], "turns").contains(">none<"));
    }
}
