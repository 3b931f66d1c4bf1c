//! `turnbench setup` through the real binary: HF_HOME, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE
//! come from the environment of the child process (the test's own environment is not touched).

mod setup_hub;

use std::path::Path;
use std::process::Output;

use setup_hub::{start, tiny_files, Hub, COMMIT, REPO};

const BIN: &str = env!("CARGO_BIN_EXE_turnbench");

async fn setup(hf_home: &Path, endpoint: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("setup")
        .args(args)
        .arg("--quiet")
        .env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_TOKEN")
        .stdin(std::process::Stdio::null());
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().await.unwrap()
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_downloads_into_hf_home_with_the_token_and_prints_the_run_command() {
    let (endpoint, hub) = start(Hub { files: tiny_files(), token: Some("hf_cli".into()), ..Default::default() }).await;
    let home = tempfile::tempdir().unwrap();

    let out = setup(home.path(), &endpoint, None, &[REPO, "--include", "*.json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HF_TOKEN"), "{}", text(&out));

    let out = setup(home.path(), &endpoint, Some("hf_cli"), &[REPO, "--include", "*.json", "--revision", "main"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("next: turnbench run --engine vllm --model {REPO}")), "{stdout}");
    assert!(stdout.contains("the model's own chat template"), "{stdout}");
    let snapshot = home.path().join("hub/models--tiny-org--tiny-model/snapshots").join(COMMIT);
    assert!(snapshot.join("config.json").is_file() && snapshot.join("tokenizer_config.json").is_file());
    assert!(hub.lock().unwrap().auth_seen.iter().any(|a| a.as_deref() == Some("Bearer hf_cli")));

    // Offline through the environment variable: found in the cache, the hub is not asked.
    let asked = hub.lock().unwrap().auth_seen.len();
    let mut cmd = tokio::process::Command::new(BIN);
    let out = cmd
        .args(["setup", REPO, "--include", "*.json", "--quiet"])
        .env("HF_HOME", home.path())
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HUB_CACHE")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.lock().unwrap().auth_seen.len(), asked);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_the_catalog_and_what_is_downloaded() {
    let home = tempfile::tempdir().unwrap();
    // A model another tool downloaded earlier, in Python huggingface_hub's layout.
    let folder = home.path().join("hub/models--Qwen--Qwen2.5-7B-Instruct");
    std::fs::create_dir_all(folder.join("snapshots").join(COMMIT)).unwrap();
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), COMMIT).unwrap();
    std::fs::write(folder.join("snapshots").join(COMMIT).join("model.safetensors"), vec![0u8; 3 * 1024 * 1024]).unwrap();

    let out = setup(home.path(), "http://127.0.0.1:9", None, &["--list"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["phi-3.5-mini-awq", "llama-3.1-8b", "qwen2.5-7b", "mistral-7b-v0.2", "recommended", "gated"] {
        assert!(stdout.contains(name), "{name} missing:\n{stdout}");
    }
    let qwen = stdout.lines().find(|l| l.contains("qwen2.5-7b")).unwrap();
    assert!(qwen.contains("3.0 MiB"), "{qwen}");
    let llama = stdout.lines().find(|l| l.contains("llama-3.1-8b")).unwrap();
    assert!(llama.contains(" - "), "{llama}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    for name in ["not-a-catalog-name", "../../etc/passwd"] {
        let out = setup(home.path(), "http://127.0.0.1:9", None, &[name]).await;
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("catalog names"), "{}", text(&out));
    }
}
