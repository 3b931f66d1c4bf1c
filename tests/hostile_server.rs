//! Hostile inputs, hostile servers, kills — through the binary, where a user meets them. Every
//! mode of the misbehaving server (`tests/hostile/`) is one test: turnbench must never panic,
//! hang, record a wrapped number or call a failure `ok`, and its exit code must say what
//! happened (docs/results.md § Exit codes).

mod common;
mod hostile;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{group_members, json_file, measured, recorded_groups, show, turnbench, wait_until, Guard, Suite, BIN};
use hostile::{Hostile, Mode};
use serde_json::{json, Value};

fn suite(conversations: usize) -> Suite {
    let list: Vec<Value> = (0..conversations)
        .map(|i| {
            json!({"id": format!("c{i}"), "title": "t", "tags": ["qa"], "turns": [
                {"user": "first question", "max_tokens": 4}, {"user": "second question", "max_tokens": 4}]})
        })
        .collect();
    Suite::new(json!(list), json!([]))
}

/// `turnbench run` against `server` with short timeouts, then `extra`.
fn run(fx: &Suite, server: &Hostile, extra: &[&str]) -> Output {
    let url = server.url();
    let mut args = vec!["--endpoint", url.as_str(), "--model", "hostile", "--warmup", "0"];
    if !extra.contains(&"--request-timeout") {
        args.extend(["--request-timeout", "5"]);
    }
    args.extend_from_slice(extra);
    fx.run(&args)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("killed by a signal: {}", show(out)))
}

/// The one measured record of a run whose first turn failed.
fn only_record(fx: &Suite) -> Value {
    let records = measured(&fx.results());
    assert_eq!(records.len(), 1, "a failed first turn ends the conversation: {records:?}");
    records.into_iter().next().unwrap()
}

/// A failed first turn: exit 3 (no request succeeded), the record's status and error.
fn failed_with(mode: Mode, extra: &[&str], status: &str, error_has: &str) -> Value {
    let fx = suite(1);
    let server = Hostile::start(mode);
    let out = run(&fx, &server, extra);
    assert_eq!(code(&out), 3, "every request failed: exit 3\n{}", show(&out));
    let r = only_record(&fx);
    assert_eq!(r["status"], status, "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains(error_has), "error {error:?} should say {error_has:?}");
    let s = json_file(fx.results().join("summary.json"));
    assert_eq!(s["requests"]["ok"], 0);
    assert_eq!(s["requests"]["failed"], 1);
    r
}

#[test]
fn http_429_500_503_are_failures_with_their_code() {
    for (code, status) in [(429, "http_4xx"), (500, "http_5xx"), (503, "http_5xx")] {
        let r = failed_with(Mode::Status(code), &[], status, &format!("hostile server says {code}"));
        assert_eq!(r["http_status"], code);
    }
}

#[test]
fn a_redirect_is_reported_with_where_it_points_never_followed() {
    // Followed, the request would time the redirect's round trip as the server's.
    let r = failed_with(Mode::Redirect, &[], "http_4xx", "redirects (http://elsewhere.invalid/v1/chat/completions)");
    assert_eq!(r["http_status"], 307);
}

#[test]
fn a_proxy_named_in_the_environment_carries_every_request() {
    // Plain HTTP goes through hyper directly unless a proxy is named; then reqwest sends every
    // request through it. The endpoint cannot be reached but through the proxy.
    let fx = suite(1);
    let proxy = Hostile::start(Mode::Healthy);
    let args = ["--endpoint", "http://behind-the-proxy.invalid:9", "--model", "hostile", "--warmup", "0", "--request-timeout", "5"];
    let out = fx.command(&args).env("http_proxy", proxy.url()).env_remove("no_proxy").env_remove("NO_PROXY").output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let records = measured(&fx.results());
    // Both turns answered: the endpoint's host does not resolve, so they came through the proxy
    // (as did the start-up probes of the endpoint).
    assert_eq!(records.iter().filter(|r| r["status"] == "ok").count(), 2, "{records:?}");
    // The client's calibration against its own loopback server never goes through the proxy
    // (it would measure the proxy): only the run's few requests reached it.
    let chats = proxy.chats.load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..=10).contains(&chats), "{chats} chat requests through the proxy");
    assert!(json_file(fx.results().join("manifest.json"))["client_calibration"]["requests"].as_u64().unwrap() > 100);
}

