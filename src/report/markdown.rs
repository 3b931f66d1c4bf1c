//! `report.md`: the run header, headline statistics, the prefix-caching indicator, per turn /
//! tag / RAG phase tables, the per-turn cache table, errors and the definitions.

use std::fmt::Write as _;

use anyhow::Result;

use super::fmt::{f1, md_table, opt, pct, ratio};
use super::{Exporter, ReportInput, REPORT_FILE};
use super::picks::PER_REQUEST_ROWS;
use crate::analysis::{record_reuse_pct, Stats};
use crate::core::results::Manifest;

/// Said at the top of every report of a simulator run.
pub const SIMULATED_BANNER: &str = "Simulated run (turnbench sim): numbers describe the simulator, not a real model";

/// Said at the top of the report of an interrupted run.
pub const INTERRUPTED_BANNER: &str = "Interrupted: partial results";

pub struct MarkdownReport;

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Exporter for MarkdownReport {
    fn file_name(&self) -> String {
        REPORT_FILE.to_string()
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        Ok(render(input)?.into_bytes())
    }
}

/// The selection flags of the run (`settings.selection` in the manifest) that were set.
fn selection(m: &Manifest) -> String {
    let parts: Vec<String> = m
        .settings
        .get("selection")
        .and_then(|v| v.as_object())
        .into_iter()
        .flatten()
        .filter(|(_, v)| !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty())))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "whole suite".to_string()
    } else {
        parts.join(", ")
    }
}

fn stats_row(name: &str, s: Option<&Stats>) -> Vec<String> {
    let g = |f: fn(&Stats) -> f64| f1(s.map(f));
    vec![
        name.to_string(),
        s.map_or(0, |s| s.count).to_string(),
        g(|s| s.mean),
        g(|s| s.std),
        g(|s| s.min),
        g(|s| s.p50),
        g(|s| s.p90),
        g(|s| s.p95),
        g(|s| s.p99),
        g(|s| s.max),
    ]
}


