//! The replay engine: one conversation, turn by turn, the model's real answers becoming history.
//! Every workload (one user, many users, rates) runs conversations through [`replay_conversation`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::client::api::{tokenize, tokenize_prompt, ServerInfo};
use crate::client::metrics::{scrape, ServerSnapshot};
use crate::client::{ChatOutcome, ChatRequest, Client, CompletionRequest};
use crate::core::audit::{prompt_sha256, TokenIds, Transcript, TurnKey};
use crate::core::record::{Audit, CacheObservation, Recorder, RenderedPrompt, Status, TurnRecord};
use crate::core::{lock, ChatMessage};
use crate::engine::ProcessWatch;
use crate::ledger::{classify, Ledger, PreviousTurn, TurnFacts};
use crate::template::ChatTemplate;
use crate::workload::prompt::ConversationState;
use crate::workload::Conversation;

/// The server a replay talks to: what it offers and, when turnbench manages it, its process (a
/// failed turn then says whether the server died); in `--prompt-mode completion`, the template
/// each turn's prompt is rendered with (sent to `/v1/completions`); and the ledger of what its
/// prefix cache should hold, shared by every conversation on it.
#[derive(Clone, Default)]
pub struct Target {
    pub info: ServerInfo,
    pub process: Option<ProcessWatch>,
    /// `None`: chat mode, the server applies its own template.
    pub template: Option<Arc<ChatTemplate>>,
    /// Absent when the server does not say its block size.
    pub ledger: Option<Arc<Mutex<Ledger>>>,
    pub flight: Arc<Flight>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("info", &self.info).field("ledger", &self.ledger.is_some()).finish()
    }
}

impl From<ServerInfo> for Target {
    fn from(info: ServerInfo) -> Self {
        Target::new(info, None, None)
    }
}

impl Target {
    /// A server fresh from its start (or reset): its ledger is empty.
    pub fn new(info: ServerInfo, process: Option<ProcessWatch>, template: Option<Arc<ChatTemplate>>) -> Self {
        let ledger = info.block_size.map(|b| Arc::new(Mutex::new(Ledger::new(b, info.num_gpu_blocks))));
        Target { info, process, template, ledger, flight: Arc::default() }
    }

    /// The server answered `outcome` outside any conversation (warm-up, probes): what it computed
    /// is in its cache now.
    pub fn served(&self, outcome: &ChatOutcome) {
        if let (Some(ledger), Some(prompt)) = (&self.ledger, &outcome.prompt_token_ids) {
            if outcome.timing.first_token_ms.is_some() {
                lock(ledger).record(prompt, outcome.output_token_ids.as_deref().unwrap_or(&[]));
            }
        }
    }

    /// The server's prefix cache was reset.
    pub fn reset_ledger(&self) {
        if let Some(ledger) = &self.ledger {
            lock(ledger).reset();
        }
    }

    /// A turn's cache accounting: what the ledger expected, why the server reused less; then
    /// the turn's blocks join the ledger (when the server computed them).
    fn account(&self, turn: &TurnTokens<'_>, observed: Option<u64>, delta_preemptions: u64) -> CacheObservation {
        let mut obs = CacheObservation { block_size: self.info.block_size, ..Default::default() };
        let (Some(ledger), Some(prompt)) = (&self.ledger, turn.prompt) else { return obs };
        let mut ledger = lock(ledger);
        let expectation = ledger.expect(prompt);
        let previous = turn.previous;
        obs.expected_reusable_tokens = Some(expectation.expected);
        obs.predicted_reusable_tokens = expectation.predicted;
        obs.common_prefix_tokens = previous.map(|p| p.common);
        obs.previous_prompt_tokens = previous.map(|p| p.prompt_tokens);
        obs.flag = classify(&TurnFacts {
            observed,
            expectation: Some(expectation),
            block_size: ledger.block_size(),
            prompt_tokens: prompt.len() as u64,
            cache_off: self.info.prefix_caching == Some(false),
            concurrent: turn.concurrent,
            preempted: delta_preemptions > 0,
            exact_outputs: turn.output.is_some(),
            previous,
        });
        if turn.computed {
            ledger.record(prompt, turn.output.unwrap_or(&[]));
        }
        obs
    }
}

/// What a turn's accounting knows of its tokens.
struct TurnTokens<'a> {
    prompt: Option<&'a [u32]>,
    output: Option<&'a [u32]>,
    /// The previous turn of this conversation against this prompt.
    previous: Option<PreviousTurn>,
    concurrent: bool,
    /// The server got as far as a first token: the prompt's blocks were computed.
    computed: bool,
}

/// Requests in flight on a server, and requests finished: whether a turn ran alone.
#[derive(Debug, Default)]
pub struct Flight {
    in_flight: AtomicUsize,
    finished: AtomicU64,
}

impl Flight {
    fn begin(&self) -> (usize, u64) {
        (self.in_flight.fetch_add(1, Ordering::SeqCst), self.finished.load(Ordering::SeqCst))
    }

