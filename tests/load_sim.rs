//! Many users against the in-process simulator (real HTTP on 127.0.0.1, port 0): achieved rate,
//! the concurrency bound, and a sweep that crosses the simulator's capacity.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use turnbench::cli::Cli;
use turnbench::client::{Client, ClientConfig, RunClock};
use turnbench::analysis::load::max_in_flight;
use turnbench::core::record::{read_records, RecordSink, Recorder, TurnRecord};
use turnbench::client::api::ServerInfo;
use turnbench::replay::ReplaySettings;
use turnbench::schedule::{run_level, Arrivals, Level, LevelWindow, LoadContext, Mode};
use turnbench::sim::{self, SimConfig};
use turnbench::workload::multiround::{generate, MultiRound};

mod common;
use common::{recorded_groups, turnbench, Guard};

struct Setup {
    _sim: sim::SimHandle,
    _tmp: tempfile::TempDir,
    ctx: LoadContext,
}

async fn setup(config: SimConfig, rounds: usize, answer_tokens: u32) -> Setup {
    let sim = sim::spawn(config).await.unwrap();
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
    let mut server = ServerInfo::probe(&client, &sim.base_url(), None).await.unwrap();
    server.has_tokenize = false;
    let tmp = tempfile::tempdir().unwrap();
    let recorder = Recorder::new(RecordSink::create(&tmp.path().join("turns.jsonl")).unwrap());
    let pool = generate(&MultiRound { users: 16, rounds, system_tokens: 64, history_tokens: 32, answer_tokens, seed: 3 });
    let ctx = LoadContext {
        client,
        server: server.into(),
        settings: ReplaySettings::standalone(),
        recorder,
        test: 1,
        pool: Arc::new(pool),
    };
    Setup { _sim: sim, _tmp: tmp, ctx }
}

fn level(label: &str, mode: Mode, secs: f64) -> Level {
    Level {
        label: label.into(),
        mode,
        duration: Duration::from_secs_f64(secs),
        think: (Duration::ZERO, Duration::from_millis(20)),
        max_active: None,
        seed: 11,
    }
}

