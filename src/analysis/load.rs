//! Pure statistics of multi-user runs: records + the level windows stored in the manifest in,
//! per-level rates, percentiles, errors, the saturation point and a recommendation out.
//!
//! Definitions (per level, over its measured window `[start + trim_warmup, stop − trim_cooldown]`):
//! - a request belongs to the window when its `scheduled_ms` falls in it; latency statistics are
//!   over those that succeeded, and `latency_from_schedule_ms` includes the time spent waiting
//!   to be sent (open loop: no coordinated omission);
//! - `offered_qps`: conversations whose first turn was scheduled in the window, per second;
//! - `achieved_qps`: first turns that *completed successfully* in the window, per second (a
//!   server that cannot keep up completes fewer than were offered);
//! - `request_rate`: successful requests (any turn) completed in the window, per second.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::{Distribution, Stats};
use crate::core::record::TurnRecord;
use crate::core::results::{ClientCalibration, Manifest};
use crate::schedule::LevelWindow;

/// Key of the multi-user settings inside `manifest.settings`.
pub const SETTINGS_KEY: &str = "load";

/// Multi-user settings as stored in the manifest (`settings.load`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSettings {
    /// `closed`, `open`, `sweep` or `sweep_auto`.
    pub mode: String,
    pub percentiles: Vec<f64>,
    pub trim_warmup_s: f64,
    pub trim_cooldown_s: f64,
    pub saturation_ttft_factor: f64,
    /// …and exceeds the low-load p99 by at least this many ms (jitter on a tiny TTFT is not
    /// saturation).
    #[serde(default = "default_ttft_floor_ms")]
    pub saturation_ttft_floor_ms: f64,
    pub workload: String,
    /// Levels in the order they ran (appended as each ends).
    pub levels: Vec<LevelWindow>,
}

fn default_ttft_floor_ms() -> f64 {
    50.0
}

impl LoadSettings {
    pub fn from_manifest(m: &Manifest) -> Option<Self> {
        serde_json::from_value(m.settings.get(SETTINGS_KEY)?.clone()).ok()
    }
}

/// One percentile of a distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentile {
    pub p: f64,
    pub value: f64,
}

