//! Pure statistics over `TurnRecord`s: records (+ manifest) in, [`Summary`] out. No IO.
//!
//! Rules (DESIGN §1.5, §5):
//! - Warm-up records (`warmup: true`) are counted in [`RequestCounts`] but excluded from every
//!   statistic.
//! - Failed records are never dropped silently: they are counted (success rate, errors by kind,
//!   per turn / tag / phase / conversation). Latency and token statistics are computed over the
//!   *successful* measured requests only, and every [`Stats`] carries the `count` it was computed
//!   from.
//! - "Cached tokens" of a turn is [`TurnRecord::observed_reuse`]: `usage.cached_tokens`, else the
//!   server's `/metrics` hit delta. "Reuse %" of a group is `Σ cached / Σ prompt × 100` over the
//!   successful records that report both numbers (a token-weighted ratio, not a mean of ratios).
//!
//! Percentiles use linear interpolation between closest ranks, the same as numpy's default
//! (`numpy.percentile(x, p)`, method `"linear"`): for sorted `x` of length `n`, rank
//! `r = p/100 × (n−1)`, value `x[⌊r⌋] + (x[⌈r⌉] − x[⌊r⌋]) × (r − ⌊r⌋)`. The standard deviation is
//! the sample one (`numpy.std(x, ddof=1)`), 0 for a single value. Non-finite values are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::record::{RagPhase, ReuseFlag, Status, TurnRecord};
use crate::core::results::Manifest;
use crate::core::timeline::Timeline;

pub mod ab;
pub mod cluster;
pub mod load;
pub mod resources;
pub mod stats;

pub use stats::{mean, p50, percentile_sorted, sorted_finite, std_dev, Stats};

/// Version of the `summary.json` format (`docs/summary.schema.json`).
pub const SUMMARY_SCHEMA_VERSION: u32 = 1;

/// Everything a report shows, computed from the records of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub run: RunInfo,
    pub requests: RequestCounts,
    /// Failed measured requests by `status`, most frequent first.
    pub errors: Vec<ErrorCount>,
    /// Distributions over the successful measured requests.
    pub overall: Overall,
    /// Turn 1 vs turns ≥ 2: the prefix-caching indicator.
    pub first_vs_later: FirstVsLater,
    pub by_turn: Vec<TurnStats>,
    pub by_tag: Vec<TagStats>,
    pub by_rag_phase: Vec<RagPhaseStats>,
    pub cache: CacheTotals,
    pub conversations: Vec<ConversationStats>,
    /// Machine, engine and GPU per test, from `timeline.csv` (absent when the run has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::analysis::resources::ResourceSummary>,
    /// Multi-user runs only: per-level rates and latency, saturation point, recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::analysis::load::LoadSummary>,
    /// `--ab prefix-caching` runs only: TTFT with caching on and off, same prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<ab::AbSummary>,
    /// Each replica behind the endpoint (`--metrics-url`, or the `engine` labels of its
    /// `/metrics`): prefix-cache hits, KV usage, queue, preemptions, over the run and per level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<cluster::ReplicaSummary>,
    /// With replicas: their sum against the server's total and one ideal shared cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<cluster::RoutingSummary>,
    /// A merged run (`turnbench merge`): each shard's client health.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<cluster::ShardHealth>,
}

/// What the run was, copied from the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub tool_version: String,
    pub started_at: String,
    pub label: Option<String>,
    pub engine: String,
    pub model: Option<String>,
    pub endpoint: Option<String>,
    /// The server was turnbench's simulator: numbers describe the simulator, not a model.
    pub simulated: bool,
    /// Token counts used for selection were estimates, not the model's tokenizer.
    pub token_counts_estimated: bool,
    /// The run stopped before the suite ended: partial results.
    pub interrupted: bool,
    /// The run never got to its end (killed): "incomplete run (killed at …)". `None` for a run
    /// that completed (or a folder older than the marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// The server died or could not be reached, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_died: Option<String>,
    pub block_size: Option<u64>,
    pub prefix_caching: Option<bool>,
}

/// Request counts. `measured = total − warmup = ok + failed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub total: usize,
    pub warmup: usize,
    pub measured: usize,
    pub ok: usize,
    pub failed: usize,
    /// `ok / measured × 100`; `None` when nothing was measured.
    pub success_pct: Option<f64>,
}

