//! One request = one `TurnRecord`, appended to `turns.jsonl` the moment it completes.
//!
//! Raw first: the record keeps raw offsets (milliseconds since the run's monotonic start) and the
//! server's own token counts; every statistic in every report is computed from these records by
//! pure functions (`analysis`). The derived per-request fields (`ttft_ms`, `tpot_ms`, …) are filled
//! by [`RequestTiming::derive`] so that CSV readers need not recompute them.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Outcome of one request (DESIGN §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Ok,
    // `snake_case` alone would give `http4xx`; DESIGN §5 and `as_str` say `http_4xx`.
    #[serde(rename = "http_4xx")]
    Http4xx,
    #[serde(rename = "http_5xx")]
    Http5xx,
    Timeout,
    Connect,
    Stream,
    /// The server's numbers are outside physical bounds (usage above the context, cached above
    /// prompt, absurd counts): the record is kept for audit but counted as a failure.
    Invalid,
    /// The stream ended properly but carried no content at all.
    Empty,
}

impl Status {
    /// Every status, in the order reports list them.
    pub const ALL: [Status; 8] = [
        Status::Ok,
        Status::Http4xx,
        Status::Http5xx,
        Status::Timeout,
        Status::Connect,
        Status::Stream,
        Status::Invalid,
        Status::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Http4xx => "http_4xx",
            Status::Http5xx => "http_5xx",
            Status::Timeout => "timeout",
            Status::Connect => "connect",
            Status::Stream => "stream",
            Status::Invalid => "invalid",
            Status::Empty => "empty",
        }
    }
    pub fn is_ok(self) -> bool {
        self == Status::Ok
    }
}

/// Where a turn sits relative to the RAG documents of its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RagPhase {
    /// No document has been injected yet.
    Before,
    /// At least one document is in the prompt.
    With,
    /// Documents were injected earlier and none is in the prompt now.
    After,
}

impl RagPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RagPhase::Before => "before",
            RagPhase::With => "with",
            RagPhase::After => "after",
        }
    }
}

/// Why a turn reused fewer prompt tokens than it could have (DESIGN §5): the reason the server
/// reused less than the ledger expected, or, when it reused what was expected, why the
/// expectation itself fell short of continuing the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ReuseFlag {
    /// The prompt itself changed before its end (a RAG document removed, a system prompt
    /// edited): the cache could not hold what was never sent.
    DivergentPrompt,
    /// The previous answer's text re-tokenizes to other ids than were generated (template or
    /// tokenizer drift), so the answer's cached blocks do not match the next prompt.
    AnswerRetokenized,
    /// The server's cache is too small: the capacity model (LRU over its KV blocks) predicted
    /// the blocks were evicted. Older results call this `eviction`.
    #[serde(alias = "eviction")]
    CapacityEviction,
    /// `vllm:num_preemptions_total` moved during the turn.
    Preemption,
    /// Other requests were in flight: per-turn accounting is inexact.
    Concurrent,
    /// The server reports prefix caching off.
    CacheOff,
    /// Short of expected by less than one block: the server rounds to another block size.
    BlockRounding,
    /// None of the above explains it (or the server reused more than an ideal cache could): a
    /// finding.
    Unexplained,
}

impl ReuseFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ReuseFlag::DivergentPrompt => "divergent_prompt",
            ReuseFlag::AnswerRetokenized => "answer_retokenized",
            ReuseFlag::CapacityEviction => "capacity_eviction",
            ReuseFlag::Preemption => "preemption",
            ReuseFlag::Concurrent => "concurrent",
            ReuseFlag::CacheOff => "cache_off",
            ReuseFlag::BlockRounding => "block_rounding",
            ReuseFlag::Unexplained => "unexplained",
        }
    }
}

/// Raw client-side timing of one streamed request. All instants are milliseconds since the
/// run's monotonic origin (`RunClock`). In `turns.jsonl` (see [`compact`]) the instants are
/// rounded to the microsecond and the chunk arrivals written as integer microsecond gaps.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "compact::TimingLine")]
pub struct RequestTiming {
    /// When the scheduler wanted the request sent (open loop); equals `sent_ms` in closed loop.
    pub scheduled_ms: f64,
    pub sent_ms: f64,
    /// First chunk carrying non-empty content.
    pub first_token_ms: Option<f64>,
    /// Last byte of the response (or the moment the request failed).
    pub end_ms: f64,
    /// Arrival of every content-bearing chunk (absolute ms), in order.
    pub content_chunk_ms: Vec<f64>,
}

