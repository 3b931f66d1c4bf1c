//! Pure joins of records and timeline: what the machine did during each turn
//! ([`TurnResources`], joined onto the records at report time) and during each test
//! ([`ResourceSummary`], the `resources` section of `summary.json`). Both inputs use the run's
//! clock, so joining is comparing times.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::record::{TurnRecord, TurnResources};
use crate::core::timeline::{metric, source, Sample, Timeline};

/// A window with no sample inside borrows the first sample after it, up to this long after.
const NEXT_SAMPLE_MS: f64 = 2000.0;

/// One series as sorted `(t_ms, value)` points.
#[derive(Debug, Default)]
struct Points(Vec<(f64, f64)>);

impl Points {
    fn collect<'a>(samples: impl Iterator<Item = &'a Sample>) -> Self {
        let mut v: Vec<(f64, f64)> = samples.map(|s| (s.t_ms, s.value)).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        Points(v)
    }

    /// Per tick sum over devices (samples of one tick share their `t_ms`).
    fn summed_per_tick<'a>(samples: impl Iterator<Item = &'a Sample>) -> Self {
        let mut by_t: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in samples {
            let e = by_t.entry(s.t_ms.to_bits()).or_insert((s.t_ms, 0.0));
            e.1 += s.value;
        }
        Self::collect_pairs(by_t.into_values())
    }

    fn collect_pairs(it: impl Iterator<Item = (f64, f64)>) -> Self {
        let mut v: Vec<(f64, f64)> = it.collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        Points(v)
    }

    /// Values inside `[from, to]`, else the first value after `to` (within [`NEXT_SAMPLE_MS`]).
    fn window(&self, from: f64, to: f64) -> &[(f64, f64)] {
        let a = self.0.partition_point(|p| p.0 < from);
        let b = self.0.partition_point(|p| p.0 <= to);
        if b > a {
            return &self.0[a..b];
        }
        match self.0.get(b) {
            Some(p) if p.0 - to <= NEXT_SAMPLE_MS => &self.0[b..b + 1],
            _ => &[],
        }
    }
}

fn mean(v: &[(f64, f64)]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().map(|p| p.1).sum::<f64>() / v.len() as f64)
}

fn max(v: &[(f64, f64)]) -> Option<f64> {
    v.iter().map(|p| p.1).reduce(f64::max)
}

/// The timeline's series used by the joins, for one test.
struct TestSeries {
    gpu_util: Points,
    gpu_mem: Points,
    engine_cpu: Points,
    kv: Points,
}

impl TestSeries {
    fn new(timeline: &Timeline, test: u32) -> Self {
        let pick = |src: &'static str, m: &'static str| {
            timeline.samples.iter().filter(move |s| s.test == test && s.source == src && s.metric == m)
        };
        TestSeries {
            gpu_util: Points::collect(pick(source::GPU, metric::UTIL_SM_PCT)),
            gpu_mem: Points::summed_per_tick(pick(source::GPU, metric::MEM_USED_MIB)),
            engine_cpu: Points::collect(pick(source::ENGINE, metric::CPU_PCT)),
            kv: Points::collect(pick(source::SERVER, metric::KV_CACHE_USAGE_PCT)),
        }
    }

    fn turn(&self, from: f64, to: f64) -> Option<TurnResources> {
        let util = self.gpu_util.window(from, to);
        let r = TurnResources {
            gpu_util_mean_pct: mean(util),
            gpu_util_max_pct: max(util),
            gpu_memory_peak_mib: max(self.gpu_mem.window(from, to)),
            engine_cpu_mean_pct: mean(self.engine_cpu.window(from, to)),
            kv_cache_usage_max_pct: max(self.kv.window(from, to)),
        };
        (r != TurnResources::default()).then_some(r)
    }
}

/// Fills each record's `resources` from the timeline (by test and time window), in place: a
/// long run's records are not copied for it.
pub fn join_records(records: &mut [TurnRecord], timeline: &Timeline) {
    let mut join = ResourceJoin::new(timeline);
    for r in records {
        join.join(r);
    }
}

