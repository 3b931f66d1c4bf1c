//! The server's API beside the completions: what it serves (`/v1/models`, `/metrics`,
//! `/tokenize`), its version, and resetting its prefix cache. Every call carries the run's API key
//! through [`super::authed`], the one place a bearer token is attached.

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::metrics::scrape;
use super::{authed, error_chain, read_body_limited, ChatRequest, Client, MAX_SMALL_BODY_BYTES};
use crate::core::{redact, ChatMessage, ServerDied};
use crate::workload::tokens::CountTokens;

/// What the replayer knows about the server it talks to.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub base_url: String,
    pub model: String,
    /// `/v1/models` says `owned_by: turnbench-sim`.
    pub simulated: bool,
    /// `/metrics` answers with vLLM's prefix-cache counters.
    pub has_metrics: bool,
    /// `/tokenize` answers with token ids.
    pub has_tokenize: bool,
    pub block_size: Option<u64>,
    pub prefix_caching: Option<bool>,
    /// KV-cache capacity in blocks (`vllm:cache_config_info{num_gpu_blocks}`).
    pub num_gpu_blocks: Option<u64>,
    /// The server accepts vLLM's `return_token_ids` (found by [`probe_cache`]).
    pub return_token_ids: bool,
    /// Whether `usage.prompt_tokens_details.cached_tokens` came back ([`probe_cache`]).
    pub reports_cached_tokens: Option<bool>,
    /// The model's context window, when `/v1/models` says (`max_model_len`): a prompt above it
    /// makes a record `invalid`.
    pub max_model_len: Option<u64>,
}

