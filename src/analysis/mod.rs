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

pub use stats::{mean, p50, percentile_sorted, sorted_finite, std_dev, Distribution, Stats};

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
    let mut builder = SummaryBuilder::new(manifest, arm_b);
    for r in records {
        builder.push(r);
    }
    builder.finish(timeline)
}

/// The summary taken one record at a time: a run's records are read from `turns.jsonl` and
/// folded in, never all held at once. What it keeps grows with the groups (turns, tags,
/// levels, conversations), not with the requests: every distribution is a [`Distribution`].
pub struct SummaryBuilder<'a> {
    manifest: &'a Manifest,
    arm_b: Option<ab::ArmB<'a>>,
    /// Keys of arm B's usable turns, and arm A's records that pair with one (A/B runs only).
    arm_b_keys: std::collections::HashSet<(String, u32)>,
    arm_a: Vec<TurnRecord>,
    total: usize,
    warmup: usize,
    ok: usize,
    last_end_ms: f64,
    errors: BTreeMap<Status, ErrorCount>,
    overall: OverallAcc,
    first: TtftGroupAcc,
    later: TtftGroupAcc,
    by_turn: BTreeMap<u32, TurnAcc>,
    by_tag: BTreeMap<String, TagAcc>,
    by_rag_phase: BTreeMap<RagPhase, PhaseAcc>,
    cache: CacheAcc,
    conversations: BTreeMap<(u32, Option<String>, Option<u32>, String), ConversationAcc>,
    /// The conversation of each test's first measured record (for the resources section).
    test_conversations: BTreeMap<u32, String>,
    load: Option<load::LoadBuilder>,
    shards: Vec<(u32, cluster::ShardAcc)>,
}

impl<'a> SummaryBuilder<'a> {
    pub fn new(manifest: &'a Manifest, arm_b: Option<ab::ArmB<'a>>) -> Self {
        let arm_b_keys = arm_b.map(|b| ab::usable_keys(b.records)).unwrap_or_default();
        SummaryBuilder {
            manifest,
            arm_b,
            arm_b_keys,
            arm_a: Vec::new(),
            total: 0,
            warmup: 0,
            ok: 0,
            last_end_ms: 0.0,
            errors: BTreeMap::new(),
            overall: OverallAcc::default(),
            first: TtftGroupAcc::default(),
            later: TtftGroupAcc::default(),
            by_turn: BTreeMap::new(),
            by_tag: BTreeMap::new(),
            by_rag_phase: BTreeMap::new(),
            cache: CacheAcc::default(),
            conversations: BTreeMap::new(),
            test_conversations: BTreeMap::new(),
            load: load::LoadBuilder::new(manifest),
            shards: manifest.merged_from.iter().map(|m| (m.index, cluster::ShardAcc::default())).collect(),
        }
    }

    /// Folds in one record (in completion order, as `turns.jsonl` holds them).
    pub fn push(&mut self, r: &TurnRecord) {
        self.total += 1;
        if r.timing.end_ms.is_finite() && r.timing.end_ms >= 0.0 {
            self.last_end_ms = self.last_end_ms.max(r.timing.end_ms);
        }
        if let Some(load) = &mut self.load {
            load.push(r);
        }
        if r.warmup {
            self.warmup += 1;
            return;
        }
        let ok = r.status.is_ok();
        for (index, acc) in &mut self.shards {
            if r.shard == Some(*index) {
                acc.push(r);
            }
        }
        self.test_conversations.entry(r.test).or_insert_with(|| r.conversation_id.clone());
        if self.arm_b.is_some() && ab::usable(r) && self.arm_b_keys.contains(&(r.conversation_id.clone(), r.turn)) {
            self.arm_a.push(r.clone());
        }
        self.by_turn.entry(r.turn).or_default().push(r);
        for t in &r.tags {
            match self.by_tag.get_mut(t.as_str()) {
                Some(acc) => acc.push(r),
                None => self.by_tag.entry(t.clone()).or_default().push(r),
            }
        }
        if let Some(p) = r.rag_phase {
            self.by_rag_phase.entry(p).or_default().push(r);
        }
        let key = (r.test, r.level.clone(), r.session, r.conversation_id.clone());
        self.conversations.entry(key).or_insert_with(|| ConversationAcc::new(r)).push(r);
        if !ok {
            let e = self.errors.entry(r.status).or_insert(ErrorCount { status: r.status, count: 0, example: None });
            e.count += 1;
            if e.example.is_none() {
                e.example = r.error.clone();
            }
            return;
        }
        self.ok += 1;
        self.overall.push(r);
        if r.turn <= 1 { &mut self.first } else { &mut self.later }.push(r);
        self.cache.push(r);
    }

