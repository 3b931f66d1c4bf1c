//! What the samplers cost: CPU time of this process (which does nothing but sample) over wall
//! time, with the samplers watching a real `turnbench sim` server — its process tree, the whole
//! machine, its `/metrics` gauges — at the default interval, plus the GPU when NVML is present.
//!
//! `cargo bench --bench sampler_cost [-- SECONDS [INTERVAL_MS]]` (defaults: 10 s, 200 ms).
//! Aim: under 1 % of one core.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnbench::core::RunClock;
use turnbench::metrics::gpu::{GpuProbe, NvmlProbe};
use turnbench::metrics::sampler::{MetricsTarget, SamplerConfig, Samplers};
use turnbench::core::timeline::TimelineSink;

/// CPU nanoseconds of every live thread of this process (`schedstat`: exact, not tick-based).
fn process_cpu_ns() -> f64 {
    let mut total = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            }
        }
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let seconds: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let interval_ms: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);

    let mut sim = Command::new(env!("CARGO_BIN_EXE_turnbench"))
        .args(["sim", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnbench sim");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap()).read_line(&mut line).expect("sim address");
    let base_url = line.trim().to_string();

    let gpu: Option<Arc<dyn GpuProbe>> = match NvmlProbe::init() {
        Ok(p) => Some(Arc::new(p)),
        Err(why) => {
            println!("GPU metrics unavailable: {why}");
            None
        }
    };
    let with_gpu = gpu.is_some();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (cpu_ms, wall_ms, samples) = rt.block_on(async {
        let sink = TimelineSink::memory();
        // Let the runtime settle before measuring.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (cpu0, t0) = (process_cpu_ns(), Instant::now());
        let samplers = Samplers::start(
            SamplerConfig {
                interval: Duration::from_millis(interval_ms),
                test: 1,
                clock: RunClock::start(),
                engine_pid: Some(sim.id()),
                gpu,
                metrics: Some(MetricsTarget { http: reqwest::Client::new(), base_url, api_key: None, replicas: Vec::new() }),
            },
            sink.clone(),
        );
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        // Measure before stopping: a finished thread's CPU time leaves /proc/self/task.
        let (cpu1, wall) = (process_cpu_ns(), t0.elapsed());
        samplers.stop().await;
        ((cpu1 - cpu0) / 1e6, wall.as_secs_f64() * 1000.0, sink.timeline().samples.len())
    });
    let _ = sim.kill();
    let _ = sim.wait();

    let ticks = (wall_ms / interval_ms as f64).floor().max(1.0);
    println!(
        "sampler cost at {interval_ms} ms ({}machine + engine tree + /metrics): {:.2} % of one core \
         ({cpu_ms:.1} ms CPU over {:.1} s; {:.0} µs per tick; {samples} samples)",
        if with_gpu { "GPU + " } else { "" },
        cpu_ms / wall_ms * 100.0,
        wall_ms / 1000.0,
        cpu_ms * 1000.0 / ticks,
    );
}
