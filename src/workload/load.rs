//! Loading and validating `conversations.json` and `rag_data.json`.
//!
//! Both files are parsed strictly (unknown keys are errors, `version` must be 1) into raw structs,
//! checked, and resolved into the types of [`super`]: RAG ids become documents, generated
//! attachments become text, `max_tokens` gets its default.
//!
//! Every problem is a [`UsageError`] of the form `FILE:LINE:COL: JSON.PATH: what is wrong`.
//! Syntax, type and unknown-key errors come from serde (`serde_path_to_error` gives the path,
//! serde_json the line and column). Semantic errors (unknown RAG document, duplicate id, …) are
//! found after parsing; their position comes from [`locate`], a tiny JSON walker that finds the
//! byte offset of the value at a path in the raw text.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::generate::{self, GeneratorKind, MAX_GENERATED_TOKENS};
use super::{
    Attachment, Conversation, Document, RagAction, RagPosition, SourceFile, Suite, Turn, DEFAULT_MAX_TOKENS,
};
use crate::core::error::UsageError;
use crate::core::hash::sha256_hex;
use super::positions::{line_col, locate};

/// The only format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// Loads, validates and resolves a suite. Every error is a [`UsageError`] naming file, line,
/// column and JSON path.
pub fn load_suite(conversations: &Path, rag: &Path) -> anyhow::Result<Suite> {
    let rag_text = read(rag)?;
    let conv_text = read(conversations)?;
    let rag_name = rag.display().to_string();
    let conv_name = conversations.display().to_string();
    let documents = parse_rag(&rag_name, &rag_text)?;
    let conversations = parse_conversations(&conv_name, &conv_text, &documents)?;
    Ok(Suite {
        conversations,
        sources: vec![
            SourceFile { path: conv_name, sha256: sha256_hex(conv_text.as_bytes()) },
            SourceFile { path: rag_name, sha256: sha256_hex(rag_text.as_bytes()) },
        ],
    })
}

/// Parses and validates the text of a `rag_data.json`; `file` is used in messages.
pub fn parse_rag(file: &str, text: &str) -> anyhow::Result<Vec<Document>> {
    let raw: RawRagFile = parse_strict(file, text)?;
    let mut errors = Errors::new(file, text);
    check_version(&mut errors, raw.version);
    let mut seen = HashMap::new();
    for (i, d) in raw.documents.iter().enumerate() {
        if d.id.trim().is_empty() {
            errors.at(format!("documents[{i}].id"), "document id is empty");
        } else if let Some(first) = seen.insert(d.id.as_str(), i) {
            errors.at(
                format!("documents[{i}].id"),
                format!("duplicate document id \"{}\" (first used by documents[{first}])", d.id),
            );
        }
        if d.text.trim().is_empty() {
            errors.at(format!("documents[{i}].text"), "document text is empty");
        }
    }
    errors.finish()?;
    Ok(raw
        .documents
        .into_iter()
        .map(|d| Document { id: d.id, title: d.title, source: d.source, text: d.text })
        .collect())
}

/// Parses, validates and resolves the text of a `conversations.json` against `documents`.
pub fn parse_conversations(file: &str, text: &str, documents: &[Document]) -> anyhow::Result<Vec<Conversation>> {
    let raw: RawSuite = parse_strict(file, text)?;
    let mut errors = Errors::new(file, text);
    check_version(&mut errors, raw.version);
    if raw.conversations.is_empty() {
        errors.at("conversations", "the suite has no conversations");
    }
    let by_id: HashMap<&str, &Document> = documents.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(raw.conversations.len());
    for (c, conv) in raw.conversations.into_iter().enumerate() {
        let at = format!("conversations[{c}]");
        if conv.id.trim().is_empty() {
            errors.at(format!("{at}.id"), "conversation id is empty");
        } else if let Some(first) = seen.insert(conv.id.clone(), c) {
            errors.at(
                format!("{at}.id"),
                format!("duplicate conversation id \"{}\" (first used by conversations[{first}])", conv.id),
            );
        }
        for (t, tag) in conv.tags.iter().enumerate() {
            if tag.trim().is_empty() {
                errors.at(format!("{at}.tags[{t}]"), "tag is empty");
            }
        }
        if conv.turns.is_empty() {
            errors.at(format!("{at}.turns"), "conversation has no turns");
        }
        let mut active: HashSet<String> = HashSet::new();
        let mut turns = Vec::with_capacity(conv.turns.len());
        for (t, turn) in conv.turns.into_iter().enumerate() {
            let at = format!("{at}.turns[{t}]");
            if turn.user.trim().is_empty() {
                errors.at(format!("{at}.user"), "turn has empty `user` text");
            }
            if turn.max_tokens == Some(0) {
                errors.at(format!("{at}.max_tokens"), "max_tokens must be at least 1");
            }
            let attachments = turn
                .attachments
                .into_iter()
                .enumerate()
                .filter_map(|(a, raw)| resolve_attachment(&mut errors, &format!("{at}.attachments[{a}]"), raw))
                .collect();
            let mut rag = Vec::with_capacity(turn.rag.len());
            for (r, action) in turn.rag.into_iter().enumerate() {
                let at = format!("{at}.rag[{r}]");
                if let Some(action) = resolve_rag(&mut errors, &at, action, &by_id, &mut active) {
                    rag.push(action);
                }
            }
            turns.push(Turn {
                user: turn.user,
                max_tokens: turn.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                attachments,
                rag,
                assistant: None,
                exact: None,
            });
        }
        out.push(Conversation { id: conv.id, title: conv.title, tags: conv.tags, system: conv.system, turns });
    }
    errors.finish()?;
    Ok(out)
}

