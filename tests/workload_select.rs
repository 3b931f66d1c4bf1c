//! Selection: filters, peak context, listing; the server token counter against a tiny /tokenize.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use turnbench::workload::select::SelectionFilter;
use turnbench::core::error::exit_code;
use turnbench::core::ChatMessage;
use turnbench::workload::select::{peak_tokens, render_listing, select};
use turnbench::client::api::ServerTokenizer;
use turnbench::workload::tokens::{CountTokens, Estimate};
use turnbench::workload::{Conversation, Suite, Turn};

fn turn(user: &str, max_tokens: u32) -> Turn {
    Turn { user: user.into(), max_tokens, attachments: vec![], rag: vec![], assistant: None, exact: None }
}

fn conversation(id: &str, tags: &[&str], user_chars: usize) -> Conversation {
    Conversation {
        id: id.into(),
        title: id.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        system: None,
        turns: vec![turn(&"x".repeat(user_chars), 100), turn("and then?", 100)],
    }
}

/// Peaks (estimate): prompt(turn 2) = ceil(n/4)+4 (user 1) + 4 (empty answer) + 3+4 (user 2) + 3
/// plus 100 + 100 answers.
fn suite() -> Suite {
    Suite {
        conversations: vec![
            conversation("small-qa", &["qa"], 400),       // peak 100+4+4+7+3+200 = 318
            conversation("code-mid", &["code"], 4_000),    // 1000+18+200 = 1218
            conversation("long-doc", &["long", "qa"], 40_000), // 10000+18+200 = 10218
            conversation("ultra-log", &["ultra", "long"], 400_000), // 100000+18+200 = 100218
        ],
        sources: vec![],
    }
}

fn args() -> SelectionFilter {
    SelectionFilter::default()
}

fn ids(selection: &turnbench::workload::select::Selection) -> Vec<&str> {
    selection.chosen.iter().map(|c| c.conversation.id.as_str()).collect()
}

#[tokio::test]
async fn peak_counts_earlier_answers_at_max_tokens() {
    let c = Conversation {
        id: "hand".into(),
        title: "hand".into(),
        tags: vec![],
        system: Some("ssss".into()),
        turns: vec![turn("abcdefgh", 10), turn("abcd", 20)],
    };
    // turn 0: system (1+4) + user (2+4) + 3 = 14, +10 = 24
    // turn 1: system 5 + user 6 + empty answer 4 + user (1+4) + 3 = 23, +10 earlier +20 = 53
    assert_eq!(peak_tokens(&c, &Estimate).await.unwrap(), 53);
    // The earlier answer counts at its full max_tokens: turn 0 = 14 + 500, turn 1 = 23 + 500 + 1.
    let c2 = Conversation { turns: vec![turn("abcdefgh", 500), turn("abcd", 1)], ..c };
    assert_eq!(peak_tokens(&c2, &Estimate).await.unwrap(), 524);
}

#[tokio::test]
async fn no_filters_keeps_everything_in_order() {
    let s = select(&suite(), &args(), &Estimate).await.unwrap();
    assert_eq!(ids(&s), ["small-qa", "code-mid", "long-doc", "ultra-log"]);
    assert!(s.estimated && s.dropped.is_empty());
    assert_eq!(s.chosen.iter().map(|c| c.peak_tokens).collect::<Vec<_>>(), [318, 1218, 10218, 100218]);
    assert!(s.chosen.iter().all(|c| c.fits));
}

#[tokio::test]
async fn include_and_exclude_tags() {
    let mut a = args();
    a.include_tags = vec!["qa".into(), "code".into()];
    let s = select(&suite(), &a, &Estimate).await.unwrap();
    assert_eq!(ids(&s), ["small-qa", "code-mid", "long-doc"]);
    assert_eq!(s.dropped[0].id, "ultra-log");
    assert!(s.dropped[0].reason.contains("--include-tags qa,code"), "{}", s.dropped[0].reason);

    a.exclude_tags = vec!["long".into()];
    let s = select(&suite(), &a, &Estimate).await.unwrap();
    assert_eq!(ids(&s), ["small-qa", "code-mid"]);
    assert!(s.dropped.iter().any(|d| d.id == "long-doc" && d.reason == "tag long is in --exclude-tags"));
}

