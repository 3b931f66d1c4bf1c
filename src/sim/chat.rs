//! The simulator's chat template: ChatML, as vLLM renders it for `/v1/chat/completions` and
//! `/tokenize` with `messages` (generation prompt added by default).

use crate::core::ChatMessage;

/// Renders `messages` as ChatML: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
/// `<|im_start|>assistant\n` when `add_generation_prompt`.
pub fn render_chat(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let len: usize = messages.iter().map(|m| m.role.len() + m.content.len() + 24).sum();
    let mut out = String::with_capacity(len + 24);
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(&m.role);
        out.push('\n');
        out.push_str(&m.content);
        out.push_str("<|im_end|>\n");
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::tokenizer::{count, tokenize};

    #[test]
    fn renders_chatml() {
        let m = vec![ChatMessage::new("system", "S"), ChatMessage::new("user", "Hi")];
        assert_eq!(
            render_chat(&m, true),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(render_chat(&m, false), "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn growing_conversation_is_prefix_stable() {
        let mut m = vec![ChatMessage::new("user", "Explain prefix caching, briefly.")];
        let p1 = tokenize(&render_chat(&m, true));
        let answer = "lorem ipsum dolor";
        m.push(ChatMessage::new("assistant", answer));
        m.push(ChatMessage::new("user", "And eviction?"));
        let p2 = tokenize(&render_chat(&m, true));
        assert_eq!(&p2[..p1.len()], &p1[..]);
        assert_eq!(&p2[p1.len()..p1.len() + 3], &tokenize(answer)[..]);
        assert_eq!(count(answer), 3);
    }
}
