//! The run's view of the samplers: opens the GPU probe once (or says in one line why GPU metrics
//! are unavailable), applies GPU hygiene around each managed server, starts and stops the
//! samplers per test, and writes `system.json` and `timeline.csv`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::gpu::{foreign_memory, memory_used_mib, open_probe, wait_for_release, GpuInfo, GpuProbe};
use super::sampler::{MetricsTarget, SamplerConfig, Samplers};
use super::system::{HostSampler, SystemInfo};
use crate::core::timeline::{metric, source, Sample, TimelineSink, TIMELINE_FILE};
use crate::core::RunClock;
use crate::core::results::write_atomic;
use crate::core::UsageError;

pub const SYSTEM_FILE: &str = "system.json";

/// How long teardown waits for GPU memory to come back near its baseline.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(60);
const RELEASE_POLL: Duration = Duration::from_millis(250);

pub struct Monitor {
    pub sink: TimelineSink,
    gpu: Option<Arc<dyn GpuProbe>>,
    gpu_unavailable: Option<String>,
    interval: Duration,
    clock: RunClock,
    allow_busy_gpu: bool,
    http: reqwest::Client,
    api_key: Option<String>,
    /// How long teardown waits for GPU memory to come back ([`RELEASE_TIMEOUT`]).
    release_timeout: Duration,
    /// `--metrics-url`: each replica's `/metrics`, scraped beside the endpoint's.
    replicas: Vec<String>,
}

/// What hygiene saw before a managed server started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline {
    pub memory_used_mib: Option<f64>,
}

