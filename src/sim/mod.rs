//! `turnbench sim`: a vLLM-compatible OpenAI server with a block-hashed prefix cache, a latency
//! model, bounded admission and seeded failure injection. It lets every test, demo and CI run go
//! without a GPU; reports label its numbers as simulated.
//!
//! - [`tokenizer`] and [`chat`] are pure and public: other modules use them to count the
//!   simulator's tokens exactly.
//! - [`SimConfig`] is resolved from built-in or file profiles (`configs/sim/*.toml`) plus flags.
//! - [`spawn`] runs the server in-process on `127.0.0.1:0` (tests); [`serve`] binds the configured
//!   address and runs until a signal (`turnbench sim`).
//! - The server, one idea a module: `api` (routes, request bodies, vLLM-shaped errors),
//!   `admission` (`max_num_seqs` and the waiting queue), `jobs` (one generation, start to end),
//!   `sse` (the answer, streamed or whole), `exposition` (`/metrics`), `histogram`, `errors`
//!   (vLLM-shaped refusals), `state` (what one engine's requests share) and `cluster` (the
//!   `--replicas` engines behind the one port, and which of them a request goes to).

/// The simulator's prefix cache is `crate::core::blocks`, the same code the ledger models
/// servers with.
pub use crate::core::blocks as cache;
mod admission;
mod api;
pub mod chat;
mod cluster;
mod errors;
mod exposition;
mod histogram;
mod jobs;
pub mod latency;
mod sse;
mod state;
pub mod tokenizer;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::core::config::{resolve_profile, ConfigSource};
use crate::core::error::UsageError;
pub use latency::LatencyModel;

/// Built-in profiles, embedded so the binary works from any directory.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("default", include_str!("../../configs/sim/default.toml")),
    ("instant", include_str!("../../configs/sim/instant.toml")),
    ("cpu-tiny", include_str!("../../configs/sim/cpu-tiny.toml")),
];

/// Most replicas one simulator serves (`--replicas`).
pub const MAX_REPLICAS: usize = 64;

/// Which replica a generation request goes to, when the simulator runs several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// Replicas in turn.
    #[default]
    RoundRobin,
    /// The replica holding the longest cached prefix of the prompt, among those not much busier
    /// than the least busy one (llm-d's prefix-cache scorer with a load-aware filter).
    PrefixAffinity,
    /// A replica drawn at random, in a sequence fixed by the seed.
    Random,
}

impl Routing {
    /// The name used by `--routing` and profiles.
    pub fn name(self) -> &'static str {
        match self {
            Routing::RoundRobin => "round-robin",
            Routing::PrefixAffinity => "prefix-affinity",
            Routing::Random => "random",
        }
    }
}

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
    /// Probability that a request's generated token ids are not what its answer text
    /// re-tokenizes to (a chat template or tokenizer that drifts): the answer's cached blocks
    /// then miss when the next prompt carries the text.
    pub retokenize_drift: f64,
    pub seed: u64,
    /// Independent engines behind the one port, each with all of the settings above (its own
    /// prefix cache, `max_num_seqs`, KV blocks, counters): N replicas are N servers' capacity.
    pub replicas: usize,
    /// Which replica each generation request goes to (only matters with `replicas > 1`).
    pub routing: Routing,
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
            retokenize_drift: 0.0,
            seed: 42,
            replicas: 1,
            routing: Routing::RoundRobin,
        }
    }
}

/// The largest latency a profile may set, in milliseconds: an hour.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

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
    pub retokenize_drift: Option<f64>,
    pub seed: Option<u64>,
    pub replicas: Option<u64>,
    pub routing: Option<Routing>,
}

impl Profile {
    /// Parses profile text; `origin` (a file name) goes into every error.
    pub fn parse(text: &str, origin: &str) -> Result<Profile> {
        toml::from_str(text)
            .map_err(|e| UsageError::new(format!("sim profile {origin}: {}", e.to_string().trim_end())).into())
    }

    /// A profile by name (`<config_dir>/sim/<name>.toml` when that file exists, else the
    /// built-in one) or a path to a TOML file; also says which file was read.
    pub fn resolve(config_dir: &Path, name_or_path: &str) -> Result<(Profile, ConfigSource)> {
        let found = resolve_profile(config_dir, "sim", name_or_path, BUILTIN_PROFILES, "sim profile")?;
        Ok((Self::parse(&found.text, &found.source.origin())?, found.source))
    }

    /// [`resolve`](Self::resolve) with the config folder `configs` of the working directory.
    pub fn load(name_or_path: &str) -> Result<Profile> {
        Self::resolve(Path::new("configs"), name_or_path).map(|(p, _)| p)
    }