#[test]
fn a_reset_connection_is_a_failure() {
    let fx = suite(1);
    let server = Hostile::start(Mode::Reset);
    let out = run(&fx, &server, &[]);
    assert_eq!(code(&out), 3, "{}", show(&out));
    let r = only_record(&fx);
    assert!(["stream", "connect"].contains(&r["status"].as_str().unwrap()), "{r}");
    assert!(!r["error"].as_str().unwrap().is_empty());
}

#[test]
fn headers_never_sent_hit_the_first_token_timeout() {
    failed_with(Mode::NoHeaders, &["--first-token-timeout", "1"], "timeout", "no first token within");
}

#[test]
fn garbled_sse_is_a_stream_failure() {
    failed_with(Mode::Garbled, &[], "stream", "unparseable chunk");
}

#[test]
fn binary_sse_is_a_stream_failure() {
    failed_with(Mode::Binary, &[], "stream", "not UTF-8");
}

#[test]
fn a_stream_without_done_is_a_failure() {
    failed_with(Mode::NoDone, &[], "stream", "ended before data: [DONE]");
}

#[test]
fn absurd_usage_is_invalid_and_never_summed() {
    let r = failed_with(Mode::AbsurdUsage, &[], "invalid", "not a plausible token count");
    assert_eq!(r["usage"]["prompt_tokens"], 1_000_000_000_000_000_000u64, "raw numbers kept for audit");
    let fx = suite(1);
    let server = Hostile::start(Mode::AbsurdUsage);
    let out = run(&fx, &server, &[]);
    assert_eq!(code(&out), 3, "no request succeeded: exit 3\n{}", show(&out));
    let s = json_file(fx.results().join("summary.json"));
    assert_eq!(s["cache"]["prompt_tokens"], 0, "an invalid record is in no statistic");
    assert!(s["overall"]["output_tokens"].is_null());
    assert_eq!(s["errors"][0]["status"], "invalid");
}

#[test]
fn cached_above_prompt_is_invalid() {
    failed_with(Mode::CachedAbovePrompt, &[], "invalid", "cached_tokens 500 > prompt_tokens 100");
}

#[test]
fn a_negative_token_count_is_invalid() {
    failed_with(Mode::NegativeUsage, &[], "invalid", "usage.prompt_tokens = -5 is not a token count");
}

#[test]
fn a_stream_without_content_is_empty() {
    failed_with(Mode::Empty, &[], "empty", "no content");
}

#[test]
fn a_stalled_stream_ends_at_the_request_timeout() {
    failed_with(Mode::Stall, &["--request-timeout", "1"], "timeout", "request took longer than 1s");
}

#[test]
fn a_slow_drip_without_newline_ends_at_the_request_timeout() {
    failed_with(Mode::SlowDrip, &["--request-timeout", "1", "--first-token-timeout", "30"], "timeout", "request took longer than 1s");
}

#[test]
fn a_200_mb_line_hits_the_line_cap_not_the_memory() {
    failed_with(Mode::HugeLine, &["--request-timeout", "60"], "stream", "longer than 1048576 bytes (the line limit)");
}

#[test]
fn junk_metrics_tokenize_and_models_do_not_break_a_run() {
    let fx = suite(1);
    let server = Hostile::start(Mode::JunkApi);
    let out = run(&fx, &server, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let records = measured(&fx.results());
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == "ok" && r["cache"]["server_hits"].is_null()), "{records:?}");
    // Without --model, the junk model list is said to be one.
    let fx = suite(1);
    let out = fx.run(&["--endpoint", &server.url(), "--warmup", "0"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lists no model") && err.contains("not JSON"), "{err}");
}

#[test]
fn the_api_key_a_server_echoes_is_never_written_or_printed() {
    const KEY: &str = "sk-hostile-SECRET-0123456789";
    let fx = suite(1);
    let server = Hostile::start(Mode::EchoKey);
    let out = run(&fx, &server, &["--api-key", KEY]);
    assert_eq!(code(&out), 3, "{}", show(&out));
    let r = only_record(&fx);
    assert!(r["error"].as_str().unwrap().contains("Bearer <redacted>"), "{r}");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!printed.contains(KEY), "printed: {printed}");
    for file in walk(&fx.results()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(KEY), "{} holds the key", file.display());
    }
}

