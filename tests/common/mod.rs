//! What the end-to-end tests share: a temporary folder holding a suite, `turnbench run` pointed
//! at it, and readers for the results folder it writes.
#![allow(dead_code)] // each test binary uses its own part of this

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_turnbench");

pub struct Suite {
    dir: tempfile::TempDir,
}

impl Suite {
    /// `conversations.json` and `rag.json` (documents) in a new temporary folder.
    pub fn new(conversations: Value, documents: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let suite = json!({"version": 1, "conversations": conversations});
        std::fs::write(dir.path().join("conversations.json"), serde_json::to_string_pretty(&suite).unwrap()).unwrap();
        let rag = json!({"version": 1, "documents": documents});
        std::fs::write(dir.path().join("rag.json"), serde_json::to_string_pretty(&rag).unwrap()).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `turnbench run` on this suite, results under `results/`, then `extra`.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--data")
            .arg(self.path("conversations.json"))
            .arg("--rag-data")
            .arg(self.path("rag.json"))
            .arg("--results-dir")
            .arg(self.path("results"))
            .args(extra)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }

    /// The one results folder a run created.
    pub fn results(&self) -> PathBuf {
        let entries: Vec<PathBuf> =
            std::fs::read_dir(self.path("results")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "expected one results folder, found {entries:?}");
        entries.into_iter().next().unwrap()
    }

    /// Measured (non-warm-up) records in `turns.jsonl` so far; 0 before the folder exists.
    pub fn records_so_far(&self) -> usize {
        std::fs::read_dir(self.path("results"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.unwrap().path().join("turns.jsonl")).ok())
            .map(|t| t.lines().filter(|l| l.contains("\"warmup\":false")).count())
            .unwrap_or(0)
    }

    /// Waits until `n` measured turns are on disk; fails if `run` ends first or time runs out.
    pub fn wait_for_records(&self, run: &mut std::process::Child, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.records_so_far() < n {
            assert!(run.try_wait().unwrap().is_none(), "turnbench ended before {n} turns were recorded");
            assert!(Instant::now() < deadline, "{n} turns not recorded within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("turns.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Records that count in statistics (warm-ups left out).
pub fn measured(dir: &Path) -> Vec<Value> {
    records(dir).into_iter().filter(|r| r["warmup"] == false).collect()
}

pub fn json_file(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

pub fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_success(out: &Output) {
    assert!(out.status.success(), "turnbench failed: {}", show(out));
}
