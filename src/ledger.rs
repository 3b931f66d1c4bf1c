//! The cache ledger: what a server's prefix cache should have reused for a turn, and when it
//! reused less, why. Pure functions over token ids; the replayer feeds them what it observed.

use crate::core::record::{CacheObservation, ReuseFlag};

/// Expected reuse of a turn (DESIGN §5): the longest common token prefix with the previous
/// prompt, capped so one prompt token is always computed (as vLLM does), rounded down to whole
/// blocks; and a flag when the observed reuse falls short, with its likely reason.
pub fn observe_cache(
    previous: Option<&[u32]>,
    current: Option<&[u32]>,
    block_size: Option<u64>,
    observed: Option<u64>,
) -> CacheObservation {
    let mut obs = CacheObservation { block_size, ..Default::default() };
    let (Some(previous), Some(current)) = (previous, current) else { return obs };
    let common = previous.iter().zip(current).take_while(|(a, b)| a == b).count() as u64;
    obs.common_prefix_tokens = Some(common);
    obs.previous_prompt_tokens = Some(previous.len() as u64);
    let Some(block) = block_size.filter(|b| *b > 0) else { return obs };
    let reusable = common.min((current.len() as u64).saturating_sub(1));
    let expected = reusable / block * block;
    obs.expected_reusable_tokens = Some(expected);
    obs.flag = classify_reuse(observed, common, expected, previous.len() as u64, block);
    obs
}

/// Why a turn reused less than it ideally could; `None` when reuse is as expected.
pub fn classify_reuse(observed: Option<u64>, common: u64, expected: u64, previous: u64, block: u64) -> Option<ReuseFlag> {
    let observed = observed?;
    if observed + block <= expected {
        Some(ReuseFlag::Eviction)
    } else if observed < expected {
        Some(ReuseFlag::BlockRounding)
    } else if common + block <= previous {
        Some(ReuseFlag::DivergentPrompt)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_reuse_is_common_prefix_rounded_to_blocks() {
        let prev: Vec<u32> = (0..100).collect();
        let mut cur: Vec<u32> = (0..100).collect();
        cur.extend(200..250);
        let obs = observe_cache(Some(&prev), Some(&cur), Some(16), Some(96));
        assert_eq!(obs.common_prefix_tokens, Some(100));
        assert_eq!(obs.expected_reusable_tokens, Some(96));
        assert_eq!(obs.flag, None);
    }

    #[test]
    fn shortfalls_are_classified() {
        let prev: Vec<u32> = (0..100).collect();
        let mut cur: Vec<u32> = (0..100).collect();
        cur.extend(200..250);
        assert_eq!(observe_cache(Some(&prev), Some(&cur), Some(16), Some(48)).flag, Some(ReuseFlag::Eviction));
        assert_eq!(observe_cache(Some(&prev), Some(&cur), Some(16), Some(90)).flag, Some(ReuseFlag::BlockRounding));
        // A document removed near the start: the prompt diverges at token 10.
        let mut diverged: Vec<u32> = (0..10).collect();
        diverged.extend(500..600);
        let obs = observe_cache(Some(&prev), Some(&diverged), Some(16), Some(0));
        assert_eq!(obs.expected_reusable_tokens, Some(0));
        assert_eq!(obs.flag, Some(ReuseFlag::DivergentPrompt));
    }

    #[test]
    fn one_prompt_token_is_always_computed() {
        let prev: Vec<u32> = (0..64).collect();
        let cur: Vec<u32> = (0..64).collect();
        let obs = observe_cache(Some(&prev), Some(&cur), Some(16), Some(48));
        assert_eq!(obs.expected_reusable_tokens, Some(48));
        assert_eq!(obs.flag, None);
    }

    #[test]
    fn first_turn_has_no_expectation() {
        let obs = observe_cache(None, Some(&[1, 2, 3]), Some(16), Some(0));
        assert_eq!(obs.expected_reusable_tokens, None);
        assert_eq!(obs.flag, None);
    }
}