/// Joins the timeline onto records one at a time (each test's series prepared once).
pub struct ResourceJoin<'a> {
    timeline: &'a Timeline,
    series: BTreeMap<u32, TestSeries>,
}

impl<'a> ResourceJoin<'a> {
    pub fn new(timeline: &'a Timeline) -> Self {
        ResourceJoin { timeline, series: BTreeMap::new() }
    }

    /// Fills `r.resources` from what the machine did while it was in flight.
    pub fn join(&mut self, r: &mut TurnRecord) {
        let series = self.series.entry(r.test).or_insert_with(|| TestSeries::new(self.timeline, r.test));
        r.resources = series.turn(r.timing.sent_ms, r.timing.end_ms.max(r.timing.sent_ms));
    }
}

/// The `resources` section of `summary.json`: one entry per test that has samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSummary {
    /// Whether any GPU sample was taken (false: no NVML, or no GPU).
    pub gpu_sampled: bool,
    pub tests: Vec<TestResources>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestResources {
    pub test: u32,
    /// Conversation replayed by the test (from its records).
    pub conversation_id: Option<String>,
    /// Sampler ticks of the machine (system CPU samples).
    pub samples: usize,
    pub system_cpu_mean_pct: Option<f64>,
    pub engine_cpu_mean_pct: Option<f64>,
    pub engine_cpu_max_pct: Option<f64>,
    pub engine_rss_peak_mib: Option<f64>,
    pub gpu_util_mean_pct: Option<f64>,
    pub gpu_util_max_pct: Option<f64>,
    pub gpu_memory_peak_mib: Option<f64>,
    pub kv_cache_usage_max_pct: Option<f64>,
    /// Growth of `vllm:num_preemptions_total` during the test.
    pub preemptions: Option<f64>,
    /// GPU memory held by processes outside turnbench before the server started
    /// (`--allow-busy-gpu`).
    pub gpu_foreign_mib: Option<f64>,
    /// Time after teardown until GPU memory was back near its baseline.
    pub gpu_release_ms: Option<f64>,
}