/// A small JSON answer (`/v1/models`, `/tokenize`), read within [`MAX_SMALL_BODY_BYTES`].
async fn json_limited(resp: reqwest::Response) -> std::result::Result<serde_json::Value, String> {
    let bytes = read_body_limited(resp, MAX_SMALL_BODY_BYTES).await?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

impl ServerInfo {
    /// Asks the server what it is and what it offers. Fails when nothing answers HTTP at
    /// `base_url` ("cannot connect to URL: <cause>", a [`ServerDied`]), or when `/v1/models` is
    /// unusable and no model was given.
    pub async fn probe(client: &Client, base_url: &str, model: Option<&str>) -> Result<Self> {
        let http = client.http();
        let api_key = client.config().api_key.as_deref();
        let req = authed(http.get(format!("{base_url}/v1/models")).timeout(Duration::from_secs(10)), api_key);
        let mut why_no_list = String::new();
        let models: serde_json::Value = match req.send().await {
            Ok(r) if r.status().is_success() => json_limited(r).await.unwrap_or_else(|e| {
                why_no_list = format!(" (its answer is {})", redact(&e, api_key));
                serde_json::Value::Null
            }),
            Ok(r) => {
                why_no_list = format!(" (it answered HTTP {})", r.status());
                serde_json::Value::Null
            }
            Err(e) => {
                let cause = redact(&error_chain(&e), api_key);
                return Err(ServerDied(format!("cannot connect to {base_url}: {cause}")).into());
            }
        };
        let listed: Vec<&serde_json::Value> = models["data"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        let model = match model {
            Some(m) => m.to_string(),
            None => listed
                .first()
                .and_then(|m| m["id"].as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("{base_url}/v1/models lists no model{why_no_list}; pass --model NAME"))?,
        };
        let max_model_len = listed
            .iter()
            .find(|m| m["id"].as_str() == Some(model.as_str()))
            .and_then(|m| m["max_model_len"].as_u64())
            .filter(|n| *n > 0);
        let simulated = listed
            .iter()
            .any(|m| m["id"].as_str() == Some(model.as_str()) && m["owned_by"].as_str() == Some("turnbench-sim"));
        let snapshot = scrape(http, base_url, api_key).await.ok();
        let mut info = ServerInfo {
            base_url: base_url.to_string(),
            model,
            simulated,
            has_metrics: snapshot.as_ref().is_some_and(|s| s.prefix_cache_queries.is_some()),
            has_tokenize: false,
            block_size: snapshot.as_ref().and_then(|s| s.block_size),
            prefix_caching: snapshot.as_ref().and_then(|s| s.prefix_caching),
            num_gpu_blocks: snapshot.as_ref().and_then(|s| s.num_gpu_blocks),
            return_token_ids: false,
            reports_cached_tokens: None,
            max_model_len,
        };
        info.has_tokenize = tokenize(client, &info, &[ChatMessage::new("user", "hi")]).await.is_some();
        Ok(info)
    }
}

/// Token ids of the prompt the server builds from `messages` (`/tokenize`), if it offers that.
pub async fn tokenize(client: &Client, server: &ServerInfo, messages: &[ChatMessage]) -> Option<Vec<u32>> {
    let body = json!({"model": server.model, "messages": messages, "add_generation_prompt": true});
    tokenize_body(client.http(), &server.base_url, client.config().api_key.as_deref(), body).await.ok()
}

/// Token ids of an already rendered `prompt` (`/tokenize` with `prompt`), if the server offers that.
pub async fn tokenize_prompt(client: &Client, server: &ServerInfo, prompt: &str) -> Option<Vec<u32>> {
    let body = json!({"model": server.model, "prompt": prompt});
    tokenize_body(client.http(), &server.base_url, client.config().api_key.as_deref(), body).await.ok()
}

/// Token ids of a `/tokenize` call.
async fn tokenize_body(http: &reqwest::Client, base_url: &str, api_key: Option<&str>, body: serde_json::Value) -> Result<Vec<u32>> {
    let (url, answer) = post_tokenize(http, base_url, api_key, body).await?;
    answer["tokens"]
        .as_array()
        .and_then(|a| a.iter().map(|t| t.as_u64().and_then(|v| u32::try_from(v).ok())).collect())
        .with_context(|| format!("POST {url}: response has no `tokens` list"))
}

/// `POST /tokenize` (vLLM's, at the server root): its URL and JSON answer.
async fn post_tokenize(
    http: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
    body: serde_json::Value,
) -> Result<(String, serde_json::Value)> {
    let url = format!("{}/tokenize", base_url.trim_end_matches('/'));
    let resp = authed(http.post(&url).json(&body).timeout(Duration::from_secs(60)), api_key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: {}", redact(&error_chain(&e), api_key)))?;
    let status = resp.status();
    let body = read_body_limited(resp, MAX_SMALL_BODY_BYTES).await.map_err(|e| anyhow::anyhow!("POST {url}: {e}"))?;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        anyhow::bail!("POST {url}: HTTP {status}: {}", redact(&text, api_key));
    }
    let answer = serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("POST {url}: not JSON: {e}"))?;
    Ok((url, answer))
}

/// Counts prompt tokens with the server's own tokenizer and chat template (`/tokenize`).
#[derive(Debug, Clone)]
pub struct ServerTokenizer {
    pub http: reqwest::Client,
    /// The server root (a trailing `/` or `/v1` is dropped: `/tokenize` lives at the root).
    pub base_url: String,
    pub model: Option<String>,
    pub api_key: Option<String>,
    /// `/tokenize of <model> at <url>`, for listings.
    label: String,
}

impl ServerTokenizer {
    pub fn new(http: reqwest::Client, base_url: &str, model: Option<String>, api_key: Option<String>) -> Self {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let label = format!("/tokenize of {} at {base}", model.as_deref().unwrap_or("the served model"));
        Self { http, base_url: base.to_string(), model, api_key, label }
    }

    /// The counter of a probed server, on the run's client and key.
    pub fn of(client: &Client, server: &ServerInfo) -> Self {
        Self::new(client.http().clone(), &server.base_url, Some(server.model.clone()), client.config().api_key.clone())
    }
}

impl CountTokens for ServerTokenizer {
    fn count_messages<'a>(&'a self, messages: &'a [ChatMessage]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut body = json!({ "messages": messages, "add_generation_prompt": true });
            if let Some(model) = &self.model {
                body["model"] = json!(model);
            }
            let (url, answer) = post_tokenize(&self.http, &self.base_url, self.api_key.as_deref(), body).await?;
            answer["count"].as_u64().with_context(|| format!("POST {url}: response has no numeric `count`"))
        })
    }

    fn is_estimate(&self) -> bool {
        false
    }

    fn describe(&self) -> &str {
        &self.label
    }
}

/// What the server says its version is (vLLM: `GET /version` → `{"version": ...}`).
pub async fn server_version(http: &reqwest::Client, base_url: &str) -> Option<String> {
    let resp = http.get(format!("{}/version", base_url.trim_end_matches('/'))).timeout(Duration::from_secs(2)).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v = json_limited(resp).await.ok()?;
    v["version"].as_str().map(|s| s.chars().take(200).collect())
}

/// What [`probe_cache`] found, and the requests it sent (the cache now holds them).
pub struct CacheProbe {
    pub return_token_ids: bool,
    pub reports_cached_tokens: Option<bool>,
    pub sent: Vec<super::ChatOutcome>,
}

