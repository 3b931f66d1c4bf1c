//! The replay engine: one conversation, turn by turn, the model's real answers becoming history.
//! Every workload (one user, many users, rates) runs conversations through [`replay_conversation`].

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::client::api::{tokenize, tokenize_prompt, ServerInfo};
use crate::client::metrics::{scrape, ServerSnapshot};
use crate::client::{ChatOutcome, ChatRequest, Client, CompletionRequest};
use crate::core::record::{CacheObservation, Recorder, RenderedPrompt, Status, TurnRecord};
use crate::core::ChatMessage;
use crate::engine::ProcessWatch;
use crate::ledger::observe_cache;
use crate::template::ChatTemplate;
use crate::workload::prompt::ConversationState;
use crate::workload::Conversation;

/// The server a replay talks to: what it offers and, when turnbench manages it, its process (a
/// failed turn then says whether the server died); in `--prompt-mode completion`, the template
/// each turn's prompt is rendered with (sent to `/v1/completions`).
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub info: ServerInfo,
    pub process: Option<ProcessWatch>,
    /// `None`: chat mode, the server applies its own template.
    pub template: Option<Arc<ChatTemplate>>,
}

impl From<ServerInfo> for Target {
    fn from(info: ServerInfo) -> Self {
        Target { info, process: None, template: None }
    }
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
    server: &Target,
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
    server: &Target,
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
        let prompt_tokens = match (&rendered, server.info.has_tokenize) {
            (_, false) => None,
            (Some(text), true) => tokenize_prompt(client, &server.info, text).await,
            (None, true) => tokenize(client, &server.info, &prompt.messages).await,
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
            server.info.block_size,
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

async fn metrics_snapshot(client: &Client, server: &Target, settings: &ReplaySettings) -> Option<ServerSnapshot> {
    if !(settings.metrics_deltas && server.info.has_metrics) {
        return None;
    }
    scrape(client.http(), &server.info.base_url, client.config().api_key.as_deref()).await.ok()
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
    server: &Target,
    messages: &[ChatMessage],
    rendered: Option<&str>,
    max_tokens: u32,
    scheduled_ms: f64,
) -> ChatOutcome {
    let (base_url, model) = (server.info.base_url.as_str(), server.info.model.as_str());
    match rendered {
        Some(prompt) => {
            client.stream_completion(&CompletionRequest { base_url, model, prompt, max_tokens }, scheduled_ms).await
        }
        None => client.stream_chat(&ChatRequest { base_url, model, messages, max_tokens }, scheduled_ms).await,
    }
}

/// What a turn records about a prompt it rendered itself.
pub fn rendered_prompt(template: &str, text: &str, tokens: Option<&[u32]>) -> RenderedPrompt {
    RenderedPrompt {
        mode: "completion".into(),
        template: template.to_string(),
        chars: text.chars().count() as u64,
        tokens: tokens.map(|t| t.len() as u64),
        sha256: crate::core::hash::sha256_hex(text.as_bytes()),
    }
}

