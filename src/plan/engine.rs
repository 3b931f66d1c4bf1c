//! `--engine`, `--endpoint`, `--model`, `--profile`, `--engine-arg` → the [`Engine`] to run and
//! the profile files it reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Isolation;
use crate::cli::{EngineKind, PromptMode, RunArgs};
use crate::core::config::ConfigSource;
use crate::core::UsageError;
use crate::engine::vllm::VllmProfile;
use crate::engine::{random_key, Engine, SIM_BIN_ENV};
use crate::sim::{Profile, SimConfig};

pub fn plan(args: &RunArgs, isolation: Isolation) -> Result<(Engine, Vec<ConfigSource>)> {
    let kind = args.engine.unwrap_or(if args.endpoint.is_empty() { EngineKind::Sim } else { EngineKind::External });
    if kind != EngineKind::External && !args.endpoint.is_empty() {
        return Err(UsageError::new("--endpoint is for --engine external; managed engines start their own server").into());
    }
    match kind {
        EngineKind::External => {
            let url = args.endpoint.first().ok_or_else(|| UsageError::new("--engine external needs --endpoint URL"))?;
            let base_url = parse_endpoint(url)?.base_url;
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

/// What `--endpoint` names: the server's base URL and, for a full endpoint URL, the prompt mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    /// Without a trailing `/`, `/v1` or endpoint path: turnbench appends `/v1/...` itself.
    pub base_url: String,
    /// `…/v1/chat/completions` → chat, `…/v1/completions` → completion, else none.
    pub prompt_mode: Option<PromptMode>,
}

/// Accepts a base URL (`http://host:8000`), `…/v1`, or a full `…/v1/chat/completions` /
/// `…/v1/completions` URL, with or without a trailing `/`.
pub fn parse_endpoint(url: &str) -> Result<EndpointUrl> {
    let usage = |why: &str| UsageError::new(format!("--endpoint {url:?}: {why}"));
    let Some(after_scheme) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return Err(usage("expected an http:// or https:// URL").into());
    };
    if after_scheme.is_empty() || after_scheme.starts_with('/') {
        return Err(usage("no host").into());
    }
    if url.contains(['?', '#']) {
        return Err(usage("a query or fragment has no place in the server's URL").into());
    }
    let trimmed = url.trim_end_matches('/');
    let (rest, prompt_mode) = if let Some(r) = trimmed.strip_suffix("/v1/chat/completions") {
        (r, Some(PromptMode::Chat))
    } else if let Some(r) = trimmed.strip_suffix("/v1/completions") {
        (r, Some(PromptMode::Completion))
    } else if let Some(r) = trimmed.strip_suffix("/v1") {
        (r, None)
    } else if let Some(i) = trimmed.find("/v1/") {
        let path = &trimmed[i..];
        return Err(usage(&format!(
            "{path} is not an endpoint turnbench sends to; give the base URL, …/v1, …/v1/chat/completions or …/v1/completions"
        ))
        .into());
    } else {
        (trimmed, None)
    };
    Ok(EndpointUrl { base_url: rest.to_string(), prompt_mode })
}

/// `--prompt-mode`, else what a full `--endpoint` URL names, else chat. Both, disagreeing, is a
/// usage error.
pub fn prompt_mode(args: &RunArgs) -> Result<PromptMode> {
    let name = |m: PromptMode| match m {
        PromptMode::Chat => "chat",
        PromptMode::Completion => "completion",
    };
    // Every endpoint must take the same prompts: what one full URL names, all agree with.
    let mut implied: Option<(PromptMode, &str)> = None;
    for url in &args.endpoint {
        let Some(mode) = parse_endpoint(url)?.prompt_mode else { continue };
        match (args.prompt_mode, implied) {
            (Some(given), _) if given != mode => {
                return Err(UsageError::new(format!(
                    "--prompt-mode {} conflicts with --endpoint {url:?}, which names the {} endpoint; drop one of them",
                    name(given),
                    name(mode)
                ))
                .into())
            }
            (_, Some((other, first))) if other != mode => {
                return Err(UsageError::new(format!(
                    "--endpoint {first:?} names the {} endpoint but --endpoint {url:?} the {} one: compared endpoints get the same prompts",
                    name(other),
                    name(mode)
                ))
                .into())
            }
            _ => implied = Some((mode, url)),
        }
    }
    Ok(args.prompt_mode.or(implied.map(|(m, _)| m)).unwrap_or(PromptMode::Chat))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> (String, Option<PromptMode>) {
        let e = parse_endpoint(url).unwrap();
        (e.base_url, e.prompt_mode)
    }

    #[test]
    fn endpoint_takes_a_base_url_v1_or_a_full_endpoint_url() {
        let base = "https://host:8000".to_string();
        assert_eq!(parsed("https://host:8000"), (base.clone(), None));
        assert_eq!(parsed("https://host:8000/"), (base.clone(), None));
        assert_eq!(parsed("https://host:8000/v1/"), (base.clone(), None));
        assert_eq!(parsed("https://host:8000/v1/chat/completions"), (base.clone(), Some(PromptMode::Chat)));
        assert_eq!(parsed("https://host:8000/v1/completions/"), (base, Some(PromptMode::Completion)));
        assert_eq!(parsed("http://gw/openai/v1/chat/completions"), ("http://gw/openai".into(), Some(PromptMode::Chat)));
    }

    #[test]
    fn endpoint_errors_name_the_flag_and_exit_2() {
        for (url, says) in [
            ("host:8000", "http:// or https://"),
            ("http://", "no host"),
            ("http://h/v1/models", "/v1/models is not an endpoint"),
            ("http://h/v1/chat/completions?x=1", "query"),
        ] {
            let err = parse_endpoint(url).unwrap_err();
            assert!(err.to_string().contains("--endpoint") && err.to_string().contains(says), "{url}: {err}");
            assert_eq!(crate::core::error::exit_code(&err), 2);
        }
    }
}
