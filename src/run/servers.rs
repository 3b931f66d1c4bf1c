//! Which server serves each test: a fresh one per test (`--isolation test`), one for the run with
//! its prefix cache reset between tests (`--isolation run`), or the external endpoint. Around each
//! managed server: GPU hygiene before it starts and after it stops; around each test: the
//! samplers and the warm-up requests.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::warmup::warm_up;
use crate::client::api::{probe_cache, reset_prefix_cache, ServerInfo};
use crate::client::Client;
use crate::core::record::Recorder;
use crate::core::results::TestRun;
use crate::engine::RunningServer;
use crate::metrics::monitor::{Baseline, Monitor};
use crate::metrics::sampler::Samplers;
use crate::plan::Plan;
use crate::replay::Target;

/// A started server.
pub struct Started {
    server: RunningServer,
    target: Target,
    /// GPU memory before it started (hygiene), and the last test it served.
    baseline: Baseline,
    test: u32,
}

impl Started {
    pub fn info(&self) -> &ServerInfo {
        &self.target.info
    }
}

pub struct Servers<'a> {
    plan: &'a Plan,
    client: &'a Client,
    monitor: &'a Monitor,
    /// Where managed servers' logs go (`<results>/engine`).
    log_dir: PathBuf,
    current: Option<Started>,
    /// Started before the results folder existed (it answered selection's `/tokenize`), not yet
    /// used by a test.
    spare: Option<Started>,
    /// Sampling the current test.
    samplers: Option<Samplers>,
    /// The "no cached_tokens" warning was printed.
    warned: std::sync::atomic::AtomicBool,
}

impl<'a> Servers<'a> {
    /// Starts the first server (its log in `log_dir`: the results folder's `engine/`, written
    /// from the first byte) and probes it: it answers what the model is and how it tokenizes,
    /// then serves the first test, still fresh (tokenizing touches no cache).
    pub async fn start_first(plan: &'a Plan, client: &'a Client, monitor: &'a Monitor, log_dir: &Path) -> Result<Self> {
        let mut servers =
            Servers {
            plan,
            client,
            monitor,
            log_dir: log_dir.to_path_buf(),
            current: None,
            spare: None,
            samplers: None,
            warned: Default::default(),
        };
        let first = servers.start("server-001", 1).await?;
        servers.spare = Some(first);
        Ok(servers)
    }

    /// The first server's probe.
    pub fn first(&self) -> Option<&Started> {
        self.spare.as_ref().or(self.current.as_ref())
    }

    async fn start(&self, name: &str, test: u32) -> Result<Started> {
        let baseline = self.monitor.before_start(&self.plan.engine, test).await?;
        let server = self.plan.engine.start(name, &self.log_dir, self.client.http(), self.plan.seed).await?;
        let info = ServerInfo::probe(self.client, &server.base_url, self.plan.model.as_deref()).await;
        let mut info = match info {
            Ok(i) => i,
            Err(e) => {
                let _ = server.stop().await;
                return Err(e);
            }
        };
        let probe = probe_cache(self.client, &info).await;
        info.return_token_ids = probe.return_token_ids;
        info.reports_cached_tokens = probe.reports_cached_tokens;
        if probe.reports_cached_tokens == Some(false) && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            eprintln!(
                "WARNING: {} reports no usage.prompt_tokens_details.cached_tokens: per-turn reuse comes only from \
                 /metrics deltas (single-user runs) and is unknown in many-user runs. For vLLM, serve with \
                 --enable-prompt-tokens-details (turnbench's vLLM profiles do).",
                info.base_url
            );
        }
        let target = Target::new(info, server.process(), self.plan.template.clone());
        for outcome in &probe.sent {
            target.served(outcome);
        }
        Ok(Started { server, target, baseline, test })
    }

    /// Starts the samplers of `test` and waits for their first `/metrics` scrape, so the
    /// counters' starting values are read before the test's first request.
    async fn start_samplers(monitor: &Monitor, test: u32, engine_pid: Option<u32>, base_url: &str) -> Samplers {
        let mut samplers = monitor.start(test, engine_pid, base_url);
        samplers.first_scrape().await;
        samplers
    }

    /// The server for `test` (named after `what`), started, reset, sampled and warmed up as needed.
    pub async fn for_test(&mut self, test: u32, what: &str, recorder: &Recorder, run: &mut TestRun) -> Result<Target> {
        if let Some(current) = &mut self.current {
            current.test = test;
            let pid = current.server.guard.as_ref().map(|g| g.pid());
            self.samplers = Some(Self::start_samplers(self.monitor, test, pid, &current.target.info.base_url).await);
            // Reused for this test (shared server): reset its prefix cache when turnbench owns it.
            if self.plan.engine.is_managed() {
                let (verified, probe) = reset_prefix_cache(self.client, &current.target.info).await?;
                current.target.reset_ledger();
                current.target.served(&probe);
                run.cache_reset_verified = Some(verified);
            }
            return Ok(current.target.clone());
        }
        let mut started = match self.spare.take() {
            Some(spare) => spare,
            None => self.start(&format!("test-{test:03}-{what}"), test).await?,
        };
        started.test = test;
        let pid = started.server.guard.as_ref().map(|g| g.pid());
        self.samplers = Some(Self::start_samplers(self.monitor, test, pid, &started.target.info.base_url).await);
        if let Some(guard) = &started.server.guard {
            run.time_to_ready_ms = Some(guard.time_to_ready.as_secs_f64() * 1000.0);
            let file = guard.log_path.file_name().unwrap_or_default().to_string_lossy();
            run.server_log = Some(format!("engine/{file}"));
            // Started in a group of its own (the supervisor's `process_group(0)`): pgid = pid.
            run.server_pgid = Some(guard.pid());
        }
        let target = started.target.clone();
        self.current = Some(started);
        warm_up(self.client, &target, recorder, test, self.plan.warmup).await?;
        Ok(target)
    }

    /// After a test: a per-test server is stopped; a shared one is kept unless it died.
    pub async fn after_test(&mut self, run: &mut TestRun) {
        if let Some(samplers) = self.samplers.take() {
            samplers.stop().await;
        }
        let died = self
            .current
            .as_ref()
            .and_then(|c| c.server.guard.as_ref())
            .is_some_and(|g| g.exit_status().is_some());
        if !self.plan.shared_server() || died {
            if let Some(current) = self.current.take() {
                self.stop(current, Some(run)).await;
            }
        }
    }

    /// Stops every server left; the last test's record gets the teardown figures.
    pub async fn shutdown(&mut self, last: Option<&mut TestRun>) {
        if let Some(samplers) = self.samplers.take() {
            samplers.stop().await;
        }
        if let Some(current) = self.current.take() {
            self.stop(current, last).await;
        }
        if let Some(spare) = self.spare.take() {
            self.stop(spare, None).await;
        }
    }

    async fn stop(&self, started: Started, mut run: Option<&mut TestRun>) {
        let managed = self.plan.engine.is_managed();
        match started.server.stop().await {
            Ok(took) => {
                if let (Some(run), true) = (run.as_deref_mut(), managed) {
                    run.teardown_ms = Some(took.as_secs_f64() * 1000.0);
                }
            }
            Err(e) => eprintln!("warning: server teardown: {e:#}"),
        }
        if managed {
            let released = self.monitor.after_stop(started.test, started.baseline).await;
            if let Some(run) = run {
                run.gpu_release_ms = released;
            }
        }
    }
}
