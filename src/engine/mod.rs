//! Engines: the server a run talks to. A managed engine is started per test through the
//! [`supervisor`]; an external endpoint is used as it is.

pub mod supervisor;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{EngineKind, RunArgs};
use crate::UsageError;
use supervisor::{LaunchSpec, ServerGuard};

/// Environment variable naming the `turnbench` binary used to start `turnbench sim`
/// (defaults to the running executable; tests that call `run()` in-process set it).
pub const SIM_BIN_ENV: &str = "TURNBENCH_SIM_BIN";

#[derive(Debug, Clone)]
pub enum Engine {
    /// `turnbench sim` started per test as a child process.
    Sim { program: PathBuf, extra_args: Vec<String>, model_name: String },
    /// A server someone else runs.
    External { base_url: String },
}

/// A server ready for requests. For managed engines it holds the process; dropping it tears
/// the server down.
pub struct RunningServer {
    pub base_url: String,
    pub guard: Option<ServerGuard>,
}

impl RunningServer {
    /// Orderly teardown (SIGTERM, grace, SIGKILL, verified); a no-op for external servers.
    pub async fn stop(self) -> Result<()> {
        match self.guard {
            Some(g) => g.shutdown(Duration::from_secs(10)).await,
            None => Ok(()),
        }
    }
}

impl Engine {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        let kind = args.engine.unwrap_or(if args.endpoint.is_some() { EngineKind::External } else { EngineKind::Sim });
        match kind {
            EngineKind::External => {
                let base_url = args
                    .endpoint
                    .clone()
                    .ok_or_else(|| UsageError::new("--engine external needs --endpoint URL"))?;
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(UsageError::new(format!("--endpoint {base_url:?}: expected an http:// or https:// URL")).into());
                }
                Ok(Engine::External { base_url: base_url.trim_end_matches('/').trim_end_matches("/v1").to_string() })
            }
            EngineKind::Sim => {
                if args.endpoint.is_some() {
                    return Err(UsageError::new("--endpoint is for --engine external; --engine sim starts its own server").into());
                }
                let program = match std::env::var_os(SIM_BIN_ENV) {
                    Some(p) => PathBuf::from(p),
                    None => std::env::current_exe().context("cannot locate the turnbench executable")?,
                };
                Ok(Engine::Sim {
                    program,
                    extra_args: args.engine_args.clone(),
                    model_name: args.model.clone().unwrap_or_else(|| "turnbench-sim".to_string()),
                })
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Sim { .. } => "sim",
            Engine::External { .. } => "external",
        }
    }

    pub fn is_managed(&self) -> bool {
        !matches!(self, Engine::External { .. })
    }

    /// The command line that starts the managed server (for the manifest).
    pub fn command(&self, seed: u64) -> Option<Vec<String>> {
        match self {
            Engine::Sim { program, extra_args, model_name } => {
                let mut cmd = vec![
                    program.display().to_string(),
                    "sim".into(),
                    "--port".into(),
                    "0".into(),
                    "--model-name".into(),
                    model_name.clone(),
                    "--seed".into(),
                    seed.to_string(),
                ];
                cmd.extend(extra_args.iter().cloned());
                Some(cmd)
            }
            Engine::External { .. } => None,
        }
    }

    /// Starts (managed) or checks (external) the server for one test; its log goes to
    /// `log_dir/<test_name>.log`.
    pub async fn start(&self, test_name: &str, log_dir: &Path, http: &reqwest::Client, seed: u64) -> Result<RunningServer> {
        match self {
            Engine::External { base_url } => Ok(RunningServer { base_url: base_url.clone(), guard: None }),
            Engine::Sim { model_name, .. } => {
                let spec = LaunchSpec {
                    command: self.command(seed).expect("managed engine has a command"),
                    env: vec![],
                    log_path: log_dir.join(format!("{test_name}.log")),
                    startup_timeout: Duration::from_secs(30),
                    model: Some(model_name.clone()),
                    api_key: None,
                };
                let guard = supervisor::launch(&spec, http).await?;
                Ok(RunningServer { base_url: guard.base_url.clone(), guard: Some(guard) })
            }
        }
    }
}
