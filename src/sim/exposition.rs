//! The Prometheus `/metrics` text in vLLM's names and labels (the histograms are
//! [`super::histogram`]'s): one engine's, labelled `engine="i"`, and the whole cluster's, every
//! replica's samples under each family's one `# HELP` and `# TYPE` (as a vLLM serving several
//! engines exposes them), so that a reader summing over `engine` gets the cluster's totals.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::cluster::Cluster;
use super::errors::error;
use super::state::{lock, Shared};

/// `GET /metrics`: every replica's exposition, merged into one.
pub(super) async fn metrics(State(c): State<Arc<Cluster>>) -> Response {
    let texts: Vec<String> = c.replicas().iter().map(|s| exposition(s)).collect();
    text_response(merge(&texts))
}

/// `GET /replica/{i}/metrics`: replica `i`'s own exposition; 404 for a replica there is not.
pub(super) async fn replica_metrics(State(c): State<Arc<Cluster>>, Path(i): Path<String>) -> Response {
    let n = c.replicas().len();
    match i.parse::<usize>().ok().and_then(|i| c.replicas().get(i)) {
        Some(s) => text_response(exposition(s)),
        None => error(
            StatusCode::NOT_FOUND,
            format!("No replica {i:?}: this simulator runs {n} (/replica/0/metrics to /replica/{}/metrics).", n - 1),
            None,
        ),
    }
}

fn text_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Expositions of the same families (the replicas') as one: each family's comment lines (`# HELP`,
/// `# TYPE`) once, where it first appears, then every exposition's samples of it in order. One
/// exposition comes back as it is.
pub(super) fn merge(texts: &[String]) -> String {
    // (comment lines, samples) per family, in order of first appearance.
    let mut families: Vec<(&str, String)> = Vec::new();
    for text in texts {
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let header_len = line_run(rest, true);
            let (header, after) = rest.split_at(header_len);
            let samples_len = line_run(after, false);
            let (samples, after) = after.split_at(samples_len);
            match families.iter_mut().find(|(h, _)| *h == header) {
                Some((_, all)) => all.push_str(samples),
                None => families.push((header, samples.to_string())),
            }
            rest = after;
        }
    }
    let mut out = String::with_capacity(texts.iter().map(String::len).sum());
    for (header, samples) in &families {
        out.push_str(header);
        out.push_str(samples);
    }
    out
}

/// Length of the leading run of whole lines of `text` that are comments (`comments`) or samples.
fn line_run(text: &str, comments: bool) -> usize {
    let mut len = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with('#') != comments {
            break;
        }
        len += line.len();
    }
    len
}

