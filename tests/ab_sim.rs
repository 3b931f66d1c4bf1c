//! `--ab prefix-caching` and `--replay` against the simulator, through the binary: arm B sends arm
//! A's exact prompts with caching off, and the reports say what caching saved, turn by turn.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_success, json_file, show, turnbench, BIN};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

/// Prefill dominates TTFT: 0.2 ms per uncached prompt token against 2 ms overhead.
const SLOW_PREFILL: [&str; 3] =
    ["--engine-arg=--overhead-ms=2", "--engine-arg=--prefill-ms-per-token=0.2", "--engine-arg=--inter-token-ms=0.1"];

fn run(results: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run"];
    if !extra.contains(&"--engine") {
        args.extend(["--engine", "sim"]);
        args.extend(SLOW_PREFILL);
    }
    // Its own state dir: the managed simulator's process group is recorded there, not in $HOME.
    let state = tempfile::tempdir().unwrap();
    turnbench(state.path())
        .args(args)
        .arg("--data")
        .arg(data("conversations.json"))
        .arg("--rag-data")
        .arg(data("rag_data.json"))
        .arg("--results-dir")
        .arg(results)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn only_dir(results: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(results).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn prompt_hashes(dir: &Path) -> Vec<(String, u64, String)> {
    std::fs::read_to_string(dir.join("transcripts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|t| t["warmup"] == false)
        .map(|t| (t["conversation_id"].as_str().unwrap().to_string(), t["turn"].as_u64().unwrap(), t["prompt_sha256"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn ab_prefix_caching_measures_what_caching_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["--ab", "prefix-caching", "--max-conversations", "3"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Prefix caching saved"), "{}", show(&out));
    let dir = only_dir(tmp.path());
    let b = dir.join("ab-off");
    assert!(b.join("turns.jsonl").is_file(), "arm B's results are in ab-off/");
    let b_manifest = json_file(b.join("manifest.json"));
    assert!(b_manifest["engine_command"].to_string().contains("--no-prefix-caching"), "{}", b_manifest["engine_command"]);
    assert_eq!(prompt_hashes(&dir), prompt_hashes(&b), "arm B sent arm A's prompts, turn by turn");

    let ab = json_file(dir.join("summary.json"))["ab"].clone();
    assert_eq!(ab["identical_prompts"], true, "{ab}");
    let by_turn = ab["by_turn"].as_array().unwrap();
    assert!(by_turn.len() >= 5, "{ab}");
    for t in by_turn {
        let saved = t["saved_pct"].as_f64().unwrap();
        if t["turn"] == 1 {
            // Nothing cached in either arm: the same work (exactly), so about the same time.
            assert_eq!(t["uncached_prompt_tokens_on"], t["uncached_prompt_tokens_off"], "{t}");
            assert!(saved.abs() < 50.0, "turn 1 saves about nothing: {t}");
        } else {
            assert!(saved > 50.0, "turn {} saves {saved:.1} %: {t}", t["turn"]);
            assert!(t["uncached_prompt_tokens_off"].as_f64() > t["uncached_prompt_tokens_on"].as_f64(), "{t}");
        }
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## What prefix caching saved (A/B)"), "{report}");
    assert!(report.contains("Prefix caching saved") && report.contains("% of TTFT on turns ≥ 2"));
    // `turnbench report` rebuilds the same comparison from the two folders.
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let out = Command::new(BIN).args(["report", dir.to_str().unwrap()]).output().unwrap();
    assert_success(&out);
    assert_eq!(json_file(dir.join("summary.json"))["ab"], ab);
}

#[test]
fn replay_sends_a_recorded_runs_exact_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    assert_success(&run(&first, &["--include-tags", "rag", "--max-conversations", "2"]));
    let recorded = only_dir(&first);
    let again = tmp.path().join("again");
    let out = run(&again, &["--replay", recorded.to_str().unwrap()]);
    assert_success(&out);
    let replayed = only_dir(&again);
    assert_eq!(prompt_hashes(&recorded), prompt_hashes(&replayed));
    let manifest = json_file(replayed.join("manifest.json"));
    assert!(manifest["datasets"][0]["path"].as_str().unwrap().ends_with("transcripts.jsonl"), "{}", manifest["datasets"]);
}

#[test]
fn ab_is_refused_where_it_cannot_be_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--ab", "prefix-caching", "--engine", "external", "--endpoint", "http://127.0.0.1:9"], "external server"),
        (&["--ab", "prefix-caching", "--concurrency", "2"], "single-user"),
        (&["--replay", "/nonexistent-run"], "transcripts.jsonl"),
    ];
    for (args, says) in cases {
        let out = run(tmp.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {}", show(&out));
    }
    assert!(std::fs::read_dir(tmp.path()).is_err() || std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "nothing written");
}
