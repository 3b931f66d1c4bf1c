//! `run --endpoint A --endpoint B --label a --label b` through the binary: B gets A's exact
//! prompts and the reports set the two side by side.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{assert_success, json_file, measured, show, turnbench};
use serde_json::Value;
use turnbench::sim::{self, SimConfig};

fn prompt_hashes(dir: &Path) -> BTreeMap<(String, u64), String> {
    let text = std::fs::read_to_string(dir.join("transcripts.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|t| t["warmup"] != true)
        .map(|t| {
            ((t["conversation_id"].as_str().unwrap().to_string(), t["turn"].as_u64().unwrap()), t["prompt_sha256"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn a_second_endpoint_gets_the_same_prompts_and_a_side_by_side_report() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fast = rt.block_on(sim::spawn(SimConfig::instant())).unwrap();
    let mut slow_config = SimConfig::instant();
    slow_config.latency.overhead_ms = 40.0;
    slow_config.model_name = "other-model".into();
    let slow = rt.block_on(sim::spawn(slow_config)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let out = turnbench(tmp.path())
        .args(["run", "--endpoint", &fast.base_url(), "--endpoint", &slow.base_url(), "--label", "fast", "--label", "slow"])
        .args(["--max-conversations", "3", "--calibrate-secs", "0", "--results-dir", results.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out);
    let dir: PathBuf = std::fs::read_dir(&results).unwrap().next().unwrap().unwrap().path();
    assert!(dir.file_name().unwrap().to_str().unwrap().ends_with("_fast"), "{dir:?}");
    let b = dir.join("vs-slow");
    assert_eq!(json_file(b.join("manifest.json"))["endpoint"].as_str(), Some(slow.base_url().as_str()));
    assert_eq!(json_file(b.join("manifest.json"))["model"], "other-model", "each endpoint is asked its own model");
    let (ha, hb) = (prompt_hashes(&dir), prompt_hashes(&b));
    assert!(!ha.is_empty());
    assert_eq!(ha, hb, "the second endpoint got exactly the first one's prompts");
    assert_eq!(measured(&dir).len(), measured(&b).len());
    let cmp = std::fs::read_to_string(dir.join("compare-vs-slow.md")).unwrap();
    assert!(cmp.contains("vs-slow"), "{cmp}");
    assert!(dir.join("compare-vs-slow.html").is_file());
    let ttft = |d: &Path| json_file(d.join("summary.json"))["overall"]["ttft_ms"]["p50"].as_f64().unwrap();
    assert!(ttft(&b) > ttft(&dir) + 30.0, "the slow endpoint's TTFT shows: {} vs {}", ttft(&b), ttft(&dir));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vs-slow"), "{}", show(&out));
}

#[test]
fn endpoint_comparisons_the_plan_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = ("http://127.0.0.1:9", "http://127.0.0.1:10");
    for (args, expect) in [
        (vec!["--endpoint", a, "--endpoint", b, "--label", "x"], "one label per endpoint"),
        (vec!["--endpoint", a, "--endpoint", b, "--label", "x", "--label", "x"], "given twice"),
        (vec!["--endpoint", a, "--endpoint", b, "--concurrency", "2"], "single-user"),
        (vec!["--endpoint", a, "--label", "x", "--label", "y"], "one endpoint"),
        (vec!["--endpoint", a, "--endpoint", "http://other.example:8000", "--api-key", "k"], "another host"),
        (vec!["--endpoint", &format!("{a}/v1/completions"), "--endpoint", &format!("{b}/v1/chat/completions")], "same prompts"),
    ] {
        let out = turnbench(tmp.path()).arg("run").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(expect), "{args:?}: {}", show(&out));
    }
}