/// Per-request numbers derived from `RequestTiming` and token counts (DESIGN §5 definitions).
/// Written rounded to the microsecond (tokens/s to a thousandth), unknown ones left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    #[serde(serialize_with = "compact::us")]
    pub queue_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "compact::us_opt")]
    pub ttft_ms: Option<f64>,
    #[serde(serialize_with = "compact::us")]
    pub e2e_ms: f64,
    #[serde(serialize_with = "compact::us")]
    pub latency_from_schedule_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "compact::us_opt")]
    pub tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "compact::us_opt")]
    pub itl_mean_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "compact::us_opt")]
    pub output_tps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "compact::us_opt")]
    pub decode_tps: Option<f64>,
}

/// How a record is written to `turns.jsonl`, compactly (hundreds of bytes a record, not
/// kilobytes: a long run's file stays small and quick to read back), and read back from files
/// of this and of older versions.
pub mod compact {
    use serde::{Deserialize, Serialize, Serializer};

    use super::{CacheObservation, RagPhase, RenderedPrompt, RequestTiming, Status, TurnRecord, TurnResources, Usage};

    /// Milliseconds kept to the microsecond: below any clock turnbench reads, and short to write.
    pub fn round_us(ms: f64) -> f64 {
        if ms.is_finite() && ms.abs() < 1e12 {
            whole_us(ms) / 1000.0
        } else {
            ms
        }
    }

    pub fn us<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(round_us(*v))
    }

    pub fn us_opt<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&round_us(*v)),
            None => s.serialize_none(),
        }
    }

    /// The first content chunk's instant as a line rebuilds it: `sent_ms` and the first gap,
    /// both in whole microseconds.
    fn first_chunk_us(t: &RequestTiming) -> Option<f64> {
        t.content_chunk_ms.first().map(|&at| {
            let sent = whole_us(t.sent_ms);
            (sent + gap_us(sent, whole_us(at)) as f64) / 1000.0
        })
    }

    /// An instant in milliseconds, in whole microseconds.
    fn whole_us(ms: f64) -> f64 {
        (ms * 1000.0).round()
    }

    /// The gap a line writes from `previous_us` to `at_us` (whole microseconds): none when `at`
    /// is not after it or either is not finite.
    fn gap_us(previous_us: f64, at_us: f64) -> u64 {
        let gap = at_us - previous_us;
        if gap.is_finite() && gap > 0.0 { gap as u64 } else { 0 }
    }

    /// `RequestTiming` as a line holds it, borrowed (writing a record copies nothing).
    /// `chunk_gaps_us`: the first content chunk's arrival after `sent_ms`, then each next
    /// chunk's after the one before, in whole microseconds (inter-token latencies exact to the
    /// microsecond). `first_token_ms` is left out when it is the first chunk's instant (the
    /// client sets both from one clock read). Files of older versions hold the absolute
    /// `content_chunk_ms` instead; both are read.
    #[derive(Serialize)]
    struct TimingRef<'a> {
        #[serde(serialize_with = "us")]
        scheduled_ms: f64,
        #[serde(serialize_with = "us")]
        sent_ms: f64,
        #[serde(skip_serializing_if = "Option::is_none", serialize_with = "us_opt_opt")]
        first_token_ms: Option<Option<f64>>,
        #[serde(serialize_with = "us")]
        end_ms: f64,
        #[serde(skip_serializing_if = "Gaps::is_empty")]
        chunk_gaps_us: Gaps<'a>,
    }

    fn us_opt_opt<S: Serializer>(v: &Option<Option<f64>>, s: S) -> Result<S::Ok, S::Error> {
        us_opt(&v.flatten(), s)
    }

    /// Chunk instants written as microsecond gaps, computed while serializing.
    struct Gaps<'a> {
        sent_ms: f64,
        chunks: &'a [f64],
    }

    impl Gaps<'_> {
        fn is_empty(&self) -> bool {
            self.chunks.is_empty()
        }
    }

    impl Serialize for Gaps<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            // Gaps between instants rounded to the microsecond (as the reader rebuilds them),
            // so they never add up to drift.
            let mut previous = whole_us(self.sent_ms);
            let mut seq = s.serialize_seq(Some(self.chunks.len()))?;
            for &at in self.chunks {
                let at = whole_us(at);
                seq.serialize_element(&gap_us(previous, at))?;
                previous = at;
            }
            seq.end()
        }
    }

    impl Serialize for RequestTiming {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let implied = first_chunk_us(self);
            let first_token_ms = match (self.first_token_ms.map(round_us), implied) {
                (a, Some(b)) if a == Some(b) => None,
                (None, None) => None,
                (a, _) => Some(a),
            };
            TimingRef {
                scheduled_ms: self.scheduled_ms,
                sent_ms: self.sent_ms,
                first_token_ms,
                end_ms: self.end_ms,
                chunk_gaps_us: Gaps { sent_ms: self.sent_ms, chunks: &self.content_chunk_ms },
            }
            .serialize(s)
        }
    }

    /// `RequestTiming` as a line of this or an older version holds it.
    #[derive(Deserialize)]
    pub struct TimingLine {
        scheduled_ms: f64,
        sent_ms: f64,
        /// Absent: the first chunk's instant (or none without chunks); `null`: no first token
        /// although chunks came (written only then).
        #[serde(default, deserialize_with = "present")]
        first_token_ms: Option<Option<f64>>,
        end_ms: f64,
        #[serde(default)]
        chunk_gaps_us: Vec<u64>,
        #[serde(default)]
        content_chunk_ms: Vec<f64>,
    }

    /// A field that is there, `null` included (`Some(None)`); absent stays `None` (default).
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
        Option::<f64>::deserialize(d).map(Some)
    }

    impl From<TimingLine> for RequestTiming {
        fn from(l: TimingLine) -> Self {
            let content_chunk_ms = if l.chunk_gaps_us.is_empty() {
                l.content_chunk_ms
            } else {
                // As `round_us` computes an instant, so that a record read back equals the one
                // written.
                let mut at_us = whole_us(l.sent_ms);
                l.chunk_gaps_us
                    .iter()
                    .map(|gap| {
                        at_us += *gap as f64;
                        at_us / 1000.0
                    })
                    .collect()
            };
            let mut timing = RequestTiming {
                scheduled_ms: l.scheduled_ms,
                sent_ms: l.sent_ms,
                first_token_ms: None,
                end_ms: l.end_ms,
                content_chunk_ms,
            };
            timing.first_token_ms = match l.first_token_ms {
                Some(written) => written,
                None => first_chunk_us(&timing),
            };
            timing
        }
    }

    /// `output_chunks` as a line leaves it out: the number of chunk gaps (resolved by
    /// [`TurnRecord::settle`](super::TurnRecord::settle), which every read calls).
    pub(super) fn chunks_implied() -> u64 {
        u64::MAX
    }

    /// `http_status` as a line leaves it out: 200 for an `ok` record, none otherwise (resolved
    /// by `settle`).
    pub(super) fn http_implied() -> Option<u16> {
        Some(0)
    }

    /// [`TurnRecord`] as a line holds it, borrowed. Left out besides nulls, empties and
    /// `false`: `derived` (computed on read), `http_status` 200 of an `ok` record, and
    /// `output_chunks` when it is the number of chunk gaps.
    #[derive(Serialize)]
    struct TurnRef<'a> {
        test: u32,
        conversation_id: &'a str,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        tags: &'a [String],
        turn: u32,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        warmup: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        level: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rag_phase: Option<RagPhase>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        rag_actions: &'a [String],
        max_tokens: u32,
        status: Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        http_status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        timing: &'a RequestTiming,
        usage: &'a Usage,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_chunks: Option<u64>,
        cache: &'a CacheObservation,
        #[serde(skip_serializing_if = "Option::is_none")]
        resources: Option<&'a TurnResources>,
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt: Option<&'a RenderedPrompt>,
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
    }

    impl Serialize for TurnRecord {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let r = self;
            TurnRef {
                test: r.test,
                conversation_id: &r.conversation_id,
                tags: &r.tags,
                turn: r.turn,
                warmup: r.warmup,
                level: r.level.as_deref(),
                session: r.session,
                rag_phase: r.rag_phase,
                rag_actions: &r.rag_actions,
                max_tokens: r.max_tokens,
                status: r.status,
                http_status: r.http_status.filter(|&h| !(r.status.is_ok() && h == 200)),
                error: r.error.as_deref(),
                timing: &r.timing,
                usage: &r.usage,
                output_chunks: Some(r.output_chunks).filter(|&n| n != r.timing.content_chunk_ms.len() as u64),
                cache: &r.cache,
                resources: r.resources.as_ref(),
                prompt: r.prompt.as_ref(),
                shard: r.shard,
            }
            .serialize(s)
        }
    }
}

