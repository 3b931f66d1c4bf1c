//! Selecting conversations: ids, tags, context size, limits.
//!
//! Filters apply in this order: `--conversation` (ids), `--include-tags` (any of),
//! `--exclude-tags`, `--context-size` (peak context must fit), then `--max-conversations` (first N
//! in suite order). Every conversation a filter removes is listed in [`Selection::dropped`] with
//! the reason; an empty selection is a [`UsageError`] that says which filters removed what.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::prompt::ConversationState;
use super::tokens::CountTokens;
use super::{Conversation, Suite};
use crate::core::error::UsageError;

/// Which conversations of a suite to replay (`--conversation`, `--include-tags`,
/// `--exclude-tags`, `--context-size`, `--max-conversations`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SelectionFilter {
    /// Conversation ids; empty: all.
    pub conversations: Vec<String>,
    pub include_tags: Vec<String>,
    pub exclude_tags: Vec<String>,
    pub context_size: Option<u64>,
    pub max_conversations: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Selection {
    /// Conversations to replay, in suite order.
    pub chosen: Vec<Candidate>,
    /// Conversations removed by a filter, with the reason, in suite order per filter.
    pub dropped: Vec<Dropped>,
    /// True when `peak_tokens` are estimates (no server tokenizer).
    pub estimated: bool,
    /// Which tokenizer counted the peaks ([`CountTokens::describe`]).
    pub counted_by: String,
}

impl Selection {
    /// Every conversation chosen, none dropped (generated workloads: no peak was counted).
    pub fn all(conversations: Vec<Conversation>, counter: &dyn CountTokens) -> Self {
        let chosen = conversations.into_iter().map(|conversation| Candidate { conversation, peak_tokens: 0, fits: true }).collect();
        Selection { chosen, dropped: vec![], estimated: counter.is_estimate(), counted_by: counter.describe().to_string() }
    }

