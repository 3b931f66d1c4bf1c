//! Fuzz every parser a server or a data file feeds, with generated inputs, and count panics:
//!
//! ```text
//! cargo bench --bench fuzz_parsers                      # 1,000,000 inputs per parser
//! cargo bench --profile dev --bench fuzz_parsers -- 10000   # quicker, unoptimized
//! ```
//!
//! Inputs are seeds (well-formed examples of each format) mutated by a seeded generator: bytes
//! flipped, inserted, deleted, duplicated, spliced with the format's own tokens, truncated. Every
//! parse runs under `catch_unwind`; the command prints, per parser, how many inputs it took, how
//! many parsed, how many were refused with an error, and how many panicked, and exits 1 if any
//! did. Deterministic: the same count gives the same inputs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use turnbench::client::metrics::ServerSnapshot;
use turnbench::client::parse_chunk;
use turnbench::client::sse::{Events, SseDecoder};
use turnbench::engine::vllm::VllmProfile;
use turnbench::sim::Profile;
use turnbench::workload::load::{parse_conversations, parse_rag};
use turnbench::workload::sharegpt::{openai_from_text, sharegpt_from_text};
use turnbench::workload::snapshot::snapshot_from_text;
use turnbench::workload::synthetic::parse_config;

/// xorshift64*: small, fast, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutated copy of a seed.
fn mutate(rng: &mut Rng, seed: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if at < v.len() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            3 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(32)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let t = tokens[rng.below(tokens.len())];
                v.splice(at..at, t.iter().copied());
            }
            5 => v.truncate(at),
            _ => {
                // A run of one interesting byte.
                let b = [b'\n', b'\r', b'"', b'{', b'[', b'9', b'-', 0xff][rng.below(8)];
                v.splice(at..at, std::iter::repeat_n(b, 1 + rng.below(4)));
            }
        }
        if v.len() > 4096 {
            v.truncate(4096);
        }
    }
    v
}

struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    tokens: Vec<&'static [u8]>,
    /// `Ok(true)`: parsed; `Ok(false)`: refused with an error.
    run: fn(&[u8], &mut Rng) -> bool,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sse(input: &[u8], rng: &mut Rng) -> bool {
    let mut d = SseDecoder::new(256, 1 << 16);
    let mut events = Events::default();
    let mut at = 0;
    while at < input.len() {
        let end = (at + 1 + rng.below(64)).min(input.len());
        if d.push(&input[at..end], &mut events).is_err() {
            return false;
        }
        at = end;
    }
    d.finish(&mut events).is_ok()
}

