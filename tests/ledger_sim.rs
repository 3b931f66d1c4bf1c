//! The cache ledger against the simulator (a perfect, inspectable cache): what it expects is what
//! an exact cache reuses, a small cache's misses are predicted by the capacity model, and drift
//! between generated ids and re-tokenized answers is named — through the binary, on the suite.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{assert_success, measured, turnbench};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

/// `turnbench run` on the repository's suite against an instant simulator; the measured records.
fn run_suite(extra: &[&str]) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let out = turnbench(tmp.path())
        .args(["run", "--engine", "sim", "--engine-arg=--profile=instant", "--warmup", "1"])
        .arg("--data")
        .arg(data("conversations.json"))
        .arg("--rag-data")
        .arg(data("rag_data.json"))
        .arg("--results-dir")
        .arg(&results)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success(&out);
    let dir = std::fs::read_dir(&results).unwrap().next().unwrap().unwrap().path();
    for f in ["tokens.jsonl", "transcripts.jsonl"] {
        assert!(dir.join(f).is_file(), "{f} is written beside turns.jsonl");
    }
    measured(&dir)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn on_a_perfect_cache_the_ledger_expects_what_is_reused() {
    let records = run_suite(&["--exclude-tags", "ultra", "--context-size", "32000"]);
    let ok: Vec<&Value> = records.iter().filter(|r| r["status"] == "ok").collect();
    assert!(ok.len() > 30, "{} ok turns", ok.len());
    let (mut cached, mut expected) = (0, 0);
    for r in &ok {
        let c = n(&r["usage"]["cached_tokens"]);
        let e = n(&r["cache"]["expected_reusable_tokens"]);
        assert!(c <= e, "{} turn {}: cached {c} > expected {e}", r["conversation_id"], r["turn"]);
        assert_eq!(r["cache"]["token_source"], "server", "the simulator returns token ids");
        cached += c;
        expected += e;
    }
    let ratio = cached as f64 / expected as f64;
    assert!((0.97..=1.0).contains(&ratio), "Σ cached / Σ expected = {ratio}");
    // Nothing is unexplained on a perfect cache; the RAG removals are named.
    assert!(ok.iter().all(|r| r["cache"]["flag"] != "unexplained"));
    assert!(ok.iter().any(|r| r["cache"]["flag"] == "divergent_prompt" && r["rag_actions"].to_string().contains("remove")));
}

#[test]
fn a_cache_too_small_is_predicted_by_the_capacity_model() {
    let records = run_suite(&[
        "--engine-arg=--kv-cache-blocks=256",
        "--isolation",
        "run",
        "--include-tags",
        "long",
        "--context-size",
        "32000",
    ]);
    let evicted: Vec<&Value> = records.iter().filter(|r| r["cache"]["flag"] == "capacity_eviction").collect();
    assert!(evicted.len() >= 5, "turns flagged capacity_eviction: {}", evicted.len());
    for r in &evicted {
        let cached = n(&r["usage"]["cached_tokens"]);
        let predicted = n(&r["cache"]["predicted_reusable_tokens"]);
        let block = n(&r["cache"]["block_size"]);
        assert!(cached.abs_diff(predicted) <= block, "{}: predicted {predicted}, cached {cached}", r["conversation_id"]);
        assert!(n(&r["cache"]["expected_reusable_tokens"]) > predicted, "an unbounded cache would have reused more");
    }
}

#[test]
fn answers_that_re_tokenize_differently_are_named() {
    let records = run_suite(&["--engine-arg=--retokenize-drift=1", "--include-tags", "qa", "--exclude-tags", "rag"]);
    let later: Vec<&Value> = records.iter().filter(|r| n(&r["turn"]) > 1).collect();
    assert!(!later.is_empty());
    for r in &later {
        assert_eq!(r["cache"]["flag"], "answer_retokenized", "{} turn {}", r["conversation_id"], r["turn"]);
    }
    // Without drift the same conversations are not flagged at all.
    let clean = run_suite(&["--include-tags", "qa", "--exclude-tags", "rag"]);
    assert!(clean.iter().all(|r| r["cache"]["flag"].is_null()), "{:?}", clean.iter().map(|r| &r["cache"]["flag"]).collect::<Vec<_>>());
}
