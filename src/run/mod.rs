//! The one driver: every `turnbench run` — a single-user suite or many users, against a managed
//! vLLM, a managed simulator or an external endpoint — goes through [`execute`]. It creates the
//! results folder (the plan is valid by then), starts the first server (its log in the folder
//! from the first byte) and makes the final selection with its tokenizer, then runs the plan's
//! tests: each with its server (fresh, reset or shared), samplers and
//! `timeline.csv`, GPU hygiene, warm-up, and a schedule (one conversation, or load levels).
//! Ctrl-C stops scheduling, a second abandons the turns in flight; either way every report is
//! written from what was recorded. A dead server ends the run the same way; the manifest is
//! marked `completed` last of all, and the exit code says how the run ended.

mod ab;
mod calibrate;
mod compare;
mod load;
mod progress;
mod servers;
mod signals;
mod warmup;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::analysis::load::SETTINGS_KEY;
use crate::client::api::{ServerInfo, ServerTokenizer};
use crate::client::Client;
use crate::core::audit::{TOKENS_FILE, TRANSCRIPTS_FILE};
use crate::core::record::{RecordSink, Recorder, Status, TurnRecord};
use crate::core::results::{self, Manifest, TestRun};
use crate::analysis::RequestCounts;
use crate::core::{AllFailed, ErrorRateExceeded, Interrupted, RunClock, ServerDied};
use crate::metrics::monitor::{engine_version, Monitor};
use crate::plan::{LoadPlan, Plan, SchedulePlan};
use crate::replay::{replay_conversation, ConversationEnd, ReplayLabels, ReplaySettings, ServerHealth};
use crate::report;
use crate::schedule::LoadContext;
use crate::workload::select::render_listing;
use crate::workload::tokens::{CountTokens, Estimate};
use crate::workload::Conversation;
use progress::Progress;
use servers::Servers;
use signals::{until_stopped, watch_signals};

pub use load::{qps_label, sweep_rates};

/// Runs `plan` to the end (or to Ctrl-C), writing the results folder; returns it (`None` when
/// the plan only lists conversations). With `--ab`, arm B follows (see [`ab`]).
pub async fn execute(plan: Plan) -> Result<Option<PathBuf>> {
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(stop.clone(), abort.clone()));
    let mut result = drive(&plan, &stop, &abort).await;
    if let (true, Ok(Some(dir))) = (plan.ab, &result) {
        result = ab::arm_b(&plan, dir, &stop, &abort).await.map(|()| Some(dir.clone()));
    }
    for other in &plan.compare {
        let Ok(Some(dir)) = &result else { break };
        let dir = dir.clone();
        result = compare::arm(&plan, &dir, other, &stop, &abort).await.map(|()| Some(dir));
    }
    signals.abort();
    result
}

async fn drive(plan: &Plan, stop: &CancellationToken, abort: &CancellationToken) -> Result<Option<PathBuf>> {
    let client = Client::new(plan.client.clone(), RunClock::start())?;
    let monitor = Monitor::open(
        plan.sample_interval,
        client.clock(),
        plan.allow_busy_gpu,
        client.http().clone(),
        plan.client.api_key.clone(),
    )
    .with_replicas(plan.metrics_urls.clone());
    // The plan is valid: the results folder exists from here on, so the first server's log is
    // written there from its first byte (a `kill -9` leaves it where the run's files are).
    // `--list-conversations` writes no folder; its server logs to a temporary one.
    let base_existed = plan.results_dir.exists();
    let (dir, scratch) = if plan.list_conversations {
        let scratch = tempfile::Builder::new().prefix("turnbench-").tempdir().context("cannot create a temporary folder")?;
        (None, Some(scratch))
    } else {
        let dir = match &plan.exact_dir {
            // Arm B of an A/B run: inside arm A's folder.
            Some(d) => {
                std::fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
                d.clone()
            }
            None => match &plan.shard {
                Some(shard) => results::create_shard_dir(&plan.results_dir, shard)?,
                None => results::create_run_dir(&plan.results_dir, plan.label.as_deref())?,
            },
        };
        (Some(dir), None)
    };
    let log_dir = dir
        .as_ref()
        .map(|d| d.join("engine"))
        .or_else(|| scratch.as_ref().map(|s| s.path().to_path_buf()))
        .context("no folder for the server's log")?;
    let started = until_stopped(stop, Servers::start_first(plan, &client, &monitor, &log_dir)).await;
    let mut servers = match started {
        Ok(Some(s)) => s,
        Ok(None) => {
            let why = "the server was still starting; nothing was run";
            forget_unused(dir.as_deref(), base_existed);
            return Err(if signals::by_sigterm() { Interrupted::sigterm(why) } else { Interrupted(why.into()) }.into());
        }
        Err(e) => {
            forget_unused(dir.as_deref(), base_existed);
            return Err(e);
        }
    };
    let outcome = run_started(plan, &client, &monitor, &mut servers, dir.as_deref(), stop, abort).await;
    // After an early return (an error, `--list-conversations`): the first server is still up.
    servers.shutdown(None).await;
    if let (Err(e), Some(d)) = (&outcome, &dir) {
        if !d.join(results::MANIFEST_FILE).exists() {
            // Nothing ran. A usage error (selection) leaves nothing behind; else the folder
            // stays only if it holds a server log worth reading.
            if e.chain().any(|c| c.is::<crate::core::UsageError>()) {
                let _ = std::fs::remove_dir_all(d);
                if !base_existed {
                    let _ = std::fs::remove_dir(&plan.results_dir);
                }
            } else {
                forget_unused(Some(d), base_existed);
            }
        }
    }
    outcome
}