/// Failed measured requests of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub status: Status,
    pub count: usize,
    /// The first error text seen for this kind.
    pub example: Option<String>,
}

/// Overall distributions over successful measured requests (`None`: no value at all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overall {
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    /// Every inter-chunk gap of every request, pooled.
    pub itl_ms: Option<Stats>,
    pub e2e_ms: Option<Stats>,
    pub output_tps: Option<Stats>,
    pub prompt_tokens: Option<Stats>,
    pub cached_tokens: Option<Stats>,
    pub output_tokens: Option<Stats>,
}

/// TTFT of one group of successful requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtftGroup {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    /// Mean prompt tokens of the group's requests.
    #[serde(default)]
    pub prompt_tokens_mean: Option<f64>,
    /// p50 of TTFT per prompt token the server computed (prompt − cached): comparable across
    /// prompt sizes, unlike TTFT itself.
    #[serde(default)]
    pub ttft_per_uncached_token_p50_ms: Option<f64>,
}

/// Turn 1 vs later turns. `ratio = first / later`: above 1 means later turns (whose prompt
/// prefix is cached) start faster, i.e. prefix caching pays off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirstVsLater {
    pub first: Option<TtftGroup>,
    pub later: Option<TtftGroup>,
    pub ratio_mean: Option<f64>,
    pub ratio_p50: Option<f64>,
}

/// One turn number across conversations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnStats {
    pub turn: u32,
    /// Measured requests (ok + failed).
    pub count: usize,
    pub ok: usize,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_mean_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub prompt_tokens_mean: Option<f64>,
    pub cached_tokens_mean: Option<f64>,
    pub reuse_pct: Option<f64>,
}

/// One conversation tag (a record counts once for each of its tags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagStats {
    pub tag: String,
    pub count: usize,
    pub ok: usize,
    pub success_pct: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub output_tps_p50: Option<f64>,
}

/// Turns before, with and after RAG documents in the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagPhaseStats {
    pub phase: RagPhase,
    pub count: usize,
    pub ok: usize,
    pub ttft_p50_ms: Option<f64>,
    pub cached_tokens_mean: Option<f64>,
    pub reuse_pct: Option<f64>,
}

/// Prefix-cache totals over successful measured requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheTotals {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub expected_reusable_tokens: u64,
    /// `cached / prompt × 100` over records reporting both.
    pub reuse_pct: Option<f64>,
    /// `cached / expected_reusable × 100` over records reporting both (can exceed 100 when
    /// another conversation shares the prefix).
    pub reuse_of_expected_pct: Option<f64>,
    pub server_hits: u64,
    pub server_queries: u64,
    /// `server_hits / server_queries × 100`.
    pub server_hit_pct: Option<f64>,
    /// Turns flagged as reusing less than expected, by reason.
    pub flags: Vec<FlagCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagCount {
    pub flag: ReuseFlag,
    pub count: usize,
}

/// Outcome of one conversation as replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Every measured turn succeeded.
    Ok,
    /// Some turns failed.
    Partial,
    /// No turn succeeded.
    Failed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Ok => "ok",
            ConversationStatus::Partial => "partial",
            ConversationStatus::Failed => "failed",
        }
    }
}

/// One replay of one conversation (keyed by test, level, session and conversation id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationStats {
    pub test: u32,
    pub conversation_id: String,
    pub level: Option<String>,
    pub session: Option<u32>,
    pub tags: Vec<String>,
    /// Measured turns recorded.
    pub turns: usize,
    pub turns_completed: usize,
    pub failed_turns: usize,
    /// Token totals over successful turns.
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    /// TTFT of turn 1 (if it succeeded).
    pub ttft_first_ms: Option<f64>,
    /// Mean TTFT of successful turns ≥ 2.
    pub ttft_later_mean_ms: Option<f64>,
    /// Sum of E2E over successful turns.
    pub e2e_sum_ms: f64,
    pub status: ConversationStatus,
}

fn mean_of(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    mean(&sorted_finite(values))
}

