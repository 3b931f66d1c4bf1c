//! Line charts as PNG or SVG bytes (no IO), drawn with plotters and a font shipped in the binary,
//! so plots render on machines without fontconfig or system fonts.

use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::{Exporter, ReportInput};

/// DejaVu Sans (license beside it in `assets/fonts/`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (960, 540);

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

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registration only fails on an unparseable font, which the embedded one is not.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

impl LineChart {
    /// Draws the chart. An empty chart (no finite point) still renders, with a unit range.
    pub fn render(&self, format: ImageFormat) -> Result<Vec<u8>> {
        ensure_font();
        match format {
            ImageFormat::Svg => {
                let mut svg = String::new();
                {
                    let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
                    self.draw(root)?;
                }
                Ok(svg.into_bytes())
            }
            ImageFormat::Png => {
                let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
                {
                    let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
                    self.draw(root)?;
                }
                let mut png = Vec::new();
                use image::ImageEncoder;
                image::codecs::png::PngEncoder::new(&mut png)
                    .write_image(&rgb, SIZE.0, SIZE.1, image::ColorType::Rgb8)
                    .map_err(|e| anyhow!("PNG encoding failed: {e}"))?;
                Ok(png)
            }
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, plotters::coord::Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing {:?} failed: {e:?}", self.title);
        root.fill(&WHITE).map_err(err)?;
        let points = self.series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (x, y) in points {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y1 = y1.max(*y);
        }
        if !x0.is_finite() {
            (x0, x1, y1) = (0.0, 1.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        for (i, series) in self.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let data: Vec<(f64, f64)> =
                series.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            chart
                .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(series.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
        if self.series.len() > 1 || self.series.first().is_some_and(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FAMILY, 14))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
        Ok(())
    }
}

/// `plots/ttft_by_turn.{png,svg}`: TTFT p50 and mean per turn number — where prefix caching
/// shows as the drop after turn 1.
pub struct TtftByTurnPlot(pub ImageFormat);

impl Exporter for TtftByTurnPlot {
    fn file_name(&self) -> String {
        format!("plots/ttft_by_turn.{}", self.0.extension())
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        let by_turn = &input.summary.by_turn;
        let pick = |f: fn(&crate::analysis::TurnStats) -> Option<f64>| -> Vec<(f64, f64)> {
            by_turn.iter().filter_map(|t| f(t).map(|v| (t.turn as f64, v))).collect()
        };
        let mut title = "TTFT by turn".to_string();
        if input.manifest.simulated {
            title.push_str(" (simulated)");
        }
        LineChart {
            title,
            x_label: "turn".into(),
            y_label: "TTFT (ms)".into(),
            series: vec![
                Series { label: "p50".into(), points: pick(|t| t.ttft_p50_ms) },
                Series { label: "mean".into(), points: pick(|t| t.ttft_mean_ms) },
            ],
        }
        .render(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> LineChart {
        LineChart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series { label: "a".into(), points: vec![(1.0, 10.0), (2.0, 3.0), (3.0, f64::NAN)] }],
        }
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
    }
}
