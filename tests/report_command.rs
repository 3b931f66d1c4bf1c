//! `turnbench report DIR [--compare OTHER]` driven in-process on folders written by hand.

use std::fs;
use std::io::Write;
use std::path::Path;

use clap::Parser;
use serde_json::Value;
use turnbench::cli::Cli;
use turnbench::core::record::{CacheObservation, RagPhase, RecordSink, RequestTiming, ReuseFlag, Status, TurnRecord, Usage};
use turnbench::core::results::{write_manifest, Manifest};

fn ok_record(conv: &str, turn: u32, ttft: f64, prompt: u64, cached: u64) -> TurnRecord {
    let timing = RequestTiming {
        scheduled_ms: 1000.0,
        sent_ms: 1000.0,
        first_token_ms: Some(1000.0 + ttft),
        end_ms: 1000.0 + ttft + 90.0,
        content_chunk_ms: (0..10).map(|i| 1000.0 + ttft + 10.0 * i as f64).collect(),
    };
    let usage = Usage { prompt_tokens: Some(prompt), completion_tokens: Some(10), cached_tokens: Some(cached) };
    TurnRecord {
        test: 0,
        conversation_id: conv.into(),
        tags: vec!["qa".into(), "rag".into()],
        turn,
        level: Some("c1".into()),
        session: Some(0),
        rag_phase: Some(if turn == 1 {
            RagPhase::Before
        } else if turn == 2 {
            RagPhase::With
        } else {
            RagPhase::After
        }),
        rag_actions: if turn == 2 { vec!["inject:doc-a@system".into()] } else { vec![] },
        max_tokens: 64,
        derived: timing.derive(usage.completion_tokens),
        timing,
        usage,
        output_chunks: 10,
        cache: CacheObservation {
            server_hits: Some(cached),
            server_queries: Some(prompt),
            common_prefix_tokens: Some(cached + 5),
            expected_reusable_tokens: Some(cached + 16 * u64::from(turn == 3)),
            previous_prompt_tokens: prompt.checked_sub(100).filter(|_| turn > 1),
            block_size: Some(16),
            flag: (turn == 3).then_some(ReuseFlag::CapacityEviction),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A results folder: warm-up, successes over three turns, one failure, truncated last line.
fn write_run(dir: &Path, later_ttft: f64, simulated: bool) {
    fs::create_dir_all(dir).unwrap();
    let manifest = Manifest {
        tool_version: "0.1.0".into(),
        command_line: vec!["turnbench".into(), "run".into(), "--engine".into(), "sim".into()],
        started_at: "2026-11-25T10:00:00Z".into(),
        label: Some("test".into()),
        engine: if simulated { "sim" } else { "external" }.into(),
        simulated,
        model: Some("tiny".into()),
        block_size: Some(16),
        prefix_caching: Some(true),
        token_counts_estimated: true,
        settings: serde_json::json!({ "tags": ["qa"] }),
        ..Default::default()
    };
    write_manifest(dir, &manifest).unwrap();
    let mut sink = RecordSink::create(&dir.join("turns.jsonl")).unwrap();
    let mut warm = ok_record("w", 1, 5000.0, 50, 0);
    warm.warmup = true;
    sink.append(&warm).unwrap();
    for conv in ["a", "b"] {
        sink.append(&ok_record(conv, 1, 400.0, 1000, 0)).unwrap();
        sink.append(&ok_record(conv, 2, later_ttft, 1100, 992)).unwrap();
        sink.append(&ok_record(conv, 3, later_ttft + 10.0, 1200, 1072)).unwrap();
    }
    let failed = TurnRecord {
        conversation_id: "c".into(),
        tags: vec!["code".into()],
        turn: 1,
        status: Status::Http5xx,
        http_status: Some(503),
        error: Some("503 Service Unavailable".into()),
        ..Default::default()
    };
    sink.append(&failed).unwrap();
    drop(sink);
    let mut f = fs::OpenOptions::new().append(true).open(dir.join("turns.jsonl")).unwrap();
    f.write_all(br#"{"test":0,"conversation_id":"trunc"#).unwrap();
}

fn report(args: &[&str]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut argv = vec!["turnbench", "report"];
    argv.extend_from_slice(args);
    rt.block_on(turnbench::run(Cli::parse_from(argv)))
}

fn schema_validator() -> jsonschema::Validator {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/summary.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).expect("docs/summary.schema.json is a valid schema")
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "summary.json does not match docs/summary.schema.json:\n{}", errors.join("\n"));
}

#[test]
fn report_rebuilds_every_file_and_summary_matches_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    write_run(&dir, 50.0, true);
    report(&[dir.to_str().unwrap()]).unwrap();

    for name in ["turns.csv", "conversations.csv", "summary.json", "report.md"] {
        let p = dir.join(name);
        assert!(p.is_file() && fs::metadata(&p).unwrap().len() > 0, "{name} missing");
    }
    let summary: Value = serde_json::from_slice(&fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["requests"]["total"], 8, "truncated last line skipped, warm-up counted");
    assert_eq!(summary["requests"]["warmup"], 1);
    assert_eq!(summary["requests"]["failed"], 1);
    assert_eq!(summary["run"]["simulated"], true);
    assert_eq!(summary["first_vs_later"]["ratio_p50"], 400.0 / 55.0);

    let v = schema_validator();
    assert_valid(&v, &summary);

    // The schema is closed: a field added to Summary (at any level) but not to the schema fails.
    let mut extra = summary.clone();
    extra["new_field"] = Value::from(1);
    assert!(!v.is_valid(&extra), "top-level additionalProperties must be false");
    let mut extra = summary.clone();
    extra["overall"]["ttft_ms"]["p999"] = Value::from(1.0);
    assert!(!v.is_valid(&extra), "Stats additionalProperties must be false");
    let mut extra = summary.clone();
    extra["conversations"][0]["new_field"] = Value::from(1);
    assert!(!v.is_valid(&extra), "conversation additionalProperties must be false");
    // And a field removed from Summary but still required by the schema fails too.
    let mut missing = summary.clone();
    missing["cache"].as_object_mut().unwrap().remove("reuse_pct");
    assert!(!v.is_valid(&missing));

    let md = fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("Simulated run (turnbench sim): numbers describe the simulator, not a real model"));
    assert!(md.contains("| http_5xx | 1 | 503 Service Unavailable |"), "{md}");
    let csv = fs::read_to_string(dir.join("turns.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8);
}

#[test]
fn empty_run_summary_matches_schema_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    fs::create_dir_all(&dir).unwrap();
    write_manifest(&dir, &Manifest { interrupted: true, ..Default::default() }).unwrap();
    fs::write(dir.join("turns.jsonl"), "").unwrap();
    report(&[dir.to_str().unwrap()]).unwrap();
    let summary: Value = serde_json::from_slice(&fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_valid(&schema_validator(), &summary);
    assert!(fs::read_to_string(dir.join("report.md")).unwrap().contains("Interrupted: partial results"));
}

#[test]
fn compare_two_runs_writes_compare_file() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("cache-on");
    let b = tmp.path().join("cache-off");
    write_run(&a, 50.0, false);
    write_run(&b, 350.0, false);
    report(&[a.to_str().unwrap(), "--compare", b.to_str().unwrap()]).unwrap();
    let md = fs::read_to_string(a.join("compare-cache-off.md")).unwrap();
    assert!(md.contains("A = cache-on, B = cache-off"), "{md}");
    assert!(md.contains("| turn 2 TTFT p50 ms | 50.0 | 350.0 | -300.0 | 7.00× |"), "{md}");
    assert!(md.contains("| success rate | 85.7% | 85.7% |"), "{md}");
    assert!(!md.contains("Simulated run"));
    assert!(!b.join("summary.json").exists(), "the compared folder is only read");
}

#[test]
fn missing_folder_is_a_clear_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = report(&[tmp.path().join("nope").to_str().unwrap()]).unwrap_err();
    assert!(err.to_string().starts_with("no such results folder"), "{err}");
    assert_eq!(err.chain().count(), 1, "one line");
    assert!(err.is::<turnbench::core::UsageError>());
    let err = report(&[tmp.path().to_str().unwrap()]).unwrap_err();
    assert!(err.to_string().contains("has no turns.jsonl"), "{err}");
    assert!(err.is::<turnbench::core::UsageError>());
}
