//! `turnbench run`: validate everything up front, then for each test start its server, warm it
//! up, replay its conversation, tear the server down; finally build every report from the
//! records. Ctrl-C stops scheduling, a second Ctrl-C abandons the turn in flight; either way the
//! reports are written from what was recorded.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::client::{ChatRequest, Client, ClientConfig, RunClock};
use crate::engine::Engine;
use crate::error::Interrupted;
use crate::record::{RecordSink, Recorder, Status, TurnRecord};
use crate::replay::{replay_conversation, ConversationEnd, ReplayLabels, ReplaySettings, ServerInfo};
use crate::results::{self, Manifest};
use crate::workload::prompt::ChatMessage;
use crate::workload::select::{render_listing, select};
use crate::workload::tokens::TokenCounter;
use crate::workload::{load::load_suite, Conversation};
use crate::{report, UsageError};

pub async fn run_command(args: RunArgs) -> Result<()> {
    validate(&args)?;
    if args.load.is_multi_user() {
        return crate::load::run_load(args).await;
    }
    let engine = Engine::from_args(&args)?;
    // Data errors surface before any server starts.
    let suite = load_suite(&args.selection.data, &args.selection.rag_data)?;
    let client = build_client(&args)?;

    // A first server answers what the model is and how it tokenizes, for selection.
    let scratch = tempfile_dir()?;
    let probe_server = engine.start("probe", scratch.path(), client.http(), args.seed).await?;
    let probe = ServerInfo::probe(&client, &probe_server.base_url, args.model.as_deref()).await?;
    let counter = if probe.has_tokenize {
        TokenCounter::Server {
            client: client.http().clone(),
            base_url: probe.base_url.clone(),
            model: Some(probe.model.clone()),
            api_key: args.api_key.clone(),
        }
    } else {
        TokenCounter::Estimate
    };
    let selection = select(&suite, &args.selection, &counter).await;
    // The probe of a managed engine is not reused: every test gets a fresh server. An external
    // server is shared by every test and warmed up once.
    let external = if engine.is_managed() {
        probe_server.stop().await?;
        None
    } else {
        Some((probe_server, probe.clone()))
    };
    let selection = selection?;
    for dropped in &selection.dropped {
        eprintln!("skipped {}: {}", dropped.id, dropped.reason);
    }
    if args.selection.list_conversations {
        print!("{}", render_listing(&selection));
        return Ok(());
    }

    let dir = results::create_run_dir(&args.results_dir, args.label.as_deref())?;
    let mut manifest = Manifest {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        command_line: redacted_command_line(),
        started_at: jiff::Timestamp::now().to_string(),
        label: args.label.clone(),
        engine: engine.name().to_string(),
        simulated: probe.simulated,
        endpoint: args.endpoint.clone(),
        model: Some(probe.model.clone()),
        engine_command: engine.command(args.seed),
        block_size: probe.block_size,
        prefix_caching: probe.prefix_caching,
        token_counts_estimated: counter.is_estimate(),
        datasets: suite.sources.clone(),
        seed: args.seed,
        settings: settings_json(&args),
        interrupted: false,
    };
    results::write_manifest(&dir, &manifest)?;
    let recorder = Recorder::new(RecordSink::create(&dir.join(results::TURNS_FILE))?);
    let settings = ReplaySettings {
        think_time: Duration::from_secs_f64(args.think_time_ms / 1000.0),
        metrics_deltas: true,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
    };
    let signals = tokio::spawn(watch_signals(settings.stop.clone(), settings.abort.clone()));
    if let Some((_, server)) = &external {
        warm_up(&client, server, &recorder, 0, args.warmup).await?;
    }

    let total_turns: u64 = selection.chosen.iter().map(|c| c.conversation.turns.len() as u64).sum();
    let bar = progress_bar(total_turns);
    let mut interrupted = false;
    for (index, candidate) in selection.chosen.iter().enumerate() {
        if settings.stop.is_cancelled() {
            interrupted = true;
            break;
        }
        let conversation = &candidate.conversation;
        bar.set_message(conversation.id.clone());
        let test = index as u32 + 1;
        let outcome = run_test(&engine, external.as_ref().map(|e| &e.1), &client, &args, &dir, &settings, &recorder, test, conversation).await;
        let records = recorder.records();
        let done = records.iter().filter(|r| r.test == test && !r.warmup).count() as u64;
        bar.inc(done);
        match outcome {
            Ok(ConversationEnd::Completed) => bar.println(format!("  ok      {} ({} turns)", conversation.id, done)),
            Ok(ConversationEnd::Failed) => {
                let last = records.iter().rev().find(|r| r.test == test);
                let why = last.and_then(|r| r.error.clone()).unwrap_or_default();
                bar.println(format!("  FAILED  {} at turn {}: {}", conversation.id, done, first_line(&why)));
            }
            Ok(ConversationEnd::Interrupted) => {
                interrupted = true;
                bar.println(format!("  stopped {} after {} turns", conversation.id, done));
                break;
            }
            Err(e) => {
                // The server never served this test: record it so the failure shows in every report.
                let error = format!("{e:#}");
                bar.println(format!("  FAILED  {}: {}", conversation.id, first_line(&error)));
                recorder.record(TurnRecord {
                    test,
                    conversation_id: conversation.id.clone(),
                    tags: conversation.tags.clone(),
                    turn: 1,
                    status: Status::Connect,
                    error: Some(error),
                    max_tokens: conversation.turns[0].max_tokens,
                    ..Default::default()
                })?;
            }
        }
    }
    bar.finish_and_clear();
    signals.abort();
    if let Some((server, _)) = external {
        server.stop().await?;
    }

    manifest.interrupted = interrupted || settings.stop.is_cancelled();
    results::write_manifest(&dir, &manifest)?;
    let records = recorder.records();
    let summary = report::write_reports(&dir, &records, &manifest)?;
    println!("{}", report::console_summary(&summary));
    println!("results: {}", dir.display());
    if manifest.interrupted {
        return Err(Interrupted(dir.display().to_string()).into());
    }
    Ok(())
}