/// Removes a results folder nothing was written to (no server log either), and the folder
/// above it when this run created that.
fn forget_unused(dir: Option<&std::path::Path>, base_existed: bool) {
    let Some(dir) = dir else { return };
    if walk_has_file(dir) {
        eprintln!("the server's log is kept in {}", dir.join("engine").display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
        if let (false, Some(base)) = (base_existed, dir.parent()) {
            let _ = std::fs::remove_dir(base);
        }
    }
}

fn walk_has_file(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_has_file(&p)
            } else {
                std::fs::metadata(&p).is_ok_and(|m| m.len() > 0)
            }
        })
    })
}

async fn run_started(
    plan: &Plan,
    client: &Client,
    monitor: &Monitor,
    servers: &mut Servers<'_>,
    dir: Option<&std::path::Path>,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Result<Option<PathBuf>> {
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
    let dir = match dir {
        Some(d) if !plan.list_conversations => d,
        _ => {
            // A shard lists its own share.
            let mut listed = selection;
            if let Some(shard) = &plan.shard {
                let mut i = 0;
                listed.chosen.retain(|_| {
                    i += 1;
                    shard.owns(i - 1)
                });
            }
            print!("{}", render_listing(&listed));
            return Ok(None);
        }
    };
    // A shard keeps its share; in the suite each conversation keeps its test number in the
    // whole selection, so merged shards number their tests as one unsharded run would.
    let numbered: Vec<(u32, Conversation)> = selection
        .conversations()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| plan.shard.as_ref().is_none_or(|s| s.owns(*i)))
        .map(|(i, c)| (i as u32 + 1, c))
        .collect();
    if numbered.is_empty() {
        return Err(crate::core::UsageError::new(match &plan.shard {
            Some(s) => format!("shard {}/{} has no conversation of the selection: use fewer shards", s.index, s.count),
            None => "the selection is empty".into(),
        })
        .into());
    }

    let mut manifest = new_manifest(plan, &first, client.clock());
    manifest.token_counts_estimated = counter.is_estimate();
    if let Some(window) = plan.calibrate {
        // Before the samplers start: the timeline shows the run, not this.
        match calibrate::measure(&plan.client, window.as_secs_f64()).await {
            Ok(c) => {
                eprintln!(
                    "client ceiling: {:.0} requests/s, {:.0} tokens/s ({:.2} ms CPU per request; {} answers of {} tokens in {:.1} s)",
                    c.requests_per_s, c.chunks_per_s, c.cpu_ms_per_request, c.requests, c.answer_tokens, c.seconds
                );
                manifest.client_calibration = Some(c);
            }
            Err(e) => eprintln!("warning: the client's ceiling was not measured: {e:#}"),
        }
    }
    results::write_manifest(dir, &manifest)?;
    monitor.attach(dir)?;
    monitor.write_system_json(dir, engine_version)?;

    if let Some(at) = plan.start_at {
        if until_stopped(stop, wait_until(at)).await?.is_none() {
            let why = format!("stopped while waiting for --start-at {at}; nothing was run");
            return Err(Interrupted(why).into());
        }
    }
    let progress = match &plan.schedule {
        SchedulePlan::Sequential => Progress::turns(numbered.iter().map(|(_, c)| c.turns.len() as u64).sum()),
        SchedulePlan::Load(load) => Progress::timed(load.duration.saturating_mul(load.planned_levels() as u32), load.log_interval),
    };
    let observer = progress.clone();
    let recorder =
        Recorder::observed(RecordSink::create(&dir.join(results::TURNS_FILE))?, Arc::new(move |r| observer.observe(r)))
            .with_audit(RecordSink::create(&dir.join(TRANSCRIPTS_FILE))?, RecordSink::create(&dir.join(TOKENS_FILE))?);
    // The records live in turns.jsonl; memory keeps only the spans a schedule asks for.
    recorder.retain_from(None);
    // A dead server ends the run (not a Ctrl-C: the run still completes and says why). With a
    // fresh server per test a crash fails that test only, and the next test gets a new server.
    let run_stop = stop.child_token();
    let watch_health = matches!(plan.schedule, SchedulePlan::Load(_)) || plan.shared_server();
    let health = watch_health.then(|| ServerHealth::new(run_stop.clone()));
    let settings = ReplaySettings {
        think_time: plan.think_time,
        // One request in flight: the server's counters over a turn belong to that turn (not
        // with shards: the others' requests move them too).
        metrics_deltas: matches!(plan.schedule, SchedulePlan::Sequential) && plan.shard.is_none(),
        stop: run_stop,
        abort: abort.clone(),
        health: health.clone(),
    };
    let run = Run { plan, client, recorder: &recorder, settings: &settings, progress: &progress };
    let outcome = match &plan.schedule {
        SchedulePlan::Sequential => run.suite(servers, &numbered, &mut manifest).await,
        SchedulePlan::Load(load) => {
            run.load(load, servers, numbered.into_iter().map(|(_, c)| c).collect(), &mut manifest, dir).await
        }
    };
    progress.finish();
    servers.shutdown(manifest.tests.last_mut()).await;
    if let Err(e) = &outcome {
        // Keep what was recorded: the reports are still written.
        eprintln!("error during the run: {e:#}");
    }
    manifest.server_died = health.as_ref().and_then(|h| h.dead()).map(str::to_string);
    manifest.interrupted = stop.is_cancelled() || outcome.is_err() || manifest.server_died.is_some();
    results::write_manifest(dir, &manifest)?;
    monitor.finish(dir)?;
    // The reports describe the run as it ends; the manifest says so last of all, so a run
    // killed before this point reads as incomplete.
    let mut finished = manifest.clone();
    finished.completed = Some(true);
    finished.completed_at = Some(jiff::Timestamp::now().to_string());
    // The run is over: the reports read its records back from turns.jsonl, one at a time.
    let summary = report::write_reports(dir, &finished)?;
    println!("{}", report::console_summary(&summary));
    if let Some(load) = &summary.load {
        println!("{}", report::load::console_table(load));
    }
    println!("results: {}", dir.display());
    results::write_manifest(dir, &finished)?;
    outcome?;
    if stop.is_cancelled() {
        let why = format!("partial results written to {}", dir.display());
        return Err(if signals::by_sigterm() { Interrupted::sigterm(why) } else { Interrupted(why) }.into());
    }
    verdict(&summary.requests, manifest.server_died.as_deref(), plan.max_error_rate)?;
    Ok(Some(dir.to_path_buf()))
}

