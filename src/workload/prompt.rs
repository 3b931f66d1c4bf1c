//! The prompt each turn sends: system prompt, active RAG documents, attachments, and the history
//! of real answers. One builder serves the replayer (live answers) and selection (peak-context
//! estimates), so both agree on what a turn's prompt is.


use super::{Attachment, Conversation, Document, RagAction, RagPosition};
use crate::core::chat::ChatMessage;
use crate::core::record::RagPhase;

/// What turn `i` sends, and its RAG context.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnPrompt {
    pub messages: Vec<ChatMessage>,
    /// A replayed turn in completion mode: the rendered prompt to send as it is.
    pub exact_prompt: Option<String>,
    pub rag_phase: Option<RagPhase>,
    pub rag_actions: Vec<String>,
    pub max_tokens: u32,
}

#[derive(Debug, Clone)]
struct ActiveDocument {
    document: Document,
    position: RagPosition,
    /// Index of the turn whose user message holds it (user position only).
    turn: usize,
}

#[derive(Debug, Clone)]
struct HistoryTurn {
    user: String,
    attachments: Vec<Attachment>,
    assistant: Option<String>,
}

/// Replays one conversation's prompt state: call [`begin_turn`](Self::begin_turn), send, then
/// [`finish_turn`](Self::finish_turn) with the model's answer, which becomes history.
#[derive(Debug, Clone)]
pub struct ConversationState<'a> {
    conversation: &'a Conversation,
    active: Vec<ActiveDocument>,
    history: Vec<HistoryTurn>,
    ever_injected: bool,
}

impl<'a> ConversationState<'a> {
    pub fn new(conversation: &'a Conversation) -> Self {
        Self { conversation, active: Vec::new(), history: Vec::new(), ever_injected: false }
    }

    /// Index of the next turn to begin.
    pub fn next_turn(&self) -> usize {
        self.history.len()
    }

    /// Applies turn `next_turn()`'s RAG actions and returns its prompt.
    ///
    /// Panics if called twice without `finish_turn` or past the last turn (a replayer bug).
    pub fn begin_turn(&mut self) -> TurnPrompt {
        let index = self.history.len();
        assert!(
            self.history.last().is_none_or(|h| h.assistant.is_some()),
            "begin_turn called before finish_turn"
        );
        let turn = &self.conversation.turns[index];
        for action in &turn.rag {
            match action {
                RagAction::Inject { documents, position } => {
                    for document in documents {
                        self.active.retain(|a| a.document.id != document.id);
                        self.active.push(ActiveDocument {
                            document: document.clone(),
                            position: *position,
                            turn: index,
                        });
                    }
                    self.ever_injected = true;
                }
                RagAction::Remove { ids } => self.active.retain(|a| !ids.contains(&a.document.id)),
            }
        }
        self.history.push(HistoryTurn {
            user: turn.user.clone(),
            attachments: turn.attachments.clone(),
            assistant: None,
        });
        let phase = if !self.active.is_empty() {
            RagPhase::With
        } else if self.ever_injected {
            RagPhase::After
        } else {
            RagPhase::Before
        };
        let rag_phase = self.conversation.uses_rag().then_some(phase);
        let (messages, exact_prompt) = match &turn.exact {
            Some(exact) => (exact.messages.clone(), exact.prompt.clone()),
            None => (self.messages(), None),
        };
        TurnPrompt {
            messages,
            exact_prompt,
            rag_phase,
            rag_actions: turn.rag.iter().map(RagAction::label).collect(),
            max_tokens: turn.max_tokens,
        }
    }

    /// Records the model's answer to the current turn; it is part of every later prompt.
    pub fn finish_turn(&mut self, answer: String) {
        let recorded =
            self.history.len().checked_sub(1).and_then(|i| self.conversation.turns.get(i)).and_then(|t| t.assistant.clone());
        let current = self.history.last_mut().expect("finish_turn before begin_turn");
        current.assistant = Some(recorded.unwrap_or(answer));
    }

