//! `turnbench sim --replicas N --routing …`: a simulated cluster behind one port, over real HTTP
//! (`spawn()` on 127.0.0.1:0, driven by reqwest), and its flags through the real binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use turnbench::client::metrics::ServerSnapshot;
use turnbench::core::ChatMessage;
use turnbench::sim::{spawn, Routing, SimConfig, SimHandle};

mod common;
use common::Guard;

async fn start(replicas: usize, routing: Routing, f: impl FnOnce(&mut SimConfig)) -> (SimHandle, reqwest::Client) {
    let mut c = SimConfig { replicas, routing, ..SimConfig::instant() };
    f(&mut c);
    (spawn(c).await.expect("spawn"), reqwest::Client::new())
}

async fn get(client: &reqwest::Client, sim: &SimHandle, path: &str) -> (u16, String) {
    let r = client.get(format!("{}{path}", sim.base_url())).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn metrics(client: &reqwest::Client, sim: &SimHandle, path: &str) -> String {
    let (status, text) = get(client, sim, path).await;
    assert_eq!(status, 200, "GET {path}: {text}");
    text
}

/// The sum of every sample of `name` (any labels) in Prometheus text.
fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

async fn chat(client: &reqwest::Client, sim: &SimHandle, messages: &[ChatMessage], max_tokens: u32) -> Value {
    let r = client
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&json!({"messages": messages, "max_tokens": max_tokens, "ignore_eos": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::new("user", text)
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let (sim, client) = start(2, Routing::RoundRobin, |_| {}).await;
    for i in 0..4 {
        chat(&client, &sim, &[user(&format!("Question number {i}, about caches."))], 4).await;
    }
    for i in 0..2 {
        let text = metrics(&client, &sim, &format!("/replica/{i}/metrics")).await;
        assert_eq!(sample_sum(&text, "vllm:request_success_total"), 2.0, "replica {i}:\n{text}");
        assert!(text.contains(&format!("engine=\"{i}\"")) && !text.contains(&format!("engine=\"{}\"", 1 - i)));
    }
    let front = metrics(&client, &sim, "/metrics").await;
    assert_eq!(sample_sum(&front, "vllm:request_success_total"), 4.0);
}

#[tokio::test]
async fn front_metrics_are_one_exposition_whose_totals_are_the_replicas_sums() {
    let (sim, client) = start(2, Routing::RoundRobin, |c| c.block_size = 8).await;
    // The same prompt four times, alternately on each replica: each computes it once, then hits.
    let prompt = [ChatMessage::new("system", "You are a careful assistant who answers in full sentences."), user("Why cache?")];
    for _ in 0..4 {
        chat(&client, &sim, &prompt, 4).await;
    }
    let front = metrics(&client, &sim, "/metrics").await;
    openmetrics_parser::prometheus::parse_prometheus(&front).unwrap_or_else(|e| panic!("one exposition: {e:?}\n{front}"));
    for line in front.lines().filter(|l| l.starts_with("# HELP ")) {
        assert_eq!(front.matches(&format!("{line}\n")).count(), 1, "{line} twice");
    }
    let total = ServerSnapshot::parse(&front).unwrap();
    let r0 = ServerSnapshot::parse(&metrics(&client, &sim, "/replica/0/metrics").await).unwrap();
    let r1 = ServerSnapshot::parse(&metrics(&client, &sim, "/replica/1/metrics").await).unwrap();
    let (h0, h1) = (r0.prefix_cache_hits.unwrap(), r1.prefix_cache_hits.unwrap());
    assert!(h0 > 0.0 && h1 > 0.0, "each replica hit its own copy: {h0} {h1}");
    assert_eq!(total.prefix_cache_hits, Some(h0 + h1));
    assert_eq!(total.prefix_cache_queries, Some(r0.prefix_cache_queries.unwrap() + r1.prefix_cache_queries.unwrap()));
    assert_eq!(r0.prefix_cache_queries, r1.prefix_cache_queries);
    // Every replica has the same cache settings; the cluster's reader sees one engine's.
    assert_eq!((total.block_size, total.prefix_caching, total.num_gpu_blocks), (Some(8), Some(true), Some(16384)));

    // Resetting the front resets every replica.
    let r = client.post(format!("{}/reset_prefix_cache", sim.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let v = chat(&client, &sim, &prompt, 4).await;
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "{v}");
    }
}

#[tokio::test]
async fn one_replica_is_the_single_engine_and_unknown_replicas_are_404() {
    let (sim, client) = start(1, Routing::PrefixAffinity, |_| {}).await;
    chat(&client, &sim, &[user("Hello.")], 3).await;
    let front = metrics(&client, &sim, "/metrics").await;
    assert_eq!(front, metrics(&client, &sim, "/replica/0/metrics").await);
    assert!(front.contains("engine=\"0\"") && !front.contains("engine=\"1\""));

    let (sim, client) = start(2, Routing::RoundRobin, |_| {}).await;
    for path in ["/replica/9/metrics", "/replica/2/metrics", "/replica/x/metrics"] {
        let (status, body) = get(&client, &sim, path).await;
        assert_eq!(status, 404, "{path}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("runs 2") && msg.contains("/replica/1/metrics"), "{msg}");
    }
    // What no replica's state changes is answered as one server does.
    assert_eq!(get(&client, &sim, "/health").await.0, 200);
    let (_, models) = get(&client, &sim, "/v1/models").await;
    assert_eq!(serde_json::from_str::<Value>(&models).unwrap()["data"].as_array().unwrap().len(), 1);
}

/// The question user `u` asks in round `r`: its own words, so that every user's history differs
/// from its first message on (about 90 tokens in the simulator's tokenizer).
fn question(u: usize, r: usize) -> String {
    let words: Vec<String> = (0..40).map(|k| format!("u{u}r{r}w{k}")).collect();
    format!("User {u}, round {r}: please explain {}.", words.join(" "))
}

const SYSTEM: &str = "You are the support assistant of a storage company. Answer precisely, cite the \
manual where you can, and keep every answer short and friendly.";

/// 7 users × 4 rounds of a growing conversation (shared system prompt, then that user's own
/// questions and the simulator's answers), users interleaved round by round, against `replicas`
/// replicas; returns the cluster's prefix reuse (hits / queries of the front `/metrics`) and the
/// requests each replica served.
///
/// Within a round, each request is sent once the one before it has been routed and admitted (its
/// response headers are in), and all of the round's answers stream at once (10 ms a token), so the
/// replicas are loaded while they are chosen; a round starts once the last one has ended.
///
/// Why round-robin loses: the requests reach the front in the order user 0..6 of round 0, user
/// 0..6 of round 1, … so request `7r + u` goes to replica `(7r + u) mod 2 = (r + u) mod 2`. Every
/// user changes replica every round and finds there only its history of two rounds back (the
/// system prompt at round 1). With an even number of users round-robin would instead pin user `u`
/// to replica `u mod 2` — affinity by accident — hence 7.
async fn multi_round_reuse(replicas: usize, routing: Routing) -> (f64, Vec<f64>) {
    let (sim, client) = start(replicas, routing, |c| {
        c.max_num_seqs = 8; // load slack max(2, 8/4) = 2
        c.latency.inter_token_ms = 10.0; // 32 tokens: each answer streams for about 0.3 s
    })
    .await;
    const USERS: usize = 7;
    let mut history: Vec<Vec<ChatMessage>> = (0..USERS).map(|_| vec![ChatMessage::new("system", SYSTEM)]).collect();
    for r in 0..4 {
        let mut streams = Vec::new();
        for (u, messages) in history.iter_mut().enumerate() {
            messages.push(user(&question(u, r)));
            let resp = client
                .post(format!("{}/v1/chat/completions", sim.base_url()))
                .json(&json!({"messages": messages, "max_tokens": 32, "ignore_eos": true, "stream": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            streams.push(tokio::spawn(resp.text()));
        }
        for (u, stream) in streams.into_iter().enumerate() {
            let body = stream.await.unwrap().unwrap();
            let mut answer = String::new();
            for event in body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
                if event == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(event).unwrap();
                answer.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
            }
            assert!(!answer.is_empty(), "user {u}, round {r}: no answer in {body}");
            history[u].push(ChatMessage::new("assistant", answer));
        }
    }
    let front = ServerSnapshot::parse(&metrics(&client, &sim, "/metrics").await).unwrap();
    let reuse = front.prefix_cache_hits.unwrap() / front.prefix_cache_queries.unwrap();
    let mut served = vec![0.0; replicas];
    for (i, n) in served.iter_mut().enumerate() {
        *n = sample_sum(&metrics(&client, &sim, &format!("/replica/{i}/metrics")).await, "vllm:request_success_total");
    }
    assert_eq!(served.iter().sum::<f64>(), (USERS * 4) as f64);
    (reuse, served)
}

#[tokio::test]
async fn prefix_affinity_reuses_far_more_than_round_robin_on_multi_round_chats() {
    let (rr, rr_served) = multi_round_reuse(2, Routing::RoundRobin).await;
    let (pa, pa_served) = multi_round_reuse(2, Routing::PrefixAffinity).await;
    let (one, _) = multi_round_reuse(1, Routing::RoundRobin).await;
    println!(
        "prefix reuse over 7 users × 4 rounds on 2 replicas: prefix-affinity {:.1} % (requests per replica {pa_served:?}), round-robin {:.1} % ({rr_served:?}); one server holding everything: {:.1} %",
        pa * 100.0,
        rr * 100.0,
        one * 100.0
    );
    assert_eq!(rr_served, [14.0, 14.0]);
    assert!(pa <= one + 1e-9, "no routing beats one server with every conversation's history");
    // The load filter spreads the users: affinity is not "everything on one replica".
    assert!(pa_served.iter().all(|&n| n > 0.0), "{pa_served:?}");
    assert!(pa - rr >= 0.15, "prefix-affinity {pa:.3} vs round-robin {rr:.3}: less than 15 points apart");
}

#[test]
fn the_binary_rejects_replicas_out_of_range_and_announces_a_cluster() {
    for n in ["0", "65"] {
        let out = Command::new(env!("CARGO_BIN_EXE_turnbench"))
            .args(["sim", "--port", "0", "--profile", "instant", "--replicas", n])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--replicas {n}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("replicas = {n}")) && err.contains("between 1 and 64"), "{err}");
        assert!(out.stdout.is_empty());
    }

    let mut child = Guard::spawn(
        Command::new(env!("CARGO_BIN_EXE_turnbench"))
            .args(["sim", "--port", "0", "--profile", "instant", "--replicas", "3", "--routing", "prefix-affinity"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut url = String::new();
    BufReader::new(child.child().stdout.take().unwrap()).read_line(&mut url).unwrap();
    assert!(url.trim_end().starts_with("http://127.0.0.1:"), "the first stdout line stays the bare URL: {url:?}");
    let mut stderr = BufReader::new(child.child().stderr.take().unwrap());
    let mut lines = String::new();
    for _ in 0..2 {
        stderr.read_line(&mut lines).unwrap();
    }
    assert!(lines.contains("3 replicas") && lines.contains("routing prefix-affinity"), "{lines}");
}
