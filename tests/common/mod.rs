//! What the end-to-end tests share: a temporary folder holding a suite, `turnbench run` pointed
//! at it, and readers for the results folder it writes.
#![allow(dead_code)] // each test binary uses its own part of this

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_turnbench");

/// `turnbench` with this test's own state dir under `tmp` (so server groups it records, and the
/// stale ones it reaps, are this test's alone) and none of the developer's TURNBENCH_* knobs.
pub fn turnbench(tmp: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    isolate(&mut cmd, tmp);
    cmd
}

/// Points `cmd` at a state dir under `tmp` and drops the environment knobs a developer's shell
/// may carry into a test run (an API key would be sent everywhere; a GPU script would fake GPUs).
pub fn isolate(cmd: &mut Command, tmp: &Path) {
    cmd.env("TURNBENCH_STATE_DIR", tmp.join("state"))
        .env_remove("TURNBENCH_API_KEY")
        .env_remove("TURNBENCH_GPU_SCRIPT");
}

/// A child killed (SIGKILL) and reaped when dropped, unless already waited for: a failed assertion
/// must not leave a turnbench (or a simulator) running after the test.
pub struct Guard(Option<std::process::Child>);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(Some(cmd.spawn().expect("spawn")))
    }

    pub fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    pub fn wait_with_output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child().wait().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`; panics with `what` after `within`.
pub fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process groups turnbench recorded (and has not yet removed) in the state dir under `tmp`
/// (see `turnbench`): `state/servers/<pgid>.json`.
pub fn recorded_groups(tmp: &Path) -> Vec<i32> {
    std::fs::read_dir(tmp.join("state").join("servers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_str::<Value>(&std::fs::read_to_string(e.path()).ok()?).ok())
        .filter_map(|v| v["pgid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

/// Live (non-zombie) members of process group `pgid`, from /proc/*/stat.
pub fn group_members(pgid: i32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            (rest[0] != "Z" && rest[2].parse::<i32>().ok()? == pgid).then_some(pid)
        })
        .collect()
}

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

    /// The temporary folder itself (its `state/` is the state dir of every command from `command`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `turnbench run` on this suite, results under `results/`, then `extra`.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = turnbench(self.dir.path());
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
            .map(|t| t.lines().filter(|l| !l.contains("\"warmup\":true")).count())
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

/// The records of `dir/turns.jsonl` as turnbench reads them (`derived` computed, every field
/// present), as JSON.
pub fn records(dir: &Path) -> Vec<Value> {
    let (records, _) = turnbench::core::record::read_records(&dir.join("turns.jsonl")).unwrap();
    records
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap();
            v["derived"] = serde_json::to_value(&r.derived).unwrap();
            v["warmup"] = r.warmup.into();
            v
        })
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
