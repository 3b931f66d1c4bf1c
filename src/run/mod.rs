//! The one driver: every `turnbench run` — a single-user suite or many users, against a managed
//! vLLM, a managed simulator or an external endpoint — goes through [`execute`]. It starts the
//! first server and makes the final selection with its tokenizer, creates the results folder,
//! then runs the plan's tests: each with its server (fresh, reset or shared), samplers and
//! `timeline.csv`, GPU hygiene, warm-up, and a schedule (one conversation, or load levels).
//! Ctrl-C stops scheduling, a second abandons the turns in flight; either way every report is
//! written from what was recorded.

mod load;
mod progress;
mod servers;
mod signals;
mod warmup;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::analysis::load::SETTINGS_KEY;
use crate::client::api::{ServerInfo, ServerTokenizer};
use crate::client::Client;
use crate::core::record::{RecordSink, Recorder, Status, TurnRecord};
use crate::core::results::{self, Manifest, TestRun};
use crate::core::{Interrupted, RunClock};
use crate::metrics::monitor::{engine_version, Monitor};
use crate::plan::{LoadPlan, Plan, SchedulePlan};
use crate::replay::{replay_conversation, ConversationEnd, ReplayLabels, ReplaySettings};
use crate::report;
use crate::schedule::LoadContext;
use crate::workload::select::render_listing;
use crate::workload::tokens::{CountTokens, Estimate};
use crate::workload::Conversation;
use progress::Progress;
use servers::Servers;
use signals::{until_stopped, watch_signals};

pub use load::{qps_label, sweep_rates};

/// Runs `plan` to the end (or to Ctrl-C), writing the results folder.
pub async fn execute(plan: Plan) -> Result<()> {
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(stop.clone(), abort.clone()));
    let result = drive(&plan, &stop, &abort).await;
    signals.abort();
    result
}

async fn drive(plan: &Plan, stop: &CancellationToken, abort: &CancellationToken) -> Result<()> {
    let client = Client::new(plan.client.clone(), RunClock::start())?;
    let monitor = Monitor::open(
        plan.sample_interval,
        client.clock(),
        plan.allow_busy_gpu,
        client.http().clone(),
        plan.client.api_key.clone(),
    );
    // The first server's log goes here until the results folder exists.
    let scratch = tempfile::Builder::new().prefix("turnbench-").tempdir().context("cannot create a temporary folder")?;
    let mut servers = until_stopped(stop, Servers::start_first(plan, &client, &monitor, scratch.path()))
        .await?
        .ok_or_else(|| Interrupted("the server was still starting; nothing was run".into()))?;
    let outcome = run_started(plan, &client, &monitor, &mut servers, stop, abort).await;
    // After an early return (an error, `--list-conversations`): the first server is still up.
    servers.shutdown(None).await;
    outcome
}

async fn run_started(
    plan: &Plan,
    client: &Client,
    monitor: &Monitor,
    servers: &mut Servers<'_>,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Result<()> {
    let first = servers.first().map(|s| s.info().clone()).context("no server was started")?;
    let engine_version = engine_version(&plan.engine, client.http(), &first.base_url).await;
    let counter: Box<dyn CountTokens> =
        if first.has_tokenize { Box::new(ServerTokenizer::of(client, &first)) } else { Box::new(Estimate) };
    let selection = plan.source.select(&plan.filter, counter.as_ref()).await?;
    if let Some(t) = &plan.template {
        crate::template::check_suite(t, selection.chosen.iter().map(|c| &c.conversation))?;
    }
    for dropped in &selection.dropped {
        eprintln!("skipped {}: {}", dropped.id, dropped.reason);
    }
    if plan.list_conversations {
        print!("{}", render_listing(&selection));
        return Ok(());
    }
    let conversations = selection.conversations();

    let dir = results::create_run_dir(&plan.results_dir, plan.label.as_deref())?;
    servers.attach(&dir);
    let mut manifest = new_manifest(plan, &first);
    manifest.token_counts_estimated = counter.is_estimate();
    results::write_manifest(&dir, &manifest)?;
    monitor.attach(&dir)?;
    monitor.write_system_json(&dir, engine_version)?;

    let progress = match &plan.schedule {
        SchedulePlan::Sequential => Progress::turns(conversations.iter().map(|c| c.turns.len() as u64).sum()),
        SchedulePlan::Load(load) => Progress::timed(load.duration * load.planned_levels() as u32, load.log_interval),
    };
    let observer = progress.clone();
    let recorder =
        Recorder::observed(RecordSink::create(&dir.join(results::TURNS_FILE))?, Arc::new(move |r| observer.observe(r)));
    let settings = ReplaySettings {
        think_time: plan.think_time,
        // One request in flight: the server's counters over a turn belong to that turn.
        metrics_deltas: matches!(plan.schedule, SchedulePlan::Sequential),
        stop: stop.clone(),
        abort: abort.clone(),
    };
    let run = Run { plan, client, recorder: &recorder, settings: &settings, progress: &progress };
    let outcome = match &plan.schedule {
        SchedulePlan::Sequential => run.suite(servers, &conversations, &mut manifest).await,
        SchedulePlan::Load(load) => run.load(load, servers, conversations, &mut manifest, &dir).await,
    };
    progress.finish();
    servers.shutdown(manifest.tests.last_mut()).await;
    if let Err(e) = &outcome {
        // Keep what was recorded: the reports are still written.
        eprintln!("error during the run: {e:#}");
    }
    manifest.interrupted = stop.is_cancelled() || outcome.is_err();
    results::write_manifest(&dir, &manifest)?;
    monitor.finish(&dir)?;
    let summary = report::write_reports(&dir, &recorder.records(), &manifest)?;
    println!("{}", report::console_summary(&summary));
    if let Some(load) = &summary.load {
        println!("{}", report::load::console_table(load));
    }
    println!("results: {}", dir.display());
    outcome?;
    if stop.is_cancelled() {
        return Err(Interrupted(format!("partial results written to {}", dir.display())).into());
    }
    Ok(())
}

