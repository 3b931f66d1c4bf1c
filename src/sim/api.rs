//! The HTTP surface: vLLM's OpenAI endpoints, `/tokenize`, `/metrics`, `/health`,
//! `/reset_prefix_cache`: the router, the request bodies and their checks, and vLLM-shaped error
//! responses. A completion request becomes a [`Params`] for [`generate`], which checks, admits and
//! answers it on the replica the [`Cluster`] routes it to.

// Handlers' helpers return the error `Response` itself: built once per failed request, moved
// straight out; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::chat::render_chat;
use super::admission::admit;
use super::cluster::Cluster;
use crate::core::blocks::mix64;
use super::errors::{bad_request, error};
use super::exposition::{metrics, replica_metrics};
use super::jobs::{Job, Kind, Params};
use super::sse::{json_response, sse_response};
use super::state::{lock, unix_secs, Shared};
use super::tokenizer::tokenize;
use super::SimConfig;
use crate::core::ChatMessage;

/// Every route of the simulator, on fresh state for `cfg` (`cfg.replicas` engines).
pub(super) fn router(cfg: SimConfig) -> Router {
    let cluster = Arc::new(Cluster::new(cfg));
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize_handler))
        .route("/metrics", get(metrics))
        .route("/replica/{i}/metrics", get(replica_metrics))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "Not Found"}))) })
        .layer(DefaultBodyLimit::max(256 << 20))
        .with_state(cluster)
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

/// A chat message as clients send it: `content` is a string or, as OpenAI allows, a list of
/// content parts (`[{"type": "text", "text": …}]`).
#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: WireContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<Value>),
}

/// The messages with their content parts joined into text (newline between parts, as vLLM does
/// for text-only models). A part of another type (image, audio, …) is a 400 naming it.
fn chat_messages(messages: Vec<WireMessage>) -> Result<Vec<ChatMessage>, Response> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match m.content {
                WireContent::Text(t) => t,
                WireContent::Parts(parts) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, part) in parts.iter().enumerate() {
                        let at = format!("messages[{i}].content[{j}]");
                        let kind = part.get("type").and_then(Value::as_str);
                        match (kind, part.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(text)) => texts.push(text),
                            (Some("text"), None) => {
                                return Err(bad_request(format!("Invalid request: `{at}` is a text part without a string `text`"), Some(&at)))
                            }
                            (Some(other), _) => {
                                return Err(bad_request(
                                    format!("Invalid request: `{at}` has type `{other}`; this model (the turnbench simulator) is text-only and accepts only `text` parts"),
                                    Some(&at),
                                ))
                            }
                            (None, _) => {
                                return Err(bad_request(format!("Invalid request: `{at}` has no `type`"), Some(&at)))
                            }
                        }
                    }
                    texts.join("\n")
                }
            };
            Ok(ChatMessage { role: m.role, content })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Simple endpoints

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn models(State(c): State<Arc<Cluster>>) -> Response {
    let s = c.first();
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

/// Every replica's cache.
async fn reset_prefix_cache(State(c): State<Arc<Cluster>>) -> StatusCode {
    for s in c.replicas() {
        lock(&s.cache).clear();
    }
    StatusCode::OK
}

#[derive(Deserialize)]
struct TokenizeRequest {
    model: Option<String>,
    prompt: Option<Value>,
    messages: Option<Vec<WireMessage>>,
    add_generation_prompt: Option<bool>,
    #[allow(dead_code)]
    add_special_tokens: Option<bool>,
}

async fn tokenize_handler(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let s = c.first();
    let req: TokenizeRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = check_model(s, &req.model) {
        return r;
    }
    let generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let tokens = match (req.messages, &req.prompt) {
        (Some(m), _) => match chat_messages(m) {
            Ok(m) => tokenize(&render_chat(&m, generation_prompt)),
            Err(r) => return r,
        },
        (None, Some(p)) => match prompt_tokens(p) {
            Ok(t) => t,
            Err(r) => return r,
        },
        (None, None) => return bad_request("Invalid request: give either `prompt` or `messages`", None),
    };
    axum::Json(json!({"count": tokens.len(), "max_model_len": s.cfg.max_model_len, "tokens": tokens})).into_response()
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
    messages: Vec<WireMessage>,
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    #[allow(dead_code)]
    ignore_eos: Option<bool>,
    add_generation_prompt: Option<bool>,
    return_token_ids: Option<bool>,
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
    return_token_ids: Option<bool>,
}

fn stream_params(stream: Option<bool>, options: &Option<StreamOptions>) -> Result<(bool, bool), Response> {
    let stream = stream.unwrap_or(false);
    if options.is_some() && !stream {
        return Err(bad_request("Stream options can only be defined when `stream=True`.", Some("stream_options")));
    }
    Ok((stream, options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)))
}