impl TurnRecord {
    /// The record as `turns.jsonl` holds it: instants to the microsecond, and `derived`
    /// computed from them (the same numbers whether a report is built during the run or from
    /// the file later).
    pub fn settle(&mut self) {
        if self.output_chunks == compact::chunks_implied() {
            self.output_chunks = self.timing.content_chunk_ms.len() as u64;
        }
        if self.http_status == compact::http_implied() {
            self.http_status = self.status.is_ok().then_some(200);
        }
        self.timing.round_to_us();
        self.derived = self.timing.derive(self.usage.completion_tokens);
    }
}

impl RequestTiming {
    /// Every instant to the microsecond ([`compact::round_us`]).
    pub fn round_to_us(&mut self) {
        use compact::round_us;
        self.scheduled_ms = round_us(self.scheduled_ms);
        self.sent_ms = round_us(self.sent_ms);
        self.end_ms = round_us(self.end_ms);
        self.first_token_ms = self.first_token_ms.map(round_us);
        for t in &mut self.content_chunk_ms {
            *t = round_us(*t);
        }
    }

    /// Moves every instant by `offset_ms` (onto another run clock).
    pub fn shift(&mut self, offset_ms: f64) {
        self.scheduled_ms += offset_ms;
        self.sent_ms += offset_ms;
        self.end_ms += offset_ms;
        if let Some(t) = &mut self.first_token_ms {
            *t += offset_ms;
        }
        for t in &mut self.content_chunk_ms {
            *t += offset_ms;
        }
    }