    /// The chosen conversations, in order.
    pub fn conversations(&self) -> Vec<Conversation> {
        self.chosen.iter().map(|c| c.conversation.clone()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub conversation: Conversation,
    /// Largest context of any turn: prompt tokens (earlier answers counted at their full
    /// `max_tokens`) plus this turn's `max_tokens`.
    pub peak_tokens: u64,
    /// Whether the peak fits `--context-size` (true when no context size is given).
    pub fits: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub id: String,
    pub reason: String,
}

/// Applies `args`' filters to `suite`, counting peak context with `counter`.
pub async fn select(suite: &Suite, args: &SelectionFilter, counter: &dyn CountTokens) -> anyhow::Result<Selection> {
    let mut dropped = Vec::new();
    let mut steps: Vec<String> = Vec::new();
    let mut remaining: Vec<&Conversation> = suite.conversations.iter().collect();

    if !args.conversations.is_empty() {
        let unknown: Vec<&String> =
            args.conversations.iter().filter(|id| !suite.conversations.iter().any(|c| &c.id == *id)).collect();
        if !unknown.is_empty() {
            let valid: Vec<&str> = suite.conversations.iter().map(|c| c.id.as_str()).collect();
            let unknown: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            return Err(UsageError::new(format!(
                "--conversation: unknown conversation id{} {}; valid ids: {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", "),
                valid.join(", ")
            ))
            .into());
        }
        // Conversations not named were not asked for: they are left out silently, not "dropped".
        remaining.retain(|c| args.conversations.contains(&c.id));
    }
    if !args.include_tags.is_empty() {
        let tags = args.include_tags.join(",");
        let flag = format!("--include-tags {tags}");
        filter(&mut remaining, &mut dropped, &mut steps, &flag, |c| {
            if args.include_tags.iter().any(|t| c.has_tag(t)) {
                Ok(())
            } else {
                Err(format!("tags [{}] include none of --include-tags {tags}", c.tags.join(",")))
            }
        });
    }
    if !args.exclude_tags.is_empty() {
        let flag = format!("--exclude-tags {}", args.exclude_tags.join(","));
        filter(&mut remaining, &mut dropped, &mut steps, &flag, |c| {
            match args.exclude_tags.iter().find(|t| c.has_tag(t)) {
                Some(t) => Err(format!("tag {t} is in --exclude-tags")),
                None => Ok(()),
            }
        });
    }

    let approx = if counter.is_estimate() { "~" } else { "" };
    let mut chosen = Vec::with_capacity(remaining.len());
    let before = remaining.len();
    for conversation in remaining {
        let peak_tokens = peak_tokens(conversation, counter).await?;
        let fits = args.context_size.is_none_or(|limit| peak_tokens <= limit);
        if fits {
            chosen.push(Candidate { conversation: conversation.clone(), peak_tokens, fits });
        } else {
            let limit = args.context_size.unwrap_or_default();
            dropped.push(Dropped {
                id: conversation.id.clone(),
                reason: format!("peak {approx}{} tokens > --context-size {limit}", thousands(peak_tokens)),
            });
        }
    }
    if let Some(limit) = args.context_size {
        steps.push(format!("--context-size {limit} removed {} of {before}", before - chosen.len()));
    }

    if let Some(max) = args.max_conversations {
        if chosen.len() > max {
            for extra in chosen.drain(max..) {
                dropped.push(Dropped {
                    id: extra.conversation.id,
                    reason: format!("beyond --max-conversations {max}"),
                });
            }
        }
        if max == 0 {
            steps.push("--max-conversations 0 keeps none".to_string());
        }
    }

    if chosen.is_empty() {
        let how = if steps.is_empty() { "the suite is empty".to_string() } else { steps.join("; ") };
        return Err(UsageError::new(format!("no conversation selected: {how}")).into());
    }
    Ok(Selection { chosen, dropped, estimated: counter.is_estimate(), counted_by: counter.describe().to_string() })
}

fn filter(
    remaining: &mut Vec<&Conversation>,
    dropped: &mut Vec<Dropped>,
    steps: &mut Vec<String>,
    flag: &str,
    keep: impl Fn(&Conversation) -> Result<(), String>,
) {
    let before = remaining.len();
    remaining.retain(|c| match keep(c) {
        Ok(()) => true,
        Err(reason) => {
            dropped.push(Dropped { id: c.id.clone(), reason });
            false
        }
    });
    steps.push(format!("{flag} removed {} of {before}", before - remaining.len()));
}

/// Peak context of `conversation`: the largest, over turns `i`, of turn `i`'s prompt tokens (with
/// every earlier answer standing in at its full `max_tokens`) plus `max_tokens_i`.
///
/// Counted as the prompt with empty answers plus the earlier turns' `max_tokens`, so one count
/// per turn suffices and no placeholder text has to be invented.
pub async fn peak_tokens(conversation: &Conversation, counter: &dyn CountTokens) -> anyhow::Result<u64> {
    let mut state = ConversationState::new(conversation);
    let mut earlier_answers = 0u64;
    let mut peak = 0;
    for turn in &conversation.turns {
        let prompt = state.begin_turn();
        let prompt_tokens = counter
            .count_messages(&prompt.messages)
            .await
            .map_err(|e| e.context(format!("counting tokens of {}", conversation.id)))?;
        peak = peak.max(prompt_tokens + earlier_answers + u64::from(turn.max_tokens));
        earlier_answers += u64::from(turn.max_tokens);
        state.finish_turn(String::new());
    }
    Ok(peak)
}

/// `131200` → `131,200`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The `--list-conversations` text: a header saying how tokens were counted, a table of the chosen
/// conversations, and the dropped ones with reasons.
pub fn render_listing(selection: &Selection) -> String {
    let mut out = String::new();
    if selection.estimated {
        out.push_str("Peak tokens are estimates (~4 chars/token); pass a server to count with its tokenizer.\n");
    } else {
        out.push_str(&format!("Peak tokens counted by the server's tokenizer ({}).\n", selection.counted_by));
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["id", "tags", "turns", "peak tokens", "fits"]);
    let approx = if selection.estimated { "~" } else { "" };
    for c in &selection.chosen {
        table.add_row(vec![
            c.conversation.id.clone(),
            c.conversation.tags.join(","),
            c.conversation.turns.len().to_string(),
            format!("{approx}{}", thousands(c.peak_tokens)),
            if c.fits { "yes" } else { "no" }.to_string(),
        ]);
    }
    out.push_str(&table.to_string());
    out.push('\n');
    out.push_str(&format!("{} conversation(s) selected", selection.chosen.len()));
    if selection.dropped.is_empty() {
        out.push_str(".\n");
    } else {
        out.push_str(&format!(", {} dropped:\n", selection.dropped.len()));
        for d in &selection.dropped {
            out.push_str(&format!("  - {}: {}\n", d.id, d.reason));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(131_200), "131,200");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
