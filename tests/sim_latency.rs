//! The latency model as a function, and as the server applies it (in paused tokio time).

use std::time::Duration;

use serde_json::json;
use turnbench::sim::{spawn, LatencyModel, SimConfig};

#[test]
fn ttft_grows_with_uncached_tokens() {
    let m = LatencyModel { overhead_ms: 15.0, prefill_ms_per_token: 0.05, inter_token_ms: 10.0, load_slowdown: 0.5 };
    let mut last = Duration::ZERO;
    for uncached in [0, 1, 100, 1000, 10_000, 100_000] {
        let t = m.ttft(uncached, 1);
        assert!(t > last || uncached == 0, "{uncached}: {t:?}");
        last = t;
    }
    assert_eq!(m.ttft(2000, 1), Duration::from_millis(115));
    // Two running requests: everything 1.5× slower.
    assert_eq!(m.ttft(2000, 2), Duration::from_micros(172_500));
    assert_eq!(m.inter_token(3), Duration::from_millis(20));
    assert_eq!(LatencyModel::default().ttft(1_000_000, 100), Duration::ZERO);
}

/// With time paused, the simulated durations are exact and cost no real time.
#[tokio::test(start_paused = true)]
async fn server_sleeps_the_model_time_and_cache_hits_shorten_ttft() {
    let mut c = SimConfig::instant();
    c.latency = LatencyModel { overhead_ms: 20.0, prefill_ms_per_token: 1.0, inter_token_ms: 10.0, load_slowdown: 0.0 };
    let sim = spawn(c).await.unwrap();
    let client = reqwest::Client::new();
    let body = json!({"messages": [{"role": "user", "content": "tick ".repeat(200)}], "max_tokens": 5});
    let url = format!("{}/v1/chat/completions", sim.base_url());

    let t0 = tokio::time::Instant::now();
    let v: serde_json::Value = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
    let first = t0.elapsed();
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    // overhead + prompt × 1 ms, then 4 gaps of 10 ms.
    let expected = Duration::from_millis(20 + prompt + 40);
    assert!(first >= expected, "{first:?} < {expected:?}");

    let t1 = tokio::time::Instant::now();
    let v: serde_json::Value = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
    let second = t1.elapsed();
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached > 0);
    let expected = Duration::from_millis(20 + (prompt - cached) + 40);
    assert!(second >= expected, "{second:?} < {expected:?}");
    assert!(second < first, "a cache hit must shorten the request: {second:?} vs {first:?}");
}
