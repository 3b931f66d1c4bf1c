//! The files vLLM's multi-turn benchmark users already have: its `generate_multi_turn.json`,
//! as published, with a local text file, drives a load run against the simulator.

mod common;

use common::{assert_success, json_file, measured, Suite};
use serde_json::json;

/// `benchmarks/multi_turn/generate_multi_turn.json` from vLLM, unchanged.
const PUBLISHED: &str = include_str!("../data/workloads/vllm/generate_multi_turn.json");

#[test]
fn vllm_generate_multi_turn_json_drives_a_load_run() {
    let fx = Suite::new(json!([]), json!([]));
    // The text file the config names, beside it (the project's own text, not the book).
    let dir = fx.path("vllm");
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = (0..4000).map(|i| format!("Line {i}: the prefix cache keeps blocks of earlier prompts. ")).collect();
    std::fs::write(dir.join("pg1184.txt"), text).unwrap();
    let config = dir.join("generate_multi_turn.json");
    std::fs::write(&config, PUBLISHED).unwrap();
    let out = fx.run(&[
        "--engine", "sim", "--engine-arg=--profile=instant", "--warmup=0",
        "--workload", "synthetic", "--workload-path", config.to_str().unwrap(),
        "--concurrency", "4", "--duration", "1.5",
    ]);
    assert_success(&out);
    let results = fx.results();
    let turns = measured(&results);
    assert!(!turns.is_empty());
    assert!(turns.iter().all(|t| t["status"] == "ok"), "{turns:?}");
    // Conversation ids and the first prompt's size follow vLLM's generator: a 500-token common
    // prefix plus the conversation's own lognormal prefix.
    assert!(turns.iter().all(|t| t["conversation_id"].as_str().is_some_and(|id| id.starts_with("CONV_ID_"))));
    let first = turns.iter().find(|t| t["turn"] == 1).unwrap();
    assert!(first["usage"]["prompt_tokens"].as_u64().unwrap() > 500, "{first}");
    assert!(turns.iter().any(|t| t["turn"].as_u64().unwrap() > 1 && t["usage"]["cached_tokens"].as_u64().unwrap() > 500));
    let manifest = json_file(results.join("manifest.json"));
    let datasets = manifest["datasets"].as_array().unwrap();
    assert!(datasets.iter().any(|d| d["path"].as_str().unwrap().ends_with("pg1184.txt")), "{datasets:?}");
    let summary = json_file(results.join("summary.json"));
    assert_eq!(summary["load"]["levels"].as_array().map(Vec::len), Some(1));

    // The same file with an unknown distribution: file:line and exit 2.
    std::fs::write(&config, PUBLISHED.replace("\"lognormal\"", "\"gamma\"")).unwrap();
    let out = fx.run(&["--engine", "sim", "--workload", "synthetic", "--workload-path", config.to_str().unwrap(), "--concurrency", "1", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("generate_multi_turn.json:") && err.contains("gamma"), "{err}");
}
