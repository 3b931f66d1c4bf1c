//! A recorded run as a workload (`--replay DIR`, and the second arm of `--ab`): every
//! conversation it replayed, each turn sent again exactly as it was then — the same messages
//! (history, documents and the first run's answers) or the same rendered prompt.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use super::files::hash_file;
use super::{Conversation, ExactPrompt, SourceFile, Turn};
use crate::core::audit::{expand_transcripts, read_lines, Transcript, TRANSCRIPTS_FILE};
use crate::core::record::read_records;
use crate::core::results::TURNS_FILE;
use crate::core::UsageError;

/// The conversations of the results folder `dir`, in the order they started.
pub fn load_recorded(dir: &Path) -> Result<(Vec<Conversation>, Vec<SourceFile>)> {
    let path = dir.join(TRANSCRIPTS_FILE);
    if !path.is_file() {
        return Err(UsageError::new(format!(
            "--replay {}: no {TRANSCRIPTS_FILE} there (a results folder of turnbench 0.1 with exact prompts is needed)",
            dir.display()
        ))
        .into());
    }
    let mut lines: Vec<Transcript> = read_lines(&path).map_err(|e| UsageError::new(format!("--replay: {e:#}")))?;
    expand_transcripts(&mut lines);
    let tags: HashMap<String, Vec<String>> = read_records(&dir.join(TURNS_FILE))
        .map(|(records, _)| records.into_iter().map(|r| (r.conversation_id, r.tags)).collect())
        .unwrap_or_default();
    // Lines of one replay share (test, conversation, level, session); turn 1 starts a replay.
    let mut out: Vec<Conversation> = Vec::new();
    let mut current: HashMap<(u32, String, Option<String>, Option<u32>), usize> = HashMap::new();
    for line in lines.into_iter().filter(|l| !l.key.warmup) {
        let k = line.key;
        let chain = (k.test, k.conversation_id.clone(), k.level, k.session);
        let index = match current.get(&chain) {
            Some(&i) if k.turn > 1 => i,
            _ => {
                out.push(Conversation {
                    title: format!("replay of {}", k.conversation_id),
                    tags: tags.get(&k.conversation_id).cloned().unwrap_or_default(),
                    system: None,
                    turns: Vec::new(),
                    id: k.conversation_id,
                });
                current.insert(chain, out.len() - 1);
                out.len() - 1
            }
        };
        let messages = line.messages.unwrap_or_default();
        let user = messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()).unwrap_or_default();
        out[index].turns.push(Turn {
            user,
            max_tokens: line.max_tokens.max(1),
            attachments: vec![],
            rag: vec![],
            assistant: None,
            exact: Some(ExactPrompt { messages, prompt: line.prompt }),
        });
    }
    if out.is_empty() {
        return Err(UsageError::new(format!("--replay {}: the run recorded no turn to replay", dir.display())).into());
    }
    Ok((out, vec![hash_file(&path)?]))
}