/// The run's HTTP client, on a clock that starts now.
pub(crate) fn build_client(args: &RunArgs) -> Result<Client> {
    Client::new(
        ClientConfig {
            api_key: args.api_key.clone(),
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            first_token_timeout: Duration::from_secs_f64(args.first_token_timeout),
            request_timeout: Duration::from_secs_f64(args.request_timeout),
            ignore_eos: !args.no_ignore_eos,
        },
        RunClock::start(),
    )
}

/// One test: a server of its own (managed engines) probed and warmed up, then the
/// conversation. With an external server, `shared` carries what the run's probe learned.
#[allow(clippy::too_many_arguments)]
async fn run_test(
    engine: &Engine,
    shared: Option<&ServerInfo>,
    client: &Client,
    args: &RunArgs,
    dir: &Path,
    settings: &ReplaySettings,
    recorder: &Recorder,
    test: u32,
    conversation: &Conversation,
) -> Result<ConversationEnd> {
    let labels = ReplayLabels { test, ..Default::default() };
    if let Some(server) = shared {
        return replay_conversation(client, server, settings, recorder, &labels, conversation).await;
    }
    let running = engine
        .start(&format!("test-{test:03}-{}", conversation.id), &dir.join("engine"), client.http(), args.seed)
        .await
        .with_context(|| format!("starting the {} server for {}", engine.name(), conversation.id))?;
    let result = async {
        let server = ServerInfo::probe(client, &running.base_url, args.model.as_deref()).await?;
        warm_up(client, &server, recorder, test, args.warmup).await?;
        replay_conversation(client, &server, settings, recorder, &labels, conversation).await
    }
    .await;
    running.stop().await?;
    result
}