    /// Inter-token latencies: the gaps between consecutive content chunks.
    pub fn itl_ms(&self) -> Vec<f64> {
        self.content_chunk_ms.windows(2).map(|w| w[1] - w[0]).collect()
    }

    pub fn derive(&self, output_tokens: Option<u64>) -> Derived {
        let queue_ms = (self.sent_ms - self.scheduled_ms).max(0.0);
        let e2e_ms = self.end_ms - self.sent_ms;
        let ttft_ms = self.first_token_ms.map(|t| t - self.sent_ms);
        // The gaps' mean is the span over their count: no list to build for it.
        let itl_mean_ms = match self.content_chunk_ms.as_slice() {
            [first, .., last] => Some((last - first) / (self.content_chunk_ms.len() - 1) as f64),
            _ => None,
        };
        let (tpot_ms, decode_tps) = match (ttft_ms, output_tokens) {
            (Some(ttft), Some(n)) if n > 1 && e2e_ms > ttft => {
                let decode = e2e_ms - ttft;
                (Some(decode / (n - 1) as f64), Some((n - 1) as f64 / (decode / 1000.0)))
            }
            _ => (None, None),
        };
        let output_tps = match output_tokens {
            Some(n) if n > 0 && e2e_ms > 0.0 => Some(n as f64 / (e2e_ms / 1000.0)),
            _ => None,
        };
        Derived {
            queue_ms,
            ttft_ms,
            e2e_ms,
            latency_from_schedule_ms: e2e_ms + queue_ms,
            tpot_ms,
            itl_mean_ms,
            output_tps,
            decode_tps,
        }
    }
}

/// Token counts of one request, as the server reported them in `usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// `usage.prompt_tokens_details.cached_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
}

/// Prefix-cache accounting of one turn: what the server reports reusing and what it should have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheObservation {
    /// Delta of `vllm:prefix_cache_hits_total` over the turn (exact only with one request in flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_hits: Option<u64>,
    /// Delta of `vllm:prefix_cache_queries_total` over the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_queries: Option<u64>,
    /// Longest common token prefix with the previous prompt of this conversation followed by
    /// the tokens generated for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_prefix_tokens: Option<u64>,
    /// What an unbounded cache of everything this server was sent and generated since its start
    /// or last reset would reuse: whole blocks, the last prompt token always computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_reusable_tokens: Option<u64>,
    /// The same under the server's real capacity (LRU over `num_gpu_blocks`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_reusable_tokens: Option<u64>,
    /// Token count of the previous prompt of this conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// Where the prompt and answer token ids came from: `server` (`return_token_ids`),
    /// `tokenize` (`/tokenize`), absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<ReuseFlag>,
}

/// One request of one conversation turn. The unit of every report. Written as
/// [`compact`] says; read back only through [`read_records`], whose `settle` resolves what a
/// line leaves out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TurnRecord {
    /// Index of the test this request belongs to (one conversation = one test in single-user mode).
    pub test: u32,
    pub conversation_id: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// 1-based turn number within the conversation.
    pub turn: u32,
    /// Warm-up requests are recorded but excluded from statistics (written only when true).
    #[serde(default)]
    pub warmup: bool,
    /// Load level label (e.g. target QPS) for multi-user runs; `None` in single-user mode.
    #[serde(default)]
    pub level: Option<String>,
    /// Concurrent session / user index for multi-user runs.
    #[serde(default)]
    pub session: Option<u32>,
    #[serde(default)]
    pub rag_phase: Option<RagPhase>,
    /// RAG actions applied right before this turn, e.g. `inject:doc-a@system`, `remove:doc-a`.
    #[serde(default)]
    pub rag_actions: Vec<String>,
    pub max_tokens: u32,
    pub status: Status,
    #[serde(default = "compact::http_implied")]
    pub http_status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    pub timing: RequestTiming,
    /// Computed from `timing` and `usage` ([`TurnRecord::settle`]), so not written to
    /// `turns.jsonl`: a line holds what was measured (files of older versions that hold it are
    /// read, and it is computed again).
    #[serde(default)]
    pub derived: Derived,
    pub usage: Usage,
    #[serde(default = "compact::chunks_implied")]
    pub output_chunks: u64,
    pub cache: CacheObservation,
    /// GPU / engine CPU during the request, joined from `timeline.csv` at report time (never
    /// written to `turns.jsonl` by the run itself).
    #[serde(default)]
    pub resources: Option<TurnResources>,
    /// The prompt turnbench rendered itself (`--prompt-mode completion`); absent in chat mode,
    /// where the server applies its template.
    #[serde(default)]
    pub prompt: Option<RenderedPrompt>,
    /// The shard (`--shard I/N`) that sent this request: set by `turnbench merge` in the merged
    /// folder, absent elsewhere.
    #[serde(default)]
    pub shard: Option<u32>,
}

