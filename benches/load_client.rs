//! Client capacity of the multi-user schedulers: `cargo bench --bench load_client`.
//!
//! Starts `turnbench sim --profile instant --port 0` as a child process (zero latency; its CPU is
//! not the client's) and drives it through the real scheduler + replay engine + client with
//! multi-turn conversations (3 turns, answers of 16 tokens): first as hard as the client can
//! (closed loop), again with answers of 128 tokens, then open loop at 1,000, 4,000 and 8,000
//! requests/s targets (conversations arrive at target/3 per second; later turns follow at once).
//! Per level it prints sustained requests/s, streamed chunks/s, the client's CPU time per
//! request (this process), the simulator's (its process, from /proc/PID/stat) and their ratio,
//! the schedule lag (`sent − scheduled` of open-loop first turns) p50/p99, and the bytes per
//! record of `turns.jsonl`. Each level records as a run does: `turns.jsonl`, `transcripts.jsonl` and
//! `tokens.jsonl`. Compare ratios from one run: these machines are shared and noisy.
//! Last, the TTFT turnbench's client measures against a raw-socket reference (a keep-alive TCP
//! connection writing the request bytes and timing the first content byte), alternating one
//! request each, one at a time: the difference is what the client adds to every TTFT.
//! Knobs (environment): LOAD_BENCH_SECS (5), LOAD_BENCH_CONCURRENCY (32),
//! LOAD_BENCH_ANSWER_TOKENS (16: the answers of every level but the 128-token one),
//! LOAD_BENCH_RATES (1000,4000,8000), LOAD_BENCH_MILLION (set: first a closed loop to 1,000,000
//! requests and every report built from them, printing the peak resident memory; two or three
//! minutes, and about 1.5 GB of files in a temporary folder).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use turnbench::analysis::{percentile_sorted, sorted_finite};
use turnbench::client::{Client, ClientConfig, RunClock};
use turnbench::core::audit::{TOKENS_FILE, TRANSCRIPTS_FILE};
use turnbench::core::record::{read_records, RecordSink, Recorder, TurnRecord};
use turnbench::core::results::TURNS_FILE;
use turnbench::client::api::ServerInfo;
use turnbench::replay::ReplaySettings;
use turnbench::schedule::{run_level, Arrivals, Level, LevelWindow, LoadContext, Mode};
use turnbench::workload::multiround::{generate, MultiRound};

const TURNS: usize = 3;
/// The answers of the second closed loop: the length of the peers' comparison (per-chunk costs
/// dominate there, per-request costs at 16 tokens).
const LONG_ANSWER_TOKENS: u32 = 128;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of this process, in seconds (Linux).
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// utime + stime of process `pid` ("self" for this one), in seconds (Linux).
fn cpu_seconds_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    let Some(close) = stat.rfind(')') else { return f64::NAN };
    let f: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    ticks / hz
}

fn report(name: &str, records: &[TurnRecord], w: &LevelWindow, cpu_s: f64, sim_cpu_s: f64, jsonl_bytes: u64) {
    let secs = (w.end_ms - w.start_ms) / 1000.0;
    let ok = records.iter().filter(|r| r.status.is_ok()).count();
    let chunks: u64 = records.iter().map(|r| r.output_chunks).sum();
    let lag = sorted_finite(records.iter().filter(|r| r.turn == 1).map(|r| r.derived.queue_ms));
    let p = |q| percentile_sorted(&lag, q).map_or("–".to_string(), |v| format!("{v:.2}"));
    let offered = if w.scheduled_conversations > 0 {
        format!("offered {:>5.0} req/s, ", (w.scheduled_conversations * TURNS) as f64 / ((w.stop_ms - w.start_ms) / 1000.0))
    } else {
        String::new()
    };
    let n = records.len().max(1) as f64;
    println!(
        "{name:<20} {offered}sustained {:>6.0} req/s {:>8.0} chunks/s  client {:>6.3} ms CPU/req, sim {:>6.3}, client/sim {:>4.2}×  lag p50 {} ms p99 {} ms  {:.0} B/record  ({} ok, {} failed)",
        ok as f64 / secs,
        chunks as f64 / secs,
        cpu_s * 1000.0 / n,
        sim_cpu_s * 1000.0 / n,
        cpu_s / sim_cpu_s,
        p(50.0),
        p(99.0),
        jsonl_bytes as f64 / n,
        ok,
        records.len() - ok,
    );
}