    /// The summary of everything pushed.
    pub fn finish(self, timeline: Option<&Timeline>) -> Summary {
        let measured = self.total - self.warmup;
        let requests = RequestCounts {
            total: self.total,
            warmup: self.warmup,
            measured,
            ok: self.ok,
            failed: measured - self.ok,
            success_pct: success_pct(self.ok, measured),
        };
        let cache = self.cache.finish();
        let replicas = timeline.map(|t| cluster::replicas(t, self.manifest)).unwrap_or_default();
        let routing = timeline.and_then(|t| cluster::routing(&replicas, t, &cache));
        let mut errors: Vec<ErrorCount> = self.errors.into_values().collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.status.cmp(&b.status)));
        let first = self.first.finish();
        let later = self.later.finish();
        Summary {
            schema_version: SUMMARY_SCHEMA_VERSION,
            run: run_info(self.manifest, self.total, self.last_end_ms),
            requests,
            errors,
            overall: self.overall.finish(),
            first_vs_later: FirstVsLater {
                ratio_mean: ratio(first.as_ref().map(|g| g.mean_ms), later.as_ref().map(|g| g.mean_ms)),
                ratio_p50: ratio(first.as_ref().map(|g| g.p50_ms), later.as_ref().map(|g| g.p50_ms)),
                first,
                later,
            },
            by_turn: self.by_turn.into_iter().map(|(turn, acc)| acc.finish(turn)).collect(),
            by_tag: self.by_tag.into_iter().map(|(tag, acc)| acc.finish(tag)).collect(),
            by_rag_phase: self.by_rag_phase.into_iter().map(|(phase, acc)| acc.finish(phase)).collect(),
            cache,
            conversations: self.conversations.into_iter().map(|(key, acc)| acc.finish(key)).collect(),
            resources: timeline.map(|t| resources::summarize_resources(&self.test_conversations, t)),
            load: self.load.map(|l| l.finish(self.manifest)),
            ab: self.arm_b.map(|b| ab::compare_arms(&self.arm_a, b.records, ab::ARMS, b.identical_prompts)),
            replicas,
            routing,
            shards: cluster::shards(self.shards, self.manifest),
        }
    }
}

/// "incomplete run (killed at …)" for a manifest never marked completed: the time is that of
/// the last request that ended (the run's start plus the largest `end_ms` of its `recorded`
/// requests), else the start.
pub fn incomplete_note(m: &Manifest, recorded: usize, last_end_ms: f64) -> Option<String> {
    if m.completed != Some(false) {
        return None;
    }
    let last_ms = last_end_ms;
    let at = m
        .started_at
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| t.checked_add(jiff::SignedDuration::from_millis(last_ms.min(1e15) as i64)).ok())
        .map(|t| t.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string()))
        .unwrap_or_else(|| format!("{} + {:.0} s", m.started_at, last_ms / 1000.0));
    Some(format!(
        "incomplete run (killed at {at}, after {recorded} recorded requests): the run never reached its end; \
         its reports were rebuilt from what was recorded"
    ))
}

