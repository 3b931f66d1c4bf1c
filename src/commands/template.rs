//! `turnbench template list|render`: the built-in templates, and the prompt a turn produces.

use anyhow::{Context, Result};

use crate::cli::{TemplateArgs, TemplateCommand, TemplateRenderArgs};
use crate::core::{ChatMessage, UsageError};
use crate::template::{builtin_names, ChatTemplate};

/// `turnbench template render`: prints the prompt turn `turn` of a conversation produces.
pub fn template(args: TemplateArgs) -> Result<()> {
    match args.command {
        TemplateCommand::List => {
            for name in builtin_names() {
                println!("{name}\ttemplates/{name}.jinja");
            }
            Ok(())
        }
        TemplateCommand::Render(r) => {
            let template = ChatTemplate::load(&r.template)?;
            let messages = conversation_messages(&r)?;
            let prompt = template.render(&messages, !r.no_generation_prompt)?;
            print!("{prompt}");
            Ok(())
        }
    }
}

/// The messages a `template render` shows: `--messages FILE` (a JSON list of {role, content}), or
/// turn `--turn` of `--conversation` in `--data` with placeholder answers for earlier turns.
fn conversation_messages(r: &TemplateRenderArgs) -> Result<Vec<ChatMessage>> {
    if let Some(file) = &r.messages {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let messages: Vec<ChatMessage> = serde_json::from_str(&text)
            .map_err(|e| UsageError::new(format!("{}:{}:{}: {e}", file.display(), e.line(), e.column())))?;
        return Ok(messages);
    }
    let suite = crate::workload::load::load_suite(&r.data, &r.rag_data)?;
    let conversation = match &r.conversation {
        Some(id) => suite
            .conversations
            .iter()
            .find(|c| &c.id == id)
            .ok_or_else(|| UsageError::new(format!("no conversation {id:?} in {}", r.data.display())))?,
        None => suite
            .conversations
            .first()
            .ok_or_else(|| UsageError::new(format!("{} has no conversation", r.data.display())))?,
    };
    let turns = conversation.turns.len();
    if r.turn == 0 || r.turn > turns {
        return Err(UsageError::new(format!("--turn must be 1..={turns} for {}", conversation.id)).into());
    }
    let mut state = crate::workload::prompt::ConversationState::new(conversation);
    for i in 1..r.turn {
        state.begin_turn();
        state.finish_turn(format!("[answer to turn {i}]"));
    }
    Ok(state.begin_turn().messages)
}

