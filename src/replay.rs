//! The replay engine: one conversation, turn by turn, the model's real answers becoming history.
//! Every workload (one user, many users, rates) runs conversations through [`replay_conversation`].

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::{ChatOutcome, ChatRequest, Client, CompletionRequest};
use crate::metrics::server::{scrape, ServerSnapshot};
use crate::record::{CacheObservation, Recorder, RenderedPrompt, ReuseFlag, Status, TurnRecord};
use crate::workload::prompt::{ChatMessage, ConversationState};
use crate::workload::Conversation;

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
    /// The server process, when turnbench manages it: a failed turn says whether it died.
    pub process: Option<crate::engine::ProcessWatch>,
    /// `--prompt-mode completion`: render each turn's prompt with this template and send it to
    /// `/v1/completions`. `None`: chat mode, the server applies its own template.
    pub template: Option<std::sync::Arc<crate::template::ChatTemplate>>,
}

impl ServerInfo {
    /// Asks the server what it is and what it offers. Fails only if `/v1/models` is unusable and
    /// no model was given.
    pub async fn probe(client: &Client, base_url: &str, model: Option<&str>) -> Result<Self> {
        let http = client.http();
        let api_key = client.config().api_key.as_deref();
        let mut req = http.get(format!("{base_url}/v1/models")).timeout(Duration::from_secs(10));
        if let Some(k) = api_key {
            req = req.bearer_auth(k);
        }
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
            process: None,
            template: None,
        };
        info.has_tokenize = tokenize(client, &info, &[ChatMessage::new("user", "hi")]).await.is_some();
        Ok(info)
    }
}

/// Token ids of the prompt the server builds from `messages` (`/tokenize`), if it offers that.
pub async fn tokenize(client: &Client, server: &ServerInfo, messages: &[ChatMessage]) -> Option<Vec<u32>> {
    tokenize_body(client, server, json!({"model": server.model, "messages": messages, "add_generation_prompt": true})).await
}

/// Token ids of an already rendered `prompt` (`/tokenize` with `prompt`), if the server offers that.
pub async fn tokenize_prompt(client: &Client, server: &ServerInfo, prompt: &str) -> Option<Vec<u32>> {
    tokenize_body(client, server, json!({"model": server.model, "prompt": prompt})).await
}

async fn tokenize_body(client: &Client, server: &ServerInfo, body: serde_json::Value) -> Option<Vec<u32>> {
    let mut req = client
        .http()
        .post(format!("{}/tokenize", server.base_url))
        .json(&body)
        .timeout(Duration::from_secs(60));
    if let Some(k) = &client.config().api_key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    body["tokens"].as_array()?.iter().map(|t| t.as_u64().map(|v| v as u32)).collect()
}

/// Run-wide settings of the replayer.
#[derive(Clone)]
pub struct ReplaySettings {
    pub think_time: Duration,
    /// Scrape `/metrics` around each turn (exact only when one request is in flight).
    pub metrics_deltas: bool,
    /// Set: start no new turn. (First Ctrl-C.)
    pub stop: CancellationToken,
    /// Set: abandon the turn in flight. (Second Ctrl-C.)
    pub abort: CancellationToken,
}

/// How a conversation's replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationEnd {
    Completed,
    /// A turn failed; later turns were not sent.
    Failed,
    /// Stopped by Ctrl-C before the last turn.
    Interrupted,
}

/// Identity of one replayed conversation inside a run.
#[derive(Debug, Clone, Default)]
pub struct ReplayLabels {
    pub test: u32,
    pub level: Option<String>,
    pub session: Option<u32>,
}

