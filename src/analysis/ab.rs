//! A/B: the same prompts with prefix caching on (arm A, live) and off (arm B, replaying arm A's
//! exact prompts). What caching saved is measured here, not inferred: TTFT on and off per turn
//! number and per conversation, and the uncached prompt tokens each arm computed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::{mean, p50};
use crate::core::record::TurnRecord;

/// The `ab` section of `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbSummary {
    /// What each arm was, A first.
    pub arms: Vec<String>,
    /// Every turn both arms ran sent the same prompt (by prompt hashes).
    pub identical_prompts: bool,
    /// Turns present in both arms and compared.
    pub compared_turns: usize,
    /// Turns ≥ 2 together: the headline.
    pub later_turns: AbGroup,
    pub first_turn: AbGroup,
    pub by_turn: Vec<AbTurn>,
    pub by_conversation: Vec<AbConversation>,
}

/// TTFT with caching on and off over a group of turns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AbGroup {
    pub count: usize,
    pub ttft_p50_on_ms: Option<f64>,
    pub ttft_p50_off_ms: Option<f64>,
    /// `(off − on) / off × 100` of the p50s.
    pub saved_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbTurn {
    pub turn: u32,
    pub count: usize,
    pub ttft_p50_on_ms: Option<f64>,
    pub ttft_p50_off_ms: Option<f64>,
    pub saved_ms: Option<f64>,
    pub saved_pct: Option<f64>,
    /// Mean prompt tokens the server computed (prompt − cached), per arm.
    pub uncached_prompt_tokens_on: Option<f64>,
    pub uncached_prompt_tokens_off: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbConversation {
    pub conversation_id: String,
    pub turns: usize,
    /// Summed TTFT over the conversation's turns, per arm.
    pub ttft_total_on_ms: f64,
    pub ttft_total_off_ms: f64,
    pub saved_pct: Option<f64>,
}

fn saved(on: Option<f64>, off: Option<f64>) -> Option<f64> {
    match (on, off) {
        (Some(on), Some(off)) if off > 0.0 => Some((off - on) / off * 100.0),
        _ => None,
    }
}

fn uncached(r: &TurnRecord) -> Option<f64> {
    Some(r.usage.prompt_tokens?.saturating_sub(r.observed_reuse().unwrap_or(0)) as f64)
}

/// The arms of `--ab prefix-caching`.
pub const ARMS: [&str; 2] = ["prefix caching on (A)", "prefix caching off (B, A's prompts)"];

/// Arm B as the summary of arm A needs it.
#[derive(Debug, Clone, Copy)]
pub struct ArmB<'a> {
    pub records: &'a [TurnRecord],
    pub identical_prompts: bool,
}

/// Whether a record takes part in the comparison: measured, successful, with a TTFT.
pub fn usable(r: &TurnRecord) -> bool {
    !r.warmup && r.status.is_ok() && r.derived.ttft_ms.is_some()
}

/// The (conversation, turn) of each usable record: what arm A's records pair with.
pub fn usable_keys(records: &[TurnRecord]) -> std::collections::HashSet<(String, u32)> {
    records.iter().filter(|r| usable(r)).map(|r| (r.conversation_id.clone(), r.turn)).collect()
}