    /// True when another request was in flight at some point during this one.
    fn end(&self, (others, finished): (usize, u64)) -> bool {
        let now_finished = self.finished.fetch_add(1, Ordering::SeqCst);
        let still = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        others > 0 || still > 0 || now_finished != finished
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
    /// Told of every outcome; says when the server is dead. `None`: nobody watches.
    pub health: Option<Arc<ServerHealth>>,
}

impl ReplaySettings {
    /// A many-user level run on its own (the client's calibration, benches, tests): no think
    /// time, no per-turn `/metrics` scrapes, its own stop and abort tokens, nobody watching the
    /// server's health.
    pub fn standalone() -> Self {
        ReplaySettings {
            think_time: Duration::ZERO,
            metrics_deltas: false,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            health: None,
        }
    }
}

/// After this many requests in a row could not connect, the server is taken for dead.
pub const DEAD_AFTER_CONNECT_FAILURES: usize = 20;

/// Notices a dead server: its managed process exited, or [`DEAD_AFTER_CONNECT_FAILURES`]
/// requests in a row could not connect. Then it cancels `on_dead` (which ends the level and the
/// run the way `--time` does) and keeps the reason for the report and the exit code.
#[derive(Debug)]
pub struct ServerHealth {
    consecutive_connect: std::sync::atomic::AtomicUsize,
    dead: std::sync::OnceLock<String>,
    on_dead: CancellationToken,
}

impl ServerHealth {
    pub fn new(on_dead: CancellationToken) -> Arc<Self> {
        Arc::new(Self { consecutive_connect: Default::default(), dead: Default::default(), on_dead })
    }

    /// One request's outcome against `target`.
    pub fn observe(&self, status: Status, error: Option<&str>, target: &Target) {
        use std::sync::atomic::Ordering;
        if let Some(exit) = target.process.as_ref().and_then(ProcessWatch::exit_status_now) {
            self.declare(format!("the server process exited ({exit}) during the run"));
            return;
        }
        if status == Status::Connect {
            let n = self.consecutive_connect.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= DEAD_AFTER_CONNECT_FAILURES {
                let last = error.and_then(|e| e.lines().next()).unwrap_or("");
                self.declare(format!(
                    "{n} requests in a row could not connect to {} (last: {last})",
                    target.info.base_url
                ));
            }
        } else {
            self.consecutive_connect.store(0, Ordering::Relaxed);
        }
    }

    /// Takes the server for dead, for `why` (the first reason wins).
    pub fn declare(&self, why: String) {
        if self.dead.set(why).is_ok() {
            self.on_dead.cancel();
        }
    }

