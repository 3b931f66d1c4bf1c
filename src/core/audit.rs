//! What each turn sent and received, kept beside `turns.jsonl` so any run can be audited and
//! replayed exactly: `transcripts.jsonl` (the messages or rendered prompt, the answer text) and
//! `tokens.jsonl` (the prompt's and the answer's token ids, the server's own when it returns
//! them). Both are appended per turn, like the records, and both are compact: a line keeps only
//! what its turn added to the previous turn of the same replay (`shared_messages` messages,
//! `shared_tokens` ids in common with the previous prompt and answer); [`expand_transcripts`] and
//! [`expand_token_ids`] restore the whole prompts.

use std::collections::HashMap;

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::chat::ChatMessage;
use super::hash::sha256_hex;

pub const TRANSCRIPTS_FILE: &str = "transcripts.jsonl";
pub const TOKENS_FILE: &str = "tokens.jsonl";

/// Which turn a line belongs to (the same keys as its `TurnRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnKey {
    pub test: u32,
    pub conversation_id: String,
    pub turn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
    #[serde(default)]
    pub warmup: bool,
}

/// One turn as sent and answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    #[serde(flatten)]
    pub key: TurnKey,
    /// Leading messages equal to the previous turn's messages and its answer (not repeated).
    #[serde(default)]
    pub shared_messages: usize,
    /// The chat messages sent (chat mode), after the shared ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// The prompt sent to `/v1/completions` (completion mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    pub max_tokens: u32,
    /// SHA-256 of what was sent ([`prompt_sha256`]): equal hashes, identical prompts.
    pub prompt_sha256: String,
    pub answer: String,
    pub ok: bool,
}

/// SHA-256 of a prompt as sent: the rendered text in completion mode, else the messages' JSON.
pub fn prompt_sha256(messages: Option<&[ChatMessage]>, prompt: Option<&str>) -> String {
    match (prompt, messages) {
        (Some(text), _) => sha256_hex(text.as_bytes()),
        (None, Some(m)) => sha256_hex(serde_json::to_string(m).unwrap_or_default().as_bytes()),
        (None, None) => sha256_hex(b""),
    }
}

/// One turn's token ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIds {
    #[serde(flatten)]
    pub key: TurnKey,
    /// `server` (`return_token_ids`) or `tokenize` (`/tokenize` of the prompt; no answer ids).
    pub source: String,
    /// Leading prompt ids equal to the previous turn's prompt and answer ids (not repeated).
    #[serde(default)]
    pub shared_tokens: usize,
    /// The prompt's ids after the shared ones.
    pub prompt: Vec<u32>,
    #[serde(default)]
    pub output: Vec<u32>,
}

/// Which replay of which conversation a line belongs to (turns of one replay chain).
fn chain(key: &TurnKey) -> (u32, String, Option<String>, Option<u32>, bool) {
    (key.test, key.conversation_id.clone(), key.level.clone(), key.session, key.warmup)
}

/// Restores every line's whole `messages` (chat mode) from the compact form.
pub fn expand_transcripts(lines: &mut [Transcript]) {
    let mut last: HashMap<_, Vec<ChatMessage>> = HashMap::new();
    for line in lines.iter_mut() {
        let Some(rest) = line.messages.take() else { continue };
        let base = last.get(&chain(&line.key)).filter(|_| line.key.turn > 1);
        let mut full: Vec<ChatMessage> = base.map(|b| b[..line.shared_messages.min(b.len())].to_vec()).unwrap_or_default();
        full.extend(rest);
        let mut next = full.clone();
        next.push(ChatMessage::new("assistant", line.answer.clone()));
        last.insert(chain(&line.key), next);
        line.shared_messages = 0;
        line.messages = Some(full);
    }
}

/// Restores every line's whole prompt ids from the compact form.
pub fn expand_token_ids(lines: &mut [TokenIds]) {
    let mut last: HashMap<_, Vec<u32>> = HashMap::new();
    for line in lines.iter_mut() {
        let base = last.get(&chain(&line.key)).filter(|_| line.key.turn > 1);
        let mut full: Vec<u32> = base.map(|b| b[..line.shared_tokens.min(b.len())].to_vec()).unwrap_or_default();
        full.extend_from_slice(&line.prompt);
        let mut next = full.clone();
        next.extend_from_slice(&line.output);
        last.insert(chain(&line.key), next);
        line.shared_tokens = 0;
        line.prompt = full;
    }
}

/// Reads a JSON-lines file written by a run: every line, in order. A truncated last line (the
/// process died mid-write) is skipped.
pub fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let last = lines.len();
    let mut out = Vec::with_capacity(last);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(_) if i + 1 == last => {}
            Err(e) => anyhow::bail!("{}:{}:{}: {e}", path.display(), i + 1, e.column()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(turn: u32) -> TurnKey {
        TurnKey { conversation_id: "c".into(), turn, ..Default::default() }
    }

    #[test]
    fn compact_lines_expand_to_whole_prompts() {
        let m = |r: &str, c: &str| ChatMessage::new(r, c);
        let mut t = vec![
            Transcript { key: key(1), messages: Some(vec![m("user", "q1")]), answer: "a1".into(), ..Default::default() },
            Transcript { key: key(2), shared_messages: 2, messages: Some(vec![m("user", "q2")]), answer: "a2".into(), ..Default::default() },
        ];
        expand_transcripts(&mut t);
        assert_eq!(t[1].messages.as_deref().unwrap(), [m("user", "q1"), m("assistant", "a1"), m("user", "q2")]);
        let mut ids = vec![
            TokenIds { key: key(1), prompt: vec![1, 2], output: vec![3], ..Default::default() },
            TokenIds { key: key(2), shared_tokens: 3, prompt: vec![9], output: vec![], ..Default::default() },
        ];
        expand_token_ids(&mut ids);
        assert_eq!(ids[1].prompt, [1, 2, 3, 9]);
    }
}
