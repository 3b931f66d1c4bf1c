//! The cache ledger: a model of everything a server was sent and generated since its start or
//! its last cache reset, in whole blocks, and from it what the server's prefix cache should
//! reuse for the next prompt — and, when it reuses less, why.
//!
//! vLLM's rules, which the simulator follows too: a prompt is cut into blocks whose hashes chain
//! (a hash names a whole prefix); only full blocks are cached; the last prompt token is always
//! computed; after a request, the blocks of its prompt and of its generated tokens but the last
//! (whose KV was never computed) stay cached until evicted, least recently used first.
//!
//! Two caches are modelled: an unbounded one (`expected`: what an ideal cache reuses) and, when
//! the server says how many KV blocks it has (`num_gpu_blocks`), one of that capacity
//! (`predicted`). Across conversations on one server, a shared system prompt is expected reuse.

use crate::core::blocks::{block_hashes, PrefixCache};
use crate::core::record::ReuseFlag;

/// Blocks the "unbounded" cache holds at most: far above any server's KV cache (2M blocks is
/// 32M tokens at 16 a block), and a bound on the client's memory in very long runs (about 150 MB
/// at the worst; beyond it the least recently used blocks are forgotten).
pub const MAX_LEDGER_BLOCKS: usize = 1 << 21;

/// What a server's prefix cache should hold.
pub struct Ledger {
    block_size: usize,
    unbounded: PrefixCache,
    bounded: Option<PrefixCache>,
}

/// What the ledger expects a prompt to reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    /// An unbounded cache's reuse, in tokens.
    pub expected: u64,
    /// A cache of the server's capacity, when known.
    pub predicted: Option<u64>,
}

impl Ledger {
    /// A ledger for a server with `block_size`-token blocks and, when known, `capacity` blocks.
    pub fn new(block_size: u64, capacity: Option<u64>) -> Self {
        let block_size = usize::try_from(block_size.max(1)).unwrap_or(usize::MAX);
        let bounded = capacity.map(|c| PrefixCache::new(block_size, usize::try_from(c).unwrap_or(usize::MAX)));
        Ledger { block_size, unbounded: PrefixCache::new(block_size, MAX_LEDGER_BLOCKS), bounded }
    }

    pub fn block_size(&self) -> u64 {
        self.block_size as u64
    }

    /// What `prompt` should reuse now, before it is recorded.
    pub fn expect(&self, prompt: &[u32]) -> Expectation {
        let hashes = block_hashes(prompt, self.block_size);
        Expectation {
            expected: self.unbounded.peek(&hashes, prompt.len()) as u64,
            predicted: self.bounded.as_ref().map(|c| c.peek(&hashes, prompt.len()) as u64),
        }
    }

    /// The server served `prompt` and generated `output`: their blocks are cached, in the order
    /// the server caches them (hits refreshed, then the prompt's blocks, then the answer's).
    pub fn record(&mut self, prompt: &[u32], output: &[u32]) {
        let prompt_hashes = block_hashes(prompt, self.block_size);
        let mut computed = Vec::with_capacity(prompt.len() + output.len());
        computed.extend_from_slice(prompt);
        computed.extend_from_slice(&output[..output.len().saturating_sub(1)]);
        let all = block_hashes(&computed, self.block_size);
        for cache in std::iter::once(&mut self.unbounded).chain(self.bounded.as_mut()) {
            cache.lookup(&prompt_hashes, prompt.len());
            cache.insert(&prompt_hashes);
            cache.insert(&all[prompt_hashes.len()..]);
        }
    }

    /// The server's cache was reset: nothing is cached.
    pub fn reset(&mut self) {
        self.unbounded.clear();
        if let Some(c) = &mut self.bounded {
            c.clear();
        }
    }
}

/// Length of the longest common prefix of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The previous turn of the same conversation, as the server saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousTurn {
    pub prompt_tokens: u64,
    /// What the server computed for it (and so could cache): its prompt and every generated
    /// token but the last.
    pub computed_tokens: u64,
    /// Common prefix of this turn's prompt with the previous prompt followed by its answer.
    pub common: u64,
}

impl PreviousTurn {
    /// The previous turn's `prompt` and `output` ids against this turn's `current` prompt.
    pub fn of(current: &[u32], prompt: &[u32], output: &[u32]) -> Self {
        let mut common = common_prefix(current, prompt);
        if common == prompt.len() {
            common += common_prefix(&current[common..], output);
        }
        PreviousTurn {
            prompt_tokens: prompt.len() as u64,
            computed_tokens: (prompt.len() + output.len().saturating_sub(1)) as u64,
            common: common as u64,
        }
    }
}