fn resolve_attachment(errors: &mut Errors, at: &str, raw: RawAttachment) -> Option<Attachment> {
    match (raw.text, raw.generate) {
        (Some(text), None) => {
            if text.trim().is_empty() {
                errors.at(format!("{at}.text"), "attachment text is empty");
            }
            Some(Attachment { title: raw.title, text })
        }
        (None, Some(g)) => {
            let Some(kind) = GeneratorKind::parse(&g.kind) else {
                let kinds: Vec<&str> = GeneratorKind::ALL.iter().map(|(n, _)| *n).collect();
                errors.at(
                    format!("{at}.generate.kind"),
                    format!("unknown generator kind \"{}\" (expected one of: {})", g.kind, kinds.join(", ")),
                );
                return None;
            };
            if g.tokens == 0 || g.tokens > MAX_GENERATED_TOKENS {
                errors.at(
                    format!("{at}.generate.tokens"),
                    format!("tokens must be between 1 and {MAX_GENERATED_TOKENS}, got {}", g.tokens),
                );
                return None;
            }
            Some(Attachment { title: raw.title, text: generate::generate(kind, g.tokens, g.seed) })
        }
        (Some(_), Some(_)) => {
            errors.at(at, "attachment has both `text` and `generate`; give exactly one");
            None
        }
        (None, None) => {
            errors.at(at, "attachment needs `text` or `generate`");
            None
        }
    }
}

fn resolve_rag(
    errors: &mut Errors,
    at: &str,
    raw: RawRagAction,
    by_id: &HashMap<&str, &Document>,
    active: &mut HashSet<String>,
) -> Option<RagAction> {
    match (raw.inject, raw.remove) {
        (Some(ids), None) => {
            let Some(position) = raw.position else {
                errors.at(at, "`inject` needs a `position` (\"system\" or \"user\")");
                return None;
            };
            if ids.is_empty() {
                errors.at(format!("{at}.inject"), "`inject` lists no documents");
            }
            let mut documents = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                match by_id.get(id.as_str()) {
                    None => errors.at(format!("{at}.inject[{i}]"), format!("unknown RAG document \"{id}\"")),
                    Some(_) if !active.insert(id.clone()) => errors.at(
                        format!("{at}.inject[{i}]"),
                        format!("RAG document \"{id}\" is already active; remove it before injecting it again"),
                    ),
                    Some(doc) => documents.push((*doc).clone()),
                }
            }
            Some(RagAction::Inject { documents, position })
        }
        (None, Some(ids)) => {
            if raw.position.is_some() {
                errors.at(format!("{at}.position"), "`position` only applies to `inject`");
            }
            if ids.is_empty() {
                errors.at(format!("{at}.remove"), "`remove` lists no documents");
            }
            for (i, id) in ids.iter().enumerate() {
                if !active.remove(id) {
                    let why = if by_id.contains_key(id.as_str()) {
                        format!("cannot remove RAG document \"{id}\": it is not active at this turn")
                    } else {
                        format!("unknown RAG document \"{id}\"")
                    };
                    errors.at(format!("{at}.remove[{i}]"), why);
                }
            }
            Some(RagAction::Remove { ids })
        }
        (Some(_), Some(_)) => {
            errors.at(at, "a RAG action has either `inject` or `remove`, not both");
            None
        }
        (None, None) => {
            errors.at(at, "a RAG action needs `inject` (with `position`) or `remove`");
            None
        }
    }
}

