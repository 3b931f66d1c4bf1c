//! `Samplers::start` per test (DESIGN §2): a dedicated thread samples the machine, the engine's
//! process tree and the GPUs (blocking calls), a tokio task scrapes the server's `/metrics`
//! gauges; both write into a [`TimelineSink`] on the run's clock. Neither touches the request
//! path: a slow probe delays only its own next tick.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::gpu::GpuProbe;
use crate::client::metrics::{scrape_text, ServerSnapshot};
use super::system::HostSampler;
use crate::core::timeline::{metric, source, Sample, TimelineSink};
use crate::core::RunClock;

/// Where to scrape `/metrics`.
#[derive(Clone)]
pub struct MetricsTarget {
    pub http: reqwest::Client,
    pub base_url: String,
    pub api_key: Option<String>,
    /// Replica `/metrics` URLs behind the endpoint (`--metrics-url`), sampled as source
    /// `replica`, device `replica-<k>`. Without them, an endpoint whose `/metrics` carries
    /// several `engine` labels is split by engine (device `engine-<label>`).
    pub replicas: Vec<String>,
}

pub struct SamplerConfig {
    pub interval: Duration,
    pub test: u32,
    pub clock: RunClock,
    /// Root pid of the engine's process tree (managed engines).
    pub engine_pid: Option<u32>,
    pub gpu: Option<Arc<dyn GpuProbe>>,
    pub metrics: Option<MetricsTarget>,
}

/// Running samplers of one test. [`Samplers::stop`] ends them; dropping them ends them too
/// (without waiting).
pub struct Samplers {
    stop_host: Option<mpsc::Sender<()>>,
    host: Option<JoinHandle<()>>,
    stop_scrape: CancellationToken,
    scrape: Option<tokio::task::JoinHandle<()>>,
    /// Fires when the first scrape has landed (or failed).
    first_scrape: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Samplers {
    /// Starts sampling at once (the first tick is immediate). Must be called inside a tokio
    /// runtime when `metrics` is set.
    pub fn start(config: SamplerConfig, sink: TimelineSink) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let SamplerConfig { interval, test, clock, engine_pid, gpu, metrics } = config;
        let interval = interval.max(Duration::from_millis(1));
        let host_sink = sink.clone();
        let host = std::thread::Builder::new()
            .name(format!("sampler-test-{test}"))
            .spawn(move || host_loop(interval, test, clock, engine_pid, gpu, host_sink, rx))
            .ok();
        let stop_scrape = CancellationToken::new();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let scrape = metrics.map(|target| {
            let stop = stop_scrape.clone();
            tokio::spawn(scrape_loop(interval, test, clock, target, sink, stop, first_tx))
        });
        Self { stop_host: Some(tx), host, stop_scrape, scrape, first_scrape: Some(first_rx) }
    }

    /// Waits until the first `/metrics` scrape has landed (each scrape is bounded in time), so
    /// the counters' starting values are read before the test's first request: with replicas
    /// scraped apart from the endpoint, their sums then agree exactly.
    pub async fn first_scrape(&mut self) {
        if let Some(rx) = self.first_scrape.take() {
            let _ = rx.await;
        }
    }

    /// Stops every sampler and waits for the last tick to land in the sink.
    pub async fn stop(mut self) {
        self.stop_scrape.cancel();
        if let Some(task) = self.scrape.take() {
            let _ = task.await;
        }
        drop(self.stop_host.take());
        if let Some(host) = self.host.take() {
            let _ = tokio::task::spawn_blocking(move || host.join()).await;
        }
    }
}

impl Drop for Samplers {
    fn drop(&mut self) {
        self.stop_scrape.cancel();
        drop(self.stop_host.take());
    }
}

