//! Beyond one server and one client: what each replica behind a router did (from the timeline's
//! `replica` samples), what the routing cost against one shared cache, and how healthy each
//! shard's client was in a merged run. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::load::LoadSettings;
use super::stats::Distribution;
use super::{pct, CacheTotals};
use crate::core::record::TurnRecord;
use crate::core::results::Manifest;
use crate::core::timeline::{metric, source, Sample, Timeline};

/// One replica over one window (the whole run, or one load level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaWindow {
    /// `run` for the whole run, else the level's label.
    pub label: String,
    /// Prompt tokens served from this replica's prefix cache in the window.
    pub prefix_cache_hits: Option<u64>,
    pub prefix_cache_queries: Option<u64>,
    pub hit_pct: Option<f64>,
    pub kv_cache_usage_max_pct: Option<f64>,
    pub requests_running_max: Option<f64>,
    pub requests_waiting_max: Option<f64>,
    pub preemptions: Option<u64>,
}

/// One replica behind the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSummary {
    /// `replica-<k>` (the k-th `--metrics-url`) or `engine-<label>` (split from the endpoint's
    /// own `/metrics`).
    pub name: String,
    pub url: Option<String>,
    pub total: ReplicaWindow,
    /// Many-user runs: one entry per level.
    pub levels: Vec<ReplicaWindow>,
}

/// The replicas together against the server's own total and against one ideal shared cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingSummary {
    pub replicas: usize,
    /// Sum of the replicas' prefix-cache hits (tokens) over the run.
    pub replica_hits: u64,
    pub replica_queries: u64,
    /// The endpoint's own `/metrics` over the same span (when it has one): the replicas' sum
    /// should equal it.
    pub server_hits: Option<u64>,
    pub server_queries: Option<u64>,
    /// Prompt tokens reused, per cent, as the replicas counted it.
    pub reuse_pct: Option<f64>,
    /// What one cache shared by every request (the ledger's unbounded model) would have reused.
    pub ideal_shared_reuse_pct: Option<f64>,
    /// `ideal − reuse`: the reuse the routing (and the replicas' separate caches) lost.
    pub lost_pct_points: Option<f64>,
    pub lost_tokens: Option<u64>,
}

/// One shard's client in a merged run (`turnbench merge`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardHealth {
    pub index: u32,
    pub records: usize,
    pub ok: usize,
    /// Schedule lag (`sent − scheduled`) p99 of its measured requests: a shard whose requests
    /// left late was client-bound.
    pub queue_p99_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub offset_ms: f64,
    pub cpu_mean_pct: Option<f64>,
    pub cpu_max_pct: Option<f64>,
    pub ceiling_requests_per_s: Option<f64>,
    pub completed: bool,
}

/// A counter's growth over `[from, to]`, step by step from its last sample at or before `from`
/// (the first sample when none is that early) to its last at or before `to`. A step down is a
/// reset (the server restarted: a fresh server per test): its growth is the value it reset to.
fn counter_delta(series: &[&Sample], from: f64, to: f64) -> Option<u64> {
    let start = series.iter().rposition(|s| s.t_ms <= from).unwrap_or(0);
    let end = series.iter().rposition(|s| s.t_ms <= to)?;
    let mut growth = 0.0;
    for w in series.get(start..=end.max(start))?.windows(2) {
        let (a, b) = (w[0].value, w[1].value);
        growth += if b < a { b } else { b - a };
    }
    (growth.is_finite() && growth >= 0.0).then(|| growth.round() as u64)
}

fn gauge_max(series: &[&Sample], from: f64, to: f64) -> Option<f64> {
    series.iter().filter(|s| s.t_ms >= from && s.t_ms <= to).map(|s| s.value).reduce(f64::max)
}

fn window(samples: &BTreeMap<&str, Vec<&Sample>>, label: &str, from: f64, to: f64) -> ReplicaWindow {
    let get = |m: &str| samples.get(m).map(Vec::as_slice).unwrap_or(&[]);
    let hits = counter_delta(get(metric::PREFIX_CACHE_HITS_TOTAL), from, to);
    let queries = counter_delta(get(metric::PREFIX_CACHE_QUERIES_TOTAL), from, to);
    ReplicaWindow {
        label: label.to_string(),
        prefix_cache_hits: hits,
        prefix_cache_queries: queries,
        hit_pct: pct(hits.unwrap_or(0) as f64, queries.unwrap_or(0) as f64).filter(|_| hits.is_some()),
        kv_cache_usage_max_pct: gauge_max(get(metric::KV_CACHE_USAGE_PCT), from, to),
        requests_running_max: gauge_max(get(metric::REQUESTS_RUNNING), from, to),
        requests_waiting_max: gauge_max(get(metric::REQUESTS_WAITING), from, to),
        preemptions: counter_delta(get(metric::PREEMPTIONS_TOTAL), from, to),
    }
}