fn check_version(errors: &mut Errors, version: u32) {
    if version != FORMAT_VERSION {
        errors.at("version", format!("unsupported format version {version} (this build reads version {FORMAT_VERSION})"));
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    use crate::core::config::{read_limited, MAX_DATA_BYTES};
    read_limited(path, MAX_DATA_BYTES).map_err(|e| UsageError::new(format!("{}: cannot read: {e}", path.display())).into())
}


/// Strict typed parse; on failure, a `FILE:LINE:COL: PATH: message` usage error. A wrong
/// `version` wins over other errors (a file of another version fails for that reason).
fn parse_strict<T: DeserializeOwned>(file: &str, text: &str) -> anyhow::Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let result = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => de.end().map(|()| v).map_err(|e| (".".to_string(), e)),
        Err(err) => Err((err.path().to_string(), err.into_inner())),
    };
    match result {
        Ok(v) => Ok(v),
        Err((path, inner)) => {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
                if let Some(v) = map.get("version").filter(|v| v.as_u64() != Some(FORMAT_VERSION.into())) {
                    let mut errors = Errors::new(file, text);
                    errors.at("version", format!("unsupported format version {v} (this build reads version {FORMAT_VERSION})"));
                    return Err(errors.finish().unwrap_err());
                }
            }
            let message = inner.to_string();
            let message = match message.rfind(" at line ") {
                Some(i) => &message[..i],
                None => &message,
            };
            Err(UsageError::new(format!("{file}:{}:{}: {path}: {message}", inner.line(), inner.column())).into())
        }
    }
}

/// Collects semantic errors with their positions.
struct Errors<'a> {
    file: &'a str,
    text: &'a str,
    messages: Vec<String>,
}

impl<'a> Errors<'a> {
    const MAX: usize = 20;

    fn new(file: &'a str, text: &'a str) -> Self {
        Self { file, text, messages: Vec::new() }
    }

    fn at(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let (line, col) = locate(self.text, &path).map(|o| line_col(self.text, o)).unwrap_or((1, 1));
        self.messages.push(format!("{}:{line}:{col}: {path}: {}", self.file, message.into()));
    }

    fn finish(self) -> anyhow::Result<()> {
        if self.messages.is_empty() {
            return Ok(());
        }
        let n = self.messages.len();
        let mut shown: Vec<String> = self.messages.into_iter().take(Self::MAX).collect();
        if n > Self::MAX {
            shown.push(format!("… and {} more errors", n - Self::MAX));
        }
        Err(UsageError::new(shown.join("\n")).into())
    }
}

// ---- raw file formats -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRagFile {
    version: u32,
    documents: Vec<RawDocument>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    id: String,
    title: String,
    source: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    version: u32,
    conversations: Vec<RawConversation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConversation {
    id: String,
    title: String,
    tags: Vec<String>,
    #[serde(default)]
    system: Option<String>,
    turns: Vec<RawTurn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    user: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    attachments: Vec<RawAttachment>,
    #[serde(default)]
    rag: Vec<RawRagAction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttachment {
    title: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    generate: Option<RawGenerate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerate {
    kind: String,
    tokens: u64,
    #[serde(default)]
    seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRagAction {
    #[serde(default)]
    inject: Option<Vec<String>>,
    #[serde(default)]
    position: Option<RagPosition>,
    #[serde(default)]
    remove: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
  "version": 1,
  "conversations": [
    { "id": "a", "tags": ["x", "y"], "turns": [ { "user": "hi \"there\"" }, {"user":"b"} ] },
    {
      "id": "b",
      "nested": { "turns": [1, [2, 3], {"k": "v"}] },
      "turns": [
        { "user": "q", "rag": [ { "inject": ["d1", "d2"], "position": "system" } ] }
      ]
    }
  ]
}"#;

    fn pos(path: &str) -> (usize, usize) {
        line_col(SAMPLE, locate(SAMPLE, path).unwrap_or_else(|| panic!("{path} not found")))
    }

    #[test]
    fn locate_finds_values_by_path() {
        assert_eq!(pos("."), (1, 1));
        assert_eq!(pos("version"), (2, 14));
        assert_eq!(pos("conversations"), (3, 20));
        assert_eq!(pos("conversations[0]"), (4, 5));
        assert_eq!(pos("conversations[0].tags[1]"), (4, 32));
        assert_eq!(pos("conversations[0].turns[1].user"), (4, 85));
        assert_eq!(pos("conversations[1].id"), (6, 13));
        assert_eq!(pos("conversations[1].turns[0].rag[0].inject[1]"), (9, 52));
        assert_eq!(pos("conversations[1].turns[0].rag[0].position"), (9, 71));
    }

    #[test]
    fn locate_misses_absent_paths_and_bad_json() {
        assert_eq!(locate(SAMPLE, "conversations[2]"), None);
        assert_eq!(locate(SAMPLE, "conversations[0].title"), None);
        assert_eq!(locate(SAMPLE, "conversations[1].turns[1]"), None, "the nested `turns` key does not count");
        assert_eq!(locate("{\"a\": [1, 2", "a[5]"), None);
    }

    #[test]
    fn locate_handles_escaped_keys() {
        let text = "{\"a\\\"b\": {\"c\": 5}}";
        assert_eq!(locate(text, "a\"b.c"), Some(15));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
    }
}
