//! Conversations: the suite format, loading and validation, selection, RAG, and the prompt
//! each turn sends.
//!
//! Types here are *resolved*: RAG document ids are replaced by the documents themselves and
//! generated attachments are expanded to text at load time, so the replayer never looks
//! anything up.

pub mod generate;
pub mod load;
pub mod positions;
pub mod prompt;
pub mod select;
pub mod tokens;

// Sources of multi-user workloads (`--workload`).
pub mod docs;
pub mod files;
pub mod multiround;
pub mod recorded;
pub mod sharegpt;
pub mod snapshot;
pub mod sources;
pub mod synthetic;
pub mod vllm_synthetic;

use serde::{Deserialize, Serialize};

use crate::core::ChatMessage;

/// Default `max_tokens` for a turn that does not set one.
pub const DEFAULT_MAX_TOKENS: u32 = 128;

/// A validated suite of conversations.
#[derive(Debug, Clone)]
pub struct Suite {
    pub conversations: Vec<Conversation>,
    /// Files the suite was loaded from, with their SHA-256, for the manifest.
    pub sources: Vec<SourceFile>,
}

pub use crate::core::results::SourceFile;

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub tags: Vec<String>,
    pub system: Option<String>,
    pub turns: Vec<Turn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The user's text for this turn.
    pub user: String,
    /// Answer length asked for (sent as `max_tokens`); `DEFAULT_MAX_TOKENS` when the data omits it.
    pub max_tokens: u32,
    /// Documents attached to this user message (pasted files, logs…), placed before `user`.
    pub attachments: Vec<Attachment>,
    /// RAG actions applied before this turn's prompt is built, in order.
    pub rag: Vec<RagAction>,
    /// Snapshot datasets: the recorded assistant answer to this turn. When set it becomes the
    /// history instead of the model's live answer, so later prompts are sent as recorded.
    pub assistant: Option<String>,
    /// Replays of a recorded run (`--replay`, the second arm of `--ab`): what this turn sent
    /// then, sent again exactly (history, documents and answers included).
    pub exact: Option<ExactPrompt>,
}

/// A turn's prompt exactly as a recorded run sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactPrompt {
    pub messages: Vec<ChatMessage>,
    /// Completion mode: the rendered prompt that was sent.
    pub prompt: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub source: String,
    pub text: String,
}

/// Where injected RAG documents go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RagPosition {
    /// Appended to the system prompt (stays there until removed).
    System,
    /// Placed in this turn's user message (stays in that history message until removed).
    User,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RagAction {
    Inject { documents: Vec<Document>, position: RagPosition },
    Remove { ids: Vec<String> },
}

impl RagAction {
    /// Short label used in records, e.g. `inject:a,b@system` or `remove:a`.
    pub fn label(&self) -> String {
        match self {
            RagAction::Inject { documents, position } => {
                let ids: Vec<&str> = documents.iter().map(|d| d.id.as_str()).collect();
                let pos = match position {
                    RagPosition::System => "system",
                    RagPosition::User => "user",
                };
                format!("inject:{}@{pos}", ids.join(","))
            }
            RagAction::Remove { ids } => format!("remove:{}", ids.join(",")),
        }
    }
}

impl Conversation {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn uses_rag(&self) -> bool {
        self.turns.iter().any(|t| !t.rag.is_empty())
    }
}

/// A user turn with no attachment, RAG or recorded answer.
pub fn plain_turn(user: impl Into<String>, max_tokens: u32) -> Turn {
    Turn { user: user.into(), max_tokens: max_tokens.max(1), attachments: vec![], rag: vec![], assistant: None, exact: None }
}