fn seeds(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn targets() -> Vec<Target> {
    let json_tokens: Vec<&'static [u8]> = vec![
        b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"true", b"-1", b"1e308", b"18446744073709551616",
        b"\"role\"", b"\"content\"", b"\"user\"", b"\"assistant\"", b"\\u0000", b"\\ud800", b"\n",
    ];
    vec![
        Target {
            name: "SSE decoder",
            seeds: seeds(&[
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
                ": ping\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\n",
            ]),
            tokens: vec![b"data:", b"data: ", b"\n", b"\r", b"\r\n", b":", b"[DONE]", b"\xff\xfe"],
            run: sse,
        },
        Target {
            name: "stream chunk (JSON)",
            seeds: seeds(&[
                r#"{"choices":[{"index":0,"delta":{"content":"hello"}}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":8}}}"#,
                r#"{"choices":[{"text":"x"}]}"#,
            ]),
            tokens: json_tokens.clone(),
            run: |b, _| parse_chunk(&text(b)).is_ok(),
        },
        Target {
            name: "/metrics (Prometheus text)",
            seeds: seeds(&[concat!(
                "# HELP vllm:prefix_cache_queries_total q\n# TYPE vllm:prefix_cache_queries_total counter\n",
                "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"tiny\"} 589.0\n",
                "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{engine=\"0\"} 480.0\n",
                "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.25\n",
                "# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{block_size=\"32\",enable_prefix_caching=\"True\"} 1.0\n",
                "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2\n",
            )]),
            tokens: vec![b"#", b" TYPE ", b" HELP ", b"{", b"}", b"=", b"\"", b",", b"NaN", b"+Inf", b"-1e999", b"\n", b"_total", b"counter", b"gauge", b"histogram", b"le=\"+Inf\""],
            run: |b, _| ServerSnapshot::parse(&text(b)).is_ok(),
        },
        Target {
            name: "ShareGPT importer",
            seeds: seeds(&[r#"[{"id":"a","conversations":[{"from":"system","value":"s"},{"from":"human","value":"q"},{"from":"gpt","value":"an answer"}]}]"#]),
            tokens: json_tokens.clone(),
            run: |b, _| sharegpt_from_text("f", &text(b), 16).is_ok(),
        },
        Target {
            name: "OpenAI messages importer",
            seeds: seeds(&[
                "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"p\"}]}]\n",
            ]),
            tokens: json_tokens.clone(),
            run: |b, _| openai_from_text("f", &text(b), 16).is_ok(),
        },
        Target {
            name: "snapshot importer",
            seeds: seeds(&[r#"{"id":"s","prompt_content":"next?","max_tokens":64,"cut_chat_history":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}"#]),
            tokens: json_tokens.clone(),
            run: |b, _| snapshot_from_text("f", &text(b), 16).is_ok(),
        },
        Target {
            name: "suite (conversations + RAG)",
            seeds: seeds(&[
                r#"{"version":1,"conversations":[{"id":"c","title":"t","tags":["qa"],"system":"s","turns":[{"user":"q","max_tokens":8,"attachments":[{"title":"log","generate":{"kind":"log","tokens":20,"seed":1}}]},{"user":"r","rag":[{"inject":["d"],"position":"system"}]},{"user":"x","rag":[{"remove":["d"]}]}]}]}"#,
            ]),
            tokens: json_tokens.clone(),
            run: |b, _| {
                let t = text(b);
                let docs = parse_rag("r", r#"{"version":1,"documents":[{"id":"d","title":"D","source":"s","text":"doc text"}]}"#).unwrap_or_default();
                let rag_ok = parse_rag("r", &t).is_ok();
                parse_conversations("c", &t, &docs).is_ok() || rag_ok
            },
        },
        Target {
            name: "synthetic config",
            seeds: seeds(&[r#"{"version":1,"conversations":6,"text_files":["c.txt"],"turns":{"min":2,"max":4},"input_tokens":{"min":40,"max":120},"output_tokens":{"min":16,"max":48},"shared_prefix_tokens":200}"#]),
            tokens: json_tokens.clone(),
            run: |b, _| parse_config("f", &text(b)).is_ok(),
        },
        Target {
            name: "vLLM + sim profiles (TOML)",
            seeds: seeds(&[
                "description = \"x\"\nenable_prefix_caching = true\nmax_num_batched_tokens = 512\nmax_num_seqs = 2\nstartup_timeout_s = 900\ngpu_memory_utilization = 0.9\n[env]\nA = \"b\"\n",
                "block_size = 16\ninter_token_ms = 10.0\noverhead_ms = 1e3\nfail_rate = 0.1\n",
            ]),
            tokens: vec![b"=", b"\n", b"[", b"]", b"\"", b"1e300", b"-1", b"18446744073709551615", b"nan", b"inf", b"true", b"startup_timeout_s", b"inter_token_ms"],
            run: |b, _| {
                let t = text(b);
                VllmProfile::parse(&t, "p").is_ok() | Profile::parse(&t, "p").is_ok()
            },
        },
    ]
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.replace('_', "").parse().ok())
        .or_else(|| std::env::var("FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(1_000_000);
    static QUIET: AtomicBool = AtomicBool::new(true);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !QUIET.load(Ordering::Relaxed) {
            default_hook(info);
        }
    }));
    println!("{:<28} {:>10} {:>10} {:>10} {:>7} {:>8}", "parser", "inputs", "parsed", "refused", "panics", "secs");
    let mut total_panics = 0u64;
    for (t, target) in targets().into_iter().enumerate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
        let (mut parsed, mut refused, mut panics) = (0u64, 0u64, 0u64);
        let mut first_panic: Option<Vec<u8>> = None;
        let started = Instant::now();
        for i in 0..n {
            let seed = &target.seeds[(i as usize) % target.seeds.len()];
            let input = mutate(&mut rng, seed, &target.tokens);
            let mut parse_rng = Rng(rng.next() | 1);
            match catch_unwind(AssertUnwindSafe(|| (target.run)(&input, &mut parse_rng))) {
                Ok(true) => parsed += 1,
                Ok(false) => refused += 1,
                Err(_) => {
                    panics += 1;
                    first_panic.get_or_insert(input);
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!("{:<28} {:>10} {:>10} {:>10} {:>7} {:>8.1}", target.name, n, parsed, refused, panics, secs);
        if let Some(input) = first_panic {
            println!("  first panicking input: {:?}", String::from_utf8_lossy(&input));
        }
        total_panics += panics;
    }
    QUIET.store(false, Ordering::Relaxed);
    if total_panics > 0 {
        eprintln!("{total_panics} panics");
        std::process::exit(1);
    }
}