    fn messages(&self) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(self.history.len() * 2 + 1);
        let mut system = self.conversation.system.clone().unwrap_or_default();
        for active in self.active.iter().filter(|a| a.position == RagPosition::System) {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&render_document(&active.document));
        }
        if !system.is_empty() {
            messages.push(ChatMessage::new("system", system));
        }
        for (index, turn) in self.history.iter().enumerate() {
            let mut content = String::new();
            for active in self
                .active
                .iter()
                .filter(|a| a.position == RagPosition::User && a.turn == index)
            {
                content.push_str(&render_document(&active.document));
                content.push_str("\n\n");
            }
            for attachment in &turn.attachments {
                content.push_str(&format!("[Attached: {}]\n{}\n\n", attachment.title, attachment.text));
            }
            content.push_str(&turn.user);
            messages.push(ChatMessage::new("user", content));
            if let Some(answer) = &turn.assistant {
                messages.push(ChatMessage::new("assistant", answer.clone()));
            }
        }
        messages
    }
}

fn render_document(document: &Document) -> String {
    format!("[Document {}: {} ({})]\n{}", document.id, document.title, document.source, document.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Turn;

    fn doc(id: &str) -> Document {
        Document { id: id.into(), title: format!("T{id}"), source: "s".into(), text: format!("text of {id}") }
    }

    fn turn(user: &str, rag: Vec<RagAction>) -> Turn {
        Turn { user: user.into(), max_tokens: 8, attachments: vec![], rag, assistant: None, exact: None }
    }

    #[test]
    fn history_grows_with_answers_and_rag_moves_between_phases() {
        let conversation = Conversation {
            id: "c".into(),
            title: "c".into(),
            tags: vec![],
            system: Some("sys".into()),
            turns: vec![
                turn("q1", vec![]),
                turn("q2", vec![RagAction::Inject { documents: vec![doc("a")], position: RagPosition::System }]),
                turn("q3", vec![RagAction::Remove { ids: vec!["a".into()] }]),
            ],
        };
        let mut state = ConversationState::new(&conversation);
        let p1 = state.begin_turn();
        assert_eq!(p1.messages, vec![ChatMessage::new("system", "sys"), ChatMessage::new("user", "q1")]);
        assert_eq!(p1.rag_phase, Some(RagPhase::Before));
        state.finish_turn("a1".into());
        let p2 = state.begin_turn();
        assert_eq!(p2.rag_phase, Some(RagPhase::With));
        assert!(p2.messages[0].content.starts_with("sys\n\n[Document a:"));
        assert_eq!(p2.messages[2], ChatMessage::new("assistant", "a1"));
        assert_eq!(p2.rag_actions, vec!["inject:a@system".to_string()]);
        state.finish_turn("a2".into());
        let p3 = state.begin_turn();
        assert_eq!(p3.rag_phase, Some(RagPhase::After));
        assert_eq!(p3.messages[0], ChatMessage::new("system", "sys"));
        assert_eq!(p3.messages.len(), 6);
    }

    #[test]
    fn user_position_documents_stay_in_their_message_until_removed() {
        let conversation = Conversation {
            id: "c".into(),
            title: "c".into(),
            tags: vec![],
            system: None,
            turns: vec![
                turn("q1", vec![RagAction::Inject { documents: vec![doc("a")], position: RagPosition::User }]),
                turn("q2", vec![]),
                turn("q3", vec![RagAction::Remove { ids: vec!["a".into()] }]),
            ],
        };
        let mut state = ConversationState::new(&conversation);
        let p1 = state.begin_turn();
        assert!(p1.messages[0].content.starts_with("[Document a:"));
        state.finish_turn("a1".into());
        let p2 = state.begin_turn();
        assert!(p2.messages[0].content.starts_with("[Document a:"), "document stays in turn 1's message");
        state.finish_turn("a2".into());
        let p3 = state.begin_turn();
        assert_eq!(p3.messages[0].content, "q1", "removal strips it from history");
    }
}