fn render(input: &ReportInput) -> Result<String> {
    let s = input.summary;
    let m = input.manifest;
    let run = &s.run;
    let mut out = String::new();

    let title = run.label.clone().unwrap_or_else(|| run.started_at.clone());
    writeln!(out, "# turnbench report: {title}\n")?;
    if run.simulated {
        writeln!(out, "> **{SIMULATED_BANNER}.**\n")?;
    }
    if let Some(note) = &run.incomplete {
        writeln!(out, "> **{}.**\n", capitalize(note))?;
    }
    if let Some(why) = &run.server_died {
        writeln!(out, "> **The server died: {why}.** The run ended early; failed requests are counted.\n")?;
    }
    if run.interrupted {
        writeln!(
            out,
            "> **{INTERRUPTED_BANNER}.** The run stopped before the suite ended; only the requests that \
             completed are counted.\n"
        )?;
    }

    // Run header.
    let caching = match (run.prefix_caching, run.block_size) {
        (Some(on), Some(b)) => format!("{} (block size {b})", if on { "on" } else { "off" }),
        (Some(on), None) => (if on { "on" } else { "off" }).to_string(),
        (None, Some(b)) => format!("unknown (block size {b})"),
        (None, None) => "unknown".to_string(),
    };
    let header = vec![
        vec!["Engine".into(), format!("{}{}", run.engine, if run.simulated { " (simulated)" } else { "" })],
        vec!["Model".into(), opt(run.model.as_ref())],
        vec!["Endpoint".into(), opt(run.endpoint.as_ref())],
        vec!["Date".into(), run.started_at.clone()],
        vec!["turnbench".into(), run.tool_version.clone()],
        vec!["Command".into(), format!("`{}`", m.command_line.join(" ").replace('`', "'"))],
        vec!["Selection".into(), selection(m)],
        vec![
            "Token counts".into(),
            (if run.token_counts_estimated { "estimated (no tokenizer)" } else { "model tokenizer" }).into(),
        ],
        vec!["Prefix caching".into(), caching],
        vec!["Seed".into(), m.seed.to_string()],
    ];
    out.push_str(&md_table(&["Run", ""], &header));

    // Headline.
    let q = &s.requests;
    writeln!(out, "\n## Headline\n")?;
    writeln!(
        out,
        "Requests: **{} measured**, {} ok, **{} failed** ({} success); {} warm-up request(s) excluded \
         from statistics. Latency and token statistics below are over the {} successful measured \
         requests.\n",
        q.measured,
        q.ok,
        q.failed,
        pct(q.success_pct),
        q.warmup,
        q.ok
    )?;
    let o = &s.overall;
    let rows = vec![
        stats_row("TTFT (ms)", o.ttft_ms.as_ref()),
        stats_row("TPOT (ms)", o.tpot_ms.as_ref()),
        stats_row("ITL (ms, all gaps)", o.itl_ms.as_ref()),
        stats_row("E2E (ms)", o.e2e_ms.as_ref()),
        stats_row("Output tok/s", o.output_tps.as_ref()),
        stats_row("Prompt tokens", o.prompt_tokens.as_ref()),
        stats_row("Cached tokens", o.cached_tokens.as_ref()),
        stats_row("Output tokens", o.output_tokens.as_ref()),
    ];
    out.push_str(&md_table(&["Metric", "n", "mean", "std", "min", "p50", "p90", "p95", "p99", "max"], &rows));

    // What caching saved, measured, comes first when the run measured it.
    if let Some(ab) = &s.ab {
        writeln!(out, "\n## What prefix caching saved (A/B)\n")?;
        writeln!(out, "**{}**\n", crate::analysis::ab::headline(ab))?;
        writeln!(
            out,
            "Arm A: {}; arm B: {} (`ab-off/`). Prompts identical in both arms (by prompt hashes): {}. {} turns compared.\n",
            ab.arms.first().map_or("", String::as_str),
            ab.arms.get(1).map_or("", String::as_str),
            if ab.identical_prompts { "yes" } else { "**NO**" },
            ab.compared_turns
        )?;
        let rows: Vec<Vec<String>> = ab
            .by_turn
            .iter()
            .map(|t| {
                vec![
                    t.turn.to_string(),
                    t.count.to_string(),
                    f1(t.ttft_p50_on_ms),
                    f1(t.ttft_p50_off_ms),
                    f1(t.saved_ms),
                    pct(t.saved_pct),
                    f1(t.uncached_prompt_tokens_on),
                    f1(t.uncached_prompt_tokens_off),
                ]
            })
            .collect();
        out.push_str(&md_table(
            &["Turn", "n", "TTFT p50 on ms", "TTFT p50 off ms", "saved ms", "saved", "uncached prompt tok on", "off"],
            &rows,
        ));
        let rows: Vec<Vec<String>> = ab
            .by_conversation
            .iter()
            .map(|c| {
                vec![
                    c.conversation_id.clone(),
                    c.turns.to_string(),
                    format!("{:.1}", c.ttft_total_on_ms),
                    format!("{:.1}", c.ttft_total_off_ms),
                    pct(c.saved_pct),
                ]
            })
            .collect();
        writeln!(out)?;
        out.push_str(&md_table(&["Conversation", "turns", "Σ TTFT on ms", "Σ TTFT off ms", "saved"], &rows));
    }

    // Load levels and saturation come right after the headline: they are what a load run is for.
    if let Some(load) = &s.load {
        out.push_str(&super::load::markdown(load));
    }

    // First vs later.
    let f = &s.first_vs_later;
    writeln!(out, "\n## First turn vs later turns (TTFT)\n")?;
    let rows = vec![
        vec![
            "Turn 1".into(),
            opt(f.first.as_ref().map(|g| g.count)),
            f1(f.first.as_ref().map(|g| g.mean_ms)),
            f1(f.first.as_ref().map(|g| g.p50_ms)),
        ],
        vec![
            "Turns ≥ 2".into(),
            opt(f.later.as_ref().map(|g| g.count)),
            f1(f.later.as_ref().map(|g| g.mean_ms)),
            f1(f.later.as_ref().map(|g| g.p50_ms)),
        ],
        vec!["**Ratio first / later**".into(), String::new(), ratio(f.ratio_mean), ratio(f.ratio_p50), String::new(), String::new()],
    ];
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .zip([f.first.as_ref(), f.later.as_ref(), None])
        .map(|(mut row, g)| {
            if let Some(g) = g {
                row.push(f1(g.prompt_tokens_mean));
                row.push(g.ttft_per_uncached_token_p50_ms.map_or("–".into(), |v| format!("{v:.3}")));
            }
            row
        })
        .collect();
    out.push_str(&md_table(&["", "n", "mean ms", "p50 ms", "prompt tok mean", "TTFT ms per uncached token p50"], &rows));
    let sizes = f.first.as_ref().and_then(|g| g.prompt_tokens_mean).zip(f.later.as_ref().and_then(|g| g.prompt_tokens_mean));
    let comparable = sizes.is_none_or(|(a, b)| a > 0.0 && b > 0.0 && (a / b).max(b / a) <= 2.0);
    if comparable {
        writeln!(
            out,
            "\nA ratio above 1 means later turns, whose prompt starts with the cached history, get their \
             first token sooner: prefix caching pays off.\n"
        )?;
    } else {
        writeln!(
            out,
            "\nThe first and later turns' prompts differ more than 2× in size, so this ratio says little \
             about caching: compare TTFT per uncached prompt token{}.\n",
            if s.ab.is_some() { ", and the A/B measurement above" } else { ", or measure it with `--ab prefix-caching`" }
        )?;
    }

    // By turn.
    writeln!(out, "## By turn number\n")?;
    let rows: Vec<Vec<String>> = s
        .by_turn
        .iter()
        .map(|t| {
            vec![
                t.turn.to_string(),
                t.count.to_string(),
                t.ok.to_string(),
                f1(t.ttft_p50_ms),
                f1(t.ttft_mean_ms),
                f1(t.e2e_p50_ms),
                f1(t.prompt_tokens_mean),
                f1(t.cached_tokens_mean),
                pct(t.reuse_pct),
            ]
        })
        .collect();
    out.push_str(&md_table(
        &[
            "Turn",
            "n",
            "ok",
            "TTFT p50 ms",
            "TTFT mean ms",
            "E2E p50 ms",
            "prompt tok mean",
            "cached tok mean",
            "reuse",
        ],
        &rows,
    ));

    // By tag.
    writeln!(out, "\n## By tag\n")?;
    let rows: Vec<Vec<String>> = s
        .by_tag
        .iter()
        .map(|t| {
            vec![
                t.tag.clone(),
                t.count.to_string(),
                pct(t.success_pct),
                f1(t.ttft_p50_ms),
                f1(t.e2e_p50_ms),
                f1(t.output_tps_p50),
            ]
        })
        .collect();
    out.push_str(&md_table(&["Tag", "n", "success", "TTFT p50 ms", "E2E p50 ms", "output tok/s p50"], &rows));

    // By RAG phase.
    writeln!(out, "\n## By RAG phase\n")?;
    if s.by_rag_phase.is_empty() {
        writeln!(out, "No turn of this run used RAG documents.")?;
    } else {
        let rows: Vec<Vec<String>> = s
            .by_rag_phase
            .iter()
            .map(|p| {
                vec![
                    p.phase.as_str().to_string(),
                    p.count.to_string(),
                    p.ok.to_string(),
                    f1(p.ttft_p50_ms),
                    f1(p.cached_tokens_mean),
                    pct(p.reuse_pct),
                ]
            })
            .collect();
        out.push_str(&md_table(&["Phase", "n", "ok", "TTFT p50 ms", "cached tok mean", "reuse"], &rows));
    }

    // Cache table.
    let c = &s.cache;
    writeln!(out, "\n## Prefix cache, turn by turn\n")?;
    writeln!(
        out,
        "Totals over successful turns: {} prompt tokens, {} cached ({}), {} expected reusable \
         (cached / expected: {}); server prefix-cache hits {} of {} queries ({}).\n",
        c.prompt_tokens,
        c.cached_tokens,
        pct(c.reuse_pct),
        c.expected_reusable_tokens,
        pct(c.reuse_of_expected_pct),
        c.server_hits,
        c.server_queries,
        pct(c.server_hit_pct),
    )?;
    if !c.flags.is_empty() {
        let flags: Vec<String> = c.flags.iter().map(|f| format!("{} {}", f.flag.as_str(), f.count)).collect();
        writeln!(out, "Turns reusing less than expected: {}.\n", flags.join(", "))?;
    }
    let measured = s.requests.measured;
    let shown = &input.picks.requests;
    if shown.len() < measured {
        writeln!(
            out,
            "{} requests: the table shows the first {} and the {} with the highest TTFT; every request is in \
             `turns.csv`.\n",
            measured,
            PER_REQUEST_ROWS / 2,
            shown.len().saturating_sub(PER_REQUEST_ROWS / 2),
        )?;
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.conversation_id.clone(),
                r.turn.to_string(),
                r.status.as_str().to_string(),
                opt(r.usage.prompt_tokens),
                opt(r.cache.expected_reusable_tokens),
                opt(r.observed_reuse()),
                pct(record_reuse_pct(r)),
                format!("{}/{}", opt(r.cache.server_hits), opt(r.cache.server_queries)),
                f1(r.derived.ttft_ms),
                r.cache.flag.map_or(String::new(), |f| f.as_str().to_string()),
            ]
        })
        .collect();
    out.push_str(&md_table(
        &[
            "Conversation",
            "Turn",
            "status",
            "prompt",
            "expected reusable",
            "cached",
            "reuse",
            "server hits/queries",
            "TTFT ms",
            "flag",
        ],
        &rows,
    ));

    // Errors.
    writeln!(out, "\n## Errors\n")?;
    if s.errors.is_empty() {
        writeln!(out, "No failed request ({} of {} succeeded).", q.ok, q.measured)?;
    } else {
        writeln!(out, "{} of {} measured requests failed ({} success).\n", q.failed, q.measured, pct(q.success_pct))?;
        let rows: Vec<Vec<String>> = s
            .errors
            .iter()
            .map(|e| vec![e.status.as_str().to_string(), e.count.to_string(), opt(e.example.as_ref())])
            .collect();
        out.push_str(&md_table(&["Kind", "count", "example"], &rows));
    }

    if let Some(resources) = &s.resources {
        writeln!(out)?;
        out.push_str(&super::resources::markdown_section(resources));
    }
    out.push_str(&super::cluster::markdown_section(s));

    writeln!(out, "\n## Notes on definitions\n")?;
    out.push_str(NOTES);
    if run.token_counts_estimated {
        out.push_str("- Token counts used to select conversations were **estimates** (no tokenizer); the counts in this report come from the server's `usage`.\n");
    }
    Ok(out)
}

