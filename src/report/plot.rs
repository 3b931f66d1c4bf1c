//! The chart model (pure data: what each chart shows, built by the report modules and tested
//! before anything is drawn) and its static renderer: PNG or SVG bytes (no IO), drawn with
//! plotters and a font shipped in the binary, so plots render on machines without fontconfig or
//! system fonts. `report.html` draws the same model as inline SVG (`svg.rs`).

use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::{Exporter, ReportInput};

/// DejaVu Sans (license beside it in `assets/fonts/`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (960, 540);
/// Height of one panel of a [`Figure`] in a static plot.
const PANEL_HEIGHT: u32 = 260;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Svg => "svg",
        }
    }
}

/// Which y axis a series is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YAxis {
    #[default]
    Left,
    /// The chart's second axis (`LineChart::y2_label`), on the right.
    Right,
}

/// How a series is drawn. Bars of one chart are stacked at each x, in series order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mark {
    #[default]
    Line,
    Bar,
}

/// One named series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub axis: YAxis,
    pub mark: Mark,
    /// RGB; `None`: the palette colour of the series' position.
    pub color: Option<(u8, u8, u8)>,
}

/// Series colours by position (Tableau 10, readable on white and to most colour-blind readers).
pub const PALETTE: [(u8, u8, u8); 8] =
    [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)];
/// Cached prompt tokens (green) and uncached ones (grey), wherever they are stacked.
pub const CACHED_COLOR: (u8, u8, u8) = (44, 160, 44);
pub const UNCACHED_COLOR: (u8, u8, u8) = (176, 176, 176);
/// The saturation marker.
pub const MARKER_COLOR: (u8, u8, u8) = (200, 30, 30);

impl Series {
    /// A line on the left axis.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, axis: YAxis::Left, mark: Mark::Line, color: None }
    }

    /// Bars (stacked with the chart's other bars) on the left axis.
    pub fn bars(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, axis: YAxis::Left, mark: Mark::Bar, color: None }
    }

    /// The same series on the second (right) axis.
    pub fn on_right(self) -> Self {
        Self { axis: YAxis::Right, ..self }
    }

    pub fn colored(self, rgb: (u8, u8, u8)) -> Self {
        Self { color: Some(rgb), ..self }
    }

    /// Its colour when it is the chart's `index`-th series.
    pub fn rgb(&self, index: usize) -> (u8, u8, u8) {
        self.color.unwrap_or(PALETTE[index % PALETTE.len()])
    }

    /// Points with both coordinates finite.
    pub fn finite(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite())
    }
}

/// A vertical line at `x` with a label (e.g. the saturation point of a load sweep).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Label of the second (right) axis; series with `YAxis::Right` use it.
    pub y2_label: Option<String>,
    /// The x values are counts (turn numbers): ticks are whole numbers.
    pub integer_x: bool,
    pub series: Vec<Series>,
    pub marker: Option<Marker>,
}

/// One x position of stacked bars: the x, and `(series index, bottom, top)` per segment.
pub type BarStack = (f64, Vec<(usize, f64, f64)>);

