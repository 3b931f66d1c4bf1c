//! Human-readable output of multi-user runs: the console table, the Markdown section of
//! `report.md`, and the charts against load (`plots/load_*.{png,svg}`). Pure functions.

use std::fmt::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;

use super::fmt::{f1, md_table, opt, pct};
use anyhow::{anyhow, Result};

use super::plot::{ImageFormat, LineChart, Marker, Series};
use super::{Exporter, ReportInput};
use crate::analysis::load::{at, LevelSummary, LoadSummary, Percentile};

fn target(l: &LevelSummary) -> String {
    match (l.target_qps, l.concurrency) {
        (Some(q), _) => format!("{q}/s"),
        (None, Some(c)) => format!("conc {c}"),
        _ => "–".into(),
    }
}

fn errors_text(l: &LevelSummary) -> String {
    if l.errors.is_empty() {
        "–".into()
    } else {
        l.errors.iter().map(|e| format!("{} {}", e.kind, e.count)).collect::<Vec<_>>().join(", ")
    }
}

fn ps_text(list: &[Percentile], ps: &[f64]) -> String {
    ps.iter().map(|p| f1(at(list, *p))).collect::<Vec<_>>().join(" / ")
}

fn ps_header(ps: &[f64]) -> String {
    ps.iter().map(|p| format!("p{p}")).collect::<Vec<_>>().join("/")
}

/// Per-level table for the terminal, then the recommendation.
pub fn console_table(load: &LoadSummary) -> String {
    let ph = ps_header(&load.percentiles);
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "level".to_string(),
        "target".into(),
        "achieved/s".into(),
        "success".into(),
        format!("TTFT ms {ph}"),
        format!("E2E ms {ph}"),
        "errors".into(),
    ]);
    for l in &load.levels {
        table.add_row(vec![
            l.label.clone(),
            target(l),
            format!("{:.2}", l.achieved_qps),
            pct(l.success_pct),
            ps_text(&l.ttft_ms, &load.percentiles),
            ps_text(&l.e2e_ms, &load.percentiles),
            errors_text(l),
        ]);
    }
    let mut out = format!("{table}\n{}", load.recommendation);
    for l in load.levels.iter().filter(|l| !l.client_bound.is_empty()) {
        out.push_str(&format!("\nclient-bound: {} — {}", l.label, l.client_bound.join("; ")));
    }
    out
}