/// When a conversation's turns are due, for schedulers that start many conversations.
#[derive(Debug, Clone, Default)]
pub struct Pacing {
    /// Open loop: the arrival time of the first turn (ms on the run clock). It is recorded as
    /// the turn's `scheduled_ms`, so time spent waiting to be sent counts (no coordinated
    /// omission). `None`: the first turn is due when the replay starts.
    pub first_turn_scheduled_ms: Option<f64>,
    /// Think time before each later turn drawn uniformly from `[min, max]` (seeded by `seed`),
    /// instead of `ReplaySettings::think_time`.
    pub think_range: Option<(Duration, Duration)>,
    pub seed: u64,
    /// Closed loop with more active conversations than clients: a permit is held for each
    /// request, so at most the gate's size are in flight; waiting for one counts as queue time.
    pub request_gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

/// Replays `conversation` turn by turn against `server`, recording every turn.
pub async fn replay_conversation(
    client: &Client,
    server: &ServerInfo,
    settings: &ReplaySettings,
    recorder: &Recorder,
    labels: &ReplayLabels,
    conversation: &Conversation,
) -> Result<ConversationEnd> {
    replay_conversation_paced(client, server, settings, recorder, labels, conversation, &Pacing::default()).await
}

/// [`replay_conversation`] with a scheduled first turn and/or random think times.
pub async fn replay_conversation_paced(
    client: &Client,
    server: &ServerInfo,
    settings: &ReplaySettings,
    recorder: &Recorder,
    labels: &ReplayLabels,
    conversation: &Conversation,
    pacing: &Pacing,
) -> Result<ConversationEnd> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(pacing.seed);
    let mut state = ConversationState::new(conversation);
    let mut previous_tokens: Option<Vec<u32>> = None;
    for index in 0..conversation.turns.len() {
        if settings.stop.is_cancelled() {
            return Ok(ConversationEnd::Interrupted);
        }
        let think = match pacing.think_range {
            Some((min, max)) if max > min => rng.random_range(min..=max),
            Some((min, _)) => min,
            None => settings.think_time,
        };
        if index > 0 && !think.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(think) => {}
                _ = settings.stop.cancelled() => return Ok(ConversationEnd::Interrupted),
            }
        }
        let prompt = state.begin_turn();
        // Completion mode: the exact prompt is rendered here, so it is known and recorded.
        let rendered = match &server.template {
            Some(t) => Some(t.render(&prompt.messages, true).with_context(|| {
                format!("rendering turn {} of {} with {}", index + 1, conversation.id, t.origin())
            })?),
            None => None,
        };
        let prompt_tokens = match (&rendered, server.has_tokenize) {
            (_, false) => None,
            (Some(text), true) => tokenize_prompt(client, server, text).await,
            (None, true) => tokenize(client, server, &prompt.messages).await,
        };
        let before = metrics_snapshot(client, server, settings).await;
        let scheduled_ms = match pacing.first_turn_scheduled_ms {
            Some(at) if index == 0 => at,
            _ => client.clock().now_ms(),
        };
        let _permit = match &pacing.request_gate {
            None => None,
            Some(gate) => tokio::select! {
                permit = gate.clone().acquire_owned() => Some(permit?),
                _ = settings.stop.cancelled() => return Ok(ConversationEnd::Interrupted),
            },
        };
        let send = send_prompt(client, server, &prompt.messages, rendered.as_deref(), prompt.max_tokens, scheduled_ms);
        let mut outcome = tokio::select! {
            outcome = send => outcome,
            _ = settings.abort.cancelled() => {
                eprintln!("turn {} of {} abandoned (second Ctrl-C); not recorded", index + 1, conversation.id);
                return Ok(ConversationEnd::Interrupted);
            }
        };
        drop(_permit);
        if matches!(outcome.status, Status::Connect | Status::Stream | Status::Timeout) {
            if let Some(note) = match &server.process {
                Some(p) => p.death_note(Duration::from_secs(2)).await,
                None => None,
            } {
                let error = outcome.error.take().unwrap_or_default();
                outcome.error = Some(format!("{error}; {note}"));
            }
        }
        let after = metrics_snapshot(client, server, settings).await;
        let delta = match (&before, &after) {
            (Some(b), Some(a)) => a.prefix_cache_delta(b),
            _ => None,
        };
        let cache = observe_cache(
            previous_tokens.as_deref(),
            prompt_tokens.as_deref(),
            server.block_size,
            outcome.usage.cached_tokens.or(delta.map(|d| d.hits)),
        );
        let ok = outcome.status.is_ok();
        let answer = outcome.text.clone();
        let mut record = build_record(labels, conversation, index, &prompt, outcome, delta.map(|d| (d.hits, d.queries)), cache);
        if let (Some(text), Some(template)) = (&rendered, &server.template) {
            record.prompt = Some(rendered_prompt(template.origin(), text, prompt_tokens.as_deref()));
        }
        recorder.record(record)?;
        if !ok {
            return Ok(ConversationEnd::Failed);
        }
        state.finish_turn(answer);
        previous_tokens = prompt_tokens;
    }
    Ok(ConversationEnd::Completed)
}

async fn metrics_snapshot(client: &Client, server: &ServerInfo, settings: &ReplaySettings) -> Option<ServerSnapshot> {
    if !(settings.metrics_deltas && server.has_metrics) {
        return None;
    }
    scrape(client.http(), &server.base_url, client.config().api_key.as_deref()).await.ok()
}

fn build_record(
    labels: &ReplayLabels,
    conversation: &Conversation,
    index: usize,
    prompt: &crate::workload::prompt::TurnPrompt,
    outcome: ChatOutcome,
    server_delta: Option<(u64, u64)>,
    mut cache: CacheObservation,
) -> TurnRecord {
    cache.server_hits = server_delta.map(|d| d.0);
    cache.server_queries = server_delta.map(|d| d.1);
    outcome.into_record(TurnRecord {
        test: labels.test,
        conversation_id: conversation.id.clone(),
        tags: conversation.tags.clone(),
        turn: index as u32 + 1,
        level: labels.level.clone(),
        session: labels.session,
        rag_phase: prompt.rag_phase,
        rag_actions: prompt.rag_actions.clone(),
        max_tokens: prompt.max_tokens,
        cache,
        ..Default::default()
    })
}