/// Failed requests of one kind: `http_503`, `timeout`, `connect`, `stream`, …
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindCount {
    pub kind: String,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedStats {
    pub name: String,
    pub stats: Stats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSummary {
    pub label: String,
    pub target_qps: Option<f64>,
    pub concurrency: Option<usize>,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    pub requests: usize,
    pub ok: usize,
    pub failed: usize,
    pub success_pct: Option<f64>,
    pub offered_qps: f64,
    pub achieved_qps: f64,
    pub request_rate: f64,
    /// Output tokens of successful requests completed in the window, per second.
    pub output_tokens_per_s: f64,
    /// Most requests in flight at once (from sent/end intervals).
    pub max_in_flight: usize,
    pub ttft_ms: Vec<Percentile>,
    pub e2e_ms: Vec<Percentile>,
    pub latency_from_schedule_ms: Vec<Percentile>,
    /// Schedule lag: `sent − scheduled`.
    pub queue_ms: Vec<Percentile>,
    /// Its p99, whatever `--percentiles` asked for (the client-bound check reads it).
    #[serde(default)]
    pub queue_p99_ms: Option<f64>,
    pub output_tps: Vec<Percentile>,
    pub errors: Vec<KindCount>,
    /// count/mean/std/min/p25…/max of TTFT, TPOT, latency, input turns, input tokens, output
    /// tokens and output chunks over the successful requests.
    pub statistics: Vec<NamedStats>,
    /// Why the client, not the server, may have shaped this level (see [`client_bound`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_bound: Vec<String>,
}

/// A level asking for more than this share of the client's measured ceiling is flagged.
pub const CLIENT_CEILING_SHARE: f64 = 0.5;
/// A level whose schedule lag p99 is above this (ms) is flagged: requests went out late.
pub const CLIENT_LAG_P99_MS: f64 = 10.0;

/// Why `level`'s numbers may be the client's rather than the server's: it offered more than
/// half the requests/s or received more than half the tokens/s the client managed against a
/// server that costs nothing, or its requests left late.
pub fn client_bound(level: &LevelSummary, calibration: Option<&ClientCalibration>) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(c) = calibration {
        let offered = level.offered_qps.max(level.request_rate);
        if offered > CLIENT_CEILING_SHARE * c.requests_per_s {
            why.push(format!(
                "{offered:.0} requests/s is more than half the client's measured ceiling ({:.0}/s)",
                c.requests_per_s
            ));
        }
        if level.output_tokens_per_s > CLIENT_CEILING_SHARE * c.chunks_per_s {
            why.push(format!(
                "{:.0} streamed tokens/s is more than half the client's measured ceiling ({:.0}/s)",
                level.output_tokens_per_s, c.chunks_per_s
            ));
        }
    }
    if let Some(lag) = level.queue_p99_ms.filter(|v| *v > CLIENT_LAG_P99_MS) {
        why.push(format!("schedule lag p99 {lag:.1} ms (> {CLIENT_LAG_P99_MS} ms): requests went out late"));
    }
    why
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saturation {
    pub level: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub mode: String,
    pub workload: String,
    pub percentiles: Vec<f64>,
    pub levels: Vec<LevelSummary>,
    /// First level (by load) where success < 95 %, achieved < 90 % of target, or p99 TTFT >
    /// `saturation_ttft_factor` × the lowest level's (and at least `saturation_ttft_floor_ms` more).
    pub saturation: Option<Saturation>,
    /// Label of the highest level below the saturation point.
    pub highest_sustainable: Option<String>,
    pub highest_sustainable_qps: Option<f64>,
    pub recommendation: String,
}

/// `None` unless the manifest describes a multi-user run.
pub fn summarize_load(records: &[TurnRecord], manifest: &Manifest) -> Option<LoadSummary> {
    let mut builder = LoadBuilder::new(manifest)?;
    for r in records {
        builder.push(r);
    }
    Some(builder.finish(manifest))
}

/// The load summary taken one record at a time: one [`LevelAcc`] per level window.
pub struct LoadBuilder {
    settings: LoadSettings,
    levels: Vec<LevelAcc>,
}

impl LoadBuilder {
    /// `None` unless the manifest describes a multi-user run.
    pub fn new(manifest: &Manifest) -> Option<Self> {
        let settings = LoadSettings::from_manifest(manifest)?;
        let levels = settings.levels.iter().map(|w| LevelAcc::new(w, &settings)).collect();
        Some(LoadBuilder { settings, levels })
    }

    pub fn push(&mut self, r: &TurnRecord) {
        for level in &mut self.levels {
            level.push(r);
        }
    }

    pub fn finish(self, manifest: &Manifest) -> LoadSummary {
        let settings = self.settings;
        let levels: Vec<LevelSummary> = self
            .levels
            .into_iter()
            .map(|acc| {
                let mut level = acc.finish(&settings.percentiles);
                level.client_bound = client_bound(&level, manifest.client_calibration.as_ref());
                level
            })
            .collect();
        let (saturation, sustainable) =
            find_saturation(&levels, settings.saturation_ttft_factor, settings.saturation_ttft_floor_ms);
        let highest_sustainable_qps = sustainable.map(|l| l.target_qps.unwrap_or(l.achieved_qps));
        let recommendation = recommend(saturation.as_ref(), sustainable, &levels);
        LoadSummary {
            mode: settings.mode.clone(),
            workload: settings.workload.clone(),
            percentiles: settings.percentiles.clone(),
            highest_sustainable: sustainable.map(|l| l.label.clone()),
            highest_sustainable_qps,
            levels,
            saturation,
            recommendation,
        }
    }
}

/// The value at percentile `p` of a list, if present.
pub fn at(list: &[Percentile], p: f64) -> Option<f64> {
    list.iter().find(|x| (x.p - p).abs() < 1e-9).map(|x| x.value)
}

pub fn error_kind(r: &TurnRecord) -> String {
    match r.http_status {
        Some(code) if !r.status.is_ok() => format!("http_{code}"),
        _ => r.status.as_str().to_string(),
    }
}

/// Most intervals `[sent, end)` overlapping at one instant.
pub fn max_in_flight<'a>(records: impl IntoIterator<Item = &'a TurnRecord>) -> usize {
    max_in_flight_of(records.into_iter().map(|r| (r.timing.sent_ms, r.timing.end_ms)).collect())
}

/// Most intervals `[sent, end)` overlapping at one instant.
fn max_in_flight_of(intervals: Vec<(f64, f64)>) -> usize {
    let mut events: Vec<(f64, i32)> = Vec::with_capacity(intervals.len() * 2);
    for (sent, end) in intervals {
        events.push((sent, 1));
        events.push((end, -1));
    }
    // Ends before starts at the same instant: back-to-back requests do not overlap.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

pub fn level_summary(records: &[TurnRecord], w: &LevelWindow, s: &LoadSettings) -> LevelSummary {
    let mut acc = LevelAcc::new(w, s);
    for r in records {
        acc.push(r);
    }
    acc.finish(&s.percentiles)
}

/// One level's statistics, taken one record at a time (see the module docs for what counts).
/// It keeps each request's `[sent, end)` for the most in flight (16 bytes a request) and
/// [`Distribution`]s for the rest.
pub struct LevelAcc {
    window: LevelWindow,
    /// Measured window `[start, end)`, ms.
    start_ms: f64,
    end_ms: f64,
    measured: usize,
    ok: usize,
    offered: usize,
    achieved: usize,
    done: usize,
    out_tokens: u64,
    errors: BTreeMap<String, usize>,
    in_flight: Vec<(f64, f64)>,
    ttft: Distribution,
    tpot: Distribution,
    latency: Distribution,
    input_turns: Distribution,
    input_tokens: Distribution,
    output_tokens: Distribution,
    output_chunks: Distribution,
    e2e: Distribution,
    output_tps: Distribution,
    queue: Distribution,
}

impl LevelAcc {
    pub fn new(w: &LevelWindow, s: &LoadSettings) -> Self {
        let start_ms = w.start_ms + s.trim_warmup_s * 1000.0;
        let end_ms = (w.stop_ms - s.trim_cooldown_s * 1000.0).max(start_ms);
        LevelAcc {
            window: w.clone(),
            start_ms,
            end_ms,
            measured: 0,
            ok: 0,
            offered: 0,
            achieved: 0,
            done: 0,
            out_tokens: 0,
            errors: BTreeMap::new(),
            in_flight: Vec::new(),
            ttft: Distribution::new(),
            tpot: Distribution::new(),
            latency: Distribution::new(),
            input_turns: Distribution::new(),
            input_tokens: Distribution::new(),
            output_tokens: Distribution::new(),
            output_chunks: Distribution::new(),
            e2e: Distribution::new(),
            output_tps: Distribution::new(),
            queue: Distribution::new(),
        }
    }

    /// Takes any record: those of other levels and warm-ups are left out here.
    pub fn push(&mut self, r: &TurnRecord) {
        if r.warmup || r.level.as_deref() != Some(self.window.label.as_str()) {
            return;
        }
        let ok = r.status.is_ok();
        self.in_flight.push((r.timing.sent_ms, r.timing.end_ms));
        if ok && r.timing.end_ms >= self.start_ms && r.timing.end_ms <= self.end_ms {
            self.done += 1;
            self.out_tokens += r.usage.completion_tokens.unwrap_or(0);
            if r.turn == 1 {
                self.achieved += 1;
            }
        }
        if !(r.timing.scheduled_ms >= self.start_ms && r.timing.scheduled_ms < self.end_ms) {
            return;
        }
        self.measured += 1;
        self.offered += usize::from(r.turn == 1);
        self.queue.push(r.derived.queue_ms);
        if !ok {
            *self.errors.entry(error_kind(r)).or_default() += 1;
            return;
        }
        self.ok += 1;
        let opt = |v: Option<u64>| v.map_or(f64::NAN, |n| n as f64);
        self.ttft.push(r.derived.ttft_ms.unwrap_or(f64::NAN));
        self.tpot.push(r.derived.tpot_ms.unwrap_or(f64::NAN));
        self.latency.push(r.derived.latency_from_schedule_ms);
        self.input_turns.push(r.turn as f64);
        self.input_tokens.push(opt(r.usage.prompt_tokens));
        self.output_tokens.push(opt(r.usage.completion_tokens));
        self.output_chunks.push(r.output_chunks as f64);
        self.e2e.push(r.derived.e2e_ms);
        self.output_tps.push(r.derived.output_tps.unwrap_or(f64::NAN));
    }

    pub fn finish(mut self, ps: &[f64]) -> LevelSummary {
        let w = &self.window;
        let window_s = (self.end_ms - self.start_ms) / 1000.0;
        let per_s = |n: f64| if window_s > 0.0 { n / window_s } else { 0.0 };
        let mut errors: Vec<KindCount> = self.errors.into_iter().map(|(kind, count)| KindCount { kind, count }).collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));
        let stat = |name: &str, d: &mut Distribution| d.stats().map(|stats| NamedStats { name: name.into(), stats });
        let statistics = [
            stat("ttft_ms", &mut self.ttft),
            stat("tpot_ms", &mut self.tpot),
            stat("latency_ms", &mut self.latency),
            stat("input_turns", &mut self.input_turns),
            stat("input_tokens", &mut self.input_tokens),
            stat("output_tokens", &mut self.output_tokens),
            stat("output_chunks", &mut self.output_chunks),
        ]
        .into_iter()
        .flatten()
        .collect();
        let percentiles = |d: &mut Distribution| -> Vec<Percentile> {
            ps.iter().filter_map(|&p| d.percentile(p).map(|value| Percentile { p, value })).collect()
        };
        LevelSummary {
            label: w.label.clone(),
            target_qps: w.target_qps,
            concurrency: w.concurrency,
            window_s,
            requests: self.measured,
            ok: self.ok,
            failed: self.measured - self.ok,
            success_pct: (self.measured > 0).then(|| self.ok as f64 / self.measured as f64 * 100.0),
            offered_qps: per_s(self.offered as f64),
            achieved_qps: per_s(self.achieved as f64),
            request_rate: per_s(self.done as f64),
            output_tokens_per_s: per_s(self.out_tokens as f64),
            max_in_flight: max_in_flight_of(self.in_flight),
            ttft_ms: percentiles(&mut self.ttft),
            e2e_ms: percentiles(&mut self.e2e),
            latency_from_schedule_ms: percentiles(&mut self.latency),
            queue_ms: percentiles(&mut self.queue),
            output_tps: percentiles(&mut self.output_tps),
            errors,
            statistics,
            queue_p99_ms: self.queue.percentile(99.0),
            client_bound: Vec::new(),
        }
    }
}

