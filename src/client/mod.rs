//! OpenAI streaming client: one request → [`ChatOutcome`] with raw monotonic instants, the
//! server's `usage`, and a [`Status`] (DESIGN §5). Tokens are never counted from chunks.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

pub mod api;
pub mod metrics;

use crate::core::record::{RequestTiming, Status, TurnRecord, Usage};
pub use crate::core::RunClock;
use crate::core::ChatMessage;

/// `req` with `Authorization: Bearer <key>` when there is a key.
pub fn authed(req: reqwest::RequestBuilder, api_key: Option<&str>) -> reqwest::RequestBuilder {
    match api_key {
        Some(key) => req.bearer_auth(key),
        None => req,
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent as a bearer token; never written anywhere.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub request_timeout: Duration,
    /// Send vLLM's `ignore_eos` so answers are exactly `max_tokens` long (reproducible lengths).
    pub ignore_eos: bool,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    /// Server base URL, e.g. `http://127.0.0.1:8000`.
    pub base_url: &'a str,
    pub model: &'a str,
    pub messages: &'a [ChatMessage],
    pub max_tokens: u32,
}

/// One `/v1/completions` request: a prompt rendered locally (`--prompt-mode completion`).
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    pub base_url: &'a str,
    pub model: &'a str,
    pub prompt: &'a str,
    pub max_tokens: u32,
}

/// Everything one request produced, failed or not.
#[derive(Debug, Clone, Default)]
pub struct ChatOutcome {
    pub timing: RequestTiming,
    pub usage: Usage,
    pub status: Status,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The streamed answer text (becomes history).
    pub text: String,
    /// Content-bearing chunks received.
    pub output_chunks: u64,
}

impl ChatOutcome {
    /// `record` with this request's outcome (status, timing, usage) filled in.
    pub fn into_record(self, record: TurnRecord) -> TurnRecord {
        TurnRecord {
            status: self.status,
            http_status: self.http_status,
            error: self.error,
            derived: self.timing.derive(self.usage.completion_tokens),
            timing: self.timing,
            usage: self.usage,
            output_chunks: self.output_chunks,
            ..record
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
    clock: RunClock,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    /// `/v1/completions` streams text here.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    cached_tokens: Option<u64>,
}

/// Why a request failed: its status, the HTTP code if one came, and a message.
struct Failure(Status, Option<u16>, String);

impl Client {
    pub fn new(config: ClientConfig, clock: RunClock) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http, config, clock })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Streams one chat completion. Never returns an error: failures are part of the outcome.
    pub async fn stream_chat(&self, request: &ChatRequest<'_>, scheduled_ms: f64) -> ChatOutcome {
        let input = ("messages", json!(request.messages));
        self.stream(request.base_url, "/v1/chat/completions", request.model, input, request.max_tokens, scheduled_ms).await
    }

    /// Streams one text completion (`/v1/completions`) of an already rendered `prompt`, through
    /// the same streaming path as [`stream_chat`](Self::stream_chat).
    pub async fn stream_completion(&self, request: &CompletionRequest<'_>, scheduled_ms: f64) -> ChatOutcome {
        let input = ("prompt", json!(request.prompt));
        self.stream(request.base_url, "/v1/completions", request.model, input, request.max_tokens, scheduled_ms).await
    }

    /// One streamed request: `input` is the endpoint's prompt field (`messages` or `prompt`).
    async fn stream(
        &self,
        base_url: &str,
        path: &str,
        model: &str,
        input: (&str, serde_json::Value),
        max_tokens: u32,
        scheduled_ms: f64,
    ) -> ChatOutcome {
        let mut body = json!({
            "model": model,
            "max_tokens": max_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        body[input.0] = input.1;
        if self.config.ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        let url = format!("{}{path}", base_url.trim_end_matches('/'));
        let (url, body) = (url.as_str(), &body);
        let sent = Instant::now();
        let mut outcome = ChatOutcome::default();
        outcome.timing.scheduled_ms = scheduled_ms.min(self.clock.ms(sent));
        outcome.timing.sent_ms = self.clock.ms(sent);
        let deadline = sent + self.config.request_timeout;
        let first_token_deadline = sent + self.config.first_token_timeout;
        let result = tokio::time::timeout_at(deadline, self.stream_inner(url, body, &mut outcome, first_token_deadline))
            .await
            .unwrap_or_else(|_| {
                Err(Failure(
                    Status::Timeout,
                    None,
                    format!("request took longer than {:?}", self.config.request_timeout),
                ))
            });
        outcome.timing.end_ms = self.clock.now_ms();
        if let Err(Failure(status, http_status, message)) = result {
            outcome.status = status;
            outcome.http_status = outcome.http_status.or(http_status);
            outcome.error = Some(message);
        }
        outcome
    }

    async fn stream_inner(
        &self,
        url: &str,
        body: &serde_json::Value,
        outcome: &mut ChatOutcome,
        first_token_deadline: Instant,
    ) -> Result<(), Failure> {
        let req = authed(self.http.post(url).json(body), self.config.api_key.as_deref());
        let response = tokio::time::timeout_at(first_token_deadline, req.send())
            .await
            .map_err(|_| first_token_timeout(&self.config))?
            .map_err(classify_reqwest)?;
        let http_status = response.status();
        outcome.http_status = Some(http_status.as_u16());
        if !http_status.is_success() {
            let status = if http_status.is_client_error() { Status::Http4xx } else { Status::Http5xx };
            let text = response.text().await.unwrap_or_default();
            return Err(Failure(status, Some(http_status.as_u16()), error_message(http_status, &text)));
        }
        let mut events = response.bytes_stream().eventsource();
        let mut done = false;
        loop {
            let next = if outcome.timing.first_token_ms.is_none() {
                tokio::time::timeout_at(first_token_deadline, events.next())
                    .await
                    .map_err(|_| first_token_timeout(&self.config))?
            } else {
                events.next().await
            };
            let Some(event) = next else { break };
            let event = event.map_err(|e| Failure(Status::Stream, None, format!("stream broke: {e}")))?;
            let at = self.clock.now_ms();
            if event.data.trim() == "[DONE]" {
                done = true;
                break;
            }
            let chunk: Chunk = serde_json::from_str(&event.data).map_err(|e| {
                Failure(Status::Stream, None, format!("unparseable chunk ({e}): {}", truncate(&event.data, 200)))
            })?;
            let content = chunk
                .choices
                .first()
                .and_then(|c| c.delta.as_ref().and_then(|d| d.content.as_deref()).or(c.text.as_deref()))
                .unwrap_or("");
            if !content.is_empty() {
                outcome.timing.first_token_ms.get_or_insert(at);
                outcome.timing.content_chunk_ms.push(at);
                outcome.output_chunks += 1;
                outcome.text.push_str(content);
            }
            if let Some(u) = chunk.usage {
                outcome.usage = Usage {
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                    cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
                };
            }
        }
        if !done {
            return Err(Failure(Status::Stream, None, "stream ended before data: [DONE]".into()));
        }
        Ok(())
    }
}

fn first_token_timeout(config: &ClientConfig) -> Failure {
    Failure(Status::Timeout, None, format!("no first token within {:?}", config.first_token_timeout))
}

fn classify_reqwest(e: reqwest::Error) -> Failure {
    let status = if e.is_connect() {
        Status::Connect
    } else if e.is_timeout() {
        Status::Timeout
    } else {
        Status::Stream
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Failure(status, None, message)
}

/// The `error.message` of an OpenAI-style error body, else the body itself.
fn error_message(status: reqwest::StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| truncate(body, 300).to_string());
    format!("HTTP {}: {message}", status.as_u16())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
