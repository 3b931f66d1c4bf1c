//! The resources part of the reports: the "Resources" section of `report.md` and the timeline
//! chart (`plots/timeline.{png,svg}`).

use std::fmt::Write as _;

use anyhow::{anyhow, Result};

use super::plot::{ImageFormat, LineChart, Series};
use super::{Exporter, ReportInput};
use crate::analysis::resources::ResourceSummary;
use crate::core::timeline::{metric, source, Sample, Timeline};

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

/// The "Resources" section of `report.md`.
pub fn markdown_section(r: &ResourceSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Resources\n");
    if !r.gpu_sampled {
        let _ = writeln!(out, "GPU metrics unavailable for this run (no NVML); CPU, memory and server gauges only.\n");
    }
    let _ = writeln!(
        out,
        "| test | conversation | ticks | system CPU % | engine CPU % mean / max | engine RSS MiB | GPU util % mean / max | GPU mem peak MiB | KV cache max % | preemptions | GPU release s |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for t in &r.tests {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} / {} | {} | {} / {} | {} | {} | {} | {} |",
            t.test,
            t.conversation_id.as_deref().unwrap_or("–"),
            t.samples,
            cell(t.system_cpu_mean_pct, 1),
            cell(t.engine_cpu_mean_pct, 1),
            cell(t.engine_cpu_max_pct, 1),
            cell(t.engine_rss_peak_mib, 0),
            cell(t.gpu_util_mean_pct, 1),
            cell(t.gpu_util_max_pct, 1),
            cell(t.gpu_memory_peak_mib, 0),
            cell(t.kv_cache_usage_max_pct, 1),
            cell(t.preemptions, 0),
            cell(t.gpu_release_ms.map(|ms| ms / 1000.0), 2),
        );
    }
    let _ = writeln!(
        out,
        "\nSamples: `timeline.csv`; per-turn GPU and engine CPU during each request: `turns.csv` (`gpu_util_mean_pct`, …); over time: `plots/timeline.png`.\n"
    );
    out
}

/// CPU %, GPU utilization % and KV-cache usage % over the run (seconds on the run clock).
pub fn timeline_chart(timeline: &Timeline) -> LineChart {
    let mut series = Vec::new();
    let mut add = |label: String, pred: &dyn Fn(&Sample) -> bool| {
        let points: Vec<(f64, f64)> = timeline.samples.iter().filter(|s| pred(s)).map(|s| (s.t_ms / 1000.0, s.value)).collect();
        if !points.is_empty() {
            series.push(Series { label, points });
        }
    };
    add("system CPU %".into(), &|s| s.source == source::SYSTEM && s.metric == metric::CPU_PCT && s.device == "all");
    add("engine CPU % (100 = 1 core)".into(), &|s| s.source == source::ENGINE && s.metric == metric::CPU_PCT);
    let mut gpus: Vec<&str> = timeline
        .samples
        .iter()
        .filter(|s| s.source == source::GPU && s.metric == metric::UTIL_SM_PCT)
        .map(|s| s.device.as_str())
        .collect();
    gpus.sort();
    gpus.dedup();
    for g in gpus {
        add(format!("GPU util % ({g})"), &|s| s.source == source::GPU && s.metric == metric::UTIL_SM_PCT && s.device == g);
    }
    add("KV-cache usage %".into(), &|s| s.source == source::SERVER && s.metric == metric::KV_CACHE_USAGE_PCT);
    LineChart { title: "Timeline".into(), x_label: "run time (s)".into(), y_label: "%".into(), series }
}


/// `plots/timeline.{png,svg}`: the machine, engine, GPU and KV cache over the run.
pub struct TimelinePlot(pub ImageFormat);

impl Exporter for TimelinePlot {
    fn file_name(&self) -> String {
        format!("plots/timeline.{}", self.0.extension())
    }

    fn applies(&self, input: &ReportInput) -> bool {
        input.timeline.is_some()
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        let timeline = input.timeline.ok_or_else(|| anyhow!("no timeline"))?;
        super::resources::timeline_chart(timeline).render(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::resources::summarize_resources;
    use crate::analysis::resources::tests::{record, timeline};

    #[test]
    fn section_and_timeline_chart() {
        let r = summarize_resources(&[record(1, 0.0, 1.0)], &timeline());
        let md = markdown_section(&r);
        assert!(md.contains("## Resources"), "{md}");
        assert!(md.contains("| 1 | c1 | 4 | 50.0 | 100.0 / 100.0 |"), "{md}");
        let chart = timeline_chart(&timeline());
        let labels: Vec<&str> = chart.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["system CPU %", "engine CPU % (100 = 1 core)", "GPU util % (gpu0)", "GPU util % (gpu1)"]);
    }
}