/// p99 TTFT of a level (exact, whatever percentiles were asked for).
fn p99_ttft(l: &LevelSummary) -> Option<f64> {
    l.statistics.iter().find(|s| s.name == "ttft_ms").map(|s| s.stats.p99)
}

/// Levels ordered by load: open-loop levels by target rate when there are any (closed-loop
/// calibration levels of `--sweep auto` are left out), else closed-loop levels by concurrency.
fn by_load(levels: &[LevelSummary]) -> Vec<&LevelSummary> {
    let mut open: Vec<&LevelSummary> = levels.iter().filter(|l| l.target_qps.is_some()).collect();
    if !open.is_empty() {
        open.sort_by(|a, b| a.target_qps.unwrap_or(0.0).total_cmp(&b.target_qps.unwrap_or(0.0)));
        return open;
    }
    let mut closed: Vec<&LevelSummary> = levels.iter().collect();
    closed.sort_by_key(|l| l.concurrency.unwrap_or(0));
    closed
}

/// Why `level` is saturated (empty: it is not).
pub fn saturation_reasons(level: &LevelSummary, baseline_p99_ttft: Option<f64>, factor: f64, floor_ms: f64) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(s) = level.success_pct.filter(|s| *s < 95.0) {
        reasons.push(format!("success {s:.1} % < 95 %"));
    }
    if let Some(t) = level.target_qps.filter(|t| level.achieved_qps < 0.9 * t) {
        reasons.push(format!("achieved {:.2}/s < 90 % of target {t}/s", level.achieved_qps));
    }
    if let (Some(base), Some(p99)) = (baseline_p99_ttft, p99_ttft(level)) {
        if base > 0.0 && p99 > factor * base && p99 - base >= floor_ms {
            reasons.push(format!("p99 TTFT {p99:.0} ms > {factor} × low-load {base:.0} ms"));
        }
    }
    reasons
}

