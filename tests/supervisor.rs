//! The supervisor through the real binary, with small fake server programs and the simulator:
//! a server that exits at once, one that never becomes ready, a port lost to a race, Ctrl-C
//! during start-up, turnbench killed with SIGKILL, and groups left by a killed turnbench.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, Suite, BIN};
use serde_json::{json, Value};

/// A one-conversation suite, plus a private registry of server groups for the run (the Suite's
/// `state/`, which every command of it uses).
struct Fixture {
    suite: Suite,
}

impl Fixture {
    fn new(turns: usize, max_tokens: u32) -> Self {
        let turns: Vec<Value> =
            (0..turns).map(|n| json!({"user": format!("Question {n} about the service?"), "max_tokens": max_tokens})).collect();
        let suite = Suite::new(json!([{"id": "c1", "title": "t", "tags": ["qa"], "turns": turns}]), json!([]));
        std::fs::create_dir(suite.path("state")).unwrap();
        Self { suite }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.suite.path(name)
    }

    /// An executable script in the fixture folder.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = self.suite.command(extra);
        cmd.env("TURNBENCH_BIN", BIN);
        cmd
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; it is dead for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

fn read_pid(path: &Path, within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "{} never written", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A profile with a short start-up timeout, as a file.
fn quick_profile(fx: &Fixture, seconds: u64) -> String {
    let path = fx.path("quick.toml");
    std::fs::write(&path, format!("enable_prefix_caching = true\nstartup_timeout_s = {seconds}\n")).unwrap();
    path.display().to_string()
}

/// A fake `vllm` that serves with the simulator on the port it is given.
const FAKE_VLLM_SIM: &str = r#"model="$2"; port=""; prev=""
for a in "$@"; do [[ "$prev" == "--port" ]] && port="$a"; prev="$a"; done
exec "$TURNBENCH_BIN" sim --port "$port" --model-name "$model" --profile instant"#;

#[test]
fn a_server_that_exits_at_once_fails_fast_quoting_its_log() {
    let fx = Fixture::new(2, 4);
    let fake = fx.script("vllm", "echo 'vllm serve: error: argument --max-num-seqs: invalid int value: banana' >&2\nexit 2");
    let out = fx.run(&["--engine", "vllm", "--vllm-cmd", fake.to_str().unwrap(), "--model", "m"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("exited while starting") && err.contains("invalid int value: banana"), "{err}");
    // Fast: on the exit itself, not on the start-up timeout.
    assert!(!err.contains("not ready within"), "{err}");
}

#[test]
fn a_server_that_never_becomes_ready_times_out_and_is_killed() {
    let fx = Fixture::new(2, 4);
    let pid_file = fx.path("pid");
    let fake = fx.script("vllm", &format!("echo $$ > {}\nexec sleep 600", pid_file.display()));
    let profile = quick_profile(&fx, 2);
    let out = fx.run(&["--engine", "vllm", "--vllm-cmd", fake.to_str().unwrap(), "--model", "m", "--profile", &profile]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not ready within 2s"), "{}", stderr(&out));
    let pid = read_pid(&pid_file, Duration::from_secs(1));
    assert!(wait_gone(pid, Duration::from_secs(5)), "server process {pid} survived");
}

#[test]
fn a_port_lost_to_a_race_is_retried_on_another_port() {
    let fx = Fixture::new(2, 4);
    let marker = fx.path("first-try");
    let ports = fx.path("ports");
    let fake = fx.script(
        "vllm",
        &format!(
            "prev=''; for a in \"$@\"; do [[ \"$prev\" == --port ]] && echo \"$a\" >> {p}; prev=\"$a\"; done\n\
             if [[ ! -e {m} ]]; then touch {m}; echo 'OSError: [Errno 98] Address already in use' >&2; exit 1; fi\n{FAKE_VLLM_SIM}",
            p = ports.display(),
            m = marker.display()
        ),
    );
    let out = fx.run(&["--engine", "vllm", "--vllm-cmd", fake.to_str().unwrap(), "--model", "m", "--warmup=0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists(), "the first attempt ran");
    let ports: Vec<u16> = std::fs::read_to_string(&ports).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ports.len(), 2, "one failed attempt, one that served: {ports:?}");
    assert_ne!(ports[0], ports[1], "retried on another port");
}

#[test]
fn a_managed_vllm_command_is_served_and_logged() {
    let fx = Fixture::new(3, 4);
    let fake = fx.script("vllm", FAKE_VLLM_SIM);
    let out = fx.run(&["--engine", "vllm", "--vllm-cmd", fake.to_str().unwrap(), "--model", "m", "--warmup=0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = fx.suite.results();
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let cmd: Vec<&str> = manifest["engine_command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(cmd.windows(2).any(|w| w == ["--api-key", "<redacted>"]), "{cmd:?}");
    assert!(cmd.contains(&"--enable-prefix-caching") && cmd.contains(&"--max-num-seqs"), "{cmd:?}");
    let test = &manifest["tests"][0];
    assert_eq!(test["outcome"], "completed");
    assert!(test["time_to_ready_ms"].as_f64().unwrap() > 0.0);
    assert!(test["teardown_ms"].as_f64().is_some());
    let log = dir.join(test["server_log"].as_str().unwrap());
    assert!(log.is_file(), "{} kept", log.display());
    let registry: Vec<_> = std::fs::read_dir(fx.path("state/servers")).unwrap().collect();
    assert!(registry.is_empty(), "registry entries removed at teardown");
}

#[test]
fn ctrl_c_during_start_up_stops_the_server_and_exits_130() {
    let fx = Fixture::new(2, 4);
    let pid_file = fx.path("pid");
    let fake = fx.script("vllm", &format!("echo $$ > {}\nexec sleep 600", pid_file.display()));
    let mut child = Guard::spawn(
        fx.command(&["--engine", "vllm", "--vllm-cmd", fake.to_str().unwrap(), "--model", "m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let server = read_pid(&pid_file, Duration::from_secs(10));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.child().try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "turnbench did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert!(wait_gone(server, Duration::from_secs(5)), "server {server} survived Ctrl-C");
    assert!(!fx.path("results").exists(), "nothing ran, no results folder");
}

#[test]
fn sigkill_of_turnbench_takes_its_server_down() {
    let fx = Fixture::new(200, 64);
    let mut child = Guard::spawn(
        fx.command(&["--engine", "sim", "--warmup=0", "--engine-arg=--inter-token-ms=5"]).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    // The simulator is turnbench's only child.
    let deadline = Instant::now() + Duration::from_secs(20);
    let server = loop {
        let children = std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no server started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Serving: a turn is on disk.
    fx.suite.wait_for_records(child.child(), 1, Duration::from_secs(60));
    child.child().kill().unwrap();
    child.wait();
    assert!(wait_gone(server, Duration::from_secs(15)), "server {server} outlived a SIGKILLed turnbench");
}

#[test]
fn groups_left_by_a_killed_turnbench_are_reaped_at_the_next_start() {
    let fx = Fixture::new(1, 4);
    // A "server" in its own group, recorded as owned by a process that no longer exists.
    let mut orphan = Guard::spawn(Command::new("sleep").arg("600").process_group(0));
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_owner = gone.id();
    gone.wait().unwrap();
    std::fs::create_dir_all(fx.path("state/servers")).unwrap();
    let entry = json!({"pgid": orphan.id(), "owner_pid": dead_owner, "program": "vllm"});
    std::fs::write(fx.path(&format!("state/servers/{}.json", orphan.id())), entry.to_string()).unwrap();
    let out = fx.run(&["--engine", "sim", "--list-conversations"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(5);
    while orphan.child().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "stale group was not reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!fx.path(&format!("state/servers/{}.json", orphan.id())).exists());
}

#[test]
fn a_catalog_name_serves_the_downloaded_snapshot() {
    let fx = Fixture::new(2, 4);
    // A snapshot laid out as huggingface_hub (and `turnbench setup`) leave it.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = fx.path("hub/models--Qwen--Qwen2.5-7B-Instruct");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(snapshot.join("config.json"), "{}").unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let fake = fx.script("vllm", FAKE_VLLM_SIM);
    let out = fx
        .command(&["--engine", "vllm", "--vllm-cmd", fake.to_str().unwrap(), "--model", "qwen2.5-7b", "--warmup=0"])
        .env("HF_HUB_CACHE", fx.path("hub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = fx.suite.results();
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["engine_command"][2], snapshot.display().to_string());
    assert_eq!(manifest["model"], snapshot.display().to_string(), "the server serves the snapshot folder");
}
