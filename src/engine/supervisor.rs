//! Supervises a server process turnbench starts: its own process group, a private TMPDIR, the
//! bound URL (read from its first stdout line, or known in advance), readiness polled over HTTP,
//! its log kept, and a teardown that leaves no member of the group alive.
//!
//! Nothing survives turnbench: the server gets SIGTERM when turnbench dies (even by SIGKILL)
//! through the parent-death signal, which lets vLLM's API server take its EngineCore down with
//! it; and every group is recorded in a registry while it runs, so groups left over by a
//! turnbench that could not clean up are terminated at the next start.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where the server's address comes from.
#[derive(Debug, Clone)]
pub enum Address {
    /// The server prints its base URL as its first stdout line (`turnbench sim --port 0`).
    FirstStdoutLine,
    /// The caller chose it (e.g. vLLM started with `--port N`).
    Known(String),
}

/// How to start one server.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub address: Address,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    pub startup_timeout: Duration,
    /// Model that `/v1/models` must list before the server counts as ready.
    pub model: Option<String>,
    pub api_key: Option<String>,
}

/// A running server. Dropping it kills the whole process group at once; [`shutdown`]
/// (SIGTERM, grace, SIGKILL, verified) is the orderly way.
///
/// [`shutdown`]: ServerGuard::shutdown
pub struct ServerGuard {
    pgid: Option<Pid>,
    pid: u32,
    exited: watch::Receiver<Option<ExitStatus>>,
    pub base_url: String,
    pub log_path: PathBuf,
    pub time_to_ready: Duration,
    registry_entry: Option<PathBuf>,
    // Deleted (with vLLM's sockets and lock files) after the group is gone.
    _tmpdir: Option<tempfile::TempDir>,
}

impl ServerGuard {
    /// PID of the process turnbench started (vLLM's API server).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Follows the started process's exit.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exited.clone()
    }

    /// The exit status, once the started process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exited.borrow()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// SIGTERM to the group, up to `grace` for it to exit, then SIGKILL; returns once no member
    /// is left, with how long that took.
    pub async fn shutdown(mut self, grace: Duration) -> Result<Duration> {
        let started = Instant::now();
        self.terminate(grace).await?;
        Ok(started.elapsed())
    }

    async fn terminate(&mut self, grace: Duration) -> Result<()> {
        let Some(pgid) = self.pgid.take() else { return Ok(()) };
        let result = terminate_group(pgid, grace).await;
        if let Some(entry) = self.registry_entry.take() {
            let _ = std::fs::remove_file(entry);
        }
        result
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // Last resort (panics, early returns): no grace, but nothing survives us.
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
            if let Some(entry) = self.registry_entry.take() {
                let _ = std::fs::remove_file(entry);
            }
        }
    }
}

/// SIGTERM to the group, `grace` for it to go, SIGKILL, then wait until it is empty.
async fn terminate_group(pgid: Pid, grace: Duration) -> Result<()> {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if group_alive(pgid) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let give_up = Instant::now() + Duration::from_secs(10);
    while group_alive(pgid) {
        if Instant::now() > give_up {
            bail!("process group {pgid} still has members 10 s after SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// True while any process of group `pgid` exists (zombies of our own child are reaped by the
/// waiter task, so they do not count for long).
pub fn group_alive(pgid: Pid) -> bool {
    killpg(pgid, None).is_ok()
}

/// Starts `spec.command` in its own process group and waits until it is ready: its address is
/// known, `/health` answers 200 and `/v1/models` lists the model. Fails at once, quoting the
/// log, if the process exits while starting.
pub async fn launch(spec: &LaunchSpec, http: &reqwest::Client) -> Result<ServerGuard> {
    reap_stale_groups();
    let started = Instant::now();
    let (program, args) = spec.command.split_first().context("empty server command")?;
    if let Some(dir) = spec.log_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = std::fs::File::create(&spec.log_path)
        .with_context(|| format!("cannot create {}", spec.log_path.display()))?;
    let tmpdir = tempfile::Builder::new()
        .prefix("turnbench-engine-")
        .tempdir()
        .context("cannot create a TMPDIR for the server")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("TMPDIR", tmpdir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.try_clone()?))
        .process_group(0)
        .kill_on_drop(false);
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // turnbench may have died between fork and prctl: then nobody would signal us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{program}`"))?;
    let pid = child.id().context("server exited before its PID was read")?;
    let pgid = Pid::from_raw(pid as i32);
    let stdout = child.stdout.take().context("server stdout not captured")?;
    let (tx, exited) = watch::channel(None);
    tokio::spawn(async move {
        let status = child.wait().await.ok();
        let _ = tx.send(status);
    });
    let mut guard = ServerGuard {
        pgid: Some(pgid),
        pid,
        exited,
        base_url: String::new(),
        log_path: spec.log_path.clone(),
        time_to_ready: Duration::ZERO,
        registry_entry: register_group(pgid, &spec.command),
        _tmpdir: Some(tmpdir),
    };

    let deadline = started + spec.startup_timeout;
    let mut lines = BufReader::new(stdout).lines();
    guard.base_url = match &spec.address {
        Address::Known(url) => url.clone(),
        Address::FirstStdoutLine => match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("http://") || line.starts_with("https://") => line.trim().to_string(),
            Ok(Ok(Some(line))) => bail!(
                "`{program}` printed {line:?} instead of its address; log {}:\n{}",
                spec.log_path.display(),
                guard.log_tail(20)
            ),
            Ok(_) => {
                let status = wait_exit(&mut guard).await;
                bail!("{}", start_failure(program, &status, &guard))
            }
            Err(_) => bail!(
                "`{program}` did not print its address within {:?}; log {}:\n{}",
                spec.startup_timeout,
                spec.log_path.display(),
                guard.log_tail(20)
            ),
        },
    };
    let mut log_writer = tokio::fs::File::from_std(log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = log_writer.write_all(line.as_bytes()).await;
            let _ = log_writer.write_all(b"\n").await;
        }
    });
    wait_ready(&mut guard, spec, http, deadline, program).await?;
    guard.time_to_ready = started.elapsed();
    Ok(guard)
}

