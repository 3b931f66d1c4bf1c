//! The Prometheus `/metrics` text in vLLM's names and labels (the histograms are
//! [`super::histogram`]'s).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::state::{lock, Shared};

/// `GET /metrics`: the Prometheus text exposition.
pub(super) async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let labels = format!("engine=\"0\",model_name=\"{}\"", s.model_label);
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
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{}\",enable_prefix_caching=\"{}\",engine=\"0\",num_gpu_blocks=\"{}\"}} 1.0",
        s.cfg.block_size,
        if s.cfg.enable_prefix_caching { "True" } else { "False" },
        s.cfg.kv_cache_blocks
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
