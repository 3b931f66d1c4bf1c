//! The HTTP surface: vLLM's OpenAI endpoints, `/tokenize`, `/metrics`, `/health`,
//! `/reset_prefix_cache`, with admission control, the prefix cache and the latency model.

// Handlers' helpers return the error `Response` itself: built once per failed request, moved
// straight out; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::cache::{block_hashes, mix64, PrefixCache};
use super::chat::render_chat;
use super::tokenizer::{piece_id, tokenize};
use super::SimConfig;
use crate::workload::prompt::ChatMessage;

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

/// vLLM's histogram buckets, in seconds.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];

/// A Prometheus histogram: per-bucket counts (not cumulative), sum and count.
#[derive(Clone)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Self { buckets, counts: vec![0; buckets.len()], sum: 0.0, count: 0 }
    }

    fn observe_n(&mut self, v: f64, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(i) = self.buckets.iter().position(|le| v <= *le) {
            self.counts[i] += n;
        }
        self.sum += v * n as f64;
        self.count += n;
    }

    fn observe(&mut self, v: f64) {
        self.observe_n(v, 1);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    fn write(&self, out: &mut String, name: &str, help: &str, labels: &str, created: f64) {
        let _ = writeln!(out, "# HELP vllm:{name} {help}\n# TYPE vllm:{name} histogram");
        let mut cum = 0;
        for (le, c) in self.buckets.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "vllm:{name}_bucket{{{labels},le=\"{le:?}\"}} {:?}", cum as f64);
        }
        let _ = writeln!(out, "vllm:{name}_bucket{{{labels},le=\"+Inf\"}} {:?}", self.count as f64);
        let _ = writeln!(out, "vllm:{name}_count{{{labels}}} {:?}", self.count as f64);
        let _ = writeln!(out, "vllm:{name}_sum{{{labels}}} {:?}", self.sum);
        let _ = writeln!(out, "# HELP vllm:{name}_created {help}\n# TYPE vllm:{name}_created gauge");
        let _ = writeln!(out, "vllm:{name}_created{{{labels}}} {created:?}");
    }
}

struct Histograms {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
}

pub(crate) struct Shared {
    cfg: SimConfig,
    /// The model name as a JSON string literal (quotes included).
    model_json: String,
    /// The model name escaped for a Prometheus label value.
    model_label: String,
    cache: Mutex<PrefixCache>,
    sem: Arc<Semaphore>,
    running: AtomicUsize,
    waiting: AtomicUsize,
    blocks_in_use: AtomicUsize,
    requests: AtomicU64,
    queries: AtomicU64,
    hits: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    success: AtomicU64,
    histograms: Mutex<Histograms>,
    created_unix: f64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Shared {
    fn new(cfg: SimConfig) -> Self {
        let model_json = serde_json::to_string(&cfg.model_name).unwrap_or_else(|_| "\"turnbench-sim\"".into());
        let model_label = cfg.model_name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        Self {
            model_json,
            model_label,
            cache: Mutex::new(PrefixCache::new(cfg.block_size, cfg.kv_cache_blocks)),
            sem: Arc::new(Semaphore::new(cfg.max_num_seqs)),
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            blocks_in_use: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: AtomicU64::new(0),
            histograms: Mutex::new(Histograms {
                ttft: Histogram::new(TTFT_BUCKETS),
                itl: Histogram::new(ITL_BUCKETS),
                e2e: Histogram::new(E2E_BUCKETS),
            }),
            created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            cfg,
        }
    }
}

pub(crate) fn router(cfg: SimConfig) -> Router {
    let shared = Arc::new(Shared::new(cfg));
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize_handler))
        .route("/metrics", get(metrics))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "Not Found"}))) })
        .layer(DefaultBodyLimit::max(256 << 20))
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// vLLM's OpenAI error body: `{"error":{"message","type","param","code"}}`.
fn error(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Response {
    let kind = match status.as_u16() {
        400 => "BadRequestError",
        404 => "NotFoundError",
        503 => "ServiceUnavailableError",
        _ => "InternalServerError",
    };
    let body = json!({"error": {"message": message.into(), "type": kind, "param": param, "code": status.as_u16()}});
    (status, axum::Json(body)).into_response()
}

fn bad_request(message: impl Into<String>, param: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, message, param)
}

