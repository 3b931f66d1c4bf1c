//! vLLM profiles (`configs/vllm/*.toml`) and the `vllm serve` command line they give.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::core::config::{resolve_profile, ConfigSource};
use crate::core::UsageError;

/// Built-in profiles, embedded so the binary works from any folder.
pub const BUILTIN_PROFILES: [(&str, &str); 3] = [
    ("single-user", include_str!("../../configs/vllm/single-user.toml")),
    ("optimized", include_str!("../../configs/vllm/optimized.toml")),
    ("debug", include_str!("../../configs/vllm/debug.toml")),
];

pub const DEFAULT_PROFILE: &str = "single-user";

/// Server settings of one vLLM profile. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VllmProfile {
    #[serde(default)]
    pub description: String,
    pub enable_prefix_caching: bool,
    /// `--enable-prompt-tokens-details`: `usage.prompt_tokens_details.cached_tokens`.
    #[serde(default = "yes")]
    pub enable_prompt_tokens_details: bool,
    pub max_num_batched_tokens: Option<u64>,
    pub max_num_seqs: Option<u64>,
    #[serde(default)]
    pub enforce_eager: bool,
    pub gpu_memory_utilization: Option<f64>,
    /// KV-cache block size in tokens (vLLM's default when absent: 16 on GPU, 128 on CPU).
    pub block_size: Option<u64>,
    /// Context window; `--context-size` overrides it.
    pub max_model_len: Option<u64>,
    pub dtype: Option<String>,
    /// Seconds allowed from spawn to ready.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_s: u64,
    /// Further `vllm serve` arguments, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Environment for the server.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn default_startup_timeout() -> u64 {
    900
}

impl VllmProfile {
    /// A profile by name (`<config_dir>/vllm/<name>.toml` when it exists, else built in) or a
    /// TOML file by path; also says which file was read.
    pub fn resolve(config_dir: &Path, name_or_path: &str) -> Result<(Self, ConfigSource)> {
        let found = resolve_profile(config_dir, "vllm", name_or_path, &BUILTIN_PROFILES, "--profile")?;
        Ok((Self::parse(&found.text, &found.source.origin())?, found.source))
    }

    /// A built-in profile by name (unless `configs/vllm/<name>.toml` exists here), or a TOML file.
    pub fn load(name_or_path: &str) -> Result<Self> {
        Self::resolve(Path::new("configs"), name_or_path).map(|(p, _)| p)
    }

    /// Parses and range-checks a profile: every count and timeout is checked here, before
    /// vLLM is launched (a deadline computed from a huge timeout would overflow).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let profile = Self::parse_toml(text, origin)?;
        use crate::core::config::check_range;
        check_range(origin, text, "startup_timeout_s", profile.startup_timeout_s, 1, 7 * 24 * 3600, " seconds (a week)")?;
        for (key, value, max) in [
            ("max_num_batched_tokens", profile.max_num_batched_tokens, 1u64 << 32),
            ("max_num_seqs", profile.max_num_seqs, 1 << 20),
            ("block_size", profile.block_size, 1 << 16),
            ("max_model_len", profile.max_model_len, 1 << 32),
        ] {
            if let Some(v) = value {
                check_range(origin, text, key, v, 1, max, "")?;
            }
        }
        if let Some(u) = profile.gpu_memory_utilization {
            check_range(origin, text, "gpu_memory_utilization", u, 0.01, 1.0, "")?;
        }
        Ok(profile)
    }

    fn parse_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(":{line}")
                })
                .unwrap_or_default();
            UsageError::new(format!("{origin}{at}: {}", e.message())).into()
        })
    }

    /// `vllm serve` arguments for these settings (model, host, port and key come separately).
    pub fn serve_args(&self, context_size: Option<u64>) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            args.push(flag.to_string());
            if let Some(v) = value {
                args.push(v);
            }
        };
        push(if self.enable_prefix_caching { "--enable-prefix-caching" } else { "--no-enable-prefix-caching" }, None);
        if self.enable_prompt_tokens_details {
            push("--enable-prompt-tokens-details", None);
        }
        if let Some(n) = self.max_num_batched_tokens {
            push("--max-num-batched-tokens", Some(n.to_string()));
        }
        if let Some(n) = self.max_num_seqs {
            push("--max-num-seqs", Some(n.to_string()));
        }
        if self.enforce_eager {
            push("--enforce-eager", None);
        }
        if let Some(u) = self.gpu_memory_utilization {
            push("--gpu-memory-utilization", Some(u.to_string()));
        }
        if let Some(b) = self.block_size {
            push("--block-size", Some(b.to_string()));
        }
        if let Some(len) = context_size.or(self.max_model_len) {
            push("--max-model-len", Some(len.to_string()));
        }
        if let Some(d) = &self.dtype {
            push("--dtype", Some(d.clone()));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse_and_single_user_has_the_documented_settings() {
        for (name, _) in BUILTIN_PROFILES {
            VllmProfile::load(name).unwrap();
        }
        let p = VllmProfile::load(DEFAULT_PROFILE).unwrap();
        let args = p.serve_args(Some(32000)).join(" ");
        for expected in [
            "--enable-prefix-caching",
            "--max-num-batched-tokens 512",
            "--max-num-seqs 2",
            "--enforce-eager",
            "--max-model-len 32000",
            "--enable-prompt-tokens-details",
        ] {
            assert!(args.contains(expected), "{expected} missing from {args}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_naming_file_and_line() {
        let err = VllmProfile::parse("enable_prefix_caching = true\nmax_num_seq = 2\n", "p.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.toml:2:") && msg.contains("max_num_seq"), "{msg}");
        assert_eq!(crate::core::error::exit_code(&err), 2);
    }

    #[test]
    fn counts_and_timeouts_are_range_checked_at_parse_time() {
        let err = VllmProfile::parse("enable_prefix_caching = true\nstartup_timeout_s = 18446744073709551615\n", "p.toml")
            .unwrap_err();
        assert_eq!(crate::core::error::exit_code(&err), 2);
        assert!(err.to_string().starts_with("p.toml:2: startup_timeout_s = 18446744073709551615: must be between 1 and 604800"), "{err}");
        let err = VllmProfile::parse("enable_prefix_caching = true\ngpu_memory_utilization = 7.0\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("gpu_memory_utilization = 7"), "{err}");
        let err = VllmProfile::parse("enable_prefix_caching = true\nmax_num_seqs = 0\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("max_num_seqs = 0"), "{err}");
    }

    #[test]
    fn unknown_profile_names_the_choices() {
        let msg = VllmProfile::load("nope").unwrap_err().to_string();
        assert!(msg.contains("single-user") && msg.contains("nope"), "{msg}");
    }
}
