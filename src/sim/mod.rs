//! `turnbench sim`: a vLLM-compatible OpenAI server with a block-hashed prefix cache, a latency
//! model, bounded admission and seeded failure injection. It lets every test, demo and CI run go
//! without a GPU; reports label its numbers as simulated.
//!
//! - [`tokenizer`] and [`chat`] are pure and public: other modules use them to count the
//!   simulator's tokens exactly.
//! - [`SimConfig`] is resolved from built-in or file profiles (`configs/sim/*.toml`) plus flags.
//! - [`spawn`] runs the server in-process on `127.0.0.1:0` (tests); [`serve_command`] is the CLI.

pub mod cache;
pub mod chat;
pub mod latency;
mod server;
pub mod tokenizer;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::SimArgs;
use crate::error::UsageError;
pub use latency::LatencyModel;

/// Built-in profiles, embedded so the binary works from any directory.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("default", include_str!("../../configs/sim/default.toml")),
    ("instant", include_str!("../../configs/sim/instant.toml")),
    ("cpu-tiny", include_str!("../../configs/sim/cpu-tiny.toml")),
];

/// Everything the simulator needs to run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimConfig {
    pub host: String,
    pub port: u16,
    pub model_name: String,
    pub block_size: usize,
    pub kv_cache_blocks: usize,
    pub max_num_seqs: usize,
    pub max_waiting: usize,
    pub max_model_len: usize,
    pub enable_prefix_caching: bool,
    pub default_max_tokens: usize,
    pub latency: LatencyModel,
    pub fail_rate: f64,
    pub drop_rate: f64,
    pub seed: u64,
}

impl Default for SimConfig {
    /// The `default` profile's values without reading it: GPU-like latencies.
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            model_name: "turnbench-sim".into(),
            block_size: 16,
            kv_cache_blocks: 16384,
            max_num_seqs: 256,
            max_waiting: 4096,
            max_model_len: 32768,
            enable_prefix_caching: true,
            default_max_tokens: 64,
            latency: LatencyModel {
                overhead_ms: 15.0,
                prefill_ms_per_token: 0.05,
                inter_token_ms: 10.0,
                load_slowdown: 0.02,
            },
            fail_rate: 0.0,
            drop_rate: 0.0,
            seed: 42,
        }
    }
}

/// One profile file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub model_name: Option<String>,
    pub block_size: Option<u64>,
    pub kv_cache_blocks: Option<u64>,
    pub max_num_seqs: Option<u64>,
    pub max_waiting: Option<u64>,
    pub max_model_len: Option<u64>,
    pub enable_prefix_caching: Option<bool>,
    pub default_max_tokens: Option<u64>,
    pub overhead_ms: Option<f64>,
    pub prefill_ms_per_token: Option<f64>,
    pub inter_token_ms: Option<f64>,
    pub load_slowdown: Option<f64>,
    pub fail_rate: Option<f64>,
    pub drop_rate: Option<f64>,
    pub seed: Option<u64>,
}

impl Profile {
    /// Parses profile text; `origin` (a file name) goes into every error.
    pub fn parse(text: &str, origin: &str) -> Result<Profile> {
        toml::from_str(text)
            .map_err(|e| UsageError::new(format!("sim profile {origin}: {}", e.to_string().trim_end())).into())
    }

