//! The Hugging Face cache as Python's huggingface_hub lays it out
//! (`models--org--name/{blobs,snapshots,refs}`): where it is ([`HubConfig`]), what of it is
//! there ([`cached_snapshot`], [`resolve_model`]), how big a snapshot is, and whether a download
//! fits on its disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::catalog::{validate_repo_id, validate_repo_path, Catalog};

/// Default Hugging Face endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Range requests of 10 MB keep a request's overhead small beside its transfer and bound what
/// an interruption loses (and the memory a chunk is buffered in).
pub const DEFAULT_CHUNK_BYTES: usize = 10_000_000;

/// Where the hub talks to, where the cache is, and the token: read once from the environment by
/// the CLI, passed explicitly everywhere else.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    /// Attempts per request for transient failures (connect errors, 5xx).
    pub retry_attempts: usize,
    /// Size of the range requests a file is fetched in; an interrupted transfer resumes from its
    /// last complete chunk.
    pub chunk_bytes: usize,
}

impl HubConfig {
    /// `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME` / `~/.cache/huggingface`, `HF_TOKEN` (else the
    /// token file `huggingface-cli login` writes).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache"));
            base.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            let file = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(file).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()).trim_end_matches('/').to_string(),
            cache_dir,
            token,
            retry_attempts: 5,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// `models--org--name`.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The local snapshot of `repo` at `revision` (branch, tag or commit), if it is in the cache.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    if validate_repo_id(repo).is_err() || validate_repo_path("revision", revision).is_err() {
        return None;
    }
    let folder = cache.join(repo_folder(repo));
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        std::fs::read_to_string(folder.join("refs").join(revision)).ok()?.trim().to_string()
    };
    if validate_repo_path("commit", &commit).is_err() {
        return None;
    }
    let snapshot = folder.join("snapshots").join(commit);
    snapshot.is_dir().then_some(snapshot)
}

/// `run --model NAME`: a catalog name or repo id (optionally `repo@revision`) → its local
/// snapshot folder, if it was downloaded (by turnbench or any huggingface_hub tool).
pub fn resolve_model(name: &str, cache: &Path) -> Option<PathBuf> {
    resolve_model_in(&Catalog::builtin(), name, cache)
}

/// [`resolve_model`] against `catalog` instead of the built-in one.
pub fn resolve_model_in(catalog: &Catalog, name: &str, cache: &Path) -> Option<PathBuf> {
    let (name, revision) = match name.split_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (name, None),
    };
    let (repo, default_revision) = match catalog.find(name) {
        Some(m) => (m.repo.as_str(), m.revision.as_str()),
        None => (name, "main"),
    };
    cached_snapshot(cache, repo, revision.unwrap_or(default_revision))
}

pub(super) fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Bytes the files of a snapshot take (blobs they link to, each counted once).
pub fn snapshot_size(snapshot: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut std::collections::HashSet<PathBuf>, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                walk(&path, seen, total);
            } else if let Ok(meta) = std::fs::metadata(&path) {
                let target = std::fs::canonicalize(&path).unwrap_or(path);
                if seen.insert(target) {
                    *total += meta.len();
                }
            }
        }
    }
    let mut total = 0;
    walk(snapshot, &mut Default::default(), &mut total);
    total
}

/// Fails when the filesystem holding `cache` has less than `needed` bytes (plus 1 % slack) free.
pub fn check_free_space(cache: &Path, needed: u64) -> Result<()> {
    if needed == 0 {
        return Ok(());
    }
    let mut probe = cache.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            return Ok(());
        }
    }
    let stat = nix::sys::statvfs::statvfs(&probe).with_context(|| format!("statvfs {}", probe.display()))?;
    let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    let wanted = needed + needed / 100;
    if free < wanted {
        return Err(anyhow::anyhow!(
            "not enough disk space in {}: the download needs {} and {} is free; free some space or point HF_HOME elsewhere",
            probe.display(),
            human_bytes(wanted),
            human_bytes(free)
        ));
    }
    Ok(())
}

/// `n` in binary units, one decimal (`1.5 GiB`), for messages and `setup --list`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_model_finds_a_python_style_cache_entry() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let folder = cache.path().join("models--Qwen--Qwen2.5-7B-Instruct");
        std::fs::create_dir_all(folder.join("snapshots").join(commit)).unwrap();
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs/main"), commit).unwrap();
        let expected = folder.join("snapshots").join(commit);
        assert_eq!(resolve_model("qwen2.5-7b", cache.path()), Some(expected.clone()));
        assert_eq!(resolve_model("Qwen/Qwen2.5-7B-Instruct", cache.path()), Some(expected.clone()));
        assert_eq!(resolve_model(&format!("Qwen/Qwen2.5-7B-Instruct@{commit}"), cache.path()), Some(expected));
        assert_eq!(resolve_model("llama-3.1-8b", cache.path()), None);
        assert_eq!(resolve_model("../../etc", cache.path()), None);
    }

    #[test]
    fn free_space_check_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        check_free_space(&dir.path().join("not/yet/created"), 1024).unwrap();
        let err = check_free_space(dir.path(), u64::MAX / 4).unwrap_err().to_string();
        assert!(err.contains("not enough disk space") && err.contains("free"), "{err}");
    }
}
