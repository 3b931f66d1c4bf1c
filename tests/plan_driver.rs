//! One plan, one driver, through the binary: every mode gets the driver's features (samplers,
//! `timeline.csv`, `system.json`, completion mode), every usage error comes before any process,
//! profiles under `configs/` are what a run reads, and a report stays small at any size.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{assert_success, json_file, measured, show, turnbench, Suite, BIN};
use serde_json::{json, Value};

fn one_conversation(turns: usize) -> Value {
    let turns: Vec<Value> = (0..turns).map(|i| json!({"user": format!("Question {i} about caches."), "max_tokens": 8})).collect();
    json!([{"id": "c1", "title": "t", "tags": ["qa"], "turns": turns}])
}

#[test]
fn a_load_run_samples_the_machine_like_a_suite_run() {
    let suite = Suite::new(one_conversation(3), json!([]));
    let out = suite.run(&[
        "--engine", "sim", "--engine-arg=--profile=instant", "--concurrency", "4", "--duration", "4",
        "--sample-interval", "100",
    ]);
    assert_success(&out);
    let dir = suite.results();
    let timeline = std::fs::read_to_string(dir.join("timeline.csv")).expect("timeline.csv");
    assert!(timeline.lines().count() > 10, "samples every 100 ms for 4 s:\n{timeline}");
    assert!(timeline.lines().any(|l| l.contains(",system,cpu_pct,")), "{timeline}");
    let system = json_file(dir.join("system.json"));
    assert!(system["cpu_logical_cores"].as_u64().is_some_and(|n| n >= 1), "{system}");
    assert!(system["engine_version"].as_str().is_some_and(|v| v.starts_with("turnbench sim")), "{system}");
    let manifest = json_file(dir.join("manifest.json"));
    assert_eq!(manifest["tests"].as_array().map(Vec::len), Some(1), "one test for the load run: {manifest}");
    assert_eq!(manifest["tests"][0]["outcome"], "completed");
    assert!(manifest["tests"][0]["teardown_ms"].is_number(), "the managed sim was torn down and timed");
    let summary = json_file(dir.join("summary.json"));
    assert!(summary["resources"]["tests"].as_array().is_some_and(|t| !t.is_empty()), "{}", summary["resources"]);
    assert!(summary["load"]["levels"].as_array().is_some_and(|l| l.len() == 1));
}

#[test]
fn completion_mode_works_in_a_load_run() {
    let suite = Suite::new(one_conversation(2), json!([]));
    let out = suite.run(&[
        "--engine", "sim", "--engine-arg=--profile=instant", "--concurrency", "2", "--duration", "1",
        "--prompt-mode", "completion", "--chat-template", "chatml",
    ]);
    assert_success(&out);
    let records = measured(&suite.results());
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(r["prompt"]["mode"], "completion", "{r}");
        assert!(r["prompt"]["template"].as_str().is_some_and(|t| t.contains("chatml")), "{r}");
    }
}

/// A `--vllm-cmd` that leaves a mark when it starts.
fn marking_vllm(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mark = dir.join("vllm-started");
    let script = dir.join("fake-vllm");
    let mut f = std::fs::File::create(&script).unwrap();
    writeln!(f, "#!/bin/sh\ntouch '{}'\nsleep 30", mark.display()).unwrap();
    drop(f);
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, mark)
}

#[test]
fn usage_errors_come_before_any_server_starts() {
    let suite = Suite::new(one_conversation(2), json!([]));
    let (script, mark) = marking_vllm(&suite.path(""));
    let vllm = ["--engine", "vllm", "--vllm-cmd", script.to_str().unwrap(), "--model", "m"];
    let cases: &[(&[&str], &str)] = &[
        (&["--conversation", "no-such-id"], "no-such-id"),
        (&["--include-tags", "nothing-has-this"], "--include-tags nothing-has-this"),
        (&["--prompt-mode", "completion", "--chat-template", "no-such-template"], "no-such-template"),
        (&["--workload-path", "x.json"], "--workload-path"),
        (&["--profile", "no-such-profile"], "no-such-profile"),
        (&["--concurrency", "2", "--think-time-ms", "5"], "--think-time-ms"),
        (&["--concurrency", "2", "--percentiles", "50,50"], "--percentiles"),
        (&["--concurrency", "2", "--duration", "1e300"], "--duration"),
        (&["--request-timeout", "1e19"], "--request-timeout"),
    ];
    for (extra, says) in cases {
        let mut args: Vec<&str> = vllm.to_vec();
        args.extend_from_slice(extra);
        let out = suite.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", show(&out));
        assert!(stderr.contains(says), "{extra:?}: the message names {says:?}: {stderr}");
        assert!(!mark.exists(), "{extra:?}: vLLM was started before the usage error");
        assert!(!suite.path("results").exists(), "{extra:?}: a results folder was created");
    }
}

