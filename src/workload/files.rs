//! Reading the files importers and generators take: whole JSON or JSONL lists, and a file's hash
//! for the manifest. Read errors are usage errors naming the file (and line:column for JSON).

use anyhow::Result;

use super::SourceFile;
use crate::core::UsageError;

/// A data file's path and SHA-256, for the manifest.
pub fn hash_file(path: &std::path::Path) -> Result<SourceFile> {
    let bytes = std::fs::read(path).map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())))?;
    Ok(SourceFile {
        path: path.display().to_string(),
        sha256: crate::core::hash::sha256_hex(&bytes),
    })
}

/// Reads a JSON file, or a JSONL file (one value per line), as a list of values.
pub fn read_json_list(path: &std::path::Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| UsageError::new(format!("{}:{}:{}: {e}", path.display(), e.line(), e.column())))?;
        return Ok(v.as_array().cloned().unwrap_or_default());
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line)
            .map_err(|e| UsageError::new(format!("{}:{}:{}: {e}", path.display(), i + 1, e.column())))?;
        out.push(v);
    }
    Ok(out)
}
