//! Snapshot datasets (`--workload snapshot`): a JSON array or JSONL of
//! `{"prompt_content": "...", "cut_chat_history": [{"role", "content"}, …], "max_tokens"?}`,
//! sent as recorded. Each snapshot becomes one conversation whose turns are the history's user
//! messages followed by `prompt_content`; the history's assistant messages are the *recorded*
//! answers (`Turn::assistant`), so every prompt, the last one included, is exactly the recorded
//! chat and never depends on what the model answers.

use std::path::Path;

use anyhow::Result;

use super::generate::estimate_tokens;
use super::files::{parse_json_list, read_data};
use super::plain_turn;
use super::Conversation;
use crate::core::UsageError;

pub fn load_snapshot(path: &Path, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    snapshot_from_text(&path.display().to_string(), &read_data(path)?, default_max_tokens)
}

/// Snapshots from text already read; `origin` names it in errors.
pub fn snapshot_from_text(origin: &str, text: &str, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    let bad = |i: usize, what: String| -> anyhow::Error { UsageError::new(format!("{origin}: entry {i}: {what}")).into() };
    let mut out = Vec::new();
    for (i, entry) in parse_json_list(origin, text)?.iter().enumerate() {
        let prompt = entry["prompt_content"].as_str().ok_or_else(|| bad(i, "no `prompt_content` string".into()))?;
        let mut system = None;
        let mut turns: Vec<super::Turn> = Vec::new();
        let history = match &entry["cut_chat_history"] {
            serde_json::Value::Null => &[][..],
            serde_json::Value::Array(a) => a.as_slice(),
            _ => return Err(bad(i, "`cut_chat_history` is not a list".into())),
        };
        for (j, m) in history.iter().enumerate() {
            let (Some(role), Some(content)) = (m["role"].as_str(), m["content"].as_str()) else {
                return Err(bad(i, format!("cut_chat_history[{j}]: needs `role` and `content` strings")));
            };
            match role {
                "system" if turns.is_empty() => system = Some(content.to_string()),
                "user" => turns.push(plain_turn(content, default_max_tokens)),
                "assistant" => match turns.last_mut() {
                    Some(last) if last.assistant.is_none() => {
                        last.assistant = Some(content.to_string());
                        last.max_tokens = estimate_tokens(content).clamp(1, u32::MAX as u64) as u32;
                    }
                    _ => {}
                },
                "system" => {}
                other => return Err(bad(i, format!("cut_chat_history[{j}]: unknown role {other:?}"))),
            }
        }
        // A user message left without a recorded answer gets an empty one: the history stays as
        // recorded.
        for t in &mut turns {
            t.assistant.get_or_insert_with(String::new);
        }
        let max_tokens = match &entry["max_tokens"] {
            serde_json::Value::Null => default_max_tokens,
            v => v
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| *m >= 1)
                .ok_or_else(|| bad(i, format!("max_tokens {v}: must be a whole number between 1 and {}", u32::MAX)))?,
        };
        turns.push(plain_turn(prompt, max_tokens));
        let id = entry["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("snapshot-{i}"));
        out.push(Conversation { title: id.clone(), id, tags: vec!["snapshot".into()], system, turns });
    }
    if out.is_empty() {
        return Err(UsageError::new(format!("{origin}: no snapshot to replay")).into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::prompt::ConversationState;

    #[test]
    fn snapshots_are_sent_as_recorded() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/workloads/snapshot.jsonl");
        let c = load_snapshot(&path, 32).unwrap();
        assert_eq!(c.len(), 2);
        let conv = &c[0];
        assert_eq!(conv.turns.len(), 3);
        let mut state = ConversationState::new(conv);
        for _ in 0..2 {
            state.begin_turn();
            state.finish_turn("LIVE ANSWER".into());
        }
        let last = state.begin_turn();
        let roles: Vec<&str> = last.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant", "user"]);
        assert_eq!(last.messages[2].content, "The build failed at the linker step.");
        assert!(last.messages.iter().all(|m| m.content != "LIVE ANSWER"), "recorded answers, not live ones");
        assert_eq!(last.messages[5].content, "So what should I try next?");
        assert_eq!(last.max_tokens, 64);
        assert_eq!(c[1].turns.len(), 1);
    }

    #[test]
    fn max_tokens_out_of_u32_is_an_error_not_a_wrap() {
        let err = snapshot_from_text("s.jsonl", r#"{"prompt_content": "hi", "max_tokens": 4294967301}"#, 8).unwrap_err();
        assert!(err.to_string().starts_with("s.jsonl: entry 0: max_tokens 4294967301"), "{err}");
        let ok = snapshot_from_text("s.jsonl", r#"{"prompt_content": "hi", "max_tokens": 4294967295}"#, 8).unwrap();
        assert_eq!(ok[0].turns[0].max_tokens, u32::MAX);
    }
}