/// Parses a JSON body into `T`, with the JSON path of a wrong or missing field in the message.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match value {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(bad_request(format!("Invalid JSON body: {e}"), None)),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(bad_request(format!("Invalid JSON body: {inner}"), None))
            } else if path == "." || path.is_empty() {
                Err(bad_request(format!("Invalid request: {inner}"), None))
            } else {
                Err(bad_request(format!("Invalid request: field `{path}`: {inner}"), Some(&path)))
            }
        }
    }
}

fn check_model(s: &Shared, model: &Option<String>) -> Result<(), Response> {
    match model {
        Some(m) if m != &s.cfg.model_name => {
            Err(error(StatusCode::NOT_FOUND, format!("The model `{m}` does not exist."), Some("model")))
        }
        _ => Ok(()),
    }
}

/// A completion prompt: a string, a list of one string, or a list of token ids.
fn prompt_tokens(prompt: &Value) -> Result<Vec<u32>, Response> {
    let wrong = || {
        bad_request(
            "Invalid request: field `prompt` must be a string, a list with one string, or a list of token ids",
            Some("prompt"),
        )
    };
    match prompt {
        Value::String(s) => Ok(tokenize(s)),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            Ok(tokenize(items[0].as_str().unwrap_or("")))
        }
        Value::Array(items) if items.iter().all(|v| v.is_u64()) => {
            items.iter().map(|v| v.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(wrong)).collect()
        }
        Value::Array(items) if items.iter().all(|v| v.is_string()) => Err(bad_request(
            format!("Invalid request: the simulator takes one prompt per request, got {}", items.len()),
            Some("prompt"),
        )),
        _ => Err(wrong()),
    }
}

// ---------------------------------------------------------------------------------------------
// Simple endpoints

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let m = &s.cfg.model_name;
    let created = unix_secs();
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": m, "object": "model", "created": created, "owned_by": "turnbench-sim",
            "root": m, "parent": null, "max_model_len": s.cfg.max_model_len,
            "permission": [{
                "id": "modelperm-turnbench-sim", "object": "model_permission", "created": created,
                "allow_create_engine": false, "allow_sampling": true, "allow_logprobs": true,
                "allow_search_indices": false, "allow_view": true, "allow_fine_tuning": false,
                "organization": "*", "group": null, "is_blocking": false
            }]
        }]
    }))
    .into_response()
}

async fn reset_prefix_cache(State(s): State<Arc<Shared>>) -> StatusCode {
    lock(&s.cache).clear();
    StatusCode::OK
}

#[derive(Deserialize)]
struct TokenizeRequest {
    model: Option<String>,
    prompt: Option<Value>,
    messages: Option<Vec<ChatMessage>>,
    add_generation_prompt: Option<bool>,
    #[allow(dead_code)]
    add_special_tokens: Option<bool>,
}

async fn tokenize_handler(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: TokenizeRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = check_model(&s, &req.model) {
        return r;
    }
    let tokens = match (&req.messages, &req.prompt) {
        (Some(m), _) => tokenize(&render_chat(m, req.add_generation_prompt.unwrap_or(true))),
        (None, Some(p)) => match prompt_tokens(p) {
            Ok(t) => t,
            Err(r) => return r,
        },
        (None, None) => return bad_request("Invalid request: give either `prompt` or `messages`", None),
    };
    axum::Json(json!({"count": tokens.len(), "max_model_len": s.cfg.max_model_len, "tokens": tokens})).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
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

// ---------------------------------------------------------------------------------------------
// Completions

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
    #[allow(dead_code)]
    continuous_usage_stats: Option<bool>,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    #[allow(dead_code)]
    ignore_eos: Option<bool>,
    add_generation_prompt: Option<bool>,
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Value,
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    #[allow(dead_code)]
    ignore_eos: Option<bool>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

struct Params {
    kind: Kind,
    tokens: Vec<u32>,
    max_tokens: Option<i64>,
    stream: bool,
    include_usage: bool,
}

fn stream_params(stream: Option<bool>, options: &Option<StreamOptions>) -> Result<(bool, bool), Response> {
    let stream = stream.unwrap_or(false);
    if options.is_some() && !stream {
        return Err(bad_request("Stream options can only be defined when `stream=True`.", Some("stream_options")));
    }
    Ok((stream, options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)))
}

