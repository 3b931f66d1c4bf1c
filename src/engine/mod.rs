//! Engines: the server a run talks to. Managed engines (vLLM, the simulator) are started through
//! the [`supervisor`]; an external endpoint is used as it is.

pub mod supervisor;
pub mod vllm;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use supervisor::{Address, LaunchSpec, ServerGuard};
use vllm::VllmProfile;

/// Environment variable naming the `turnbench` binary used to start `turnbench sim`
/// (defaults to the running executable; tests that call `run()` in-process set it).
pub const SIM_BIN_ENV: &str = "TURNBENCH_SIM_BIN";

/// Attempts at starting vLLM when the chosen port was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub enum Engine {
    /// `turnbench sim` started as a child process.
    Sim { program: PathBuf, extra_args: Vec<String>, model_name: String },
    /// `vllm serve` started as a child process.
    Vllm {
        command: String,
        model: String,
        profile: Box<VllmProfile>,
        extra_args: Vec<String>,
        context_size: Option<u64>,
        /// Random per run: only turnbench can use the server.
        api_key: String,
        /// Set `VLLM_SERVER_DEV_MODE=1` so `/reset_prefix_cache` answers.
        dev_mode: bool,
    },
    /// A server someone else runs.
    External { base_url: String },
}

/// A server ready for requests. For managed engines it holds the process; dropping it kills
/// the server at once, [`stop`](Self::stop) tears it down in order.
pub struct RunningServer {
    pub base_url: String,
    pub guard: Option<ServerGuard>,
}

impl RunningServer {
    /// Orderly teardown (SIGTERM, grace, SIGKILL, verified); returns how long it took (zero for
    /// external servers, which are left alone).
    pub async fn stop(self) -> Result<Duration> {
        match self.guard {
            Some(g) => g.shutdown(Duration::from_secs(15)).await,
            None => Ok(Duration::ZERO),
        }
    }

    /// Watches the server process (managed engines only).
    pub fn process(&self) -> Option<ProcessWatch> {
        self.guard.as_ref().map(|g| ProcessWatch { exited: g.exit_watch(), log_path: g.log_path.clone() })
    }
}

/// Lets the replayer tell a failed request from a dead server.
#[derive(Debug, Clone)]
pub struct ProcessWatch {
    exited: watch::Receiver<Option<ExitStatus>>,
    log_path: PathBuf,
}

impl ProcessWatch {
    /// How the server exited, if it has.
    pub fn exit_status_now(&self) -> Option<ExitStatus> {
        *self.exited.borrow()
    }

    /// If the server exits within `wait`, says so with the last lines of its log.
    pub async fn death_note(&self, wait: Duration) -> Option<String> {
        let mut exited = self.exited.clone();
        let status = (*tokio::time::timeout(wait, exited.wait_for(|s| s.is_some())).await.ok()?.ok()?)?;
        // The log may trail the exit by a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some(format!(
            "server exited ({status}); last lines of {}:\n{}",
            self.log_path.display(),
            supervisor::log_tail(&self.log_path, 15)
        ))
    }
}

