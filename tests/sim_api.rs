//! The simulator over real HTTP: `spawn()` on 127.0.0.1:0, driven by reqwest.

use serde_json::{json, Value};
use turnbench::sim::cache::max_cacheable_tokens;
use turnbench::sim::chat::render_chat;
use turnbench::sim::tokenizer::{count, tokenize};
use turnbench::sim::{spawn, SimConfig, SimHandle};
use turnbench::core::ChatMessage;

async fn start(f: impl FnOnce(&mut SimConfig)) -> (SimHandle, reqwest::Client) {
    let mut c = SimConfig::instant();
    f(&mut c);
    (spawn(c).await.expect("spawn"), reqwest::Client::new())
}

async fn post(client: &reqwest::Client, sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
    let r = client.post(format!("{}{path}", sim.base_url())).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Data payloads of an SSE body, in order.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_string())
        .collect()
}

async fn stream_chat(
    client: &reqwest::Client,
    sim: &SimHandle,
    messages: &[ChatMessage],
    max_tokens: u32,
) -> (String, Value, Vec<String>) {
    let r = client
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&json!({"model": "turnbench-sim", "messages": messages, "max_tokens": max_tokens, "ignore_eos": true,
                      "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_events(&r.text().await.unwrap());
    let mut answer = String::new();
    let mut usage = Value::Null;
    for e in &events {
        if e == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            answer.push_str(c);
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    (answer, usage, events)
}

/// Value of the sample `name{...}` in Prometheus text (the first one).
fn metric(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn metrics(client: &reqwest::Client, sim: &SimHandle) -> String {
    client.get(format!("{}/metrics", sim.base_url())).send().await.unwrap().text().await.unwrap()
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::new("user", text)
}

#[tokio::test]
async fn streaming_format_matches_vllm() {
    let (sim, client) = start(|_| {}).await;
    let (answer, usage, events) = stream_chat(&client, &sim, &[user("Hello there, simulator.")], 5).await;
    assert_eq!(events.len(), 1 + 5 + 1 + 1, "{events:#?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "turnbench-sim");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "");
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"));
    for (i, e) in events[1..6].iter().enumerate() {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["id"], id.as_str());
        assert!(!v["choices"][0]["delta"]["content"].as_str().unwrap().is_empty());
        let fr = &v["choices"][0]["finish_reason"];
        if i == 4 {
            assert_eq!(fr, "length");
        } else {
            assert!(fr.is_null());
        }
    }
    let last: Value = serde_json::from_str(&events[6]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(events[7], "[DONE]");
    assert_eq!(count(&answer), 5, "each answer word is one token: {answer:?}");
    let prompt = tokenize(&render_chat(&[user("Hello there, simulator.")], true)).len();
    assert_eq!(usage["prompt_tokens"], prompt);
    assert_eq!(usage["total_tokens"], prompt + 5);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);

    // Same seed and prompt: same answer (a fresh server, to avoid cache effects on nothing else).
    let (sim2, _) = start(|_| {}).await;
    let (again, _, _) = stream_chat(&client, &sim2, &[user("Hello there, simulator.")], 5).await;
    assert_eq!(again, answer);

    // Without include_usage: no usage chunk.
    let r = client
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&json!({"messages": [user("x")], "max_tokens": 2, "stream": true}))
        .send()
        .await
        .unwrap();
    let ev = sse_events(&r.text().await.unwrap());
    assert_eq!(ev.len(), 1 + 2 + 1);
    assert!(ev.iter().all(|e| !e.contains("\"usage\"")));
}

#[tokio::test]
async fn completions_stream_and_non_stream() {
    let (sim, client) = start(|_| {}).await;
    let r = client
        .post(format!("{}/v1/completions", sim.base_url()))
        .json(&json!({"prompt": "Once upon a time", "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    let ev = sse_events(&r.text().await.unwrap());
    assert_eq!(ev.len(), 4 + 1 + 1);
    let mut text = String::new();
    for e in &ev[..4] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "text_completion");
        text.push_str(v["choices"][0]["text"].as_str().unwrap());
    }
    let u: Value = serde_json::from_str(&ev[4]).unwrap();
    assert_eq!(u["usage"]["prompt_tokens"], count("Once upon a time"));
    assert_eq!(count(&format!("Once upon a time{text}")), count("Once upon a time") + 4);

    let (status, v) =
        post(&client, &sim, "/v1/completions", json!({"prompt": "Once upon a time", "max_tokens": 4})).await;
    assert_eq!(status, 200);
    assert_eq!(v["model"], "turnbench-sim");
    assert_eq!(v["choices"][0]["text"], text.as_str());
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert!(v["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64());

    // Default max_tokens when absent: 64.
    let (status, v) = post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("hi")]})).await;
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["completion_tokens"], 64);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
}

#[tokio::test]
async fn growing_conversation_reuses_its_prefix_and_metrics_agree() {
    let (sim, client) = start(|_| {}).await;
    let mut messages = vec![
        ChatMessage::new("system", "You are a terse assistant who answers questions about KV caches."),
        user("What does a prefix cache store, and why does it help multi-turn chat?"),
    ];
    let (answer, u1, _) = stream_chat(&client, &sim, &messages, 37).await;
    assert_eq!(u1["prompt_tokens_details"]["cached_tokens"], 0);
    let p1 = tokenize(&render_chat(&messages, true));
    let out = tokenize(&answer);
    assert_eq!(out.len(), 37);

    messages.push(ChatMessage::new("assistant", answer.clone()));
    messages.push(user("And what happens when it is full?"));
    let p2 = tokenize(&render_chat(&messages, true));
    // What the server has cached: prompt 1 + its answer without the last token, whole blocks.
    let mut seen = p1.clone();
    seen.extend_from_slice(&out[..out.len() - 1]);
    let lcp = seen.iter().zip(&p2).take_while(|(a, b)| a == b).count();
    assert_eq!(lcp, seen.len(), "the second prompt extends the first and its answer");
    let expected = ((lcp / 16) * 16).min(max_cacheable_tokens(p2.len(), 16));
    assert!(expected > p1.len() / 16 * 16, "the answer's blocks are reused too");

    let before = metrics(&client, &sim).await;
    let (_, u2, _) = stream_chat(&client, &sim, &messages, 8).await;
    let after = metrics(&client, &sim).await;
    let cached = u2["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() as usize;
    assert_eq!(cached, expected);
    assert_eq!(u2["prompt_tokens"], p2.len());
    let hits = metric(&after, "vllm:prefix_cache_hits_total") - metric(&before, "vllm:prefix_cache_hits_total");
    let queries =
        metric(&after, "vllm:prefix_cache_queries_total") - metric(&before, "vllm:prefix_cache_queries_total");
    assert_eq!(hits as usize, cached);
    assert_eq!(queries as usize, p2.len());
    let prompt_total = metric(&after, "vllm:prompt_tokens_total") - metric(&before, "vllm:prompt_tokens_total");
    assert_eq!(prompt_total as usize, p2.len());
    let gen = metric(&after, "vllm:generation_tokens_total") - metric(&before, "vllm:generation_tokens_total");
    assert_eq!(gen, 8.0);
    assert!(after.contains(
        r#"vllm:cache_config_info{block_size="16",enable_prefix_caching="True",engine="0",num_gpu_blocks="16384"} 1.0"#
    ));
    assert!(after
        .contains(r#"vllm:request_success_total{engine="0",model_name="turnbench-sim",finished_reason="length"} 2.0"#));
    assert_eq!(metric(&after, "vllm:time_to_first_token_seconds_count"), 2.0);
    assert!(after
        .contains(r#"vllm:time_to_first_token_seconds_bucket{engine="0",model_name="turnbench-sim",le="+Inf"} 2.0"#));
    assert_eq!(metric(&after, "vllm:inter_token_latency_seconds_count"), (37 - 1 + 8 - 1) as f64);
    assert_eq!(metric(&after, "vllm:e2e_request_latency_seconds_count"), 2.0);
    assert_eq!(metric(&after, "vllm:num_requests_running"), 0.0);
    assert_eq!(metric(&after, "vllm:num_requests_waiting"), 0.0);
}

#[tokio::test]
async fn block_size_and_disabled_cache() {
    let (sim, client) = start(|c| c.block_size = 32).await;
    let m = vec![user(&"word ".repeat(100))];
    stream_chat(&client, &sim, &m, 4).await;
    let (_, u, _) = stream_chat(&client, &sim, &m, 4).await;
    let p = u["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], max_cacheable_tokens(p, 32));
    assert!(metrics(&client, &sim).await.contains(r#"block_size="32""#));

    let (sim, client) = start(|c| c.enable_prefix_caching = false).await;
    stream_chat(&client, &sim, &m, 4).await;
    let (_, u, _) = stream_chat(&client, &sim, &m, 4).await;
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    let text = metrics(&client, &sim).await;
    assert_eq!(metric(&text, "vllm:prefix_cache_hits_total"), 0.0);
    assert!(text.contains(r#"enable_prefix_caching="False""#));
}

#[tokio::test]
async fn small_cache_evicts_least_recently_used() {
    // 8 blocks of 16 tokens; each prompt below is ~100 tokens (6 full blocks).
    let (sim, client) = start(|c| c.kv_cache_blocks = 8).await;
    let a = vec![user(&"alpha ".repeat(95))];
    let b = vec![user(&"bravo ".repeat(95))];
    stream_chat(&client, &sim, &a, 1).await;
    let (_, u, _) = stream_chat(&client, &sim, &a, 1).await;
    assert!(u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "a fits on its own");
    stream_chat(&client, &sim, &b, 1).await;
    let (_, u, _) = stream_chat(&client, &sim, &a, 1).await;
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0, "b evicted a's leading blocks");

    // The same sequence with a large cache keeps both.
    let (sim, client) = start(|c| c.kv_cache_blocks = 1000).await;
    stream_chat(&client, &sim, &a, 1).await;
    stream_chat(&client, &sim, &b, 1).await;
    let (_, u, _) = stream_chat(&client, &sim, &a, 1).await;
    assert!(u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn reset_prefix_cache_forgets_everything() {
    let (sim, client) = start(|_| {}).await;
    let a = vec![user(&"reset me please ".repeat(20))];
    stream_chat(&client, &sim, &a, 2).await;
    let (_, u, _) = stream_chat(&client, &sim, &a, 2).await;
    assert!(u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0);
    let r = client.post(format!("{}/reset_prefix_cache", sim.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, u, _) = stream_chat(&client, &sim, &a, 2).await;
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn full_waiting_queue_gets_503() {
    // One running slot, one waiting place, and a first token that takes ten minutes.
    let (sim, client) = start(|c| {
        c.max_num_seqs = 1;
        c.max_waiting = 1;
        c.latency.overhead_ms = 600_000.0;
    })
    .await;
    let body = json!({"messages": [user("hold")], "max_tokens": 2, "stream": true});
    let url = format!("{}/v1/chat/completions", sim.base_url());
    // Streaming answers send their headers once admitted: A is running.
    let a = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(a.status(), 200);
    let b = tokio::spawn({
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move { client.post(&url).json(&body).send().await.map(|r| r.status().as_u16()) }
    });
    // Wait (without timing assumptions) until B is queued.
    loop {
        let m = metrics(&client, &sim).await;
        if metric(&m, "vllm:num_requests_waiting") == 1.0 {
            assert_eq!(metric(&m, "vllm:num_requests_running"), 1.0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, v) = post(&client, &sim, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], 503);
    assert!(v["error"]["message"].as_str().unwrap().contains("waiting queue is full"));
    // A leaves: B is admitted (its headers arrive).
    drop(a);
    assert_eq!(b.await.unwrap().unwrap(), 200);
    let m = metrics(&client, &sim).await;
    assert_eq!(metric(&m, "vllm:num_requests_waiting"), 0.0);
}

#[tokio::test]
async fn bad_requests_get_400_with_a_useful_message() {
    let (sim, client) = start(|c| c.max_model_len = 100).await;
    let url = |p: &str| format!("{}{p}", sim.base_url());
    let raw = |path: &'static str, body: &'static str| {
        let client = client.clone();
        let u = url(path);
        async move {
            let r = client.post(u).header("content-type", "application/json").body(body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let cases: Vec<(u16, Value, &str)> = vec![
        {
            let (s, v) = raw("/v1/chat/completions", "{\"messages\": [").await;
            (s, v, "Invalid JSON")
        },
        {
            let (s, v) = raw("/v1/chat/completions", "").await;
            (s, v, "Invalid JSON")
        },
        {
            let (s, v) = post(&client, &sim, "/v1/chat/completions", json!({"max_tokens": 3})).await;
            (s, v, "missing field `messages`")
        },
        {
            let (s, v) = post(&client, &sim, "/v1/completions", json!({"max_tokens": 3})).await;
            (s, v, "missing field `prompt`")
        },
        {
            let (s, v) =
                post(&client, &sim, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": 7}]}))
                    .await;
            (s, v, "messages[0].content")
        },
        {
            let (s, v) = post(&client, &sim, "/v1/chat/completions", json!({"messages": "hi"})).await;
            (s, v, "messages")
        },
        {
            let (s, v) =
                post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("x")], "max_tokens": "ten"}))
                    .await;
            (s, v, "max_tokens")
        },
        {
            let (s, v) =
                post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("x")], "max_tokens": 0})).await;
            (s, v, "max_tokens must be at least 1")
        },
        {
            let (s, v) = post(&client, &sim, "/v1/chat/completions", json!({"messages": []})).await;
            (s, v, "must not be empty")
        },
        {
            let (s, v) = post(&client, &sim, "/v1/completions", json!({"prompt": 5})).await;
            (s, v, "prompt")
        },
        {
            let (s, v) = post(
                &client,
                &sim,
                "/v1/chat/completions",
                json!({"messages": [user("x")], "stream_options": {"include_usage": true}}),
            )
            .await;
            (s, v, "stream=True")
        },
        {
            let (s, v) =
                post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("x")], "max_tokens": 95})).await;
            (s, v, "maximum context length is 100 tokens")
        },
        {
            let (s, v) = post(&client, &sim, "/v1/completions", json!({"prompt": "word ".repeat(200)})).await;
            (s, v, "maximum context length")
        },
        {
            let (s, v) = post(&client, &sim, "/tokenize", json!({"add_generation_prompt": true})).await;
            (s, v, "`prompt` or `messages`")
        },
    ];
    for (i, (status, v, needle)) in cases.iter().enumerate() {
        assert_eq!(*status, 400, "case {i}: {v}");
        assert_eq!(v["error"]["type"], "BadRequestError", "case {i}: {v}");
        assert_eq!(v["error"]["code"], 400, "case {i}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "case {i}: {msg:?} lacks {needle:?}");
    }
    let (status, v) =
        post(&client, &sim, "/v1/chat/completions", json!({"model": "gpt-9", "messages": [user("x")]})).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["type"], "NotFoundError");
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));

    // Still serving.
    assert_eq!(client.get(url("/health")).send().await.unwrap().status(), 200);
    let (status, v) =
        post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("x")], "max_tokens": 3})).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn tokenize_counts_match_usage() {
    let (sim, client) = start(|_| {}).await;
    let messages =
        vec![ChatMessage::new("system", "Be brief."), user("Count my tokens: naïve café, 12345678, <tags> & symbols!")];
    let (s, t) = post(&client, &sim, "/tokenize", json!({"model": "turnbench-sim", "messages": messages})).await;
    assert_eq!(s, 200);
    assert_eq!(t["max_model_len"], 32768);
    let (_, u, _) = stream_chat(&client, &sim, &messages, 3).await;
    assert_eq!(t["count"], u["prompt_tokens"]);
    assert_eq!(t["tokens"].as_array().unwrap().len(), t["count"].as_u64().unwrap() as usize);
    assert_eq!(t["count"], tokenize(&render_chat(&messages, true)).len());
    let (_, t2) = post(&client, &sim, "/tokenize", json!({"messages": messages, "add_generation_prompt": false})).await;
    assert_eq!(t2["count"], tokenize(&render_chat(&messages, false)).len());

    let (_, tp) = post(&client, &sim, "/tokenize", json!({"prompt": "Hello completions"})).await;
    let (_, c) = post(&client, &sim, "/v1/completions", json!({"prompt": "Hello completions", "max_tokens": 2})).await;
    assert_eq!(tp["count"], c["usage"]["prompt_tokens"]);
}

#[tokio::test]
async fn models_and_health() {
    let (sim, client) = start(|c| {
        c.model_name = "tiny-llama".into();
        c.max_model_len = 131072;
    })
    .await;
    let r = client.get(format!("{}/health", sim.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().is_empty());
    let v: Value = client.get(format!("{}/v1/models", sim.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"][0]["id"], "tiny-llama");
    assert_eq!(v["data"][0]["owned_by"], "turnbench-sim");
    assert_eq!(v["data"][0]["max_model_len"], 131072);
    let (_, c) = post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("x")], "max_tokens": 1})).await;
    assert_eq!(c["model"], "tiny-llama");
    assert!(metrics(&client, &sim).await.contains(r#"model_name="tiny-llama""#));
}

#[tokio::test]
async fn injected_failures_and_drops() {
    let (sim, client) = start(|c| c.fail_rate = 1.0).await;
    let (s, v) = post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("x")]})).await;
    assert_eq!(s, 500);
    assert_eq!(v["error"]["type"], "InternalServerError");

    let (sim, client) = start(|c| c.drop_rate = 1.0).await;
    let r = client
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&json!({"messages": [user("x")], "max_tokens": 10, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Either the body errors (the connection was cut) or it ends early: never a [DONE].
    if let Ok(body) = r.text().await {
        assert!(!body.contains("[DONE]"), "{body}");
    }
    // Non-streamed requests are not dropped, and the server lives on.
    let (s, _) = post(&client, &sim, "/v1/chat/completions", json!({"messages": [user("x")], "max_tokens": 2})).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn long_conversations_fit_with_a_larger_max_model_len() {
    let (sim, client) = start(|c| c.max_model_len = 140_000).await;
    // ~128K tokens: "abcdef " is 2 tokens ("abcdef" and " ").
    let big = "abcdef\n".repeat(64_000);
    let (s, v) = post(&client, &sim, "/v1/chat/completions", json!({"messages": [user(&big)], "max_tokens": 4})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 128_000);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let (sim, client) = start(|_| {}).await;
    stream_chat(&client, &sim, &[user("parse me")], 3).await;
    let text = metrics(&client, &sim).await;
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("unparsable metrics: {e:?}\n{text}"));
    let names: Vec<&String> = parsed.families.keys().collect();
    for want in [
        "prefix_cache_queries",
        "prefix_cache_hits",
        "kv_cache_usage_perc",
        "num_requests_waiting",
        "time_to_first_token_seconds",
        "cache_config_info",
    ] {
        assert!(names.iter().any(|n| n.contains(want)), "{want} not in {names:?}");
    }
}

#[tokio::test]
async fn a_repeated_prompt_of_whole_blocks_still_computes_one_block() {
    let (sim, client) = start(|_| {}).await;
    // Grow the message one token at a time until the prompt is exactly 5 blocks of 16.
    let mut content = String::from("w");
    let messages = loop {
        let m = vec![user(&content)];
        if tokenize(&render_chat(&m, true)).len() == 80 {
            break m;
        }
        content.push_str(" w");
        assert!(content.len() < 400);
    };
    stream_chat(&client, &sim, &messages, 1).await;
    let (_, u, _) = stream_chat(&client, &sim, &messages, 1).await;
    assert_eq!(u["prompt_tokens"], 80);
    // vLLM: at most floor((80 - 1) / 16) * 16 = 64 tokens come from the cache.
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 64);
}