/// What the machine did while one request was in flight (`sent_ms` … `end_ms`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnResources {
    /// Mean / max GPU SM utilization over the devices' samples in the window.
    pub gpu_util_mean_pct: Option<f64>,
    pub gpu_util_max_pct: Option<f64>,
    /// Peak of the GPU memory in use (all devices summed per tick).
    pub gpu_memory_peak_mib: Option<f64>,
    /// Mean CPU of the engine's process tree (100 = one core).
    pub engine_cpu_mean_pct: Option<f64>,
    /// Peak `vllm:kv_cache_usage_perc` × 100.
    pub kv_cache_usage_max_pct: Option<f64>,
}

/// A prompt rendered locally with a chat template and sent to `/v1/completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenderedPrompt {
    /// Always `completion`.
    pub mode: String,
    /// Template used: a built-in name's file (`templates/chatml.jinja`) or a path.
    pub template: String,
    /// Length of the rendered prompt in characters (Unicode scalar values).
    pub chars: u64,
    /// Tokens of the rendered prompt by the server's `/tokenize`, when it offers that.
    pub tokens: Option<u64>,
    /// SHA-256 of the rendered prompt (UTF-8), hex: identical prompts have identical hashes.
    pub sha256: String,
}

/// Token counts above this are not a real request's (the largest context windows are ~10M).
pub const MAX_PLAUSIBLE_TOKENS: u64 = 100_000_000;

/// Why the server's `usage` cannot be true of a request that asked for at most `max_tokens`
/// output tokens from a model with `context` tokens of context (when known); `None`: plausible.
/// Completion tokens may exceed `max_tokens` a little (servers count a stop token), not twice
/// over.
pub fn implausible_usage(usage: &Usage, max_tokens: u32, context: Option<u64>) -> Option<String> {
    let fields = [
        ("prompt_tokens", usage.prompt_tokens),
        ("completion_tokens", usage.completion_tokens),
        ("cached_tokens", usage.cached_tokens),
    ];
    for (name, v) in fields {
        if let Some(v) = v.filter(|v| *v > MAX_PLAUSIBLE_TOKENS) {
            return Some(format!("usage.{name} = {v} is not a plausible token count (above {MAX_PLAUSIBLE_TOKENS})"));
        }
    }
    if let (Some(cached), Some(prompt)) = (usage.cached_tokens, usage.prompt_tokens) {
        if cached > prompt {
            return Some(format!("usage: cached_tokens {cached} > prompt_tokens {prompt}"));
        }
    }
    if let Some(completion) = usage.completion_tokens {
        let allowed = 2 * u64::from(max_tokens) + 16;
        if completion > allowed {
            return Some(format!(
                "usage: completion_tokens {completion} far above max_tokens {max_tokens} (more than {allowed})"
            ));
        }
    }
    if let (Some(prompt), Some(context)) = (usage.prompt_tokens, context) {
        if prompt > context {
            return Some(format!("usage: prompt_tokens {prompt} above the model's context of {context} tokens"));
        }
    }
    None
}

impl TurnRecord {
    /// Tokens the server reused for this turn: `cached_tokens` from usage, else the `/metrics`
    /// hit delta.
    pub fn observed_reuse(&self) -> Option<u64> {
        self.usage.cached_tokens.or(self.cache.server_hits)
    }
}

/// Appends records to a JSON-lines file (`turns.jsonl`, `transcripts.jsonl`, `tokens.jsonl`), one
/// unbuffered write per record, so a crash of turnbench loses nothing that completed.
pub struct RecordSink {
    path: PathBuf,
    file: File,
    written: usize,
    /// The line being written, kept between appends so that a record costs no allocation.
    line: Vec<u8>,
}

impl RecordSink {
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file, written: 0, line: Vec::new() })
    }

    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        // One write per record, straight to the file: a run killed at any moment keeps every
        // record that came back before.
        self.file
            .write_all(&self.line)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.written += 1;
        Ok(())
    }

    pub fn written(&self) -> usize {
        self.written
    }
}

/// Reads `turns.jsonl`. A truncated last line (the process died mid-write) is skipped with a
/// warning rather than failing the whole report.
pub fn read_records(path: &Path) -> Result<(Vec<TurnRecord>, Vec<String>)> {
    let mut records = Vec::new();
    let warnings = for_each_record(path, |r| {
        records.push(r);
        Ok(())
    })?;
    Ok((records, warnings))
}

