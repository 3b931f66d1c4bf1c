//! `run --prompt-mode completion` end to end through the real binary against the simulator: each
//! turn's prompt is rendered locally with the chat template, sent to /v1/completions, and the
//! recorded prompt's token count equals the server's `usage.prompt_tokens`.
//!
//! The same check against real vLLM is in `tests/vllm_real.rs`.

mod common;

use std::process::Command;

use common::{records, Suite, BIN};
use serde_json::{json, Value};

fn suite() -> Suite {
    let turns: Vec<Value> = (1..=3)
        .map(|n| json!({"user": format!("Question {n}: how does the prefix cache behave on turn {n}?"), "max_tokens": 12}))
        .collect();
    Suite::new(
        json!([
            {"id": "chat-a", "title": "a", "tags": ["qa"], "system": "You answer briefly.", "turns": turns},
            {"id": "chat-b", "title": "b", "tags": ["qa"], "turns": [{"user": "Hello there", "max_tokens": 8}, {"user": "And again", "max_tokens": 8}]}
        ]),
        json!([]),
    )
}

/// `turnbench run` on the managed simulator (zero latency).
fn run(suite: &Suite, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--engine", "sim", "--engine-arg=--profile=instant", "--warmup=1"];
    args.extend(extra);
    suite.run(&args)
}

#[test]
fn completion_mode_records_the_rendered_prompt_and_its_tokens_match_usage() {
    let dir = suite();
    let out = run(&dir, &["--prompt-mode", "completion", "--chat-template", "chatml"]);
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let all = records(&dir.results());
    let turns: Vec<&Value> = all.iter().filter(|r| r["warmup"] == false).collect();
    assert_eq!(turns.len(), 5);
    for t in &turns {
        assert_eq!(t["status"], "ok", "{t}");
        let prompt = &t["prompt"];
        assert_eq!(prompt["mode"], "completion");
        assert_eq!(prompt["template"], "templates/chatml.jinja");
        let tokens = prompt["tokens"].as_u64().expect("prompt tokens recorded");
        assert_eq!(Some(tokens), t["usage"]["prompt_tokens"].as_u64(), "turn {}: {t}", t["turn"]);
        assert!(prompt["chars"].as_u64().unwrap() > 20);
        assert_eq!(prompt["sha256"].as_str().unwrap().len(), 64);
    }
    // History grows turn by turn, and the cache still sees each previous prompt as a prefix.
    let a: Vec<&&Value> = turns.iter().filter(|t| t["conversation_id"] == "chat-a").collect();
    assert!(a[1]["prompt"]["tokens"].as_u64() > a[0]["prompt"]["tokens"].as_u64());
    assert!(a[2]["cache"]["common_prefix_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn chat_mode_records_no_rendered_prompt() {
    let dir = suite();
    let out = run(&dir, &["--max-conversations", "1"]);
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(records(&dir.results()).iter().all(|r| r.get("prompt").is_none()));
}

#[test]
fn completion_mode_without_a_template_is_a_usage_error() {
    let dir = suite();
    let out = run(&dir, &["--prompt-mode", "completion"]);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--chat-template"));
    let out = run(&dir, &["--chat-template", "chatml"]);
    assert_eq!(out.status.code(), Some(2), "chat mode with --chat-template");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--chat-template applies to --prompt-mode completion only"), "{err}");
}

#[test]
fn template_render_shows_a_turn_prompt() {
    let dir = suite();
    let out = Command::new(BIN)
        .args(["template", "render", "--template", "chatml", "--turn", "2", "--data"])
        .arg(dir.path("conversations.json"))
        .arg("--rag-data")
        .arg(dir.path("rag.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("<|im_start|>system\nYou answer briefly.<|im_end|>\n<|im_start|>user\nQuestion 1"), "{text}");
    assert!(text.contains("<|im_start|>assistant\n[answer to turn 1]<|im_end|>"), "{text}");
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
}

#[test]
fn a_template_that_cannot_render_the_suite_fails_before_the_benchmark() {
    let dir = suite();
    let template = dir.path("no-system.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('system prompts are not supported') }}{% endif %}{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let out = run(&dir, &["--prompt-mode", "completion", "--chat-template", template.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("system prompts are not supported") && stderr.contains("chat-a"), "{stderr}");
    assert!(!dir.path("results").exists() || std::fs::read_dir(dir.path("results")).unwrap().next().is_none());
}