/// Samples of one source by device, then metric, in time order.
fn by_device<'a>(timeline: &'a Timeline, src: &str) -> BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a Sample>>> {
    let mut out: BTreeMap<&str, BTreeMap<&str, Vec<&Sample>>> = BTreeMap::new();
    for s in timeline.samples.iter().filter(|s| s.source == src) {
        out.entry(s.device.as_str()).or_default().entry(s.metric.as_str()).or_default().push(s);
    }
    for metrics in out.values_mut() {
        for series in metrics.values_mut() {
            series.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        }
    }
    out
}

/// Every replica the timeline sampled, over the run and per load level.
pub fn replicas(timeline: &Timeline, manifest: &Manifest) -> Vec<ReplicaSummary> {
    let urls: Vec<String> = manifest
        .settings
        .pointer("/cluster/metrics_urls")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let levels = LoadSettings::from_manifest(manifest).map(|l| l.levels).unwrap_or_default();
    let mut out: Vec<ReplicaSummary> = by_device(timeline, source::REPLICA)
        .into_iter()
        .map(|(name, samples)| {
            let span = samples.values().flatten().map(|s| s.t_ms);
            let (first, last) = span.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), t| (a.min(t), b.max(t)));
            let url = name.strip_prefix("replica-").and_then(|k| k.parse::<usize>().ok()).and_then(|k| urls.get(k).cloned());
            ReplicaSummary {
                name: name.to_string(),
                url,
                total: window(&samples, "run", first, last),
                levels: levels.iter().map(|w| window(&samples, &w.label, w.start_ms, w.end_ms)).collect(),
            }
        })
        .collect();
    // replica-2 before replica-10.
    out.sort_by_key(|r| (r.name.rsplit('-').next().and_then(|k| k.parse::<u64>().ok()), r.name.clone()));
    out
}

/// The replicas' sum against the endpoint's total and against one ideal shared cache; `None`
/// without replicas.
pub fn routing(replicas: &[ReplicaSummary], timeline: &Timeline, cache: &CacheTotals) -> Option<RoutingSummary> {
    if replicas.is_empty() {
        return None;
    }
    let replica_hits: u64 = replicas.iter().filter_map(|r| r.total.prefix_cache_hits).sum();
    let replica_queries: u64 = replicas.iter().filter_map(|r| r.total.prefix_cache_queries).sum();
    let server = by_device(timeline, source::SERVER);
    let server = server.get("");
    let server_delta = |m: &str| {
        let series = server?.get(m)?;
        counter_delta(series, series.first()?.t_ms, series.last()?.t_ms)
    };
    let reuse_pct = pct(replica_hits as f64, replica_queries as f64);
    let ideal_shared_reuse_pct = pct(cache.expected_reusable_tokens as f64, cache.prompt_tokens as f64)
        .filter(|_| cache.expected_reusable_tokens > 0);
    Some(RoutingSummary {
        replicas: replicas.len(),
        replica_hits,
        replica_queries,
        server_hits: server_delta(metric::PREFIX_CACHE_HITS_TOTAL),
        server_queries: server_delta(metric::PREFIX_CACHE_QUERIES_TOTAL),
        reuse_pct,
        ideal_shared_reuse_pct,
        lost_pct_points: ideal_shared_reuse_pct.zip(reuse_pct).map(|(i, r)| i - r),
        lost_tokens: (cache.expected_reusable_tokens > 0).then(|| cache.expected_reusable_tokens.saturating_sub(replica_hits)),
    })
}

/// One shard's records of a merged run, folded in one at a time.
#[derive(Debug, Default)]
pub struct ShardAcc {
    ok: usize,
    lag: Distribution,
    ttft: Distribution,
}

impl ShardAcc {
    /// A measured record of this shard.
    pub fn push(&mut self, r: &TurnRecord) {
        self.lag.push(r.derived.queue_ms);
        if r.status.is_ok() {
            self.ok += 1;
            self.ttft.push(r.derived.ttft_ms.unwrap_or(f64::NAN));
        }
    }
}