/// Reads `turns.jsonl` one line at a time and hands each record (settled) to `f`: a file of a
/// million records is never held in memory. Returns the warnings (a truncated last line is
/// skipped); an invalid line elsewhere is an error naming its line and column.
pub fn for_each_record(path: &Path, mut f: impl FnMut(TurnRecord) -> Result<()>) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut warnings = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut next = String::new();
    let mut number = 0usize;
    let mut more = read_line(&mut reader, &mut line, path)?;
    while more {
        number += 1;
        // One line ahead: only the last line may be a torn write.
        more = read_line(&mut reader, &mut next, path)?;
        if !line.trim().is_empty() {
            match serde_json::from_str::<TurnRecord>(&line) {
                Ok(mut r) => {
                    r.settle();
                    f(r)?;
                }
                Err(e) if !more => {
                    warnings.push(format!("{}:{number}: skipped a truncated last record ({e})", path.display()))
                }
                Err(e) => anyhow::bail!("{}:{number}:{}: invalid record: {e}", path.display(), e.column()),
            }
        }
        std::mem::swap(&mut line, &mut next);
    }
    Ok(warnings)
}

/// One line into `buf` (cleared first); `false` at the end of the file.
fn read_line(reader: &mut impl BufRead, buf: &mut String, path: &Path) -> Result<bool> {
    buf.clear();
    Ok(reader.read_line(buf).with_context(|| format!("cannot read {}", path.display()))? > 0)
}

/// Called with every record as it is made (the run's progress).
pub type RecordObserver = std::sync::Arc<dyn Fn(&TurnRecord) + Send + Sync>;

/// What a turn sent and received, for audit and exact replay: `transcripts.jsonl` and, when the
/// token ids are known, `tokens.jsonl` (see [`crate::core::audit`]).
pub struct Audit {
    pub transcript: super::audit::Transcript,
    pub tokens: Option<super::audit::TokenIds>,
}

struct Sinks {
    turns: RecordSink,
    /// Records made so far.
    count: usize,
    /// Records kept in memory (see [`Recorder::retain_from`]): those from index `kept_from` on,
    /// or none.
    kept_from: Option<usize>,
    kept: Vec<TurnRecord>,
    /// `transcripts.jsonl` and `tokens.jsonl`.
    audit: Option<(RecordSink, RecordSink)>,
}

/// Where completed records go: appended to `turns.jsonl` at once and, unless told otherwise
/// ([`retain_from`](Self::retain_from)), kept in memory too; with
/// [`with_audit`](Self::with_audit), each turn's messages, answer and token ids go beside them.
/// Cloneable so concurrent sessions can share it.
#[derive(Clone)]
pub struct Recorder {
    inner: std::sync::Arc<std::sync::Mutex<Sinks>>,
    observer: Option<RecordObserver>,
}

impl Recorder {
    /// A recorder that keeps every record in memory (calibration, tests); a run keeps none.
    pub fn new(sink: RecordSink) -> Self {
        let sinks = Sinks { turns: sink, count: 0, kept_from: Some(0), kept: Vec::new(), audit: None };
        Self { inner: std::sync::Arc::new(std::sync::Mutex::new(sinks)), observer: None }
    }

    /// A recorder that also tells `observer` of every record.
    pub fn observed(sink: RecordSink, observer: RecordObserver) -> Self {
        Self { observer: Some(observer), ..Self::new(sink) }
    }

    /// Also writes each turn's [`Audit`] to `transcripts` and `tokens`.
    pub fn with_audit(self, transcripts: RecordSink, tokens: RecordSink) -> Self {
        super::lock(&self.inner).audit = Some((transcripts, tokens));
        self
    }

    /// Keeps in memory the records from index `from` on (those before are let go), or none:
    /// a long run's records live in `turns.jsonl` only, and the reports read them from there.
    pub fn retain_from(&self, from: Option<usize>) {
        let mut guard = super::lock(&self.inner);
        let sinks = &mut *guard;
        match (sinks.kept_from, from) {
            (Some(old), Some(new)) if new >= old => {
                let drop = (new - old).min(sinks.kept.len());
                sinks.kept.drain(..drop);
                sinks.kept_from = Some(new);
            }
            // Records let go cannot come back: keep what is kept.
            (Some(_), Some(_)) => {}
            (_, from) => {
                sinks.kept = Vec::new();
                sinks.kept_from = from.map(|f| f.max(sinks.count));
            }
        }
    }

    /// Whether the records from index `from` on are kept.
    pub fn keeps_from(&self, from: usize) -> bool {
        super::lock(&self.inner).kept_from.is_some_and(|k| k <= from)
    }

    pub fn record(&self, record: TurnRecord) -> Result<()> {
        self.record_turn(record, None)
    }

