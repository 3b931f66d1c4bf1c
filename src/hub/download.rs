//! [`download`]: a repo at a revision into the cache through hf-hub, listing and size-checking
//! the files itself (hf-hub restarts cut-short files and never checks sizes; see the `hub`
//! module docs), with progress reported to a [`DownloadObserver`] and hf-hub's errors turned
//! into what the user should do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use hf_hub::progress::{DownloadEvent, FileStatus, Progress, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError};

use super::cache::{check_free_space, is_commit_hash, repo_folder, snapshot_size, HubConfig};
use super::catalog::{validate_repo_id, validate_repo_path};
use crate::core::UsageError;

/// What to download.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub repo: String,
    pub revision: String,
    /// Glob patterns of repo paths; empty = every file.
    pub include: Vec<String>,
    /// Use only the cache.
    pub offline: bool,
}

/// What a download did.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub snapshot: PathBuf,
    pub commit: String,
    /// Files in the snapshot that match the request.
    pub files: usize,
    /// Their total size.
    pub total_bytes: u64,
    /// Files actually transferred by this call.
    pub fetched_files: usize,
    /// Bytes actually transferred by this call.
    pub fetched_bytes: u64,
    pub elapsed: Duration,
}

impl HubConfig {
    /// The hf-hub client for this endpoint, cache and token (hf-hub is only used from here).
    fn client(&self) -> Result<HFClient> {
        let mut builder = HFClient::builder()
            .endpoint(self.endpoint.clone())
            .cache_dir(self.cache_dir.clone())
            .cache_enabled(true)
            .retry_max_attempts(self.retry_attempts.max(1))
            .retry_base_delay(Duration::from_millis(200))
            .user_agent(format!("turnbench/{}", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        builder.build().map_err(|e| anyhow::anyhow!("setting up the Hugging Face client: {e}"))
    }
}

/// Receives download progress (the CLI draws bars; tests may count).
pub trait DownloadObserver: Send + Sync {
    fn start(&self, _total_files: usize, _total_bytes: u64) {}
    fn file(&self, _name: &str, _done: u64, _total: u64, _complete: bool) {}
    fn finish(&self) {}
}

struct NoObserver;
impl DownloadObserver for NoObserver {}

/// Bridges hf-hub's events to a [`DownloadObserver`] and counts what was really transferred.
struct Bridge {
    observer: Arc<dyn DownloadObserver>,
    transferred: Mutex<HashMap<String, u64>>,
}

impl ProgressHandler for Bridge {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(event) = event else { return };
        match event {
            DownloadEvent::Start { total_files, total_bytes } => self.observer.start(*total_files, *total_bytes),
            DownloadEvent::Progress { files } => {
                for f in files {
                    if matches!(f.status, FileStatus::Started | FileStatus::InProgress) {
                        if let Ok(mut t) = self.transferred.lock() {
                            t.insert(f.filename.clone(), f.bytes_completed);
                        }
                    }
                    self.observer.file(&f.filename, f.bytes_completed, f.total_bytes, f.status == FileStatus::Complete);
                }
            }
            DownloadEvent::Complete => self.observer.finish(),
            _ => {}
        }
    }
}

/// A file of the repo at the pinned commit.
#[derive(Debug, Clone)]
struct RemoteFile {
    path: String,
    size: u64,
}

/// Downloads `request` into `hub.cache_dir` (or, offline, finds it there).
pub async fn download(
    hub: &HubConfig,
    request: &DownloadRequest,
    observer: Option<Arc<dyn DownloadObserver>>,
) -> Result<Downloaded> {
    validate_repo_id(&request.repo).map_err(UsageError::new)?;
    validate_repo_path("revision", &request.revision).map_err(UsageError::new)?;
    let started = Instant::now();
    let client = hub.client()?;
    let (owner, name) = request.repo.split_once('/').expect("validated");
    let repo = client.model(owner, name);

    if request.offline {
        let snapshot = repo
            .snapshot_download()
            .revision(request.revision.clone())
            .local_files_only(true)
            .send()
            .await
            .map_err(|e| explain(hub, request, e))?;
        let files = matching_local_files(&snapshot, &request.include)?;
        if files.is_empty() {
            return Err(UsageError::new(format!(
                "offline: the cached snapshot {} has no file matching {:?}",
                snapshot.display(),
                request.include
            ))
            .into());
        }
        let total_bytes = snapshot_size(&snapshot);
        let commit = snapshot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Ok(Downloaded {
            snapshot,
            commit,
            files: files.len(),
            total_bytes,
            fetched_files: 0,
            fetched_bytes: 0,
            elapsed: started.elapsed(),
        });
    }

    // Pin the commit and list its files ourselves: sizes for the disk check and the final
    // verification, and every path checked before hf-hub joins it to the cache folder.
    let info = repo.info().revision(request.revision.clone()).send().await.map_err(|e| explain(hub, request, e))?;
    let commit = info
        .sha
        .ok_or_else(|| anyhow::anyhow!("{} answered no commit for {}@{}", hub.endpoint, request.repo, request.revision))?;
    if !commit.chars().all(|c| c.is_ascii_alphanumeric()) || commit.is_empty() {
        return Err(anyhow::anyhow!("{} answered an invalid commit id {commit:?}", hub.endpoint));
    }
    let matcher = glob_set(&request.include)?;
    let mut remote = Vec::new();
    {
        let tree = repo
            .list_tree()
            .revision(commit.clone())
            .recursive(true)
            .send()
            .map_err(|e| explain(hub, request, e))?;
        futures_util::pin_mut!(tree);
        while let Some(entry) = tree.next().await {
            if let hf_hub::repository::RepoTreeEntry::File { path, size, .. } = entry.map_err(|e| explain(hub, request, e))? {
                if matcher.as_ref().is_none_or(|m| m.is_match(&path)) {
                    validate_repo_path("file", &path)
                        .map_err(|e| UsageError::new(format!("{} lists a bad path: {e}", request.repo)))?;
                    remote.push(RemoteFile { path, size });
                }
            }
        }
    }
    if remote.is_empty() {
        return Err(UsageError::new(format!(
            "{}@{}: no file matches {} (404)",
            request.repo,
            request.revision,
            if request.include.is_empty() { "the repo is empty".to_string() } else { format!("--include {:?}", request.include) }
        ))
        .into());
    }

    let folder = hub.cache_dir.join(repo_folder(&request.repo));
    let snapshot = folder.join("snapshots").join(&commit);
    // A file whose cached size is wrong was cut short (hf-hub keeps no partial state it could
    // resume): drop it so it is fetched again.
    for f in &remote {
        let link = snapshot.join(&f.path);
        if let Ok(meta) = std::fs::metadata(&link) {
            if meta.len() != f.size {
                if let Ok(blob) = std::fs::canonicalize(&link) {
                    let _ = std::fs::remove_file(blob);
                }
                let _ = std::fs::remove_file(&link);
            }
        }
    }
    let missing: u64 = remote.iter().filter(|f| !snapshot.join(&f.path).exists()).map(|f| f.size).sum();
    check_free_space(&hub.cache_dir, missing)?;

    let bridge = Arc::new(Bridge { observer: observer.unwrap_or_else(|| Arc::new(NoObserver)), transferred: Mutex::default() });
    let allow: Vec<String> = remote.iter().map(|f| glob_escape(&f.path)).collect();
    let result = repo
        .snapshot_download()
        .revision(commit.clone())
        .allow_patterns(allow)
        .progress(Progress::from(bridge.clone()))
        .send()
        .await;
    if let Err(e) = result {
        return Err(explain(hub, request, e)).context(format!(
            "downloading {}@{}; run the same command again to complete it",
            request.repo, request.revision
        ));
    }
    if !is_commit_hash(&request.revision) || request.revision != commit {
        let refs = folder.join("refs").join(&request.revision);
        if let Some(parent) = refs.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&refs, &commit).with_context(|| format!("writing {}", refs.display()))?;
    }
    let mut wrong = Vec::new();
    for f in &remote {
        match std::fs::metadata(snapshot.join(&f.path)) {
            Ok(m) if m.len() == f.size => {}
            Ok(m) => wrong.push(format!("{} ({} of {} bytes)", f.path, m.len(), f.size)),
            Err(_) => wrong.push(format!("{} (missing: the hub answered 404 for it?)", f.path)),
        }
    }
    if !wrong.is_empty() {
        return Err(anyhow::anyhow!(
            "{}@{}: incomplete after download: {}; run the same command again",
            request.repo,
            request.revision,
            wrong.join(", ")
        ));
    }
    let transferred = bridge.transferred.lock().map(|t| t.clone()).unwrap_or_default();
    Ok(Downloaded {
        snapshot,
        commit,
        files: remote.len(),
        total_bytes: remote.iter().map(|f| f.size).sum(),
        fetched_files: transferred.len(),
        fetched_bytes: transferred.values().sum(),
        elapsed: started.elapsed(),
    })
}

