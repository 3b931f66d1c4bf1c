//! vLLM's multi-turn benchmark config (`benchmarks/multi_turn/generate_multi_turn.json`), read as
//! published, under `--workload synthetic`:
//!
//! ```json
//! { "filetype": "generate_conversations", "num_conversations": 24, "text_files": ["pg1184.txt"],
//!   "print_stats": false,
//!   "prompt_input": {
//!     "num_turns": {"distribution": "uniform", "min": 12, "max": 18},
//!     "common_prefix_num_tokens": {"distribution": "constant", "value": 500},
//!     "prefix_num_tokens": {"distribution": "lognormal", "average": 1000, "max": 5000},
//!     "num_tokens": {"distribution": "uniform", "min": 120, "max": 160} },
//!   "prompt_output": { "num_tokens": {"distribution": "uniform", "min": 80, "max": 120} } }
//! ```
//!
//! What it means, as vLLM's generator does it: `num_turns` counts messages (user and assistant),
//! at least 2, rounded up to even, so a conversation has `num_turns / 2` user turns. One
//! `common_prefix_num_tokens` sample of corpus text opens the first prompt of every conversation
//! (a prefix shared across conversations; optional, default 0); each conversation then has its
//! own `prefix_num_tokens` of corpus text in its first prompt (context unique to it); every user
//! prompt is about `num_tokens` long, and `prompt_output.num_tokens` is that turn's `max_tokens`.
//! Text files are read relative to the config; lengths are in estimated tokens (4 characters
//! each: turnbench has no tokenizer at load time). Distributions: `constant {value}`,
//! `uniform {min, max}`, `lognormal {average [, median_ratio], max}` or `{mean, sigma, max}`,
//! `zipf {alpha, max}`, `poisson {alpha, max}`. Draws are seeded by `--seed`; the streams are
//! turnbench's own (the same seed gives the same conversations here, not numpy's).

use std::path::Path;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::generate::CHARS_PER_TOKEN;
use super::plain_turn;
use super::Conversation;
use crate::core::UsageError;

/// The `filetype` of vLLM's generator config.
pub const FILETYPE: &str = "generate_conversations";

