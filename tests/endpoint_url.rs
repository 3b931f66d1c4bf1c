//! `--endpoint` as people paste it: a base URL, `…/v1`, or the full `…/v1/chat/completions` /
//! `…/v1/completions` URL (which also picks the prompt mode), against the simulator over real
//! HTTP (port 0), through the real binary.

mod common;

use common::{assert_success, json_file, measured, show, Suite};
use serde_json::json;
use turnbench::sim::{spawn, SimConfig};

fn suite() -> Suite {
    let turns: Vec<_> = (0..2).map(|i| json!({"user": format!("Question {i} about caches."), "max_tokens": 6})).collect();
    Suite::new(json!([{"id": "c1", "title": "t", "tags": ["qa"], "turns": turns}]), json!([]))
}

#[test]
fn a_run_with_the_full_chat_completions_url_succeeds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(spawn(SimConfig::instant())).unwrap();
    for url in [format!("{}/v1/chat/completions", sim.base_url()), format!("{}/v1/", sim.base_url())] {
        let fx = suite();
        let out = fx.run(&["--endpoint", &url, "--warmup=0"]);
        assert_success(&out);
        let dir = fx.results();
        let turns = measured(&dir);
        assert_eq!(turns.len(), 2, "{url}");
        assert!(turns.iter().all(|t| t["status"] == "ok"), "{url}: {turns:?}");
        let manifest = json_file(dir.join("manifest.json"));
        assert_eq!(manifest["settings"]["prompt_mode"], "chat", "{url}");
    }
}

#[test]
fn a_completions_url_picks_completion_mode_and_a_conflict_is_a_usage_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(spawn(SimConfig::instant())).unwrap();
    let completions = format!("{}/v1/completions", sim.base_url());
    let fx = suite();
    let out = fx.run(&["--endpoint", &completions, "--warmup=0", "--chat-template", "chatml"]);
    assert_success(&out);
    let dir = fx.results();
    let turns = measured(&dir);
    assert!(turns.iter().all(|t| t["status"] == "ok" && t["prompt"]["mode"] == "completion"), "{turns:?}");

    let chat = format!("{}/v1/chat/completions", sim.base_url());
    let out = suite().run(&["--endpoint", &chat, "--prompt-mode", "completion", "--chat-template", "chatml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--prompt-mode completion conflicts with --endpoint"), "{err}");

    let out = suite().run(&["--endpoint", &format!("{}/v1/models", sim.base_url())]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/v1/models is not an endpoint"));
}