/// The `## Load levels` section of `report.md`.
pub fn markdown(load: &LoadSummary) -> String {
    let ps = &load.percentiles;
    let ph = ps_header(ps);
    let mut out = String::new();
    let _ = writeln!(out, "\n## Load levels\n");
    let _ = writeln!(
        out,
        "Mode `{}`, workload `{}`. Rates are conversations per second unless they say requests; latency from schedule includes time waiting to be sent (no coordinated omission).\n",
        load.mode, load.workload
    );
    let rows: Vec<Vec<String>> = load
        .levels
        .iter()
        .map(|l| {
            vec![
                l.label.clone(),
                target(l),
                format!("{:.2}", l.offered_qps),
                format!("{:.2}", l.achieved_qps),
                format!("{:.2}", l.request_rate),
                format!("{} / {}", l.ok, l.requests),
                pct(l.success_pct),
                l.max_in_flight.to_string(),
                errors_text(l),
            ]
        })
        .collect();
    out.push_str(&md_table(
        &["Level", "target", "offered/s", "achieved/s", "requests/s", "ok / n", "success", "max in flight", "errors"],
        &rows,
    ));
    let _ = writeln!(out, "\n### Latency and throughput per level ({ph})\n");
    let rows: Vec<Vec<String>> = load
        .levels
        .iter()
        .map(|l| {
            vec![
                l.label.clone(),
                ps_text(&l.ttft_ms, ps),
                ps_text(&l.e2e_ms, ps),
                ps_text(&l.latency_from_schedule_ms, ps),
                ps_text(&l.queue_ms, ps),
                ps_text(&l.output_tps, ps),
                format!("{:.1}", l.output_tokens_per_s),
            ]
        })
        .collect();
    out.push_str(&md_table(
        &["Level", "TTFT ms", "E2E ms", "latency from schedule ms", "schedule lag ms", "output tok/s per request", "output tok/s total"],
        &rows,
    ));
    let _ = writeln!(out, "\n### Statistics per level\n");
    let mut rows = Vec::new();
    for l in &load.levels {
        for s in &l.statistics {
            let st = &s.stats;
            rows.push(vec![
                l.label.clone(),
                s.name.clone(),
                st.count.to_string(),
                format!("{:.1}", st.mean),
                format!("{:.1}", st.std),
                format!("{:.1}", st.min),
                format!("{:.1}", st.p25),
                format!("{:.1}", st.p50),
                format!("{:.1}", st.p75),
                format!("{:.1}", st.p90),
                format!("{:.1}", st.p99),
                format!("{:.1}", st.max),
            ]);
        }
    }
    out.push_str(&md_table(
        &["Level", "quantity", "count", "mean", "std", "min", "25%", "50%", "75%", "90%", "99%", "max"],
        &rows,
    ));
    let _ = writeln!(out, "\n### Saturation\n");
    match &load.saturation {
        Some(s) => {
            let _ = writeln!(out, "- Saturation point: **{}** ({}).", s.level, s.reasons.join("; "));
        }
        None => {
            let _ = writeln!(out, "- No level reached saturation.");
        }
    }
    let _ = writeln!(
        out,
        "- Highest sustainable level: {} ({}).",
        opt(load.highest_sustainable.as_ref()),
        load.highest_sustainable_qps.map_or("–".into(), |q| format!("{q:.2} conversations/s"))
    );
    let _ = writeln!(out, "- Recommendation: {}", load.recommendation);
    for l in load.levels.iter().filter(|l| !l.client_bound.is_empty()) {
        let _ = writeln!(out, "- ⚠ Client-bound: **{}** — {}; its numbers may be the client's, not the server's.", l.label, l.client_bound.join("; "));
    }
    let _ = writeln!(
        out,
        "\nPlots: `plots/load_rate.*` (target, achieved and success), `plots/load_ttft.*`, `plots/load_e2e.*`, `plots/load_tokens.*` (PNG and SVG)."
    );
    out
}

/// X position of a level: its target rate, else its achieved rate.
fn x(l: &LevelSummary) -> f64 {
    l.target_qps.unwrap_or(l.achieved_qps)
}

fn percentile_series(load: &LoadSummary, name: &str, get: impl Fn(&LevelSummary) -> &[Percentile]) -> Vec<Series> {
    load.percentiles
        .iter()
        .map(|p| {
            Series::line(
                format!("{name} p{p}"),
                load.levels.iter().filter_map(|l| at(get(l), *p).map(|v| (x(l), v))).collect(),
            )
        })
        .collect()
}

/// The saturation point as a vertical line at its level's load.
pub fn saturation_marker(load: &LoadSummary) -> Option<Marker> {
    let s = load.saturation.as_ref()?;
    let level = load.levels.iter().find(|l| l.label == s.level)?;
    Some(Marker { x: x(level), label: format!("saturation ({})", s.level) })
}

/// The charts against load, by file stem; the saturation point marked on each.
pub fn charts(load: &LoadSummary) -> Vec<(&'static str, LineChart)> {
    let x_label = "load (target conversations/s; achieved for closed-loop levels)".to_string();
    let mut levels: Vec<&LevelSummary> = load.levels.iter().collect();
    levels.sort_by(|a, b| x(a).total_cmp(&x(b)));
    let sorted = LoadSummary { levels: levels.into_iter().cloned().collect(), ..load.clone() };
    let marker = saturation_marker(load);
    let rate = LineChart {
        y2_label: Some("success %".into()),
        marker: marker.clone(),
        ..LineChart::new(
            "Rate and success vs load",
            x_label.clone(),
            "conversations/s",
            vec![
                Series::line("target", sorted.levels.iter().filter_map(|l| l.target_qps.map(|t| (x(l), t))).collect()),
                Series::line("achieved", sorted.levels.iter().map(|l| (x(l), l.achieved_qps)).collect()),
                Series::line("success %", sorted.levels.iter().filter_map(|l| l.success_pct.map(|s| (x(l), s))).collect())
                    .on_right(),
            ],
        )
    };
    let chart = |title: &str, y: &str, name: &str, get: fn(&LevelSummary) -> &[Percentile]| LineChart {
        marker: marker.clone(),
        ..LineChart::new(title, x_label.clone(), y, percentile_series(&sorted, name, get))
    };
    vec![
        ("load_rate", rate),
        ("load_ttft", chart("TTFT vs load", "ms", "TTFT", |l| &l.ttft_ms)),
        ("load_e2e", chart("E2E latency vs load", "ms", "E2E", |l| &l.e2e_ms)),
        ("load_tokens", chart("Output tokens/s per request vs load", "tokens/s", "tok/s", |l| &l.output_tps)),
    ]
}

