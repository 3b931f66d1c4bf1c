//! Multi-round QA (`--workload multiround`): `users` conversations of `rounds` questions each,
//! all behind one shared system prompt of about `system_tokens` tokens, each user starting with
//! a history of about `history_tokens` tokens of their own, answers of `answer_tokens`. Synthetic
//! and seeded: the same flags give the same conversations.

use super::generate::{generate as generate_text, GeneratorKind};
use super::plain_turn;
use super::{Attachment, Conversation};

#[derive(Debug, Clone, PartialEq)]
pub struct MultiRound {
    pub users: usize,
    pub rounds: usize,
    pub system_tokens: usize,
    pub history_tokens: usize,
    pub answer_tokens: u32,
    pub seed: u64,
}

const QUESTIONS: [&str; 8] = [
    "Which service in this data had the most errors, and when?",
    "Summarize the trend of the busiest hour in two sentences.",
    "What would you check first if latency doubled tomorrow?",
    "List three anomalies and explain each briefly.",
    "Which numbers look inconsistent with the rest?",
    "Propose one alert rule based on this data.",
    "What changed between the first and the last entries?",
    "Explain the data to a new on-call engineer.",
];

pub fn generate(cfg: &MultiRound) -> Vec<Conversation> {
    let system = format!(
        "You are an operations assistant. Reference material shared by every user follows.\n\n{}",
        generate_text(GeneratorKind::Table, cfg.system_tokens as u64, cfg.seed)
    );
    (0..cfg.users)
        .map(|u| {
            let mut turns: Vec<_> = (0..cfg.rounds.max(1))
                .map(|r| plain_turn(format!("User {u}, question {}: {}", r + 1, QUESTIONS[(u + r) % QUESTIONS.len()]), cfg.answer_tokens))
                .collect();
            if cfg.history_tokens > 0 {
                turns[0].attachments.push(Attachment {
                    title: format!("history of user {u}"),
                    text: generate_text(GeneratorKind::Log, cfg.history_tokens as u64, cfg.seed.wrapping_add(1 + u as u64)),
                });
            }
            Conversation {
                id: format!("multiround-user-{u:03}"),
                title: format!("Multi-round QA, user {u}"),
                tags: vec!["multiround".into()],
                system: Some(system.clone()),
                turns,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::generate::estimate_tokens;

    #[test]
    fn users_rounds_and_sizes_follow_the_config() {
        let cfg = MultiRound { users: 4, rounds: 3, system_tokens: 300, history_tokens: 200, answer_tokens: 32, seed: 1 };
        let c = generate(&cfg);
        assert_eq!(c.len(), 4);
        assert!(c.iter().all(|c| c.turns.len() == 3 && c.turns.iter().all(|t| t.max_tokens == 32)));
        assert!(c.windows(2).all(|w| w[0].system == w[1].system), "shared system prompt");
        let sys = estimate_tokens(c[0].system.as_ref().unwrap());
        assert!((280..=340).contains(&sys), "system ≈ 300 tokens, got {sys}");
        let hist = estimate_tokens(&c[1].turns[0].attachments[0].text);
        assert!((180..=220).contains(&hist), "history ≈ 200 tokens, got {hist}");
        assert_ne!(c[0].turns[0].attachments[0].text, c[1].turns[0].attachments[0].text);
        assert_eq!(c, generate(&cfg), "seeded");
    }
}
