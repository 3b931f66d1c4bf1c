//! End to end through the real binary: `turnbench run --engine sim` starts the simulator as a
//! child process, replays a suite written into a temp dir, and writes a results folder.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_success, json_file, measured, turnbench, Guard, Suite as Fixture};
use serde_json::{json, Value};
use turnbench::report::svg::num;

/// `turnbench sim --port 0 ARGS`, guarded (it never ends by itself), and the URL it printed.
fn external_sim(tmp: &Path, args: &[&str]) -> (Guard, String) {
    let mut sim =
        Guard::spawn(turnbench(tmp).args(["sim", "--port", "0"]).args(args).stdout(Stdio::piped()).stderr(Stdio::null()));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(sim.child().stdout.take().unwrap()), &mut line).unwrap();
    (sim, line.trim().to_string())
}

fn summary(dir: &Path) -> Value {
    json_file(dir.join("summary.json"))
}

fn assert_complete_results(dir: &Path) {
    for file in ["manifest.json", "turns.jsonl", "turns.csv", "conversations.csv", "summary.json", "report.md"] {
        assert!(dir.join(file).is_file(), "{file} missing in {}", dir.display());
    }
}

/// A conversation whose first turn pastes a large document, followed by short questions: the
/// shape where prefix caching pays off most.
fn paste_then_ask(id: &str, turns: usize) -> Value {
    let mut list = vec![json!({
        "user": "Here is our service log. What stands out?",
        "max_tokens": 16,
        "attachments": [{"title": "service.log", "generate": {"kind": "log", "tokens": 3000, "seed": 1}}]
    })];
    for n in 1..turns {
        list.push(json!({"user": format!("Follow-up question {n}: which request ids fail most?"), "max_tokens": 16}));
    }
    json!({"id": id, "title": "paste then ask", "tags": ["long"], "system": "You are a helpful SRE.", "turns": list})
}

// Prefill dominates TTFT: 0.2 ms per uncached token against 2 ms overhead.
const SLOW_PREFILL: [&str; 4] = [
    "--engine-arg=--overhead-ms=2",
    "--engine-arg=--prefill-ms-per-token=0.2",
    "--engine-arg=--inter-token-ms=0.2",
    "--warmup=1",
];

#[test]
fn prefix_caching_shows_in_reuse_and_first_vs_later_ttft() {
    let fx = Fixture::new(json!([paste_then_ask("paste", 4)]), json!([]));
    let out = fx.run(&SLOW_PREFILL);
    assert_success(&out);
    let dir = fx.results();
    assert_complete_results(&dir);
    let turns = measured(&dir);
    assert_eq!(turns.len(), 4);
    for t in &turns[1..] {
        let cached = t["usage"]["cached_tokens"].as_u64().unwrap();
        let expected = t["cache"]["expected_reusable_tokens"].as_u64().unwrap();
        assert!(cached >= expected && expected > 2500, "turn {} reused {cached} of expected {expected}", t["turn"]);
        assert_eq!(t["cache"]["server_hits"].as_u64(), Some(cached), "/metrics delta equals usage");
        assert!(t["cache"]["flag"].is_null());
    }
    // The first turn prefills its 3000-token paste uncached at 0.2 ms a token: a floor the
    // simulator's sleeps guarantee, however fast or busy the machine.
    let uncached = turns[0]["usage"]["prompt_tokens"].as_u64().unwrap() - turns[0]["usage"]["cached_tokens"].as_u64().unwrap();
    let first = turns[0]["derived"]["ttft_ms"].as_f64().unwrap();
    assert!(uncached > 2500 && first >= 0.2 * uncached as f64, "first-turn TTFT {first} ms for {uncached} uncached tokens");
    let s = summary(&dir);
    let ratio = s["first_vs_later"]["ratio_mean"].as_f64().unwrap();
    assert!(ratio > 3.0, "first/later TTFT ratio with caching: {ratio}");
    assert_eq!(s["run"]["simulated"], true);
    // The HTML report's TTFT-by-turn chart draws this run's per-turn p50s, point by point.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for t in s["by_turn"].as_array().unwrap() {
        let (turn, p50) = (t["turn"].as_f64().unwrap(), t["ttft_p50_ms"].as_f64().unwrap());
        let point = format!("<title>TTFT p50: {} at {}</title>", num(p50), num(turn));
        assert!(html.contains(&point), "report.html has no point {point}");
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.to_lowercase().contains("simulat"), "report labels the simulator");
}