/// A run against a server that works, given its key as `--api-key=KEY` or in TURNBENCH_API_KEY:
/// the manifest says `<redacted>` where the key was, and the key is nowhere else.
#[test]
fn an_api_key_given_any_way_is_redacted_everywhere() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(turnbench::sim::spawn(turnbench::sim::SimConfig::instant())).unwrap();
    let url = sim.base_url();
    for (how, key) in [("--api-key=KEY", "sk-SECRET-equals-1"), ("TURNBENCH_API_KEY", "sk-SECRET-env-2")] {
        let fx = suite(1);
        let mut cmd = fx.command(&["--endpoint", &url, "--warmup", "0"]);
        let flag = format!("--api-key={key}");
        if how == "TURNBENCH_API_KEY" {
            cmd.env("TURNBENCH_API_KEY", key);
        } else {
            cmd.arg(&flag);
        }
        let out = cmd.output().unwrap();
        assert_eq!(code(&out), 0, "{how}: {}", show(&out));
        let manifest = json_file(fx.results().join("manifest.json"));
        assert_eq!(manifest["settings"]["api_key"], "<redacted>", "{how}: {}", manifest["settings"]);
        if how != "TURNBENCH_API_KEY" {
            let line: Vec<&str> = manifest["command_line"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            assert!(line.contains(&"--api-key=<redacted>"), "{how}: {line:?}");
        }
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!printed.contains(key), "{how}: printed: {printed}");
        for file in walk(&fx.results()) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(key), "{how}: {} holds the key", file.display());
        }
    }
    drop(sim);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_refused_endpoint_says_cannot_connect_and_creates_nothing() {
    let fx = suite(1);
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let out = fx.run(&["--endpoint", &url, "--warmup", "0"]);
    assert_eq!(code(&out), 4, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot connect to {url}")), "{err}");
    assert!(!err.contains("lists no model"), "{err}");
    assert!(!fx.path("results").exists() || std::fs::read_dir(fx.path("results")).unwrap().next().is_none());
}

#[test]
fn a_non_http_endpoint_says_cannot_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            use std::io::Write;
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02");
        }
    });
    let fx = suite(1);
    let url = format!("http://127.0.0.1:{port}");
    let out = fx.run(&["--endpoint", &url, "--model", "m", "--warmup", "0"]);
    assert_eq!(code(&out), 4, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot connect to {url}: ")), "{}", show(&out));
}

#[test]
fn max_error_rate_turns_too_many_failures_into_exit_5() {
    // Two conversations: every second request fails (the second conversation's first turn).
    let server = Hostile::start(Mode::FailEvery(3));
    let fx = suite(2);
    let out = run(&fx, &server, &[]);
    assert_eq!(code(&out), 0, "some requests succeeded, no --max-error-rate: exit 0\n{}", show(&out));
    let failed = measured(&fx.results()).iter().filter(|r| r["status"] != "ok").count();
    assert_eq!(failed, 1);
    let server = Hostile::start(Mode::FailEvery(3));
    let fx = suite(2);
    let out = run(&fx, &server, &["--max-error-rate", "10"]);
    assert_eq!(code(&out), 5, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than --max-error-rate 10"), "{}", show(&out));
    let fx = suite(1);
    let out = run(&fx, &server, &["--max-error-rate", "NaN"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-error-rate NaN: must be a percentage between 0 and 100"), "{}", show(&out));
}

#[test]
fn load_mode_notices_a_dead_server_and_ends_with_the_reason() {
    let fx = suite(2);
    let server = Hostile::start(Mode::DieOnFirstChat);
    let out = run(&fx, &server, &["--concurrency", "4", "--duration", "60"]);
    assert_eq!(code(&out), 4, "the server died: exit 4\n{}", show(&out));
    let dir = fx.results();
    let manifest = json_file(dir.join("manifest.json"));
    let why = manifest["server_died"].as_str().expect("manifest says why");
    assert!(why.contains("requests in a row could not connect"), "{why}");
    assert_eq!(manifest["tests"][0]["outcome"], "server_died");
    let summary = json_file(dir.join("summary.json"));
    assert_eq!(summary["run"]["server_died"], why);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("The server died"), "{report}");
    let records = measured(&dir);
    assert!(records.len() < 10_000, "stopped after {} failures, not flooded", records.len());
    assert!(records.iter().filter(|r| r["status"] == "connect").count() >= 20);
}

#[test]
fn a_week_at_a_million_per_second_is_scheduled_in_constant_memory() {
    // Built up front, 6 × 10¹¹ arrivals would need terabytes: under a 4 GB address-space limit
    // the run could not even start its level.
    let fx = suite(2);
    let server = Hostile::start(Mode::DieOnFirstChat);
    let cmd = fx.command(&[
        "--endpoint", &server.url(), "--model", "hostile", "--warmup", "0",
        "--qps", "1e6", "--duration", "604800",
    ]);
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000 && exec \"$@\"")
        .arg("sh")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "the level ran (and ended when the server died)\n{}", show(&out));
    let manifest = json_file(fx.results().join("manifest.json"));
    assert!(manifest["settings"]["load"]["levels"][0]["scheduled_conversations"].as_u64().unwrap() >= 20);
}

