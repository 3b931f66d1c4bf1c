//! Many users at once: `turnbench run --concurrency N | --qps R[,R…] | --sweep auto`.
//!
//! One server for the whole run (a managed simulator started once, or `--endpoint`); levels run
//! one after another through the schedulers of [`crate::schedule`], which replay conversations
//! with the one replay engine. The results folder is the single-user one: manifest (with the
//! level windows under `settings.load`), `turns.jsonl`, and every report, plus the load section
//! and plots built by [`analysis`] and [`report`].

pub mod analysis;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{RunArgs, SweepKind, WorkloadKind};
use crate::engine::Engine;
use crate::error::Interrupted;
use crate::record::{RecordSink, Recorder, TurnRecord};
use crate::replay::{ReplaySettings, ServerInfo};
use crate::results::{self, Manifest};
use crate::schedule::{run_level, Level, LevelWindow, LoadContext, Mode};
use crate::{report as reports, runner, UsageError};
use analysis::{LoadSettings, SETTINGS_KEY};

/// Checks the multi-user flags (usage errors, before any server starts).
pub fn validate(args: &RunArgs) -> Result<()> {
    let l = &args.load;
    let bad = |m: String| -> Result<()> { Err(UsageError::new(m).into()) };
    if l.concurrency == Some(0) {
        return bad("--concurrency 0: must be at least 1".into());
    }
    if let Some(q) = l.qps.iter().find(|q| !(q.is_finite() && **q > 0.0)) {
        return bad(format!("--qps {q}: rates must be positive"));
    }
    if !(l.duration.is_finite() && l.duration > 0.0) {
        return bad(format!("--duration {}: must be a positive number of seconds", l.duration));
    }
    if let Some(t) = l.time.filter(|t| !(t.is_finite() && *t > 0.0)) {
        return bad(format!("--time {t}: must be a positive number of seconds"));
    }
    if !(l.min_delay >= 0.0 && l.max_delay >= l.min_delay && l.max_delay.is_finite()) {
        return bad(format!("--min-delay {} / --max-delay {}: need 0 ≤ min ≤ max", l.min_delay, l.max_delay));
    }
    if !(l.trim_warmup >= 0.0 && l.trim_cooldown >= 0.0 && l.trim_warmup + l.trim_cooldown < l.duration) {
        return bad("--trim-warmup + --trim-cooldown must be zero or more and shorter than --duration".into());
    }
    if let Some(p) = l.percentiles.iter().find(|p| !(**p >= 0.0 && **p <= 100.0)) {
        return bad(format!("--percentiles {p}: must be between 0 and 100"));
    }
    if !(l.log_interval.is_finite() && l.log_interval > 0.0) {
        return bad(format!("--log-interval {}: must be positive", l.log_interval));
    }
    if let (Some(c), Some(m)) = (l.concurrency, l.max_active_conversations) {
        if m < c {
            return bad(format!("--max-active-conversations {m} is below --concurrency {c}: every client needs a conversation"));
        }
    }
    if l.max_active_conversations == Some(0) || l.sweep_levels == 0 || l.sweep_max_concurrency == 0 {
        return bad("--max-active-conversations, --sweep-levels and --sweep-max-concurrency must be at least 1".into());
    }
    Ok(())
}

fn mode_name(args: &RunArgs) -> &'static str {
    let l = &args.load;
    match (l.concurrency, l.qps.len(), l.sweep) {
        (_, _, Some(SweepKind::Auto)) => "sweep_auto",
        (Some(_), _, _) => "closed",
        (None, 1, _) => "open",
        _ => "sweep",
    }
}

fn workload_name(kind: WorkloadKind) -> String {
    format!("{kind:?}").to_lowercase()
}

/// The multi-user run.
pub async fn run_load(args: RunArgs) -> Result<()> {
    validate(&args)?;
    let engine = Engine::from_args(&args)?;
    // Data errors surface before any server starts.
    let source = crate::workload::sources::Source::load(&args)?;
    let client = runner::build_client(&args, &engine)?;
    let dir = results::create_run_dir(&args.results_dir, args.label.as_deref())?;
    let running = engine
        .start("load", &dir.join("engine"), client.http(), args.seed)
        .await
        .with_context(|| format!("starting the {} server", engine.name()))?;
    let result = run_with_server(&args, &engine, &client, &dir, &running.base_url, source).await;
    running.stop().await?;
    let (manifest, records) = result?;
    let summary = reports::write_reports(&dir, &records, &manifest)?;
    println!("{}", reports::console_summary(&summary));
    if let Some(load) = &summary.load {
        println!("{}", report::console_table(load));
    }
    println!("results: {}", dir.display());
    if manifest.interrupted {
        return Err(Interrupted(format!("partial results written to {}", dir.display())).into());
    }
    Ok(())
}