/// Sends one prompt: `rendered` (completion mode) to `/v1/completions`, else the messages to
/// `/v1/chat/completions`, where the server applies its template.
pub async fn send_prompt(
    client: &Client,
    server: &ServerInfo,
    messages: &[ChatMessage],
    rendered: Option<&str>,
    max_tokens: u32,
    scheduled_ms: f64,
) -> ChatOutcome {
    let (base_url, model) = (server.base_url.as_str(), server.model.as_str());
    match rendered {
        Some(prompt) => {
            client.stream_completion(&CompletionRequest { base_url, model, prompt, max_tokens }, scheduled_ms).await
        }
        None => client.stream_chat(&ChatRequest { base_url, model, messages, max_tokens }, scheduled_ms).await,
    }
}

/// What a turn records about a prompt it rendered itself.
pub fn rendered_prompt(template: &str, text: &str, tokens: Option<&[u32]>) -> RenderedPrompt {
    use sha2::{Digest, Sha256};
    RenderedPrompt {
        mode: "completion".into(),
        template: template.to_string(),
        chars: text.chars().count() as u64,
        tokens: tokens.map(|t| t.len() as u64),
        sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
    }
}

/// Expected reuse of a turn (DESIGN §5): the longest common token prefix with the previous
/// prompt, capped so one prompt token is always computed (as vLLM does), rounded down to whole
/// blocks; and a flag when the observed reuse falls short, with its likely reason.
pub fn observe_cache(
    previous: Option<&[u32]>,
    current: Option<&[u32]>,
    block_size: Option<u64>,
    observed: Option<u64>,
) -> CacheObservation {
    let mut obs = CacheObservation { block_size, ..Default::default() };
    let (Some(previous), Some(current)) = (previous, current) else { return obs };
    let common = previous.iter().zip(current).take_while(|(a, b)| a == b).count() as u64;
    obs.common_prefix_tokens = Some(common);
    obs.previous_prompt_tokens = Some(previous.len() as u64);
    let Some(block) = block_size.filter(|b| *b > 0) else { return obs };
    let reusable = common.min((current.len() as u64).saturating_sub(1));
    let expected = reusable / block * block;
    obs.expected_reusable_tokens = Some(expected);
    obs.flag = classify_reuse(observed, common, expected, previous.len() as u64, block);
    obs
}

/// Why a turn reused less than it ideally could; `None` when reuse is as expected.
pub fn classify_reuse(observed: Option<u64>, common: u64, expected: u64, previous: u64, block: u64) -> Option<ReuseFlag> {
    let observed = observed?;
    if observed + block <= expected {
        Some(ReuseFlag::Eviction)
    } else if observed < expected {
        Some(ReuseFlag::BlockRounding)
    } else if common + block <= previous {
        Some(ReuseFlag::DivergentPrompt)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_reuse_is_common_prefix_rounded_to_blocks() {
        let prev: Vec<u32> = (0..100).collect();
        let mut cur: Vec<u32> = (0..100).collect();
        cur.extend(200..250);
        let obs = observe_cache(Some(&prev), Some(&cur), Some(16), Some(96));
        assert_eq!(obs.common_prefix_tokens, Some(100));
        assert_eq!(obs.expected_reusable_tokens, Some(96));
        assert_eq!(obs.flag, None);
    }

    #[test]
    fn shortfalls_are_classified() {
        let prev: Vec<u32> = (0..100).collect();
        let mut cur: Vec<u32> = (0..100).collect();
        cur.extend(200..250);
        assert_eq!(observe_cache(Some(&prev), Some(&cur), Some(16), Some(48)).flag, Some(ReuseFlag::Eviction));
        assert_eq!(observe_cache(Some(&prev), Some(&cur), Some(16), Some(90)).flag, Some(ReuseFlag::BlockRounding));
        // A document removed near the start: the prompt diverges at token 10.
        let mut diverged: Vec<u32> = (0..10).collect();
        diverged.extend(500..600);
        let obs = observe_cache(Some(&prev), Some(&diverged), Some(16), Some(0));
        assert_eq!(obs.expected_reusable_tokens, Some(0));
        assert_eq!(obs.flag, Some(ReuseFlag::DivergentPrompt));
    }

    #[test]
    fn one_prompt_token_is_always_computed() {
        let prev: Vec<u32> = (0..64).collect();
        let cur: Vec<u32> = (0..64).collect();
        let obs = observe_cache(Some(&prev), Some(&cur), Some(16), Some(48));
        assert_eq!(obs.expected_reusable_tokens, Some(48));
        assert_eq!(obs.flag, None);
    }

    #[test]
    fn first_turn_has_no_expectation() {
        let obs = observe_cache(None, Some(&[1, 2, 3]), Some(16), Some(0));
        assert_eq!(obs.expected_reusable_tokens, None);
        assert_eq!(obs.flag, None);
    }
}