    /// A built-in profile name, or a path to a TOML file (anything with `/`, `\` or `.toml`, or
    /// an existing file).
    pub fn load(name_or_path: &str) -> Result<Profile> {
        if let Some((name, text)) = BUILTIN_PROFILES.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, &format!("configs/sim/{name}.toml (built-in)"));
        }
        let path = Path::new(name_or_path);
        let looks_like_path =
            name_or_path.contains('/') || name_or_path.contains('\\') || name_or_path.ends_with(".toml");
        if looks_like_path || path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError::new(format!("sim profile {}: cannot read: {e}", path.display())))?;
            return Self::parse(&text, &path.display().to_string());
        }
        let names: Vec<&str> = BUILTIN_PROFILES.iter().map(|(n, _)| *n).collect();
        Err(UsageError::new(format!(
            "unknown sim profile `{name_or_path}`: built-in profiles are {}; or give a path to a TOML file",
            names.join(", ")
        ))
        .into())
    }

    fn apply(&self, c: &mut SimConfig) {
        if let Some(v) = &self.model_name {
            c.model_name = v.clone();
        }
        set_usize(&mut c.block_size, self.block_size);
        set_usize(&mut c.kv_cache_blocks, self.kv_cache_blocks);
        set_usize(&mut c.max_num_seqs, self.max_num_seqs);
        set_usize(&mut c.max_waiting, self.max_waiting);
        set_usize(&mut c.max_model_len, self.max_model_len);
        set_usize(&mut c.default_max_tokens, self.default_max_tokens);
        if let Some(v) = self.enable_prefix_caching {
            c.enable_prefix_caching = v;
        }
        set(&mut c.latency.overhead_ms, self.overhead_ms);
        set(&mut c.latency.prefill_ms_per_token, self.prefill_ms_per_token);
        set(&mut c.latency.inter_token_ms, self.inter_token_ms);
        set(&mut c.latency.load_slowdown, self.load_slowdown);
        set(&mut c.fail_rate, self.fail_rate);
        set(&mut c.drop_rate, self.drop_rate);
        set(&mut c.seed, self.seed);
    }
}

fn set<T: Copy>(dst: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *dst = v;
    }
}

fn set_usize(dst: &mut usize, v: Option<u64>) {
    if let Some(v) = v {
        *dst = usize::try_from(v).unwrap_or(usize::MAX);
    }
}

impl SimConfig {
    /// The built-in `instant` profile: zero latency (tests, client benchmarks).
    pub fn instant() -> SimConfig {
        let mut c = SimConfig::default();
        // The built-in profile is part of the binary and tested; fall back to zeroing by hand.
        match Profile::load("instant") {
            Ok(p) => p.apply(&mut c),
            Err(_) => c.latency = LatencyModel::default(),
        }
        c
    }

    /// Resolves `--profile` (default: `default`), then flags on top, then validates.
    pub fn from_args(args: &SimArgs) -> Result<SimConfig> {
        let mut c = SimConfig::default();
        Profile::load(args.profile.as_deref().unwrap_or("default"))?.apply(&mut c);
        let flags = Profile {
            model_name: args.model_name.clone(),
            block_size: args.block_size,
            kv_cache_blocks: args.kv_cache_blocks,
            max_num_seqs: args.max_num_seqs,
            max_waiting: args.max_waiting,
            max_model_len: args.max_model_len,
            enable_prefix_caching: args.no_prefix_caching.then_some(false),
            default_max_tokens: args.default_max_tokens,
            overhead_ms: args.overhead_ms,
            prefill_ms_per_token: args.prefill_ms_per_token,
            inter_token_ms: args.inter_token_ms,
            load_slowdown: args.load_slowdown,
            fail_rate: args.fail_rate,
            drop_rate: args.drop_rate,
            seed: args.seed,
        };
        flags.apply(&mut c);
        c.host = args.host.clone();
        c.port = args.port;
        c.validate()?;
        Ok(c)
    }

    /// Rejects settings the server cannot honour, as a [`UsageError`].
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| -> Result<()> { Err(UsageError::new(format!("sim: {msg}")).into()) };
        if self.model_name.trim().is_empty() {
            return bad("model name must not be empty".into());
        }
        for (name, v) in [
            ("block_size", self.block_size),
            ("kv_cache_blocks", self.kv_cache_blocks),
            ("max_num_seqs", self.max_num_seqs),
            ("max_model_len", self.max_model_len),
            ("default_max_tokens", self.default_max_tokens),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.max_num_seqs > 1 << 20 {
            return bad("max_num_seqs must be at most 1048576".into());
        }
        let l = &self.latency;
        for (name, v) in [
            ("overhead_ms", l.overhead_ms),
            ("prefill_ms_per_token", l.prefill_ms_per_token),
            ("inter_token_ms", l.inter_token_ms),
            ("load_slowdown", l.load_slowdown),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} must be a finite number ≥ 0, got {v}"));
            }
        }
        for (name, v) in [("fail_rate", self.fail_rate), ("drop_rate", self.drop_rate)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        Ok(())
    }
}