/// The exit status of a run that got to its end: a dead server, no success at all, or too
/// many failures for `--max-error-rate` are errors with their own exit codes.
fn verdict(requests: &RequestCounts, server_died: Option<&str>, max_error_rate: Option<f64>) -> Result<()> {
    if let Some(why) = server_died {
        return Err(ServerDied(format!("{why}; the run ended early")).into());
    }
    if requests.ok == 0 {
        return Err(AllFailed(format!("{} measured requests, every one failed", requests.measured)).into());
    }
    if let Some(max) = max_error_rate {
        let rate = requests.failed as f64 / requests.measured.max(1) as f64 * 100.0;
        if rate > max {
            return Err(ErrorRateExceeded(format!(
                "{} of {} measured requests failed ({rate:.1} %), more than --max-error-rate {max}",
                requests.failed, requests.measured
            ))
            .into());
        }
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
    async fn suite(&self, servers: &mut Servers<'_>, conversations: &[(u32, Conversation)], manifest: &mut Manifest) -> Result<()> {
        let stop = &self.settings.stop;
        for (test, conversation) in conversations {
            let test = *test;
            if stop.is_cancelled() {
                break;
            }
            self.progress.set_message(&conversation.id);
            let mut test_run = TestRun { test, conversation_id: conversation.id.clone(), ..Default::default() };
            let first_record = self.recorder.len();
            // This conversation's records, for its outcome line; the earlier ones are let go.
            self.recorder.retain_from(Some(first_record));
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
            let outcome = load::run_levels(load, &ctx, self.progress, self.plan.seed, self.plan.shard.as_ref(), |w| {
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
        let dead = self.settings.health.as_ref().and_then(|h| h.dead()).is_some();
        test_run.outcome = match (&outcome, dead, stop.is_cancelled()) {
            (Err(_), _, _) => "failed",
            (Ok(()), true, _) => "server_died",
            (Ok(()), false, true) => "interrupted",
            (Ok(()), false, false) => "completed",
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
fn new_manifest(plan: &Plan, server: &ServerInfo, clock: crate::core::RunClock) -> Manifest {
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
        completed: Some(false),
        completed_at: None,
        server_died: None,
        tests: Vec::new(),
        client_calibration: None,
        clock_origin: Some(clock.origin_rfc3339()),
        shard: plan.shard.clone(),
        merged_from: Vec::new(),
    }
}

/// Sleeps until the wall clock reads `at` (at once when it is past), saying so first.
async fn wait_until(at: jiff::Timestamp) -> Result<()> {
    let left = at.duration_since(jiff::Timestamp::now());
    if let Ok(left) = std::time::Duration::try_from(left) {
        eprintln!("waiting {:.1} s for --start-at {at}", left.as_secs_f64());
        tokio::time::sleep(left).await;
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