    /// Records a turn and what it sent and received.
    pub fn record_turn(&self, mut record: TurnRecord, audit: Option<Audit>) -> Result<()> {
        // Kept as `turns.jsonl` keeps it, so a report rebuilt from the file is this run's own.
        record.settle();
        if let Some(observe) = &self.observer {
            observe(&record);
        }
        let mut guard = super::lock(&self.inner);
        let sinks = &mut *guard;
        if let (Some((transcripts, tokens)), Some(audit)) = (&mut sinks.audit, audit) {
            transcripts.append(&audit.transcript)?;
            if let Some(ids) = &audit.tokens {
                tokens.append(ids)?;
            }
        }
        sinks.turns.append(&record)?;
        if sinks.kept_from.is_some_and(|from| sinks.count >= from) {
            sinks.kept.push(record);
        }
        sinks.count += 1;
        Ok(())
    }

    /// How many records so far.
    pub fn len(&self) -> usize {
        super::lock(&self.inner).count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept records from index `from` on (completion order): for a conversation's outcome
    /// line, a level's rate. Records not kept (see [`retain_from`](Self::retain_from)) are not
    /// in it.
    pub fn records_since(&self, from: usize) -> Vec<TurnRecord> {
        let guard = super::lock(&self.inner);
        let skip = guard.kept_from.map_or(0, |k| from.saturating_sub(k));
        guard.kept.get(skip..).map(<[TurnRecord]>::to_vec).unwrap_or_default()
    }

    /// Every kept record, in completion order.
    pub fn records(&self) -> Vec<TurnRecord> {
        self.records_since(0)
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn a_recorder_keeps_only_what_it_is_told_and_writes_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("turns.jsonl");
        let recorder = Recorder::new(RecordSink::create(&path).unwrap());
        let turn = |n: u32| TurnRecord { conversation_id: format!("c{n}"), turn: n, ..Default::default() };
        let ids = |rs: Vec<TurnRecord>| rs.into_iter().map(|r| r.turn).collect::<Vec<_>>();
        for n in 0..3 {
            recorder.record(turn(n)).unwrap();
        }
        assert_eq!(ids(recorder.records()), [0, 1, 2], "kept from the start by default");
        recorder.retain_from(Some(2));
        assert_eq!(ids(recorder.records()), [2], "those before 2 let go");
        assert_eq!(ids(recorder.records_since(2)), [2]);
        recorder.retain_from(None);
        for n in 3..5 {
            recorder.record(turn(n)).unwrap();
        }
        assert!(recorder.records().is_empty() && !recorder.keeps_from(0));
        recorder.retain_from(Some(6));
        for n in 5..8 {
            recorder.record(turn(n)).unwrap();
        }
        assert_eq!(ids(recorder.records_since(6)), [6, 7], "kept from the index asked for");
        assert!(recorder.keeps_from(7) && !recorder.keeps_from(5));
        assert_eq!(recorder.len(), 8);
        let mut on_disk = Vec::new();
        for_each_record(&path, |r| {
            on_disk.push(r.turn);
            Ok(())
        })
        .unwrap();
        assert_eq!(on_disk, (0..8).collect::<Vec<_>>(), "the file has every record");
    }

    #[test]
    fn the_reader_streams_and_names_the_bad_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("turns.jsonl");
        let good = serde_json::to_string(&TurnRecord { conversation_id: "a".into(), turn: 1, ..Default::default() }).unwrap();
        std::fs::write(&path, format!("{good}\n\n{good}\n{{\"torn")).unwrap();
        let mut n = 0;
        let warnings = for_each_record(&path, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("turns.jsonl:4: skipped a truncated last record"), "{}", warnings[0]);
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = for_each_record(&path, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("turns.jsonl:2:2: invalid record"), "{err}");
    }

    #[test]
    fn status_serializes_as_its_design_name() {
        for s in Status::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(serde_json::from_value::<Status>(s.as_str().into()).unwrap(), s);
        }
    }

    #[test]
    fn usage_outside_physical_bounds_is_implausible() {
        let u = |p, c, k| Usage { prompt_tokens: p, completion_tokens: c, cached_tokens: k };
        assert_eq!(implausible_usage(&u(Some(100), Some(16), Some(96)), 16, Some(4096)), None);
        assert_eq!(implausible_usage(&u(None, None, None), 16, None), None);
        let why = |p, c, k, ctx| implausible_usage(&u(p, c, k), 16, ctx).unwrap();
        assert!(why(Some(100), Some(16), Some(101), None).contains("cached_tokens 101 > prompt_tokens 100"));
        assert!(why(Some(1_000_000_000_000_000_000), Some(16), None, None).contains("prompt_tokens = 1000000000000000000"));
        assert!(why(Some(10), Some(5000), None, None).contains("far above max_tokens 16"));
        assert!(why(Some(5000), Some(16), None, Some(4096)).contains("context of 4096"));
    }
}

#[cfg(test)]
mod compact_tests {
    use super::*;