/// A running in-process simulator. Dropping it stops the server (in the background).
pub struct SimHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests end, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the simulator on `127.0.0.1:0` (the config's host and port are ignored) on the current
/// tokio runtime.
pub async fn spawn(config: SimConfig) -> Result<SimHandle> {
    config.validate()?;
    let listener = TcpListener::bind("127.0.0.1:0").await.context("sim: cannot bind 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let app = server::router(config);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle { addr, shutdown: Some(tx), task: Some(task) })
}

/// `turnbench sim`: binds, prints the base URL as the first stdout line, serves until SIGINT or
/// SIGTERM, then shuts down gracefully (open streams get a few seconds to finish).
pub async fn serve_command(args: SimArgs) -> Result<()> {
    use std::io::Write;
    let config = SimConfig::from_args(&args)?;
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("sim: cannot bind {}:{}", config.host, config.port))?;
    let addr = listener.local_addr()?;
    let signal = shutdown_signal()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "http://{addr}")?;
        out.flush()?;
    }
    eprintln!(
        "turnbench sim: model {} · block {} · {} KV blocks · prefix caching {} · max_num_seqs {} · max_model_len {}",
        config.model_name,
        config.block_size,
        config.kv_cache_blocks,
        if config.enable_prefix_caching { "on" } else { "off" },
        config.max_num_seqs,
        config.max_model_len
    );
    let app = server::router(config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut graceful_rx = stop_rx.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = graceful_rx.wait_for(|s| *s).await;
        })
        .into_future();
    let signals = async move {
        signal.await;
        let _ = stop_tx.send(true);
    };
    let mut deadline_rx = stop_rx;
    let deadline = async move {
        let _ = deadline_rx.wait_for(|s| *s).await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    };
    tokio::pin!(server, deadline);
    tokio::spawn(signals);
    tokio::select! {
        r = &mut server => r.context("sim: server error")?,
        _ = &mut deadline => eprintln!("turnbench sim: open requests did not finish within 5 s; exiting"),
    }
    Ok(())
}

/// Registers SIGINT and SIGTERM handlers now (before the URL is printed, so a parent that
/// signals right after reading it is handled), and returns a future that ends on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("sim: cannot install a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("sim: cannot install a SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SimArgs {
        let mut v = vec!["turnbench", "sim"];
        v.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(v).command {
            crate::cli::Command::Sim(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn builtin_profiles_parse() {
        for (name, _) in BUILTIN_PROFILES {
            Profile::load(name).unwrap();
        }
        let d = SimConfig::from_args(&args(&[])).unwrap();
        assert_eq!(d, SimConfig { port: 8000, ..SimConfig::default() });
        let i = SimConfig::instant();
        assert!(i.latency.prefill_is_zero() && i.latency.decode_is_zero());
    }

    #[test]
    fn flags_override_profile() {
        let c = SimConfig::from_args(&args(&[
            "--profile",
            "instant",
            "--block-size",
            "32",
            "--no-prefix-caching",
            "--model-name",
            "m",
        ]))
        .unwrap();
        assert_eq!(c.block_size, 32);
        assert!(!c.enable_prefix_caching);
        assert_eq!(c.model_name, "m");
        assert_eq!(c.latency.inter_token_ms, 0.0);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mine.toml");
        std::fs::write(&p, "block_size = 32\nturbo = true\n").unwrap();
        let err = SimConfig::from_args(&args(&["--profile", p.to_str().unwrap()])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("mine.toml") && msg.contains("turbo"), "{msg}");
        assert_eq!(crate::error::exit_code(&err), 2);
        let err = SimConfig::from_args(&args(&["--profile", "nope"])).unwrap_err();
        assert!(format!("{err}").contains("instant"));
        assert_eq!(crate::error::exit_code(&err), 2);
        let err = SimConfig::from_args(&args(&["--fail-rate", "1.5"])).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
    }
}
