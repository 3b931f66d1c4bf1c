//! Property tests over every parser a server or a data file feeds: the SSE decoder, the chunk
//! parser, the `/metrics` parser and the dataset loaders. Whatever the input: no panic, errors
//! are errors (usage errors naming the file, for data), and well-formed input reads back.

use proptest::prelude::*;
use serde_json::{json, Value};

use turnbench::client::metrics::ServerSnapshot;
use turnbench::client::{parse_chunk, ChunkParser};
use turnbench::client::sse::{Events, SseDecoder};
use turnbench::core::UsageError;
use turnbench::workload::load::{parse_conversations, parse_rag};
use turnbench::workload::sharegpt::{openai_from_text, sharegpt_from_text};
use turnbench::workload::snapshot::snapshot_from_text;

/// Decodes `input` fed in pieces cut at `cuts` (positions, any order).
fn decode(input: &[u8], cuts: &[usize], max_line: usize) -> Result<Vec<String>, String> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut d = SseDecoder::new(max_line, 1 << 20);
    let mut out = Events::default();
    let mut at = 0;
    for p in points.into_iter().chain([input.len()]) {
        d.push(&input[at..p], &mut out).map_err(|e| e.to_string())?;
        at = p;
    }
    d.finish(&mut out).map_err(|e| e.to_string())?;
    Ok(out.iter().map(String::from).collect())
}