fn run_info(m: &Manifest, recorded: usize, last_end_ms: f64) -> RunInfo {
    RunInfo {
        incomplete: incomplete_note(m, recorded, last_end_ms),
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

/// Running token-weighted reuse: `Σ cached`, `Σ prompt` over records reporting both.
#[derive(Debug, Default)]
struct ReuseAcc {
    cached: u64,
    prompt: u64,
}

impl ReuseAcc {
    fn push(&mut self, r: &TurnRecord) {
        if let (Some(c), Some(p)) = (r.observed_reuse(), r.usage.prompt_tokens) {
            self.cached = self.cached.saturating_add(c);
            self.prompt = self.prompt.saturating_add(p);
        }
    }

    fn pct(&self) -> Option<f64> {
        pct(self.cached as f64, self.prompt as f64)
    }
}

fn opt_u64(v: Option<u64>) -> f64 {
    v.map_or(f64::NAN, |n| n as f64)
}

#[derive(Debug, Default)]
struct OverallAcc {
    ttft: Distribution,
    tpot: Distribution,
    itl: Distribution,
    e2e: Distribution,
    output_tps: Distribution,
    prompt: Distribution,
    cached: Distribution,
    output: Distribution,
}

impl OverallAcc {
    fn push(&mut self, r: &TurnRecord) {
        self.ttft.push(r.derived.ttft_ms.unwrap_or(f64::NAN));
        self.tpot.push(r.derived.tpot_ms.unwrap_or(f64::NAN));
        self.itl.extend(r.timing.itl_ms());
        self.e2e.push(r.derived.e2e_ms);
        self.output_tps.push(r.derived.output_tps.unwrap_or(f64::NAN));
        self.prompt.push(opt_u64(r.usage.prompt_tokens));
        self.cached.push(opt_u64(r.observed_reuse()));
        self.output.push(opt_u64(r.usage.completion_tokens));
    }

    fn finish(mut self) -> Overall {
        Overall {
            ttft_ms: self.ttft.stats(),
            tpot_ms: self.tpot.stats(),
            itl_ms: self.itl.stats(),
            e2e_ms: self.e2e.stats(),
            output_tps: self.output_tps.stats(),
            prompt_tokens: self.prompt.stats(),
            cached_tokens: self.cached.stats(),
            output_tokens: self.output.stats(),
        }
    }
}

#[derive(Debug, Default)]
struct TtftGroupAcc {
    ttft: Distribution,
    prompt: Distribution,
    per_uncached_token: Distribution,
}

impl TtftGroupAcc {
    fn push(&mut self, r: &TurnRecord) {
        self.ttft.push(ttft(r).unwrap_or(f64::NAN));
        self.prompt.push(opt_u64(r.usage.prompt_tokens));
        if let (Some(p), Some(t)) = (r.usage.prompt_tokens, ttft(r)) {
            let uncached = p.saturating_sub(r.observed_reuse().unwrap_or(0)).max(1);
            self.per_uncached_token.push(t / uncached as f64);
        }
    }

    fn finish(mut self) -> Option<TtftGroup> {
        Some(TtftGroup {
            count: self.ttft.count(),
            mean_ms: self.ttft.mean()?,
            p50_ms: self.ttft.percentile(50.0)?,
            prompt_tokens_mean: self.prompt.mean(),
            ttft_per_uncached_token_p50_ms: self.per_uncached_token.percentile(50.0),
        })
    }
}

/// Requests seen and those that succeeded: only a successful one feeds a group's distributions.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: usize,
    ok: usize,
}

impl Tally {
    /// Counts `r`; true when it succeeded.
    fn admit(&mut self, r: &TurnRecord) -> bool {
        let ok = r.status.is_ok();
        self.count += 1;
        self.ok += usize::from(ok);
        ok
    }
}

#[derive(Debug, Default)]
struct TurnAcc {
    tally: Tally,
    ttft: Distribution,
    e2e: Distribution,
    prompt: Distribution,
    cached: Distribution,
    reuse: ReuseAcc,
}

impl TurnAcc {
    fn push(&mut self, r: &TurnRecord) {
        if !self.tally.admit(r) {
            return;
        }
        self.ttft.push(ttft(r).unwrap_or(f64::NAN));
        self.e2e.push(r.derived.e2e_ms);
        self.prompt.push(opt_u64(r.usage.prompt_tokens));
        self.cached.push(opt_u64(r.observed_reuse()));
        self.reuse.push(r);
    }

    fn finish(mut self, turn: u32) -> TurnStats {
        TurnStats {
            turn,
            count: self.tally.count,
            ok: self.tally.ok,
            ttft_p50_ms: self.ttft.percentile(50.0),
            ttft_mean_ms: self.ttft.mean(),
            e2e_p50_ms: self.e2e.percentile(50.0),
            prompt_tokens_mean: self.prompt.mean(),
            cached_tokens_mean: self.cached.mean(),
            reuse_pct: self.reuse.pct(),
        }
    }
}

#[derive(Debug, Default)]
struct TagAcc {
    tally: Tally,
    ttft: Distribution,
    e2e: Distribution,
    output_tps: Distribution,
}

impl TagAcc {
    fn push(&mut self, r: &TurnRecord) {
        if !self.tally.admit(r) {
            return;
        }
        self.ttft.push(ttft(r).unwrap_or(f64::NAN));
        self.e2e.push(r.derived.e2e_ms);
        self.output_tps.push(r.derived.output_tps.unwrap_or(f64::NAN));
    }

    fn finish(mut self, tag: String) -> TagStats {
        TagStats {
            tag,
            count: self.tally.count,
            ok: self.tally.ok,
            success_pct: success_pct(self.tally.ok, self.tally.count),
            ttft_p50_ms: self.ttft.percentile(50.0),
            e2e_p50_ms: self.e2e.percentile(50.0),
            output_tps_p50: self.output_tps.percentile(50.0),
        }
    }
}

#[derive(Debug, Default)]
struct PhaseAcc {
    tally: Tally,
    ttft: Distribution,
    cached: Distribution,
    reuse: ReuseAcc,
}

impl PhaseAcc {
    fn push(&mut self, r: &TurnRecord) {
        if !self.tally.admit(r) {
            return;
        }
        self.ttft.push(ttft(r).unwrap_or(f64::NAN));
        self.cached.push(opt_u64(r.observed_reuse()));
        self.reuse.push(r);
    }

    fn finish(mut self, phase: RagPhase) -> RagPhaseStats {
        RagPhaseStats {
            phase,
            count: self.tally.count,
            ok: self.tally.ok,
            ttft_p50_ms: self.ttft.percentile(50.0),
            cached_tokens_mean: self.cached.mean(),
            reuse_pct: self.reuse.pct(),
        }
    }
}

#[derive(Debug, Default)]
struct CacheAcc {
    prompt: u64,
    cached: u64,
    expected: u64,
    /// Σ cached and Σ expected over records reporting both.
    cached_of_expected: (u64, u64),
    server_hits: u64,
    server_queries: u64,
    reuse: ReuseAcc,
    flags: BTreeMap<ReuseFlag, usize>,
}

impl CacheAcc {
    fn push(&mut self, r: &TurnRecord) {
        let add = |sum: &mut u64, v: Option<u64>| *sum = sum.saturating_add(v.unwrap_or(0));
        add(&mut self.prompt, r.usage.prompt_tokens);
        add(&mut self.cached, r.observed_reuse());
        add(&mut self.expected, r.cache.expected_reusable_tokens);
        add(&mut self.server_hits, r.cache.server_hits);
        add(&mut self.server_queries, r.cache.server_queries);
        if let (Some(c), Some(e)) = (r.observed_reuse(), r.cache.expected_reusable_tokens) {
            add(&mut self.cached_of_expected.0, Some(c));
            add(&mut self.cached_of_expected.1, Some(e));
        }
        self.reuse.push(r);
        if let Some(f) = r.cache.flag {
            *self.flags.entry(f).or_default() += 1;
        }
    }

    fn finish(self) -> CacheTotals {
        CacheTotals {
            prompt_tokens: self.prompt,
            cached_tokens: self.cached,
            expected_reusable_tokens: self.expected,
            reuse_pct: self.reuse.pct(),
            reuse_of_expected_pct: pct(self.cached_of_expected.0 as f64, self.cached_of_expected.1 as f64),
            server_hits: self.server_hits,
            server_queries: self.server_queries,
            server_hit_pct: pct(self.server_hits as f64, self.server_queries as f64),
            flags: self.flags.into_iter().map(|(flag, count)| FlagCount { flag, count }).collect(),
        }
    }
}

/// One conversation's running totals: a few numbers, whatever its length.
#[derive(Debug)]
struct ConversationAcc {
    tags: Vec<String>,
    turns: usize,
    ok: usize,
    prompt: u64,
    cached: u64,
    output: u64,
    /// TTFT of the first successful turn 1 (`Some(None)`: it had none).
    ttft_first: Option<Option<f64>>,
    ttft_later: Vec<f64>,
    e2e_sum: f64,
}

impl ConversationAcc {
    fn new(first: &TurnRecord) -> Self {
        ConversationAcc {
            tags: first.tags.clone(),
            turns: 0,
            ok: 0,
            prompt: 0,
            cached: 0,
            output: 0,
            ttft_first: None,
            ttft_later: Vec::new(),
            e2e_sum: 0.0,
        }
    }

    fn push(&mut self, r: &TurnRecord) {
        self.turns += 1;
        if !r.status.is_ok() {
            return;
        }
        if r.turn <= 1 && self.ttft_first.is_none() {
            self.ttft_first = Some(ttft(r));
        }
        self.ok += 1;
        self.prompt = self.prompt.saturating_add(r.usage.prompt_tokens.unwrap_or(0));
        self.cached = self.cached.saturating_add(r.observed_reuse().unwrap_or(0));
        self.output = self.output.saturating_add(r.usage.completion_tokens.unwrap_or(0));
        if r.turn > 1 {
            if let Some(t) = ttft(r) {
                self.ttft_later.push(t);
            }
        }
        self.e2e_sum += r.derived.e2e_ms;
    }

    fn finish(self, (test, level, session, id): (u32, Option<String>, Option<u32>, String)) -> ConversationStats {
        let failed = self.turns - self.ok;
        let status = if failed == 0 {
            ConversationStatus::Ok
        } else if self.ok == 0 {
            ConversationStatus::Failed
        } else {
            ConversationStatus::Partial
        };
        ConversationStats {
            test,
            conversation_id: id,
            level,
            session,
            tags: self.tags,
            turns: self.turns,
            turns_completed: self.ok,
            failed_turns: failed,
            prompt_tokens: self.prompt,
            cached_tokens: self.cached,
            output_tokens: self.output,
            ttft_first_ms: self.ttft_first.flatten(),
            ttft_later_mean_ms: mean_of(self.ttft_later),
            e2e_sum_ms: self.e2e_sum,
            status,
        }
    }
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
