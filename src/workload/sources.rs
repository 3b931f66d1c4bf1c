//! Conversation sources of multi-user runs (`--workload`): the suite, or one of the generators
//! and importers next to this module. Files are read (and their errors reported) before any
//! server starts; suite selection needs the server's tokenizer, so conversations are produced
//! once the server is up.

use anyhow::Result;

use super::select::select;
use super::tokens::TokenCounter;
use super::{load::load_suite, Conversation, SourceFile, Suite};
use crate::cli::{RunArgs, WorkloadKind};
use crate::client::Client;
use crate::replay::ServerInfo;
use crate::UsageError;

/// A workload read from disk, ready to produce conversations.
pub enum Source {
    Suite(Suite),
    Generated { conversations: Vec<Conversation>, files: Vec<SourceFile> },
}

impl Source {
    pub fn load(args: &RunArgs) -> Result<Self> {
        let l = &args.load;
        let path = || {
            l.workload_path
                .clone()
                .ok_or_else(|| UsageError::new(format!("--workload {:?} needs --workload-path", l.workload).to_lowercase()))
        };
        let generated = |conversations: Vec<Conversation>, files: Vec<SourceFile>| Source::Generated { conversations, files };
        Ok(match l.workload {
            WorkloadKind::Suite => Source::Suite(load_suite(&args.selection.data, &args.selection.rag_data)?),
            WorkloadKind::Multiround => generated(
                super::multiround::generate(&super::multiround::MultiRound {
                    users: l.users,
                    rounds: l.rounds,
                    system_tokens: l.system_tokens,
                    history_tokens: l.history_tokens,
                    answer_tokens: l.answer_tokens,
                    seed: args.seed,
                }),
                vec![],
            ),
            WorkloadKind::Docs => {
                let p = path()?;
                let (c, files) = super::docs::generate(&p, l.users, l.rounds, l.answer_tokens, args.seed)?;
                generated(c, files)
            }
            WorkloadKind::Synthetic => {
                let p = path()?;
                let (c, files) = super::synthetic::generate_from_config(&p, args.seed)?;
                generated(c, files)
            }
            WorkloadKind::Sharegpt => {
                let p = path()?;
                generated(super::sharegpt::load_sharegpt(&p, l.answer_tokens)?, vec![hash_file(&p)?])
            }
            WorkloadKind::Openai => {
                let p = path()?;
                generated(super::sharegpt::load_openai(&p, l.answer_tokens)?, vec![hash_file(&p)?])
            }
            WorkloadKind::Snapshot => {
                let p = path()?;
                generated(super::snapshot::load_snapshot(&p, l.answer_tokens)?, vec![hash_file(&p)?])
            }
        })
    }

    pub fn files(&self) -> Vec<SourceFile> {
        match self {
            Source::Suite(s) => s.sources.clone(),
            Source::Generated { files, .. } => files.clone(),
        }
    }

    /// The conversations to replay (suite: after `--include-tags`, `--context-size`, … selection).
    pub async fn conversations(self, args: &RunArgs, client: &Client, server: &ServerInfo) -> Result<Vec<Conversation>> {
        match self {
            Source::Generated { conversations, .. } => Ok(conversations),
            Source::Suite(suite) => {
                let counter = if server.has_tokenize {
                    TokenCounter::Server {
                        client: client.http().clone(),
                        base_url: server.base_url.clone(),
                        model: Some(server.model.clone()),
                        api_key: args.api_key.clone(),
                    }
                } else {
                    TokenCounter::Estimate
                };
                let selection = select(&suite, &args.selection, &counter).await?;
                for dropped in &selection.dropped {
                    eprintln!("skipped {}: {}", dropped.id, dropped.reason);
                }
                Ok(selection.chosen.into_iter().map(|c| c.conversation).collect())
            }
        }
    }
}

/// A data file's path and SHA-256, for the manifest.
pub fn hash_file(path: &std::path::Path) -> Result<SourceFile> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())))?;
    Ok(SourceFile {
        path: path.display().to_string(),
        sha256: Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// A user turn with no attachment, RAG or recorded answer.
pub fn plain_turn(user: impl Into<String>, max_tokens: u32) -> super::Turn {
    super::Turn { user: user.into(), max_tokens: max_tokens.max(1), attachments: vec![], rag: vec![], assistant: None }
}

/// Reads a JSON file, or a JSONL file (one value per line), as a list of values.
pub fn read_json_list(path: &std::path::Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| UsageError::new(format!("{}:{}:{}: {e}", path.display(), e.line(), e.column())))?;
        return Ok(v.as_array().cloned().unwrap_or_default());
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line)
            .map_err(|e| UsageError::new(format!("{}:{}:{}: {e}", path.display(), i + 1, e.column())))?;
        out.push(v);
    }
    Ok(out)
}