/// Bytes that look like SSE often enough to reach every branch.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b": comment".to_vec()),
        Just(b"event: x".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(b"{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![
            Just("user".to_string()),
            Just("assistant".to_string()),
            Just("system".to_string()),
            Just("human".to_string()),
            Just("gpt".to_string()),
            ".{0,12}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("conversations".to_string()),
            Just("messages".to_string()),
            Just("role".to_string()),
            Just("content".to_string()),
            Just("from".to_string()),
            Just("value".to_string()),
            Just("prompt_content".to_string()),
            Just("cut_chat_history".to_string()),
            Just("max_tokens".to_string()),
            Just("id".to_string()),
            Just("turns".to_string()),
            Just("user".to_string()),
            Just("version".to_string()),
            Just("documents".to_string()),
            Just("text".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn is_usage_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<UsageError>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn sse_never_panics_and_splitting_changes_nothing(input in sse_bytes(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let whole = decode(&input, &[], 64);
        let split = decode(&input, &cuts, 64);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn sse_events_read_back(events in proptest::collection::vec("[^\r\n]{0,40}", 0..10), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let wire: String = events.iter().map(|e| format!("data: {e}\r\n\r\n")).collect();
        let got = decode(wire.as_bytes(), &cuts, 1 << 10).unwrap();
        prop_assert_eq!(got, events);
    }

    #[test]
    fn sse_lines_over_the_limit_are_refused(len in 65usize..400) {
        let line = vec![b'a'; len];
        prop_assert!(decode(&line, &[len / 2], 64).unwrap_err().contains("64 bytes"));
    }

    #[test]
    fn chunk_parser_never_panics(data in ".{0,200}") {
        let _ = parse_chunk(&data);
    }

    #[test]
    fn chunks_read_back(content in ".{0,40}", prompt in any::<u64>(), completion in any::<u64>(), cached in any::<u64>()) {
        // A second choice is skipped unread: only the first one is the request's.
        let data = json!({"choices": [{"delta": {"content": content}}, {"delta": {"content": "other"}, "x": [1, {"y": null}]}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "prompt_tokens_details": {"cached_tokens": cached}}});
        let data = data.to_string();
        let c = parse_chunk(&data).unwrap();
        prop_assert_eq!(c.content, content);
        let u = c.usage.unwrap();
        prop_assert_eq!((u.prompt_tokens, u.completion_tokens, u.cached_tokens), (Some(prompt), Some(completion), Some(cached)));
        prop_assert!(c.usage_problem.is_none());
    }

    #[test]
    fn a_stream_parses_as_its_chunks_parse_alone(chunks in proptest::collection::vec((0u8..5, "[a \"\\\\\n\u{1}\u{7f}é€]{0,6}|.{0,12}"), 1..12)) {
        // A stream's chunks as a server writes them, and hostile ones: the content written raw
        // (quotes, backslashes, control characters unescaped), another shape, a changed tail.
        let (head, tail) = (r#"{"id":"c-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"#, r#"},"logprobs":null,"finish_reason":null}]}"#);
        let mut parser = ChunkParser::default();
        for (shape, content) in chunks {
            let literal = serde_json::to_string(&content).unwrap();
            let data = match shape {
                0 | 1 => format!("{head}{literal}{tail}"),
                2 => format!("{head}\"{content}\"{tail}"),
                3 => format!("{head}{literal}{}", tail.replace("null}", "\"stop\"}")),
                _ => json!({"choices": [{"delta": {"content": content}}], "usage": {"prompt_tokens": 3}}).to_string(),
            };
            let (memo, alone) = (parser.parse(&data), parse_chunk(&data));
            prop_assert_eq!(memo.is_ok(), alone.is_ok(), "{}", data);
            if let (Ok(m), Ok(a)) = (memo, alone) {
                prop_assert_eq!(m, a, "{}", data);
            }
        }
    }

    #[test]
    fn negative_or_fractional_counts_are_problems_not_values(v in prop_oneof![(-1e12f64..-0.5), (0.1f64..0.9)]) {
        let data = json!({"choices": [], "usage": {"prompt_tokens": v, "completion_tokens": 1}}).to_string();
        let c = parse_chunk(&data).unwrap();
        prop_assert!(c.usage_problem.unwrap().contains("usage.prompt_tokens"));
        prop_assert_eq!(c.usage.unwrap().prompt_tokens, None);
    }

    #[test]
    fn metrics_parser_never_panics(text in ".{0,300}") {
        let _ = ServerSnapshot::parse(&text);
    }

    #[test]
    fn metrics_lines_never_panic(lines in proptest::collection::vec(prop_oneof![
        Just("# TYPE vllm:prefix_cache_hits_total counter".to_string()),
        Just("# TYPE vllm:kv_cache_usage_perc gauge".to_string()),
        Just("# HELP vllm:prefix_cache_hits_total h".to_string()),
        "vllm:prefix_cache_hits_total(\\{[a-z]{0,3}=\"[^\"]{0,4}\"\\})? [-+0-9.eNaInf]{0,8}",
        "vllm:cache_config_info\\{block_size=\"[0-9a-z]{0,4}\"\\} [0-9.]{0,4}",
        ".{0,30}",
    ], 0..12)) {
        let _ = ServerSnapshot::parse(&lines.join("\n"));
    }

    #[test]
    fn counters_read_back(hits in 0u32..1_000_000, queries in 0u32..1_000_000, engines in 1usize..4) {
        let mut text = String::from("# TYPE vllm:prefix_cache_hits_total counter\n");
        for e in 0..engines {
            text.push_str(&format!("vllm:prefix_cache_hits_total{{engine=\"{e}\"}} {hits}.0\n"));
        }
        text.push_str(&format!("# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total {queries}\n"));
        let s = ServerSnapshot::parse(&text).unwrap();
        prop_assert_eq!(s.prefix_cache_hits, Some(hits as f64 * engines as f64));
        prop_assert_eq!(s.prefix_cache_queries, Some(queries as f64));
    }

    #[test]
    fn dataset_loaders_never_panic_and_fail_as_usage_errors(v in json_value(), lines in any::<bool>()) {
        let text = match (&v, lines) {
            (Value::Array(items), true) => items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"),
            _ => v.to_string(),
        };
        for result in [
            sharegpt_from_text("d.json", &text, 16).map(|c| c.len()),
            openai_from_text("d.json", &text, 16).map(|c| c.len()),
            snapshot_from_text("d.json", &text, 16).map(|c| c.len()),
            parse_rag("d.json", &text).map(|d| d.len()),
            parse_conversations("d.json", &text, &[]).map(|c| c.len()),
        ] {
            if let Err(e) = result {
                prop_assert!(is_usage_error(&e), "{e:#}");
                prop_assert!(e.to_string().starts_with("d.json"), "{e}");
            }
        }
    }

    #[test]
    fn dataset_loaders_never_panic_on_text(text in ".{0,200}") {
        let _ = sharegpt_from_text("d.json", &text, 16);
        let _ = openai_from_text("d.json", &text, 16);
        let _ = snapshot_from_text("d.json", &text, 16);
        let _ = parse_rag("d.json", &text);
        let _ = parse_conversations("d.json", &text, &[]);
    }

    #[test]
    fn imported_conversations_read_back(turns in proptest::collection::vec((".{1,20}", ".{0,20}"), 1..6)) {
        let messages: Vec<Value> = turns
            .iter()
            .flat_map(|(q, a)| [json!({"role": "user", "content": q}), json!({"role": "assistant", "content": a})])
            .collect();
        let c = openai_from_text("d.jsonl", &json!({"messages": messages}).to_string(), 16).unwrap();
        prop_assert_eq!(c.len(), 1);
        prop_assert_eq!(c[0].turns.iter().map(|t| t.user.clone()).collect::<Vec<_>>(), turns.iter().map(|(q, _)| q.clone()).collect::<Vec<_>>());
    }
}