/// What every user prompt asks (vLLM's generator puts this sentence before the corpus text).
const ASK: &str = "Please rewrite the following text and add more content: ";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VllmConfig {
    pub filetype: String,
    pub num_conversations: usize,
    pub text_files: Vec<String>,
    #[serde(default)]
    pub print_stats: bool,
    pub prompt_input: PromptInput,
    pub prompt_output: PromptOutput,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromptInput {
    pub num_turns: Distribution,
    #[serde(default)]
    pub common_prefix_num_tokens: Option<Distribution>,
    pub prefix_num_tokens: Distribution,
    pub num_tokens: Distribution,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromptOutput {
    pub num_tokens: Distribution,
}

/// One of the distributions vLLM's generator documents, with its parameters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "distribution", rename_all = "lowercase", deny_unknown_fields)]
pub enum Distribution {
    Constant { value: f64 },
    Uniform { min: f64, max: f64 },
    Lognormal { average: Option<f64>, median_ratio: Option<f64>, mean: Option<f64>, sigma: Option<f64>, max: Option<f64> },
    Zipf { alpha: f64, max: Option<f64> },
    Poisson { alpha: f64, max: Option<f64> },
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Zipf with exponent `a > 1` by rejection (Devroye), as numpy samples it.
fn zipf(rng: &mut StdRng, a: f64) -> f64 {
    let am1 = a - 1.0;
    let b = 2f64.powf(am1);
    loop {
        let u = 1.0 - rng.random::<f64>();
        let v: f64 = rng.random();
        let x = u.powf(-1.0 / am1).floor();
        if !(1.0..=1e15).contains(&x) {
            continue;
        }
        let t = (1.0 + 1.0 / x).powf(am1);
        if v * x * (t - 1.0) / (b - 1.0) <= t / b {
            return x;
        }
    }
}

/// Poisson with mean `lambda`: Knuth's product method below 30, a rounded normal above.
fn poisson(rng: &mut StdRng, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0.0, 1.0);
        loop {
            p *= rng.random::<f64>();
            if p <= limit {
                return k;
            }
            k += 1.0;
        }
    }
    (lambda + lambda.sqrt() * normal(rng)).round().max(0.0)
}

impl Distribution {
    /// Checks the parameters; `at` names the field (`prompt_input.num_tokens`).
    fn check(&self, at: &str) -> std::result::Result<(), String> {
        let bad = |why: &str| Err(format!("{at}: {why}"));
        match *self {
            Distribution::Constant { value } if value < 0.0 => bad("`value` must not be negative"),
            Distribution::Uniform { min, max } if min < 0.0 || max < min => bad("uniform needs 0 ≤ `min` ≤ `max`"),
            Distribution::Zipf { alpha, .. } if alpha <= 1.0 => bad("zipf needs `alpha` > 1"),
            Distribution::Poisson { alpha, .. } if alpha < 0.0 => bad("poisson needs `alpha` ≥ 0"),
            Distribution::Lognormal { average: Some(avg), median_ratio, mean, sigma, .. } => {
                if mean.is_some() || sigma.is_some() {
                    return bad("lognormal takes either `average` (and `median_ratio`) or `mean` and `sigma`, not both");
                }
                if avg < 1.0 {
                    return bad("lognormal `average` must be at least 1");
                }
                match median_ratio {
                    Some(r) if r <= 0.0 || r >= 1.0 => bad("lognormal `median_ratio` must be between 0 and 1"),
                    _ => Ok(()),
                }
            }
            Distribution::Lognormal { average: None, mean, sigma, median_ratio, .. } => match (mean, sigma) {
                _ if median_ratio.is_some() => bad("lognormal `median_ratio` goes with `average`"),
                (Some(m), Some(s)) if m > 0.0 && s >= 0.0 => Ok(()),
                (Some(_), Some(_)) => bad("lognormal needs `mean` > 0 and `sigma` ≥ 0"),
                _ => bad("lognormal needs `average`, or both `mean` and `sigma`"),
            },
            _ => Ok(()),
        }
    }

    /// `n` whole-number draws (vLLM rounds every length to a whole token count).
    pub fn sample(&self, rng: &mut StdRng, n: usize) -> Vec<u64> {
        let cap = |v: f64, max: Option<f64>| max.filter(|m| *m > 0.0).map_or(v, |m| v.min(m));
        let raw: Vec<f64> = match *self {
            Distribution::Constant { value } => vec![value; n],
            Distribution::Uniform { min, max } => (0..n)
                .map(|_| {
                    if min.fract() == 0.0 && max.fract() == 0.0 {
                        rng.random_range(min as u64..=max as u64) as f64
                    } else if max > min {
                        rng.random_range(min..max)
                    } else {
                        min
                    }
                })
                .collect(),
            Distribution::Zipf { alpha, max } => (0..n).map(|_| cap(zipf(rng, alpha), max)).collect(),
            Distribution::Poisson { alpha, max } => (0..n).map(|_| cap(poisson(rng, alpha), max)).collect(),
            Distribution::Lognormal { average, median_ratio, mean, sigma, max } => {
                let (mu, sigma) = match average {
                    // median = average × ratio, and mean / median = exp(σ² / 2).
                    Some(avg) => {
                        let ratio = median_ratio.unwrap_or(0.85);
                        ((avg * ratio).ln(), (2.0 * (1.0 / ratio).ln()).sqrt())
                    }
                    None => (mean.unwrap_or(1.0), sigma.unwrap_or(0.0)),
                };
                let mut v: Vec<f64> = (0..n).map(|_| (mu + sigma * normal(rng)).exp()).collect();
                // With `average`, the draws are scaled so that their mean is exactly it.
                if let Some(avg) = average {
                    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
                    if m > 0.0 {
                        v.iter_mut().for_each(|x| *x *= avg / m);
                    }
                }
                v.into_iter().map(|x| cap(x, max)).collect()
            }
        };
        raw.into_iter().map(|v| v.round().max(0.0) as u64).collect()
    }
}

/// Parses and checks a vLLM config; errors name the file (and line:column for JSON errors).
pub fn parse(path: &Path, text: &str) -> Result<VllmConfig> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let cfg: VllmConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        UsageError::new(format!("{}:{}:{}: {} (at {})", path.display(), inner.line(), inner.column(), inner, e.path()))
    })?;
    let bad = |why: String| -> anyhow::Error { UsageError::new(format!("{}: {why}", path.display())).into() };
    if cfg.filetype != FILETYPE {
        return Err(bad(format!("`filetype` {:?} is not supported (expected {FILETYPE:?})", cfg.filetype)));
    }
    if cfg.num_conversations == 0 {
        return Err(bad("`num_conversations` must be at least 1".into()));
    }
    if cfg.text_files.is_empty() {
        return Err(bad("`text_files` must name at least one file".into()));
    }
    let i = &cfg.prompt_input;
    let checks = [
        ("prompt_input.num_turns", Some(&i.num_turns)),
        ("prompt_input.common_prefix_num_tokens", i.common_prefix_num_tokens.as_ref()),
        ("prompt_input.prefix_num_tokens", Some(&i.prefix_num_tokens)),
        ("prompt_input.num_tokens", Some(&i.num_tokens)),
        ("prompt_output.num_tokens", Some(&cfg.prompt_output.num_tokens)),
    ];
    for (at, d) in checks {
        if let Some(d) = d {
            d.check(at).map_err(bad)?;
        }
    }
    Ok(cfg)
}