#[tokio::test]
async fn context_size_drops_with_reason() {
    let mut a = args();
    a.context_size = Some(32_000);
    let s = select(&suite(), &a, &Estimate).await.unwrap();
    assert_eq!(ids(&s), ["small-qa", "code-mid", "long-doc"]);
    assert_eq!(s.dropped.len(), 1);
    assert_eq!(s.dropped[0].id, "ultra-log");
    assert_eq!(s.dropped[0].reason, "peak ~100,218 tokens > --context-size 32000");
    let listing = render_listing(&s);
    assert!(listing.contains("estimates"), "{listing}");
    assert!(listing.contains("ultra-log: peak ~100,218 tokens > --context-size 32000"), "{listing}");
    assert!(listing.contains("~10,218") && listing.contains("yes"), "{listing}");
}

#[tokio::test]
async fn max_conversations_keeps_suite_order() {
    let mut a = args();
    a.max_conversations = Some(2);
    let s = select(&suite(), &a, &Estimate).await.unwrap();
    assert_eq!(ids(&s), ["small-qa", "code-mid"]);
    assert_eq!(s.dropped.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["long-doc", "ultra-log"]);
}

#[tokio::test]
async fn conversation_ids_select_and_unknown_ids_are_usage_errors() {
    let mut a = args();
    a.conversations = vec!["long-doc".into()];
    let s = select(&suite(), &a, &Estimate).await.unwrap();
    assert_eq!(ids(&s), ["long-doc"]);

    a.conversations = vec!["nope".into()];
    let err = select(&suite(), &a, &Estimate).await.unwrap_err();
    assert_eq!(exit_code(&err), 2);
    let m = err.to_string();
    assert!(m.contains("nope") && m.contains("small-qa, code-mid, long-doc, ultra-log"), "{m}");
}

#[tokio::test]
async fn empty_selection_says_which_filters_removed_everything() {
    let mut a = args();
    a.include_tags = vec!["ultra".into()];
    a.context_size = Some(8_000);
    let err = select(&suite(), &a, &Estimate).await.unwrap_err();
    assert_eq!(exit_code(&err), 2);
    let m = err.to_string();
    assert!(m.contains("--include-tags ultra removed 3 of 4"), "{m}");
    assert!(m.contains("--context-size 8000 removed 1 of 1"), "{m}");
}

/// Request bodies and `Authorization` headers the stand-in server saw.
type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;

/// A stand-in for vLLM's /tokenize: count = characters of all contents + 1 per message.
async fn tokenize_server(seen: Seen) -> String {
    let app = Router::new().route(
        "/tokenize",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                let count: u64 = body["messages"]
                    .as_array()
                    .map(|m| m.iter().map(|m| m["content"].as_str().unwrap_or("").len() as u64 + 1).sum())
                    .unwrap_or(0);
                seen.lock().unwrap().push((body, auth));
                Json(json!({ "count": count, "max_model_len": 4096, "tokens": [] }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn server_counter_posts_messages_to_tokenize() {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let base = tokenize_server(seen.clone()).await;
    let counter = ServerTokenizer::new(reqwest::Client::new(), &format!("{base}/v1"), Some("tiny".into()), Some("k3y".into()));
    assert!(!counter.is_estimate());
    assert!(counter.describe().starts_with("/tokenize of tiny at http://"), "{}", counter.describe());
    let n = counter.count_messages(&[ChatMessage::new("user", "hello")]).await.unwrap();
    assert_eq!(n, 6);
    let (body, auth) = seen.lock().unwrap()[0].clone();
    assert_eq!(body["model"], "tiny");
    assert_eq!(body["add_generation_prompt"], true);
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(auth.as_deref(), Some("Bearer k3y"));

    // Selection with server counts: no "~", not estimated.
    let mut a = args();
    a.context_size = Some(5_000);
    let s = select(&suite(), &a, &counter).await.unwrap();
    assert!(!s.estimated);
    // small-qa: turn 2 prompt = (400+1) + (0+1) + (9+1) = 412, + 200 answers
    assert_eq!(s.chosen[0].peak_tokens, 612);
    assert!(s.dropped.iter().any(|d| d.reason == "peak 40,212 tokens > --context-size 5000"), "{:?}", s.dropped);
    assert!(render_listing(&s).contains("server's tokenizer"));
}

#[tokio::test]
async fn server_counter_reports_http_errors() {
    let app = Router::new().route("/tokenize", post(|| async { (axum::http::StatusCode::NOT_FOUND, "no such route") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let counter = ServerTokenizer::new(reqwest::Client::new(), &format!("http://{addr}"), None, None);
    let err = counter.count_messages(&[ChatMessage::new("user", "x")]).await.unwrap_err();
    let m = format!("{err:#}");
    assert!(m.contains("404") && m.contains("no such route"), "{m}");
}
