//! The client's own ceiling on this machine, measured before the first request of a run: one
//! closed-loop level through the same scheduler, replay engine, client and recorder the run
//! uses, against an in-process simulator with the zero-latency profile, its records written to
//! a throwaway folder. The analysis flags every level that asks for more than half of it, so a
//! reader knows when the client, not the server, shaped a number.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::client::api::ServerInfo;
use crate::client::{Client, ClientConfig, RunClock};
use crate::core::audit::{TOKENS_FILE, TRANSCRIPTS_FILE};
use crate::core::record::{RecordSink, Recorder};
use crate::core::results::ClientCalibration;
use crate::replay::ReplaySettings;
use crate::schedule::{run_level, Level, LoadContext, Mode};
use crate::sim::SimConfig;
use crate::workload::multiround::{generate, MultiRound};

/// Clients in flight: enough to keep both the client's runtime and the loopback server busy.
pub const CONCURRENCY: usize = 32;
/// Tokens per answer: parsing streamed chunks is most of a request's client cost.
pub const ANSWER_TOKENS: u32 = 64;

/// user + system CPU seconds of this process.
fn process_cpu_s() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(f64::NAN, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Measures for `seconds` with the run's timeouts (and no API key: the loopback server is ours).
pub async fn measure(config: &ClientConfig, seconds: f64) -> Result<ClientCalibration> {
    let server = crate::sim::spawn(SimConfig::instant()).await?;
    let client = Client::loopback(ClientConfig { api_key: None, ignore_eos: true, ..config.clone() }, RunClock::start())?;
    let mut info = ServerInfo::probe(&client, &server.base_url(), None).await?;
    info.has_tokenize = false;
    let scratch = tempfile::Builder::new().prefix("turnbench-calibration-").tempdir().context("cannot create a temporary folder")?;
    let sink = |name: &str| RecordSink::create(&scratch.path().join(name));
    let recorder = Recorder::new(sink("turns.jsonl")?).with_audit(sink(TRANSCRIPTS_FILE)?, sink(TOKENS_FILE)?);
    let pool = generate(&MultiRound {
        users: CONCURRENCY * 4,
        rounds: 3,
        system_tokens: 128,
        history_tokens: 64,
        answer_tokens: ANSWER_TOKENS,
        seed: 1,
    });
    let ctx = LoadContext {
        client,
        server: info.into(),
        settings: ReplaySettings::standalone(),
        recorder: recorder.clone(),
        test: 0,
        pool: Arc::new(pool),
    };
    let level = Level {
        label: "calibration".into(),
        mode: Mode::Closed { concurrency: CONCURRENCY },
        duration: Duration::from_secs_f64(seconds),
        think: (Duration::ZERO, Duration::ZERO),
        max_active: None,
        seed: 1,
    };
    let cpu_before = process_cpu_s();
    let window = run_level(&ctx, &level).await?;
    let cpu = process_cpu_s() - cpu_before;
    server.shutdown().await;
    let records = recorder.records();
    let ok: Vec<_> = records.iter().filter(|r| r.status.is_ok()).collect();
    if let Some(failed) = records.iter().find(|r| !r.status.is_ok()) {
        anyhow::bail!("a request to the loopback simulator failed: {}", failed.error.as_deref().unwrap_or("no reason given"));
    }
    let elapsed = ((window.end_ms - window.start_ms) / 1000.0).max(1e-3);
    if ok.is_empty() {
        anyhow::bail!("no request to the loopback simulator completed within {seconds} s");
    }
    Ok(ClientCalibration {
        concurrency: CONCURRENCY,
        answer_tokens: ANSWER_TOKENS,
        seconds: elapsed,
        requests: ok.len() as u64,
        requests_per_s: ok.len() as f64 / elapsed,
        chunks_per_s: ok.iter().map(|r| r.output_chunks).sum::<u64>() as f64 / elapsed,
        cpu_ms_per_request: cpu * 1000.0 / ok.len() as f64,
    })
}
