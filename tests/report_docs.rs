//! docs/results.md names every field of a TurnRecord and of summary.json, and every CSV column.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use turnbench::core::record::{CacheObservation, TurnRecord};

fn docs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results.md")).unwrap()
}

/// The text of the section that starts with heading `h`, up to the next heading.
fn section<'a>(docs: &'a str, h: &str) -> &'a str {
    let start = docs.find(h).unwrap_or_else(|| panic!("docs/results.md has no heading {h:?}"));
    let end = docs[start + 1..].find("\n#").map_or(docs.len(), |i| start + 1 + i);
    &docs[start..end]
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
    // Every optional part present, so that its fields are serialized too.
    let record = TurnRecord {
        level: Some("l".into()),
        session: Some(1),
        resources: Some(Default::default()),
        prompt: Some(Default::default()),
        cache: CacheObservation { token_source: Some("server".into()), ..Default::default() },
        ..Default::default()
    };
    let mut fields = Vec::new();
    paths("", &serde_json::to_value(record).unwrap(), &mut fields);
    for nested in ["resources.gpu_util_mean_pct", "prompt.mode", "cache.token_source"] {
        assert!(fields.iter().any(|f| f == nested), "{nested} not serialized: {fields:?}");
    }
    let docs = docs();
    for f in fields.iter().filter(|f| !matches!(f.as_str(), "timing" | "derived" | "usage" | "cache" | "resources" | "prompt")) {
        assert!(docs.contains(&format!("| `{f}` |")), "docs/results.md lacks a row for TurnRecord field `{f}`");
    }
}

/// Follows `$ref` into the schema's `$defs`.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            resolve(schema, &schema["$defs"][name])
        }
        None => node,
    }
}

/// Every property name below `node`, through `$ref`, `anyOf` / `oneOf` / `allOf` and `items`.
fn property_names(schema: &Value, node: &Value, out: &mut BTreeSet<String>) {
    let node = resolve(schema, node);
    for key in ["anyOf", "oneOf", "allOf"] {
        for alt in node[key].as_array().into_iter().flatten() {
            property_names(schema, alt, out);
        }
    }
    if node["items"].is_object() {
        property_names(schema, &node["items"], out);
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        out.insert(name.clone());
        property_names(schema, child, out);
    }
}

/// Every summary field has a row in the summary's table, and every field below it is named (in
/// backticks) in that row, or in the section the row points to.
#[test]
fn every_summary_field_is_documented() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/summary.schema.json")).unwrap(),
    )
    .unwrap();
    let docs = docs();
    let summary = section(&docs, "## The summary");
    let elsewhere = |key: &str| match key {
        "conversations" => section(&docs, "### `conversations.csv`"),
        "load" => section(&docs, "## Multi-user runs"),
        "ab" => section(&docs, "## A/B"),
        _ => "",
    };
    let mut missing = Vec::new();
    for (key, node) in schema["properties"].as_object().unwrap() {
        let row = summary.lines().find(|l| {
            [format!("| `{key}` |"), format!("| `{key}` (list) |"), format!("| `{key}` (optional) |")]
                .iter()
                .any(|start| l.starts_with(start.as_str()))
        });
        let Some(row) = row else {
            missing.push(format!("`{key}`: no row in the summary's table"));
            continue;
        };
        let scope = format!("{row}\n{}", elsewhere(key));
        let mut names = BTreeSet::new();
        property_names(&schema, node, &mut names);
        for name in names {
            if !scope.contains(&format!("`{name}`")) && !scope.contains(&format!("`{name}[]`")) {
                missing.push(format!("`{key}` … `{name}`"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/results.md does not name these summary fields:\n{}", missing.join("\n"));
}

/// Every column of the CSV files a run writes (their headers, read from the files) is named in
/// its section of docs/results.md, or has a row of its own among the record's fields.
#[test]
fn every_csv_column_is_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = turnbench::core::results::Manifest { engine: "sim".into(), ..Default::default() };
    turnbench::core::results::write_manifest(tmp.path(), &manifest).unwrap();
    std::fs::write(tmp.path().join("turns.jsonl"), "").unwrap();
    turnbench::report::write_reports(tmp.path(), &manifest).unwrap();
    let header = |file: &str| -> Vec<String> {
        let mut r = csv::Reader::from_path(tmp.path().join(file)).unwrap();
        r.headers().unwrap().iter().map(String::from).collect()
    };
    let docs = docs();
    let turns = section(&docs, "### `turns.csv`");
    let columns = header("turns.csv");
    assert!(columns.len() > 40, "{columns:?}");
    for c in &columns {
        let row = ["", "timing.", "derived.", "usage.", "cache.", "resources."].iter().any(|p| docs.contains(&format!("| `{p}{c}` |")));
        assert!(row || turns.contains(&format!("`{c}`")), "turns.csv column `{c}` is not documented");
    }
    let conversations = section(&docs, "### `conversations.csv`");
    let columns = header("conversations.csv");
    assert!(columns.len() > 10, "{columns:?}");
    for c in &columns {
        assert!(conversations.contains(&format!("`{c}`")), "conversations.csv column `{c}` is not documented");
    }
}
