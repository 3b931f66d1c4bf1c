//! Conversation sources (`--workload`): the suite, or one of the generators and importers next
//! to this module. Files are read (and their errors reported) when the plan is built, before any
//! server starts; suite selection is checked then with estimated counts and made final once the
//! server's tokenizer is up.

use std::path::PathBuf;

use anyhow::Result;

use super::select::{select, Selection, SelectionFilter};
use super::tokens::CountTokens;
use super::{load::load_suite, Conversation, SourceFile, Suite};
use crate::core::UsageError;

/// Where the conversations of a run come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// The conversation suite (`data`, `rag_data`) and its selection.
    Suite,
    /// A folder of documents: code or text by extension, N conversations × T turns.
    Docs,
    /// Multi-round QA: shared system prompt, per-user history, synthetic and seeded.
    Multiround,
    /// Synthetic conversations generated from text files by a JSON config.
    Synthetic,
    /// A ShareGPT JSON file.
    Sharegpt,
    /// A JSON/JSONL file of OpenAI `messages` lists.
    Openai,
    /// Snapshot dataset of `{prompt_content, cut_chat_history}`, sent as recorded.
    Snapshot,
    /// A turnbench results folder (`--replay DIR`): its exact prompts, sent again.
    Replay,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Suite => "suite",
            WorkloadKind::Docs => "docs",
            WorkloadKind::Multiround => "multiround",
            WorkloadKind::Synthetic => "synthetic",
            WorkloadKind::Sharegpt => "sharegpt",
            WorkloadKind::Openai => "openai",
            WorkloadKind::Snapshot => "snapshot",
            WorkloadKind::Replay => "replay",
        }
    }
}

/// Everything that says which conversations a run replays.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    /// The suite and its documents (`--data`, `--rag-data`).
    pub data: PathBuf,
    pub rag_data: PathBuf,
    /// Input of the other kinds (`--workload-path`).
    pub path: Option<PathBuf>,
    pub users: usize,
    pub rounds: usize,
    pub system_tokens: usize,
    pub history_tokens: usize,
    pub answer_tokens: u32,
    pub seed: u64,
}

/// A workload read from disk, ready to produce conversations.
#[derive(Debug, Clone)]
pub enum Source {
    Suite(Suite),
    Generated { conversations: Vec<Conversation>, files: Vec<SourceFile> },
}

impl Source {
    /// Reads (and checks) the workload's files: every data error surfaces here.
    pub fn load(spec: &WorkloadSpec) -> Result<Self> {
        let path = || {
            spec.path
                .clone()
                .ok_or_else(|| UsageError::new(format!("--workload {} needs --workload-path", spec.kind.name())))
        };
        let generated = |conversations: Vec<Conversation>, files: Vec<SourceFile>| Source::Generated { conversations, files };
        Ok(match spec.kind {
            WorkloadKind::Suite => Source::Suite(load_suite(&spec.data, &spec.rag_data)?),
            WorkloadKind::Multiround => generated(
                super::multiround::generate(&super::multiround::MultiRound {
                    users: spec.users,
                    rounds: spec.rounds,
                    system_tokens: spec.system_tokens,
                    history_tokens: spec.history_tokens,
                    answer_tokens: spec.answer_tokens,
                    seed: spec.seed,
                }),
                vec![],
            ),
            WorkloadKind::Docs => {
                let p = path()?;
                let (c, files) = super::docs::generate(&p, spec.users, spec.rounds, spec.answer_tokens, spec.seed)?;
                generated(c, files)
            }
            WorkloadKind::Synthetic => {
                let p = path()?;
                let (c, files) = super::synthetic::generate_from_config(&p, spec.seed)?;
                generated(c, files)
            }
            WorkloadKind::Sharegpt => {
                let p = path()?;
                generated(super::sharegpt::load_sharegpt(&p, spec.answer_tokens)?, vec![super::files::hash_file(&p)?])
            }
            WorkloadKind::Openai => {
                let p = path()?;
                generated(super::sharegpt::load_openai(&p, spec.answer_tokens)?, vec![super::files::hash_file(&p)?])
            }
            WorkloadKind::Snapshot => {
                let p = path()?;
                generated(super::snapshot::load_snapshot(&p, spec.answer_tokens)?, vec![super::files::hash_file(&p)?])
            }
            WorkloadKind::Replay => {
                let (c, files) = super::recorded::load_recorded(&path()?)?;
                generated(c, files)
            }
        })
    }

    pub fn files(&self) -> Vec<SourceFile> {
        match self {
            Source::Suite(s) => s.sources.clone(),
            Source::Generated { files, .. } => files.clone(),
        }
    }

    /// The conversations to replay, counted with `counter`: a suite after selection by
    /// `filter`; generated conversations as they are (with every one listed as chosen).
    pub async fn select(&self, filter: &SelectionFilter, counter: &dyn CountTokens) -> Result<Selection> {
        match self {
            Source::Suite(suite) => select(suite, filter, counter).await,
            Source::Generated { conversations, .. } => {
                if conversations.is_empty() {
                    return Err(UsageError::new("the workload has no conversation to replay").into());
                }
                Ok(Selection::all(conversations.clone(), counter))
            }
        }
    }
}
