//! Importers: ShareGPT (`[{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}]`)
//! and the OpenAI `messages` format (a JSON array or JSONL of `{"messages": [{role, content}]}`
//! or of bare message lists). User messages become turns; the model's live answers become
//! history (DESIGN §4), and each recorded answer's length (estimated tokens) becomes that turn's
//! `max_tokens` (`--answer-tokens` when the data has no answer).

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::generate::estimate_tokens;
use super::files::{parse_json_list, read_data};
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

fn bad(origin: &str, i: usize, what: &str) -> anyhow::Error {
    UsageError::new(format!("{origin}: entry {i}: {what}")).into()
}

/// The messages of entry `i`: every one must have a known role and text content (a dropped
/// message would change the conversation without a word).
fn messages_of(
    origin: &str,
    i: usize,
    msgs: &[Value],
    role_key: &str,
    text_key: &str,
    text: fn(&Value) -> Option<String>,
) -> Result<Vec<Message>> {
    let mut out = Vec::with_capacity(msgs.len());
    for (j, m) in msgs.iter().enumerate() {
        let name = m[role_key].as_str().ok_or_else(|| bad(origin, i, &format!("message {j}: no `{role_key}` string")))?;
        let r = role(name).ok_or_else(|| {
            bad(origin, i, &format!("message {j}: unknown {role_key} {name:?} (expected system, user/human or assistant/gpt)"))
        })?;
        let t = text(&m[text_key]).ok_or_else(|| {
            bad(origin, i, &format!("message {j}: `{text_key}` is {}, not text", kind_of(&m[text_key])))
        })?;
        out.push((r.to_string(), t));
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null or missing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// No conversation at all is an error naming the file, found before any server starts.
fn non_empty(origin: &str, out: Vec<Conversation>) -> Result<Vec<Conversation>> {
    if out.is_empty() {
        return Err(UsageError::new(format!("{origin}: no conversation with a user message to replay")).into());
    }
    Ok(out)
}

pub fn load_sharegpt(path: &Path, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    sharegpt_from_text(&path.display().to_string(), &read_data(path)?, default_max_tokens)
}

/// ShareGPT conversations from text already read; `origin` names it in errors.
pub fn sharegpt_from_text(origin: &str, text: &str, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for (i, entry) in parse_json_list(origin, text)?.iter().enumerate() {
        let msgs = entry["conversations"].as_array().ok_or_else(|| bad(origin, i, "no `conversations` list"))?;
        let messages = messages_of(origin, i, msgs, "from", "value", |v| v.as_str().map(str::to_string))?;
        let id = entry["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("sharegpt-{i}"));
        out.extend(from_messages(id, "sharegpt", &messages, default_max_tokens));
    }
    non_empty(origin, out)
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
    openai_from_text(&path.display().to_string(), &read_data(path)?, default_max_tokens)
}

/// OpenAI `messages` conversations from text already read; `origin` names it in errors.
pub fn openai_from_text(origin: &str, text: &str, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for (i, entry) in parse_json_list(origin, text)?.iter().enumerate() {
        let msgs = entry["messages"].as_array().or(entry.as_array()).ok_or_else(|| bad(origin, i, "no `messages` list"))?;
        let messages = messages_of(origin, i, msgs, "role", "content", content_text)?;
        let id = entry["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("openai-{i}"));
        out.extend(from_messages(id, "openai", &messages, default_max_tokens));
    }
    non_empty(origin, out)
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

    /// What vLLM's `benchmarks/multi_turn/convert_sharegpt_to_openai.py` writes for a ShareGPT
    /// file: a JSON array (indent 2, non-ASCII kept) of `{"id", "messages": [{role, content}]}`,
    /// the id's `_<part>` suffix dropped. (It keeps only conversations whose every message has a
    /// non-ASCII character, hence the accents.)
    #[test]
    fn vllm_converted_sharegpt_imports_as_the_original() {
        let tmp = tempfile::tempdir().unwrap();
        let sharegpt = tmp.path().join("sharegpt.json");
        std::fs::write(
            &sharegpt,
            r#"[{"id": "hiWPlMD_0", "conversations": [
                {"from": "human", "value": "Résumé the café's menu."},
                {"from": "gpt", "value": "Croissant, café au lait, crème brûlée — all in French style."},
                {"from": "human", "value": "Which one is naïve to order?"},
                {"from": "gpt", "value": "None — order what you like, señor."}]}]"#,
        )
        .unwrap();
        let converted = tmp.path().join("sharegpt_conv_128.json");
        std::fs::write(
            &converted,
            r#"[
  {
    "id": "hiWPlMD",
    "messages": [
      {
        "role": "user",
        "content": "Résumé the café's menu."
      },
      {
        "role": "assistant",
        "content": "Croissant, café au lait, crème brûlée — all in French style."
      },
      {
        "role": "user",
        "content": "Which one is naïve to order?"
      },
      {
        "role": "assistant",
        "content": "None — order what you like, señor."
      }
    ]
  }
]"#,
        )
        .unwrap();
        let a = load_sharegpt(&sharegpt, 50).unwrap();
        let b = load_openai(&converted, 50).unwrap();
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(b[0].id, "hiWPlMD");
        assert_eq!(b[0].system, a[0].system);
        assert_eq!(b[0].turns, a[0].turns, "same user turns and answer lengths");
        assert_eq!(b[0].turns.len(), 2);
        assert_eq!(b[0].turns[1].user, "Which one is naïve to order?");
        assert_eq!(b[0].turns[0].max_tokens, 15, "the recorded answer's estimated length");
    }

    #[test]
    fn bad_entries_are_errors_naming_the_file_not_silently_dropped() {
        let err = openai_from_text("d.jsonl", r#"{"messages": [{"role": "wizard", "content": "hi"}]}"#, 8).unwrap_err();
        assert!(err.to_string().starts_with("d.jsonl: entry 0: message 0: unknown role \"wizard\""), "{err}");
        let err = openai_from_text("d.jsonl", r#"{"messages": [{"role": "user", "content": null}]}"#, 8).unwrap_err();
        assert!(err.to_string().contains("`content` is null"), "{err}");
        let err = sharegpt_from_text("s.json", r#"[{"conversations": [{"from": "gpt", "value": "only an answer"}]}]"#, 8)
            .unwrap_err();
        assert!(err.to_string().starts_with("s.json: no conversation"), "{err}");
        assert!(err.is::<UsageError>());
    }
}
