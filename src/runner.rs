//! `turnbench run`: validate everything up front, then for each test start its server, warm it
//! up, replay its conversation, tear the server down; finally build every report from the
//! records. Ctrl-C stops scheduling, a second Ctrl-C abandons the turn in flight; either way the
//! reports are written from what was recorded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{Isolation, RunArgs};
use crate::client::{ChatRequest, Client, ClientConfig, RunClock};
use crate::engine::{Engine, RunningServer};
use crate::metrics::monitor::{engine_version, Baseline, Monitor};
use crate::metrics::sampler::Samplers;
use crate::metrics::server::scrape;
use crate::error::Interrupted;
use crate::record::{RecordSink, Recorder, Status, TurnRecord};
use crate::replay::{replay_conversation, send_prompt, ConversationEnd, ReplayLabels, ReplaySettings, ServerInfo};
use crate::results::{self, Manifest, TestRun};
use crate::workload::prompt::ChatMessage;
use crate::workload::select::{render_listing, select};
use crate::workload::tokens::TokenCounter;
use crate::template::ChatTemplate;
use crate::workload::{load::load_suite, Conversation};
use crate::{report, UsageError};

pub async fn run_command(args: RunArgs) -> Result<()> {
    validate(&args)?;
    if args.load.is_multi_user() {
        return crate::load::run_load(args).await;
    }
    let template = crate::template::for_run(&args)?;
    let engine = Engine::from_args(&args)?;
    // Data errors surface before any server starts.
    let suite = load_suite(&args.selection.data, &args.selection.rag_data)?;
    let client = build_client(&args, &engine)?;
    let settings = ReplaySettings {
        think_time: Duration::from_secs_f64(args.think_time_ms / 1000.0),
        metrics_deltas: true,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
    };
    let signals = tokio::spawn(watch_signals(settings.stop.clone(), settings.abort.clone()));
    let result = run_with_signals(&args, &engine, suite, &client, &settings, template).await;
    signals.abort();
    result
}