/// At bring-up, one prompt sent twice: does the server take `return_token_ids` (a server that
/// refuses unknown fields answers 400, and is asked again without), and does it report
/// `cached_tokens` at all (vLLM only with `--enable-prompt-tokens-details`)?
pub async fn probe_cache(client: &Client, server: &ServerInfo) -> CacheProbe {
    let text = "turnbench cache probe: does this server report cached prompt tokens? ".repeat(12);
    let messages = [ChatMessage::new("user", text)];
    let mut request = ChatRequest {
        base_url: &server.base_url,
        model: &server.model,
        messages: &messages,
        max_tokens: 2,
        return_token_ids: true,
    };
    let mut sent = Vec::new();
    let Some(mut first) = ask(client, &request).await else {
        return CacheProbe { return_token_ids: false, reports_cached_tokens: None, sent };
    };
    if first.status == crate::core::record::Status::Http4xx {
        request.return_token_ids = false;
        match ask(client, &request).await {
            Some(o) => first = o,
            None => return CacheProbe { return_token_ids: false, reports_cached_tokens: None, sent },
        }
    }
    let ok = first.status.is_ok();
    let return_token_ids = request.return_token_ids && first.prompt_token_ids.is_some();
    sent.push(first);
    if !ok {
        return CacheProbe { return_token_ids, reports_cached_tokens: None, sent };
    }
    let reports = match ask(client, &request).await {
        Some(second) => {
            let reports = second.status.is_ok().then_some(second.usage.cached_tokens.is_some());
            sent.push(second);
            reports
        }
        None => None,
    };
    CacheProbe { return_token_ids, reports_cached_tokens: reports, sent }
}

/// One probe request, or `None` when the server does not answer it within [`PROBE_TIMEOUT`]
/// (a probe never holds a run up).
async fn ask(client: &Client, request: &ChatRequest<'_>) -> Option<super::ChatOutcome> {
    tokio::time::timeout(PROBE_TIMEOUT, client.stream_chat(request, client.clock().now_ms())).await.ok()
}

/// How long one bring-up probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Clears the server's prefix cache (`POST /reset_prefix_cache`) and verifies it: a probe prompt
/// sent before the reset must find nothing cached after it (by `/metrics` hits, else by usage).
/// Returns whether that was verified (`false`: the server reports nothing that could), and the
/// probe sent after the reset (the cache holds it).
pub async fn reset_prefix_cache(client: &Client, server: &ServerInfo) -> Result<(bool, super::ChatOutcome)> {
    let text = "Prefix cache probe. ".repeat(40);
    let messages = [ChatMessage::new("user", text)];
    let request = ChatRequest {
        base_url: &server.base_url,
        model: &server.model,
        messages: &messages,
        max_tokens: 1,
        return_token_ids: server.return_token_ids,
    };
    let api_key = client.config().api_key.as_deref();
    let first = client.stream_chat(&request, client.clock().now_ms()).await;
    anyhow::ensure!(first.status.is_ok(), "prefix-cache probe failed: {}", first.error.unwrap_or_default());
    let req = authed(client.http().post(format!("{}/reset_prefix_cache", server.base_url)), api_key);
    let resp = req.timeout(Duration::from_secs(60)).send().await.context("POST /reset_prefix_cache")?;
    anyhow::ensure!(
        resp.status().is_success(),
        "POST /reset_prefix_cache answered HTTP {} (vLLM serves it only with VLLM_SERVER_DEV_MODE=1)",
        resp.status()
    );
    let before = scrape(client.http(), &server.base_url, api_key).await.ok();
    let second = client.stream_chat(&request, client.clock().now_ms()).await;
    anyhow::ensure!(second.status.is_ok(), "prefix-cache probe failed: {}", second.error.clone().unwrap_or_default());
    let after = scrape(client.http(), &server.base_url, api_key).await.ok();
    let hits = match (before, after) {
        (Some(b), Some(a)) => a.prefix_cache_delta(&b).map(|d| d.hits),
        _ => None,
    }
    .or(second.usage.cached_tokens);
    match hits {
        Some(0) => Ok((true, second)),
        Some(n) => anyhow::bail!("prefix cache not empty after /reset_prefix_cache: {n} tokens still hit"),
        None => Ok((false, second)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_base_url_drops_v1() {
        let t = ServerTokenizer::new(reqwest::Client::new(), "http://h:8000/v1/", None, None);
        assert_eq!(t.base_url, "http://h:8000");
    }
}