/// Pairs the successful measured turns of both arms by (conversation, turn) and compares them.
pub fn compare_arms(on: &[TurnRecord], off: &[TurnRecord], arms: [&str; 2], identical_prompts: bool) -> AbSummary {
    let key = |r: &TurnRecord| (r.conversation_id.clone(), r.turn);
    let usable = |r: &&TurnRecord| usable(r);
    let off_by: BTreeMap<_, &TurnRecord> = off.iter().filter(usable).map(|r| (key(r), r)).collect();
    let pairs: Vec<(&TurnRecord, &TurnRecord)> =
        on.iter().filter(usable).filter_map(|a| off_by.get(&key(a)).map(|b| (a, *b))).collect();
    let ttft = |r: &TurnRecord| r.derived.ttft_ms.unwrap_or(f64::NAN);
    let group = |sel: &dyn Fn(u32) -> bool| {
        let chosen: Vec<_> = pairs.iter().filter(|(a, _)| sel(a.turn)).collect();
        let on = p50(chosen.iter().map(|(a, _)| ttft(a)));
        let off = p50(chosen.iter().map(|(_, b)| ttft(b)));
        AbGroup { count: chosen.len(), ttft_p50_on_ms: on, ttft_p50_off_ms: off, saved_pct: saved(on, off) }
    };
    let mut by_turn_map: BTreeMap<u32, Vec<(&TurnRecord, &TurnRecord)>> = BTreeMap::new();
    let mut by_conv: BTreeMap<String, Vec<(&TurnRecord, &TurnRecord)>> = BTreeMap::new();
    for (a, b) in &pairs {
        by_turn_map.entry(a.turn).or_default().push((a, b));
        by_conv.entry(a.conversation_id.clone()).or_default().push((a, b));
    }
    let by_turn = by_turn_map
        .into_iter()
        .map(|(turn, v)| {
            let on = p50(v.iter().map(|(a, _)| ttft(a)));
            let off = p50(v.iter().map(|(_, b)| ttft(b)));
            let un_on: Vec<f64> = v.iter().filter_map(|(a, _)| uncached(a)).collect();
            let un_off: Vec<f64> = v.iter().filter_map(|(_, b)| uncached(b)).collect();
            AbTurn {
                turn,
                count: v.len(),
                ttft_p50_on_ms: on,
                ttft_p50_off_ms: off,
                saved_ms: on.zip(off).map(|(on, off)| off - on),
                saved_pct: saved(on, off),
                uncached_prompt_tokens_on: mean(&un_on),
                uncached_prompt_tokens_off: mean(&un_off),
            }
        })
        .collect();
    let by_conversation = by_conv
        .into_iter()
        .map(|(id, v)| {
            let on: f64 = v.iter().map(|(a, _)| ttft(a)).sum();
            let off: f64 = v.iter().map(|(_, b)| ttft(b)).sum();
            AbConversation { conversation_id: id, turns: v.len(), ttft_total_on_ms: on, ttft_total_off_ms: off, saved_pct: saved(Some(on), Some(off)) }
        })
        .collect();
    AbSummary {
        arms: arms.iter().map(|s| s.to_string()).collect(),
        identical_prompts,
        compared_turns: pairs.len(),
        later_turns: group(&|t| t > 1),
        first_turn: group(&|t| t <= 1),
        by_turn,
        by_conversation,
    }
}

/// The sentence a report leads with.
pub fn headline(ab: &AbSummary) -> String {
    let g = &ab.later_turns;
    match (g.saved_pct, g.ttft_p50_on_ms, g.ttft_p50_off_ms) {
        (Some(s), Some(on), Some(off)) => format!(
            "Prefix caching saved {s:.1} % of TTFT on turns ≥ 2 (p50 {on:.1} ms with it, {off:.1} ms without; {} turns, same prompts{}).",
            g.count,
            if ab.identical_prompts { "" } else { " — NOT verified identical" }
        ),
        _ => "Prefix caching's saving could not be measured: no turn ≥ 2 succeeded in both arms.".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::RequestTiming;

    fn rec(conv: &str, turn: u32, ttft: f64, prompt: u64, cached: u64) -> TurnRecord {
        let timing = RequestTiming { first_token_ms: Some(ttft), end_ms: ttft + 1.0, ..Default::default() };
        TurnRecord {
            conversation_id: conv.into(),
            turn,
            derived: timing.derive(Some(1)),
            timing,
            usage: crate::core::record::Usage { prompt_tokens: Some(prompt), completion_tokens: Some(1), cached_tokens: Some(cached) },
            ..Default::default()
        }
    }

    #[test]
    fn arms_are_paired_by_conversation_and_turn() {
        let on = vec![rec("a", 1, 100.0, 1000, 0), rec("a", 2, 20.0, 1100, 1000), rec("b", 2, 30.0, 500, 400)];
        let off = vec![rec("a", 1, 101.0, 1000, 0), rec("a", 2, 110.0, 1100, 0), rec("b", 2, 60.0, 500, 0), rec("c", 2, 1.0, 1, 0)];
        let ab = compare_arms(&on, &off, ["on", "off"], true);
        assert_eq!(ab.compared_turns, 3);
        let t2 = ab.by_turn.iter().find(|t| t.turn == 2).unwrap();
        assert_eq!(t2.ttft_p50_on_ms, Some(25.0));
        assert_eq!(t2.ttft_p50_off_ms, Some(85.0));
        assert_eq!(t2.uncached_prompt_tokens_on, Some(100.0));
        assert_eq!(t2.uncached_prompt_tokens_off, Some(800.0));
        assert!((ab.later_turns.saved_pct.unwrap() - (85.0 - 25.0) / 85.0 * 100.0).abs() < 1e-9);
        assert!(ab.first_turn.saved_pct.unwrap().abs() < 1.0);
        assert!(headline(&ab).starts_with("Prefix caching saved 70.6 % of TTFT on turns ≥ 2"), "{}", headline(&ab));
    }
}