fn host_loop(
    interval: Duration,
    test: u32,
    clock: RunClock,
    engine_pid: Option<u32>,
    gpu: Option<Arc<dyn GpuProbe>>,
    sink: TimelineSink,
    stop: mpsc::Receiver<()>,
) {
    let mut host = match HostSampler::new(engine_pid) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("system metrics unavailable: {e}");
            None
        }
    };
    let mut gpu_error_shown = false;
    let mut next = Instant::now();
    let mut last_tick = false;
    loop {
        let t_ms = clock.now_ms();
        let mut batch = Vec::new();
        if let Some(h) = &mut host {
            batch.extend(h.sample(t_ms, test));
        }
        if let Some(probe) = &gpu {
            match probe.sample() {
                Ok(devices) => {
                    let pids = host.as_ref().map(|h| h.engine_pids()).unwrap_or_default();
                    for d in &devices {
                        batch.extend(d.to_samples(t_ms, test, &pids));
                    }
                }
                Err(e) if !gpu_error_shown => {
                    gpu_error_shown = true;
                    eprintln!("GPU sample failed (test {test}): {e:#}");
                }
                Err(_) => {}
            }
        }
        sink.push(batch);
        next += interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (a slow probe): skip the missed ticks instead of bursting.
            next = now + interval;
        }
        if last_tick {
            return;
        }
        // On stop, one last tick: a test shorter than the interval still gets a CPU reading.
        if !matches!(stop.recv_timeout(next - now), Err(mpsc::RecvTimeoutError::Timeout)) {
            last_tick = true;
        }
    }
}

async fn scrape_loop(
    interval: Duration,
    test: u32,
    clock: RunClock,
    target: MetricsTarget,
    sink: TimelineSink,
    stop: CancellationToken,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let timeout = interval.max(Duration::from_millis(500));
    let url = format!("{}/metrics", target.base_url.trim_end_matches('/'));
    let mut failures = 0u32;
    let mut last = false;
    loop {
        tokio::select! {
            biased;
            // One last scrape after the test: the counters' final values close every window.
            _ = stop.cancelled() => last = true,
            _ = ticker.tick() => {}
        }
        let t_ms = clock.now_ms();
        let key = target.api_key.as_deref();
        let http = &target.http;
        let main = async {
            let text = tokio::time::timeout(timeout, scrape_text(http, &url, key)).await.ok()?.ok()?;
            ServerSnapshot::parse_by_engine(&text).ok()
        };
        let replicas = futures_util::future::join_all(target.replicas.iter().map(|u| async move {
            let text = tokio::time::timeout(timeout, scrape_text(http, u, key)).await.ok()?.ok()?;
            ServerSnapshot::parse(&text).ok()
        }));
        let scraped = tokio::select! {
            _ = stop.cancelled(), if !last => continue,
            r = async { tokio::join!(main, replicas) } => r,
        };
        let mut batch = Vec::new();
        let (main, replicas) = scraped;
        let got_main = main.is_some();
        if let Some((total, engines)) = main {
            push_snapshot(&mut batch, t_ms, test, source::SERVER, "", &total);
            if target.replicas.is_empty() {
                for (engine, s) in &engines {
                    push_snapshot(&mut batch, t_ms, test, source::REPLICA, &format!("engine-{engine}"), s);
                }
            }
        }
        for (k, s) in replicas.iter().enumerate() {
            if let Some(s) = s {
                push_snapshot(&mut batch, t_ms, test, source::REPLICA, &format!("replica-{k}"), s);
            }
        }
        sink.push(batch);
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        if last {
            return;
        }
        if got_main || replicas.iter().any(Option::is_some) {
            failures = 0;
        } else {
            // A server without /metrics: stop asking after a few misses.
            failures += 1;
            if failures >= 5 {
                return;
            }
        }
    }
}

/// One scrape as timeline samples: the gauges, and the prefix-cache and preemption counters.
fn push_snapshot(batch: &mut Vec<Sample>, t_ms: f64, test: u32, src: &str, device: &str, s: &ServerSnapshot) {
    let mut push = |m: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            batch.push(Sample::new(t_ms, test, src, m, device, v));
        }
    };
    push(metric::KV_CACHE_USAGE_PCT, s.kv_cache_usage.map(|u| u * 100.0));
    push(metric::REQUESTS_RUNNING, s.requests_running);
    push(metric::REQUESTS_WAITING, s.requests_waiting);
    push(metric::PREEMPTIONS_TOTAL, s.preemptions);
    push(metric::PREFIX_CACHE_HITS_TOTAL, s.prefix_cache_hits);
    push(metric::PREFIX_CACHE_QUERIES_TOTAL, s.prefix_cache_queries);
}
