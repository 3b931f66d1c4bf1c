//! `report.html`: one self-contained page (styles, script and data inline; no network, no
//! external reference), so it opens from a file share or an air-gapped laptop. Charts are inline
//! SVG drawn in Rust from the same chart model as the static plots (`svg.rs`): they render, and
//! show their values on hover, without JavaScript. The small inline script only adds a
//! conversation picker and sortable tables; every table reads without it.
//!
//! `turnbench report A --compare B` writes [`compare_page`]: both runs side by side.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::Value;

use super::compare::{compare_legend, compare_rows, Comparison, COMPARE_HEADERS};
use super::fmt::{f1, opt, pct, ratio};
use super::markdown::{INTERRUPTED_BANNER, SIMULATED_BANNER};
use super::plot::{Figure, LineChart, Series, CACHED_COLOR, UNCACHED_COLOR};
use super::svg::{self, esc, num};
pub use super::picks::{conversation_turns, ConversationTurns, TurnPoint, MAX_CONVERSATION_CHARTS};
use super::{Exporter, ReportInput};
use crate::analysis::load::{at, LoadSummary};
use crate::analysis::Summary;
use crate::core::results::Manifest;

pub const HTML_FILE: &str = "report.html";

/// Rows of the per-conversation table.
pub const MAX_CONVERSATION_ROWS: usize = 200;

pub struct HtmlReport;

impl Exporter for HtmlReport {
    fn file_name(&self) -> String {
        HTML_FILE.to_string()
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        Ok(page(input).into_bytes())
    }
}