async fn chat_completions(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let s = c.first();
    let req: ChatRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = check_model(s, &req.model) {
        return r;
    }
    let (stream, include_usage) = match stream_params(req.stream, &req.stream_options) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if req.messages.is_empty() {
        return bad_request("Invalid request: `messages` must not be empty", Some("messages"));
    }
    let messages = match chat_messages(req.messages) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let tokens = tokenize(&render_chat(&messages, req.add_generation_prompt.unwrap_or(true)));
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    let return_token_ids = req.return_token_ids.unwrap_or(false);
    let hashes = c.first().prompt_hashes(&tokens);
    let replica = c.route(&hashes, tokens.len());
    generate(replica, Params { kind: Kind::Chat, tokens, hashes, max_tokens, stream, include_usage, return_token_ids }).await
}

async fn completions(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let s = c.first();
    let req: CompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = check_model(s, &req.model) {
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
    let return_token_ids = req.return_token_ids.unwrap_or(false);
    let hashes = c.first().prompt_hashes(&tokens);
    let replica = c.route(&hashes, tokens.len());
    let params =
        Params { kind: Kind::Completion, tokens, hashes, max_tokens: req.max_tokens, stream, include_usage, return_token_ids };
    generate(replica, params).await
}

/// A uniform number in [0, 1) from the seed, a stream tag and the request number.
fn uniform(seed: u64, tag: u64, n: u64) -> f64 {
    (mix64(seed ^ mix64(tag ^ mix64(n))) >> 11) as f64 / (1u64 << 53) as f64
}

/// Checks the lengths, injects failures, admits, looks up the prefix cache and answers.
pub(super) async fn generate(s: Arc<Shared>, p: Params) -> Response {
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
    // Each replica draws its own failures (replica 0, and a lone simulator, as before).
    let draws = if s.engine == 0 { cfg.seed } else { mix64(cfg.seed ^ ((s.engine as u64) << 32)) };
    if cfg.fail_rate > 0.0 && uniform(draws, 1, n) < cfg.fail_rate {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Injected failure (turnbench sim --fail-rate).", None);
    }
    let drop_at =
        (p.stream && cfg.drop_rate > 0.0 && uniform(draws, 2, n) < cfg.drop_rate).then_some(max_tokens / 2);
    let arrival = Instant::now();
    let mut slot = match admit(&s).await {
        Ok(slot) => slot,
        Err(r) => return r,
    };
    let bs = cfg.block_size;
    let hashes = p.hashes;
    let cached = if cfg.enable_prefix_caching { lock(&s.cache).lookup(&hashes, prompt_len) } else { 0 };
    s.queries.fetch_add(prompt_len as u64, Relaxed);
    s.hits.fetch_add(cached as u64, Relaxed);
    s.prompt_tokens.fetch_add(prompt_len as u64, Relaxed);
    slot.blocks = (prompt_len + max_tokens).div_ceil(bs);
    s.blocks_in_use.fetch_add(slot.blocks, Relaxed);

    let answer_seed = mix64(p.tokens.iter().fold(cfg.seed, |h, &t| mix64(h ^ u64::from(t))));
    let prefix = if p.kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    // Replicas count their requests apart: the engine index keeps their ids apart (engine 0's
    // are a single engine's).
    let id = format!("{prefix}-{:016x}{:016x}", mix64(cfg.seed ^ 0x1d ^ ((s.engine as u64) << 32)), mix64(n));
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
        return_token_ids: p.return_token_ids,
        drift: cfg.retokenize_drift > 0.0 && uniform(draws, 3, n) < cfg.retokenize_drift,
    };
    if p.stream {
        sse_response(job)
    } else {
        json_response(job).await
    }
}