impl Monitor {
    /// Opens the GPU probe; without one, prints `GPU metrics unavailable: <why>` once.
    pub fn open(interval: Duration, clock: RunClock, allow_busy_gpu: bool, http: reqwest::Client, api_key: Option<String>) -> Self {
        let (gpu, gpu_unavailable) = match open_probe() {
            Ok(p) => (Some(Arc::from(p)), None),
            Err(why) => {
                // Said once per process, not once per server (an A/B run opens two monitors).
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| eprintln!("GPU metrics unavailable: {why}"));
                (None, Some(why))
            }
        };
        Self::with_probe(gpu, gpu_unavailable, interval, clock, allow_busy_gpu, http, api_key)
    }

    pub fn with_probe(
        gpu: Option<Arc<dyn GpuProbe>>,
        gpu_unavailable: Option<String>,
        interval: Duration,
        clock: RunClock,
        allow_busy_gpu: bool,
        http: reqwest::Client,
        api_key: Option<String>,
    ) -> Self {
        Self {
            sink: TimelineSink::memory(),
            gpu,
            gpu_unavailable,
            interval,
            clock,
            allow_busy_gpu,
            http,
            api_key,
            release_timeout: RELEASE_TIMEOUT,
            replicas: Vec::new(),
        }
    }

    /// The same monitor, waiting at most `timeout` for GPU memory after a teardown.
    pub fn with_release_timeout(self, timeout: Duration) -> Self {
        Self { release_timeout: timeout, ..self }
    }

    pub fn gpu_info(&self) -> std::result::Result<GpuInfo, String> {
        match &self.gpu {
            Some(p) => Ok(p.info()),
            None => Err(self.gpu_unavailable.clone().unwrap_or_else(|| "no GPU probe".into())),
        }
    }

    /// Starts appending samples to `dir/timeline.csv` (samples taken so far included).
    pub fn attach(&self, dir: &Path) -> Result<()> {
        self.sink.attach(&dir.join(TIMELINE_FILE))
    }

    /// Writes `dir/system.json`.
    pub fn write_system_json(&self, dir: &Path, engine_version: Option<String>) -> Result<()> {
        let info = SystemInfo::collect(self.gpu_info(), engine_version);
        write_atomic(&dir.join(SYSTEM_FILE), &serde_json::to_vec_pretty(&info)?)
    }

    /// GPU hygiene before `engine` starts a server for `test` (nothing for external servers):
    /// refuses (a [`UsageError`]) when processes outside turnbench hold GPU memory, unless
    /// `--allow-busy-gpu`; returns the memory baseline.
    pub async fn before_start(&self, engine: &crate::engine::Engine, test: u32) -> Result<Baseline> {
        if !engine.is_managed() {
            return Ok(Baseline::default());
        }
        self.check_gpu(test, &format!("{} server for test {test}", engine.name())).await
    }

    /// The hygiene check itself; `what` names the server about to start.
    pub async fn check_gpu(&self, test: u32, what: &str) -> Result<Baseline> {
        let Some(probe) = self.gpu.clone() else { return Ok(Baseline::default()) };
        let read = tokio::task::spawn_blocking(move || {
            let own = own_pids();
            probe.sample().map(|d| (foreign_memory(&d, &own), memory_used_mib(&d)))
        })
        .await?;
        let (foreign, used) = match read {
            Ok(r) => r,
            Err(e) => {
                eprintln!("GPU hygiene check skipped: {e:#}");
                return Ok(Baseline::default());
            }
        };
        if foreign.is_busy() {
            let who = foreign.describe();
            if !self.allow_busy_gpu {
                return Err(UsageError::new(format!(
                    "GPU busy before starting the {what}: {who} (processes outside turnbench); stop them or pass --allow-busy-gpu"
                ))
                .into());
            }
            eprintln!("warning: GPU busy before starting the {what}: {who} (--allow-busy-gpu)");
            let t = self.clock.now_ms();
            self.sink.push(vec![Sample::new(t, test, source::HYGIENE, metric::GPU_FOREIGN_MIB, "", foreign.total_mib())]);
        }
        Ok(Baseline { memory_used_mib: used })
    }

    /// Scrapes these replica `/metrics` URLs too (a router's replicas).
    pub fn with_replicas(mut self, urls: Vec<String>) -> Self {
        self.replicas = urls;
        self
    }

    /// Starts the samplers of one test.
    pub fn start(&self, test: u32, engine_pid: Option<u32>, base_url: &str) -> Samplers {
        Samplers::start(
            SamplerConfig {
                interval: self.interval,
                test,
                clock: self.clock,
                engine_pid,
                gpu: self.gpu.clone(),
                metrics: Some(MetricsTarget {
                    http: self.http.clone(),
                    base_url: base_url.to_string(),
                    api_key: self.api_key.clone(),
                    replicas: self.replicas.clone(),
                }),
            },
            self.sink.clone(),
        )
    }

    /// GPU hygiene after teardown: waits until memory is back near `baseline` and records how
    /// long that took (`hygiene,gpu_release_ms`); returns it in milliseconds.
    pub async fn after_stop(&self, test: u32, baseline: Baseline) -> Option<f64> {
        let (ms, warning) = self.release_after_stop(test, baseline).await?;
        if let Some(w) = warning {
            eprintln!("{w}");
        }
        Some(ms)
    }

    /// [`after_stop`](Self::after_stop) without the printing: the milliseconds waited, and the
    /// warning when memory did not come back in time.
    pub async fn release_after_stop(&self, test: u32, baseline: Baseline) -> Option<(f64, Option<String>)> {
        let (Some(probe), Some(base)) = (self.gpu.clone(), baseline.memory_used_mib) else { return None };
        let started = Instant::now();
        let timeout = self.release_timeout;
        let release = tokio::task::spawn_blocking(move || wait_for_release(probe.as_ref(), base, timeout, RELEASE_POLL.min(timeout)))
            .await
            .ok()?;
        let t = self.clock.now_ms();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.sink.push(vec![Sample::new(t, test, source::HYGIENE, metric::GPU_RELEASE_MS, "", ms)]);
        let warning = (!release.released).then(|| release_warning(base, timeout, test, release.last_used_mib));
        Some((ms, warning))
    }

    /// Rewrites `timeline.csv` atomically, sorted.
    pub fn finish(&self, dir: &Path) -> Result<()> {
        if let Some(e) = self.sink.write_error() {
            eprintln!("warning: {e} (rewritten in full now)");
        }
        self.sink.finish(dir).map(|_| ())
    }
}

/// What teardown says when GPU memory is not back near its baseline `base` within `timeout`.
pub fn release_warning(base: f64, timeout: Duration, test: u32, last_used_mib: Option<f64>) -> String {
    let waited = if timeout >= Duration::from_secs(1) {
        format!("{:.0} s", timeout.as_secs_f64())
    } else {
        format!("{} ms", timeout.as_millis())
    };
    format!(
        "warning: GPU memory not back to its baseline ({base:.0} MiB) {waited} after test {test}'s server stopped (now {} MiB)",
        last_used_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "?".into())
    )
}

/// turnbench and its descendants.
fn own_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut host = match HostSampler::new(Some(me)) {
        Ok(h) => h,
        Err(_) => return vec![me],
    };
    host.system = false;
    host.sample(0.0, 0);
    let mut pids = host.engine_pids();
    if !pids.contains(&me) {
        pids.push(me);
    }
    pids
}

/// The engine's version for `system.json`: `turnbench sim <version>` for the simulator, what
/// the server reports for others.
pub async fn engine_version(engine: &crate::engine::Engine, http: &reqwest::Client, base_url: &str) -> Option<String> {
    match engine {
        crate::engine::Engine::Sim { .. } => Some(format!("turnbench sim {}", env!("CARGO_PKG_VERSION"))),
        _ => crate::client::api::server_version(http, base_url).await,
    }
}