/// `turnbench run` in `cwd`, one 1-turn conversation, results under `cwd/results`.
fn run_in(cwd: &Path, extra: &[&str]) -> std::process::Output {
    let suite = json!({"version": 1, "conversations": one_conversation(1)});
    std::fs::write(cwd.join("c.json"), suite.to_string()).unwrap();
    std::fs::write(cwd.join("r.json"), json!({"version": 1, "documents": []}).to_string()).unwrap();
    turnbench(cwd)
        .current_dir(cwd)
        .args(["run", "--data", "c.json", "--rag-data", "r.json", "--results-dir", "results", "--warmup", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn only_results(cwd: &Path) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir(cwd.join("results")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1);
    dirs.remove(0)
}

#[test]
fn an_edited_profile_in_configs_is_the_one_a_run_reads() {
    let cwd = tempfile::tempdir().unwrap();
    // The built-in `default` profile: 15 ms overhead.
    let out = run_in(cwd.path(), &["--engine", "sim"]);
    assert_success(&out);
    let dir = only_results(cwd.path());
    // Which profile was read is what the manifest recorded (a TTFT bound would flip on a busy machine).
    assert_eq!(measured(&dir)[0]["status"], "ok");
    let manifest = json_file(dir.join("manifest.json"));
    assert_eq!(manifest["configs"][0]["builtin"], true, "{}", manifest["configs"]);
    std::fs::remove_dir_all(cwd.path().join("results")).unwrap();

    // The same name, edited in the checkout: 400 ms overhead.
    std::fs::create_dir_all(cwd.path().join("configs/sim")).unwrap();
    let text = "overhead_ms = 400.0\ninter_token_ms = 0.0\nprefill_ms_per_token = 0.0\n";
    std::fs::write(cwd.path().join("configs/sim/default.toml"), text).unwrap();
    let out = run_in(cwd.path(), &["--engine", "sim"]);
    assert_success(&out);
    let dir = only_results(cwd.path());
    let ttft = measured(&dir)[0]["derived"]["ttft_ms"].as_f64().unwrap();
    assert!(ttft >= 400.0, "edited configs/sim/default.toml: {ttft} ms");
    let manifest = json_file(dir.join("manifest.json"));
    let config = &manifest["configs"][0];
    assert_eq!(config["builtin"], false, "{config}");
    assert!(config["path"].as_str().unwrap().ends_with("configs/sim/default.toml"), "{config}");
    assert_eq!(config["sha256"], turnbench::core::hash::sha256_hex(text.as_bytes()));

    // A malformed edit is a usage error naming the file, before any process.
    std::fs::write(cwd.path().join("configs/sim/default.toml"), "overhead = 1\n").unwrap();
    let out = run_in(cwd.path(), &["--engine", "sim"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default.toml"), "{}", show(&out));
}

#[test]
fn a_report_of_thousands_of_requests_stays_small() {
    use turnbench::core::record::{RecordSink, RequestTiming, TurnRecord, Usage};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = turnbench::core::results::Manifest { engine: "sim".into(), ..Default::default() };
    turnbench::core::results::write_manifest(&dir, &manifest).unwrap();
    let mut sink = RecordSink::create(&dir.join("turns.jsonl")).unwrap();
    let n = 6_000;
    for i in 0..n {
        let ttft = 5.0 + (i % 97) as f64;
        let timing = RequestTiming {
            scheduled_ms: i as f64,
            sent_ms: i as f64,
            first_token_ms: Some(i as f64 + ttft),
            end_ms: i as f64 + ttft + 20.0,
            content_chunk_ms: vec![i as f64 + ttft, i as f64 + ttft + 20.0],
        };
        let usage = Usage { prompt_tokens: Some(200), completion_tokens: Some(2), cached_tokens: Some(128) };
        sink.append(&TurnRecord {
            conversation_id: format!("c{}", i / 4),
            turn: (i % 4) as u32 + 1,
            max_tokens: 2,
            derived: timing.derive(Some(2)),
            timing,
            usage,
            ..Default::default()
        })
        .unwrap();
    }
    let out = Command::new(BIN).args(["report", dir.to_str().unwrap()]).output().unwrap();
    assert_success(&out);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.len() < 300_000, "report.md is {} bytes for {n} requests", report.len());
    assert!(report.contains(&format!("{n} requests: the table shows the first 100")), "the cap is said");
    assert!(report.contains("turns.csv"));
    // The slowest requests are among those shown.
    assert!(report.contains("| 101.0 |"), "a 101 ms TTFT row is shown");
    // Every request is still in turns.csv.
    let csv = std::fs::read_to_string(dir.join("turns.csv")).unwrap();
    assert_eq!(csv.lines().count(), n + 1);
}