fn start_failure(program: &str, status: &str, guard: &ServerGuard) -> String {
    format!(
        "`{program}` exited while starting ({status}); last lines of {}:\n{}",
        guard.log_path.display(),
        guard.log_tail(20)
    )
}

async fn wait_exit(guard: &mut ServerGuard) -> String {
    let wait = guard.exited.wait_for(|s| s.is_some());
    match tokio::time::timeout(Duration::from_secs(2), wait).await {
        Ok(Ok(s)) => s.map(|s| s.to_string()).unwrap_or_default(),
        _ => "still running".into(),
    }
}

/// Polls `/health`, then `/v1/models`, until both answer or the deadline passes; fails at once
/// if the process exits.
async fn wait_ready(
    guard: &mut ServerGuard,
    spec: &LaunchSpec,
    http: &reqwest::Client,
    deadline: Instant,
    program: &str,
) -> Result<()> {
    let base = guard.base_url.clone();
    let mut delay = Duration::from_millis(10);
    loop {
        if guard.exit_status().is_some() {
            // Let the log catch up with the process's last words.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let status = wait_exit(guard).await;
            bail!("{}", start_failure(program, &status, guard));
        }
        if probe_ready(http, &base, spec).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "server at {base} not ready within {:?}; last lines of {}:\n{}",
                spec.startup_timeout,
                spec.log_path.display(),
                guard.log_tail(20)
            );
        }
        let mut exited = guard.exited.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = exited.wait_for(|s| s.is_some()) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

async fn probe_ready(http: &reqwest::Client, base: &str, spec: &LaunchSpec) -> bool {
    let get = |path: &str| {
        crate::client::authed(http.get(format!("{base}{path}")).timeout(Duration::from_secs(5)), spec.api_key.as_deref()).send()
    };
    match get("/health").await {
        Ok(r) if r.status().is_success() => {}
        _ => return false,
    }
    let Ok(resp) = get("/v1/models").await else { return false };
    let Ok(models) = resp.json::<serde_json::Value>().await else { return false };
    match &spec.model {
        None => true,
        Some(model) => models["data"]
            .as_array()
            .is_some_and(|list| list.iter().any(|m| m["id"].as_str() == Some(model))),
    }
}

/// Last `n` lines of a log file (empty when unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (bound then released: a server started right after normally
/// gets it; a lost race shows as the server failing to bind, which callers retry).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// The registry of running groups: one file per group, removed at teardown.

/// Folder of the registry: `$TURNBENCH_STATE_DIR`, else `$XDG_STATE_HOME/turnbench/servers`,
/// else `~/.local/state/turnbench/servers`.
pub fn registry_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TURNBENCH_STATE_DIR") {
        return Some(PathBuf::from(dir).join("servers"));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("turnbench/servers"))
}

fn register_group(pgid: Pid, command: &[String]) -> Option<PathBuf> {
    let dir = registry_dir()?;
    std::fs::create_dir_all(&dir).ok()?;
    let entry = dir.join(format!("{pgid}.json"));
    let record = serde_json::json!({
        "pgid": pgid.as_raw(),
        "owner_pid": std::process::id(),
        "program": command.first(),
        "started": jiff::Timestamp::now().to_string(),
    });
    std::fs::write(&entry, record.to_string()).ok()?;
    Some(entry)
}

/// Terminates groups recorded by a turnbench process that is gone (killed before it could tear
/// its servers down). A group is only signalled when its recorded owner no longer exists, so
/// concurrent turnbench runs leave each other alone.
pub fn reap_stale_groups() -> Vec<i32> {
    let Some(dir) = registry_dir() else { return vec![] };
    let Ok(entries) = std::fs::read_dir(&dir) else { return vec![] };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let (Some(pgid), Some(owner)) = (record["pgid"].as_i64(), record["owner_pid"].as_i64()) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let pgid = Pid::from_raw(pgid as i32);
        if group_alive(pgid) {
            let _ = killpg(pgid, Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(500));
            let _ = killpg(pgid, Signal::SIGKILL);
            reaped.push(pgid.as_raw());
        }
        let _ = std::fs::remove_file(&path);
    }
    reaped
}