async fn run_with_server(
    args: &RunArgs,
    engine: &Engine,
    client: &crate::client::Client,
    dir: &std::path::Path,
    base_url: &str,
    source: crate::workload::sources::Source,
) -> Result<(Manifest, Vec<TurnRecord>)> {
    let mut server = ServerInfo::probe(client, base_url, runner::served_model(args, engine).as_deref()).await?;
    let datasets = source.files();
    let conversations = source.conversations(args, client, &server).await?;
    if conversations.is_empty() {
        return Err(UsageError::new("the workload has no conversation to replay").into());
    }
    // Many requests in flight: no per-turn /tokenize round trip and no /metrics deltas.
    server.has_tokenize = false;
    let l = &args.load;
    let mut load_settings = LoadSettings {
        mode: mode_name(args).into(),
        percentiles: l.percentiles.clone(),
        trim_warmup_s: l.trim_warmup,
        trim_cooldown_s: l.trim_cooldown,
        saturation_ttft_factor: l.saturation_ttft_factor,
        saturation_ttft_floor_ms: l.saturation_ttft_floor_ms,
        workload: workload_name(l.workload),
        levels: Vec::new(),
    };
    let mut settings_json = runner::settings_json(args);
    settings_json["multi_user"] = json!({
        "concurrency": l.concurrency, "qps": l.qps, "sweep": l.sweep.map(|_| "auto"), "arrivals": l.arrivals,
        "duration_s": l.duration, "time_s": l.time, "min_delay_s": l.min_delay, "max_delay_s": l.max_delay,
        "max_active_conversations": l.max_active_conversations, "sweep_levels": l.sweep_levels,
        "sweep_max_concurrency": l.sweep_max_concurrency, "conversations": conversations.len(),
    });
    settings_json[SETTINGS_KEY] = serde_json::to_value(&load_settings)?;
    let mut manifest = runner::new_manifest(args, engine, &server, datasets, settings_json);
    results::write_manifest(dir, &manifest)?;
    let recorder = Recorder::new(RecordSink::create(&dir.join(results::TURNS_FILE))?);
    let settings = ReplaySettings {
        think_time: Duration::ZERO,
        metrics_deltas: false,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
    };
    let signals = tokio::spawn(runner::watch_signals(settings.stop.clone(), settings.abort.clone()));
    // `--time` ends the run like the end of a level, not like Ctrl-C.
    let run_stop = settings.stop.child_token();
    let time_limit = l.time.map(|t| {
        let stop = run_stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(t)).await;
            stop.cancel();
        })
    });
    runner::warm_up(client, &server, &recorder, 0, args.warmup).await?;

    let ctx = LoadContext {
        client: client.clone(),
        server,
        settings: ReplaySettings { stop: run_stop, ..settings.clone() },
        recorder: recorder.clone(),
        test: 1,
        pool: Arc::new(conversations),
    };
    let progress = Progress::start(&recorder, planned_levels(args) as f64 * l.duration, l.log_interval);
    let outcome = run_levels(args, &ctx, &progress, |w| {
        load_settings.levels.push(w.clone());
        manifest.settings[SETTINGS_KEY] = serde_json::to_value(&load_settings)?;
        results::write_manifest(dir, &manifest)
    })
    .await;
    progress.finish();
    signals.abort();
    if let Some(t) = time_limit {
        t.abort();
    }
    if let Err(e) = &outcome {
        // Keep what was recorded: reports are still written by the caller.
        eprintln!("error during the run: {e:#}");
    }
    manifest.interrupted = settings.stop.is_cancelled() || outcome.is_err();
    results::write_manifest(dir, &manifest)?;
    Ok((manifest, recorder.records()))
}

fn planned_levels(args: &RunArgs) -> usize {
    let l = &args.load;
    match l.sweep {
        Some(SweepKind::Auto) => l.sweep_levels + 2,
        None if l.concurrency.is_some() => 1,
        None => l.qps.len().max(1),
    }
}

fn level(args: &RunArgs, label: String, mode: Mode, index: usize) -> Level {
    let l = &args.load;
    Level {
        label,
        mode,
        duration: Duration::from_secs_f64(l.duration),
        think: (Duration::from_secs_f64(l.min_delay), Duration::from_secs_f64(l.max_delay)),
        max_active: l.max_active_conversations,
        seed: args.seed.wrapping_add(index as u64 * 7919),
    }
}