async fn chat_completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: ChatRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = check_model(&s, &req.model) {
        return r;
    }
    let (stream, include_usage) = match stream_params(req.stream, &req.stream_options) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if req.messages.is_empty() {
        return bad_request("Invalid request: `messages` must not be empty", Some("messages"));
    }
    let tokens = tokenize(&render_chat(&req.messages, req.add_generation_prompt.unwrap_or(true)));
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    generate(s, Params { kind: Kind::Chat, tokens, max_tokens, stream, include_usage }).await
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: CompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = check_model(&s, &req.model) {
        return r;
    }
    let (stream, include_usage) = match stream_params(req.stream, &req.stream_options) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let tokens = match prompt_tokens(&req.prompt) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if tokens.is_empty() {
        return bad_request("Invalid request: the prompt must not be empty", Some("prompt"));
    }
    generate(s, Params { kind: Kind::Completion, tokens, max_tokens: req.max_tokens, stream, include_usage }).await
}

/// A uniform number in [0, 1) from the seed, a stream tag and the request number.
fn uniform(seed: u64, tag: u64, n: u64) -> f64 {
    (mix64(seed ^ mix64(tag ^ mix64(n))) >> 11) as f64 / (1u64 << 53) as f64
}

/// A place in the running batch; gives it back (and its KV blocks) when dropped.
struct Slot {
    s: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    blocks: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.s.running.fetch_sub(1, Relaxed);
        self.s.blocks_in_use.fetch_sub(self.blocks, Relaxed);
    }
}

struct WaitGuard(Arc<Shared>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

fn unavailable(msg: &str) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, msg, None)
}

/// Takes a running slot, waiting in FIFO order; 503 when `max_waiting` requests already wait.
async fn admit(s: &Arc<Shared>) -> Result<Slot, Response> {
    let permit = match s.sem.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(TryAcquireError::Closed) => return Err(unavailable("The server is shutting down.")),
        Err(TryAcquireError::NoPermits) => {
            let before = s.waiting.fetch_add(1, Relaxed);
            let guard = WaitGuard(s.clone());
            if before >= s.cfg.max_waiting {
                return Err(unavailable(&format!(
                    "The waiting queue is full ({} requests waiting, {} running); try again later.",
                    s.cfg.max_waiting, s.cfg.max_num_seqs
                )));
            }
            let p = s.sem.clone().acquire_owned().await.map_err(|_| unavailable("The server is shutting down."))?;
            drop(guard);
            p
        }
    };
    s.running.fetch_add(1, Relaxed);
    Ok(Slot { s: s.clone(), _permit: permit, blocks: 0 })
}