/// Per-shard client health of a merged run (empty for any other run), from each shard's
/// measured records (`accs`, by shard index).
pub fn shards(accs: Vec<(u32, ShardAcc)>, manifest: &Manifest) -> Vec<ShardHealth> {
    let mut accs: BTreeMap<u32, ShardAcc> = accs.into_iter().collect();
    manifest
        .merged_from
        .iter()
        .map(|m| {
            let mut acc = accs.remove(&m.index).unwrap_or_default();
            ShardHealth {
                index: m.index,
                records: m.records,
                ok: acc.ok,
                queue_p99_ms: acc.lag.percentile(99.0),
                ttft_p50_ms: acc.ttft.percentile(50.0),
                offset_ms: m.offset_ms,
                cpu_mean_pct: m.cpu_mean_pct,
                cpu_max_pct: m.cpu_max_pct,
                ceiling_requests_per_s: m.ceiling_requests_per_s,
                completed: m.completed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, device: &str, m: &str, v: f64) -> Sample {
        Sample::new(t, 1, source::REPLICA, m, device, v)
    }

    #[test]
    fn replica_windows_from_counters_and_gauges() {
        let mut samples = Vec::new();
        for (t, h0, h1) in [(0.0, 100.0, 0.0), (500.0, 160.0, 10.0), (1000.0, 400.0, 30.0)] {
            samples.push(s(t, "replica-0", metric::PREFIX_CACHE_HITS_TOTAL, h0));
            samples.push(s(t, "replica-0", metric::PREFIX_CACHE_QUERIES_TOTAL, h0 * 2.0));
            samples.push(s(t, "replica-1", metric::PREFIX_CACHE_HITS_TOTAL, h1));
            samples.push(s(t, "replica-1", metric::PREFIX_CACHE_QUERIES_TOTAL, h1 * 4.0));
            samples.push(s(t, "replica-1", metric::REQUESTS_WAITING, t / 100.0));
            samples.push(Sample::new(t, 1, source::SERVER, metric::PREFIX_CACHE_HITS_TOTAL, "", h0 + h1));
        }
        let timeline = Timeline { samples };
        let manifest = Manifest {
            settings: serde_json::json!({"cluster": {"metrics_urls": ["http://a/metrics", "http://b/metrics"]}}),
            ..Default::default()
        };
        let r = replicas(&timeline, &manifest);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].url.as_deref(), Some("http://a/metrics"));
        assert_eq!(r[0].total.prefix_cache_hits, Some(300));
        assert_eq!(r[0].total.hit_pct, Some(50.0));
        assert_eq!(r[1].total.prefix_cache_hits, Some(30));
        assert_eq!(r[1].total.hit_pct, Some(25.0));
        assert_eq!(r[1].total.requests_waiting_max, Some(10.0));
        assert_eq!(r[0].total.kv_cache_usage_max_pct, None);
        let cache = CacheTotals { prompt_tokens: 1000, cached_tokens: 330, expected_reusable_tokens: 800, ..Default::default() };
        let routing = routing(&r, &timeline, &cache).unwrap();
        assert_eq!((routing.replica_hits, routing.server_hits), (330, Some(330)));
        assert_eq!(routing.ideal_shared_reuse_pct, Some(80.0));
        assert_eq!(routing.lost_tokens, Some(470));
        let lost = routing.lost_pct_points.unwrap();
        assert!((lost - (80.0 - 330.0 / 720.0 * 100.0)).abs() < 1e-9, "{lost}");
        assert!(super::routing(&[], &timeline, &cache).is_none());
    }

    #[test]
    fn counter_windows_take_the_last_value_before_each_edge() {
        let series: Vec<Sample> = [(0.0, 5.0), (100.0, 8.0), (200.0, 20.0), (300.0, 2.0)]
            .into_iter()
            .map(|(t, v)| s(t, "r", "c", v))
            .collect();
        let refs: Vec<&Sample> = series.iter().collect();
        assert_eq!(counter_delta(&refs, 100.0, 200.0), Some(12));
        assert_eq!(counter_delta(&refs, 150.0, 250.0), Some(12));
        assert_eq!(counter_delta(&refs, -50.0, 100.0), Some(3), "before the first sample: the first");
        assert_eq!(counter_delta(&refs, 200.0, 300.0), Some(2), "a reset counter moved by its value");
        assert_eq!(counter_delta(&refs, 0.0, 300.0), Some(17), "growth before a reset is kept: 3 + 12 + 2");
        assert_eq!(counter_delta(&[], 0.0, 1.0), None);
    }
}