/// What every test of a run shares.
struct Run<'a> {
    plan: &'a Plan,
    client: &'a Client,
    recorder: &'a Recorder,
    settings: &'a ReplaySettings,
    progress: &'a Progress,
}

impl Run<'_> {
    /// The sequential schedule: one test per conversation, one request in flight.
    async fn suite(&self, servers: &mut Servers<'_>, conversations: &[Conversation], manifest: &mut Manifest) -> Result<()> {
        let stop = &self.settings.stop;
        for (index, conversation) in conversations.iter().enumerate() {
            if stop.is_cancelled() {
                break;
            }
            self.progress.set_message(&conversation.id);
            let test = index as u32 + 1;
            let mut test_run = TestRun { test, conversation_id: conversation.id.clone(), ..Default::default() };
            let first_record = self.recorder.len();
            let outcome = async {
                let target = until_stopped(stop, servers.for_test(test, &conversation.id, self.recorder, &mut test_run))
                    .await?
                    .context("interrupted while the server was starting")?;
                let labels = ReplayLabels { test, ..Default::default() };
                replay_conversation(self.client, &target, self.settings, self.recorder, &labels, conversation).await
            }
            .await;
            let records = self.recorder.records_since(first_record);
            let done = records.iter().filter(|r| !r.warmup).count();
            match &outcome {
                Ok(ConversationEnd::Completed) => self.progress.println(format!("  ok      {} ({done} turns)", conversation.id)),
                Ok(ConversationEnd::Failed) => {
                    let why = records.last().and_then(|r| r.error.clone()).unwrap_or_default();
                    self.progress.println(format!("  FAILED  {} at turn {done}: {}", conversation.id, first_line(&why)));
                }
                Ok(ConversationEnd::Interrupted) => {
                    self.progress.println(format!("  stopped {} after {done} turns", conversation.id))
                }
                Err(e) => {
                    // The server never served this test: record it so the failure shows in every report.
                    let error = format!("{e:#}");
                    self.progress.println(format!("  FAILED  {}: {}", conversation.id, first_line(&error)));
                    test_run.error = Some(error.clone());
                    if !stop.is_cancelled() {
                        self.recorder.record(TurnRecord {
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
        Ok(())
    }

    /// The many-user schedule: one test, one server, the plan's levels one after another. The
    /// manifest records each level's window as it ends.
    async fn load(
        &self,
        load: &LoadPlan,
        servers: &mut Servers<'_>,
        conversations: Vec<Conversation>,
        manifest: &mut Manifest,
        dir: &std::path::Path,
    ) -> Result<()> {
        let stop = &self.settings.stop;
        let mut test_run = TestRun { test: 1, conversation_id: "load".into(), ..Default::default() };
        let mut load_settings = load.settings.clone();
        manifest.settings["multi_user"]["conversations"] = conversations.len().into();
        manifest.settings[SETTINGS_KEY] = serde_json::to_value(&load_settings)?;
        results::write_manifest(dir, manifest)?;
        let outcome = async {
            let mut target = until_stopped(stop, servers.for_test(1, "load", self.recorder, &mut test_run))
                .await?
                .context("interrupted while the server was starting")?;
            // Many requests in flight: no per-turn /tokenize round trip.
            target.info.has_tokenize = false;
            // `--time` ends the run like the end of a level, not like Ctrl-C.
            let run_stop = stop.child_token();
            let time_limit = load.time.map(|t| {
                let stop = run_stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(t).await;
                    stop.cancel();
                })
            });
            let ctx = LoadContext {
                client: self.client.clone(),
                server: target,
                settings: ReplaySettings { stop: run_stop, ..self.settings.clone() },
                recorder: self.recorder.clone(),
                test: 1,
                pool: Arc::new(conversations),
            };
            let outcome = load::run_levels(load, &ctx, self.progress, self.plan.seed, |w| {
                load_settings.levels.push(w.clone());
                manifest.settings[SETTINGS_KEY] = serde_json::to_value(&load_settings)?;
                results::write_manifest(dir, manifest)
            })
            .await;
            if let Some(t) = time_limit {
                t.abort();
            }
            outcome
        }
        .await;
        test_run.outcome = match (&outcome, stop.is_cancelled()) {
            (Err(_), _) => "failed",
            (Ok(()), true) => "interrupted",
            (Ok(()), false) => "completed",
        }
        .to_string();
        if let Err(e) = &outcome {
            test_run.error = Some(format!("{e:#}"));
        }
        servers.after_test(&mut test_run).await;
        manifest.tests.push(test_run);
        outcome
    }
}

/// The manifest of a run starting now against `server`.
fn new_manifest(plan: &Plan, server: &ServerInfo) -> Manifest {
    Manifest {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        command_line: crate::plan::redacted_command_line(),
        started_at: jiff::Timestamp::now().to_string(),
        label: plan.label.clone(),
        engine: plan.engine.name().to_string(),
        simulated: server.simulated,
        endpoint: plan.endpoint.clone(),
        model: Some(server.model.clone()),
        engine_command: plan.engine.command(plan.seed),
        block_size: server.block_size,
        prefix_caching: server.prefix_caching,
        token_counts_estimated: true,
        datasets: plan.source.files(),
        configs: plan.configs.clone(),
        seed: plan.seed,
        settings: plan.settings.clone(),
        interrupted: false,
        tests: Vec::new(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