impl LineChart {
    /// A chart of left-axis series on a continuous x axis.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>, series: Vec<Series>) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            y2_label: None,
            integer_x: false,
            series,
            marker: None,
        }
    }

    /// x range `(min, max)` over every finite point (and the marker); a unit range when empty.
    /// Integer charts get half a step of room each side, so bars and end points are not clipped.
    pub fn x_range(&self) -> (f64, f64) {
        let xs = self.series.iter().flat_map(|s| s.finite().map(|p| p.0)).chain(self.marker.as_ref().map(|m| m.x));
        let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if self.integer_x {
            return (x0.floor() - 0.5, x1.ceil() + 0.5);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        (x0, x1)
    }

    /// Top of the y range of one axis: the largest value (stacked bars summed) plus 10 %, at
    /// least 1. The axis starts at 0.
    pub fn y_max(&self, axis: YAxis) -> f64 {
        let on_axis = || self.series.iter().filter(move |s| s.axis == axis);
        let line_max = on_axis().filter(|s| s.mark == Mark::Line).flat_map(|s| s.finite().map(|p| p.1)).fold(f64::NEG_INFINITY, f64::max);
        let bar_max = self.bar_stacks(axis).into_iter().flat_map(|(_, segs)| segs.last().map(|s| s.2)).fold(f64::NEG_INFINITY, f64::max);
        let top = line_max.max(bar_max);
        if top > 0.0 { top * 1.1 } else { 1.0 }
    }

    /// Stacked bars of one axis: for each x (sorted), `(series index, bottom, top)` per segment.
    pub fn bar_stacks(&self, axis: YAxis) -> Vec<BarStack> {
        let mut stacks: Vec<BarStack> = Vec::new();
        for (i, s) in self.series.iter().enumerate().filter(|(_, s)| s.mark == Mark::Bar && s.axis == axis) {
            for (x, y) in s.finite().filter(|p| p.1 > 0.0) {
                let pos = match stacks.iter().position(|(sx, _)| *sx == x) {
                    Some(p) => p,
                    None => {
                        stacks.push((x, Vec::new()));
                        stacks.len() - 1
                    }
                };
                let segs = &mut stacks[pos].1;
                let base = segs.last().map_or(0.0, |s| s.2);
                segs.push((i, base, base + y));
            }
        }
        stacks.sort_by(|a, b| a.0.total_cmp(&b.0));
        stacks
    }

    /// Whole-number ticks for an integer axis: the multiples of `step` in `[ceil(x0), floor(x1)]`,
    /// `step` the first of 1, 2, 5, 10, 20, 50, … that gives at most `max` ticks.
    pub fn integer_ticks(x0: f64, x1: f64, max: usize) -> Vec<i64> {
        let (a, b) = (x0.ceil() as i64, x1.floor() as i64);
        if b < a || max == 0 {
            return Vec::new();
        }
        let mut magnitude = 1i64;
        loop {
            for m in [1, 2, 5] {
                let step = m * magnitude;
                let first = if step == 1 { a } else { a.div_euclid(step) * step + if a.rem_euclid(step) == 0 { 0 } else { step } };
                let ticks: Vec<i64> = (0..).map(|i| first + i * step).take_while(|t| *t <= b).collect();
                if ticks.len() <= max {
                    return ticks;
                }
            }
            magnitude *= 10;
        }
    }
}

/// Charts drawn one above the other on a shared page (small multiples).
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<LineChart>,
}

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registration only fails on an unparseable font, which the embedded one is not.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Encodes a page of `size` drawn by [`draw_page`].
fn render_page(format: ImageFormat, size: (u32, u32), title: Option<&str>, panels: &[&LineChart]) -> Result<Vec<u8>> {
    ensure_font();
    match format {
        ImageFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw_page(root, title, panels)?;
            }
            Ok(svg.into_bytes())
        }
        ImageFormat::Png => {
            let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
                draw_page(root, title, panels)?;
            }
            let mut png = Vec::new();
            let mut encoder = png::Encoder::new(&mut png, size.0, size.1);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(|e| anyhow!("PNG encoding failed: {e}"))?;
            writer.write_image_data(&rgb).map_err(|e| anyhow!("PNG encoding failed: {e}"))?;
            writer.finish().map_err(|e| anyhow!("PNG encoding failed: {e}"))?;
            Ok(png)
        }
    }
}

fn draw_err<E>(what: &str) -> impl Fn(DrawingAreaErrorKind<E>) -> anyhow::Error + '_
where
    E: std::error::Error + Send + Sync + std::fmt::Debug,
{
    move |e| anyhow!("drawing {what:?} failed: {e:?}")
}

/// White page, an optional page title, then the panels one above the other.
fn draw_page<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: Option<&str>, panels: &[&LineChart]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = draw_err::<DB::ErrorType>(title.unwrap_or("chart"));
    root.fill(&WHITE).map_err(&err)?;
    let area = match title {
        Some(t) => root.titled(t, (FAMILY, 26)).map_err(&err)?,
        None => root.clone(),
    };
    let rows = area.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(rows) {
        panel.draw(area)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}

impl Figure {
    /// Draws every panel, one above the other, under the figure's title.
    pub fn render(&self, format: ImageFormat) -> Result<Vec<u8>> {
        let panels: Vec<&LineChart> = self.panels.iter().collect();
        let height = 48 + PANEL_HEIGHT * panels.len().max(1) as u32;
        render_page(format, (SIZE.0, height), Some(&self.title), &panels)
    }
}

impl LineChart {
    /// Draws the chart. An empty chart (no finite point) still renders, with a unit range.
    pub fn render(&self, format: ImageFormat) -> Result<Vec<u8>> {
        render_page(format, SIZE, None, &[self])
    }