/// What an open-loop level must have recorded, whatever the machine's speed: one first turn per
/// scheduled arrival, each sent no earlier than it was scheduled.
fn every_arrival_was_sent(records: &[TurnRecord], w: &LevelWindow) {
    let firsts: Vec<&TurnRecord> = records.iter().filter(|r| r.turn == 1).collect();
    assert_eq!(firsts.len(), w.scheduled_conversations, "one first turn per scheduled arrival");
    for r in &firsts {
        assert!(r.timing.sent_ms >= r.timing.scheduled_ms, "sent before its arrival: {:?}", r.timing);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_achieves_the_target_rate() {
    let s = setup(SimConfig::instant(), 2, 4).await;
    let w = run_level(&s.ctx, &level("qps-40", Mode::Open { qps: 40.0, arrivals: Arrivals::Constant }, 2.5)).await.unwrap();
    let records = s.ctx.recorder.records();
    assert!(records.iter().all(|r| r.status.is_ok()), "{:?}", records.iter().find(|r| !r.status.is_ok()));
    // 40/s for 2.5 s, constant arrivals: 100 scheduled (how fast they were served is the
    // machine's business, not the schedule's), and each was sent.
    assert_eq!(w.scheduled_conversations, 100);
    every_arrival_was_sent(&records, &w);
    // Later turns follow the first: each second turn is of a conversation whose first turn had
    // ended when it was scheduled.
    let seconds: Vec<&TurnRecord> = records.iter().filter(|r| r.turn == 2).collect();
    assert!(!seconds.is_empty(), "conversations went on to their second turn");
    for r in &seconds {
        let first = records.iter().find(|f| f.turn == 1 && f.session == r.session).expect("its first turn");
        assert!(r.timing.scheduled_ms >= first.timing.end_ms, "turn 2 {:?} before turn 1 ended {:?}", r.timing, first.timing);
    }
    // First turns were scheduled at their arrival times: evenly spaced 25 ms apart.
    let mut sched: Vec<f64> = records.iter().filter(|r| r.turn == 1).map(|r| r.timing.scheduled_ms).collect();
    sched.sort_by(f64::total_cmp);
    assert!(sched.windows(2).all(|p| (p[1] - p[0] - 25.0).abs() < 0.01));
    // And were recorded on disk as they completed.
    let (on_disk, _) = read_records(&s._tmp.path().join("turns.jsonl")).unwrap();
    assert_eq!(on_disk.len(), records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_poisson_arrivals_are_all_sent() {
    let s = setup(SimConfig::instant(), 1, 4).await;
    let w = run_level(&s.ctx, &level("qps-200", Mode::Open { qps: 60.0, arrivals: Arrivals::Poisson }, 2.5)).await.unwrap();
    let records = s.ctx.recorder.records();
    let expected = turnbench::schedule::arrival_offsets(Arrivals::Poisson, 60.0, 2.5, 11).count();
    assert_eq!(w.scheduled_conversations, expected, "seeded: the same arrivals every run");
    assert_eq!(records.len(), expected);
    every_arrival_was_sent(&records, &w);
    let realized = expected as f64 / 2.5;
    assert!((realized - 60.0).abs() <= 0.15 * 60.0, "a seeded Poisson sample near its rate: {realized}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_n_never_has_more_than_n_in_flight() {
    let mut config = SimConfig::instant();
    config.latency.inter_token_ms = 2.0;
    let s = setup(config, 3, 6).await;
    run_level(&s.ctx, &level("concurrency-4", Mode::Closed { concurrency: 4 }, 1.5)).await.unwrap();
    let records = s.ctx.recorder.records();
    assert!(records.len() > 20, "{} records", records.len());
    let peak = max_in_flight(&records);
    assert!(peak <= 4, "{peak} requests in flight with concurrency 4");
    assert!(peak >= 2, "sessions ran concurrently (peak {peak})");
    let sessions: std::collections::BTreeSet<u32> = records.iter().filter_map(|r| r.session).collect();
    assert_eq!(sessions.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_waiting_counts_in_latency() {
    // One conversation at a time, arrivals faster than service: later arrivals wait, and the
    // wait shows as queue time (no coordinated omission).
    let mut config = SimConfig::instant();
    config.latency.inter_token_ms = 10.0;
    let s = setup(config, 1, 5).await;
    let mut lv = level("qps-40", Mode::Open { qps: 40.0, arrivals: Arrivals::Constant }, 1.0);
    lv.max_active = Some(1);
    run_level(&s.ctx, &lv).await.unwrap();
    let records = s.ctx.recorder.records();
    let worst = records.iter().map(|r| r.derived.queue_ms).fold(0.0, f64::max);
    assert!(worst > 100.0, "queue time grows when the client holds arrivals back: {worst} ms");
    for r in &records {
        assert!((r.derived.latency_from_schedule_ms - (r.derived.e2e_ms + r.derived.queue_ms)).abs() < 1e-9);
    }
}

fn run_cli(args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["turnbench", "run"];
    argv.extend_from_slice(args);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(turnbench::run(Cli::parse_from(argv)))
}

#[test]
fn sweep_finds_saturation_past_max_num_seqs_and_counts_503s() {
    // Capacity: 2 running × (20 ms + 10 tokens × 2 ms) ≈ 50 requests/s, 2 more may wait, then
    // 503. 4/s and 8/s are far below it (a request is done long before the next arrives, and
    // the last arrival about 85 ms before the window closes), 200/s far above it; a TTFT floor of
    // 500 ms keeps a stalled machine's scheduling jitter away from the 3× TTFT rule.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = SimConfig::instant();
    config.max_num_seqs = 2;
    config.max_waiting = 2;
    config.latency.overhead_ms = 20.0;
    config.latency.inter_token_ms = 2.0;
    let sim = rt.block_on(sim::spawn(config)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    run_cli(&[
        "--endpoint",
        &sim.base_url(),
        "--workload",
        "multiround",
        "--rounds",
        "1",
        "--users",
        "8",
        "--answer-tokens",
        "10",
        "--qps",
        "4,8,200",
        "--saturation-ttft-floor-ms",
        "500",
        "--arrivals",
        "constant",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--log-interval",
        "1",
        "--results-dir",
        results.to_str().unwrap(),
    ])
    .unwrap();
    let dir = std::fs::read_dir(&results).unwrap().next().unwrap().unwrap().path();
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/summary.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&summary).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "summary.json does not match the schema:\n{}", errors.join("\n"));
    let load = &summary["load"];
    assert_eq!(load["saturation"]["level"], "qps-200", "{load:#}");
    assert_eq!(load["highest_sustainable"], "qps-8");
    let levels = load["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 3);
    for l in &levels[..2] {
        assert_eq!(l["success_pct"], 100.0, "{l:#}");
        assert!(l["errors"].as_array().unwrap().is_empty());
    }
    let errors = levels[2]["errors"].as_array().unwrap();
    let n503 = errors.iter().find(|e| e["kind"] == "http_503").map(|e| e["count"].as_u64().unwrap()).unwrap_or(0);
    assert!(n503 > 20, "503s counted: {errors:?}");
    // The 503s in the records and in the summary agree.
    let (records, _) = read_records(&dir.join("turns.jsonl")).unwrap();
    let in_records = records.iter().filter(|r| r.level.as_deref() == Some("qps-200") && r.http_status == Some(503)).count();
    assert_eq!(in_records as u64, n503);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## Load levels") && report.contains("Saturation point: **qps-200**"), "{report}");
    for f in ["load_rate", "load_ttft", "load_e2e", "load_tokens"] {
        for ext in ["png", "svg"] {
            assert!(dir.join("plots").join(format!("{f}.{ext}")).is_file(), "{f}.{ext}");
        }
    }
    // The rate chart draws this run's levels: achieved against target, by load, saturation marked.
    let parsed: turnbench::analysis::Summary = serde_json::from_value(summary.clone()).unwrap();
    let charts = turnbench::report::load::charts(parsed.load.as_ref().unwrap());
    let rate = &charts.iter().find(|(stem, _)| *stem == "load_rate").unwrap().1;
    let achieved = rate.series.iter().find(|s| s.label == "achieved").unwrap();
    let mut want: Vec<(f64, f64)> =
        levels.iter().map(|l| (l["target_qps"].as_f64().unwrap(), l["achieved_qps"].as_f64().unwrap())).collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(achieved.points, want);
    assert_eq!(rate.marker.as_ref().map(|m| m.x), Some(200.0), "the marker is at the saturated level");
    // …and so does the chart in report.html, point by point.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    use turnbench::report::svg::num;
    for (x, y) in &want {
        let point = format!("<title>achieved: {} at {}</title>", num(*y), num(*x));
        assert!(html.contains(&point), "report.html has no point {point}");
    }
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["settings"]["load"]["levels"].as_array().unwrap().len(), 3);
    assert_eq!(manifest["interrupted"], false);
    drop(sim);
}

fn only_dir(results: &std::path::Path) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(results).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1);
    dirs.into_iter().next().unwrap()
}

#[test]
fn sweep_auto_calibrates_then_runs_rates_between_sync_and_max() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = SimConfig::instant();
    config.latency.inter_token_ms = 1.0;
    let sim = rt.block_on(sim::spawn(config)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/data/workloads/docs");
    run_cli(&[
        "--endpoint", &sim.base_url(), "--workload", "docs", "--workload-path", docs, "--users", "4", "--rounds", "2",
        "--answer-tokens", "4", "--sweep", "auto", "--sweep-levels", "2", "--sweep-max-concurrency", "4",
        "--duration", "0.7", "--max-delay", "0.01", "--results-dir", results.to_str().unwrap(),
    ])
    .unwrap();
    let dir = only_dir(&results);
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let load = &summary["load"];
    assert_eq!(load["mode"], "sweep_auto");
    assert_eq!(load["workload"], "docs");
    let labels: Vec<&str> = load["levels"].as_array().unwrap().iter().map(|l| l["label"].as_str().unwrap()).collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert_eq!(&labels[..2], ["sync", "max-throughput"]);
    let sync = load["levels"][0]["achieved_qps"].as_f64().unwrap();
    let lo = load["levels"][2]["target_qps"].as_f64().unwrap();
    let hi = load["levels"][3]["target_qps"].as_f64().unwrap();
    assert!(lo < hi && (lo - sync).abs() <= 0.01 * sync.max(1.0), "rates {lo}..{hi} from sync {sync}");
    // The docs workload's conversations were replayed: the code and text files both appear.
    let (records, _) = read_records(&dir.join("turns.jsonl")).unwrap();
    assert!(records.iter().any(|r| r.tags.contains(&"code".to_string())));
    assert!(records.iter().any(|r| r.tags.contains(&"text".to_string())));
    // `turnbench report DIR` rebuilds the same load summary from the folder.
    let before = summary["load"].clone();
    let rt2 = tokio::runtime::Runtime::new().unwrap();
    rt2.block_on(turnbench::run(Cli::parse_from(["turnbench", "report", dir.to_str().unwrap()]))).unwrap();
    let again: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(again["load"], before);
    drop(sim);
}

#[test]
fn time_bounds_a_closed_loop_run() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(sim::spawn(SimConfig::instant())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    run_cli(&[
        "--endpoint", &sim.base_url(), "--workload", "multiround", "--users", "3", "--concurrency", "3",
        "--duration", "60", "--time", "0.5", "--results-dir", results.to_str().unwrap(),
    ])
    .unwrap();
    let dir = only_dir(&results);
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    // --time ends the run: the level stopped starting turns after 0.5 s, not its 60 s duration.
    let lv = &manifest["settings"]["load"]["levels"][0];
    let window = lv["stop_ms"].as_f64().unwrap() - lv["start_ms"].as_f64().unwrap();
    assert!((0.0..60_000.0).contains(&window), "level window {window} ms: {lv}");
    assert_eq!(manifest["interrupted"], false, "--time is not an interruption");
    let (records, _) = read_records(&dir.join("turns.jsonl")).unwrap();
    assert!(records.iter().filter(|r| !r.warmup).all(|r| r.level.as_deref() == Some("concurrency-3")));
    assert!(max_in_flight(records.iter().filter(|r| !r.warmup)) <= 3);
    drop(sim);
}

/// The real binary with a managed simulator (started once for the whole run) and the default
/// suite; Ctrl-C stops scheduling, the requests in flight finish, and every report is written.
#[test]
fn ctrl_c_keeps_every_record_of_a_managed_multi_user_run() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Guard::spawn(
        turnbench(tmp.path())
        .args(["run", "--engine", "sim", "--engine-arg=--profile", "--engine-arg=instant", "--engine-arg=--inter-token-ms=5"])
        .args(["--data", &format!("{root}/data/conversations.json"), "--rag-data", &format!("{root}/data/rag_data.json")])
        .args(["--include-tags", "qa", "--max-conversations", "3", "--concurrency", "3", "--duration", "60"])
        .arg("--results-dir")
        .arg(&results)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = std::fs::read_dir(&results)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.unwrap().path().join("turns.jsonl")).ok())
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 6 {
            break;
        }
        assert!(child.child().try_wait().unwrap().is_none(), "turnbench ended before 6 turns were recorded");
        assert!(std::time::Instant::now() < deadline, "no turns recorded in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(130), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = only_dir(&results);
    let engine_logs: Vec<_> = std::fs::read_dir(dir.join("engine")).unwrap().collect();
    assert_eq!(engine_logs.len(), 1, "one server for the whole run");
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["interrupted"], true);
    assert_eq!(manifest["settings"]["load"]["levels"][0]["label"], "concurrency-3");
    let (records, _) = read_records(&dir.join("turns.jsonl")).unwrap();
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["run"]["simulated"], true);
    assert_eq!(summary["requests"]["total"].as_u64(), Some(records.len() as u64), "every record in the report");
    let level = &summary["load"]["levels"][0];
    assert!(level["requests"].as_u64().unwrap() >= 5, "{level:#}");
    assert!(level["max_in_flight"].as_u64().unwrap() <= 3);
    assert!(records.iter().filter(|r| !r.warmup).all(|r| r.tags.contains(&"qa".to_string())));
    assert!(recorded_groups(tmp.path()).is_empty(), "the managed simulator's group was torn down and unrecorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_active_conversations_than_clients_share_the_clients() {
    let mut config = SimConfig::instant();
    config.latency.inter_token_ms = 2.0;
    let s = setup(config, 3, 5).await;
    let mut lv = level("concurrency-2", Mode::Closed { concurrency: 2 }, 1.5);
    lv.max_active = Some(6);
    run_level(&s.ctx, &lv).await.unwrap();
    let records = s.ctx.recorder.records();
    assert!(max_in_flight(&records) <= 2, "at most 2 requests in flight");
    let sessions: std::collections::BTreeSet<u32> = records.iter().filter_map(|r| r.session).collect();
    assert_eq!(sessions.len(), 6, "six conversations active: {sessions:?}");
    // Turns wait for a free client, and that wait is queue time.
    assert!(records.iter().any(|r| r.derived.queue_ms > 1.0));
}

#[test]
fn bad_multi_user_flags_are_usage_errors() {
    for (args, says) in [
        (&["--concurrency", "4", "--max-active-conversations", "2"][..], "--max-active-conversations 2 is below --concurrency 4"),
        (&["--qps", "0"][..], "--qps 0: rates must be positive"),
        (
            &["--qps", "1", "--duration", "5", "--trim-warmup", "3", "--trim-cooldown", "3"][..],
            "--trim-warmup + --trim-cooldown must be zero or more and shorter than --duration",
        ),
        (&["--concurrency", "2", "--min-delay", "2", "--max-delay", "1"][..], "--min-delay 2 / --max-delay 1: need 0 ≤ min ≤ max"),
        (&["--qps", "1", "--workload", "sharegpt"][..], "--workload sharegpt needs --workload-path"),
    ] {
        let mut argv = vec!["--endpoint", "http://127.0.0.1:9"];
        argv.extend_from_slice(args);
        let err = run_cli(&argv).unwrap_err();
        assert_eq!(turnbench::core::error::exit_code(&err), 2, "{args:?}: {err:#}");
        assert!(format!("{err:#}").contains(says), "{args:?}: the message says {says:?}: {err:#}");
    }
}