async fn run_with_signals(
    args: &RunArgs,
    engine: &Engine,
    suite: crate::workload::Suite,
    client: &Client,
    settings: &ReplaySettings,
    template: Option<Arc<ChatTemplate>>,
) -> Result<()> {
    let monitor = Monitor::open(
        Duration::from_millis(args.sample_interval),
        client.clock(),
        args.allow_busy_gpu,
        client.http().clone(),
        client.config().api_key.clone(),
    );
    // The first server answers what the model is and how it tokenizes (for selection); it then
    // serves the first test, still fresh: tokenizing touches no cache.
    let scratch = tempfile_dir()?;
    let baseline = monitor.before_start(engine, 1).await?;
    let first = until_stopped(&settings.stop, engine.start("server-001", scratch.path(), client.http(), args.seed))
        .await?
        .ok_or_else(|| Interrupted("the server was still starting; nothing was run".into()))?;
    let mut probe = ServerInfo::probe(client, &first.base_url, served_model(args, engine).as_deref()).await?;
    probe.template = template.clone();
    let engine_version = engine_version(engine, client.http(), &first.base_url).await;
    let counter = if probe.has_tokenize {
        TokenCounter::Server {
            client: client.http().clone(),
            base_url: probe.base_url.clone(),
            model: Some(probe.model.clone()),
            api_key: client.config().api_key.clone(),
        }
    } else {
        TokenCounter::Estimate
    };
    let selection = select(&suite, &args.selection, &counter).await;
    let selection = match selection {
        Ok(s) => s,
        Err(e) => {
            first.stop().await?;
            return Err(e);
        }
    };
    if let Some(t) = &template {
        if let Err(e) = crate::template::check_suite(t, selection.chosen.iter().map(|c| &c.conversation)) {
            first.stop().await?;
            return Err(e);
        }
    }
    for dropped in &selection.dropped {
        eprintln!("skipped {}: {}", dropped.id, dropped.reason);
    }
    if args.selection.list_conversations {
        first.stop().await?;
        print!("{}", render_listing(&selection));
        return Ok(());
    }

    let dir = results::create_run_dir(&args.results_dir, args.label.as_deref())?;
    let mut manifest = new_manifest(args, engine, &probe, suite.sources.clone(), settings_json(args));
    manifest.token_counts_estimated = counter.is_estimate();
    results::write_manifest(&dir, &manifest)?;
    monitor.attach(&dir)?;
    monitor.write_system_json(&dir, engine_version)?;
    let recorder = Recorder::new(RecordSink::create(&dir.join(results::TURNS_FILE))?);
    let mut servers = Servers {
        engine,
        args,
        client,
        recorder: &recorder,
        dir: &dir,
        current: None,
        spare: Some(Spare { server: first, info: probe, log_in_scratch: true, baseline, test: 1 }),
        template,
        monitor: &monitor,
        samplers: None,
    };

    let total_turns: u64 = selection.chosen.iter().map(|c| c.conversation.turns.len() as u64).sum();
    let bar = progress_bar(total_turns);
    for (index, candidate) in selection.chosen.iter().enumerate() {
        if settings.stop.is_cancelled() {
            break;
        }
        let conversation = &candidate.conversation;
        bar.set_message(conversation.id.clone());
        let test = index as u32 + 1;
        let mut test_run = TestRun { test, conversation_id: conversation.id.clone(), ..Default::default() };
        let first_record = recorder.len();
        let outcome = async {
            let server = until_stopped(&settings.stop, servers.for_test(test, conversation, &mut test_run))
                .await?
                .context("interrupted while the server was starting")?;
            let labels = ReplayLabels { test, ..Default::default() };
            replay_conversation(client, &server, settings, &recorder, &labels, conversation).await
        }
        .await;
        let records = recorder.records_since(first_record);
        let done = records.iter().filter(|r| !r.warmup).count() as u64;
        bar.inc(done);
        match &outcome {
            Ok(ConversationEnd::Completed) => bar.println(format!("  ok      {} ({} turns)", conversation.id, done)),
            Ok(ConversationEnd::Failed) => {
                let last = records.last();
                let why = last.and_then(|r| r.error.clone()).unwrap_or_default();
                bar.println(format!("  FAILED  {} at turn {}: {}", conversation.id, done, first_line(&why)));
            }
            Ok(ConversationEnd::Interrupted) => bar.println(format!("  stopped {} after {} turns", conversation.id, done)),
            Err(e) => {
                // The server never served this test: record it so the failure shows in every report.
                let error = format!("{e:#}");
                bar.println(format!("  FAILED  {}: {}", conversation.id, first_line(&error)));
                test_run.error = Some(error.clone());
                if !settings.stop.is_cancelled() {
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
        test_run.outcome = match outcome {
            Ok(ConversationEnd::Completed) => "completed",
            Ok(ConversationEnd::Failed) => "failed",
            Ok(ConversationEnd::Interrupted) => "interrupted",
            Err(_) => "server_failed",
        }
        .to_string();
        servers.after_test(&mut test_run).await;
        manifest.tests.push(test_run);
    }
    bar.finish_and_clear();
    servers.shutdown(manifest.tests.last_mut()).await;

    manifest.interrupted = settings.stop.is_cancelled();
    results::write_manifest(&dir, &manifest)?;
    monitor.finish(&dir)?;
    let records = recorder.records();
    let summary = report::write_reports(&dir, &records, &manifest)?;
    println!("{}", report::console_summary(&summary));
    println!("results: {}", dir.display());
    if manifest.interrupted {
        return Err(Interrupted(format!("partial results written to {}", dir.display())).into());
    }
    Ok(())
}

/// The run's HTTP client, on a clock that starts now, carrying the API key of `--api-key` or of
/// the server turnbench starts.
pub(crate) fn build_client(args: &RunArgs, engine: &Engine) -> Result<Client> {
    Client::new(
        ClientConfig {
            api_key: args.api_key.clone().or_else(|| engine.api_key().map(str::to_string)),
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            first_token_timeout: Duration::from_secs_f64(args.first_token_timeout),
            request_timeout: Duration::from_secs_f64(args.request_timeout),
            ignore_eos: !args.no_ignore_eos,
        },
        RunClock::start(),
    )
}

/// The manifest of a run starting now against `server` (single-user and multi-user runs).
pub(crate) fn new_manifest(
    args: &RunArgs,
    engine: &Engine,
    server: &ServerInfo,
    datasets: Vec<crate::workload::SourceFile>,
    settings: serde_json::Value,
) -> Manifest {
    Manifest {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        command_line: redacted_command_line(),
        started_at: jiff::Timestamp::now().to_string(),
        label: args.label.clone(),
        engine: engine.name().to_string(),
        simulated: server.simulated,
        endpoint: args.endpoint.clone(),
        model: Some(server.model.clone()),
        engine_command: engine.command(args.seed),
        block_size: server.block_size,
        prefix_caching: server.prefix_caching,
        token_counts_estimated: true,
        datasets,
        seed: args.seed,
        settings,
        interrupted: false,
        tests: Vec::new(),
    }
}

/// The model name requests carry: for vLLM the served name is the model argument itself.
pub(crate) fn served_model(args: &RunArgs, engine: &Engine) -> Option<String> {
    match engine {
        Engine::Vllm { model, .. } => Some(model.clone()),
        _ => args.model.clone(),
    }
}

/// Runs `fut` unless `stop` fires first (then `None`; dropping `fut` kills a starting server).
async fn until_stopped<T>(stop: &CancellationToken, fut: impl std::future::Future<Output = Result<T>>) -> Result<Option<T>> {
    tokio::select! {
        r = fut => r.map(Some),
        _ = stop.cancelled() => Ok(None),
    }
}

/// A started server not yet used by a test.
struct Spare {
    server: RunningServer,
    info: ServerInfo,
    /// Its log was written before the results folder existed: copied there at teardown.
    log_in_scratch: bool,
    /// GPU memory before it started (hygiene), and the last test it served.
    baseline: Baseline,
    test: u32,
}

/// Which server serves each test: a fresh one per test (`--isolation test`), one for the run
/// with the prefix cache reset in between (`--isolation run`), or the external endpoint.
struct Servers<'a> {
    engine: &'a Engine,
    args: &'a RunArgs,
    client: &'a Client,
    recorder: &'a Recorder,
    dir: &'a Path,
    current: Option<Spare>,
    spare: Option<Spare>,
    /// `--prompt-mode completion`: the template every server's turns are rendered with.
    template: Option<Arc<ChatTemplate>>,
    monitor: &'a Monitor,
    /// Sampling the current test.
    samplers: Option<Samplers>,
}

impl Servers<'_> {
    fn shared(&self) -> bool {
        !self.engine.is_managed() || self.args.isolation == Isolation::Run
    }

    /// The server for `test`, started, probed and warmed up as needed.
    async fn for_test(&mut self, test: u32, conversation: &Conversation, run: &mut TestRun) -> Result<ServerInfo> {
        if let Some(current) = &mut self.current {
            current.test = test;
            self.samplers = Some(self.monitor.start(test, current.server.guard.as_ref().map(|g| g.pid()), &current.info.base_url));
            // Reused for this test (shared server): reset its prefix cache when turnbench owns it.
            if self.engine.is_managed() {
                let verified = reset_prefix_cache(self.client, &current.info).await?;
                run.cache_reset_verified = Some(verified);
            }
            return Ok(current.info.clone());
        }
        let mut spare = match self.spare.take() {
            Some(spare) => spare,
            None => {
                let name = format!("test-{test:03}-{}", conversation.id);
                let baseline = self.monitor.before_start(self.engine, test).await?;
                let server =
                    self.engine.start(&name, &self.dir.join("engine"), self.client.http(), self.args.seed).await?;
                let mut info =
                    ServerInfo::probe(self.client, &server.base_url, served_model(self.args, self.engine).as_deref()).await?;
                info.template = self.template.clone();
                Spare { server, info, log_in_scratch: false, baseline, test }
            }
        };
        spare.test = test;
        self.samplers = Some(self.monitor.start(test, spare.server.guard.as_ref().map(|g| g.pid()), &spare.info.base_url));
        spare.info.process = spare.server.process();
        if let Some(guard) = &spare.server.guard {
            run.time_to_ready_ms = Some(guard.time_to_ready.as_secs_f64() * 1000.0);
            let file = guard.log_path.file_name().unwrap_or_default().to_string_lossy();
            run.server_log = Some(format!("engine/{file}"));
        }
        warm_up(self.client, &spare.info, self.recorder, test, self.args.warmup).await?;
        let info = spare.info.clone();
        self.current = Some(spare);
        Ok(info)
    }

    /// After a test: a per-test server is stopped; a shared one is kept unless it died.
    async fn after_test(&mut self, run: &mut TestRun) {
        if let Some(samplers) = self.samplers.take() {
            samplers.stop().await;
        }
        let died = self
            .current
            .as_ref()
            .and_then(|c| c.server.guard.as_ref())
            .is_some_and(|g| g.exit_status().is_some());
        if !self.shared() || died {
            self.stop_current(Some(run)).await;
        }
    }

    async fn shutdown(&mut self, last: Option<&mut TestRun>) {
        if let Some(samplers) = self.samplers.take() {
            samplers.stop().await;
        }
        self.stop_current(last).await;
        if let Some(spare) = self.spare.take() {
            self.stop(spare, None).await;
        }
    }

    async fn stop_current(&mut self, run: Option<&mut TestRun>) {
        if let Some(current) = self.current.take() {
            self.stop(current, run).await;
        }
    }

    async fn stop(&self, spare: Spare, mut run: Option<&mut TestRun>) {
        let scratch_log = spare.server.guard.as_ref().filter(|_| spare.log_in_scratch).map(|g| g.log_path.clone());
        match spare.server.stop().await {
            Ok(took) => {
                if let Some(run) = run.as_deref_mut() {
                    if self.engine.is_managed() {
                        run.teardown_ms = Some(took.as_secs_f64() * 1000.0);
                    }
                }
            }
            Err(e) => eprintln!("warning: server teardown: {e:#}"),
        }
        if self.engine.is_managed() {
            let released = self.monitor.after_stop(spare.test, spare.baseline).await;
            if let Some(run) = run {
                run.gpu_release_ms = released;
            }
        }
        if let Some(log) = scratch_log {
            let target = self.dir.join("engine").join(log.file_name().unwrap_or_default());
            let _ = std::fs::create_dir_all(self.dir.join("engine"));
            if let Err(e) = std::fs::copy(&log, &target) {
                eprintln!("warning: cannot keep the server log {}: {e}", log.display());
            }
        }
    }
}

/// Clears the server's prefix cache (`POST /reset_prefix_cache`) and verifies it: a probe prompt
/// sent before the reset must find nothing cached after it (by `/metrics` hits, else by usage).
async fn reset_prefix_cache(client: &Client, server: &ServerInfo) -> Result<bool> {
    let text = "Prefix cache probe. ".repeat(40);
    let messages = [ChatMessage::new("user", text)];
    let request = ChatRequest { base_url: &server.base_url, model: &server.model, messages: &messages, max_tokens: 1 };
    let first = client.stream_chat(&request, client.clock().now_ms()).await;
    anyhow::ensure!(first.status.is_ok(), "prefix-cache probe failed: {}", first.error.unwrap_or_default());
    let mut req = client.http().post(format!("{}/reset_prefix_cache", server.base_url));
    if let Some(key) = &client.config().api_key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.context("POST /reset_prefix_cache")?;
    anyhow::ensure!(
        resp.status().is_success(),
        "POST /reset_prefix_cache answered HTTP {} (vLLM serves it only with VLLM_SERVER_DEV_MODE=1)",
        resp.status()
    );
    let before = scrape(client.http(), &server.base_url, client.config().api_key.as_deref()).await.ok();
    let second = client.stream_chat(&request, client.clock().now_ms()).await;
    anyhow::ensure!(second.status.is_ok(), "prefix-cache probe failed: {}", second.error.unwrap_or_default());
    let after = scrape(client.http(), &server.base_url, client.config().api_key.as_deref()).await.ok();
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

/// Warm-up requests: they pay one-time costs (connections, compilation) and are recorded with
/// `warmup: true`, so statistics leave them out. Their prompt shares no prefix with the suite.
pub(crate) async fn warm_up(client: &Client, server: &ServerInfo, recorder: &Recorder, test: u32, count: u32) -> Result<()> {
    for n in 0..count {
        let messages = [ChatMessage::new("user", format!("Warm-up request {n}: reply with a short greeting."))];
        let rendered = server.template.as_ref().map(|t| t.render(&messages, true)).transpose()?;
        let outcome = send_prompt(client, server, &messages, rendered.as_deref(), 8, client.clock().now_ms()).await;
        let record = outcome.into_record(TurnRecord {
            test,
            conversation_id: "warmup".into(),
            turn: n + 1,
            warmup: true,
            max_tokens: 8,
            ..Default::default()
        });
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
    if args.sample_interval == 0 {
        return Err(UsageError::new("--sample-interval 0: must be at least 1 millisecond").into());
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
        "profile": args.profile,
        "vllm_cmd": args.vllm_cmd,
        "isolation": format!("{:?}", args.isolation).to_lowercase(),
        "warmup": args.warmup,
        "think_time_ms": args.think_time_ms,
        "connect_timeout_s": args.connect_timeout,
        "first_token_timeout_s": args.first_token_timeout,
        "request_timeout_s": args.request_timeout,
        "ignore_eos": !args.no_ignore_eos,
        "sample_interval_ms": args.sample_interval,
        "allow_busy_gpu": args.allow_busy_gpu,
        "api_key": args.api_key.as_ref().map(|_| "<redacted>"),
        "prompt_mode": format!("{:?}", args.prompt_mode).to_lowercase(),
        "chat_template": args.chat_template,
    })
}