async fn generate(s: Arc<Shared>, p: Params) -> Response {
    let prompt_len = p.tokens.len();
    let max_len = s.cfg.max_model_len;
    let max_tokens = match p.max_tokens {
        Some(n) if n < 1 => return bad_request(format!("max_tokens must be at least 1, got {n}."), Some("max_tokens")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => s.cfg.default_max_tokens.min(max_len.saturating_sub(prompt_len)),
    };
    if prompt_len.saturating_add(max_tokens) > max_len || max_tokens == 0 {
        let what = if p.kind == Kind::Chat { "messages" } else { "prompt" };
        return bad_request(
            format!(
                "This model's maximum context length is {max_len} tokens. However, you requested {} tokens ({prompt_len} in the {what}, {max_tokens} in the completion). Please reduce the length of the {what} or completion.",
                prompt_len.saturating_add(max_tokens)
            ),
            None,
        );
    }
    let n = s.requests.fetch_add(1, Relaxed);
    let cfg = &s.cfg;
    if cfg.fail_rate > 0.0 && uniform(cfg.seed, 1, n) < cfg.fail_rate {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Injected failure (turnbench sim --fail-rate).", None);
    }
    let drop_at =
        (p.stream && cfg.drop_rate > 0.0 && uniform(cfg.seed, 2, n) < cfg.drop_rate).then_some(max_tokens / 2);
    let arrival = Instant::now();
    let mut slot = match admit(&s).await {
        Ok(slot) => slot,
        Err(r) => return r,
    };
    let bs = cfg.block_size;
    let hashes = if cfg.enable_prefix_caching { block_hashes(&p.tokens, bs) } else { Vec::new() };
    let cached = if cfg.enable_prefix_caching { lock(&s.cache).lookup(&hashes, prompt_len) } else { 0 };
    s.queries.fetch_add(prompt_len as u64, Relaxed);
    s.hits.fetch_add(cached as u64, Relaxed);
    s.prompt_tokens.fetch_add(prompt_len as u64, Relaxed);
    slot.blocks = (prompt_len + max_tokens).div_ceil(bs);
    s.blocks_in_use.fetch_add(slot.blocks, Relaxed);

    let answer_seed = mix64(p.tokens.iter().fold(cfg.seed, |h, &t| mix64(h ^ u64::from(t))));
    let prefix = if p.kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    let id = format!("{prefix}-{:016x}{:016x}", mix64(cfg.seed ^ 0x1d), mix64(n));
    let job = Job {
        s: s.clone(),
        _slot: slot,
        kind: p.kind,
        id,
        created: unix_secs(),
        tokens: p.tokens,
        hashes,
        cached,
        max_tokens,
        answer_seed,
        include_usage: p.include_usage,
        drop_at,
        arrival,
    };
    if p.stream {
        sse_response(job)
    } else {
        json_response(job).await
    }
}

struct Job {
    s: Arc<Shared>,
    _slot: Slot,
    kind: Kind,
    id: String,
    created: u64,
    tokens: Vec<u32>,
    hashes: Vec<u64>,
    cached: usize,
    max_tokens: usize,
    answer_seed: u64,
    include_usage: bool,
    drop_at: Option<usize>,
    arrival: Instant,
}

impl Job {
    /// Output token `i` as text. Chat answers start without a space (they follow the template's
    /// `\n`); completions continue the prompt, so every word has its leading space.
    fn word(&self, i: usize) -> &'static str {
        let w = WORDS[(mix64(self.answer_seed ^ i as u64) % WORDS.len() as u64) as usize];
        if i == 0 && self.kind == Kind::Chat {
            &w[1..]
        } else {
            w
        }
    }

    fn running(&self) -> usize {
        self.s.running.load(Relaxed).max(1)
    }

    /// Sleeps the time to first token (if any), then caches the prompt's blocks.
    async fn prefill(&self) {
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
    fn finish(&self, itl: &Histogram) {
        let s = &self.s;
        if s.cfg.enable_prefix_caching {
            let mut all = Vec::with_capacity(self.tokens.len() + self.max_tokens);
            all.extend_from_slice(&self.tokens);
            all.extend((0..self.max_tokens.saturating_sub(1)).map(|i| piece_id(self.word(i))));
            let hashes = block_hashes(&all, s.cfg.block_size);
            lock(&s.cache).insert(&hashes[self.hashes.len()..]);
        }
        s.generation_tokens.fetch_add(self.max_tokens as u64, Relaxed);
        s.success.fetch_add(1, Relaxed);
        let mut h = lock(&s.histograms);
        h.itl.merge(itl);
        h.e2e.observe(self.arrival.elapsed().as_secs_f64());
    }

    fn usage_json(&self) -> String {
        let p = self.tokens.len();
        let c = self.max_tokens;
        format!(
            r#"{{"prompt_tokens":{p},"total_tokens":{},"completion_tokens":{c},"prompt_tokens_details":{{"cached_tokens":{}}}}}"#,
            p + c,
            self.cached
        )
    }
}

fn sse_headers(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response", None))
}

/// Frames are flushed at this size when nothing sleeps between tokens.
const FRAME_BYTES: usize = 32 * 1024;

/// The SSE answer. Each event is `data: {head}{choices…}}\n\n` where `head` (id, object,
/// created, model) is serialised once per request; the words need no JSON escaping.
fn sse_response(job: Job) -> Response {
    let stream = async_stream::stream! {
        job.prefill().await;
        let object = if job.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        let head = format!(
            r#"data: {{"id":"{}","object":"{object}","created":{},"model":{},"choices":"#,
            job.id, job.created, job.s.model_json
        );
        let (open, close, close_last): (&[u8], &[u8], &[u8]) = if job.kind == Kind::Chat {
            (
                br#"[{"index":0,"delta":{"content":""#,
                b"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                b"\"},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}]}\n\n",
            )
        } else {
            (
                br#"[{"index":0,"text":""#,
                b"\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}]}\n\n",
                b"\",\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}]}\n\n",
            )
        };
        let per_event = head.len() + open.len() + close_last.len() + 8;
        let n = job.max_tokens;
        let mut buf = BytesMut::with_capacity((per_event * (n + 2)).min(FRAME_BYTES + per_event));
        if job.kind == Kind::Chat {
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(br#"[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#);
            buf.extend_from_slice(b"\n\n");
        }
        let lat = job.s.cfg.latency;
        let sleeps = !lat.decode_is_zero();
        let mut itl = Histogram::new(ITL_BUCKETS);
        let mut next = Instant::now();
        let mut last = next;
        for i in 0..n {
            if sleeps && i > 0 {
                if !buf.is_empty() {
                    yield Ok::<Bytes, std::io::Error>(buf.split().freeze());
                }
                next += lat.inter_token(job.running());
                tokio::time::sleep_until(next).await;
                let now = Instant::now();
                itl.observe((now - last).as_secs_f64());
                last = now;
            }
            if job.drop_at == Some(i) {
                if !buf.is_empty() {
                    yield Ok(buf.split().freeze());
                }
                // Let the connection write what it has (headers included) before it is cut.
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                yield Err(std::io::Error::other("turnbench sim: injected connection drop (--drop-rate)"));
                return;
            }
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(open);
            buf.extend_from_slice(job.word(i).as_bytes());
            buf.extend_from_slice(if i + 1 == n { close_last } else { close });
            if buf.len() >= FRAME_BYTES {
                yield Ok(buf.split().freeze());
            }
        }
        if !sleeps {
            itl.observe_n(0.0, n.saturating_sub(1) as u64);
        }
        job.finish(&itl);
        if job.include_usage {
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(b"[],\"usage\":");
            buf.extend_from_slice(job.usage_json().as_bytes());
            buf.extend_from_slice(b"}\n\n");
        }
        buf.extend_from_slice(b"data: [DONE]\n\n");
        yield Ok(buf.freeze());
    };
    sse_headers(Body::from_stream(stream))
}

/// The whole answer at once, after the same simulated time as a stream.
async fn json_response(job: Job) -> Response {
    job.prefill().await;
    let lat = job.s.cfg.latency;
    let mut itl = Histogram::new(ITL_BUCKETS);
    if lat.decode_is_zero() {
        itl.observe_n(0.0, job.max_tokens.saturating_sub(1) as u64);
    } else {
        let mut next = Instant::now();
        for _ in 1..job.max_tokens {
            let gap = lat.inter_token(job.running());
            itl.observe(gap.as_secs_f64());
            next += gap;
            tokio::time::sleep_until(next).await;
        }
    }
    let mut text = String::with_capacity(job.max_tokens * 7);
    for i in 0..job.max_tokens {
        text.push_str(job.word(i));
    }
    job.finish(&itl);
    let usage: Value = serde_json::from_str(&job.usage_json()).unwrap_or(Value::Null);
    let model = &job.s.cfg.model_name;
    let body = if job.kind == Kind::Chat {
        json!({
            "id": job.id, "object": "chat.completion", "created": job.created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null, "annotations": null,
                            "audio": null, "function_call": null, "tool_calls": [], "reasoning_content": null},
                "logprobs": null, "finish_reason": "length", "stop_reason": null
            }],
            "service_tier": null, "system_fingerprint": null, "usage": usage, "prompt_logprobs": null,
            "kv_transfer_params": null
        })
    } else {
        json!({
            "id": job.id, "object": "text_completion", "created": job.created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "length",
                         "stop_reason": null, "prompt_logprobs": null}],
            "service_tier": null, "system_fingerprint": null, "usage": usage, "kv_transfer_params": null
        })
    };
    axum::Json(body).into_response()
}