/// Warm-up requests: they pay one-time costs (connections, compilation) and are recorded with
/// `warmup: true`, so statistics leave them out. Their prompt shares no prefix with the suite.
pub(crate) async fn warm_up(client: &Client, server: &ServerInfo, recorder: &Recorder, test: u32, count: u32) -> Result<()> {
    for n in 0..count {
        let messages = [ChatMessage::new("user", format!("Warm-up request {n}: reply with a short greeting."))];
        let request = ChatRequest { base_url: &server.base_url, model: &server.model, messages: &messages, max_tokens: 8 };
        let outcome = client.stream_chat(&request, client.clock().now_ms()).await;
        let record = TurnRecord {
            test,
            conversation_id: "warmup".into(),
            turn: n + 1,
            warmup: true,
            max_tokens: 8,
            status: outcome.status,
            http_status: outcome.http_status,
            error: outcome.error,
            derived: outcome.timing.derive(outcome.usage.completion_tokens),
            timing: outcome.timing,
            usage: outcome.usage,
            output_chunks: outcome.output_chunks,
            ..Default::default()
        };
        recorder.record(record)?;
    }
    Ok(())
}

/// First Ctrl-C: stop scheduling. Second: abandon the request in flight. SIGTERM: both.
pub(crate) async fn watch_signals(stop: CancellationToken, abort: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(terminate);
    let mut presses = 0;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if r.is_err() { return; }
                presses += 1;
                if presses == 1 {
                    eprintln!("\nCtrl-C: finishing the turn in flight, then writing reports (Ctrl-C again to abandon it)");
                    stop.cancel();
                } else {
                    eprintln!("\nCtrl-C again: abandoning the turn in flight");
                    abort.cancel();
                    return;
                }
            }
            _ = &mut terminate => {
                eprintln!("\nSIGTERM: abandoning the turn in flight, writing reports");
                stop.cancel();
                abort.cancel();
                return;
            }
        }
    }
}

fn validate(args: &RunArgs) -> Result<()> {
    let positive = [
        ("--connect-timeout", args.connect_timeout),
        ("--first-token-timeout", args.first_token_timeout),
        ("--request-timeout", args.request_timeout),
    ];
    for (flag, value) in positive {
        if !(value.is_finite() && value > 0.0) {
            return Err(UsageError::new(format!("{flag} {value}: must be a positive number of seconds")).into());
        }
    }
    if !(args.think_time_ms.is_finite() && args.think_time_ms >= 0.0) {
        return Err(UsageError::new(format!("--think-time-ms {}: must be zero or more", args.think_time_ms)).into());
    }
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} turns  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

pub(crate) fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("turnbench-").tempdir().context("cannot create a temporary folder")
}

/// The command line as typed, with the value of `--api-key` replaced.
pub(crate) fn redacted_command_line() -> Vec<String> {
    let mut out = Vec::new();
    let mut redact_next = false;
    for arg in std::env::args() {
        if redact_next {
            out.push("<redacted>".into());
            redact_next = false;
        } else if arg == "--api-key" {
            out.push(arg);
            redact_next = true;
        } else if arg.starts_with("--api-key=") {
            out.push("--api-key=<redacted>".into());
        } else {
            out.push(arg);
        }
    }
    out
}

pub(crate) fn settings_json(args: &RunArgs) -> serde_json::Value {
    let s = &args.selection;
    json!({
        "selection": {
            "data": s.data,
            "rag_data": s.rag_data,
            "include_tags": s.include_tags,
            "exclude_tags": s.exclude_tags,
            "context_size": s.context_size,
            "max_conversations": s.max_conversations,
            "conversations": s.conversations,
        },
        "engine_args": args.engine_args,
        "warmup": args.warmup,
        "think_time_ms": args.think_time_ms,
        "connect_timeout_s": args.connect_timeout,
        "first_token_timeout_s": args.first_token_timeout,
        "request_timeout_s": args.request_timeout,
        "ignore_eos": !args.no_ignore_eos,
        "api_key": args.api_key.as_ref().map(|_| "<redacted>"),
    })
}