fn main() {
    let secs: f64 = env_or("LOAD_BENCH_SECS", 5.0);
    let concurrency: usize = env_or("LOAD_BENCH_CONCURRENCY", 32);
    let answer_tokens: u32 = env_or("LOAD_BENCH_ANSWER_TOKENS", 16);
    let rates: Vec<f64> = std::env::var("LOAD_BENCH_RATES")
        .unwrap_or_else(|_| "1000,4000,8000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_turnbench"))
        .args(["sim", "--profile", "instant", "--port", "0", "--max-num-seqs", "100000", "--max-waiting", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start turnbench sim");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base_url = line.trim().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = Client::new(
            ClientConfig {
                api_key: None,
                connect_timeout: Duration::from_secs(5),
                first_token_timeout: Duration::from_secs(30),
                request_timeout: Duration::from_secs(60),
                ignore_eos: true,
            },
            RunClock::start(),
        )
        .unwrap();
        let mut server = ServerInfo::probe(&client, &base_url, None).await.unwrap();
        server.has_tokenize = false;
        let conversations = |answer_tokens| {
            generate(&MultiRound { users: 256, rounds: TURNS, system_tokens: 128, history_tokens: 64, answer_tokens, seed: 1 })
        };
        let (pool, long_pool) = (conversations(answer_tokens), conversations(LONG_ANSWER_TOKENS));
        println!("turnbench load client benchmark: sim at zero latency, {TURNS}-turn conversations, {answer_tokens}-token answers, {secs} s per level");
        // First, so that the peak resident memory is the million run's own (the levels below
        // read their records back for their lines).
        if std::env::var_os("LOAD_BENCH_MILLION").is_some() {
            million(&client, &server, &pool, concurrency).await;
        }
        let mut levels = vec![
            ("max (closed loop)".to_string(), Mode::Closed { concurrency }, &pool),
            (format!("max, {LONG_ANSWER_TOKENS}-tok answers"), Mode::Closed { concurrency }, &long_pool),
        ];
        for &target in &rates {
            levels.push((
                format!("target {target} req/s"),
                Mode::Open { qps: target / TURNS as f64, arrivals: Arrivals::Poisson },
                &pool,
            ));
        }
        for (i, (name, mode, pool)) in levels.into_iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let (recorder, ctx) = context(&client, &server, pool, tmp.path());
            // As a run's fixed levels do: the records live in turns.jsonl only (keeping them
            // in memory too made the client's CPU per request read 4-12 % high).
            recorder.retain_from(None);
            let level = Level {
                label: name.clone(),
                mode,
                duration: Duration::from_secs_f64(secs),
                think: (Duration::ZERO, Duration::ZERO),
                max_active: None,
                seed: 7 + i as u64,
            };
            let sim_pid = child.id().to_string();
            let (cpu0, sim0) = (cpu_seconds(), cpu_seconds_of(&sim_pid));
            let w = run_level(&ctx, &level).await.unwrap();
            let (cpu, sim_cpu) = (cpu_seconds() - cpu0, cpu_seconds_of(&sim_pid) - sim0);
            let turns = tmp.path().join(TURNS_FILE);
            let bytes = std::fs::metadata(&turns).map_or(0, |m| m.len());
            let (records, _) = read_records(&turns).unwrap();
            report(&name, &records, &w, cpu, sim_cpu, bytes);
        }
        ttft_overhead(&client, &base_url, &server.model).await;
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// A level's context: the conversations `pool` against `server`, recorded into `dir` as a run
/// records them (`turns.jsonl` and the transcripts and token ids beside it).
fn context(client: &Client, server: &ServerInfo, pool: &[turnbench::workload::Conversation], dir: &std::path::Path) -> (Recorder, LoadContext) {
    let sink = |name: &str| RecordSink::create(&dir.join(name)).unwrap();
    let recorder = Recorder::new(sink(TURNS_FILE)).with_audit(sink(TRANSCRIPTS_FILE), sink(TOKENS_FILE));
    let ctx = LoadContext {
        client: client.clone(),
        server: server.clone().into(),
        settings: ReplaySettings::standalone(),
        recorder: recorder.clone(),
        test: 1,
        pool: Arc::new(pool.to_vec()),
    };
    (recorder, ctx)
}

