//! The client measures its own ceiling before a run (`manifest.client_calibration`), and a load
//! level that asks for more than half of it is flagged as client-bound in `summary.json`,
//! `report.md` and `report.html`. Through the binary, against managed simulators.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_turnbench");

fn load_run(sim_args: &[&str], concurrency: &str) -> (Value, Value, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--engine", "sim", "--workload", "multiround", "--users", "64", "--rounds", "3"])
        .args(["--answer-tokens", "16", "--concurrency", concurrency, "--duration", "2", "--warmup=0"])
        .args(["--calibrate-secs", "0.5", "--results-dir"])
        .arg(&results)
        .env("TURNBENCH_STATE_DIR", tmp.path().join("state"));
    for a in sim_args {
        cmd.arg(format!("--engine-arg={a}"));
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let dir = std::fs::read_dir(&results).unwrap().next().unwrap().unwrap().path();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let manifest: Value = serde_json::from_str(&read("manifest.json")).unwrap();
    let summary: Value = serde_json::from_str(&read("summary.json")).unwrap();
    (manifest, summary, read("report.md") + &read("report.html"), stderr)
}

#[test]
fn a_closed_loop_against_a_zero_latency_server_is_flagged_client_bound() {
    // Nothing limits this level but the client: it is the calibration's own situation.
    let (manifest, summary, reports, stderr) = load_run(&["--profile=instant"], "32");
    let c = &manifest["client_calibration"];
    assert!(c["requests"].as_u64().unwrap() > 0, "{manifest}");
    let ceiling = c["requests_per_s"].as_f64().unwrap();
    assert!(ceiling > 0.0 && c["chunks_per_s"].as_f64().unwrap() > 0.0 && c["cpu_ms_per_request"].as_f64().unwrap() > 0.0);
    assert_eq!(c["concurrency"], 32);
    assert!(stderr.contains("client ceiling:"), "{stderr}");

    let level = &summary["load"]["levels"][0];
    let rate = level["request_rate"].as_f64().unwrap();
    assert!(rate > 0.5 * ceiling, "the level ran at {rate} req/s, the ceiling is {ceiling}: the premise failed");
    let why = level["client_bound"].as_array().unwrap_or_else(|| panic!("not flagged: {level}"));
    assert!(why.iter().any(|w| w.as_str().unwrap().contains("client's measured ceiling")), "{why:?}");
    assert!(reports.matches("Client-bound").count() >= 2, "report.md and report.html both warn");
}

#[test]
fn a_level_the_server_limits_is_not_flagged() {
    // 100 ms per request and two clients: ~20 requests/s, far below any client's ceiling.
    let (manifest, summary, reports, _) = load_run(&["--profile=instant", "--overhead-ms=100"], "2");
    let ceiling = manifest["client_calibration"]["requests_per_s"].as_f64().unwrap();
    let level = &summary["load"]["levels"][0];
    assert!(level["request_rate"].as_f64().unwrap() < 0.5 * ceiling, "{level} vs ceiling {ceiling}");
    // Only the rates are compared with the ceiling here: on a machine saturated by something
    // else, the schedule-lag reason may rightly appear (the client did send late).
    let why: Vec<&str> = level["client_bound"].as_array().map_or(vec![], |a| a.iter().filter_map(|w| w.as_str()).collect());
    assert!(why.iter().all(|w| !w.contains("ceiling")), "{why:?}");
    assert!(!reports.contains("client's measured ceiling"), "a report blames the ceiling");
}

#[test]
fn calibration_can_be_skipped_and_its_range_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "--engine", "sim", "--calibrate-secs", "61", "--results-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--calibrate-secs 61: must be between 0 (off) and 60 seconds"));
}