    fn draw<DB: DrawingBackend>(&self, area: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let err = draw_err::<DB::ErrorType>(&self.title);
        let (x0, x1) = self.x_range();
        let y1 = self.y_max(YAxis::Left);
        let y2 = self.y_max(YAxis::Right);
        let has_right = self.y2_label.is_some() || self.series.iter().any(|s| s.axis == YAxis::Right);
        let mut chart = ChartBuilder::on(&area)
            .caption(&self.title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .right_y_label_area_size(if has_right { 72 } else { 0 })
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(&err)?
            .set_secondary_coord(x0..x1, 0.0..y2);
        let ticks = if self.integer_x { Self::integer_ticks(x0, x1, 20) } else { Vec::new() };
        let integer_label = |x: &f64| {
            let r = x.round();
            if (x - r).abs() < 1e-6 { format!("{}", r as i64) } else { String::new() }
        };
        {
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(&self.x_label).y_desc(&self.y_label).label_style((FAMILY, 14));
            if self.integer_x {
                // plotters picks round f64 ticks; with at most one per whole number they are whole.
                mesh.x_labels(ticks.len().max(1)).x_label_formatter(&integer_label);
            }
            mesh.draw().map_err(&err)?;
        }
        if has_right {
            chart
                .configure_secondary_axes()
                .y_desc(self.y2_label.as_deref().unwrap_or(""))
                .label_style((FAMILY, 14))
                .draw()
                .map_err(&err)?;
        }
        let color_of = |i: usize| {
            let (r, g, b) = self.series[i].rgb(i);
            RGBColor(r, g, b)
        };
        let half = if self.integer_x { 0.35 } else { (x1 - x0) / 80.0 };
        for axis in [YAxis::Left, YAxis::Right] {
            for (x, segs) in self.bar_stacks(axis) {
                for (i, lo, hi) in segs {
                    let rect = Rectangle::new([(x - half, lo), (x + half, hi)], color_of(i).mix(0.6).filled());
                    match axis {
                        YAxis::Left => chart.draw_series(std::iter::once(rect)).map_err(&err)?,
                        YAxis::Right => chart.draw_secondary_series(std::iter::once(rect)).map_err(&err)?,
                    };
                }
            }
        }
        for (i, series) in self.series.iter().enumerate() {
            let color = color_of(i);
            let data: Vec<(f64, f64)> = series.finite().collect();
            let anno = match (series.mark, series.axis) {
                (Mark::Bar, YAxis::Left) => chart.draw_series(std::iter::empty::<Rectangle<(f64, f64)>>()).map_err(&err)?,
                (Mark::Bar, YAxis::Right) => {
                    chart.draw_secondary_series(std::iter::empty::<Rectangle<(f64, f64)>>()).map_err(&err)?
                }
                (Mark::Line, YAxis::Left) => {
                    chart.draw_series(data.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(&err)?;
                    chart.draw_series(LineSeries::new(data, color.stroke_width(2))).map_err(&err)?
                }
                (Mark::Line, YAxis::Right) => {
                    chart.draw_secondary_series(data.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(&err)?;
                    chart.draw_secondary_series(LineSeries::new(data, color.stroke_width(2))).map_err(&err)?
                }
            };
            let suffix = if series.axis == YAxis::Right && has_right { " (right axis)" } else { "" };
            anno.label(format!("{}{suffix}", series.label));
            match series.mark {
                Mark::Line => anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))),
                Mark::Bar => anno.legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.mix(0.6).filled())),
            };
        }
        if let Some(m) = &self.marker {
            let red = RGBColor(MARKER_COLOR.0, MARKER_COLOR.1, MARKER_COLOR.2);
            chart
                .draw_series(LineSeries::new(vec![(m.x, 0.0), (m.x, y1)], red.stroke_width(2)))
                .map_err(&err)?
                .label(m.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], red.stroke_width(2)));
        }
        if !self.series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FAMILY, 13))
                .draw()
                .map_err(&err)?;
        }
        Ok(())
    }
}

/// The TTFT-by-turn chart: TTFT p50 and mean per turn number (where prefix caching shows as the
/// drop after turn 1) on the left axis, the mean prompt and cached tokens of that turn on the
/// right one.
pub fn ttft_by_turn_chart(summary: &crate::analysis::Summary) -> LineChart {
    let by_turn = &summary.by_turn;
    let pick = |f: fn(&crate::analysis::TurnStats) -> Option<f64>| -> Vec<(f64, f64)> {
        by_turn.iter().filter_map(|t| f(t).map(|v| (t.turn as f64, v))).collect()
    };
    let mut title = "TTFT by turn".to_string();
    if summary.run.simulated {
        title.push_str(" (simulated)");
    }
    LineChart {
        y2_label: Some("tokens (mean per request)".into()),
        integer_x: true,
        ..LineChart::new(
            title,
            "turn",
            "TTFT (ms)",
            vec![
                Series::line("TTFT p50", pick(|t| t.ttft_p50_ms)),
                Series::line("TTFT mean", pick(|t| t.ttft_mean_ms)),
                Series::line("prompt tokens", pick(|t| t.prompt_tokens_mean)).on_right(),
                Series::line("cached tokens", pick(|t| t.cached_tokens_mean)).on_right(),
            ],
        )
    }
}

