//! A folder of documents (`--workload docs --workload-path DIR`): every file is classified as
//! code or text by its extension; conversation `i` is about file `i mod files`, its first turn
//! attaches the file with an instruction from the class's first-turn pool, later turns ask
//! follow-ups from the class's follow-up pool. `--users` conversations × `--rounds` turns.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rand::{Rng, SeedableRng};

use super::files::hash_file;
use super::plain_turn;
use super::{Attachment, Conversation, SourceFile};
use crate::core::UsageError;

const CODE_EXTENSIONS: &[&str] =
    &["rs", "py", "js", "ts", "go", "c", "h", "cc", "cpp", "hpp", "java", "kt", "rb", "sh", "sql", "toml", "yaml", "yml", "json"];

const CODE_FIRST: &[&str] = &[
    "Explain what this code does, step by step.",
    "Review this code: list bugs and risky spots.",
    "Write unit tests for the most important function here.",
];
const CODE_FOLLOW: &[&str] = &[
    "How would you make it faster?",
    "Rewrite the trickiest part more clearly.",
    "What inputs would break it?",
    "Add error handling where it is missing.",
];
const TEXT_FIRST: &[&str] = &[
    "Summarize this document in five bullet points.",
    "What are the key claims of this text?",
    "Write three questions a reader should be able to answer after reading this.",
];
const TEXT_FOLLOW: &[&str] = &[
    "Which part is the least clear, and why?",
    "Give a one-sentence summary for a busy reader.",
    "What is missing from this document?",
    "Turn the main points into a checklist.",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocClass {
    Code,
    Text,
}

pub fn classify(path: &Path) -> DocClass {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if CODE_EXTENSIONS.contains(&ext.as_str()) {
        DocClass::Code
    } else {
        DocClass::Text
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

pub fn generate(dir: &Path, conversations: usize, turns: usize, max_tokens: u32, seed: u64) -> Result<(Vec<Conversation>, Vec<SourceFile>)> {
    let mut files = Vec::new();
    files_under(dir, &mut files).map_err(|e| UsageError::new(format!("cannot read folder {}: {e}", dir.display())))?;
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        // Binary files are not documents; a file past the size limit is an error naming it.
        match crate::core::config::read_limited(f, crate::core::config::MAX_DATA_BYTES) {
            Ok(text) => docs.push((f.clone(), text)),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
            Err(e) => return Err(UsageError::new(format!("cannot read {}: {e}", f.display())).into()),
        }
    }
    if docs.is_empty() {
        return Err(UsageError::new(format!("{}: no text file to build conversations from", dir.display())).into());
    }
    let largest = docs.iter().map(|(_, t)| t.len() as u64).max().unwrap_or(0);
    let bytes = (conversations as u64).saturating_mul(largest);
    if bytes > crate::core::config::MAX_DATA_BYTES * 4 {
        return Err(UsageError::new(format!(
            "{}: --users {conversations} conversations of up to {largest} bytes each: more than {} bytes of prompts",
            dir.display(),
            crate::core::config::MAX_DATA_BYTES * 4
        ))
        .into());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let out = (0..conversations)
        .map(|i| {
            let (path, text) = &docs[i % docs.len()];
            let class = classify(path);
            let (first, follow) = match class {
                DocClass::Code => (CODE_FIRST, CODE_FOLLOW),
                DocClass::Text => (TEXT_FIRST, TEXT_FOLLOW),
            };
            let name = path.strip_prefix(dir).unwrap_or(path).display().to_string();
            let mut t = Vec::new();
            for n in 0..turns.max(1) {
                let pool = if n == 0 { first } else { follow };
                t.push(plain_turn(pool[rng.random_range(0..pool.len())], max_tokens));
            }
            t[0].attachments.push(Attachment { title: name.clone(), text: text.clone() });
            Conversation {
                id: format!("doc-{i:03}"),
                title: name,
                tags: vec!["docs".into(), if class == DocClass::Code { "code" } else { "text" }.into()],
                system: None,
                turns: t,
            }
        })
        .collect();
    let hashes = docs.iter().map(|(p, _)| hash_file(p)).collect::<Result<Vec<_>>>()?;
    Ok((out, hashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_classified_and_pools_used() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/workloads/docs");
        let (c, files) = generate(&dir, 5, 3, 24, 7).unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(files.len(), 3);
        assert!(c.iter().all(|c| c.turns.len() == 3 && c.turns[0].attachments.len() == 1));
        let code = c.iter().find(|c| c.has_tag("code")).unwrap();
        assert!(CODE_FIRST.contains(&code.turns[0].user.as_str()));
        assert!(CODE_FOLLOW.contains(&code.turns[1].user.as_str()));
        let text = c.iter().find(|c| c.has_tag("text")).unwrap();
        assert!(TEXT_FIRST.contains(&text.turns[0].user.as_str()));
        assert_eq!(classify(Path::new("a/b.RS")), DocClass::Code);
        assert_eq!(classify(Path::new("notes.md")), DocClass::Text);
    }
}
