//! `turnbench report A --compare B`: two runs side by side.
//!
//! A is the folder being reported, B the one compared against. `delta = A − B` (ms; negative: A
//! is faster) and `speedup = B / A` (above 1: A is faster).

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use serde::{Deserialize, Serialize};

use super::fmt::{f1, md_table, pct, ratio};
use crate::analysis::Summary;

/// One number of run A and run B.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub a: Option<f64>,
    pub b: Option<f64>,
}

/// TTFT p50 of one turn number in both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnComparison {
    pub turn: u32,
    pub ttft_p50_ms: Pair,
    /// `A − B` in ms.
    pub delta_ms: Option<f64>,
    /// `B / A`: above 1 means A is faster.
    pub speedup: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a_name: String,
    pub b_name: String,
    pub a_simulated: bool,
    pub b_simulated: bool,
    pub turns: Vec<TurnComparison>,
    pub ttft_p50_ms: Pair,
    pub first_later_ratio_p50: Pair,
    pub first_later_ratio_mean: Pair,
    pub reuse_pct: Pair,
    pub success_pct: Pair,
}

fn delta(p: Pair) -> Option<f64> {
    Some(p.a? - p.b?)
}

fn speedup(p: Pair) -> Option<f64> {
    let (a, b) = (p.a?, p.b?);
    (a > 0.0).then(|| b / a)
}

/// Compares run A (`a`) with run B (`b`), turn number by turn number.
pub fn compare(a_name: &str, a: &Summary, b_name: &str, b: &Summary) -> Comparison {
    let mut turns: Vec<u32> = a.by_turn.iter().chain(&b.by_turn).map(|t| t.turn).collect();
    turns.sort_unstable();
    turns.dedup();
    let ttft_of = |s: &Summary, turn: u32| s.by_turn.iter().find(|t| t.turn == turn).and_then(|t| t.ttft_p50_ms);
    let turns = turns
        .into_iter()
        .map(|turn| {
            let p = Pair { a: ttft_of(a, turn), b: ttft_of(b, turn) };
            TurnComparison { turn, ttft_p50_ms: p, delta_ms: delta(p), speedup: speedup(p) }
        })
        .collect();
    let pair = |f: fn(&Summary) -> Option<f64>| Pair { a: f(a), b: f(b) };
    Comparison {
        a_name: a_name.to_string(),
        b_name: b_name.to_string(),
        a_simulated: a.run.simulated,
        b_simulated: b.run.simulated,
        turns,
        ttft_p50_ms: pair(|s| s.overall.ttft_ms.as_ref().map(|x| x.p50)),
        first_later_ratio_p50: pair(|s| s.first_vs_later.ratio_p50),
        first_later_ratio_mean: pair(|s| s.first_vs_later.ratio_mean),
        reuse_pct: pair(|s| s.cache.reuse_pct),
        success_pct: pair(|s| s.requests.success_pct),
    }
}

pub(crate) const COMPARE_HEADERS: [&str; 5] = ["", "A", "B", "Δ A−B", "speedup B/A"];

pub(crate) fn compare_rows(c: &Comparison) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = c
        .turns
        .iter()
        .map(|t| {
            vec![
                format!("turn {} TTFT p50 ms", t.turn),
                f1(t.ttft_p50_ms.a),
                f1(t.ttft_p50_ms.b),
                f1(t.delta_ms),
                ratio(t.speedup),
            ]
        })
        .collect();
    let p = c.ttft_p50_ms;
    rows.push(vec!["all turns TTFT p50 ms".into(), f1(p.a), f1(p.b), f1(delta(p)), ratio(speedup(p))]);
    let r = c.first_later_ratio_p50;
    rows.push(vec!["TTFT first/later (p50)".into(), ratio(r.a), ratio(r.b), String::new(), String::new()]);
    let r = c.first_later_ratio_mean;
    rows.push(vec!["TTFT first/later (mean)".into(), ratio(r.a), ratio(r.b), String::new(), String::new()]);
    let r = c.reuse_pct;
    rows.push(vec!["cache reuse".into(), pct(r.a), pct(r.b), String::new(), String::new()]);
    let r = c.success_pct;
    rows.push(vec!["success rate".into(), pct(r.a), pct(r.b), String::new(), String::new()]);
    rows
}

pub(crate) fn compare_legend(c: &Comparison) -> String {
    let sim = |s: bool| if s { " (simulated)" } else { "" };
    format!(
        "A = {}{}, B = {}{}; Δ = A − B (negative: A faster); speedup = B / A (above 1: A faster)",
        c.a_name,
        sim(c.a_simulated),
        c.b_name,
        sim(c.b_simulated)
    )
}

/// The comparison as a console table with a legend line.
pub fn compare_table(c: &Comparison) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(COMPARE_HEADERS.to_vec());
    for row in compare_rows(c) {
        table.add_row(row);
    }
    format!("{}\n{table}", compare_legend(c))
}

/// The comparison as Markdown (`compare-<B>.md`).
pub fn compare_markdown(c: &Comparison) -> String {
    let mut out = format!("# turnbench comparison: {} vs {}\n\n", c.a_name, c.b_name);
    if c.a_simulated || c.b_simulated {
        out.push_str(&format!("> **{}.**\n\n", super::SIMULATED_BANNER));
    }
    out.push_str(&compare_legend(c));
    out.push_str(".\n\n");
    out.push_str(&md_table(&COMPARE_HEADERS, &compare_rows(c)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summarize;
    use crate::analysis::tests::rec;
    use crate::core::results::Manifest;

    #[test]
    fn compares_turn_by_turn() {
        let a =
            summarize(&[rec("x", 1, 400.0, 500.0, 1000, 0), rec("x", 2, 50.0, 150.0, 1100, 992)], &Manifest::default());
        let b = summarize(
            &[
                rec("x", 1, 400.0, 500.0, 1000, 0),
                rec("x", 2, 200.0, 300.0, 1100, 0),
                rec("x", 3, 210.0, 300.0, 1200, 0),
            ],
            &Manifest { simulated: true, ..Default::default() },
        );
        let c = compare("on", &a, "off", &b);
        assert_eq!(c.turns.len(), 3);
        assert_eq!(c.turns[1].delta_ms, Some(-150.0));
        assert_eq!(c.turns[1].speedup, Some(4.0));
        assert_eq!(c.turns[2].ttft_p50_ms, Pair { a: None, b: Some(210.0) });
        assert_eq!(c.first_later_ratio_p50, Pair { a: Some(8.0), b: Some(400.0 / 205.0) });
        let md = compare_markdown(&c);
        assert!(md.contains("| turn 2 TTFT p50 ms | 50.0 | 200.0 | -150.0 | 4.00× |"), "{md}");
        assert!(md.contains("| cache reuse | 47.2% | 0.0% |"), "{md}");
        assert!(md.contains("Simulated run"));
        let table = compare_table(&c);
        assert!(table.contains("A = on, B = off (simulated)"), "{table}");
        assert!(table.contains("turn 3 TTFT p50 ms"));
    }
}