/// A level whose p99 TTFT or E2E latency is more than this many times the low-load median…
pub const TAIL_FACTOR: f64 = 10.0;
/// …and at least this many milliseconds above it is never sustainable, whatever else holds (a
/// single level has no lower one to compare with; its own best median stands in for low load).
pub const TAIL_FLOOR_MS: f64 = 1000.0;

fn stat_of<'a>(l: &'a LevelSummary, name: &str) -> Option<&'a Stats> {
    l.statistics.iter().find(|s| s.name == name).map(|s| &s.stats)
}

/// The lowest median of `name` over the levels: the run's low-load value.
fn low_load_median(levels: &[LevelSummary], name: &str) -> Option<f64> {
    levels.iter().filter_map(|l| stat_of(l, name).map(|s| s.p50)).filter(|v| v.is_finite()).reduce(f64::min)
}

/// Why `level`'s tail says it is not sustainable: p99 TTFT or latency (E2E plus queue) far beyond
/// the low-load median (`low_ttft`, `low_latency`).
pub fn tail_reasons(level: &LevelSummary, low_ttft: Option<f64>, low_latency: Option<f64>) -> Vec<String> {
    let mut reasons = Vec::new();
    for (what, name, low) in [("TTFT", "ttft_ms", low_ttft), ("E2E latency", "latency_ms", low_latency)] {
        let (Some(low), Some(p99)) = (low, stat_of(level, name).map(|s| s.p99)) else { continue };
        if p99 > TAIL_FACTOR * low && p99 - low >= TAIL_FLOOR_MS {
            reasons.push(format!(
                "p99 {what} {p99:.0} ms is far beyond the low-load median {low:.0} ms (more than {TAIL_FACTOR} × and {TAIL_FLOOR_MS:.0} ms above)"
            ));
        }
    }
    reasons
}

