//! A run against a simulated cluster (`sim --replicas 2`) through the binary: the server's truth
//! per replica in summary.json and report.md, and what prefix-affinity routing saves over
//! round-robin on multi-round work with a shared system prompt and per-user history.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_success, json_file, turnbench};
use serde_json::Value;
use turnbench::sim::{self, Routing, SimConfig};

fn cluster(routing: Routing) -> SimConfig {
    let mut c = SimConfig::instant();
    c.replicas = 2;
    c.routing = routing;
    // ~80 ms an answer: 3 clients finish about 25 of the 64 users' conversations in 2 s, so no
    // conversation is sent twice (a repeat would be cached everywhere and hide the routing).
    c.latency.inter_token_ms = 5.0;
    c
}

/// A closed-loop run of 64 users × 3 rounds against `base_url` (a short shared system prompt, a
/// long history of each user's own); its folder.
fn run(tmp: &Path, name: &str, base_url: &str, extra: &[&str]) -> PathBuf {
    let results = tmp.join(name);
    let out = turnbench(tmp)
        .arg("run")
        .args([
            "--endpoint", base_url, "--workload", "multiround", "--users", "64", "--rounds", "3", "--system-tokens", "64",
            "--history-tokens", "2048", "--answer-tokens", "16", "--concurrency", "3", "--duration", "2", "--warmup", "0",
            "--calibrate-secs", "0", "--sample-interval", "50", "--results-dir", results.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert_success(&out);
    std::fs::read_dir(&results).unwrap().next().unwrap().unwrap().path()
}

fn hits(replica: &Value) -> u64 {
    replica["total"]["prefix_cache_hits"].as_u64().unwrap()
}

#[test]
fn prefix_affinity_reuses_more_than_round_robin_and_replicas_add_up() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rr = rt.block_on(sim::spawn(cluster(Routing::RoundRobin))).unwrap();
    let affinity = rt.block_on(sim::spawn(cluster(Routing::PrefixAffinity))).unwrap();

    // Round-robin: the replicas are found from the engine labels of the endpoint's /metrics.
    let rr_dir = run(tmp.path(), "rr", &rr.base_url(), &[]);
    let rr_summary = json_file(rr_dir.join("summary.json"));
    let replicas = rr_summary["replicas"].as_array().expect("a replicas list");
    assert_eq!(replicas.iter().map(|r| r["name"].as_str().unwrap()).collect::<Vec<_>>(), vec!["engine-0", "engine-1"]);
    let routing = &rr_summary["routing"];
    let sum: u64 = replicas.iter().map(hits).sum();
    assert!(sum > 0, "{routing:#}");
    assert_eq!(Some(sum), routing["server_hits"].as_u64(), "the replicas' hits add up to the server's total: {routing:#}");
    assert!(replicas.iter().all(|r| r["levels"].as_array().map(Vec::len) == Some(1)), "one entry per level: {replicas:#?}");

    // Prefix-affinity: each replica named by --metrics-url.
    let urls: Vec<String> = (0..2).map(|i| format!("{}/replica/{i}/metrics", affinity.base_url())).collect();
    let af_dir = run(tmp.path(), "affinity", &affinity.base_url(), &["--metrics-url", &urls[0], "--metrics-url", &urls[1]]);
    let af_summary = json_file(af_dir.join("summary.json"));
    let replicas = af_summary["replicas"].as_array().expect("a replicas list");
    assert_eq!(replicas.iter().map(|r| r["url"].as_str().unwrap()).collect::<Vec<_>>(), urls);
    let sum: u64 = replicas.iter().map(hits).sum();
    let server = af_summary["routing"]["server_hits"].as_u64().unwrap();
    assert_eq!(sum, server, "scraped before the first and after the last request, the counters agree");

    let reuse = |s: &Value| s["routing"]["reuse_pct"].as_f64().unwrap();
    let (a, r) = (reuse(&af_summary), reuse(&rr_summary));
    println!("prompt reuse, 2 replicas: prefix-affinity {a:.1} %, round-robin {r:.1} %");
    assert!(a >= r + 15.0, "prefix-affinity {a:.1} % should reuse at least 15 points more than round-robin {r:.1} %");
    let lost = |s: &Value| s["routing"]["lost_pct_points"].as_f64();
    if let (Some(la), Some(lr)) = (lost(&af_summary), lost(&rr_summary)) {
        assert!(lr > la, "round-robin loses more against one shared cache: {lr:.1} vs {la:.1} points");
    }
    let report = std::fs::read_to_string(rr_dir.join("report.md")).unwrap();
    assert!(report.contains("## Replicas") && report.contains("engine-1"), "{report}");
    let page = std::fs::read_to_string(rr_dir.join("report.html")).unwrap();
    assert!(page.contains(r#"id="replicas""#) && page.contains(r#"id="routing""#) && page.contains("engine-1"));
}
