//! Bad templates fail with messages a person can act on.

use turnbench::template::{ChatTemplate, SpecialTokens};
use turnbench::core::ChatMessage;

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

#[test]
fn syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.jinja");
    std::fs::write(&path, "{% for m in messages %}\n{{ m.content }}\n{% if %}\n{% endfor %}\n").unwrap();
    let err = ChatTemplate::load(path.to_str().unwrap()).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&format!("{}:3:", path.display())), "{text}");
    assert_eq!(turnbench::core::error::exit_code(&err), 2);
}

#[test]
fn raised_exception_shows_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raises.jinja");
    std::fs::write(&path, "{% if messages[0].role != 'system' %}\n{{ raise_exception('a system message is required') }}\n{% endif %}").unwrap();
    let template = ChatTemplate::load(path.to_str().unwrap()).unwrap();
    let err = template.render(&user("hi"), true).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("template raised: a system message is required"), "{text}");
    assert!(text.contains("raises.jinja:2"), "{text}");
}

#[test]
fn mistral_refuses_non_alternating_roles_with_its_message() {
    let template = ChatTemplate::load("mistral").unwrap();
    let messages = vec![ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
    let text = format!("{:#}", template.render(&messages, true).unwrap_err());
    assert!(text.contains("conversation roles must alternate"), "{text}");
}

#[test]
fn runaway_template_is_stopped_by_fuel() {
    let source = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
    let template = ChatTemplate::from_source("runaway.jinja", source, SpecialTokens::default()).unwrap();
    // Stopped by fuel, says the error (10¹⁰ iterations would otherwise run for hours).
    let text = format!("{:#}", template.render(&user("hi"), true).unwrap_err());
    assert!(text.contains("fuel"), "{text}");
}

#[test]
fn unknown_name_lists_builtins() {
    let text = format!("{:#}", ChatTemplate::load("no-such-template").unwrap_err());
    assert!(text.contains("phi3") && text.contains("chatml"), "{text}");
}

#[test]
fn model_folder_template_and_tokens_come_from_tokenizer_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let template = ChatTemplate::load(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(template.render(&user("hi"), false).unwrap(), "<s>[user] hi</s>");
    // chat_template.jinja wins over tokenizer_config.json, as in transformers.
    std::fs::write(dir.path().join("chat_template.jinja"), "{{ eos_token }}{{ messages|length }}").unwrap();
    let template = ChatTemplate::load(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(template.render(&user("hi"), false).unwrap(), "</s>1");
}

#[test]
fn tojson_is_transformers_tojson() {
    let source = "{{ messages[0] | tojson }}|{{ {'b': 1, 'a': [1.5, true, none]} | tojson(indent=2) }}|{{ 'é<&>' | tojson }}";
    let template = ChatTemplate::from_source("json.jinja", source, SpecialTokens::default()).unwrap();
    let out = template.render(&user("it's <b>"), false).unwrap();
    assert_eq!(
        out,
        "{\"role\": \"user\", \"content\": \"it's <b>\"}|{\n  \"b\": 1,\n  \"a\": [\n    1.5,\n    true,\n    null\n  ]\n}|\"é<&>\""
    );
}

#[test]
fn python_string_methods_and_loop_controls_work() {
    let source = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content.strip().upper() }}{% endfor %}";
    let template = ChatTemplate::from_source("py.jinja", source, SpecialTokens::default()).unwrap();
    let messages = vec![ChatMessage::new("user", "  hi  "), ChatMessage::new("assistant", "no")];
    assert_eq!(template.render(&messages, false).unwrap(), "HI");
}