impl Engine {
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Sim { .. } => "sim",
            Engine::Vllm { .. } => "vllm",
            Engine::External { .. } => "external",
        }
    }

    /// The same engine with prefix caching off (`--ab prefix-caching`, arm B); `None` for an
    /// external server, whose cache turnbench cannot switch.
    pub fn without_prefix_caching(&self) -> Option<Engine> {
        let mut engine = self.clone();
        match &mut engine {
            Engine::Sim { extra_args, .. } => extra_args.push("--no-prefix-caching".into()),
            Engine::Vllm { profile, extra_args, .. } => {
                profile.enable_prefix_caching = false;
                extra_args.retain(|a| a != "--enable-prefix-caching");
            }
            Engine::External { .. } => return None,
        }
        Some(engine)
    }

    pub fn is_managed(&self) -> bool {
        !matches!(self, Engine::External { .. })
    }

    /// The key turnbench's requests must carry for a server it started.
    pub fn api_key(&self) -> Option<&str> {
        match self {
            Engine::Vllm { api_key, .. } => Some(api_key),
            _ => None,
        }
    }

    /// The command line that starts the managed server, secrets redacted (for the manifest).
    pub fn command(&self, seed: u64) -> Option<Vec<String>> {
        let mut cmd = self.command_on(0, seed)?;
        if let Some(pos) = cmd.iter().position(|a| a == "--api-key") {
            cmd[pos + 1] = "<redacted>".into();
        }
        if let Some(pos) = cmd.iter().position(|a| a == "--port") {
            cmd[pos + 1] = "<free port>".into();
        }
        Some(cmd)
    }

    fn command_on(&self, port: u16, seed: u64) -> Option<Vec<String>> {
        match self {
            Engine::Sim { program, extra_args, model_name } => {
                let mut cmd = vec![program.display().to_string(), "sim".into(), "--port".into(), "0".into()];
                cmd.extend(["--model-name".into(), model_name.clone(), "--seed".into(), seed.to_string()]);
                cmd.extend(extra_args.iter().cloned());
                Some(cmd)
            }
            Engine::Vllm { command, model, profile, extra_args, context_size, api_key, .. } => {
                let mut cmd = vec![command.clone(), "serve".into(), model.clone()];
                cmd.extend(["--host".into(), "127.0.0.1".into(), "--port".into(), port.to_string()]);
                cmd.extend(["--api-key".into(), api_key.clone(), "--seed".into(), seed.to_string()]);
                cmd.extend(profile.serve_args(*context_size));
                cmd.extend(extra_args.iter().cloned());
                Some(cmd)
            }
            Engine::External { .. } => None,
        }
    }

    /// Starts (managed) or names (external) the server for one test; its log goes to
    /// `log_dir/<test_name>.log`.
    pub async fn start(&self, test_name: &str, log_dir: &Path, http: &reqwest::Client, seed: u64) -> Result<RunningServer> {
        let log_path = log_dir.join(format!("{test_name}.log"));
        match self {
            Engine::External { base_url } => Ok(RunningServer { base_url: base_url.clone(), guard: None }),
            Engine::Sim { model_name, .. } => {
                let spec = LaunchSpec {
                    command: self.command_on(0, seed).expect("managed engine"),
                    env: vec![],
                    address: Address::FirstStdoutLine,
                    log_path,
                    startup_timeout: Duration::from_secs(30),
                    model: Some(model_name.clone()),
                    api_key: None,
                };
                let guard = supervisor::launch(&spec, http).await?;
                Ok(RunningServer { base_url: guard.base_url.clone(), guard: Some(guard) })
            }
            Engine::Vllm { model, profile, api_key, dev_mode, command, .. } => {
                let mut env: Vec<(String, String)> = profile.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                if *dev_mode {
                    env.push(("VLLM_SERVER_DEV_MODE".into(), "1".into()));
                }
                let mut last_error = None;
                let mut tried: Vec<u16> = Vec::new();
                for _ in 0..PORT_ATTEMPTS {
                    // A retry is on another port: the kernel may hand the same free one back.
                    let port = fresh_port(&tried)?;
                    tried.push(port);
                    let spec = LaunchSpec {
                        command: self.command_on(port, seed).expect("managed engine"),
                        env: env.clone(),
                        address: Address::Known(format!("http://127.0.0.1:{port}")),
                        log_path: log_path.clone(),
                        startup_timeout: Duration::from_secs(profile.startup_timeout_s),
                        model: Some(model.clone()),
                        api_key: Some(api_key.clone()),
                    };
                    match supervisor::launch(&spec, http).await {
                        Ok(guard) => return Ok(RunningServer { base_url: guard.base_url.clone(), guard: Some(guard) }),
                        // Another process took the port between our probe and vLLM's bind: retry.
                        Err(e) if format!("{e:#}").to_lowercase().contains("address already in use") => last_error = Some(e),
                        Err(e) => return Err(e).with_context(|| format!("vLLM (`{command} serve {model}`) did not start")),
                    }
                }
                Err(last_error.expect("at least one attempt")).context("vLLM could not bind a free port")
            }
        }
    }
}

/// A free port not in `tried` (the last one drawn if 100 draws give nothing new).
fn fresh_port(tried: &[u16]) -> Result<u16> {
    let mut port = supervisor::free_port()?;
    for _ in 0..100 {
        if !tried.contains(&port) {
            break;
        }
        port = supervisor::free_port()?;
    }
    Ok(port)
}

/// A fresh random API key: a managed server answers only turnbench.
pub fn random_key() -> String {
    use rand::Rng;
    format!("tb-{:032x}", rand::rng().random::<u128>())
}