#[test]
fn a_tail_far_beyond_the_median_is_never_called_sustainable() {
    let fx = suite(2);
    let server = Hostile::start(Mode::SlowEvery(5));
    let out = run(&fx, &server, &["--concurrency", "2", "--duration", "4"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let load = &json_file(fx.results().join("summary.json"))["load"];
    assert!(load["highest_sustainable"].is_null(), "{load}");
    let reasons = load["saturation"]["reasons"].to_string();
    assert!(reasons.contains("far beyond the low-load median"), "{reasons}");
}

/// Waits until the run's manifest and `n` measured records are on disk.
fn wait_for(fx: &Suite, child: &mut std::process::Child, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = std::fs::read_dir(fx.path("results"))
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path())
            .is_some_and(|d| d.join("manifest.json").exists() && fx.records_so_far() >= n);
        if ready {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "turnbench ended early");
        assert!(Instant::now() < deadline, "the run did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_is_reported_as_sigterm_and_exits_143() {
    let fx = suite(1);
    let server = Hostile::start(Mode::Stall);
    let url = server.url();
    let mut child =
        Guard::spawn(fx.command(&["--endpoint", &url, "--model", "hostile", "--warmup", "0"]).stdout(Stdio::piped()).stderr(Stdio::piped()));
    wait_for(&fx, child.child(), 0);
    wait_until("the stalled chat request", Duration::from_secs(60), || {
        (server.chats.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(())
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(143), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SIGTERM") && !err.contains("second Ctrl-C"), "{err}");
    let manifest = json_file(fx.results().join("manifest.json"));
    assert_eq!((manifest["interrupted"].as_bool(), manifest["completed"].as_bool()), (Some(true), Some(true)));
}

#[test]
fn a_run_killed_with_kill_9_is_rebuilt_as_incomplete_with_its_engine_log() {
    let fx = suite(3);
    // The managed simulator, slow enough that the run is still going when it is killed.
    let mut child = Guard::spawn(
        fx.command(&["--engine", "sim", "--warmup", "0", "--engine-arg=--inter-token-ms=300"]).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    wait_for(&fx, child.child(), 1);
    // The simulator turnbench started, as it recorded it in this test's own state dir.
    let groups = recorded_groups(fx.dir());
    assert_eq!(groups.len(), 1, "{groups:?}");
    child.child().kill().unwrap(); // SIGKILL
    child.wait();
    // Its server dies with it (parent-death signal); the registry entry stays for the next start to reap.
    wait_until("the managed simulator's group gone", Duration::from_secs(30), || group_members(groups[0]).is_empty().then_some(()));
    let dir = fx.results();
    let log = dir.join("engine/server-001.log");
    assert!(log.is_file() && std::fs::metadata(&log).unwrap().len() > 0, "the engine log is in the results folder");
    assert_eq!(json_file(dir.join("manifest.json"))["completed"], false);
    let out = Command::new(BIN).arg("report").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("incomplete run (killed at "), "{console}");
    let summary = json_file(dir.join("summary.json"));
    assert!(summary["run"]["incomplete"].as_str().unwrap().starts_with("incomplete run (killed at "));
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("Incomplete run (killed at "), "{report}");
}

/// Usage errors: exit 2, the message names the file (and line), nothing is created and no
/// server is started.
fn usage_error(fx: &Suite, args: &[&str], says: &[&str]) {
    let out = fx.run(args);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for s in says {
        assert!(err.contains(s), "{s:?} missing from {err}");
    }
    assert!(!fx.path("results").exists(), "a usage error creates no results folder");
}

#[test]
fn bad_importer_entries_fail_naming_the_file_before_any_folder_or_server() {
    let fx = suite(1);
    let data = fx.path("bad.jsonl");
    std::fs::write(&data, "{\"messages\": [{\"role\": \"user\", \"content\": \"ok\"}]}\n{\"messages\": [{\"role\": \"wizard\", \"content\": null}]}\n").unwrap();
    let p = data.display().to_string();
    usage_error(&fx, &["--workload", "openai", "--workload-path", &p, "--qps", "1", "--duration", "1"], &[&format!("{p}: entry 1: message 0: unknown role \"wizard\"")]);
    std::fs::write(&data, "{\"conversations\": [{\"from\": \"human\", \"value\": null}]}\n").unwrap();
    usage_error(&fx, &["--workload", "sharegpt", "--workload-path", &p, "--qps", "1", "--duration", "1"], &[&p, "`value` is null"]);
    std::fs::write(&data, "{\"prompt_content\": \"hi\", \"max_tokens\": 4294967301}\n").unwrap();
    usage_error(&fx, &["--workload", "snapshot", "--workload-path", &p, "--qps", "1", "--duration", "1"], &[&p, "max_tokens 4294967301"]);
}

#[test]
fn absurd_config_counts_are_usage_errors_naming_file_and_line() {
    let fx = suite(1);
    std::fs::write(fx.path("corpus.txt"), "some text to slice\n").unwrap();
    let config = fx.path("synthetic.json");
    let write = |conversations: &str, prefix: &str| {
        std::fs::write(&config, format!("{{\n\"version\": 1,\n\"conversations\": {conversations},\n\"text_files\": [\"corpus.txt\"],\n\"turns\": {{\"min\": 1, \"max\": 2}},\n\"input_tokens\": {{\"min\": 1, \"max\": 4}},\n\"output_tokens\": {{\"min\": 1, \"max\": 4}},\n\"shared_prefix_tokens\": {prefix}\n}}\n")).unwrap();
    };
    let c = config.display().to_string();
    let args = ["--workload", "synthetic", "--workload-path", &c, "--qps", "1", "--duration", "1"];
    write("1000000000", "0");
    usage_error(&fx, &args, &[&format!("{c}:3: conversations = 1000000000")]);
    write("1e9", "0");
    usage_error(&fx, &args, &[&format!("{c}:3:")]);
    write("2", "1000000000000");
    usage_error(&fx, &args, &[&format!("{c}:8: shared_prefix_tokens = 1000000000000")]);
}

#[test]
fn profile_values_that_would_overflow_are_usage_errors_before_launch() {
    let fx = suite(1);
    let marker = fx.path("launched");
    let vllm = fx.path("fake-vllm");
    std::fs::write(&vllm, format!("#!/bin/sh\ntouch {}\nsleep 30\n", marker.display())).unwrap();
    std::fs::set_permissions(&vllm, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let profile = fx.path("vllm.toml");
    std::fs::write(&profile, "enable_prefix_caching = true\nstartup_timeout_s = 18446744073709551615\n").unwrap();
    let p = profile.display().to_string();
    let v = vllm.display().to_string();
    usage_error(&fx, &["--engine", "vllm", "--model", "m", "--profile", &p, "--vllm-cmd", &v], &[&format!("{p}:2: startup_timeout_s = 18446744073709551615")]);
    assert!(!marker.exists(), "vLLM was never launched");
    let sim = fx.path("sim.toml");
    std::fs::write(&sim, "inter_token_ms = 1e300\n").unwrap();
    let s = sim.display().to_string();
    usage_error(&fx, &["--engine", "sim", &format!("--engine-arg=--profile={s}")], &[&s, "inter_token_ms = 1e300"]);
}

#[test]
fn data_files_are_read_with_a_limit_that_names_it() {
    let fx = suite(1);
    let results = fx.path("results");
    let out = turnbench(fx.dir())
        .args(["run", "--data", "/dev/zero", "--results-dir"])
        .arg(&results)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/zero") && err.contains("larger than 268435456 bytes"), "{err}");
    assert!(!results.exists());
}