#[tokio::test]
async fn content_part_arrays_are_text_and_other_parts_a_clear_400() {
    let (sim, client) = start(|_| {}).await;
    let parts = json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Line one"}, {"type": "text", "text": "line two"}]}
    ], "max_tokens": 3});
    let (status, v) = post(&client, &sim, "/v1/chat/completions", parts.clone()).await;
    assert_eq!(status, 200, "{v}");
    // Parts join with a newline: the same prompt as the equivalent string messages.
    let strings = json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Line one\nline two"}
    ], "max_tokens": 3});
    let (_, w) = post(&client, &sim, "/v1/chat/completions", strings).await;
    assert_eq!(v["usage"]["prompt_tokens"], w["usage"]["prompt_tokens"]);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 4);
    let (status, t) = post(&client, &sim, "/tokenize", json!({"messages": parts["messages"]})).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["count"].as_u64(), v["usage"]["prompt_tokens"].as_u64(), "tokenize agrees");

    let image = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]});
    let (status, e) = post(&client, &sim, "/v1/chat/completions", image).await;
    assert_eq!(status, 400);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("messages[0].content[1]") && msg.contains("image_url") && msg.contains("text-only"), "{msg}");
    assert_eq!(e["error"]["param"], "messages[0].content[1]");
    let (status, e) = post(&client, &sim, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]})).await;
    assert_eq!(status, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("no `type`"));
}
