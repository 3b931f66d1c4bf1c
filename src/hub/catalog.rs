//! The model catalog (`configs/models.toml`, compiled in as [`BUILTIN_CATALOG`]) and the checks
//! every repo id, revision and repo path passes before it is joined to a cache folder.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::core::UsageError;

/// `configs/models.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Name of the model `turnbench setup` sets up when given none.
    pub recommended: String,
    pub models: Vec<CatalogModel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogModel {
    pub name: String,
    pub repo: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    pub include: Vec<String>,
    /// Built-in template used when the model ships none.
    pub chat_template: String,
    pub context_length: u64,
    pub min_gpu_memory_gib: f64,
    #[serde(default)]
    pub gated: bool,
    #[serde(default)]
    pub description: String,
}

/// The revision used where none is named: a catalog entry without `revision`, `setup` of a
/// repo id without `--revision`.
pub(crate) fn default_revision() -> String {
    "main".into()
}

/// The catalog compiled into the binary (used when `configs/models.toml` is absent).
pub const BUILTIN_CATALOG: &str = include_str!("../../configs/models.toml");

impl Catalog {
    pub fn parse(origin: &str, text: &str) -> Result<Self> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    let col = s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{line}:{col}: ")
                })
                .unwrap_or_default();
            UsageError::new(format!("{origin}:{at}{}", e.message()))
        })?;
        if catalog.find(&catalog.recommended).is_none() {
            return Err(UsageError::new(format!(
                "{origin}: recommended model {:?} is not in the catalog",
                catalog.recommended
            ))
            .into());
        }
        for m in &catalog.models {
            validate_repo_id(&m.repo).map_err(|e| UsageError::new(format!("{origin}: model {}: {e}", m.name)))?;
            if crate::template::ChatTemplate::builtin(&m.chat_template).is_none() {
                return Err(UsageError::new(format!(
                    "{origin}: model {}: chat_template {:?} is not a built-in template",
                    m.name, m.chat_template
                ))
                .into());
            }
        }
        Ok(catalog)
    }

    /// `path` if it exists, else the built-in catalog.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&path.display().to_string(), &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse("built-in catalog", BUILTIN_CATALOG),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn builtin() -> Self {
        Self::parse("built-in catalog", BUILTIN_CATALOG).expect("the built-in catalog parses")
    }

    /// By catalog name or repo id (case-insensitive).
    pub fn find(&self, name: &str) -> Option<&CatalogModel> {
        self.models
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name) || m.repo.eq_ignore_ascii_case(name))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// `org/name` with the hub's characters only; `..` refused (it would escape the cache).
pub fn validate_repo_id(repo: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && !p.contains("..")
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if parts.len() != 2 || !parts.iter().all(|p| ok_part(p)) {
        return Err(format!(
            "{repo:?} is not a Hugging Face repo id (org/name: letters, digits, '-', '_', '.'; no '..')"
        ));
    }
    Ok(())
}

/// A revision or a path inside a repo: relative, no `..`, `.` or empty component, no backslash.
pub fn validate_repo_path(what: &str, path: &str) -> std::result::Result<(), String> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(format!("{what} {path:?} would escape the cache folder (absolute, '..', '.' or empty component)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_has_the_issue_models() {
        let c = Catalog::builtin();
        assert_eq!(c.recommended, "phi-3.5-mini-awq");
        for repo in ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "mistralai/Mistral-7B-Instruct-v0.2"] {
            assert!(c.find(repo).is_some(), "{repo}");
        }
    }

    #[test]
    fn unknown_catalog_keys_are_errors_with_line() {
        let text = "recommended = \"a\"\n[[models]]\nname = \"a\"\nrepo = \"o/a\"\ninclude = []\nchat_template = \"chatml\"\ncontext_length = 1\nmin_gpu_memory_gib = 1\ncolour = \"red\"\n";
        let err = format!("{:#}", Catalog::parse("m.toml", text).unwrap_err());
        assert!(err.contains("m.toml:") && err.contains("colour"), "{err}");
    }

    #[test]
    fn dotdot_is_refused() {
        assert!(validate_repo_id("org/../x").is_err());
        assert!(validate_repo_id("../etc").is_err());
        assert!(validate_repo_id("org/na..me").is_err());
        assert!(validate_repo_id("Qwen/Qwen2.5-7B-Instruct").is_ok());
        assert!(validate_repo_path("revision", "../../tmp").is_err());
        assert!(validate_repo_path("file", "a/../../b").is_err());
        assert!(validate_repo_path("file", "/etc/passwd").is_err());
        assert!(validate_repo_path("revision", "refs/pr/1").is_ok());
    }
}