    /// Overrides the values `other` sets.
    pub fn apply(&self, c: &mut SimConfig) {
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
        set(&mut c.retokenize_drift, self.retokenize_drift);
        set(&mut c.seed, self.seed);
        set_usize(&mut c.replicas, self.replicas);
        set(&mut c.routing, self.routing);
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
        let text = BUILTIN_PROFILES.iter().find(|(n, _)| *n == "instant").map_or("", |(_, t)| *t);
        match Profile::parse(text, "configs/sim/instant.toml (built-in)") {
            Ok(p) => p.apply(&mut c),
            Err(_) => c.latency = LatencyModel::default(),
        }
        c
    }

    /// The profile (`default` when none is named), then `flags` on top, then validated.
    pub fn resolve(config_dir: &Path, profile: Option<&str>, flags: &Profile) -> Result<(SimConfig, ConfigSource)> {
        let mut c = SimConfig::default();
        let (profile, source) = Profile::resolve(config_dir, profile.unwrap_or("default"))?;
        profile.apply(&mut c);
        flags.apply(&mut c);
        c.validate().map_err(|e| {
            UsageError::new(format!("sim profile {} (or its flags): {}", source.origin(), e.to_string().trim_start_matches("sim: ")))
        })?;
        Ok((c, source))
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
        for (name, v, max) in [
            ("max_num_seqs", self.max_num_seqs, 1usize << 20),
            ("max_waiting", self.max_waiting, 1 << 24),
            ("block_size", self.block_size, 1 << 16),
            ("kv_cache_blocks", self.kv_cache_blocks, 1 << 28),
            ("max_model_len", self.max_model_len, 1 << 32),
            ("default_max_tokens", self.default_max_tokens, 1 << 24),
        ] {
            if v > max {
                return bad(format!("{name} = {v}: must be at most {max}"));
            }
        }
        let l = &self.latency;
        for (name, v) in [
            ("overhead_ms", l.overhead_ms),
            ("prefill_ms_per_token", l.prefill_ms_per_token),
            ("inter_token_ms", l.inter_token_ms),
            ("load_slowdown", l.load_slowdown),
        ] {
            // An hour per token (or a slow-down factor of 10⁶) is already no server; past it
            // a delay would not fit a `Duration`.
            let max = if name == "load_slowdown" { 1e6 } else { MAX_LATENCY_MS };
            if !v.is_finite() || v < 0.0 || v > max {
                return bad(format!("{name} = {v:?}: must be a finite number between 0 and {max}"));
            }
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return bad(format!("replicas = {}: must be between 1 and {MAX_REPLICAS}", self.replicas));
        }
        for (name, v) in [("fail_rate", self.fail_rate), ("drop_rate", self.drop_rate), ("retokenize_drift", self.retokenize_drift)] {
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

/// Every accepted connection with Nagle's algorithm off: a small SSE chunk written after the
/// response headers would otherwise wait for the client's delayed ACK (~40 ms) and show up as
/// time to first token.
fn no_delay(listener: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

/// Starts the simulator on `127.0.0.1:0` (the config's host and port are ignored) on the current
/// tokio runtime.
pub async fn spawn(config: SimConfig) -> Result<SimHandle> {
    config.validate()?;
    let listener = TcpListener::bind("127.0.0.1:0").await.context("sim: cannot bind 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let app = api::router(config);
    let task = tokio::spawn(async move {
        let _ = axum::serve(no_delay(listener), app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle { addr, shutdown: Some(tx), task: Some(task) })
}

/// Binds `config`'s address, prints the base URL as the first stdout line, serves until SIGINT
/// or SIGTERM, then shuts down gracefully (open streams get a few seconds to finish).
pub async fn serve(config: SimConfig) -> Result<()> {
    use std::io::Write;
    config.validate()?;
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
    // A line of its own, and only for a cluster: the one above (and a single engine's output)
    // stays as it was.
    if config.replicas > 1 {
        eprintln!(
            "turnbench sim: {} replicas behind http://{addr} · routing {} · each with the settings above · per-replica metrics at /replica/{{0..{}}}/metrics",
            config.replicas,
            config.routing.name(),
            config.replicas - 1
        );
    }
    let app = api::router(config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut graceful_rx = stop_rx.clone();
    let server = axum::serve(no_delay(listener), app)
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

    #[test]
    fn builtin_profiles_parse() {
        for (name, text) in BUILTIN_PROFILES {
            Profile::parse(text, name).unwrap();
        }
        let i = SimConfig::instant();
        assert!(i.latency.prefill_is_zero() && i.latency.decode_is_zero());
    }

    #[test]
    fn a_profile_in_the_config_dir_replaces_the_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let (c, source) = SimConfig::resolve(dir.path(), None, &Profile::default()).unwrap();
        assert!(source.builtin);
        assert_eq!(c, SimConfig::default());
        std::fs::create_dir_all(dir.path().join("sim")).unwrap();
        std::fs::write(dir.path().join("sim/default.toml"), "overhead_ms = 400.0\n").unwrap();
        let (c, source) = SimConfig::resolve(dir.path(), None, &Profile::default()).unwrap();
        assert!(!source.builtin && source.path.ends_with("default.toml"), "{source:?}");
        assert_eq!(c.latency.overhead_ms, 400.0);
    }
}