/// One engine's Prometheus text exposition, its samples labelled `engine="{its index}"`.
fn exposition(s: &Shared) -> String {
    let labels = format!("engine=\"{}\",model_name=\"{}\"", s.engine, s.model_label);
    let mut out = String::with_capacity(8192);
    let created = s.created_unix;
    let counter = |out: &mut String, name: &str, help: &str, extra: &str, v: u64| {
        let _ = writeln!(out, "# HELP vllm:{name}_total {help}\n# TYPE vllm:{name}_total counter");
        let _ = writeln!(out, "vllm:{name}_total{{{labels}{extra}}} {:?}", v as f64);
        // prometheus_client (vLLM) exposes `_created` as a gauge family of its own.
        let _ = writeln!(out, "# HELP vllm:{name}_created {help}\n# TYPE vllm:{name}_created gauge");
        let _ = writeln!(out, "vllm:{name}_created{{{labels}{extra}}} {created:?}");
    };
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP vllm:{name} {help}\n# TYPE vllm:{name} gauge\nvllm:{name}{{{labels}}} {v:?}");
    };
    let running = s.running.load(Relaxed);
    let waiting = s.waiting.load(Relaxed);
    gauge(&mut out, "num_requests_running", "Number of requests in model execution batches.", running as f64);
    gauge(&mut out, "num_requests_waiting", "Number of requests waiting to be processed.", waiting as f64);
    let usage = (s.blocks_in_use.load(Relaxed) as f64 / s.cfg.kv_cache_blocks.max(1) as f64).min(1.0);
    gauge(&mut out, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage);
    let hits = s.hits.load(Relaxed);
    counter(
        &mut out,
        "prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        "",
        s.queries.load(Relaxed),
    );
    counter(&mut out, "prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", "", hits);
    counter(&mut out, "prompt_tokens", "Number of prefill tokens processed.", "", s.prompt_tokens.load(Relaxed));
    counter(&mut out, "prompt_tokens_cached", "Number of cached prompt tokens (local prefix cache hits).", "", hits);
    counter(
        &mut out,
        "generation_tokens",
        "Number of generation tokens processed.",
        "",
        s.generation_tokens.load(Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter"
    );
    const REASONS: [&str; 3] = ["stop", "length", "abort"];
    for reason in REASONS {
        let v = if reason == "length" { s.success.load(Relaxed) } else { 0 };
        let _ = writeln!(out, "vllm:request_success_total{{{labels},finished_reason=\"{reason}\"}} {:?}", v as f64);
    }
    let _ = writeln!(
        out,
        "# HELP vllm:request_success_created Count of successfully processed requests.\n# TYPE vllm:request_success_created gauge"
    );
    for reason in REASONS {
        let _ = writeln!(out, "vllm:request_success_created{{{labels},finished_reason=\"{reason}\"}} {created:?}");
    }
    {
        let h = lock(&s.histograms);
        let ttft_help = "Histogram of time to first token in seconds.";
        h.ttft.write(&mut out, "time_to_first_token_seconds", ttft_help, &labels, created);
        let itl_help = "Histogram of inter-token latency in seconds.";
        h.itl.write(&mut out, "inter_token_latency_seconds", itl_help, &labels, created);
        let e2e_help = "Histogram of e2e request latency in seconds.";
        h.e2e.write(&mut out, "e2e_request_latency_seconds", e2e_help, &labels, created);
    }
    let _ = writeln!(
        out,
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{}\",enable_prefix_caching=\"{}\",engine=\"{}\",num_gpu_blocks=\"{}\"}} 1.0",
        s.cfg.block_size,
        if s.cfg.enable_prefix_caching { "True" } else { "False" },
        s.engine,
        s.cfg.kv_cache_blocks
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;

    #[test]
    fn one_exposition_merges_to_itself() {
        let text = exposition(&Shared::new(SimConfig::default(), 0));
        assert!(text.contains("engine=\"0\"") && !text.contains("engine=\"1\""));
        assert_eq!(merge(std::slice::from_ref(&text)), text);
    }

    #[test]
    fn merged_expositions_name_each_family_once_and_keep_every_sample() {
        let texts: Vec<String> = (0..3).map(|i| exposition(&Shared::new(SimConfig::default(), i))).collect();
        let merged = merge(&texts);
        let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples(&merged), 3 * samples(&texts[0]));
        let helps: Vec<&str> = merged.lines().filter(|l| l.starts_with("# HELP ")).collect();
        let once: std::collections::BTreeSet<&str> = helps.iter().copied().collect();
        assert_eq!(helps.len(), once.len(), "a family's HELP appears more than once");
        assert_eq!(helps.len(), texts[0].lines().filter(|l| l.starts_with("# HELP ")).count());
        // Each family's samples follow its own comment lines, engine by engine.
        let hits: Vec<&str> = merged
            .lines()
            .skip_while(|l| !l.starts_with("# TYPE vllm:prefix_cache_hits_total"))
            .skip(1)
            .take(3)
            .collect();
        for (i, line) in hits.iter().enumerate() {
            assert!(line.starts_with("vllm:prefix_cache_hits_total{") && line.contains(&format!("engine=\"{i}\"")), "{line}");
        }
        openmetrics_parser::prometheus::parse_prometheus(&merged).expect("one valid exposition");
    }
}