#[test]
fn without_prefix_caching_first_and_later_ttft_are_alike() {
    let fx = Fixture::new(json!([paste_then_ask("paste", 4)]), json!([]));
    let mut args = SLOW_PREFILL.to_vec();
    args.push("--engine-arg=--no-prefix-caching");
    let out = fx.run(&args);
    assert_success(&out);
    let dir = fx.results();
    let turns = measured(&dir);
    for t in &turns[1..] {
        assert_eq!(t["usage"]["cached_tokens"].as_u64(), Some(0));
        assert_eq!(t["cache"]["flag"], "cache_off", "no reuse where a cache would have reused: flagged, with the reason");
    }
    // What was recorded, not how fast this machine was: every turn prefilled its whole prompt
    // (its TTFT is at least the simulator's 2 ms + 0.2 ms per uncached token), and later turns,
    // whose prompts only grow, prefilled at least as much as the first.
    let uncached = |t: &Value| t["usage"]["prompt_tokens"].as_u64().unwrap() - t["usage"]["cached_tokens"].as_u64().unwrap();
    for t in &turns {
        let ttft = t["derived"]["ttft_ms"].as_f64().unwrap();
        assert!(ttft >= 2.0 + 0.2 * uncached(t) as f64 - 1.0, "TTFT {ttft} ms for {} uncached tokens: {t}", uncached(t));
    }
    for t in &turns[1..] {
        assert!(uncached(t) >= uncached(&turns[0]), "turn {} computes less than turn 1", t["turn"]);
    }
    assert!(summary(&dir)["first_vs_later"]["ratio_mean"].as_f64().is_some());
}

#[test]
fn rag_removal_turn_shows_the_drop_and_is_flagged_divergent() {
    let documents = json!([
        {"id": "runbook", "title": "Runbook", "source": "ops wiki", "text": "Restart the ingest service when the queue depth exceeds ten thousand. ".repeat(60)},
    ]);
    let conversation = json!({
        "id": "rag-sys", "title": "rag", "tags": ["rag"], "system": "You answer from documents.",
        "turns": [
            {"user": "What does the runbook say about restarts?", "max_tokens": 16,
             "rag": [{"inject": ["runbook"], "position": "system"}]},
            {"user": "And about queue depth?", "max_tokens": 16},
            {"user": "Forget the runbook. What is a good on-call rotation?", "max_tokens": 16,
             "rag": [{"remove": ["runbook"]}]},
            {"user": "How long should a shift be?", "max_tokens": 16}
        ]
    });
    let fx = Fixture::new(json!([conversation]), documents);
    let out = fx.run(&["--warmup=0"]);
    assert_success(&out);
    let dir = fx.results();
    let turns = measured(&dir);
    let cached: Vec<u64> = turns.iter().map(|t| t["usage"]["cached_tokens"].as_u64().unwrap()).collect();
    assert!(cached[1] > 500, "turn 2 reuses the document: {cached:?}");
    assert!(cached[2] < 64, "removal turn reuses almost nothing: {cached:?}");
    assert_eq!(turns[2]["cache"]["flag"], "divergent_prompt");
    assert_eq!(turns[2]["rag_phase"], "after");
    assert_eq!(turns[1]["rag_phase"], "with");
    assert!(cached[3] > cached[2], "reuse recovers after the removal: {cached:?}");
    let s = summary(&dir);
    let phases: Vec<&str> = s["by_rag_phase"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert!(phases.contains(&"with") && phases.contains(&"after"), "{phases:?}");
}

#[test]
fn sigint_leaves_a_valid_partial_report() {
    let fx = Fixture::new(json!([paste_then_ask("long-one", 40)]), json!([]));
    let mut child =
        Guard::spawn(fx.command(&["--warmup=0", "--engine-arg=--inter-token-ms=20"]).stdout(Stdio::piped()).stderr(Stdio::piped()));
    fx.wait_for_records(child.child(), 2, Duration::from_secs(60));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(130), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = fx.results();
    assert_complete_results(&dir);
    let turns = measured(&dir);
    assert!(turns.len() >= 2 && turns.len() < 40, "{} turns", turns.len());
    let s = summary(&dir);
    assert_eq!(s["run"]["interrupted"], true);
    assert_eq!(s["requests"]["measured"].as_u64(), Some(turns.len() as u64));
    assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().to_lowercase().contains("interrupted"));
}