fn pct(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den * 100.0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Token-weighted reuse: `Σ cached / Σ prompt × 100` over records that report both.
pub fn reuse_pct<'a>(records: impl IntoIterator<Item = &'a TurnRecord>) -> Option<f64> {
    let (cached, prompt) = records
        .into_iter()
        .filter_map(|r| Some((r.observed_reuse()?, r.usage.prompt_tokens?)))
        .fold((0u64, 0u64), |(c, p), (rc, rp)| (c.saturating_add(rc), p.saturating_add(rp)));
    pct(cached as f64, prompt as f64)
}

/// Reuse % of a single record (`cached / prompt × 100`).
pub fn record_reuse_pct(r: &TurnRecord) -> Option<f64> {
    pct(r.observed_reuse()? as f64, r.usage.prompt_tokens? as f64)
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

fn ttft(r: &TurnRecord) -> Option<f64> {
    r.derived.ttft_ms
}

fn success_pct(ok: usize, count: usize) -> Option<f64> {
    pct(ok as f64, count as f64)
}

/// Computes the summary of a run without a timeline. Pure: same records, same summary.
pub fn summarize(records: &[TurnRecord], manifest: &Manifest) -> Summary {
    summarize_run(records, manifest, None, None)
}

/// Computes the whole summary of a run once: requests, turns, cache, load levels, the resources
/// per test when the run sampled a `timeline`, and the A/B comparison when it has an arm B. Pure.
pub fn summarize_run(
    records: &[TurnRecord],
    manifest: &Manifest,
    timeline: Option<&Timeline>,
    arm_b: Option<ab::ArmB<'_>>,
) -> Summary {
    let measured: Vec<&TurnRecord> = records.iter().filter(|r| !r.warmup).collect();
    let ok: Vec<&TurnRecord> = measured.iter().copied().filter(|r| r.status.is_ok()).collect();

    let requests = RequestCounts {
        total: records.len(),
        warmup: records.len() - measured.len(),
        measured: measured.len(),
        ok: ok.len(),
        failed: measured.len() - ok.len(),
        success_pct: success_pct(ok.len(), measured.len()),
    };

    let cache = cache_totals(&ok);
    let replicas = timeline.map(|t| cluster::replicas(t, manifest)).unwrap_or_default();
    let routing = timeline.and_then(|t| cluster::routing(&replicas, t, &cache));
    Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        run: run_info(manifest, records),
        requests,
        errors: errors(&measured),
        overall: overall(&ok),
        first_vs_later: first_vs_later(&ok),
        by_turn: by_turn(&measured),
        by_tag: by_tag(&measured),
        by_rag_phase: by_rag_phase(&measured),
        cache,
        conversations: conversations(&measured),
        resources: timeline.map(|t| resources::summarize_resources(records, t)),
        load: load::summarize_load(records, manifest),
        ab: arm_b.map(|b| ab::compare_arms(records, b.records, ab::ARMS, b.identical_prompts)),
        replicas,
        routing,
        shards: cluster::shards(records, manifest),
    }
}

/// "incomplete run (killed at …)" for a manifest never marked completed: the time is that of
/// the last request that ended (the run's start plus its last `end_ms`), else the start.
pub fn incomplete_note(m: &Manifest, records: &[TurnRecord]) -> Option<String> {
    if m.completed != Some(false) {
        return None;
    }
    let last_ms = records.iter().map(|r| r.timing.end_ms).filter(|t| t.is_finite() && *t >= 0.0).fold(0.0, f64::max);
    let at = m
        .started_at
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| t.checked_add(jiff::SignedDuration::from_millis(last_ms.min(1e15) as i64)).ok())
        .map(|t| t.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string()))
        .unwrap_or_else(|| format!("{} + {:.0} s", m.started_at, last_ms / 1000.0));
    Some(format!(
        "incomplete run (killed at {at}, after {} recorded requests): the run never reached its end; \
         its reports were rebuilt from what was recorded",
        records.len()
    ))
}

fn run_info(m: &Manifest, records: &[TurnRecord]) -> RunInfo {
    RunInfo {
        incomplete: incomplete_note(m, records),
        server_died: m.server_died.clone(),
        tool_version: m.tool_version.clone(),
        started_at: m.started_at.clone(),
        label: m.label.clone(),
        engine: m.engine.clone(),
        model: m.model.clone(),
        endpoint: m.endpoint.clone(),
        simulated: m.simulated,
        token_counts_estimated: m.token_counts_estimated,
        interrupted: m.interrupted,
        block_size: m.block_size,
        prefix_caching: m.prefix_caching,
    }
}

