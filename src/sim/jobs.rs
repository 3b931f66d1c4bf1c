//! One admitted generation: the answer's words, the prefix cache's inserts, and the latency
//! model's time to first token. `api` admits and builds it; `sse` sends its answer.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::time::Instant;

use super::admission::Slot;
use crate::core::blocks::{block_hashes, mix64};
use super::histogram::Histogram;
use super::state::{lock, Shared};
use super::tokenizer::piece_id;

/// Filler words of the answers, with their leading space: lowercase, at most 6 letters, so each
/// word (with or without its space) is exactly one token.
const WORDS: [&str; 64] = [
    " the", " cache", " block", " token", " prefix", " model", " server", " turn", " reuse", " fast", " batch",
    " query", " answer", " memory", " layer", " kernel", " queue", " tensor", " prompt", " stream", " value", " key",
    " hit", " miss", " warm", " cold", " index", " chunk", " page", " entry", " state", " data", " input", " output",
    " length", " window", " decode", " head", " vector", " matrix", " scale", " weight", " sample", " logit",
    " softmx", " attend", " router", " node", " graph", " shard", " rank", " worker", " engine", " step", " phase",
    " time", " cost", " rate", " load", " slot", " lane", " frame", " store", " fetch",
];

/// Which endpoint a request came in on: it decides the id prefix, the answer's first word and
/// the response shape.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// A checked request, as the endpoints hand it to [`generate`].
pub(super) struct Params {
    pub(super) kind: Kind,
    pub(super) tokens: Vec<u32>,
    /// The prompt's block hashes (none with prefix caching off), computed once for routing and
    /// the replica's cache alike.
    pub(super) hashes: Vec<u64>,
    pub(super) max_tokens: Option<i64>,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// vLLM's `return_token_ids`: prompt ids in the first chunk, generated ids in every chunk.
    pub(super) return_token_ids: bool,
}

/// An admitted request: holds its running slot until the answer is done (or dropped).
pub(super) struct Job {
    pub(super) s: Arc<Shared>,
    pub(super) _slot: Slot,
    pub(super) kind: Kind,
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) tokens: Vec<u32>,
    pub(super) hashes: Vec<u64>,
    pub(super) cached: usize,
    pub(super) max_tokens: usize,
    pub(super) answer_seed: u64,
    pub(super) include_usage: bool,
    pub(super) drop_at: Option<usize>,
    pub(super) arrival: Instant,
    pub(super) return_token_ids: bool,
    /// `--retokenize-drift` chose this request: its generated ids are not its text's.
    pub(super) drift: bool,
}

impl Job {
    /// Output token `i` as text. Chat answers start without a space (they follow the template's
    /// `\n`); completions continue the prompt, so every word has its leading space.
    pub(super) fn word(&self, i: usize) -> &'static str {
        let w = WORDS[(mix64(self.answer_seed ^ i as u64) % WORDS.len() as u64) as usize];
        if i == 0 && self.kind == Kind::Chat {
            &w[1..]
        } else {
            w
        }
    }

    /// The id generated for output token `i`: the id its text tokenizes to, unless the request
    /// drifts (then another id, so the text re-tokenizes to something else).
    pub(super) fn output_id(&self, i: usize) -> u32 {
        let id = piece_id(self.word(i));
        if self.drift {
            id ^ 1
        } else {
            id
        }
    }

    pub(super) fn running(&self) -> usize {
        self.s.running.load(Relaxed).max(1)
    }

    /// Sleeps the time to first token (if any), then caches the prompt's blocks.
    pub(super) async fn prefill(&self) {
        let lat = &self.s.cfg.latency;
        if !lat.prefill_is_zero() {
            tokio::time::sleep(lat.ttft(self.tokens.len() - self.cached, self.running())).await;
        }
        if self.s.cfg.enable_prefix_caching {
            lock(&self.s.cache).insert(&self.hashes);
        }
        let t = self.arrival.elapsed().as_secs_f64();
        lock(&self.s.histograms).ttft.observe(t);
    }

    /// Caches the whole blocks of prompt + output (without the last output token) and counts
    /// the request as done, with its inter-token gaps `itl`.
    pub(super) fn finish(&self, itl: &Histogram) {
        let s = &self.s;
        if s.cfg.enable_prefix_caching {
            let mut all = Vec::with_capacity(self.tokens.len() + self.max_tokens);
            all.extend_from_slice(&self.tokens);
            all.extend((0..self.max_tokens.saturating_sub(1)).map(|i| self.output_id(i)));
            let hashes = block_hashes(&all, s.cfg.block_size);
            lock(&s.cache).insert(&hashes[self.hashes.len()..]);
        }
        s.generation_tokens.fetch_add(self.max_tokens as u64, Relaxed);
        s.success.fetch_add(1, Relaxed);
        let mut h = lock(&s.histograms);
        h.itl.merge(itl);
        h.e2e.observe(self.arrival.elapsed().as_secs_f64());
    }

    pub(super) fn usage_json(&self) -> String {
        let p = self.tokens.len();
        let c = self.max_tokens;
        format!(
            r#"{{"prompt_tokens":{p},"total_tokens":{},"completion_tokens":{c},"prompt_tokens_details":{{"cached_tokens":{}}}}}"#,
            p + c,
            self.cached
        )
    }
}