/// `LOAD_BENCH_MILLION=1`: a closed loop until 1,000,000 requests are recorded, then every
/// report built from them, as a run does; prints the process's peak resident memory (VmHWM).
async fn million(client: &Client, server: &ServerInfo, pool: &[turnbench::workload::Conversation], concurrency: usize) {
    const TARGET: usize = 1_000_000;
    let tmp = tempfile::tempdir().unwrap();
    let (recorder, ctx) = context(client, server, pool, tmp.path());
    // As a run does: the records live in turns.jsonl, and the reports read them from there.
    recorder.retain_from(None);
    let start = std::time::Instant::now();
    let mut windows = Vec::new();
    while recorder.len() < TARGET {
        let left = (TARGET - recorder.len()) as f64;
        let level = Level {
            label: "million".into(),
            mode: Mode::Closed { concurrency },
            // Guessing 20,000/s; the loop tops up what is missing.
            duration: Duration::from_secs_f64((left / 20_000.0).clamp(1.0, 60.0)),
            think: (Duration::ZERO, Duration::ZERO),
            max_active: None,
            seed: 99 + windows.len() as u64,
        };
        windows.push(run_level(&ctx, &level).await.unwrap());
    }
    let recorded = start.elapsed().as_secs_f64();
    let hwm_recorded = peak_rss_mib();
    let recorded_n = recorder.len();
    let manifest = turnbench::core::results::Manifest { settings: serde_json::json!({}), ..Default::default() };
    let megabytes = |name: &str| std::fs::metadata(tmp.path().join(name)).map_or(0.0, |m| m.len() as f64 / 1e6);
    let t = std::time::Instant::now();
    let summary = turnbench::report::write_reports(tmp.path(), &manifest).unwrap();
    println!(
        "1M requests: {} recorded in {recorded:.0} s (peak RSS {hwm_recorded:.0} MiB), reports built in {:.1} s: peak RSS {:.0} MiB ({} in the summary), turns.jsonl {:.0} MB, transcripts.jsonl {:.0} MB",
        recorded_n,
        t.elapsed().as_secs_f64(),
        peak_rss_mib(),
        summary.requests.total,
        megabytes(TURNS_FILE),
        megabytes(TRANSCRIPTS_FILE),
    );
}

/// This process's peak resident set (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// TTFT through turnbench's client and through a raw socket, alternating, one request in flight.
async fn ttft_overhead(client: &Client, base_url: &str, model: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const N: usize = 400;
    let messages = vec![turnbench::core::chat::ChatMessage { role: "user".into(), content: "How fast is the first token?".into() }];
    let body = serde_json::json!({
        "model": model, "messages": messages, "max_tokens": 16, "stream": true,
        "stream_options": {"include_usage": true}, "ignore_eos": true,
    })
    .to_string();
    let addr = base_url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let (mut ours, mut raw) = (Vec::with_capacity(N), Vec::with_capacity(N));
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..N + 20 {
        let chat = turnbench::client::ChatRequest { base_url, model, messages: &messages, max_tokens: 16, return_token_ids: false };
        let outcome = client.stream_chat(&chat, client.clock().now_ms()).await;
        let t = outcome.timing.first_token_ms.map(|f| f - outcome.timing.sent_ms);
        // Raw: the same request's bytes; the first token is the first `"content":"<non-empty>`.
        let start = std::time::Instant::now();
        socket.write_all(request.as_bytes()).await.unwrap();
        let (mut seen, mut first) = (Vec::new(), None);
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the simulator closed the connection");
            seen.extend_from_slice(&buf[..n]);
            if first.is_none() && has_content(&seen) {
                first = Some(start.elapsed().as_secs_f64() * 1000.0);
            }
            if seen.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        if i >= 20 {
            // The first requests warm both paths up.
            ours.extend(t);
            raw.extend(first);
        }
    }
    let (ours, raw) = (sorted_finite(ours), sorted_finite(raw));
    let p = |v: &[f64], q: f64| percentile_sorted(v, q).unwrap_or(f64::NAN);
    println!(
        "TTFT, one request at a time ({} each): turnbench p50 {:.3} ms p99 {:.3} ms; raw socket p50 {:.3} ms p99 {:.3} ms; client overhead p50 {:+.3} ms p99 {:+.3} ms",
        ours.len(),
        p(&ours, 50.0),
        p(&ours, 99.0),
        p(&raw, 50.0),
        p(&raw, 99.0),
        p(&ours, 50.0) - p(&raw, 50.0),
        p(&ours, 99.0) - p(&raw, 99.0),
    );
}

/// Whether the response bytes so far hold a chunk with non-empty content.
fn has_content(bytes: &[u8]) -> bool {
    let needle = b"\"content\":\"";
    bytes.windows(needle.len() + 1).any(|w| &w[..needle.len()] == needle && w[needle.len()] != b'"')
}