/// `tokens` estimated tokens of the corpus from token offset `start`, wrapping around.
fn text(corpus: &[char], start: u64, tokens: u64) -> String {
    let (start, len) = ((start * CHARS_PER_TOKEN) as usize, (tokens * CHARS_PER_TOKEN) as usize);
    (0..len).map(|k| corpus[(start + k) % corpus.len()]).collect()
}

fn estimate(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(CHARS_PER_TOKEN)
}

/// The conversations the config describes, from `corpus` (the text files, concatenated).
pub fn generate(cfg: &VllmConfig, corpus: &str, seed: u64) -> Vec<Conversation> {
    let chars: Vec<char> = corpus.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let n = cfg.num_conversations;
    let input = &cfg.prompt_input;
    let messages: Vec<u64> = input.num_turns.sample(&mut rng, n).into_iter().map(|t| t.max(2).next_multiple_of(2)).collect();
    let prefixes = input.prefix_num_tokens.sample(&mut rng, n);
    let common = input.common_prefix_num_tokens.as_ref().map_or(0, |d| d.sample(&mut rng, 1)[0]);
    let mut offset = 0u64;
    let common_text = if common > 0 {
        offset += common;
        format!("{}.", text(&chars, 0, common.saturating_sub(1)))
    } else {
        String::new()
    };
    let ask_tokens = estimate(ASK);
    (0..n)
        .map(|i| {
            let user_turns = (messages[i] / 2) as usize;
            let lengths: Vec<u64> = input.num_tokens.sample(&mut rng, user_turns).into_iter().map(|t| t.max(ask_tokens)).collect();
            let answers = cfg.prompt_output.num_tokens.sample(&mut rng, user_turns);
            let longest = lengths.iter().copied().max().unwrap_or(0);
            let turns = (0..user_turns)
                .map(|j| {
                    let mut content = format!("{i} is a nice number... ");
                    if j == 0 {
                        content.insert_str(0, &common_text);
                    }
                    let mut left = lengths[j].saturating_sub(estimate(&content));
                    if j == 0 && prefixes[i] > 0 {
                        content.push_str(&format!("{i}, {}", text(&chars, offset, prefixes[i])));
                        offset += prefixes[i];
                    }
                    content.push_str(ASK);
                    left = left.saturating_sub(ask_tokens);
                    if left > 0 {
                        content.push_str(&text(&chars, offset + j as u64 * longest, left));
                    }
                    plain_turn(content, answers[j].clamp(1, u32::MAX as u64) as u32)
                })
                .collect();
            offset += messages[i];
            Conversation {
                id: format!("CONV_ID_{i}"),
                title: format!("vLLM multi-turn conversation {i}"),
                tags: vec!["synthetic".into(), "vllm-multi-turn".into()],
                system: None,
                turns,
            }
        })
        .collect()
}