/// Per-test resource statistics; `conversations` names the conversation each test replayed
/// (that of its first measured record).
pub fn summarize_resources(conversations: &BTreeMap<u32, String>, timeline: &Timeline) -> ResourceSummary {
    let mut tests: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
    for s in &timeline.samples {
        tests.entry(s.test).or_default().push(s);
    }
    let out = tests
        .into_iter()
        .map(|(test, samples)| {
            let pts = |src: &str, m: &str| {
                Points::collect(samples.iter().copied().filter(|s| s.source == src && s.metric == m))
            };
            let last = |src: &str, m: &str| pts(src, m).0.last().map(|p| p.1);
            let system_cpu = Points::collect(
                samples.iter().copied().filter(|s| s.source == source::SYSTEM && s.metric == metric::CPU_PCT && s.device == "all"),
            );
            let engine_cpu = pts(source::ENGINE, metric::CPU_PCT);
            let util = pts(source::GPU, metric::UTIL_SM_PCT);
            let gpu_mem = Points::summed_per_tick(
                samples.iter().copied().filter(|s| s.source == source::GPU && s.metric == metric::MEM_USED_MIB),
            );
            let preempt = pts(source::SERVER, metric::PREEMPTIONS_TOTAL);
            TestResources {
                test,
                conversation_id: conversations.get(&test).cloned(),
                samples: system_cpu.0.len(),
                system_cpu_mean_pct: mean(&system_cpu.0),
                engine_cpu_mean_pct: mean(&engine_cpu.0),
                engine_cpu_max_pct: max(&engine_cpu.0),
                engine_rss_peak_mib: max(&pts(source::ENGINE, metric::RSS_MIB).0),
                gpu_util_mean_pct: mean(&util.0),
                gpu_util_max_pct: max(&util.0),
                gpu_memory_peak_mib: max(&gpu_mem.0),
                kv_cache_usage_max_pct: max(&pts(source::SERVER, metric::KV_CACHE_USAGE_PCT).0),
                preemptions: match (preempt.0.first(), preempt.0.last()) {
                    (Some(a), Some(b)) => Some((b.1 - a.1).max(0.0)),
                    _ => None,
                },
                gpu_foreign_mib: last(source::HYGIENE, metric::GPU_FOREIGN_MIB),
                gpu_release_ms: last(source::HYGIENE, metric::GPU_RELEASE_MS),
            }
        })
        .collect();
    ResourceSummary { gpu_sampled: timeline.samples.iter().any(|s| s.source == source::GPU), tests: out }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::record::RequestTiming;

    fn s(t: f64, test: u32, src: &str, m: &str, dev: &str, v: f64) -> Sample {
        Sample::new(t, test, src, m, dev, v)
    }

    pub(crate) fn record(test: u32, sent: f64, end: f64) -> TurnRecord {
        TurnRecord {
            test,
            conversation_id: format!("c{test}"),
            timing: RequestTiming { sent_ms: sent, end_ms: end, ..Default::default() },
            ..Default::default()
        }
    }

    pub(crate) fn timeline() -> Timeline {
        let mut samples = Vec::new();
        for (i, t) in [100.0, 200.0, 300.0, 400.0].into_iter().enumerate() {
            samples.push(s(t, 1, "gpu", "util_sm_pct", "gpu0", 10.0 * (i + 1) as f64));
            samples.push(s(t, 1, "gpu", "util_sm_pct", "gpu1", 0.0));
            samples.push(s(t, 1, "gpu", "mem_used_mib", "gpu0", 1000.0 + i as f64));
            samples.push(s(t, 1, "gpu", "mem_used_mib", "gpu1", 500.0));
            samples.push(s(t, 1, "engine", "cpu_pct", "", 100.0));
            samples.push(s(t, 1, "system", "cpu_pct", "all", 50.0));
            samples.push(s(t, 1, "server", "preemptions_total", "", i as f64));
        }
        samples.push(s(900.0, 1, "hygiene", "gpu_release_ms", "", 1500.0));
        samples.push(s(150.0, 2, "gpu", "util_sm_pct", "gpu0", 99.0));
        Timeline { samples }
    }

    #[test]
    fn turns_join_their_window_and_only_their_test() {
        let mut joined = vec![record(1, 150.0, 320.0), record(2, 100.0, 200.0), record(3, 0.0, 10.0)];
        join_records(&mut joined, &timeline());
        let r = joined[0].resources.clone().unwrap();
        // Ticks 200 and 300: gpu0 20, 30; gpu1 0, 0.
        assert_eq!(r.gpu_util_mean_pct, Some(12.5));
        assert_eq!(r.gpu_util_max_pct, Some(30.0));
        assert_eq!(r.gpu_memory_peak_mib, Some(1502.0));
        assert_eq!(r.engine_cpu_mean_pct, Some(100.0));
        assert_eq!(r.kv_cache_usage_max_pct, None);
        assert_eq!(joined[1].resources.as_ref().unwrap().gpu_util_max_pct, Some(99.0));
        assert_eq!(joined[2].resources, None, "test 3 has no samples");
    }

    #[test]
    fn a_short_turn_borrows_the_next_tick() {
        let mut joined = vec![record(1, 210.0, 220.0)];
        join_records(&mut joined, &timeline());
        assert_eq!(joined[0].resources.as_ref().unwrap().gpu_util_max_pct, Some(30.0));
    }

    #[test]
    fn per_test_summary_and_section() {
        let r = summarize_resources(&std::collections::BTreeMap::from([(1, "c1".to_string())]), &timeline());
        assert!(r.gpu_sampled);
        let t = &r.tests[0];
        assert_eq!(t.conversation_id.as_deref(), Some("c1"));
        assert_eq!(t.samples, 4);
        assert_eq!(t.gpu_util_mean_pct, Some(12.5));
        assert_eq!(t.gpu_memory_peak_mib, Some(1503.0));
        assert_eq!(t.preemptions, Some(3.0));
        assert_eq!(t.gpu_release_ms, Some(1500.0));
    }
}