/// The saturation point and the highest sustainable level below it.
pub fn find_saturation(levels: &[LevelSummary], factor: f64, floor_ms: f64) -> (Option<Saturation>, Option<&LevelSummary>) {
    let ordered = by_load(levels);
    let baseline = ordered.first().and_then(|l| p99_ttft(l));
    let (low_ttft, low_latency) = (low_load_median(levels, "ttft_ms"), low_load_median(levels, "latency_ms"));
    let mut sustainable = None;
    for (i, level) in ordered.iter().enumerate() {
        let mut reasons = saturation_reasons(level, if i == 0 { None } else { baseline }, factor, floor_ms);
        reasons.extend(tail_reasons(level, low_ttft, low_latency));
        if !reasons.is_empty() {
            return (Some(Saturation { level: level.label.clone(), reasons }), sustainable);
        }
        if level.requests > 0 {
            sustainable = Some(*level);
        }
    }
    (None, sustainable)
}

fn recommend(saturation: Option<&Saturation>, sustainable: Option<&LevelSummary>, levels: &[LevelSummary]) -> String {
    let rate = |l: &LevelSummary| match (l.target_qps, l.concurrency) {
        (Some(q), _) => format!("{q} conversations/s"),
        (None, Some(c)) => format!("concurrency {c} ({:.2} conversations/s)", l.achieved_qps),
        _ => l.label.clone(),
    };
    match (saturation, sustainable) {
        (Some(sat), Some(ok)) => {
            let at = levels.iter().find(|l| l.label == sat.level).map(rate).unwrap_or_else(|| sat.level.clone());
            format!(
                "Highest sustainable load: {} (p99 TTFT {:.0} ms). The server saturates at {} ({}). Plan for at most {}; run a finer sweep between the two for a sharper answer.",
                rate(ok),
                p99_ttft(ok).unwrap_or(f64::NAN),
                at,
                sat.reasons.join("; "),
                rate(ok)
            )
        }
        (Some(sat), None) => format!(
            "The server is saturated already at the lowest level tested ({}: {}); test lower rates.",
            sat.level,
            sat.reasons.join("; ")
        ),
        (None, Some(ok)) => format!(
            "No level saturated the server; the highest tested, {}, is sustainable. Test higher rates to find its limit.",
            rate(ok)
        ),
        (None, None) => "No level completed a request; nothing to recommend.".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Status;

    fn rec(level: &str, turn: u32, sched: f64, sent: f64, end: f64, status: Status) -> TurnRecord {
        let mut r = TurnRecord { level: Some(level.into()), turn, status, ..Default::default() };
        r.timing.scheduled_ms = sched;
        r.timing.sent_ms = sent;
        r.timing.first_token_ms = Some(sent + 10.0);
        r.timing.end_ms = end;
        r.usage.completion_tokens = Some(10);
        if !status.is_ok() {
            r.http_status = Some(503);
        }
        r.derived = r.timing.derive(Some(10));
        r
    }

    fn window(label: &str, qps: f64) -> LevelWindow {
        LevelWindow {
            label: label.into(),
            target_qps: Some(qps),
            concurrency: None,
            start_ms: 0.0,
            stop_ms: 1000.0,
            end_ms: 1100.0,
            scheduled_conversations: 0,
        }
    }

    fn settings() -> LoadSettings {
        LoadSettings {
            mode: "sweep".into(),
            percentiles: vec![50.0, 99.0],
            trim_warmup_s: 0.0,
            trim_cooldown_s: 0.0,
            saturation_ttft_factor: 3.0,
            saturation_ttft_floor_ms: 50.0,
            workload: "suite".into(),
            levels: vec![],
        }
    }

    #[test]
    fn rates_errors_and_in_flight() {
        let records = vec![
            rec("a", 1, 0.0, 1.0, 50.0, Status::Ok),
            rec("a", 1, 100.0, 150.0, 200.0, Status::Ok),
            rec("a", 2, 300.0, 300.0, 1200.0, Status::Ok), // ends after the window
            rec("a", 1, 400.0, 401.0, 402.0, Status::Http5xx),
        ];
        let l = level_summary(&records, &window("a", 3.0), &settings());
        assert_eq!(l.requests, 4);
        assert_eq!(l.failed, 1);
        assert_eq!(l.errors, vec![KindCount { kind: "http_503".into(), count: 1 }]);
        assert!((l.offered_qps - 3.0).abs() < 1e-9);
        assert!((l.achieved_qps - 2.0).abs() < 1e-9);
        assert!((l.request_rate - 2.0).abs() < 1e-9);
        assert_eq!(l.max_in_flight, 2);
        assert!((at(&l.queue_ms, 99.0).unwrap() - 48.53).abs() < 0.1);
        assert_eq!(l.statistics.len(), 6, "no prompt tokens → no input_tokens row");
    }

    #[test]
    fn saturation_is_the_first_level_that_fails_a_rule() {
        let mut s = settings();
        let mut records = Vec::new();
        for (label, qps, fail_every) in [("q1", 2.0, 0usize), ("q2", 4.0, 0), ("q3", 8.0, 2)] {
            s.levels.push(window(label, qps));
            for i in 0..(qps as usize) {
                let t = i as f64 * 1000.0 / qps;
                let status = if fail_every > 0 && i % fail_every == 0 { Status::Http5xx } else { Status::Ok };
                records.push(rec(label, 1, t, t, t + 5.0, status));
            }
        }
        let m = Manifest { settings: serde_json::json!({ "load": s }), ..Default::default() };
        let sum = summarize_load(&records, &m).unwrap();
        let sat = sum.saturation.unwrap();
        assert_eq!(sat.level, "q3");
        assert!(sat.reasons[0].contains("success"), "{:?}", sat.reasons);
        assert_eq!(sum.highest_sustainable.as_deref(), Some("q2"));
        assert_eq!(sum.highest_sustainable_qps, Some(4.0));
        assert!(sum.recommendation.contains("4 conversations/s"), "{}", sum.recommendation);
    }

    #[test]
    fn ttft_rule_needs_both_the_factor_and_the_floor() {
        let with_ttft = |label: &str, ttft: f64| -> LevelSummary {
            let mut r = rec(label, 1, 0.0, 0.0, 500.0, Status::Ok);
            r.timing.first_token_ms = Some(ttft);
            r.derived = r.timing.derive(Some(10));
            level_summary(&[r], &window(label, 1.0), &settings())
        };
        let (base, jitter, slow) = (with_ttft("a", 2.0), with_ttft("b", 8.0), with_ttft("c", 120.0));
        assert!(saturation_reasons(&jitter, p99_ttft(&base), 3.0, 50.0).is_empty(), "8 ms vs 2 ms is jitter");
        let reasons = saturation_reasons(&slow, p99_ttft(&base), 3.0, 50.0);
        assert!(reasons.len() == 1 && reasons[0].contains("p99 TTFT"), "{reasons:?}");
    }

    #[test]
    fn a_single_level_with_a_tail_far_beyond_its_median_is_never_sustainable() {
        let mut s = settings();
        s.levels.push(LevelWindow { target_qps: None, concurrency: Some(4), ..window("concurrency-4", 1.0) });
        s.levels[0].stop_ms = 100_000.0;
        // Nine of ten requests take 20 ms to the first token; one in ten waits 66 s.
        let records: Vec<TurnRecord> = (0..100)
            .map(|i| {
                let t = i as f64 * 10.0;
                let ttft = if i % 10 == 9 { 66_000.0 } else { 20.0 };
                let mut r = rec("concurrency-4", 1, t, t, t + ttft + 30.0, Status::Ok);
                r.timing.first_token_ms = Some(t + ttft);
                r.derived = r.timing.derive(Some(10));
                r
            })
            .collect();
        let m = Manifest { settings: serde_json::json!({ "load": s }), ..Default::default() };
        let sum = summarize_load(&records, &m).unwrap();
        let sat = sum.saturation.expect("the 66 s tail saturates the level");
        assert!(sat.reasons.iter().any(|r| r.contains("p99 TTFT")), "{:?}", sat.reasons);
        assert_eq!(sum.highest_sustainable, None);
        assert!(!sum.recommendation.contains("is sustainable"), "{}", sum.recommendation);
        // The same level without the slow tail is sustainable.
        let fast: Vec<TurnRecord> = records.iter().filter(|r| r.derived.ttft_ms < Some(1000.0)).cloned().collect();
        assert_eq!(summarize_load(&fast, &m).unwrap().highest_sustainable.as_deref(), Some("concurrency-4"));
    }

    #[test]
    fn warm_up_and_cool_down_are_trimmed() {
        let records: Vec<TurnRecord> =
            (0..10).map(|i| rec("a", 1, i as f64 * 100.0, i as f64 * 100.0, i as f64 * 100.0 + 5.0, Status::Ok)).collect();
        let mut s = settings();
        s.trim_warmup_s = 0.2;
        s.trim_cooldown_s = 0.3;
        let l = level_summary(&records, &window("a", 10.0), &s);
        assert_eq!(l.requests, 5, "requests scheduled in [200, 700) ms");
        assert!((l.window_s - 0.5).abs() < 1e-9);
        assert!((l.offered_qps - 10.0).abs() < 1e-9);
    }

    #[test]
    fn single_user_manifest_has_no_load_summary() {
        assert!(summarize_load(&[], &Manifest::default()).is_none());
    }
}