fn errors(measured: &[&TurnRecord]) -> Vec<ErrorCount> {
    let mut by_kind: BTreeMap<Status, ErrorCount> = BTreeMap::new();
    for r in measured.iter().filter(|r| !r.status.is_ok()) {
        let e = by_kind.entry(r.status).or_insert(ErrorCount { status: r.status, count: 0, example: None });
        e.count += 1;
        if e.example.is_none() {
            e.example = r.error.clone();
        }
    }
    let mut out: Vec<ErrorCount> = by_kind.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.status.cmp(&b.status)));
    out
}

fn overall(ok: &[&TurnRecord]) -> Overall {
    let f = |get: fn(&TurnRecord) -> Option<f64>| Stats::from_values(ok.iter().filter_map(|r| get(r)));
    Overall {
        ttft_ms: f(|r| r.derived.ttft_ms),
        tpot_ms: f(|r| r.derived.tpot_ms),
        itl_ms: Stats::from_values(ok.iter().flat_map(|r| r.timing.itl_ms())),
        e2e_ms: f(|r| Some(r.derived.e2e_ms)),
        output_tps: f(|r| r.derived.output_tps),
        prompt_tokens: f(|r| r.usage.prompt_tokens.map(|n| n as f64)),
        cached_tokens: f(|r| r.observed_reuse().map(|n| n as f64)),
        output_tokens: f(|r| r.usage.completion_tokens.map(|n| n as f64)),
    }
}

fn ttft_group<'a>(records: impl IntoIterator<Item = &'a &'a TurnRecord>) -> Option<TtftGroup> {
    let records: Vec<&TurnRecord> = records.into_iter().copied().collect();
    let v = sorted_finite(records.iter().filter_map(|r| ttft(r)));
    let prompts: Vec<f64> = records.iter().filter_map(|r| r.usage.prompt_tokens.map(|p| p as f64)).collect();
    let per_token = sorted_finite(records.iter().filter_map(|r| {
        let uncached = r.usage.prompt_tokens?.saturating_sub(r.observed_reuse().unwrap_or(0)).max(1);
        Some(ttft(r)? / uncached as f64)
    }));
    Some(TtftGroup {
        count: v.len(),
        mean_ms: mean(&v)?,
        p50_ms: percentile_sorted(&v, 50.0)?,
        prompt_tokens_mean: mean(&prompts),
        ttft_per_uncached_token_p50_ms: percentile_sorted(&per_token, 50.0),
    })
}

fn first_vs_later(ok: &[&TurnRecord]) -> FirstVsLater {
    let first = ttft_group(ok.iter().filter(|r| r.turn <= 1));
    let later = ttft_group(ok.iter().filter(|r| r.turn > 1));
    FirstVsLater {
        ratio_mean: ratio(first.as_ref().map(|g| g.mean_ms), later.as_ref().map(|g| g.mean_ms)),
        ratio_p50: ratio(first.as_ref().map(|g| g.p50_ms), later.as_ref().map(|g| g.p50_ms)),
        first,
        later,
    }
}

fn by_turn(measured: &[&TurnRecord]) -> Vec<TurnStats> {
    let mut groups: BTreeMap<u32, Vec<&TurnRecord>> = BTreeMap::new();
    for r in measured {
        groups.entry(r.turn).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(turn, rs)| {
            let ok: Vec<&TurnRecord> = rs.iter().copied().filter(|r| r.status.is_ok()).collect();
            TurnStats {
                turn,
                count: rs.len(),
                ok: ok.len(),
                ttft_p50_ms: p50(ok.iter().filter_map(|r| ttft(r))),
                ttft_mean_ms: mean_of(ok.iter().filter_map(|r| ttft(r))),
                e2e_p50_ms: p50(ok.iter().map(|r| r.derived.e2e_ms)),
                prompt_tokens_mean: mean_of(ok.iter().filter_map(|r| r.usage.prompt_tokens.map(|n| n as f64))),
                cached_tokens_mean: mean_of(ok.iter().filter_map(|r| r.observed_reuse().map(|n| n as f64))),
                reuse_pct: reuse_pct(ok.iter().copied()),
            }
        })
        .collect()
}