pub fn qps_label(q: f64) -> String {
    format!("qps-{q}")
}

/// Runs the levels the flags ask for; `done` is called after each with its window.
async fn run_levels(
    args: &RunArgs,
    ctx: &LoadContext,
    progress: &Progress,
    mut done: impl FnMut(&LevelWindow) -> Result<()>,
) -> Result<()> {
    let l = &args.load;
    let run = |lv: Level| {
        progress.set_level(&lv.label);
        async move { run_level(ctx, &lv).await }
    };
    if let Some(c) = l.concurrency {
        let w = run(level(args, format!("concurrency-{c}"), Mode::Closed { concurrency: c }, 0)).await?;
        return done(&w);
    }
    let rates: Vec<f64> = match l.sweep {
        None => l.qps.clone(),
        Some(SweepKind::Auto) => {
            let sync = run(level(args, "sync".into(), Mode::Closed { concurrency: 1 }, 0)).await?;
            done(&sync)?;
            let max_c = l.sweep_max_concurrency;
            let max = run(level(args, "max-throughput".into(), Mode::Closed { concurrency: max_c }, 1)).await?;
            done(&max)?;
            let records = ctx.recorder.records();
            let settings = LoadSettings {
                mode: String::new(),
                percentiles: vec![],
                trim_warmup_s: l.trim_warmup,
                trim_cooldown_s: l.trim_cooldown,
                saturation_ttft_factor: l.saturation_ttft_factor,
                saturation_ttft_floor_ms: l.saturation_ttft_floor_ms,
                workload: String::new(),
                levels: vec![],
            };
            let lo = analysis::level_summary(&records, &sync, &settings).achieved_qps;
            let hi = analysis::level_summary(&records, &max, &settings).achieved_qps;
            sweep_rates(lo, hi, l.sweep_levels)
        }
    };
    for (i, q) in rates.into_iter().enumerate() {
        if ctx.settings.stop.is_cancelled() {
            break;
        }
        let w = run(level(args, qps_label(q), Mode::Open { qps: q, arrivals: l.arrivals }, i + 2)).await?;
        done(&w)?;
    }
    Ok(())
}

/// `n` evenly spaced rates from `lo` to `hi` (both included), rounded to 3 significant digits.
pub fn sweep_rates(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let lo = if lo > 0.0 { lo } else { hi / n.max(1) as f64 };
    let hi = hi.max(lo);
    if n <= 1 {
        return vec![round3(hi)];
    }
    let mut out: Vec<f64> = (0..n).map(|i| round3(lo + (hi - lo) * i as f64 / (n - 1) as f64)).filter(|q| *q > 0.0).collect();
    out.dedup();
    out
}

fn round3(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 0.0;
    }
    let mag = 10f64.powi(2 - x.log10().floor() as i32);
    (x * mag).round() / mag
}

/// The progress bar (elapsed time over planned time) and a summary line every `--log-interval`.
struct Progress {
    bar: ProgressBar,
    level: Arc<std::sync::Mutex<String>>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(recorder: &Recorder, planned_s: f64, interval_s: f64) -> Self {
        let bar = ProgressBar::new(planned_s.ceil().max(1.0) as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let level = Arc::new(std::sync::Mutex::new(String::new()));
        let ticker = {
            let (bar, recorder, level) = (bar.clone(), recorder.clone(), level.clone());
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let mut seen = recorder.len();
                let mut last_line = started;
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let now = tokio::time::Instant::now();
                    bar.set_position(now.duration_since(started).as_secs());
                    let label = level.lock().map(|l| l.clone()).unwrap_or_default();
                    bar.set_message(format!("{label}  {} requests", recorder.len()));
                    if now.duration_since(last_line).as_secs_f64() >= interval_s {
                        let fresh = recorder.records_since(seen);
                        seen += fresh.len();
                        let line = report::progress_line(&label, &fresh, now.duration_since(last_line).as_secs_f64());
                        if bar.is_hidden() {
                            eprintln!("{line}");
                        } else {
                            bar.println(line);
                        }
                        last_line = now;
                    }
                }
            })
        };
        Self { bar, level, ticker }
    }

    fn set_level(&self, label: &str) {
        if let Ok(mut l) = self.level.lock() {
            *l = label.to_string();
        }
    }

    fn finish(&self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_rates_are_evenly_spaced_between_sync_and_max() {
        assert_eq!(sweep_rates(2.0, 10.0, 5), vec![2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(sweep_rates(0.0, 9.0, 3), vec![3.0, 6.0, 9.0]);
        assert_eq!(sweep_rates(1.234, 1.234, 1), vec![1.23]);
    }
}