#[test]
fn a_server_that_dies_mid_run_leaves_failed_turns_and_a_report() {
    // An external simulator we kill ourselves after two turns.
    let fx = Fixture::new(json!([paste_then_ask("a", 30), paste_then_ask("b", 3)]), json!([]));
    let (mut sim, url) = external_sim(fx.dir(), &["--inter-token-ms", "20"]);
    let mut child = Guard::spawn(
        fx.command(&["--endpoint", &url, "--warmup=0", "--connect-timeout=2"]).stdout(Stdio::piped()).stderr(Stdio::piped()),
    );
    fx.wait_for_records(child.child(), 2, Duration::from_secs(60));
    sim.child().kill().unwrap();
    sim.wait();
    let out = child.wait_with_output();
    let dir = fx.results();
    assert_complete_results(&dir);
    let turns = measured(&dir);
    let failed: Vec<&Value> = turns.iter().filter(|t| t["status"] != "ok").collect();
    assert!(!failed.is_empty(), "failed turns recorded; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    for f in &failed {
        assert!(["connect", "stream"].contains(&f["status"].as_str().unwrap()), "{f}");
        assert!(f["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(turns.iter().any(|t| t["conversation_id"] == "b"), "the next conversation was still attempted");
    let s = summary(&dir);
    assert!(s["requests"]["failed"].as_u64().unwrap() >= failed.len() as u64);
}

#[test]
fn list_conversations_prints_the_selection_without_running() {
    let fx = Fixture::new(json!([paste_then_ask("small", 2), paste_then_ask("other", 3)]), json!([]));
    let out = fx.run(&["--list-conversations", "--conversation", "other"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("other") && !stdout.contains("small"), "{stdout}");
    assert!(!fx.path("results").exists(), "listing creates no results folder");
}

#[test]
fn malformed_data_gives_its_location_and_exit_code_2() {
    let fx = Fixture::new(json!([]), json!([]));
    let bad = "{\n  \"version\": 1,\n  \"conversations\": [\n    {\"id\": \"x\", \"title\": \"t\", \"tags\": [], \"turns\": [{\"user\": \"hi\", \"colour\": 1}]}\n  ]\n}\n";
    std::fs::write(fx.path("conversations.json"), bad).unwrap();
    let out = fx.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("conversations.json:4:"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
    assert!(!fx.path("results").exists(), "no results folder for bad input");
}

#[test]
fn bad_flags_are_usage_errors() {
    let fx = Fixture::new(json!([paste_then_ask("x", 2)]), json!([]));
    let out = fx.run(&["--request-timeout=0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--request-timeout"));
    let out = fx.run(&["--conversation", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

/// A gauge of the simulator at `url` (`vllm:NAME`), read from its /metrics.
fn gauge(url: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let prefix = format!("vllm:{name}");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == prefix || key.starts_with(&format!("{prefix}{{"))).then(|| value.parse().ok()).flatten()
    })
}

/// One conversation of `turns` short questions, `max_tokens` each.
fn questions(id: &str, turns: usize, max_tokens: u32) -> Value {
    let list: Vec<Value> = (0..turns).map(|n| json!({"user": format!("Question {n}: what changed?"), "max_tokens": max_tokens})).collect();
    json!({"id": id, "title": "questions", "tags": ["qa"], "turns": list})
}

fn sigint(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
}

/// stderr of `child`, line by line as it comes, and all of it at the end.
fn stderr_lines(child: &mut Guard) -> (std::sync::mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    let stderr = child.child().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    (rx, reader)
}

#[test]
fn the_first_ctrl_c_lets_the_turn_in_flight_finish() {
    // An external simulator, so the test can see the second turn in flight: 16 tokens × 50 ms.
    let fx = Fixture::new(json!([questions("c", 10, 16)]), json!([]));
    let (_sim, url) = external_sim(fx.dir(), &["--profile", "instant", "--inter-token-ms", "50"]);
    let mut tb = Guard::spawn(fx.command(&["--endpoint", &url, "--warmup=0"]).stdout(Stdio::null()).stderr(Stdio::piped()));
    let (_lines, stderr) = stderr_lines(&mut tb);
    fx.wait_for_records(tb.child(), 1, Duration::from_secs(60));
    common::wait_until("turn 2 in flight", Duration::from_secs(60), || (gauge(&url, "num_requests_running")? == 1.0).then_some(()));
    sigint(tb.id());
    let status = tb.wait();
    let err = stderr.join().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("Ctrl-C: finishing the turns in flight"), "{err}");
    let turns = measured(&fx.results());
    assert_eq!(turns.len(), 2, "the turn in flight was recorded and no third one started: {turns:?}");
    for t in &turns {
        assert_eq!(t["status"], "ok", "{t}");
        assert_eq!(t["usage"]["completion_tokens"], 16, "the whole answer, not cut off: {t}");
    }
    assert_eq!(summary(&fx.results())["run"]["interrupted"], true);
}

#[test]
fn a_second_ctrl_c_abandons_the_turn_in_flight() {
    // Turn 2 would stream for 40 s (200 tokens × 200 ms): only abandoning it ends the run early.
    let fx = Fixture::new(json!([questions("c", 3, 200)]), json!([]));
    let (_sim, url) = external_sim(fx.dir(), &["--profile", "instant", "--inter-token-ms", "200"]);
    let mut tb = Guard::spawn(fx.command(&["--endpoint", &url, "--warmup=0"]).stdout(Stdio::null()).stderr(Stdio::piped()));
    let (lines, stderr) = stderr_lines(&mut tb);
    fx.wait_for_records(tb.child(), 1, Duration::from_secs(120));
    common::wait_until("turn 2 in flight", Duration::from_secs(60), || (gauge(&url, "num_requests_running")? == 1.0).then_some(()));
    sigint(tb.id());
    // The second Ctrl-C only once the first was taken.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).expect("the first Ctrl-C was said");
        if line.contains("Ctrl-C: finishing the turns in flight") {
            break;
        }
    }
    sigint(tb.id());
    let status = tb.wait();
    let err = stderr.join().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("Ctrl-C again: abandoning"), "{err}");
    assert!(err.contains("turn 2 of c abandoned (the run was aborted); not recorded"), "{err}");
    let turns = measured(&fx.results());
    assert_eq!(turns.len(), 1, "the abandoned turn is not recorded: {turns:?}");
    assert_eq!(summary(&fx.results())["run"]["interrupted"], true);
}

#[test]
fn isolation_run_keeps_one_simulator_and_resets_its_cache_and_the_ledger() {
    // Two conversations whose first turns are the same prompt: without a reset, b's first turn
    // would reuse a's cached blocks (and the ledger would expect it to).
    let conversations = json!([paste_then_ask("a", 2), paste_then_ask("b", 2)]);
    let fx = Fixture::new(conversations.clone(), json!([]));
    let out = fx.run(&["--engine", "sim", "--engine-arg=--profile=instant", "--warmup=0", "--isolation", "run"]);
    assert_success(&out);
    let dir = fx.results();
    let logs: Vec<_> = std::fs::read_dir(dir.join("engine")).unwrap().collect();
    assert_eq!(logs.len(), 1, "one simulator for the run: {logs:?}");
    let manifest = json_file(dir.join("manifest.json"));
    assert_eq!(manifest["tests"][1]["cache_reset_verified"], true, "{}", manifest["tests"]);
    let turns = measured(&dir);
    let b1 = turns.iter().find(|t| t["conversation_id"] == "b" && t["turn"] == 1).unwrap();
    assert_eq!(b1["usage"]["cached_tokens"], 0, "the server's cache was reset: {b1}");
    assert_eq!(b1["cache"]["expected_reusable_tokens"], 0, "the ledger was reset: {b1}");
    // …while the cache itself is on: b's second turn reuses its first.
    let b2 = turns.iter().find(|t| t["conversation_id"] == "b" && t["turn"] == 2).unwrap();
    assert!(b2["usage"]["cached_tokens"].as_u64().unwrap() > 2500, "{b2}");
    assert!(common::recorded_groups(fx.dir()).is_empty(), "the simulator's group was unrecorded at teardown");

    // The control: the same run with a server per test starts two.
    let fx = Fixture::new(conversations, json!([]));
    assert_success(&fx.run(&["--engine", "sim", "--engine-arg=--profile=instant", "--warmup=0"]));
    assert_eq!(std::fs::read_dir(fx.results().join("engine")).unwrap().count(), 2);
}

/// Runs `victim` (40 turns) then `next` (3) on the managed simulator, and SIGKILLs the server
/// (the group turnbench recorded in this test's own state dir) once two turns are on disk.
fn kill_the_managed_simulator(extra: &[&str]) -> (Fixture, std::process::ExitStatus, String, i32) {
    let fx = Fixture::new(json!([questions("victim", 40, 16), questions("next", 3, 4)]), json!([]));
    let mut args = vec!["--engine", "sim", "--warmup=0", "--engine-arg=--inter-token-ms=20"];
    args.extend_from_slice(extra);
    let mut tb = Guard::spawn(fx.command(&args).stdout(Stdio::null()).stderr(Stdio::piped()));
    let (_lines, stderr) = stderr_lines(&mut tb);
    fx.wait_for_records(tb.child(), 2, Duration::from_secs(60));
    let groups = common::recorded_groups(fx.dir());
    assert_eq!(groups.len(), 1, "{groups:?}");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/cmdline", groups[0])).unwrap()).replace('\0', " ");
    assert!(cmdline.contains(" sim "), "{cmdline}");
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(groups[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = tb.wait();
    let err = stderr.join().unwrap();
    assert!(common::group_members(groups[0]).is_empty(), "nothing of the killed server is left");
    (fx, status, err, groups[0])
}

/// The one failed turn: `victim`'s turn in flight, failed because its server exited.
fn the_turn_in_flight_failed(turns: &[Value]) {
    let failed: Vec<&Value> = turns.iter().filter(|t| t["status"] != "ok").collect();
    assert_eq!(failed.len(), 1, "the turn in flight failed, and ended its conversation: {failed:?}");
    assert_eq!(failed[0]["conversation_id"], "victim");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("server exited"), "{error}");
}

#[test]
fn a_dead_managed_simulator_is_replaced_by_a_fresh_one_for_the_next_test() {
    // A server per test (the default): the crash fails that test only.
    let (fx, status, err, _) = kill_the_managed_simulator(&[]);
    assert_eq!(status.code(), Some(0), "some requests succeeded: exit 0\n{err}");
    let dir = fx.results();
    let turns = measured(&dir);
    the_turn_in_flight_failed(&turns);
    let next: Vec<&Value> = turns.iter().filter(|t| t["conversation_id"] == "next").collect();
    assert_eq!(next.len(), 3, "{next:?}");
    assert!(next.iter().all(|t| t["status"] == "ok"), "the fresh server served them: {next:?}");
    let manifest = json_file(dir.join("manifest.json"));
    assert_eq!(manifest["tests"][0]["outcome"], "failed", "{}", manifest["tests"]);
    assert_eq!(manifest["tests"][1]["outcome"], "completed", "{}", manifest["tests"]);
    assert!(manifest["server_died"].is_null(), "{manifest}");
    assert_eq!(std::fs::read_dir(dir.join("engine")).unwrap().count(), 2, "a fresh server, with its own log");
    assert!(common::recorded_groups(fx.dir()).is_empty(), "both servers were unrecorded at teardown");
}

#[test]
fn a_dead_shared_simulator_ends_the_run_saying_why() {
    // One server for the run (`--isolation run`): without it nothing can go on.
    let (fx, status, err, _) = kill_the_managed_simulator(&["--isolation", "run"]);
    assert_eq!(status.code(), Some(4), "the server died: exit 4\n{err}");
    assert!(err.contains("the server died"), "{err}");
    let dir = fx.results();
    let turns = measured(&dir);
    the_turn_in_flight_failed(&turns);
    assert!(turns.iter().all(|t| t["conversation_id"] == "victim"), "no test started after the crash: {turns:?}");
    let manifest = json_file(dir.join("manifest.json"));
    let why = manifest["server_died"].as_str().expect("the manifest says why");
    assert!(why.contains("exited"), "{why}");
    assert_eq!(manifest["interrupted"], true);
    assert_eq!(std::fs::read_dir(dir.join("engine")).unwrap().count(), 1, "no second server");
    assert!(common::recorded_groups(fx.dir()).is_empty(), "the dead server was unrecorded at teardown");
}