    fn record() -> TurnRecord {
        let timing = RequestTiming {
            scheduled_ms: 1000.1234567,
            sent_ms: 1000.2234567,
            first_token_ms: Some(1012.3456789),
            end_ms: 1042.9999999,
            content_chunk_ms: vec![1012.3456789, 1022.4, 1032.4000004, 1042.9],
        };
        TurnRecord {
            conversation_id: "c".into(),
            usage: Usage { completion_tokens: Some(4), ..Default::default() },
            timing,
            status: Status::Ok,
            http_status: Some(200),
            output_chunks: 4,
            ..Default::default()
        }
    }

    fn round_trip(r: &TurnRecord) -> (String, TurnRecord) {
        let line = serde_json::to_string(r).unwrap();
        let mut back: TurnRecord = serde_json::from_str(&line).unwrap();
        back.settle();
        (line, back)
    }

    #[test]
    fn what_a_line_implies_is_left_out_and_read_back() {
        let mut r = record();
        r.settle();
        let (line, back) = round_trip(&r);
        for implied in ["first_token_ms", "http_status", "output_chunks"] {
            assert!(!line.contains(implied), "{implied} is implied: {line}");
        }
        assert_eq!(back, r);
        assert_eq!(back.timing.first_token_ms, Some(1012.346));
        assert_eq!((back.http_status, back.output_chunks), (Some(200), 4));
    }

    #[test]
    fn what_a_line_cannot_imply_is_kept() {
        type Change = fn(&mut TurnRecord);
        let cases: [(&str, Change); 6] = [
            ("\"http_status\":200", |r| r.status = Status::Timeout),
            ("\"http_status\":201", |r| r.http_status = Some(201)),
            ("\"output_chunks\":5", |r| r.output_chunks = 5),
            ("\"first_token_ms\":1013.0", |r| r.timing.first_token_ms = Some(1013.0)),
            ("\"first_token_ms\":null", |r| r.timing.first_token_ms = None),
            ("\"output_chunks\":4", |r| r.timing.content_chunk_ms.clear()),
        ];
        for (kept, change) in cases {
            let mut r = record();
            change(&mut r);
            r.settle();
            let (line, back) = round_trip(&r);
            assert!(line.contains(kept), "{kept} must be written: {line}");
            assert_eq!(back, r, "{kept}");
        }
        // A failed request without HTTP status and without chunks stays without both.
        let mut r = record();
        r.status = Status::Connect;
        r.http_status = None;
        r.timing.first_token_ms = None;
        r.timing.content_chunk_ms.clear();
        r.output_chunks = 0;
        r.settle();
        let (line, back) = round_trip(&r);
        assert!(!line.contains("http_status") && !line.contains("first_token_ms") && !line.contains("output_chunks"), "{line}");
        assert_eq!(back, r);
    }

    #[test]
    fn a_record_reads_back_as_it_was_kept() {
        let mut r = record();
        r.settle();
        assert_eq!(r.timing.sent_ms, 1000.223);
        assert_eq!(r.timing.content_chunk_ms[2], 1032.4);
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""chunk_gaps_us":[12123,10054,10000,10500]"#), "{line}");
        assert!(!line.contains("null") && !line.contains("content_chunk_ms") && !line.contains("rag_actions"), "{line}");
        assert!(!line.contains("derived") && !line.contains("warmup"), "computed and default fields stay out: {line}");
        let mut back: TurnRecord = serde_json::from_str(&line).unwrap();
        back.settle();
        assert_eq!(back, r, "bit for bit: a report from the file is the run's own");
        assert_eq!(back.timing.itl_ms(), r.timing.itl_ms());
    }

    #[test]
    fn older_lines_with_absolute_chunk_times_still_read() {
        let old = r#"{"test":1,"conversation_id":"c","tags":[],"turn":1,"warmup":false,"rag_phase":null,"rag_actions":[],"max_tokens":8,"status":"ok","http_status":200,"error":null,"timing":{"scheduled_ms":1.5,"sent_ms":1.5,"first_token_ms":3.25,"end_ms":9.0,"content_chunk_ms":[3.25,5.5,9.0]},"derived":{"queue_ms":0.0,"ttft_ms":1.75,"e2e_ms":7.5,"latency_from_schedule_ms":7.5,"tpot_ms":null,"itl_mean_ms":null,"output_tps":null,"decode_tps":null},"usage":{"prompt_tokens":null,"completion_tokens":3,"cached_tokens":null},"output_chunks":3,"cache":{"server_hits":null,"server_queries":null,"common_prefix_tokens":null,"expected_reusable_tokens":null,"previous_prompt_tokens":null,"block_size":null,"flag":null}}"#;
        let r: TurnRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.timing.content_chunk_ms, vec![3.25, 5.5, 9.0]);
        assert_eq!(r.timing.itl_ms(), vec![2.25, 3.5]);
        assert_eq!(r.derived.ttft_ms, Some(1.75));
    }
}
