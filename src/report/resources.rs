//! The resources part of the reports: the "Resources" section of `report.md` and the timeline
//! chart (`plots/timeline.{png,svg}`).

use std::fmt::Write as _;

use anyhow::{anyhow, Result};

use super::plot::{Figure, ImageFormat, LineChart, Series};
use super::{Exporter, ReportInput};
use crate::analysis::resources::ResourceSummary;
use crate::core::timeline::{metric, source, Timeline};

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

/// Devices of one source and metric, sorted.
fn devices<'a>(timeline: &'a Timeline, src: &'a str, m: &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = timeline.series(src, m).map(|s| s.device.as_str()).collect();
    out.sort();
    out.dedup();
    out
}

/// The timeline as small multiples, one panel per unit, each only when it has samples: CPU %
/// (machine and engine), memory MiB (machine, engine RSS, each GPU), GPU utilization % (each
/// GPU) and KV-cache usage %. x is seconds on the run clock.
pub fn timeline_figure(timeline: &Timeline) -> Figure {
    let pick = |src: &str, m: &str, device: Option<&str>| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = timeline
            .series(src, m)
            .filter(|s| device.is_none_or(|d| s.device == d))
            .map(|s| (s.t_ms / 1000.0, s.value))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    };
    let panel = |title: &str, y: &str, candidates: Vec<Series>| {
        let series: Vec<Series> = candidates.into_iter().filter(|s| !s.points.is_empty()).collect();
        (!series.is_empty()).then(|| LineChart::new(title, "run time (s)", y, series))
    };
    let gpus = devices(timeline, source::GPU, metric::UTIL_SM_PCT);
    let gpu_mem = devices(timeline, source::GPU, metric::MEM_USED_MIB);
    let mut memory = vec![
        Series::line("machine memory used", pick(source::SYSTEM, metric::MEM_USED_MIB, None)),
        Series::line("engine RSS", pick(source::ENGINE, metric::RSS_MIB, None)),
    ];
    memory.extend(gpu_mem.iter().map(|g| Series::line(format!("GPU memory ({g})"), pick(source::GPU, metric::MEM_USED_MIB, Some(g)))));
    let panels = [
        panel(
            "CPU",
            "%",
            vec![
                Series::line("system CPU %", pick(source::SYSTEM, metric::CPU_PCT, Some("all"))),
                Series::line("engine CPU % (100 = 1 core)", pick(source::ENGINE, metric::CPU_PCT, None)),
            ],
        ),
        panel("Memory", "MiB", memory),
        panel(
            "GPU utilization",
            "%",
            gpus.iter().map(|g| Series::line(format!("GPU util % ({g})"), pick(source::GPU, metric::UTIL_SM_PCT, Some(g)))).collect(),
        ),
        panel("KV cache", "% used", vec![Series::line("KV-cache usage %", pick(source::SERVER, metric::KV_CACHE_USAGE_PCT, None))]),
    ];
    Figure { title: "Timeline".into(), panels: panels.into_iter().flatten().collect() }
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
        timeline_figure(timeline).render(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::resources::summarize_resources;
    use crate::analysis::resources::tests::timeline;
    use crate::core::timeline::Sample;

    #[test]
    fn section_and_timeline_chart() {
        let r = summarize_resources(&std::collections::BTreeMap::from([(1, "c1".to_string())]), &timeline());
        let md = markdown_section(&r);
        assert!(md.contains("## Resources"), "{md}");
        assert!(md.contains("| 1 | c1 | 4 | 50.0 | 100.0 / 100.0 |"), "{md}");
        let fig = timeline_figure(&timeline());
        let titles: Vec<&str> = fig.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["CPU", "Memory", "GPU utilization"], "no KV-cache samples, no KV panel");
        let labels = |i: usize| fig.panels[i].series.iter().map(|s| s.label.as_str()).collect::<Vec<_>>();
        assert_eq!(labels(0), ["system CPU %", "engine CPU % (100 = 1 core)"]);
        assert_eq!(labels(1), ["GPU memory (gpu0)", "GPU memory (gpu1)"]);
        assert_eq!(fig.panels[1].y_label, "MiB");
        assert_eq!(labels(2), ["GPU util % (gpu0)", "GPU util % (gpu1)"]);
        let gpu0 = &fig.panels[2].series[0].points;
        assert_eq!(gpu0, &[(0.1, 10.0), (0.15, 99.0), (0.2, 20.0), (0.3, 30.0), (0.4, 40.0)], "in time order");
        let mut t = timeline();
        t.samples.push(Sample::new(500.0, 1, source::SERVER, metric::KV_CACHE_USAGE_PCT, "", 42.0));
        let fig = timeline_figure(&t);
        assert_eq!(fig.panels.last().unwrap().series[0].points, [(0.5, 42.0)]);
        let png = fig.render(ImageFormat::Png).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
}
