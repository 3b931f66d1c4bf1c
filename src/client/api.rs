//! The server's API beside the completions: what it serves (`/v1/models`, `/metrics`,
//! `/tokenize`), its version, and resetting its prefix cache. Every call carries the run's API key
//! through [`super::authed`], the one place a bearer token is attached.

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::metrics::scrape;
use super::{authed, ChatRequest, Client};
use crate::core::ChatMessage;
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
}

impl ServerInfo {
    /// Asks the server what it is and what it offers. Fails only if `/v1/models` is unusable and
    /// no model was given.
    pub async fn probe(client: &Client, base_url: &str, model: Option<&str>) -> Result<Self> {
        let http = client.http();
        let api_key = client.config().api_key.as_deref();
        let req = authed(http.get(format!("{base_url}/v1/models")).timeout(Duration::from_secs(10)), api_key);
        let models: serde_json::Value = match req.send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        let listed: Vec<&serde_json::Value> = models["data"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        let model = match model {
            Some(m) => m.to_string(),
            None => listed
                .first()
                .and_then(|m| m["id"].as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("{base_url}/v1/models lists no model; pass --model NAME"))?,
        };
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
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
        anyhow::bail!("POST {url}: HTTP {status}: {text}");
    }
    let answer = resp.json().await.with_context(|| format!("POST {url}: not JSON"))?;
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
}

impl ServerTokenizer {
    pub fn new(http: reqwest::Client, base_url: &str, model: Option<String>, api_key: Option<String>) -> Self {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        Self { http, base_url: base.to_string(), model, api_key }
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
        "server /tokenize"
    }
}

/// What the server says its version is (vLLM: `GET /version` → `{"version": ...}`).
pub async fn server_version(http: &reqwest::Client, base_url: &str) -> Option<String> {
    let resp = http.get(format!("{}/version", base_url.trim_end_matches('/'))).timeout(Duration::from_secs(2)).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: serde_json::Value = resp.json().await.ok()?;
    v["version"].as_str().map(|s| s.to_string())
}

/// Clears the server's prefix cache (`POST /reset_prefix_cache`) and verifies it: a probe prompt
/// sent before the reset must find nothing cached after it (by `/metrics` hits, else by usage).
/// `Ok(false)`: reset, but the server reports nothing that could verify it.
pub async fn reset_prefix_cache(client: &Client, server: &ServerInfo) -> Result<bool> {
    let text = "Prefix cache probe. ".repeat(40);
    let messages = [ChatMessage::new("user", text)];
    let request = ChatRequest { base_url: &server.base_url, model: &server.model, messages: &messages, max_tokens: 1 };
    let api_key = client.config().api_key.as_deref();
    let first = client.stream_chat(&request, client.clock().now_ms()).await;
    anyhow::ensure!(first.status.is_ok(), "prefix-cache probe failed: {}", first.error.unwrap_or_default());
    let req = authed(client.http().post(format!("{}/reset_prefix_cache", server.base_url)), api_key);
    let resp = req.send().await.context("POST /reset_prefix_cache")?;
    anyhow::ensure!(
        resp.status().is_success(),
        "POST /reset_prefix_cache answered HTTP {} (vLLM serves it only with VLLM_SERVER_DEV_MODE=1)",
        resp.status()
    );
    let before = scrape(client.http(), &server.base_url, api_key).await.ok();
    let second = client.stream_chat(&request, client.clock().now_ms()).await;
    anyhow::ensure!(second.status.is_ok(), "prefix-cache probe failed: {}", second.error.unwrap_or_default());
    let after = scrape(client.http(), &server.base_url, api_key).await.ok();
    let hits = match (before, after) {
        (Some(b), Some(a)) => a.prefix_cache_delta(&b).map(|d| d.hits),
        _ => None,
    }
    .or(second.usage.cached_tokens);
    match hits {
        Some(0) => Ok(true),
        Some(n) => anyhow::bail!("prefix cache not empty after /reset_prefix_cache: {n} tokens still hit"),
        None => Ok(false),
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
