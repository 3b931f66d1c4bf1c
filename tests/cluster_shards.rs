//! Shards of one run through the binary: `run --shard I/N` splits the work disjointly, `merge`
//! joins the shard folders into one exact report, and the plan refuses what cannot be sharded.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{assert_success, json_file, measured, show, turnbench, Guard};
use serde_json::Value;
use turnbench::analysis::stats::{percentile_sorted, sorted_finite};
use turnbench::sim::{self, SimConfig};

fn run(tmp: &Path, args: &[&str]) -> std::process::Output {
    turnbench(tmp).arg("run").args(args).output().unwrap()
}

fn only_dir(parent: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn conversation_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = measured(dir).iter().map(|r| r["conversation_id"].as_str().unwrap().to_string()).collect();
    ids.dedup();
    ids
}

fn ttfts(dir: &Path) -> Vec<f64> {
    measured(dir).iter().filter(|r| r["status"] == "ok").filter_map(|r| r["derived"]["ttft_ms"].as_f64()).collect()
}

fn validate(summary: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/summary.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(summary).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "summary.json breaks its schema: {errors:#?}");
}

#[test]
fn two_suite_shards_cover_the_selection_once_and_merge_exactly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(sim::spawn(SimConfig::instant())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = ["--endpoint", &sim.base_url(), "--max-conversations", "7", "--calibrate-secs", "0"];
    let whole = tmp.path().join("whole");
    let out = run(tmp.path(), &[&base[..], &["--results-dir", whole.to_str().unwrap()]].concat());
    assert_success(&out);
    let sharded = tmp.path().join("sharded");
    for i in 1..=2 {
        let shard = format!("{i}/2");
        let out = run(tmp.path(), &[&base[..], &["--shard", &shard, "--run-id", "suite-x", "--results-dir", sharded.to_str().unwrap()]].concat());
        assert_success(&out);
    }
    let (s1, s2) = (sharded.join("suite-x/shard-1-of-2"), sharded.join("suite-x/shard-2-of-2"));
    let (a, b) = (conversation_ids(&s1), conversation_ids(&s2));
    assert_eq!((a.len(), b.len()), (4, 3), "7 conversations, round-robin: {a:?} {b:?}");
    let union: BTreeSet<&String> = a.iter().chain(&b).collect();
    assert_eq!(union.len(), 7, "disjoint: {a:?} {b:?}");
    let whole_ids = conversation_ids(&only_dir(&whole));
    let all: BTreeSet<&String> = whole_ids.iter().collect();
    assert_eq!(union, all, "the shards cover exactly the unsharded selection");
    // --list-conversations of a shard lists its share.
    let out = run(tmp.path(), &[&base[..], &["--shard", "2/2", "--run-id", "suite-x", "--list-conversations"]].concat());
    assert_success(&out);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(b.iter().all(|id| listing.contains(id.as_str())) && !a.iter().any(|id| listing.contains(id.as_str())), "{listing}");
    let manifest = json_file(s2.join("manifest.json"));
    assert_eq!(manifest["shard"]["index"], 2);
    assert_eq!(manifest["shard"]["run_id"], "suite-x");
    assert!(manifest["clock_origin"].as_str().is_some_and(|t| t.contains('T')), "{manifest:#}");

    // A shard missing: merge says which.
    let partial = tmp.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    let out = turnbench(tmp.path()).args(["merge", s1.to_str().unwrap(), "--out", partial.join("m").to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard 2 of 2 missing"), "{}", show(&out));

    let merged = tmp.path().join("merged");
    let out = turnbench(tmp.path())
        .args(["merge", sharded.join("suite-x").to_str().unwrap(), "--out", merged.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out);
    let summary = json_file(merged.join("summary.json"));
    validate(&summary);
    let count = |d: &Path| json_file(d.join("summary.json"))["overall"]["ttft_ms"]["count"].as_u64().unwrap();
    assert_eq!(summary["overall"]["ttft_ms"]["count"].as_u64().unwrap(), count(&s1) + count(&s2));
    let raw = sorted_finite(ttfts(&s1).into_iter().chain(ttfts(&s2)));
    let p50 = summary["overall"]["ttft_ms"]["p50"].as_f64().unwrap();
    assert!((p50 - percentile_sorted(&raw, 50.0).unwrap()).abs() < 1e-9, "p50 {p50} of the concatenated raw records");
    assert_eq!(summary["shards"].as_array().map(Vec::len), Some(2), "{summary:#}");
    // Tests keep their number in the whole selection: one test per conversation, none shared.
    let tests: BTreeSet<(u64, String)> = measured(&merged)
        .iter()
        .map(|r| (r["test"].as_u64().unwrap(), r["conversation_id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(tests.iter().map(|t| t.0).collect::<BTreeSet<_>>().len(), 7, "{tests:?}");
    let report = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(report.contains("## Shards"), "{report}");
    assert!(std::fs::read_to_string(merged.join("report.html")).unwrap().contains(r#"id="shards""#));
    // A retried shard beside its killed attempt: the completed one is used. Another run's shard,
    // or a corrupt manifest, is refused, naming the folder.
    let retry = sharded.join("suite-x/shard-2-of-2-2");
    copy_dir(&s2, &retry);
    let mut killed = json_file(retry.join("manifest.json"));
    killed["completed"] = false.into();
    std::fs::write(retry.join("manifest.json"), killed.to_string()).unwrap();
    let again = tmp.path().join("again");
    let out = turnbench(tmp.path()).args(["merge", sharded.join("suite-x").to_str().unwrap(), "--out", again.to_str().unwrap()]).output().unwrap();
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the attempt that completed"), "{}", show(&out));
    assert_eq!(json_file(again.join("summary.json"))["overall"]["ttft_ms"]["count"], summary["overall"]["ttft_ms"]["count"]);
    for (key, value, expect) in [("run_id", Value::from("other"), "not a shard of the same run"), ("index", Value::from(7), "out of range")] {
        let mut m = json_file(retry.join("manifest.json"));
        m["shard"][key] = value;
        std::fs::write(retry.join("manifest.json"), m.to_string()).unwrap();
        let out = turnbench(tmp.path())
            .args(["merge", sharded.join("suite-x").to_str().unwrap(), "--out", tmp.path().join(key).to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect) && err.contains("shard-2-of-2-2"), "{err}");
        std::fs::write(retry.join("manifest.json"), killed.to_string()).unwrap();
    }
    // Never overwritten.
    let out = turnbench(tmp.path())
        .args(["merge", sharded.join("suite-x").to_str().unwrap(), "--out", merged.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn the_plan_refuses_what_cannot_be_sharded() {
    let tmp = tempfile::tempdir().unwrap();
    let past = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(120)).unwrap().to_string();
    let e = "http://127.0.0.1:9";
    for (args, expect) in [
        (vec!["--endpoint", e, "--shard", "1/2"], "--run-id"),
        (vec!["--endpoint", e, "--run-id", "x"], "--shard"),
        (vec!["--endpoint", e, "--shard", "3/2", "--run-id", "x"], "between 1 and N"),
        (vec!["--endpoint", e, "--shard", "job/2", "--run-id", "x"], "JOB_COMPLETION_INDEX"),
        (vec!["--endpoint", e, "--shard", "1/2", "--run-id", "x", "--sweep", "auto"], "--sweep auto"),
        (vec!["--endpoint", e, "--shard", "1/4", "--run-id", "x", "--concurrency", "3"], "without a client"),
        (vec!["--shard", "1/2", "--run-id", "x"], "needs --endpoint"),
        (vec!["--metrics-url", "http://a/metrics"], "managed engine"),
        (vec!["--endpoint", e, "--start-at", &past], "ago"),
        (vec!["--endpoint", e, "--metrics-url", "nope"], "not a URL"),
    ] {
        let out = turnbench(tmp.path()).arg("run").args(&args).env_remove("JOB_COMPLETION_INDEX").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(!tmp.path().join("results").exists(), "a refused plan writes nothing");
}

#[test]
fn four_load_shards_started_together_match_one_unsharded_run() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = SimConfig::instant();
    config.latency.inter_token_ms = 1.0;
    let sim = rt.block_on(sim::spawn(config)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let load = [
        "--endpoint", &sim.base_url(), "--workload", "multiround", "--users", "400", "--rounds", "1", "--answer-tokens", "8",
        "--qps", "40", "--arrivals", "constant", "--duration", "3", "--warmup", "0", "--calibrate-secs", "0",
    ];
    let whole = tmp.path().join("whole");
    assert_success(&run(tmp.path(), &[&load[..], &["--results-dir", whole.to_str().unwrap()]].concat()));

    let sharded = tmp.path().join("sharded");
    let start = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(6)).unwrap().to_string();
    let mut shards: Vec<Guard> = (1..=4)
        .map(|i| {
            let shard = format!("{i}/4");
            let mut cmd = turnbench(tmp.path());
            cmd.arg("run")
                .args(load)
                .args(["--shard", &shard, "--run-id", "load-x", "--start-at", &start, "--results-dir", sharded.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            Guard::spawn(&mut cmd)
        })
        .collect();
    for g in shards.drain(..) {
        assert_success(&g.wait_with_output());
    }
    let merged = tmp.path().join("merged");
    let out = turnbench(tmp.path())
        .args(["merge", sharded.join("load-x").to_str().unwrap(), "--out", merged.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out);
    let level = |d: &Path| json_file(d.join("summary.json"))["load"]["levels"][0].clone();
    let (one, four) = (level(&only_dir(&whole)), level(&merged));
    assert_eq!(one["label"], "qps-40");
    assert_eq!(four["label"], "qps-40", "shards run the whole run's level under its label");
    assert_eq!(four["target_qps"].as_f64(), Some(40.0), "4 × 10/s offered together");
    let (a, b) = (one["achieved_qps"].as_f64().unwrap(), four["achieved_qps"].as_f64().unwrap());
    println!("achieved: unsharded {a:.2}/s, 4 shards merged {b:.2}/s");
    assert!((b - a).abs() <= 0.05 * a, "4 shards {b:.2}/s vs one run {a:.2}/s: more than 5 % apart");
    let summary = json_file(merged.join("summary.json"));
    validate(&summary);
    let offsets: Vec<f64> = summary["shards"].as_array().unwrap().iter().map(|s| s["offset_ms"].as_f64().unwrap()).collect();
    assert_eq!(offsets.len(), 4);
    // Every shard's conversations are its own: no conversation id in two shards.
    let mut seen = BTreeSet::new();
    for r in measured(&merged) {
        let key = (r["conversation_id"].as_str().unwrap().to_string(), r["turn"].as_u64());
        assert!(seen.insert(key.clone()), "{key:?} sent twice");
    }
}