fn by_tag(measured: &[&TurnRecord]) -> Vec<TagStats> {
    let mut groups: BTreeMap<&str, Vec<&TurnRecord>> = BTreeMap::new();
    for r in measured {
        for t in &r.tags {
            groups.entry(t.as_str()).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .map(|(tag, rs)| {
            let ok: Vec<&TurnRecord> = rs.iter().copied().filter(|r| r.status.is_ok()).collect();
            TagStats {
                tag: tag.to_string(),
                count: rs.len(),
                ok: ok.len(),
                success_pct: success_pct(ok.len(), rs.len()),
                ttft_p50_ms: p50(ok.iter().filter_map(|r| ttft(r))),
                e2e_p50_ms: p50(ok.iter().map(|r| r.derived.e2e_ms)),
                output_tps_p50: p50(ok.iter().filter_map(|r| r.derived.output_tps)),
            }
        })
        .collect()
}

fn by_rag_phase(measured: &[&TurnRecord]) -> Vec<RagPhaseStats> {
    let mut groups: BTreeMap<RagPhase, Vec<&TurnRecord>> = BTreeMap::new();
    for r in measured {
        if let Some(p) = r.rag_phase {
            groups.entry(p).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .map(|(phase, rs)| {
            let ok: Vec<&TurnRecord> = rs.iter().copied().filter(|r| r.status.is_ok()).collect();
            RagPhaseStats {
                phase,
                count: rs.len(),
                ok: ok.len(),
                ttft_p50_ms: p50(ok.iter().filter_map(|r| ttft(r))),
                cached_tokens_mean: mean_of(ok.iter().filter_map(|r| r.observed_reuse().map(|n| n as f64))),
                reuse_pct: reuse_pct(ok.iter().copied()),
            }
        })
        .collect()
}

fn cache_totals(ok: &[&TurnRecord]) -> CacheTotals {
    let sum = |get: fn(&TurnRecord) -> Option<u64>| ok.iter().filter_map(|r| get(r)).fold(0u64, u64::saturating_add);
    let (c_exp, exp) = ok
        .iter()
        .filter_map(|r| Some((r.observed_reuse()?, r.cache.expected_reusable_tokens?)))
        .fold((0u64, 0u64), |(a, b), (c, e)| (a.saturating_add(c), b.saturating_add(e)));
    let server_hits = sum(|r| r.cache.server_hits);
    let server_queries = sum(|r| r.cache.server_queries);
    let mut flags: BTreeMap<ReuseFlag, usize> = BTreeMap::new();
    for f in ok.iter().filter_map(|r| r.cache.flag) {
        *flags.entry(f).or_default() += 1;
    }
    CacheTotals {
        prompt_tokens: sum(|r| r.usage.prompt_tokens),
        cached_tokens: sum(|r| r.observed_reuse()),
        expected_reusable_tokens: sum(|r| r.cache.expected_reusable_tokens),
        reuse_pct: reuse_pct(ok.iter().copied()),
        reuse_of_expected_pct: pct(c_exp as f64, exp as f64),
        server_hits,
        server_queries,
        server_hit_pct: pct(server_hits as f64, server_queries as f64),
        flags: flags.into_iter().map(|(flag, count)| FlagCount { flag, count }).collect(),
    }
}

type ConvKey<'a> = (u32, Option<&'a str>, Option<u32>, &'a str);

fn conversations(measured: &[&TurnRecord]) -> Vec<ConversationStats> {
    let mut groups: BTreeMap<ConvKey, Vec<&TurnRecord>> = BTreeMap::new();
    for r in measured {
        groups.entry((r.test, r.level.as_deref(), r.session, r.conversation_id.as_str())).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((test, level, session, id), rs)| {
            let ok: Vec<&TurnRecord> = rs.iter().copied().filter(|r| r.status.is_ok()).collect();
            let failed = rs.len() - ok.len();
            let status = if failed == 0 {
                ConversationStatus::Ok
            } else if ok.is_empty() {
                ConversationStatus::Failed
            } else {
                ConversationStatus::Partial
            };
            ConversationStats {
                test,
                conversation_id: id.to_string(),
                level: level.map(str::to_string),
                session,
                tags: rs[0].tags.clone(),
                turns: rs.len(),
                turns_completed: ok.len(),
                failed_turns: failed,
                prompt_tokens: ok.iter().filter_map(|r| r.usage.prompt_tokens).fold(0, u64::saturating_add),
                cached_tokens: ok.iter().filter_map(|r| r.observed_reuse()).fold(0, u64::saturating_add),
                output_tokens: ok.iter().filter_map(|r| r.usage.completion_tokens).fold(0, u64::saturating_add),
                ttft_first_ms: ok.iter().find(|r| r.turn <= 1).and_then(|r| ttft(r)),
                ttft_later_mean_ms: mean_of(ok.iter().filter(|r| r.turn > 1).filter_map(|r| ttft(r))),
                e2e_sum_ms: ok.iter().map(|r| r.derived.e2e_ms).fold(0.0, |a, b| a + b),
                status,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::record::{CacheObservation, RequestTiming, Usage};

    /// A successful record: sent at 0, first token at `ttft`, chunks every 10 ms, end at `e2e`.
    pub(crate) fn rec(conv: &str, turn: u32, ttft: f64, e2e: f64, prompt: u64, cached: u64) -> TurnRecord {
        let chunks: Vec<f64> = (0..5).map(|i| ttft + 10.0 * i as f64).collect();
        let timing = RequestTiming {
            scheduled_ms: 0.0,
            sent_ms: 0.0,
            first_token_ms: Some(ttft),
            end_ms: e2e,
            content_chunk_ms: chunks,
        };
        let usage = Usage { prompt_tokens: Some(prompt), completion_tokens: Some(10), cached_tokens: Some(cached) };
        TurnRecord {
            test: 0,
            conversation_id: conv.to_string(),
            tags: vec!["qa".to_string()],
            turn,
            max_tokens: 64,
            derived: timing.derive(usage.completion_tokens),
            timing,
            usage,
            output_chunks: 5,
            cache: CacheObservation {
                server_hits: Some(cached),
                server_queries: Some(prompt),
                expected_reusable_tokens: Some(cached),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub(crate) fn failed(conv: &str, turn: u32, status: Status, msg: &str) -> TurnRecord {
        let timing = RequestTiming { end_ms: 5.0, ..Default::default() };
        TurnRecord {
            conversation_id: conv.to_string(),
            tags: vec!["qa".to_string()],
            turn,
            status,
            http_status: Some(503),
            error: Some(msg.to_string()),
            derived: timing.derive(None),
            timing,
            ..Default::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn percentiles_and_std_match_numpy() {
        // numpy: x = [1, 2, 3, 4, 10]
        // np.percentile(x, [25, 50, 75, 90, 95, 99]) = [2.0, 3.0, 4.0, 7.6, 8.8, 9.76]
        // np.mean(x) = 4.0 ; np.std(x, ddof=1) = 3.5355339059327378
        let s = Stats::from_values([10.0, 3.0, 1.0, 4.0, 2.0, f64::NAN]).unwrap();
        assert_eq!(s.count, 5);
        assert!(close(s.mean, 4.0));
        assert!(close(s.std, 3.5355339059327378));
        assert!(close(s.min, 1.0) && close(s.max, 10.0));
        assert!(close(s.p25, 2.0));
        assert!(close(s.p50, 3.0));
        assert!(close(s.p75, 4.0));
        assert!(close(s.p90, 7.6));
        assert!(close(s.p95, 8.8));
        assert!(close(s.p99, 9.76));
        // np.percentile([1, 2, 3, 4], 50) = 2.5 ; np.percentile([1,2,3,4], 10) = 1.3
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!(close(percentile_sorted(&v, 50.0).unwrap(), 2.5));
        assert!(close(percentile_sorted(&v, 10.0).unwrap(), 1.3));
        assert_eq!(percentile_sorted(&[], 50.0), None);
        let one = Stats::from_values([7.0]).unwrap();
        assert_eq!((one.std, one.p99, one.p25), (0.0, 7.0, 7.0));
        assert!(Stats::from_values([]).is_none());
    }

    #[test]
    fn warmups_are_counted_but_excluded() {
        let mut w = rec("a", 1, 9999.0, 10000.0, 100, 0);
        w.warmup = true;
        let records = vec![w, rec("a", 1, 100.0, 200.0, 100, 0), rec("a", 2, 20.0, 120.0, 200, 96)];
        let s = summarize(&records, &Manifest::default());
        assert_eq!((s.requests.total, s.requests.warmup, s.requests.measured), (3, 1, 2));
        let ttft = s.overall.ttft_ms.unwrap();
        assert_eq!(ttft.count, 2);
        assert!(close(ttft.max, 100.0));
        assert_eq!(s.by_turn[0].count, 1);
        assert_eq!(s.conversations[0].turns, 2);
    }

    #[test]
    fn failures_are_counted_and_shown_beside_latency() {
        let records = vec![
            rec("a", 1, 100.0, 200.0, 100, 0),
            failed("a", 2, Status::Http5xx, "503 busy"),
            failed("b", 1, Status::Timeout, "timed out"),
            failed("b", 2, Status::Http5xx, "503 again"),
        ];
        let s = summarize(&records, &Manifest::default());
        assert_eq!((s.requests.ok, s.requests.failed), (1, 3));
        assert!(close(s.requests.success_pct.unwrap(), 25.0));
        assert_eq!(s.errors.len(), 2);
        assert_eq!(s.errors[0].status, Status::Http5xx);
        assert_eq!(s.errors[0].count, 2);
        assert_eq!(s.errors[0].example.as_deref(), Some("503 busy"));
        assert_eq!(s.overall.ttft_ms.as_ref().unwrap().count, 1, "latency over successful only");
        assert!(close(s.overall.e2e_ms.as_ref().unwrap().max, 200.0), "failed e2e not mixed in");
        let t2 = &s.by_turn[1];
        assert_eq!((t2.turn, t2.count, t2.ok, t2.ttft_p50_ms), (2, 2, 0, None));
        let convs: Vec<_> = s.conversations.iter().map(|c| (c.conversation_id.as_str(), c.status)).collect();
        assert_eq!(convs, [("a", ConversationStatus::Partial), ("b", ConversationStatus::Failed)]);
        assert!(close(s.by_tag[0].success_pct.unwrap(), 25.0));
    }

    #[test]
    fn first_vs_later_ratio_and_by_turn() {
        let records = vec![
            rec("a", 1, 400.0, 500.0, 1000, 0),
            rec("b", 1, 200.0, 300.0, 1000, 0),
            rec("a", 2, 50.0, 150.0, 1100, 992),
            rec("b", 2, 100.0, 200.0, 1100, 992),
            rec("a", 3, 60.0, 160.0, 1200, 1088),
        ];
        let s = summarize(&records, &Manifest::default());
        let f = &s.first_vs_later;
        assert_eq!(f.first.as_ref().unwrap().count, 2);
        assert!(close(f.first.as_ref().unwrap().mean_ms, 300.0));
        assert!(close(f.later.as_ref().unwrap().mean_ms, 70.0));
        assert!(close(f.later.as_ref().unwrap().p50_ms, 60.0));
        assert!(close(f.ratio_mean.unwrap(), 300.0 / 70.0));
        assert!(close(f.ratio_p50.unwrap(), 5.0));
        assert_eq!(s.by_turn.iter().map(|t| t.turn).collect::<Vec<_>>(), [1, 2, 3]);
        let t2 = &s.by_turn[1];
        assert!(close(t2.ttft_p50_ms.unwrap(), 75.0));
        assert!(close(t2.prompt_tokens_mean.unwrap(), 1100.0));
        assert!(close(t2.reuse_pct.unwrap(), 992.0 / 1100.0 * 100.0));
        assert!(close(s.by_turn[0].reuse_pct.unwrap(), 0.0));
        let a = &s.conversations[0];
        assert_eq!((a.turns_completed, a.prompt_tokens, a.cached_tokens), (3, 3300, 2080));
        assert_eq!(a.ttft_first_ms, Some(400.0));
        assert!(close(a.ttft_later_mean_ms.unwrap(), 55.0));
        assert!(close(a.e2e_sum_ms, 810.0));
        assert!(close(s.cache.reuse_pct.unwrap(), 3072.0 / 5400.0 * 100.0));
        // ITL pooled: 4 gaps of 10 ms per request.
        assert_eq!(s.overall.itl_ms.as_ref().unwrap().count, 20);
    }

    #[test]
    fn per_tag_and_per_rag_phase() {
        let mut r1 = rec("a", 1, 100.0, 200.0, 100, 0);
        r1.tags = vec!["rag".into(), "qa".into()];
        r1.rag_phase = Some(RagPhase::Before);
        let mut r2 = rec("a", 2, 300.0, 400.0, 1000, 96);
        r2.tags = r1.tags.clone();
        r2.rag_phase = Some(RagPhase::With);
        let mut r3 = rec("a", 3, 40.0, 140.0, 1100, 1000);
        r3.tags = r1.tags.clone();
        r3.rag_phase = Some(RagPhase::With);
        let mut r4 = rec("a", 4, 200.0, 300.0, 300, 96);
        r4.tags = r1.tags.clone();
        r4.rag_phase = Some(RagPhase::After);
        r4.cache.flag = Some(ReuseFlag::DivergentPrompt);
        let mut r5 = rec("c", 1, 80.0, 180.0, 100, 0);
        r5.tags = vec!["code".into()];
        let s = summarize(&[r1, r2, r3, r4, r5], &Manifest::default());
        let tags: Vec<_> = s.by_tag.iter().map(|t| (t.tag.as_str(), t.count)).collect();
        assert_eq!(tags, [("code", 1), ("qa", 4), ("rag", 4)]);
        assert!(close(s.by_tag[2].ttft_p50_ms.unwrap(), 150.0));
        assert!(close(s.by_tag[2].e2e_p50_ms.unwrap(), 250.0));
        let phases: Vec<_> = s.by_rag_phase.iter().map(|p| (p.phase, p.count)).collect();
        assert_eq!(phases, [(RagPhase::Before, 1), (RagPhase::With, 2), (RagPhase::After, 1)]);
        let with = &s.by_rag_phase[1];
        assert!(close(with.ttft_p50_ms.unwrap(), 170.0));
        assert!(close(with.cached_tokens_mean.unwrap(), 548.0));
        assert!(close(with.reuse_pct.unwrap(), 1096.0 / 2100.0 * 100.0));
        assert_eq!(s.cache.flags, [FlagCount { flag: ReuseFlag::DivergentPrompt, count: 1 }]);
    }

    #[test]
    fn sums_of_absurd_counts_saturate_instead_of_wrapping() {
        let a = rec("a", 1, 10.0, 20.0, u64::MAX - 1, 0);
        let b = rec("a", 2, 10.0, 20.0, u64::MAX - 1, 0);
        let s = summarize(&[a, b], &Manifest::default());
        assert_eq!(s.cache.prompt_tokens, u64::MAX);
        assert_eq!(s.conversations[0].prompt_tokens, u64::MAX);
    }

    #[test]
    fn a_manifest_never_marked_completed_is_an_incomplete_run() {
        let m = Manifest { started_at: "2026-01-02T03:04:05Z".into(), completed: Some(false), ..Default::default() };
        let s = summarize(&[rec("a", 1, 10.0, 2000.0, 10, 0)], &m);
        let note = s.run.incomplete.unwrap();
        assert!(note.starts_with("incomplete run (killed at 2026-01-02T03:04:07Z"), "{note}");
        let done = Manifest { completed: Some(true), ..m.clone() };
        assert_eq!(summarize(&[], &done).run.incomplete, None);
        assert_eq!(summarize(&[], &Manifest::default()).run.incomplete, None, "older folders: no marker, no claim");
    }

    #[test]
    fn manifest_flags_are_carried() {
        let m = Manifest {
            engine: "sim".into(),
            simulated: true,
            interrupted: true,
            token_counts_estimated: true,
            model: Some("m".into()),
            ..Default::default()
        };
        let s = summarize(&[], &m);
        assert!(s.run.simulated && s.run.interrupted && s.run.token_counts_estimated);
        assert_eq!(s.requests.success_pct, None);
        assert_eq!(s.first_vs_later.ratio_mean, None);
    }
}
