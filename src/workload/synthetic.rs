//! Synthetic conversations generated from text files by a JSON config
//! (`--workload synthetic --workload-path CONFIG.json`):
//!
//! ```json
//! { "version": 1, "conversations": 6, "text_files": ["corpus.txt"],
//!   "turns": {"min": 2, "max": 4}, "input_tokens": {"min": 40, "max": 120},
//!   "output_tokens": {"min": 16, "max": 48}, "shared_prefix_tokens": 200 }
//! ```
//! Text files are relative to the config. Every conversation's system prompt is the same
//! `shared_prefix_tokens` of the corpus (a shared prefix); each user turn is a slice of the
//! corpus of a length drawn from `input_tokens`; `max_tokens` is drawn from `output_tokens`.
//! Lengths are in estimated tokens (4 characters each). Uniform distributions, seeded.

use std::path::Path;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::files::{hash_file, read_data};
use super::plain_turn;
use super::{Conversation, SourceFile};
use crate::core::UsageError;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    fn draw(&self, rng: &mut impl Rng) -> u64 {
        if self.max <= self.min {
            self.min
        } else {
            rng.random_range(self.min..=self.max)
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    pub version: u32,
    pub conversations: usize,
    pub text_files: Vec<String>,
    pub turns: Range,
    pub input_tokens: Range,
    pub output_tokens: Range,
    #[serde(default)]
    pub shared_prefix_tokens: u64,
}

/// At most this many conversations, turns per conversation, and tokens per prompt part.
pub const MAX_CONVERSATIONS: u64 = 100_000;
pub const MAX_TURNS: u64 = 10_000;
pub const MAX_TOKENS: u64 = 1_000_000;
/// The most prompt text a config may generate in all (bytes, at 4 characters a token).
pub const MAX_GENERATED_BYTES: u64 = 1 << 30;

/// Parses and range-checks a config; `origin` names it in errors (with the line of a bad key).
pub fn parse_config(origin: &str, text: &str) -> Result<SyntheticConfig> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let cfg: SyntheticConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        UsageError::new(format!("{origin}:{}:{}: {} (at {})", inner.line(), inner.column(), inner, e.path()))
    })?;
    if cfg.version != 1 {
        return Err(UsageError::new(format!("{origin}: version {} is not supported (expected 1)", cfg.version)).into());
    }
    use crate::core::config::{at_key, check_range};
    check_range(origin, text, "conversations", cfg.conversations as u64, 1, MAX_CONVERSATIONS, "")?;
    check_range(origin, text, "shared_prefix_tokens", cfg.shared_prefix_tokens, 0, MAX_TOKENS, " tokens")?;
    for (key, range, min, max) in [
        ("turns", cfg.turns, 1, MAX_TURNS),
        ("input_tokens", cfg.input_tokens, 1, MAX_TOKENS),
        ("output_tokens", cfg.output_tokens, 1, MAX_TOKENS),
    ] {
        if range.min < min || range.max > max || range.min > range.max {
            return Err(UsageError::new(format!(
                "{}: {key} {{min: {}, max: {}}}: need {min} ≤ min ≤ max ≤ {max}",
                at_key(origin, text, key),
                range.min,
                range.max
            ))
            .into());
        }
    }
    let bytes = (cfg.conversations as u64)
        .saturating_mul(cfg.turns.max)
        .saturating_mul(cfg.input_tokens.max)
        .saturating_mul(4)
        .saturating_add(cfg.shared_prefix_tokens.saturating_mul(4));
    if bytes > MAX_GENERATED_BYTES {
        return Err(UsageError::new(format!(
            "{origin}: conversations × turns.max × input_tokens.max would generate up to {bytes} bytes of prompts; at most {MAX_GENERATED_BYTES}"
        ))
        .into());
    }
    Ok(cfg)
}

pub fn generate_from_config(path: &Path, seed: u64) -> Result<(Vec<Conversation>, Vec<SourceFile>)> {
    let text = read_data(path)?;
    let is_vllm = serde_json::from_str::<serde_json::Value>(&text).ok().is_some_and(|v| v.get("filetype").is_some());
    if is_vllm {
        let cfg = super::vllm_synthetic::parse(path, &text)?;
        let (corpus, files) = read_corpus(path, &cfg.text_files)?;
        let conversations = super::vllm_synthetic::generate(&cfg, &corpus, seed);
        if cfg.print_stats {
            eprintln!("{}: {}", path.display(), super::vllm_synthetic::stats_line(&conversations));
        }
        return Ok((conversations, files));
    }
    let cfg = parse_config(&path.display().to_string(), &text)?;
    let (corpus, files) = read_corpus(path, &cfg.text_files)?;
    Ok((generate(&cfg, &corpus, seed), files))
}