const STYLE: &str = r#"
:root{--fg:#1d1d1f;--muted:#5f6368;--line:#dadce0;--bg:#fff;--soft:#f6f7f9;--accent:#1f77b4;--warn:#fff4ce;--bad:#fde7e9}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 10px;padding-top:8px;border-top:1px solid var(--line)}h3{font-size:16px;margin:20px 0 8px}
.sub{color:var(--muted);margin:0 0 12px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;background:var(--warn);border:1px solid #e8d27a}
.banner.bad{background:var(--bad);border-color:#f1a7ae}
nav{margin:12px 0;font-size:14px}nav a{margin-right:14px;color:var(--accent);text-decoration:none}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin:14px 0}
.card{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .v{font-size:24px;font-weight:650}.card .k{color:var(--muted);font-size:13px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13.5px;width:auto;max-width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer}th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
.scroll{overflow-x:auto}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:12px}
.side{display:grid;grid-template-columns:1fr 1fr;gap:18px}
svg.chart{width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:6px;margin:6px 0}
svg.chart text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#333}
svg.chart .title,svg.chart .fig-title{font-size:14px;font-weight:600}svg.chart .label{fill:var(--muted)}
svg.chart .grid{stroke:#ececec}svg.chart .frame{stroke:#888}svg.chart .tick{stroke:#888}
svg.chart .line{fill:none;stroke-width:2}svg.chart .swatch{stroke-width:3}
svg.chart .marker{stroke-width:2;stroke-dasharray:6 4}
svg.chart circle:hover,svg.chart rect.bar:hover{opacity:.7;stroke:#000}
details{margin:8px 0}summary{cursor:pointer;color:var(--accent)}
pre{background:var(--soft);border:1px solid var(--line);padding:10px;overflow:auto;max-height:480px;font-size:12.5px}
.note{color:var(--muted);font-size:13px}
label.pick{display:block;margin:8px 0}
@media print{nav,label.pick{display:none}.conv-fig{display:block!important}}
"#;

/// Runs first: any script error is written onto the page, where a test (or a person) sees it.
const ERROR_HOOK: &str = r#"window.addEventListener("error",function(e){document.documentElement.setAttribute("data-js-error",String(e.message||e));});"#;

const SCRIPT: &str = r#"
(function(){
  var pick=document.getElementById("conv-pick");
  if(pick){
    var figs=document.querySelectorAll(".conv-fig");
    var show=function(){figs.forEach(function(f){f.hidden=(f.id!==pick.value);});};
    pick.addEventListener("change",show);
    pick.parentNode.hidden=false;
    show();
  }
  document.querySelectorAll("table.sortable").forEach(function(table){
    table.querySelectorAll("th").forEach(function(th,col){
      th.addEventListener("click",function(){
        var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        var asc=th.getAttribute("aria-sort")!=="ascending";
        var key=function(r){var c=r.cells[col];return c?(c.getAttribute("data-v")||c.textContent):"";};
        rows.sort(function(a,b){
          var x=key(a),y=key(b),nx=parseFloat(x),ny=parseFloat(y);
          var r=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
          return asc?r:-r;
        });
        rows.forEach(function(r){body.appendChild(r);});
        table.querySelectorAll("th").forEach(function(h){h.removeAttribute("aria-sort");});
        th.setAttribute("aria-sort",asc?"ascending":"descending");
      });
    });
  });
  document.documentElement.setAttribute("data-js","ready");
})();
"#;

fn is_numeric(cell: &str) -> bool {
    let t = cell.trim_start_matches(['-', '+']);
    t.starts_with(|c: char| c.is_ascii_digit()) && !t.contains(' ') || cell == "–"
}

/// An HTML table; cells are text (escaped), numbers right-aligned.
fn table(headers: &[&str], rows: &[Vec<String>], sortable: bool) -> String {
    let mut out = String::from(r#"<div class="scroll"><table"#);
    if sortable {
        out.push_str(r#" class="sortable""#);
    }
    out.push_str("><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            let class = if is_numeric(c) { r#" class="n""# } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

fn card(out: &mut String, key: &str, value: &str) {
    let _ = write!(out, r#"<div class="card"><div class="v">{}</div><div class="k">{}</div></div>"#, esc(value), esc(key));
}

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"generator\" content=\"turnbench {}\"><title>{}</title><script>{ERROR_HOOK}</script><style>{STYLE}</style></head><body><main>",
        env!("CARGO_PKG_VERSION"),
        esc(title)
    );
}

fn tail(out: &mut String) {
    let _ = writeln!(out, "</main><script>{SCRIPT}</script></body></html>");
}

/// TTFT by turn above, the prompt tokens of each turn below, stacked: cached (what the server's
/// prefix cache reused) under uncached (what it had to compute).
pub fn turn_figure(title: &str, ttft_label: &str, points: &[TurnPoint]) -> Figure {
    let x = |p: &TurnPoint| p.turn as f64;
    let ttft = points.iter().filter_map(|p| p.ttft_ms.map(|v| (x(p), v))).collect();
    let cached = points.iter().filter_map(|p| p.cached_tokens.map(|v| (x(p), v))).collect();
    let uncached = points
        .iter()
        .filter_map(|p| p.prompt_tokens.map(|n| (x(p), (n - p.cached_tokens.unwrap_or(0.0)).max(0.0))))
        .collect();
    let top = LineChart { integer_x: true, ..LineChart::new("Time to first token", "turn", "TTFT (ms)", vec![Series::line(ttft_label, ttft)]) };
    let bottom = LineChart {
        integer_x: true,
        ..LineChart::new(
            "Prompt tokens: cached vs uncached",
            "turn",
            "tokens",
            vec![Series::bars("cached", cached).colored(CACHED_COLOR), Series::bars("uncached", uncached).colored(UNCACHED_COLOR)],
        )
    };
    Figure { title: title.to_string(), panels: vec![top, bottom] }
}

/// The run's turns: TTFT p50 and mean prompt / cached tokens per turn number.
pub fn summary_turn_points(s: &Summary) -> Vec<TurnPoint> {
    s.by_turn
        .iter()
        .map(|t| TurnPoint { turn: t.turn, ttft_ms: t.ttft_p50_ms, prompt_tokens: t.prompt_tokens_mean, cached_tokens: t.cached_tokens_mean })
        .collect()
}

/// The A/B section's data, read from `summary.ab` when the run has one.
#[derive(Debug, Clone, PartialEq)]
pub struct AbView {
    pub arms: Vec<String>,
    pub identical_prompts: Option<bool>,
    pub by_turn: Vec<AbTurnView>,
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// Reads `summary.ab` (`{arms, identical_prompts, by_turn: [{turn, ttft_p50_on_ms,
/// ttft_p50_off_ms, saved_pct}]}`); `None` when absent or not of that shape.
pub fn ab_view(summary: &Value) -> Option<AbView> {
    let ab = summary.get("ab").filter(|v| v.is_object())?;
    let arms = ab.get("arms").and_then(Value::as_array).map(|a| a.iter().map(value_text).collect()).unwrap_or_default();
    let by_turn = ab
        .get("by_turn")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|t| {
            let turn = u32::try_from(t.get("turn")?.as_u64()?).ok()?;
            let f = |k: &str| t.get(k).and_then(Value::as_f64);
            Some((turn, f("ttft_p50_on_ms"), f("ttft_p50_off_ms"), f("saved_pct")))
        })
        .collect();
    Some(AbView { arms, identical_prompts: ab.get("identical_prompts").and_then(Value::as_bool), by_turn })
}

/// `(turn, ttft p50 on, ttft p50 off, saved %)`.
pub type AbTurnView = (u32, Option<f64>, Option<f64>, Option<f64>);

/// TTFT p50 with caching on and off per turn, and the saving (right axis, bars).
pub fn ab_chart(ab: &AbView) -> LineChart {
    let pick = |f: fn(&AbTurnView) -> Option<f64>| -> Vec<(f64, f64)> {
        ab.by_turn.iter().filter_map(|t| f(t).map(|v| (t.0 as f64, v))).collect()
    };
    LineChart {
        integer_x: true,
        y2_label: Some("saved %".into()),
        ..LineChart::new(
            "A/B: TTFT p50 with prefix caching on and off",
            "turn",
            "TTFT p50 (ms)",
            vec![
                Series::bars("saved %", pick(|t| t.3)).on_right().colored(CACHED_COLOR),
                Series::line("caching on", pick(|t| t.1)),
                Series::line("caching off", pick(|t| t.2)),
            ],
        )
    }
}

/// The reasons turns reused less than an ideal cache would have, as bars.
pub fn miss_reasons(s: &Summary) -> Vec<(String, f64)> {
    s.cache.flags.iter().map(|f| (f.flag.as_str().to_string(), f.count as f64)).collect()
}

fn headline(out: &mut String, s: &Summary, ab: Option<&AbView>) {
    out.push_str(r#"<div class="cards">"#);
    let q = &s.requests;
    card(out, "requests ok / measured", &format!("{} / {}", q.ok, q.measured));
    card(out, "success rate", &pct(q.success_pct));
    card(out, "TTFT p50 (ms)", &f1(s.overall.ttft_ms.as_ref().map(|t| t.p50)));
    card(out, "TTFT turn 1 ÷ later turns (p50)", &ratio(s.first_vs_later.ratio_p50));
    card(out, "prompt tokens served from cache", &pct(s.cache.reuse_pct));
    card(out, "output tokens/s per request (p50)", &f1(s.overall.output_tps.as_ref().map(|t| t.p50)));
    if let Some(ab) = ab {
        let saved: Vec<f64> = ab.by_turn.iter().filter(|t| t.0 > 1).filter_map(|t| t.3).collect();
        let mean = (!saved.is_empty()).then(|| saved.iter().sum::<f64>() / saved.len() as f64);
        card(out, "A/B: TTFT saved by caching, turns ≥ 2 (mean)", &pct(mean));
    }
    if let Some(load) = &s.load {
        card(out, "saturation", load.saturation.as_ref().map_or("none reached", |x| x.level.as_str()));
    }
    out.push_str("</div>");
}

fn banners(out: &mut String, s: &Summary) {
    if s.run.simulated {
        let _ = write!(out, r#"<p class="banner"><strong>{}.</strong></p>"#, esc(SIMULATED_BANNER));
    }
    if s.run.interrupted {
        let _ = write!(out, r#"<p class="banner bad"><strong>{}.</strong> Only the requests that completed are counted.</p>"#, esc(INTERRUPTED_BANNER));
    }
    if s.requests.failed > 0 {
        let _ = write!(
            out,
            r##"<p class="banner bad">{} of {} measured requests failed; latency statistics are over the successful ones (see <a href="#errors">Errors</a>).</p>"##,
            s.requests.failed, s.requests.measured
        );
    }
}

fn turn_table(s: &Summary) -> String {
    let rows: Vec<Vec<String>> = s
        .by_turn
        .iter()
        .map(|t| {
            vec![
                t.turn.to_string(),
                format!("{} / {}", t.ok, t.count),
                f1(t.ttft_p50_ms),
                f1(t.ttft_mean_ms),
                f1(t.e2e_p50_ms),
                f1(t.prompt_tokens_mean),
                f1(t.cached_tokens_mean),
                pct(t.reuse_pct),
            ]
        })
        .collect();
    table(&["turn", "ok / n", "TTFT p50 ms", "TTFT mean ms", "E2E p50 ms", "prompt tokens (mean)", "cached tokens (mean)", "reuse"], &rows, true)
}

fn conversations_section(out: &mut String, input: &ReportInput) {
    let s = input.summary;
    let convs = &input.picks.conversations;
    let total = s.conversations.len().max(convs.len());
    let _ = write!(out, r#"<h2 id="conversations">Per conversation</h2>"#);
    if convs.is_empty() {
        out.push_str(r#"<p class="note">No measured turns.</p>"#);
        return;
    }
    let shown = convs.len().min(MAX_CONVERSATION_CHARTS);
    out.push_str(r#"<label class="pick" hidden>Conversation: <select id="conv-pick">"#);
    for c in &convs[..shown] {
        let _ = write!(out, r#"<option value="{}">{}</option>"#, c.key, esc(&c.label));
    }
    out.push_str("</select></label>");
    for c in &convs[..shown] {
        let _ = write!(out, r#"<div class="conv-fig" id="{}">{}</div>"#, c.key, svg::figure(&turn_figure(&c.label, "TTFT", &c.points)));
    }
    if total > shown {
        let _ = write!(out, r#"<p class="note">{} of {} conversations drawn; every turn is in <code>turns.csv</code>.</p>"#, shown, total);
    }
    let rows: Vec<Vec<String>> = s
        .conversations
        .iter()
        .take(MAX_CONVERSATION_ROWS)
        .map(|c| {
            vec![
                c.test.to_string(),
                c.conversation_id.clone(),
                opt(c.level.as_ref()),
                opt(c.session),
                c.status.as_str().to_string(),
                format!("{} / {}", c.turns_completed, c.turns),
                c.prompt_tokens.to_string(),
                c.cached_tokens.to_string(),
                f1(c.ttft_first_ms),
                f1(c.ttft_later_mean_ms),
            ]
        })
        .collect();
    out.push_str(&table(
        &["test", "conversation", "level", "session", "status", "turns ok / n", "prompt tokens", "cached tokens", "TTFT turn 1 ms", "TTFT later mean ms"],
        &rows,
        true,
    ));
    if s.conversations.len() > MAX_CONVERSATION_ROWS {
        let _ = write!(out, r#"<p class="note">First {MAX_CONVERSATION_ROWS} of {} rows; all of them: <code>conversations.csv</code>.</p>"#, s.conversations.len());
    }
}

fn cache_section(out: &mut String, s: &Summary) {
    let c = &s.cache;
    let _ = write!(out, r#"<h2 id="cache">Prefix cache</h2>"#);
    let rows = vec![
        vec!["prompt tokens".into(), c.prompt_tokens.to_string()],
        vec!["cached tokens (observed)".into(), c.cached_tokens.to_string()],
        vec!["expected reusable tokens (ideal cache)".into(), c.expected_reusable_tokens.to_string()],
        vec!["reuse of prompt tokens".into(), pct(c.reuse_pct)],
        vec!["reuse of what an ideal cache would reuse".into(), pct(c.reuse_of_expected_pct)],
        vec!["server prefix-cache hits / queries".into(), format!("{} / {}", c.server_hits, c.server_queries)],
        vec!["server hit rate".into(), pct(c.server_hit_pct)],
    ];
    out.push_str(&table(&["", "value"], &rows, false));
    let reasons = miss_reasons(s);
    out.push_str("<h3>Why turns reused less than expected</h3>");
    out.push_str(&svg::hbars("Turns flagged, by reason", &reasons, "turns"));
    let rows: Vec<Vec<String>> = reasons.iter().map(|(r, n)| vec![r.clone(), num(*n)]).collect();
    out.push_str(&table(&["reason", "turns"], &rows, false));
}

fn ab_section(out: &mut String, ab: &AbView) {
    let _ = write!(out, r#"<h2 id="ab">A/B: what prefix caching saved</h2>"#);
    if !ab.arms.is_empty() {
        let _ = write!(out, "<p>Arms: {}.</p>", esc(&ab.arms.join(", ")));
    }
    match ab.identical_prompts {
        Some(true) => out.push_str("<p>Both arms sent byte-identical prompts, so the difference is the cache.</p>"),
        Some(false) => out.push_str(r#"<p class="banner bad">The arms' prompts differ: the saving mixes the cache with the prompts.</p>"#),
        None => {}
    }
    out.push_str(&svg::chart(&ab_chart(ab)));
    let rows: Vec<Vec<String>> = ab.by_turn.iter().map(|t| vec![t.0.to_string(), f1(t.1), f1(t.2), pct(t.3)]).collect();
    out.push_str(&table(&["turn", "TTFT p50 on ms", "TTFT p50 off ms", "saved"], &rows, true));
}

fn load_section(out: &mut String, load: &LoadSummary) {
    let _ = write!(out, r#"<h2 id="load">Load levels</h2><p>Mode <code>{}</code>, workload <code>{}</code>. Rates are conversations per second; latency from schedule includes time waiting to be sent.</p>"#, esc(&load.mode), esc(&load.workload));
    out.push_str(r#"<div class="grid2">"#);
    for (_, c) in super::load::charts(load) {
        out.push_str(&svg::chart(&c));
    }
    out.push_str("</div>");
    let ps = &load.percentiles;
    let p_text = |list: &[crate::analysis::load::Percentile]| ps.iter().map(|p| f1(at(list, *p))).collect::<Vec<_>>().join(" / ");
    let ph = ps.iter().map(|p| format!("p{p}")).collect::<Vec<_>>().join("/");
    let rows: Vec<Vec<String>> = load
        .levels
        .iter()
        .map(|l| {
            vec![
                l.label.clone(),
                l.target_qps.map_or_else(|| l.concurrency.map_or("–".into(), |c| format!("{c} users")), |q| format!("{q:.2}/s")),
                format!("{:.2}", l.offered_qps),
                format!("{:.2}", l.achieved_qps),
                format!("{} / {}", l.ok, l.requests),
                pct(l.success_pct),
                p_text(&l.ttft_ms),
                p_text(&l.e2e_ms),
                p_text(&l.output_tps),
                format!("{:.1}", l.output_tokens_per_s),
                l.max_in_flight.to_string(),
            ]
        })
        .collect();
    let h_ttft = format!("TTFT ms {ph}");
    let h_e2e = format!("E2E ms {ph}");
    let h_tps = format!("tok/s per request {ph}");
    out.push_str(&table(
        &["level", "target", "offered/s", "achieved/s", "ok / n", "success", &h_ttft, &h_e2e, &h_tps, "output tok/s total", "max in flight"],
        &rows,
        true,
    ));
    match &load.saturation {
        Some(s) => {
            let _ = write!(out, "<p>Saturation point: <strong>{}</strong> ({}).</p>", esc(&s.level), esc(&s.reasons.join("; ")));
        }
        None => out.push_str("<p>No level reached saturation.</p>"),
    }
    let _ = write!(out, "<p>Recommendation: {}</p>", esc(&load.recommendation));
    for l in load.levels.iter().filter(|l| !l.client_bound.is_empty()) {
        let _ = write!(
            out,
            "<p class=\"banner\">Client-bound: <strong>{}</strong> — {}; its numbers may be the client's, not the server's.</p>",
            esc(&l.label),
            esc(&l.client_bound.join("; "))
        );
    }
}

fn resources_section(out: &mut String, input: &ReportInput) {
    let Some(timeline) = input.timeline else { return };
    let _ = write!(out, r#"<h2 id="resources">Resources over time</h2>"#);
    let fig = super::resources::timeline_figure(timeline);
    if fig.panels.is_empty() {
        out.push_str(r#"<p class="note">The timeline has no CPU, memory, GPU or KV-cache samples.</p>"#);
    } else {
        out.push_str(&svg::figure(&fig));
    }
    if let Some(r) = &input.summary.resources {
        if !r.gpu_sampled {
            out.push_str(r#"<p class="note">GPU metrics unavailable for this run (no NVML).</p>"#);
        }
        let c = |v: Option<f64>| f1(v);
        let rows: Vec<Vec<String>> = r
            .tests
            .iter()
            .map(|t| {
                vec![
                    t.test.to_string(),
                    opt(t.conversation_id.as_ref()),
                    t.samples.to_string(),
                    c(t.system_cpu_mean_pct),
                    c(t.engine_cpu_mean_pct),
                    c(t.engine_rss_peak_mib),
                    c(t.gpu_util_mean_pct),
                    c(t.gpu_memory_peak_mib),
                    c(t.kv_cache_usage_max_pct),
                ]
            })
            .collect();
        out.push_str(&table(
            &["test", "conversation", "ticks", "system CPU %", "engine CPU % mean", "engine RSS MiB", "GPU util % mean", "GPU mem peak MiB", "KV cache max %"],
            &rows,
            true,
        ));
    }
}

fn errors_section(out: &mut String, s: &Summary) {
    let _ = write!(out, r#"<h2 id="errors">Errors</h2>"#);
    if s.errors.is_empty() {
        out.push_str("<p>No measured request failed.</p>");
        return;
    }
    let rows: Vec<Vec<String>> = s.errors.iter().map(|e| vec![e.status.as_str().to_string(), e.count.to_string(), opt(e.example.as_ref())]).collect();
    out.push_str(&table(&["status", "count", "first error"], &rows, false));
}

/// Top-level fields as rows; nested values as compact JSON.
fn object_rows(v: &Value) -> Vec<Vec<String>> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                Value::Array(a) if a.iter().all(Value::is_string) => a.iter().map(value_text).collect::<Vec<_>>().join(" "),
                other => value_text(other),
            };
            vec![k.clone(), text]
        })
        .collect()
}

fn run_section(out: &mut String, m: &Manifest, system: Option<&Value>) {
    let _ = write!(out, r#"<h2 id="run">Run</h2>"#);
    let mut rows = vec![
        vec!["turnbench".into(), m.tool_version.clone()],
        vec!["command".into(), m.command_line.join(" ")],
        vec!["started".into(), m.started_at.clone()],
        vec!["label".into(), opt(m.label.as_ref())],
        vec!["engine".into(), format!("{}{}", m.engine, if m.simulated { " (simulated)" } else { "" })],
        vec!["model".into(), opt(m.model.as_ref())],
        vec!["endpoint".into(), opt(m.endpoint.as_ref())],
        vec!["engine command".into(), m.engine_command.as_ref().map_or("–".into(), |c| c.join(" "))],
        vec!["prefix caching".into(), opt(m.prefix_caching)],
        vec!["block size".into(), opt(m.block_size)],
        vec!["token counts".into(), (if m.token_counts_estimated { "estimated" } else { "model tokenizer" }).into()],
        vec!["seed".into(), m.seed.to_string()],
    ];
    for d in &m.datasets {
        rows.push(vec!["dataset".into(), format!("{} (sha256 {})", d.path, d.sha256.get(..16).unwrap_or(&d.sha256))]);
    }
    out.push_str("<h3>Manifest</h3>");
    out.push_str(&table(&["", ""], &rows, false));
    if let Ok(json) = serde_json::to_string_pretty(m) {
        let _ = write!(out, "<details><summary>manifest.json (all of it)</summary><pre>{}</pre></details>", esc(&json));
    }
    out.push_str("<h3>System</h3>");
    match system {
        Some(sys) => {
            out.push_str(&table(&["", ""], &object_rows(sys), false));
            if let Some(gpu) = sys.get("gpu").filter(|g| g.is_object()) {
                out.push_str("<h3>GPU</h3>");
                out.push_str(&table(&["", ""], &object_rows(gpu), false));
            }
        }
        None => out.push_str(r#"<p class="note">No <code>system.json</code> in this results folder.</p>"#),
    }
}

/// The whole page of one run.
pub fn page(input: &ReportInput) -> String {
    let s = input.summary;
    let summary_value = serde_json::to_value(s).unwrap_or(Value::Null);
    let ab = ab_view(&summary_value);
    let title = s.run.label.clone().unwrap_or_else(|| s.run.started_at.clone());
    let mut out = String::with_capacity(64 * 1024);
    head(&mut out, &format!("turnbench report: {title}"));
    let _ = write!(out, "<h1>turnbench report: {}</h1>", esc(&title));
    let _ = write!(
        out,
        r#"<p class="sub">{}{} · model {} · started {} · turnbench {}</p>"#,
        esc(&s.run.engine),
        if s.run.simulated { " (simulated)" } else { "" },
        esc(&opt(s.run.model.as_ref())),
        esc(&s.run.started_at),
        esc(&s.run.tool_version)
    );
    banners(&mut out, s);
    headline(&mut out, s, ab.as_ref());
    out.push_str("<nav>");
    if s.load.is_some() {
        out.push_str(r##"<a href="#load">Load levels</a>"##);
    }
    out.push_str(r##"<a href="#turns">By turn</a><a href="#conversations">Per conversation</a><a href="#cache">Prefix cache</a>"##);
    if ab.is_some() {
        out.push_str(r##"<a href="#ab">A/B</a>"##);
    }
    if input.timeline.is_some() {
        out.push_str(r##"<a href="#resources">Resources</a>"##);
    }
    if !s.replicas.is_empty() {
        out.push_str(r##"<a href="#replicas">Replicas</a>"##);
    }
    if !s.shards.is_empty() {
        out.push_str(r##"<a href="#shards">Shards</a>"##);
    }
    out.push_str(r##"<a href="#errors">Errors</a><a href="#run">Run and system</a></nav>"##);

    // A load run is about its levels: they come first.
    if let Some(load) = &s.load {
        load_section(&mut out, load);
    }
    let _ = write!(out, r#"<h2 id="turns">TTFT by turn, and what the cache reused</h2>"#);
    out.push_str(r#"<p class="note">Top: median time to first token of each turn number over all conversations. Bottom: the mean prompt of that turn, split into tokens the server's prefix cache reused (green) and tokens it computed (grey). Hover a point or bar for its value.</p>"#);
    out.push_str(&svg::figure(&turn_figure("All conversations", "TTFT p50", &summary_turn_points(s))));
    out.push_str(&turn_table(s));
    conversations_section(&mut out, input);
    cache_section(&mut out, s);
    if let Some(ab) = &ab {
        ab_section(&mut out, ab);
    }
    resources_section(&mut out, input);
    for t in super::cluster::tables(s) {
        let _ = write!(out, r#"<h2 id="{}">{}</h2><p class="note">{}</p>"#, t.id, esc(t.title), esc(t.intro));
        out.push_str(&table(t.headers, &t.rows, false));
    }
    errors_section(&mut out, s);
    run_section(&mut out, input.manifest, input.system);
    tail(&mut out);
    out
}

/// `compare-<B>.html`: the comparison table, TTFT p50 by turn of both runs on one chart, then
/// each run's headline and turn figure side by side.
pub fn compare_page(cmp: &Comparison, a: &Summary, b: &Summary) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let title = format!("turnbench comparison: {} vs {}", cmp.a_name, cmp.b_name);
    head(&mut out, &title);
    let _ = write!(out, "<h1>{}</h1>", esc(&title));
    if cmp.a_simulated || cmp.b_simulated {
        let _ = write!(out, r#"<p class="banner"><strong>{}.</strong></p>"#, esc(SIMULATED_BANNER));
    }
    let _ = write!(out, "<p>{}.</p>", esc(&compare_legend(cmp)));
    let pick = |f: fn(&super::compare::TurnComparison) -> Option<f64>| -> Vec<(f64, f64)> {
        cmp.turns.iter().filter_map(|t| f(t).map(|v| (t.turn as f64, v))).collect()
    };
    let chart = LineChart {
        integer_x: true,
        ..LineChart::new(
            "TTFT p50 by turn",
            "turn",
            "TTFT p50 (ms)",
            vec![
                Series::line(format!("A: {}", cmp.a_name), pick(|t| t.ttft_p50_ms.a)),
                Series::line(format!("B: {}", cmp.b_name), pick(|t| t.ttft_p50_ms.b)),
            ],
        )
    };
    out.push_str(&svg::chart(&chart));
    out.push_str(&table(&COMPARE_HEADERS, &compare_rows(cmp), false));
    out.push_str(r#"<div class="side">"#);
    for (tag, name, s) in [("A", &cmp.a_name, a), ("B", &cmp.b_name, b)] {
        let _ = write!(out, "<section><h2>{tag}: {}</h2>", esc(name));
        headline(&mut out, s, ab_view(&serde_json::to_value(s).unwrap_or(Value::Null)).as_ref());
        out.push_str(&svg::figure(&turn_figure(&format!("{tag}: {name}"), "TTFT p50", &summary_turn_points(s))));
        out.push_str(&svg::hbars("Turns flagged, by reason", &miss_reasons(s), "turns"));
        out.push_str("</section>");
    }
    out.push_str("</div>");
    tail(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::TurnRecord;
    use crate::analysis::tests::{failed, rec};
    use crate::analysis::{summarize, summarize_run, FlagCount};
    use crate::core::record::{ReuseFlag, Status};
    use crate::core::timeline::{Sample, Timeline};
    use serde_json::json;

    fn records() -> Vec<TurnRecord> {
        vec![
            rec("a", 1, 400.0, 500.0, 1000, 0),
            rec("a", 2, 50.0, 150.0, 1100, 992),
            failed("a", 3, Status::Http5xx, "503 <busy>"),
            rec("b", 1, 300.0, 400.0, 800, 0),
        ]
    }

    /// Every `<svg` element of a page.
    fn svgs(page: &str) -> usize {
        page.matches("<svg").count()
    }

    #[test]
    fn turn_figure_stacks_cached_under_uncached() {
        let pts = [
            TurnPoint { turn: 1, ttft_ms: Some(400.0), prompt_tokens: Some(1000.0), cached_tokens: Some(0.0) },
            TurnPoint { turn: 2, ttft_ms: Some(50.0), prompt_tokens: Some(1100.0), cached_tokens: Some(992.0) },
            TurnPoint { turn: 3, ttft_ms: None, prompt_tokens: None, cached_tokens: None },
        ];
        let f = turn_figure("x", "TTFT", &pts);
        assert_eq!(f.panels[0].series[0].points, [(1.0, 400.0), (2.0, 50.0)]);
        assert!(f.panels.iter().all(|p| p.integer_x));
        let bars = &f.panels[1];
        assert_eq!(bars.series[0].label, "cached");
        assert_eq!(bars.series[0].points, [(1.0, 0.0), (2.0, 992.0)]);
        assert_eq!(bars.series[1].points, [(1.0, 1000.0), (2.0, 108.0)]);
        let stacks = bars.bar_stacks(crate::report::plot::YAxis::Left);
        assert_eq!(stacks[1].1, [(0, 0.0, 992.0), (1, 992.0, 1100.0)], "cached at the bottom");
    }

    #[test]
    fn conversations_are_grouped_in_order_with_failed_turns_empty() {
        let convs = conversation_turns(&records());
        let labels: Vec<&str> = convs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["test 0 · a", "test 0 · b"]);
        let a = &convs[0].points;
        assert_eq!(a.iter().map(|p| p.turn).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a[1].cached_tokens, Some(992.0));
        assert_eq!((a[2].ttft_ms, a[2].prompt_tokens), (None, None));
    }

    #[test]
    fn page_is_self_contained_and_has_the_sections() {
        let records = records();
        let manifest = Manifest { simulated: true, endpoint: Some("http://127.0.0.1:1".into()), ..Default::default() };
        let mut summary = summarize(&records, &manifest);
        summary.cache.flags = vec![FlagCount { flag: ReuseFlag::CapacityEviction, count: 2 }];
        let system = json!({"cpu_model": "Test CPU", "gpu": {"driver": "550"}});
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: &manifest, timeline: None, system: Some(&system) };
        let html = page(&input);
        assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
        for bad in ["src=\"http", "href=\"http", "url(http", "<link", "<script src", "@import", "xmlns"] {
            assert!(!html.contains(bad), "external reference {bad:?}");
        }
        assert!(html.contains(SIMULATED_BANNER));
        assert!(html.contains("503 &lt;busy&gt;"), "error text escaped");
        assert!(html.contains("<td>capacity_eviction</td>") && html.contains("<title>capacity_eviction: 2 turns</title>"));
        assert!(html.contains("Test CPU") && html.contains("<h3>GPU</h3>"));
        // aggregate figure, two conversation figures, the reasons bars: four charts.
        assert_eq!(svgs(&html), 4, "{html}");
        assert_eq!(html.matches(r#"class="conv-fig""#).count(), 2);
        assert!(!html.contains(r#"id="load""#) && !html.contains(r#"id="ab""#) && !html.contains(r#"id="resources""#));
    }

    #[test]
    fn timeline_and_load_sections_appear_when_the_run_has_them() {
        let records = records();
        let manifest = Manifest::default();
        let timeline = Timeline {
            samples: (0..5).map(|i| Sample::new(i as f64 * 1000.0, 0, "system", "cpu_pct", "all", 10.0 * i as f64)).collect(),
        };
        let summary = summarize_run(&records, &manifest, Some(&timeline), None);
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: &manifest, timeline: Some(&timeline), system: None };
        let html = page(&input);
        assert!(html.contains(r#"id="resources""#));
        assert!(html.contains("No <code>system.json</code>"));
        assert_eq!(svgs(&html), 5);
    }

    #[test]
    fn ab_section_reads_the_optional_summary_field() {
        let v = json!({"ab": {"arms": ["on", "off"], "identical_prompts": true, "by_turn": [
            {"turn": 1, "ttft_p50_on_ms": 400.0, "ttft_p50_off_ms": 410.0, "saved_pct": 2.4},
            {"turn": 2, "ttft_p50_on_ms": 50.0, "ttft_p50_off_ms": 200.0, "saved_pct": 75.0}]}});
        let ab = ab_view(&v).unwrap();
        assert_eq!(ab.arms, ["on", "off"]);
        assert_eq!(ab.by_turn[1], (2, Some(50.0), Some(200.0), Some(75.0)));
        let c = ab_chart(&ab);
        assert_eq!(c.series[0].points, [(1.0, 2.4), (2.0, 75.0)]);
        assert_eq!(c.series[2].points, [(1.0, 410.0), (2.0, 200.0)]);
        let mut out = String::new();
        ab_section(&mut out, &ab);
        assert!(out.contains("byte-identical") && out.contains("75.0%"));
        let mut cards = String::new();
        headline(&mut cards, &summarize(&[], &Manifest::default()), Some(&ab));
        assert!(cards.contains("75.0%"), "turns ≥ 2 only: {cards}");
        assert_eq!(ab_view(&json!({"requests": {}})), None);
        assert_eq!(ab_view(&json!({"ab": {"arms": []}})), None, "no by_turn: not of the shape");
    }

    #[test]
    fn a_20000_request_run_stays_under_2_mb() {
        let mut records = Vec::new();
        for c in 0..2000 {
            for t in 1..=10u32 {
                let mut r = rec(&format!("conversation-{c:05}"), t, 100.0 + t as f64, 900.0, 500 * t as u64, 480 * (t as u64 - 1));
                r.session = Some(c);
                r.level = Some(format!("qps-{}", c % 4));
                records.push(r);
            }
        }
        let mut samples = Vec::new();
        for i in 0..3600 {
            let t = i as f64 * 1000.0;
            for (src, m, dev) in [("system", "cpu_pct", "all"), ("engine", "cpu_pct", ""), ("system", "mem_used_mib", ""), ("gpu", "util_sm_pct", "gpu0"), ("gpu", "mem_used_mib", "gpu0"), ("server", "kv_cache_usage_pct", "")] {
                samples.push(Sample::new(t, 0, src, m, dev, (i % 100) as f64));
            }
        }
        let timeline = Timeline { samples };
        let manifest = Manifest::default();
        let summary = summarize_run(&records, &manifest, Some(&timeline), None);
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: &manifest, timeline: Some(&timeline), system: None };
        let bytes = HtmlReport.export(&input).unwrap();
        eprintln!("report.html of a 20,000-request run: {} bytes", bytes.len());
        assert!(bytes.len() < 2 * 1024 * 1024, "{} bytes", bytes.len());
        let html = String::from_utf8(bytes).unwrap();
        assert_eq!(html.matches(r#"class="conv-fig""#).count(), MAX_CONVERSATION_CHARTS);
        assert!(html.contains("24 of 2000 conversations drawn"));
    }

    #[test]
    fn compare_page_puts_both_runs_side_by_side() {
        let a = summarize(&[rec("x", 1, 400.0, 500.0, 1000, 0), rec("x", 2, 50.0, 150.0, 1100, 992)], &Manifest::default());
        let b = summarize(&[rec("x", 1, 400.0, 500.0, 1000, 0), rec("x", 2, 200.0, 300.0, 1100, 0)], &Manifest::default());
        let cmp = super::super::compare("on", &a, "off", &b);
        let html = compare_page(&cmp, &a, &b);
        assert!(html.contains("<h2>A: on</h2>") && html.contains("<h2>B: off</h2>"));
        assert!(html.contains("<td>turn 2 TTFT p50 ms</td>"));
        assert_eq!(svgs(&html), 5, "the by-turn chart, then a figure and reasons per run");
    }
}
