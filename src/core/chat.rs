//! The chat message: what a conversation turn sends and the server answers, in OpenAI's shape.

use serde::{Deserialize, Serialize};

/// One OpenAI chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.to_string(), content: content.into() }
    }
}
