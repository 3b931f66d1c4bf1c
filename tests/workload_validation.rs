//! Malformed suites: every error is a UsageError naming file, line:col and JSON path.

use std::path::PathBuf;

use turnbench::core::error::{exit_code, UsageError};
use turnbench::workload::load::load_suite;
use turnbench::workload::{RagAction, RagPosition, DEFAULT_MAX_TOKENS};

const RAG: &str = r#"{
  "version": 1,
  "documents": [
    { "id": "runbook-a", "title": "A", "source": "a.md", "text": "alpha" },
    { "id": "runbook-b", "title": "B", "source": "b.md", "text": "beta" }
  ]
}
"#;

struct Files {
    _dir: tempfile::TempDir,
    conversations: PathBuf,
    rag: PathBuf,
}

fn write(conversations: &str, rag: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("conversations.json");
    let r = dir.path().join("rag_data.json");
    std::fs::write(&c, conversations).unwrap();
    std::fs::write(&r, rag).unwrap();
    Files { _dir: dir, conversations: c, rag: r }
}

/// Loads and expects a usage error; returns its message.
fn error_of(conversations: &str, rag: &str) -> String {
    let files = write(conversations, rag);
    let err = load_suite(&files.conversations, &files.rag).expect_err("must fail");
    assert!(err.chain().any(|c| c.is::<UsageError>()), "not a UsageError: {err:#}");
    assert_eq!(exit_code(&err), 2);
    let message = format!("{err:#}");
    eprintln!("{message}");
    message
}

fn assert_error(message: &str, file: &str, line_col: &str, path: &str, what: &str) {
    let prefix = format!("{file}:{line_col}: {path}: ");
    assert!(message.contains(&prefix), "expected `{prefix}` in:\n{message}");
    assert!(message.contains(what), "expected `{what}` in:\n{message}");
}

const GOOD: &str = r#"{
  "version": 1,
  "conversations": [
    {
      "id": "c1",
      "title": "one",
      "tags": ["qa"],
      "system": "be brief",
      "turns": [
        { "user": "hello" },
        { "user": "with doc", "max_tokens": 64, "rag": [ { "inject": ["runbook-a", "runbook-b"], "position": "user" } ] },
        { "user": "gen", "attachments": [ { "title": "log", "generate": { "kind": "log", "tokens": 300, "seed": 3 } }, { "title": "lit", "text": "literal" } ] },
        { "user": "bye", "rag": [ { "remove": ["runbook-a"] } ] }
      ]
    }
  ]
}
"#;

#[test]
fn good_suite_resolves_documents_attachments_and_defaults() {
    let files = write(GOOD, RAG);
    let suite = load_suite(&files.conversations, &files.rag).unwrap();
    let c = &suite.conversations[0];
    assert_eq!(c.system.as_deref(), Some("be brief"));
    assert_eq!(c.turns[0].max_tokens, DEFAULT_MAX_TOKENS);
    assert_eq!(c.turns[1].max_tokens, 64);
    match &c.turns[1].rag[0] {
        RagAction::Inject { documents, position } => {
            assert_eq!(*position, RagPosition::User);
            assert_eq!(documents[1].text, "beta");
        }
        other => panic!("{other:?}"),
    }
    let generated = &c.turns[2].attachments[0].text;
    assert!(generated.len() > 1000 && generated.starts_with("2026-03-14T"), "{generated}");
    assert_eq!(c.turns[2].attachments[1].text, "literal");
    assert_eq!(c.turns[3].rag[0], RagAction::Remove { ids: vec!["runbook-a".into()] });
    assert!(suite.sources[0].path.ends_with("conversations.json"));
    assert!(suite.sources[1].path.ends_with("rag_data.json"));
    assert_ne!(suite.sources[0].sha256, suite.sources[1].sha256);
}

