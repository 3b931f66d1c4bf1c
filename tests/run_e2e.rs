//! End to end through the real binary: `turnbench run --engine sim` starts the simulator as a
//! child process, replays a suite written into a temp dir, and writes a results folder.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_success, json_file, measured, Suite as Fixture, BIN};
use serde_json::{json, Value};

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
    let s = summary(&dir);
    let ratio = s["first_vs_later"]["ratio_mean"].as_f64().unwrap();
    assert!(ratio > 3.0, "first/later TTFT ratio with caching: {ratio}");
    assert_eq!(s["run"]["simulated"], true);
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
    for t in &measured(&dir)[1..] {
        assert_eq!(t["usage"]["cached_tokens"].as_u64(), Some(0));
        assert_eq!(t["cache"]["flag"], "cache_off", "no reuse where a cache would have reused: flagged, with the reason");
    }
    let ratio = summary(&dir)["first_vs_later"]["ratio_mean"].as_f64().unwrap();
    assert!((0.7..1.3).contains(&ratio), "first/later TTFT ratio without caching: {ratio}");
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
    let mut child = fx
        .command(&["--warmup=0", "--engine-arg=--inter-token-ms=20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    fx.wait_for_records(&mut child, 2, Duration::from_secs(60));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
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
    let mut sim = Command::new(BIN)
        .args(["sim", "--port", "0", "--inter-token-ms", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(sim.stdout.take().unwrap()), &mut line).unwrap();
    let url = line.trim().to_string();
    let fx = Fixture::new(json!([paste_then_ask("a", 30), paste_then_ask("b", 3)]), json!([]));
    let mut child = fx
        .command(&["--endpoint", &url, "--warmup=0", "--connect-timeout=2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    fx.wait_for_records(&mut child, 2, Duration::from_secs(60));
    sim.kill().unwrap();
    sim.wait().unwrap();
    let out = child.wait_with_output().unwrap();
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
