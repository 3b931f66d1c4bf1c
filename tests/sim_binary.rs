//! The real binary: `turnbench sim --port 0` prints its URL first, serves, and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;
use common::Guard;

#[test]
fn sim_binary_prints_url_serves_and_exits_cleanly_on_sigterm() {
    // Guarded: a simulator serves until it is told to stop, so a failed assertion must kill it.
    let mut child = Guard::spawn(
        Command::new(env!("CARGO_BIN_EXE_turnbench"))
            .args(["sim", "--port", "0", "--profile", "instant", "--model-name", "bin-model"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut line = String::new();
    BufReader::new(child.child().stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim_end().to_string();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url:?}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::get(format!("{url}/health")).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = reqwest::get(format!("{url}/v1/models")).await.unwrap().json().await.unwrap();
        assert_eq!(v["data"][0]["id"], "bin-model");
    });

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sim_binary_rejects_an_unknown_profile_key_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "overhead_ms = 1.0\nwarp_speed = 9\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turnbench"))
        .args(["sim", "--port", "0", "--profile", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("warp_speed"), "{err}");
    assert!(out.stdout.is_empty());
}