/// Everything the classification of one turn looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TurnFacts {
    /// What the server reports reusing (`cached_tokens`, else the `/metrics` hit delta).
    pub observed: Option<u64>,
    pub expectation: Option<Expectation>,
    pub block_size: u64,
    pub prompt_tokens: u64,
    /// The server reports prefix caching off.
    pub cache_off: bool,
    /// Other requests were in flight during this one.
    pub concurrent: bool,
    /// `vllm:num_preemptions_total` moved during the turn.
    pub preempted: bool,
    /// The generated token ids are the server's own: the ledger knows every block it holds.
    pub exact_outputs: bool,
    pub previous: Option<PreviousTurn>,
}

/// Why a turn reused less than it could, or `None` when it reused all it could.
///
/// First the server against the ledger: reusing less than expected is the cache being off, other
/// requests in flight, a preemption, the server's capacity (the capacity model predicts it), a
/// difference of less than a block (block rounding), or unexplained; reusing more than an ideal
/// cache could is unexplained too. When the server reused what was expected, the expectation
/// against the conversation: if it stopped a block or more short of the previous prompt and
/// answer, the prompt diverged (inside the previous prompt) or the answer re-tokenized (inside
/// the answer).
pub fn classify(f: &TurnFacts) -> Option<ReuseFlag> {
    let observed = f.observed?;
    let Expectation { expected, predicted } = f.expectation?;
    let block = f.block_size.max(1);
    if observed < expected {
        return Some(if f.cache_off {
            ReuseFlag::CacheOff
        } else if f.concurrent {
            ReuseFlag::Concurrent
        } else if f.preempted {
            ReuseFlag::Preemption
        } else if predicted.is_some_and(|p| p < expected && observed <= p + block) {
            ReuseFlag::CapacityEviction
        } else if expected - observed < block {
            ReuseFlag::BlockRounding
        } else {
            ReuseFlag::Unexplained
        });
    }
    if observed > expected && f.exact_outputs && !f.concurrent {
        return Some(ReuseFlag::Unexplained);
    }
    let previous = f.previous?;
    // Continuing the conversation, the cache could hold the previous turn's computed tokens.
    let potential = previous.computed_tokens.min(f.prompt_tokens.saturating_sub(1)) / block * block;
    if expected + block > potential {
        return None;
    }
    Some(if previous.common < previous.prompt_tokens { ReuseFlag::DivergentPrompt } else { ReuseFlag::AnswerRetokenized })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(r: std::ops::Range<u32>) -> Vec<u32> {
        r.collect()
    }

    #[test]
    fn a_prompt_reuses_whole_blocks_of_what_was_sent_and_generated() {
        let mut l = Ledger::new(16, None);
        let p1 = seq(0..40);
        assert_eq!(l.expect(&p1).expected, 0);
        let out = seq(100..120);
        l.record(&p1, &out);
        // Turn 2 carries turn 1's prompt, its answer, and more: 40 + 20 = 60 tokens in common,
        // of which the last generated token was never computed: 59 → 3 whole blocks.
        let mut p2 = p1.clone();
        p2.extend(&out);
        p2.extend(200..230);
        assert_eq!(l.expect(&p2).expected, 48);
        // The same prompt again: all but the last token, in whole blocks.
        assert_eq!(l.expect(&p1).expected, 32);
        l.reset();
        assert_eq!(l.expect(&p2).expected, 0);
    }

    #[test]
    fn the_capacity_model_evicts_least_recently_used_blocks() {
        let mut l = Ledger::new(4, Some(4));
        let a = seq(0..17);
        l.record(&a, &[]);
        let b = seq(1000..1017);
        l.record(&b, &[]);
        let e = l.expect(&a);
        assert_eq!(e.expected, 16, "an unbounded cache keeps a");
        assert_eq!(e.predicted, Some(0), "four blocks of b evicted a");
    }

    fn facts(observed: u64, expected: u64) -> TurnFacts {
        TurnFacts {
            observed: Some(observed),
            expectation: Some(Expectation { expected, predicted: None }),
            block_size: 16,
            prompt_tokens: 400,
            exact_outputs: true,
            ..Default::default()
        }
    }

    #[test]
    fn shortfalls_against_the_ledger_are_classified() {
        assert_eq!(classify(&facts(96, 96)), None);
        assert_eq!(classify(&facts(0, 96)), Some(ReuseFlag::Unexplained));
        assert_eq!(classify(&TurnFacts { cache_off: true, ..facts(0, 96) }), Some(ReuseFlag::CacheOff));
        assert_eq!(classify(&TurnFacts { concurrent: true, ..facts(0, 96) }), Some(ReuseFlag::Concurrent));
        assert_eq!(classify(&TurnFacts { preempted: true, ..facts(0, 96) }), Some(ReuseFlag::Preemption));
        let small = TurnFacts { expectation: Some(Expectation { expected: 96, predicted: Some(32) }), ..facts(32, 96) };
        assert_eq!(classify(&small), Some(ReuseFlag::CapacityEviction));
        assert_eq!(classify(&facts(90, 96)), Some(ReuseFlag::BlockRounding));
        assert_eq!(classify(&facts(112, 96)), Some(ReuseFlag::Unexplained), "more than an ideal cache could");
        assert_eq!(classify(&TurnFacts { exact_outputs: false, ..facts(112, 96) }), None);
    }

    #[test]
    fn a_short_expectation_says_whether_the_prompt_or_the_answer_changed() {
        let prev = |common| Some(PreviousTurn { prompt_tokens: 200, computed_tokens: 299, common });
        // Reused what was expected, and that covered the previous prompt and answer (but its
        // last, never computed, token).
        assert_eq!(classify(&TurnFacts { previous: prev(300), ..facts(288, 288) }), None);
        assert_eq!(PreviousTurn::of(&[1, 2, 3, 4, 9], &[1, 2], &[3, 4, 5]).common, 4);
        assert_eq!(PreviousTurn::of(&[1, 7], &[1, 2], &[3]).common, 1);
        // The prompt changed at token 50 (a RAG document removed).
        assert_eq!(classify(&TurnFacts { previous: prev(50), ..facts(48, 48) }), Some(ReuseFlag::DivergentPrompt));
        // The prompt matched the previous one, but not the generated answer.
        assert_eq!(classify(&TurnFacts { previous: prev(210), ..facts(208, 208) }), Some(ReuseFlag::AnswerRetokenized));
    }

    #[test]
    fn nothing_known_nothing_flagged() {
        assert_eq!(classify(&TurnFacts { observed: None, ..facts(0, 96) }), None);
        assert_eq!(classify(&TurnFacts { expectation: None, ..facts(0, 96) }), None);
    }

    /// Each boundary of the classification, on both of its sides (found by `cargo mutants`: no
    /// test pinned an edge).
    #[test]
    fn every_threshold_is_pinned_on_both_sides() {
        let with_predicted = |observed, expected, p| TurnFacts {
            expectation: Some(Expectation { expected, predicted: Some(p) }),
            ..facts(observed, expected)
        };
        // Capacity: the model predicts less than ideal, and the server got no more than a block over it.
        assert_eq!(classify(&with_predicted(48, 96, 32)), Some(ReuseFlag::CapacityEviction), "observed = predicted + block");
        assert_eq!(classify(&with_predicted(49, 96, 32)), Some(ReuseFlag::Unexplained), "a token past predicted + block");
        assert_eq!(classify(&with_predicted(0, 96, 96)), Some(ReuseFlag::Unexplained), "predicted = expected: no eviction foreseen");
        assert_eq!(classify(&with_predicted(90, 96, 96)), Some(ReuseFlag::BlockRounding), "within a block of predicted, but predicted = expected");
        // Block rounding: less than one block short, not a whole block.
        assert_eq!(classify(&facts(81, 96)), Some(ReuseFlag::BlockRounding));
        assert_eq!(classify(&facts(80, 96)), Some(ReuseFlag::Unexplained), "exactly a block short");
        // Against the conversation: the expectation a whole block short of what the previous
        // turn left (potential 96) is flagged; within a block of it is not.
        let continuing = |expected, common| TurnFacts {
            previous: Some(PreviousTurn { prompt_tokens: 80, computed_tokens: 100, common }),
            ..facts(expected, expected)
        };
        assert_eq!(classify(&continuing(96, 100)), None);
        assert_eq!(classify(&continuing(81, 100)), None, "expected + block > potential");
        assert_eq!(classify(&continuing(80, 100)), Some(ReuseFlag::AnswerRetokenized), "expected + block = potential");
        assert_eq!(classify(&continuing(64, 80)), Some(ReuseFlag::AnswerRetokenized), "common = the whole previous prompt");
        assert_eq!(classify(&continuing(64, 79)), Some(ReuseFlag::DivergentPrompt), "common stops inside the previous prompt");
    }

    #[test]
    fn the_previous_turn_counts_its_prompt_answer_and_common_prefix() {
        let prompt = seq(0..40);
        let output = seq(100..120);
        let mut current = prompt.clone();
        current.extend(&output);
        current.extend(200..210);
        let p = PreviousTurn::of(&current, &prompt, &output);
        assert_eq!(p, PreviousTurn { prompt_tokens: 40, computed_tokens: 59, common: 60 });
        // Diverging inside the answer: the prompt plus the answer's first 5 tokens.
        let mut retokenized = prompt.clone();
        retokenized.extend(100..105);
        retokenized.push(7777);
        assert_eq!(PreviousTurn::of(&retokenized, &prompt, &output).common, 45);
        // Diverging inside the prompt: the answer does not count.
        let mut divergent = seq(0..30);
        divergent.extend(100..120);
        assert_eq!(PreviousTurn::of(&divergent, &prompt, &output).common, 30);
        assert_eq!(Ledger::new(16, None).block_size(), 16);
        assert_eq!(Ledger::new(0, None).block_size(), 1, "a zero block size is one token");
    }
}