/// One line of statistics (`print_stats: true`): conversations, user turns and prompt lengths.
pub fn stats_line(conversations: &[Conversation]) -> String {
    let turns: Vec<usize> = conversations.iter().map(|c| c.turns.len()).collect();
    let prompts: Vec<u64> = conversations.iter().flat_map(|c| c.turns.iter().map(|t| estimate(&t.user))).collect();
    let mean = |v: &[u64]| if v.is_empty() { 0.0 } else { v.iter().sum::<u64>() as f64 / v.len() as f64 };
    format!(
        "{} conversations, {} user turns (min {}, max {} per conversation), user prompt ~{:.0} tokens on average (estimated)",
        conversations.len(),
        turns.iter().sum::<usize>(),
        turns.iter().min().unwrap_or(&0),
        turns.iter().max().unwrap_or(&0),
        mean(&prompts)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vLLM's `generate_multi_turn.json` as published.
    pub(crate) const PUBLISHED: &str = include_str!("../../data/workloads/vllm/generate_multi_turn.json");

    fn corpus() -> String {
        super::super::generate::generate(super::super::generate::GeneratorKind::Log, 20_000, 5)
    }

    #[test]
    fn the_published_config_gives_what_it_says() {
        let cfg = parse(Path::new("generate_multi_turn.json"), PUBLISHED).unwrap();
        let convs = generate(&cfg, &corpus(), 0);
        assert_eq!(convs.len(), 24);
        let common: String = convs[0].turns[0].user.chars().take(500 * 4 - 8).collect();
        for (i, c) in convs.iter().enumerate() {
            assert!((6..=9).contains(&c.turns.len()), "12–18 messages: 6–9 user turns, got {}", c.turns.len());
            let first = &c.turns[0].user;
            assert!(first.starts_with(&common), "the common prefix opens every conversation");
            assert!(first.contains(&format!("{i} is a nice number... {i}, ")), "its own prefix follows");
            for t in &c.turns {
                assert!((80..=120).contains(&t.max_tokens));
                assert!(t.user.contains(ASK));
            }
            for t in &c.turns[1..] {
                let tokens = estimate(&t.user);
                assert!((119..=160).contains(&tokens), "later prompts are 120–160 tokens (±1 rounding): {tokens}");
                assert!(!t.user.starts_with(&common));
            }
        }
        // Per-conversation prefixes: lognormal, scaled to average 1000, capped at 5000.
        let prefix_tokens: Vec<u64> = convs.iter().map(|c| estimate(&c.turns[0].user) - 500).collect();
        assert!(prefix_tokens.iter().all(|p| *p <= 5000 + 200), "{prefix_tokens:?}");
        assert!(prefix_tokens.windows(2).any(|w| w[0] != w[1]), "they vary");
        assert_eq!(generate(&cfg, &corpus(), 0), convs, "seeded");
        assert_ne!(generate(&cfg, &corpus(), 1), convs);
    }

    #[test]
    fn every_documented_distribution_samples_in_range() {
        let mut rng = StdRng::seed_from_u64(3);
        let d = |j: &str| serde_json::from_str::<Distribution>(j).unwrap();
        assert_eq!(d(r#"{"distribution": "constant", "value": 7}"#).sample(&mut rng, 3), [7, 7, 7]);
        let u = d(r#"{"distribution": "uniform", "min": 2, "max": 4}"#).sample(&mut rng, 200);
        assert!(u.iter().all(|v| (2..=4).contains(v)) && u.contains(&2) && u.contains(&4));
        let z = d(r#"{"distribution": "zipf", "alpha": 2.0, "max": 10}"#).sample(&mut rng, 500);
        assert!(z.iter().all(|v| (1..=10).contains(v)));
        assert!(z.iter().filter(|v| **v == 1).count() > 200, "zipf(2): about 61% ones");
        let p = d(r#"{"distribution": "poisson", "alpha": 4}"#).sample(&mut rng, 2000);
        let mean = p.iter().sum::<u64>() as f64 / p.len() as f64;
        assert!((3.7..4.3).contains(&mean), "poisson mean {mean}");
        let big = d(r#"{"distribution": "poisson", "alpha": 100, "max": 105}"#).sample(&mut rng, 500);
        assert!(big.iter().all(|v| *v <= 105) && big.iter().any(|v| *v < 95));
        let l = d(r#"{"distribution": "lognormal", "average": 1000, "max": 5000}"#).sample(&mut rng, 400);
        let mean = l.iter().sum::<u64>() as f64 / l.len() as f64;
        assert!((850.0..=1001.0).contains(&mean) && l.iter().all(|v| *v <= 5000), "scaled to 1000 then capped: {mean}");
        let l = d(r#"{"distribution": "lognormal", "mean": 3.0, "sigma": 0.0}"#).sample(&mut rng, 2);
        assert_eq!(l, [20, 20], "e^3 ≈ 20.09");
    }

    #[test]
    fn bad_configs_name_the_file_and_field() {
        let p = Path::new("cfg.json");
        let err = parse(p, &PUBLISHED.replace("\"uniform\",\n            \"min\": 12", "\"gamma\",\n            \"min\": 12")).unwrap_err();
        assert!(err.to_string().contains("cfg.json:") && err.to_string().contains("gamma"), "{err}");
        let err = parse(p, &PUBLISHED.replace("\"average\": 1000", "\"average\": 1000, \"sigma\": 1")).unwrap_err();
        assert!(err.to_string().contains("prompt_input.prefix_num_tokens"), "{err}");
        let err = parse(p, &PUBLISHED.replace("generate_conversations", "other")).unwrap_err();
        assert!(err.to_string().contains("filetype"), "{err}");
        let err = parse(p, &PUBLISHED.replace("\"print_stats\"", "\"bogus\": 1, \"print_stats\"")).unwrap_err();
        assert!(err.to_string().contains("cfg.json:5:") && err.to_string().contains("bogus"), "{err}");
        assert_eq!(crate::core::error::exit_code(&err), 2);
    }
}
