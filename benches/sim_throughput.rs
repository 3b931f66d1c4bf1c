//! Simulator throughput: `cargo bench --bench sim_throughput`.
//!
//! Starts `turnbench sim --profile instant --port 0` as a child process (so the server's CPU time
//! is measured apart from the client's, from /proc/<pid>/stat) and drives it with concurrent
//! streaming chat requests for a few seconds. Prints sustained requests/s, streamed chunks/s and
//! server CPU per chunk. Knobs (environment): SIM_BENCH_SECS (5), SIM_BENCH_CONCURRENCY (32),
//! SIM_BENCH_MAX_TOKENS (256), SIM_BENCH_EXTRA_ARGS (extra `turnbench sim` flags).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of a process, in seconds (Linux only; None elsewhere).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Counters {
    requests: AtomicU64,
    chunks: AtomicU64,
    errors: AtomicU64,
}

async fn one_client(id: usize, url: String, max_tokens: u32, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let client = reqwest::Client::new();
    let system = "You are a benchmark assistant. ".repeat(20);
    let mut turn = 0u64;
    while !stop.load(Relaxed) {
        turn += 1;
        let body = serde_json::json!({
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("client {id} turn {turn}: tell me about prefix caching")}
            ],
            "max_tokens": max_tokens, "ignore_eos": true,
            "stream": true, "stream_options": {"include_usage": true}
        });
        let resp = match client.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => r,
            _ => {
                counters.errors.fetch_add(1, Relaxed);
                continue;
            }
        };
        // Count SSE events ("\n\n"-terminated), [DONE] excluded, across frame boundaries.
        let mut stream = resp.bytes_stream();
        let mut events = 0u64;
        let mut prev_newline = false;
        let mut ok = true;
        while let Some(frame) = stream.next().await {
            let Ok(frame) = frame else {
                ok = false;
                break;
            };
            for &b in frame.iter() {
                if b == b'\n' {
                    if prev_newline {
                        events += 1;
                    }
                    prev_newline = !prev_newline;
                } else {
                    prev_newline = false;
                }
            }
        }
        if ok {
            counters.requests.fetch_add(1, Relaxed);
            // role chunk, usage chunk and [DONE] are not content chunks
            counters.chunks.fetch_add(events.saturating_sub(3), Relaxed);
        } else {
            counters.errors.fetch_add(1, Relaxed);
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let secs: f64 = env_or("SIM_BENCH_SECS", 5.0);
    let concurrency: usize = env_or("SIM_BENCH_CONCURRENCY", 32);
    let max_tokens: u32 = env_or("SIM_BENCH_MAX_TOKENS", 256);
    let extra = std::env::var("SIM_BENCH_EXTRA_ARGS").unwrap_or_default();

    let mut child = Command::new(env!("CARGO_BIN_EXE_turnbench"))
        .args(["sim", "--profile", "instant", "--port", "0"])
        .args(extra.split_whitespace())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnbench sim");
    let pid = child.id().to_string();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the URL");
    let base = line.trim().to_string();
    let url = format!("{base}/v1/chat/completions");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let counters =
        Arc::new(Counters { requests: AtomicU64::new(0), chunks: AtomicU64::new(0), errors: AtomicU64::new(0) });
    let result = rt.block_on(async {
        // Warm-up: half a second of the same load, not counted.
        let _ = reqwest::get(format!("{base}/health")).await;
        let warm_stop = Arc::new(AtomicBool::new(false));
        let warm =
            Arc::new(Counters { requests: AtomicU64::new(0), chunks: AtomicU64::new(0), errors: AtomicU64::new(0) });
        let warmers: Vec<_> = (0..concurrency)
            .map(|i| tokio::spawn(one_client(i, url.clone(), max_tokens, warm_stop.clone(), warm.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        warm_stop.store(true, Relaxed);
        for w in warmers {
            let _ = w.await;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let server_cpu0 = cpu_seconds(&pid);
        let client_cpu0 = cpu_seconds("self");
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| tokio::spawn(one_client(i, url.clone(), max_tokens, stop.clone(), counters.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        // Snapshot at the deadline: completed requests and their chunks within the window.
        let requests = counters.requests.load(Relaxed);
        let chunks = counters.chunks.load(Relaxed);
        let errors = counters.errors.load(Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let server_cpu = cpu_seconds(&pid).zip(server_cpu0).map(|(a, b)| a - b);
        let client_cpu = cpu_seconds("self").zip(client_cpu0).map(|(a, b)| a - b);
        stop.store(true, Relaxed);
        for t in tasks {
            t.abort();
        }
        (requests, chunks, errors, elapsed, server_cpu, client_cpu)
    });
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();

    let (requests, chunks, errors, elapsed, server_cpu, client_cpu) = result;
    println!("sim_throughput: instant profile, {concurrency} concurrent streaming clients, max_tokens {max_tokens}, {elapsed:.2} s");
    println!("  requests/s        {:>12.1}   ({requests} completed, {errors} errors)", requests as f64 / elapsed);
    println!("  chunks/s          {:>12.0}   ({chunks} content chunks)", chunks as f64 / elapsed);
    if let Some(cpu) = server_cpu {
        let per_chunk_us = cpu / chunks.max(1) as f64 * 1e6;
        println!(
            "  server CPU        {:>12.2} s  ({:.0} % of one core) → {per_chunk_us:.2} µs/chunk → {:.0} chunks per server core-second",
            cpu,
            cpu / elapsed * 100.0,
            chunks as f64 / cpu.max(1e-9)
        );
    }
    if let Some(cpu) = client_cpu {
        println!("  client CPU        {:>12.2} s  ({:.0} % of one core)", cpu, cpu / elapsed * 100.0);
    }
}