#[test]
fn syntax_error() {
    let text = GOOD.replace(r#"{ "user": "hello" },"#, r#"{ "user": "hello" }"#);
    let m = error_of(&text, RAG);
    assert_error(&m, "conversations.json", "11:9", "conversations[0].turns", "expected `,` or `]`");
}

#[test]
fn unknown_key() {
    let text = GOOD.replace(r#""title": "one","#, r#""title": "one", "colour": "red","#);
    let m = error_of(&text, RAG);
    assert_error(&m, "conversations.json", "6:30", "conversations[0].colour", "unknown field `colour`");
}

#[test]
fn wrong_type() {
    let text = GOOD.replace(r#""max_tokens": 64"#, r#""max_tokens": "many""#);
    let m = error_of(&text, RAG);
    assert_error(&m, "conversations.json", "11:50", "conversations[0].turns[1].max_tokens", "invalid type");
}

#[test]
fn unknown_rag_document() {
    let text = GOOD.replace(r#"["runbook-a", "runbook-b"]"#, r#"["runbook-a", "runbook-x"]"#);
    let m = error_of(&text, RAG);
    assert_error(&m, "conversations.json", "11:84", "conversations[0].turns[1].rag[0].inject[1]", "unknown RAG document \"runbook-x\"");
}

#[test]
fn duplicate_conversation_id() {
    let text = GOOD.replace(
        "  ]\n}",
        "    ,{ \"id\": \"c1\", \"title\": \"again\", \"tags\": [], \"turns\": [ { \"user\": \"x\" } ] }\n  ]\n}",
    );
    let m = error_of(&text, RAG);
    assert_error(&m, "conversations.json", "16:14", "conversations[1].id", "duplicate conversation id \"c1\"");
}

#[test]
fn duplicate_document_id() {
    let rag = RAG.replace(r#""id": "runbook-b""#, r#""id": "runbook-a""#);
    let m = error_of(GOOD, &rag);
    assert_error(&m, "rag_data.json", "5:13", "documents[1].id", "duplicate document id \"runbook-a\"");
}

#[test]
fn empty_turn_text() {
    let text = GOOD.replace(r#""user": "bye""#, r#""user": "  ""#);
    let m = error_of(&text, RAG);
    assert_error(&m, "conversations.json", "13:19", "conversations[0].turns[3].user", "empty `user` text");
}

#[test]
fn no_turns() {
    let text = GOOD.replace(
        "  ]\n}",
        "    ,{ \"id\": \"c2\", \"title\": \"none\", \"tags\": [],\n       \"turns\": [] }\n  ]\n}",
    );
    let m = error_of(&text, RAG);
    assert_error(&m, "conversations.json", "17:17", "conversations[1].turns", "no turns");
}

#[test]
fn wrong_version() {
    let m = error_of(&GOOD.replace("\"version\": 1", "\"version\": 2"), RAG);
    assert_error(&m, "conversations.json", "2:14", "version", "unsupported format version 2");
    let m = error_of(GOOD, &RAG.replace("\"version\": 1", "\"version\": 7"));
    assert_error(&m, "rag_data.json", "2:14", "version", "unsupported format version 7");
}

#[test]
fn remove_of_inactive_document() {
    let text = GOOD.replace(r#""remove": ["runbook-a"]"#, r#""remove": ["runbook-a", "runbook-a"]"#);
    let m = error_of(&text, RAG);
    assert_error(
        &m,
        "conversations.json",
        "13:61",
        "conversations[0].turns[3].rag[0].remove[1]",
        "cannot remove RAG document \"runbook-a\": it is not active",
    );
}

#[test]
fn unknown_generator_kind() {
    let text = GOOD.replace(r#""kind": "log""#, r#""kind": "poem""#);
    let m = error_of(&text, RAG);
    assert_error(
        &m,
        "conversations.json",
        "12:83",
        "conversations[0].turns[2].attachments[0].generate.kind",
        "unknown generator kind \"poem\"",
    );
}

#[test]
fn several_semantic_errors_are_reported_together() {
    let text = GOOD.replace(r#""user": "bye""#, r#""user": """#).replace("runbook-b", "runbook-z");
    let m = error_of(&text, RAG);
    assert_eq!(m.lines().count(), 2, "{m}");
}

#[test]
fn missing_file_is_a_usage_error() {
    let files = write(GOOD, RAG);
    let err = load_suite(&files.conversations.with_file_name("nope.json"), &files.rag).unwrap_err();
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("nope.json: cannot read"), "{err}");
}