/// `plots/ttft_by_turn.{png,svg}`: [`ttft_by_turn_chart`].
pub struct TtftByTurnPlot(pub ImageFormat);

impl Exporter for TtftByTurnPlot {
    fn file_name(&self) -> String {
        format!("plots/ttft_by_turn.{}", self.0.extension())
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        ttft_by_turn_chart(input.summary).render(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summarize;
    use crate::analysis::tests::rec;
    use crate::core::results::Manifest;

    fn chart() -> LineChart {
        LineChart::new("t", "x", "y", vec![Series::line("a", vec![(1.0, 10.0), (2.0, 3.0), (3.0, f64::NAN)])])
    }

    #[test]
    fn png_and_svg_render_with_the_embedded_font() {
        let png = chart().render(ImageFormat::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = String::from_utf8(chart().render(ImageFormat::Svg).unwrap()).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<text"), "labels drawn as text");
    }

    #[test]
    fn empty_charts_still_render() {
        let empty = LineChart { series: vec![], ..chart() };
        assert!(!empty.render(ImageFormat::Png).unwrap().is_empty());
        let fig = Figure { title: "f".into(), panels: vec![] };
        assert!(!fig.render(ImageFormat::Svg).unwrap().is_empty());
    }

    #[test]
    fn ttft_by_turn_has_whole_turns_and_cached_tokens_on_the_second_axis() {
        let s = summarize(
            &[
                rec("a", 1, 400.0, 500.0, 1000, 0),
                rec("a", 2, 50.0, 150.0, 1100, 992),
                rec("a", 3, 60.0, 160.0, 1200, 1088),
            ],
            &Manifest { simulated: true, ..Default::default() },
        );
        let c = ttft_by_turn_chart(&s);
        assert!(c.integer_x);
        assert_eq!(c.title, "TTFT by turn (simulated)");
        let cached = c.series.iter().find(|s| s.label == "cached tokens").unwrap();
        assert_eq!(cached.axis, YAxis::Right);
        assert_eq!(cached.points, [(1.0, 0.0), (2.0, 992.0), (3.0, 1088.0)]);
        let p50 = c.series.iter().find(|s| s.label == "TTFT p50").unwrap();
        assert_eq!((p50.axis, p50.points[0]), (YAxis::Left, (1.0, 400.0)));
        let (x0, x1) = c.x_range();
        assert_eq!(LineChart::integer_ticks(x0, x1, 20), [1, 2, 3]);
        assert!(c.y_max(YAxis::Right) > 1088.0 && c.y_max(YAxis::Left) < 1000.0, "each axis its own scale");
        // Both formats draw it, with whole-number turn labels and the right axis's caption.
        let svg = String::from_utf8(c.render(ImageFormat::Svg).unwrap()).unwrap();
        let labels: Vec<&str> = svg.split("</text>").filter_map(|t| t.rsplit('>').next()).map(str::trim).collect();
        assert!(labels.contains(&"2") && labels.contains(&"3"), "integer turn ticks: {labels:?}");
        assert!(!labels.iter().any(|l| l.ends_with(".5") || *l == "2.0"), "no fractional turn ticks: {labels:?}");
        assert!(svg.contains("tokens (mean per request)"));
    }

    #[test]
    fn integer_ticks_step_up_past_the_limit() {
        assert_eq!(LineChart::integer_ticks(0.5, 3.5, 20), [1, 2, 3]);
        assert_eq!(LineChart::integer_ticks(0.5, 40.5, 10), [5, 10, 15, 20, 25, 30, 35, 40]);
        assert_eq!(LineChart::integer_ticks(0.5, 12.5, 10), [2, 4, 6, 8, 10, 12]);
        assert!(LineChart::integer_ticks(3.0, 1.0, 5).is_empty());
    }

    #[test]
    fn stacked_bars_sum_per_x() {
        let c = LineChart::new(
            "b",
            "x",
            "y",
            vec![Series::bars("cached", vec![(1.0, 0.0), (2.0, 90.0)]), Series::bars("uncached", vec![(1.0, 100.0), (2.0, 20.0)])],
        );
        let stacks = c.bar_stacks(YAxis::Left);
        assert_eq!(stacks, [(1.0, vec![(1, 0.0, 100.0)]), (2.0, vec![(0, 0.0, 90.0), (1, 90.0, 110.0)])]);
        assert!((c.y_max(YAxis::Left) - 121.0).abs() < 1e-9);
    }
}
