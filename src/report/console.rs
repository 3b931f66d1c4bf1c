//! The few numbers a person reads at a glance after a run, as a comfy-table.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;

use super::fmt::{f1, pct, ratio};
use crate::analysis::load::error_kind;
use std::collections::BTreeMap;

use crate::analysis::Distribution;
use crate::core::record::TurnRecord;
use crate::analysis::Summary;

/// A compact table: requests ok/failed, TTFT p50/p95, E2E p50, output tok/s, first/later TTFT
/// ratio and cache reuse. Simulated and interrupted runs say so on the first lines.
pub fn console_summary(summary: &Summary) -> String {
    let mut out = String::new();
    if summary.run.simulated {
        out.push_str("SIMULATED run (turnbench sim): numbers describe the simulator, not a real model\n");
    }
    if let Some(note) = &summary.run.incomplete {
        out.push_str(&format!("INCOMPLETE: {note}\n"));
    }
    if let Some(why) = &summary.run.server_died {
        out.push_str(&format!("SERVER DIED: {why}\n"));
    }
    if summary.run.interrupted {
        out.push_str("INTERRUPTED: partial results\n");
    }
    let q = &summary.requests;
    let o = &summary.overall;
    let ttft = o.ttft_ms.as_ref();
    let f = &summary.first_vs_later;
    let mut requests = format!("{} ok / {} failed ({} success)", q.ok, q.failed, pct(q.success_pct));
    if q.warmup > 0 {
        requests.push_str(&format!(", {} warm-up excluded", q.warmup));
    }
    if !summary.errors.is_empty() {
        let kinds: Vec<String> = summary.errors.iter().map(|e| format!("{} {}", e.status.as_str(), e.count)).collect();
        requests.push_str(&format!("; errors: {}", kinds.join(", ")));
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["metric", "value"]);
    table.add_row(vec!["requests".to_string(), requests]);
    table.add_row(vec![
        "TTFT p50 / p95 (ms)".to_string(),
        format!("{} / {}", f1(ttft.map(|s| s.p50)), f1(ttft.map(|s| s.p95))),
    ]);
    table.add_row(vec!["E2E p50 (ms)".to_string(), f1(o.e2e_ms.as_ref().map(|s| s.p50))]);
    table.add_row(vec!["output tok/s p50".to_string(), f1(o.output_tps.as_ref().map(|s| s.p50))]);
    table.add_row(vec![
        "TTFT first / later turns (p50)".to_string(),
        format!(
            "{} ({} / {} ms)",
            ratio(f.ratio_p50),
            f1(f.first.as_ref().map(|g| g.p50_ms)),
            f1(f.later.as_ref().map(|g| g.p50_ms))
        ),
    ]);
    let per_token = |g: Option<&crate::analysis::TtftGroup>| {
        g.and_then(|g| g.ttft_per_uncached_token_p50_ms).map_or("–".into(), |v| format!("{v:.3}"))
    };
    table.add_row(vec![
        "TTFT ms per uncached prompt token (first / later)".to_string(),
        format!("{} / {}", per_token(f.first.as_ref()), per_token(f.later.as_ref())),
    ]);
    table.add_row(vec!["prefix-cache reuse".to_string(), format!("{} of prompt tokens", pct(summary.cache.reuse_pct))]);
    if let Some(ab) = &summary.ab {
        let g = &ab.later_turns;
        table.add_row(vec![
            "A/B: TTFT saved on turns ≥ 2 (p50)".to_string(),
            format!("{} ({} ms on / {} ms off)", pct(g.saved_pct), f1(g.ttft_p50_on_ms), f1(g.ttft_p50_off_ms)),
        ]);
    }
    out.push_str(&table.to_string());
    out
}

/// One line every `--log-interval`: what completed since the last line.
pub fn progress_line(level: &str, fresh: &[TurnRecord], interval_s: f64) -> String {
    let mut window = ProgressWindow::default();
    for r in fresh {
        window.push(r);
    }
    window.take_line(level, interval_s)
}

/// What completed since the last progress line, taken one record at a time (a few numbers,
/// not the records: a busy run completes thousands a second).
#[derive(Debug, Default)]
pub struct ProgressWindow {
    measured: usize,
    ttft: Distribution,
    errors: BTreeMap<String, usize>,
}

impl ProgressWindow {
    pub fn push(&mut self, r: &TurnRecord) {
        if r.warmup {
            return;
        }
        self.measured += 1;
        if r.status.is_ok() {
            self.ttft.push(r.derived.ttft_ms.unwrap_or(f64::NAN));
        } else {
            *self.errors.entry(error_kind(r)).or_default() += 1;
        }
    }

    /// The line for the last `interval_s` seconds; the window starts again empty.
    pub fn take_line(&mut self, level: &str, interval_s: f64) -> String {
        let mut w = std::mem::take(self);
        let errors = if w.errors.is_empty() {
            "0".to_string()
        } else {
            w.errors.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        };
        format!(
            "[{level}] {:.1} req/s, TTFT p50 {} ms p99 {} ms, errors: {errors}",
            if interval_s > 0.0 { w.measured as f64 / interval_s } else { 0.0 },
            f1(w.ttft.percentile(50.0)),
            f1(w.ttft.percentile(99.0)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summarize;
    use crate::analysis::tests::{failed, rec};
    use crate::core::record::Status;
    use crate::core::results::Manifest;

    #[test]
    fn console_summary_shows_the_headline_numbers() {
        let records = vec![
            rec("a", 1, 400.0, 500.0, 1000, 0),
            rec("a", 2, 100.0, 200.0, 1100, 1000),
            failed("a", 3, Status::Http5xx, "x"),
        ];
        let m = Manifest { simulated: true, ..Default::default() };
        let text = console_summary(&summarize(&records, &m));
        assert!(text.starts_with("SIMULATED"), "{text}");
        assert!(text.contains("2 ok / 1 failed (66.7% success)"), "{text}");
        assert!(text.contains("http_5xx 1"), "{text}");
        assert!(text.contains("4.00× (400.0 / 100.0 ms)"), "{text}");
        assert!(text.contains("47.6% of prompt tokens"), "{text}");
    }

    #[test]
    fn progress_line_counts_rate_and_errors() {
        let mut ok = TurnRecord::default();
        ok.derived.ttft_ms = Some(10.0);
        let failed = TurnRecord { status: Status::Http5xx, http_status: Some(503), ..Default::default() };
        let line = progress_line("qps-5", &[ok.clone(), ok, failed], 2.0);
        assert!(line.contains("1.5 req/s") && line.contains("http_503 1") && line.contains("p50 10.0"), "{line}");
    }
}