const NOTES: &str = "\
- **TTFT** = first non-empty content delta − request sent; **E2E** = last byte − sent; \
**TPOT** = (E2E − TTFT) / (output tokens − 1); **ITL** = gaps between content chunks (all gaps of \
all requests pooled); **output tok/s** = output tokens / E2E.
- Token counts come from the server's `usage`, never from counting chunks. **Cached** = \
`usage.prompt_tokens_details.cached_tokens`, else the delta of `vllm:prefix_cache_hits_total` over \
the turn. **Reuse** = Σ cached / Σ prompt tokens. **Expected reusable** = what an unbounded cache \
of everything this server was sent and generated since its start or last reset would reuse (whole \
blocks, the last prompt token always computed); **predicted** = the same under the server's \
capacity (LRU over its KV blocks).
- Flags (why a turn reused less than it could): `cache_off`, `concurrent` (other requests in \
flight: inexact), `preemption`, `capacity_eviction` (the capacity model predicted it), \
`block_rounding` (short by less than a block), `divergent_prompt` (the prompt changed, e.g. a RAG \
removal), `answer_retokenized` (the previous answer's text re-tokenizes to other ids than were \
generated), `unexplained` (none of these: a finding).
- Percentiles: linear interpolation between closest ranks (numpy's default); std: sample (n − 1).
- Warm-up requests are excluded from statistics; failed requests are counted above and excluded \
from latency statistics only.
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summarize;
    use crate::analysis::tests::{failed, rec};
    use crate::core::record::{RagPhase, ReuseFlag, Status};

    fn render_for(m: &Manifest) -> String {
        let mut r2 = rec("conv-a", 2, 50.0, 150.0, 1100, 992);
        r2.cache.flag = Some(ReuseFlag::CapacityEviction);
        r2.rag_phase = Some(RagPhase::With);
        let records =
            vec![rec("conv-a", 1, 400.0, 500.0, 1000, 0), r2, failed("conv-b", 1, Status::Http5xx, "503 | busy")];
        let summary = summarize(&records, m);
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: m, timeline: None, system: None };
        String::from_utf8(MarkdownReport.export(&input).unwrap()).unwrap()
    }

    #[test]
    fn markdown_has_banner_and_tables() {
        let m = Manifest {
            engine: "sim".into(),
            simulated: true,
            model: Some("tiny-model".into()),
            started_at: "2026-01-02T03:04:05Z".into(),
            command_line: vec!["turnbench".into(), "run".into()],
            ..Default::default()
        };
        let md = render_for(&m);
        assert!(md.contains("Simulated run (turnbench sim): numbers describe the simulator, not a real model"));
        assert!(!md.contains(INTERRUPTED_BANNER));
        assert!(md.contains("| Model | tiny-model |"), "{md}");
        assert!(md.contains("| Date | 2026-01-02T03:04:05Z |"));
        assert!(md.contains("## Headline"));
        assert!(md.contains("| TTFT (ms) | 2 |"), "{md}");
        assert!(md.contains("| **Ratio first / later** |  | 8.00× | 8.00× |"), "{md}");
        assert!(md.contains("## By turn number"));
        assert!(md.contains("| 2 | 1 | 1 | 50.0 |"), "{md}");
        assert!(md.contains("| qa | 3 | 66.7% |"), "{md}");
        assert!(md.contains("| with | 1 | 1 | 50.0 | 992.0 | 90.2% |"), "{md}");
        assert!(md.contains("| conv-a | 2 | ok | 1100 | 992 | 992 | 90.2% | 992/1100 | 50.0 | capacity_eviction |"), "{md}");
        assert!(md.contains("| http_5xx | 1 | 503 \\| busy |"), "{md}");
        assert!(md.contains("1 failed"));
        assert!(md.contains("## Notes on definitions"));
    }

    #[test]
    fn markdown_says_interrupted_and_not_simulated() {
        let m = Manifest { engine: "external".into(), interrupted: true, ..Default::default() };
        let md = render_for(&m);
        assert!(md.contains("Interrupted: partial results"));
        assert!(!md.contains("Simulated run"));
    }
}
