//! Snapshot datasets (`--workload snapshot`): a JSON array or JSONL of
//! `{"prompt_content": "...", "cut_chat_history": [{"role", "content"}, …], "max_tokens"?}`,
//! sent as recorded. Each snapshot becomes one conversation whose turns are the history's user
//! messages followed by `prompt_content`; the history's assistant messages are the *recorded*
//! answers (`Turn::assistant`), so every prompt, the last one included, is exactly the recorded
//! chat and never depends on what the model answers.

use std::path::Path;

use anyhow::Result;

use super::generate::estimate_tokens;
use super::files::read_json_list;
use super::plain_turn;
use super::Conversation;
use crate::core::UsageError;

pub fn load_snapshot(path: &Path, default_max_tokens: u32) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for (i, entry) in read_json_list(path)?.iter().enumerate() {
        let prompt = entry["prompt_content"]
            .as_str()
            .ok_or_else(|| UsageError::new(format!("{}: entry {i}: no `prompt_content` string", path.display())))?;
        let mut system = None;
        let mut turns: Vec<super::Turn> = Vec::new();
        for m in entry["cut_chat_history"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let (Some(role), Some(content)) = (m["role"].as_str(), m["content"].as_str()) else { continue };
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
                _ => {}
            }
        }
        // A user message left without a recorded answer gets an empty one: the history stays as
        // recorded.
        for t in &mut turns {
            t.assistant.get_or_insert_with(String::new);
        }
        let max_tokens = entry["max_tokens"].as_u64().map(|m| m as u32).unwrap_or(default_max_tokens);
        turns.push(plain_turn(prompt, max_tokens));
        let id = entry["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("snapshot-{i}"));
        out.push(Conversation { title: id.clone(), id, tags: vec!["snapshot".into()], system, turns });
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
}
