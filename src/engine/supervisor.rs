//! Supervises a server process turnbench started: its own process group, the bound URL read from
//! its first stdout line, readiness polled over HTTP, logs kept, and a teardown that leaves no
//! member of the group alive.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How to start one server.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    pub startup_timeout: Duration,
    /// Model that `/v1/models` must list before the server counts as ready.
    pub model: Option<String>,
    pub api_key: Option<String>,
}

/// A running server. Dropping it tears the whole process group down.
pub struct ServerGuard {
    child: Option<Child>,
    pgid: Option<Pid>,
    pub base_url: String,
    pub log_path: PathBuf,
    pub time_to_ready: Duration,
}

impl ServerGuard {
    /// Pid of the server's root process (also its process-group id); `None` once torn down.
    pub fn pid(&self) -> Option<u32> {
        self.pgid.map(|p| p.as_raw() as u32)
    }

    /// Whether the server process has exited.
    pub fn has_exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL; returns once no member is left.
    pub async fn shutdown(mut self, grace: Duration) -> Result<()> {
        self.terminate(grace).await
    }

    async fn terminate(&mut self, grace: Duration) -> Result<()> {
        let Some(pgid) = self.pgid.take() else { return Ok(()) };
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        if let Some(child) = &mut self.child {
            let _ = tokio::time::timeout_at(deadline, child.wait()).await;
        }
        while group_alive(pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if group_alive(pgid) {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) {
            if Instant::now() > give_up {
                bail!("process group {pgid} still has members after SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // Last resort (panics, early returns): no grace, but nothing survives us.
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// True while any process in group `pgid` exists.
fn group_alive(pgid: Pid) -> bool {
    // Signal 0 checks existence; ESRCH means the group is empty.
    killpg(pgid, None).is_ok()
}

/// Starts `spec.command` in its own process group and waits until it is ready: its first stdout
/// line is its base URL, `/health` answers 200 and `/v1/models` lists the model.
pub async fn launch(spec: &LaunchSpec, http: &reqwest::Client) -> Result<ServerGuard> {
    let started = Instant::now();
    let (program, args) = spec.command.split_first().context("empty server command")?;
    if let Some(dir) = spec.log_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = std::fs::File::create(&spec.log_path)
        .with_context(|| format!("cannot create {}", spec.log_path.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.try_clone()?))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{program}`"))?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let stdout = child.stdout.take().context("server stdout not captured")?;
    let mut guard = ServerGuard {
        child: Some(child),
        pgid,
        base_url: String::new(),
        log_path: spec.log_path.clone(),
        time_to_ready: Duration::ZERO,
    };

    // First stdout line = bound base URL; the rest of stdout goes to the log.
    let mut lines = BufReader::new(stdout).lines();
    let deadline = started + spec.startup_timeout;
    let first = tokio::time::timeout_at(deadline, lines.next_line()).await;
    let base_url = match first {
        Ok(Ok(Some(line))) if line.starts_with("http://") || line.starts_with("https://") => line.trim().to_string(),
        Ok(Ok(Some(line))) => bail!(
            "`{program}` printed {line:?} instead of its address; log {}:\n{}",
            spec.log_path.display(),
            guard.log_tail(20)
        ),
        Ok(_) => {
            let status = wait_status(&mut guard).await;
            bail!(
                "`{program}` exited while starting ({status}); last lines of {}:\n{}",
                spec.log_path.display(),
                guard.log_tail(20)
            )
        }
        Err(_) => bail!(
            "`{program}` did not print its address within {:?}; log {}:\n{}",
            spec.startup_timeout,
            spec.log_path.display(),
            guard.log_tail(20)
        ),
    };
    let mut log_writer = tokio::fs::File::from_std(log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = log_writer.write_all(line.as_bytes()).await;
            let _ = log_writer.write_all(b"\n").await;
        }
    });
    guard.base_url = base_url;
    wait_ready(&mut guard, spec, http, deadline).await?;
    guard.time_to_ready = started.elapsed();
    Ok(guard)
}

async fn wait_status(guard: &mut ServerGuard) -> String {
    match &mut guard.child {
        Some(c) => match tokio::time::timeout(Duration::from_secs(2), c.wait()).await {
            Ok(Ok(s)) => s.to_string(),
            _ => "still running".into(),
        },
        None => "gone".into(),
    }
}

/// Polls `/health`, then `/v1/models`, until both answer or the deadline passes; fails at once
/// if the process exits.
async fn wait_ready(guard: &mut ServerGuard, spec: &LaunchSpec, http: &reqwest::Client, deadline: Instant) -> Result<()> {
    let base = guard.base_url.clone();
    let mut delay = Duration::from_millis(10);
    loop {
        if guard.has_exited() {
            let status = wait_status(guard).await;
            bail!(
                "server exited while starting ({status}); last lines of {}:\n{}",
                spec.log_path.display(),
                guard.log_tail(20)
            );
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
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

async fn probe_ready(http: &reqwest::Client, base: &str, spec: &LaunchSpec) -> bool {
    let get = |path: &str| {
        let mut req = http.get(format!("{base}{path}")).timeout(Duration::from_secs(5));
        if let Some(key) = &spec.api_key {
            req = req.bearer_auth(key);
        }
        req.send()
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