/// File stems of the charts against load (`plots/<stem>.{png,svg}`).
pub const LOAD_PLOTS: [&str; 4] = ["load_rate", "load_ttft", "load_e2e", "load_tokens"];

/// One chart against load of a multi-user run.
pub struct LoadPlot {
    pub stem: &'static str,
    pub format: ImageFormat,
}

impl Exporter for LoadPlot {
    fn file_name(&self) -> String {
        format!("plots/{}.{}", self.stem, self.format.extension())
    }

    fn applies(&self, input: &ReportInput) -> bool {
        input.summary.load.is_some()
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        let load = input.summary.load.as_ref().ok_or_else(|| anyhow!("not a multi-user run"))?;
        let (_, chart) = super::load::charts(load)
            .into_iter()
            .find(|(stem, _)| *stem == self.stem)
            .ok_or_else(|| anyhow!("no chart {}", self.stem))?;
        chart.render(self.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plot::YAxis;
    use serde_json::json;

    fn level(label: &str, qps: f64, success: f64, ttft_p50: f64) -> serde_json::Value {
        json!({"label": label, "target_qps": qps, "concurrency": null, "window_s": 10.0, "requests": 10, "ok": 10,
               "failed": 0, "success_pct": success, "offered_qps": qps, "achieved_qps": qps * 0.9, "request_rate": qps,
               "output_tokens_per_s": 100.0, "max_in_flight": 3, "ttft_ms": [{"p": 50.0, "value": ttft_p50}],
               "e2e_ms": [{"p": 50.0, "value": ttft_p50 * 2.0}], "latency_from_schedule_ms": [], "queue_ms": [],
               "output_tps": [{"p": 50.0, "value": 40.0}], "errors": [], "statistics": []})
    }

    #[test]
    fn charts_sort_levels_by_load_and_mark_saturation() {
        let load: LoadSummary = serde_json::from_value(json!({
            "mode": "open", "workload": "suite", "percentiles": [50.0],
            "levels": [level("qps-8", 8.0, 80.0, 900.0), level("qps-2", 2.0, 100.0, 100.0)],
            "saturation": {"level": "qps-8", "reasons": ["success < 95%"]},
            "highest_sustainable": "qps-2", "highest_sustainable_qps": 2.0, "recommendation": "stay at 2/s"
        }))
        .unwrap();
        let charts = charts(&load);
        assert_eq!(charts.iter().map(|c| c.0).collect::<Vec<_>>(), LOAD_PLOTS);
        let rate = &charts[0].1;
        let achieved = rate.series.iter().find(|s| s.label == "achieved").unwrap();
        assert_eq!(achieved.points, [(2.0, 1.8), (8.0, 7.2)], "sorted by offered load");
        let success = rate.series.iter().find(|s| s.label == "success %").unwrap();
        assert_eq!((success.axis, success.points.clone()), (YAxis::Right, vec![(2.0, 100.0), (8.0, 80.0)]));
        let ttft = &charts[1].1;
        assert_eq!(ttft.series[0].label, "TTFT p50");
        assert_eq!(ttft.series[0].points, [(2.0, 100.0), (8.0, 900.0)]);
        for (_, c) in &charts {
            assert_eq!(c.marker, Some(Marker { x: 8.0, label: "saturation (qps-8)".into() }));
        }
    }
}
