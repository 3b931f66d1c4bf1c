//! Reading the files importers and generators take: whole JSON or JSONL lists, and a file's hash
//! for the manifest. Read errors are usage errors naming the file (and line:column for JSON).

use anyhow::Result;

use super::SourceFile;
use crate::core::config::{read_limited, MAX_DATA_BYTES};
use crate::core::UsageError;

/// Reads a data file of at most [`MAX_DATA_BYTES`]; errors are usage errors naming the file
/// (and the limit, when that is what was hit).
pub fn read_data(path: &std::path::Path) -> Result<String> {
    read_limited(path, MAX_DATA_BYTES).map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())).into())
}

/// A data file's path and SHA-256, for the manifest.
pub fn hash_file(path: &std::path::Path) -> Result<SourceFile> {
    let bytes = read_data(path)?.into_bytes();
    Ok(SourceFile {
        path: path.display().to_string(),
        sha256: crate::core::hash::sha256_hex(&bytes),
    })
}

/// Reads a JSON file, or a JSONL file (one value per line), as a list of values.
pub fn read_json_list(path: &std::path::Path) -> Result<Vec<serde_json::Value>> {
    parse_json_list(&path.display().to_string(), &read_data(path)?)
}

/// [`read_json_list`] of text already read; `origin` names it in errors.
pub fn parse_json_list(origin: &str, text: &str) -> Result<Vec<serde_json::Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| UsageError::new(format!("{origin}:{}:{}: {e}", e.line(), e.column())))?;
        return match v {
            serde_json::Value::Array(a) => Ok(a),
            _ => Err(UsageError::new(format!("{origin}: expected a JSON array or JSON lines")).into()),
        };
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line)
            .map_err(|e| UsageError::new(format!("{origin}:{}:{}: {e}", i + 1, e.column())))?;
        out.push(v);
    }
    Ok(out)
}
