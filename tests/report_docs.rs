//! docs/results.md names every field of a TurnRecord and of summary.json, and every CSV column.

use std::path::Path;

use serde_json::Value;
use turnbench::core::record::TurnRecord;

fn docs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results.md")).unwrap()
}

/// Dotted paths of every key of `v` (`timing.sent_ms`, …).
fn paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            out.push(p.clone());
            paths(&p, child, out);
        }
    }
}

#[test]
fn every_turn_record_field_is_documented() {
    let record = TurnRecord { level: Some("l".into()), session: Some(1), ..Default::default() };
    let mut fields = Vec::new();
    paths("", &serde_json::to_value(record).unwrap(), &mut fields);
    let docs = docs();
    for f in fields.iter().filter(|f| !matches!(f.as_str(), "timing" | "derived" | "usage" | "cache")) {
        assert!(docs.contains(&format!("| `{f}` |")), "docs/results.md lacks a row for TurnRecord field `{f}`");
    }
}

#[test]
fn every_summary_field_is_documented() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/summary.schema.json")).unwrap(),
    )
    .unwrap();
    let docs = docs();
    for key in schema["properties"].as_object().unwrap().keys() {
        assert!(docs.contains(&format!("`{key}`")), "docs/results.md does not mention summary field `{key}`");
    }
}