    /// Why the server is taken for dead, if it is.
    pub fn dead(&self) -> Option<&str> {
        self.dead.get().map(String::as_str)
    }
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
    let mut previous: Option<(Vec<u32>, Vec<u32>)> = None;
    // The previous turn's messages and its answer: what the audit's lines leave out.
    let mut previous_messages: Option<Vec<ChatMessage>> = None;
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
        let rendered = match (&server.template, &prompt.exact_prompt) {
            (Some(_), Some(exact)) => Some(exact.clone()),
            (Some(t), None) => Some(t.render(&prompt.messages, true).with_context(|| {
                format!("rendering turn {} of {} with {}", index + 1, conversation.id, t.origin())
            })?),
            (None, _) => None,
        };
        // The server's own ids come with the answer (`return_token_ids`); else ask `/tokenize`.
        let tokenized = match (&rendered, server.info.has_tokenize && !server.info.return_token_ids) {
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
        let flight = server.flight.begin();
        let outcome = tokio::select! {
            outcome = send => Some(outcome),
            _ = settings.abort.cancelled() => None,
        };
        let concurrent = server.flight.end(flight);
        let Some(mut outcome) = outcome else {
            eprintln!("turn {} of {} abandoned (the run was aborted); not recorded", index + 1, conversation.id);
            return Ok(ConversationEnd::Interrupted);
        };
        drop(_permit);
        if matches!(outcome.status, Status::Connect | Status::Stream | Status::Timeout) {
            if let Some(note) = match &server.process {
                Some(p) => p.death_note(Duration::from_secs(2)).await,
                None => None,
            } {
                let error = outcome.error.take().unwrap_or_default();
                // The server's log may quote its command line, key included.
                let note = crate::core::redact(&note, client.config().api_key.as_deref());
                outcome.error = Some(format!("{error}; {note}"));
            }
        }
        if let Some(health) = &settings.health {
            health.observe(outcome.status, outcome.error.as_deref(), server);
        }
        let after = metrics_snapshot(client, server, settings).await;
        let delta = match (&before, &after) {
            (Some(b), Some(a)) => a.prefix_cache_delta(b),
            _ => None,
        };
        let from_server = outcome.prompt_token_ids.is_some();
        let prompt_ids = outcome.prompt_token_ids.take().or(tokenized);
        let output_ids = outcome.output_token_ids.take();
        // The previous turn against this prompt: for the ledger and for the compact audit line.
        let previous_turn = prompt_ids.as_deref().zip(previous.as_ref()).map(|(p, (pp, po))| PreviousTurn::of(p, pp, po));
        let turn = TurnTokens {
            prompt: prompt_ids.as_deref(),
            output: output_ids.as_deref(),
            previous: previous_turn,
            concurrent,
            computed: outcome.timing.first_token_ms.is_some(),
        };
        let mut cache = server.account(&turn, outcome.usage.cached_tokens.or(delta.map(|d| d.hits)), delta.map_or(0, |d| d.preemptions));
        cache.token_source = prompt_ids.as_ref().map(|_| if from_server { "server" } else { "tokenize" }.to_string());
        let answer = outcome.text.clone();
        let prompt_hash = outcome.prompt_sha256.take();
        cache.server_hits = delta.map(|d| d.hits);
        cache.server_queries = delta.map(|d| d.queries);
        let mut record = build_record(labels, conversation, index, &prompt, outcome, cache, server.info.max_model_len);
        if let (Some(text), Some(template)) = (&rendered, &server.template) {
            record.prompt = Some(rendered_prompt(template.origin(), text, prompt_ids.as_deref()));
        }
        let ok = record.status.is_ok();
        let sent = Sent {
            messages: &prompt.messages,
            rendered,
            prompt_sha256: prompt_hash,
            answer: &answer,
            prompt_ids: prompt_ids.as_deref(),
            output_ids: output_ids.as_deref(),
            from_server,
        };
        let audit = audit_of(&record, &sent, previous_messages.as_deref(), previous_turn);
        recorder.record_turn(record, Some(audit))?;
        if !ok {
            return Ok(ConversationEnd::Failed);
        }
        let mut sent_messages = prompt.messages;
        sent_messages.push(ChatMessage::new("assistant", answer.clone()));
        previous_messages = Some(sent_messages);
        state.finish_turn(answer);
        previous = prompt_ids.map(|p| (p, output_ids.unwrap_or_default()));
    }
    Ok(ConversationEnd::Completed)
}

/// What one turn sent and got back.
struct Sent<'a> {
    messages: &'a [ChatMessage],
    rendered: Option<String>,
    /// The client's hash of what it sent (`None`: no request body was made).
    prompt_sha256: Option<String>,
    answer: &'a str,
    prompt_ids: Option<&'a [u32]>,
    output_ids: Option<&'a [u32]>,
    from_server: bool,
}

/// What the turn sent and received, for `transcripts.jsonl` and `tokens.jsonl`, without what it
/// shares with the previous turn of the replay (its messages and answer; its prompt and answer ids).
fn audit_of(
    record: &TurnRecord,
    sent: &Sent<'_>,
    previous_messages: Option<&[ChatMessage]>,
    previous_ids: Option<PreviousTurn>,
) -> Audit {
    let key = TurnKey {
        test: record.test,
        conversation_id: record.conversation_id.clone(),
        turn: record.turn,
        level: record.level.clone(),
        session: record.session,
        warmup: record.warmup,
    };
    let chat = sent.rendered.is_none();
    let shared_messages = match (chat, previous_messages) {
        (true, Some(prev)) => sent.messages.iter().zip(prev).take_while(|(a, b)| a == b).count(),
        _ => 0,
    };
    let transcript = Transcript {
        key: key.clone(),
        prompt_sha256: match &sent.prompt_sha256 {
            Some(hash) => hash.clone(),
            None => prompt_sha256(chat.then_some(sent.messages), sent.rendered.as_deref()),
        },
        shared_messages,
        messages: chat.then(|| sent.messages[shared_messages..].to_vec()),
        prompt: sent.rendered.clone(),
        max_tokens: record.max_tokens,
        answer: sent.answer.to_string(),
        ok: record.status.is_ok(),
    };
    let tokens = sent.prompt_ids.map(|p| {
        let shared = previous_ids.map_or(0, |t| t.common as usize);
        TokenIds {
            key,
            source: if sent.from_server { "server" } else { "tokenize" }.into(),
            shared_tokens: shared,
            prompt: p[shared..].to_vec(),
            output: sent.output_ids.map(<[u32]>::to_vec).unwrap_or_default(),
        }
    });
    Audit { transcript, tokens }
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
    cache: CacheObservation,
    context: Option<u64>,
) -> TurnRecord {
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
    }, context)
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
    let return_token_ids = server.info.return_token_ids;
    match rendered {
        Some(prompt) => {
            let request = CompletionRequest { base_url, model, prompt, max_tokens, return_token_ids };
            client.stream_completion(&request, scheduled_ms).await
        }
        None => client.stream_chat(&ChatRequest { base_url, model, messages, max_tokens, return_token_ids }, scheduled_ms).await,
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