fn glob_set(patterns: &[String]) -> Result<Option<globset::GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        builder.add(globset::Glob::new(p).map_err(|e| UsageError::new(format!("--include {p:?}: {e}")))?);
    }
    Ok(Some(builder.build()?))
}

/// A glob matching exactly `path`.
fn glob_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if "*?[]{}".contains(c) {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

fn matching_local_files(snapshot: &Path, include: &[String]) -> Result<Vec<String>> {
    let matcher = glob_set(include)?;
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    walk(snapshot, snapshot, &mut out);
    out.retain(|f| matcher.as_ref().is_none_or(|m| m.is_match(f)));
    out.sort();
    Ok(out)
}

/// Turns hf-hub errors into what the user should do.
fn explain(hub: &HubConfig, request: &DownloadRequest, err: HFError) -> anyhow::Error {
    let repo = &request.repo;
    let token_hint = if hub.token.is_some() {
        "the token in HF_TOKEN has no access to it"
    } else {
        "set HF_TOKEN to a token of an account that accepted its licence"
    };
    match err {
        HFError::AuthRequired { .. } => UsageError::new(format!(
            "{repo}: the hub answered 401 (authentication required): the repo is gated or private; {token_hint} \
             (accept the licence on {}/{repo} first)",
            hub.endpoint
        ))
        .into(),
        HFError::Forbidden { .. } => UsageError::new(format!(
            "{repo}: the hub answered 403 (forbidden): gated repo; {token_hint} (request access on {}/{repo})",
            hub.endpoint
        ))
        .into(),
        HFError::RepoNotFound { .. } => {
            UsageError::new(format!("{repo}: no such model repo on {} (404); check the name", hub.endpoint)).into()
        }
        HFError::RevisionNotFound { revision, context, .. } => {
            // The hub says which in X-Error-Code; without it, both are possible.
            let code = context.as_ref().and_then(|c| c.error_code.clone()).unwrap_or_default();
            let what = if code == "RevisionNotFound" {
                format!("{repo}: no revision {revision:?} (404)")
            } else {
                format!("{repo}: no such model repo on {} or no revision {revision:?} in it (404); check the name", hub.endpoint)
            };
            UsageError::new(what).into()
        }
        HFError::EntryNotFound { path, .. } => UsageError::new(format!("{repo}: no file {path:?} (404)")).into(),
        HFError::LocalEntryNotFound { path } => UsageError::new(format!(
            "offline: {repo}@{} is not in the cache {} ({path}); run `turnbench setup {repo}` with network first",
            request.revision,
            hub.cache_dir.display()
        ))
        .into(),
        HFError::Request { source, url } if source.is_connect() || source.is_timeout() => {
            anyhow::Error::new(source).context(format!(
                "cannot reach {} ({}): no network? `turnbench setup --offline` uses only the cache",
                hub.endpoint,
                url.unwrap_or_default()
            ))
        }
        other => anyhow::Error::new(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_matches_only_itself() {
        let set = glob_set(&[glob_escape("a[1]*.json")]).unwrap().unwrap();
        assert!(set.is_match("a[1]*.json"));
        assert!(!set.is_match("a1x.json"));
    }
}
