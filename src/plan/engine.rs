//! `--engine`, `--endpoint`, `--model`, `--profile`, `--engine-arg` → the [`Engine`] to run and
//! the profile files it reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Isolation;
use crate::cli::{EngineKind, RunArgs};
use crate::core::config::ConfigSource;
use crate::core::UsageError;
use crate::engine::vllm::VllmProfile;
use crate::engine::{random_key, Engine, SIM_BIN_ENV};
use crate::sim::{Profile, SimConfig};

pub fn plan(args: &RunArgs, isolation: Isolation) -> Result<(Engine, Vec<ConfigSource>)> {
    let kind = args.engine.unwrap_or(if args.endpoint.is_some() { EngineKind::External } else { EngineKind::Sim });
    if kind != EngineKind::External && args.endpoint.is_some() {
        return Err(UsageError::new("--endpoint is for --engine external; managed engines start their own server").into());
    }
    match kind {
        EngineKind::External => {
            let base_url =
                args.endpoint.clone().ok_or_else(|| UsageError::new("--engine external needs --endpoint URL"))?;
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(UsageError::new(format!("--endpoint {base_url:?}: expected an http:// or https:// URL")).into());
            }
            let base_url = base_url.trim_end_matches('/').trim_end_matches("/v1").to_string();
            Ok((Engine::External { base_url }, vec![]))
        }
        EngineKind::Sim => {
            let program = match std::env::var_os(SIM_BIN_ENV) {
                Some(p) => PathBuf::from(p),
                None => std::env::current_exe().context("cannot locate the turnbench executable")?,
            };
            let (extra_args, source) = sim_args(&args.engine_args, &args.config_dir)?;
            let model_name = args.model.clone().unwrap_or_else(|| "turnbench-sim".to_string());
            Ok((Engine::Sim { program, extra_args, model_name }, vec![source]))
        }
        EngineKind::Vllm => {
            let name =
                args.model.as_deref().ok_or_else(|| UsageError::new("--engine vllm needs --model PATH_OR_REPO_ID"))?;
            let (profile, source) = VllmProfile::resolve(&args.config_dir, &args.profile)?;
            let engine = Engine::Vllm {
                command: args.vllm_cmd.clone(),
                model: local_model(name),
                profile: Box::new(profile),
                extra_args: args.engine_args.clone(),
                context_size: args.selection.context_size,
                api_key: random_key(),
                dev_mode: isolation == Isolation::Run,
            };
            Ok((engine, vec![source]))
        }
    }
}

/// The simulator's arguments with its profile resolved here, where the manifest can record it:
/// `--profile NAME` (in `--engine-arg`, default `default`) is replaced by the path of the file
/// under `--config-dir` when there is one. The child checks the whole profile again when it
/// starts, but a malformed profile is reported now, before any process.
fn sim_args(engine_args: &[String], config_dir: &Path) -> Result<(Vec<String>, ConfigSource)> {
    let mut rest = Vec::new();
    let mut profile = None;
    let mut iter = engine_args.iter();
    while let Some(arg) = iter.next() {
        if let Some(v) = arg.strip_prefix("--profile=") {
            profile = Some(v.to_string());
        } else if arg == "--profile" {
            let v = iter.next().ok_or_else(|| UsageError::new("--engine-arg=--profile needs a value (--engine-arg=--profile=NAME)"))?;
            profile = Some(v.clone());
        } else {
            rest.push(arg.clone());
        }
    }
    let name = profile.unwrap_or_else(|| "default".to_string());
    let (_, source) = SimConfig::resolve(config_dir, Some(&name), &Profile::default())?;
    let chosen = if source.builtin {
        name
    } else {
        std::fs::canonicalize(&source.path).map(|p| p.display().to_string()).unwrap_or_else(|_| source.path.clone())
    };
    // The child resolves names against the same folder, so it reads what the manifest records.
    let mut out = vec!["--profile".to_string(), chosen, "--config-dir".to_string(), config_dir.display().to_string()];
    out.extend(rest);
    Ok((out, source))
}

/// What vLLM is asked to serve: a local folder as given; else a catalog name or repo id found in
/// the Hugging Face cache (`turnbench setup`), as its snapshot folder; else the name itself
/// (vLLM then fetches it).
fn local_model(name: &str) -> String {
    if Path::new(name).exists() {
        return name.to_string();
    }
    let cache = crate::hub::HubConfig::from_env().cache_dir;
    match crate::hub::resolve_model(name, &cache) {
        Some(snapshot) => snapshot.display().to_string(),
        None => name.to_string(),
    }
}
