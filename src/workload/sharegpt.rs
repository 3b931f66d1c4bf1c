//! Importers: ShareGPT (`[{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}]`)
//! and the OpenAI `messages` format (a JSON array or JSONL of `{"messages": [{role, content}]}`
//! or of bare message lists). User messages become turns; the model's live answers become
//! history (DESIGN §4), and each recorded answer's length (estimated tokens) becomes that turn's
//! `max_tokens` (`--answer-tokens` when the data has no answer).

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::generate::estimate_tokens;
use super::files::read_json_list;
use super::plain_turn;
use super::Conversation;
use crate::core::UsageError;

/// One message of an imported conversation: (role, text), roles normalised to
/// `system` / `user` / `assistant`.
type Message = (String, String);

fn role(name: &str) -> Option<&'static str> {
    match name {
        "system" => Some("system"),
        "human" | "user" => Some("user"),
        "gpt" | "assistant" | "chatgpt" | "bing" | "bard" | "model" => Some("assistant"),
        _ => None,
    }
}

/// Builds a conversation from messages; `None` when it has no user message.
pub fn from_messages(id: String, tag: &str, messages: &[Message], default_max_tokens: u32) -> Option<Conversation> {
    let mut system = None;
    let mut turns: Vec<super::Turn> = Vec::new();
    for (r, text) in messages {
        match r.as_str() {
            "system" if turns.is_empty() => system = Some(text.clone()),
            "user" => turns.push(plain_turn(text.clone(), default_max_tokens)),
            "assistant" => {
                if let Some(last) = turns.last_mut() {
                    last.max_tokens = estimate_tokens(text).clamp(1, u32::MAX as u64) as u32;
                }
            }
            _ => {}
        }
    }
    (!turns.is_empty()).then(|| Conversation { title: id.clone(), id, tags: vec![tag.into()], system, turns })
}

fn bad(path: &Path, i: usize, what: &str) -> anyhow::Error {
    UsageError::new(format!("{}: entry {i}: {what}", path.display())).into()
}

pub fn load_sharegpt(path: &Path, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for (i, entry) in read_json_list(path)?.iter().enumerate() {
        let msgs = entry["conversations"].as_array().ok_or_else(|| bad(path, i, "no `conversations` list"))?;
        let messages: Vec<Message> = msgs
            .iter()
            .filter_map(|m| Some((role(m["from"].as_str()?)?.to_string(), m["value"].as_str()?.to_string())))
            .collect();
        let id = entry["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("sharegpt-{i}"));
        out.extend(from_messages(id, "sharegpt", &messages, default_max_tokens));
    }
    Ok(out)
}

fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // Content parts: keep the text parts.
        Value::Array(parts) => Some(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n")),
        _ => None,
    }
}

pub fn load_openai(path: &Path, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for (i, entry) in read_json_list(path)?.iter().enumerate() {
        let msgs = entry["messages"].as_array().or(entry.as_array()).ok_or_else(|| bad(path, i, "no `messages` list"))?;
        let messages: Vec<Message> = msgs
            .iter()
            .filter_map(|m| Some((role(m["role"].as_str()?)?.to_string(), content_text(&m["content"])?)))
            .collect();
        let id = entry["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("openai-{i}"));
        out.extend(from_messages(id, "openai", &messages, default_max_tokens));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/workloads").join(name)
    }

    #[test]
    fn sharegpt_example_imports() {
        let c = load_sharegpt(&data("sharegpt.json"), 77).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "sg-1");
        assert_eq!(c[0].turns.len(), 2);
        assert_eq!(c[0].system.as_deref(), Some("You are a concise assistant."));
        assert_eq!(c[0].turns[0].max_tokens, 12, "answer length from the recorded answer");
        assert_eq!(c[1].turns.len(), 1);
        assert_eq!(c[1].turns[0].max_tokens, 77, "no recorded answer: default");
    }

    #[test]
    fn openai_example_imports_jsonl() {
        let c = load_openai(&data("openai.jsonl"), 50).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].turns.len(), 2);
        assert_eq!(c[1].turns[0].user, "part one\npart two");
    }
}