/// The config's text files (relative to it), concatenated, and the hashes of config and files.
fn read_corpus(config: &Path, text_files: &[String]) -> Result<(String, Vec<SourceFile>)> {
    let base = config.parent().unwrap_or(Path::new("."));
    let mut corpus = String::new();
    let mut files = vec![hash_file(config)?];
    for f in text_files {
        let p = base.join(f);
        corpus.push_str(&read_data(&p)?);
        corpus.push('\n');
        files.push(hash_file(&p)?);
    }
    if corpus.trim().is_empty() {
        return Err(UsageError::new(format!("{}: the text files are empty", config.display())).into());
    }
    Ok((corpus, files))
}

/// `chars` characters of the corpus from `start`, wrapping around.
fn slice(corpus: &[char], start: usize, chars: usize) -> String {
    (0..chars).map(|i| corpus[(start + i) % corpus.len()]).collect()
}

pub fn generate(cfg: &SyntheticConfig, corpus: &str, seed: u64) -> Vec<Conversation> {
    let chars: Vec<char> = corpus.chars().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let system = (cfg.shared_prefix_tokens > 0).then(|| slice(&chars, 0, cfg.shared_prefix_tokens as usize * 4));
    (0..cfg.conversations)
        .map(|i| {
            let n = cfg.turns.draw(&mut rng).max(1);
            let turns = (0..n)
                .map(|_| {
                    let len = cfg.input_tokens.draw(&mut rng).max(1) as usize * 4;
                    let start = rng.random_range(0..chars.len());
                    plain_turn(slice(&chars, start, len), cfg.output_tokens.draw(&mut rng).min(u32::MAX as u64) as u32)
                })
                .collect();
            Conversation {
                id: format!("synthetic-{i:03}"),
                title: format!("Synthetic conversation {i}"),
                tags: vec!["synthetic".into()],
                system: system.clone(),
                turns,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_gives_what_it_says() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/workloads/synthetic/config.json");
        let (c, files) = generate_from_config(&path, 1).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(c.len(), 6);
        for conv in &c {
            assert!((2..=4).contains(&conv.turns.len()));
            assert_eq!(conv.system.as_ref().unwrap().chars().count(), 200 * 4, "shared prefix");
            for t in &conv.turns {
                assert!((40 * 4..=120 * 4).contains(&t.user.chars().count()));
                assert!((16..=48).contains(&t.max_tokens));
            }
        }
        assert!(c.windows(2).all(|w| w[0].system == w[1].system));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("c.json");
        std::fs::write(&p, r#"{"version": 1, "conversations": 1, "text_files": [], "turns": {"min":1,"max":1},
            "input_tokens": {"min":1,"max":1}, "output_tokens": {"min":1,"max":1}, "bogus": 3}"#).unwrap();
        let err = generate_from_config(&p, 1).unwrap_err().to_string();
        assert!(err.contains("bogus") && err.contains("c.json:2:"), "{err}");
    }

    #[test]
    fn absurd_counts_are_refused_at_parse_time() {
        let cfg = |conversations: &str, prefix: &str| {
            format!(
                "{{\"version\": 1,\n\"conversations\": {conversations},\n\"text_files\": [],\n\"turns\": {{\"min\":1,\"max\":2}},\n\
                 \"input_tokens\": {{\"min\":1,\"max\":10}}, \"output_tokens\": {{\"min\":1,\"max\":1}},\n\"shared_prefix_tokens\": {prefix}}}"
            )
        };
        let err = parse_config("c.json", &cfg("1000000000", "0")).unwrap_err();
        assert!(err.to_string().starts_with("c.json:2: conversations = 1000000000: must be between 1 and 100000"), "{err}");
        let err = parse_config("c.json", &cfg("5", "1000000000000")).unwrap_err();
        assert!(err.to_string().starts_with("c.json:6: shared_prefix_tokens = 1000000000000"), "{err}");
        assert!(parse_config("c.json", &cfg("5", "100")).is_ok());
    }
}
