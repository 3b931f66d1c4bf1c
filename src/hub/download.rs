//! [`download`]: a repo at a revision into the cache. The listing (commit, files, sizes) is asked
//! of the hub here, with hf-hub's authenticated client; each file is fetched by hf-hub, which
//! keeps a `<blob>.sync.part` it resumes from on the next attempt. Sizes are checked before and
//! after (see the `hub` module docs), progress goes to a [`DownloadObserver`], and the hub's
//! answers are turned into what the user should do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hf_hub::api::tokio::{Api, ApiBuilder, ApiError, Progress};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;

use super::cache::{cached_snapshot, check_free_space, repo_folder, snapshot_size, HubConfig};
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

/// Range requests per file in flight (their size: `HubConfig::chunk_bytes`). One at a time:
/// hf-hub commits a chunk only once every chunk before it is written, so with several in flight
/// one cut transfer loses the others' work and the next run restarts the file; in order, it
/// resumes from the last complete chunk.
const FILE_CHUNKS: usize = 1;

impl HubConfig {
    /// The hf-hub client for this endpoint, cache and token (hf-hub is only used from here).
    fn api(&self) -> Result<Api> {
        ApiBuilder::new()
            .with_endpoint(self.endpoint.trim_end_matches('/').to_string())
            .with_cache_dir(self.cache_dir.clone())
            // Always set: hf-hub would otherwise read a token file of its own choosing.
            .with_token(self.token.clone())
            .with_progress(false)
            .with_max_files(FILE_CHUNKS)
            .with_chunk_size(Some(self.chunk_bytes.max(1)))
            .with_user_agent("turnbench", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| anyhow::anyhow!("setting up the Hugging Face client: {e}"))
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

/// Bytes transferred per file, shared by the clones hf-hub makes of a [`FileProgress`] (one per
/// chunk in flight).
#[derive(Default)]
struct Transferred(Mutex<HashMap<String, u64>>);

impl Transferred {
    fn add(&self, name: &str, bytes: u64) -> u64 {
        let mut t = crate::core::lock(&self.0);
        let done = t.entry(name.to_string()).or_default();
        *done += bytes;
        *done
    }
}

/// Bridges hf-hub's per-file progress to a [`DownloadObserver`].
#[derive(Clone)]
struct FileProgress {
    name: String,
    total: u64,
    observer: Arc<dyn DownloadObserver>,
    transferred: Arc<Transferred>,
    /// Bytes a resumed file already had (hf-hub reports them as the first update after `init`,
    /// before it clones the progress for its chunks).
    already: Option<u64>,
}

impl Progress for FileProgress {
    async fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.already = None;
        self.observer.file(&self.name, 0, self.total, false);
    }
    async fn update(&mut self, size: usize) {
        let Some(already) = self.already else {
            // The bytes a resumed file already has: done, but not transferred by this call.
            self.already = Some(size as u64);
            self.observer.file(&self.name, (size as u64).min(self.total), self.total, false);
            return;
        };
        let done = already + self.transferred.add(&self.name, size as u64);
        self.observer.file(&self.name, done.min(self.total), self.total, false);
    }
    async fn finish(&mut self) {
        self.observer.file(&self.name, self.total, self.total, true);
    }
}

/// A file of the repo at the pinned commit.
#[derive(Debug, Clone)]
struct RemoteFile {
    path: String,
    size: u64,
}

/// The parts of the hub's answers read here.
#[derive(Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
}

/// Bounds on what the hub may answer for a listing (a model has tens of files).
const MAX_LISTING_BYTES: usize = 64 << 20;
const MAX_TREE_PAGES: usize = 1000;

/// Downloads `request` into `hub.cache_dir` (or, offline, finds it there).
pub async fn download(
    hub: &HubConfig,
    request: &DownloadRequest,
    observer: Option<Arc<dyn DownloadObserver>>,
) -> Result<Downloaded> {
    validate_repo_id(&request.repo).map_err(UsageError::new)?;
    validate_repo_path("revision", &request.revision).map_err(UsageError::new)?;
    let started = Instant::now();

    if request.offline {
        let Some(snapshot) = cached_snapshot(&hub.cache_dir, &request.repo, &request.revision) else {
            return Err(UsageError::new(format!(
                "offline: {}@{} is not in the cache {}; run `turnbench setup {}` with network first",
                request.repo,
                request.revision,
                hub.cache_dir.display(),
                request.repo
            ))
            .into());
        };
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

    let api = hub.api()?;
    let base = hub.endpoint.trim_end_matches('/');
    // Pin the commit and list its files ourselves: sizes for the disk check and the final
    // verification, and every path checked before it is joined to the cache folder.
    let info: RevisionInfo = get_json(
        &api,
        hub,
        request,
        &format!("{base}/api/models/{}/revision/{}", request.repo, encode_revision(&request.revision)),
        None,
    )
    .await?;
    let commit = info
        .sha
        .ok_or_else(|| anyhow::anyhow!("{} answered no commit for {}@{}", hub.endpoint, request.repo, request.revision))?;
    if !commit.chars().all(|c| c.is_ascii_alphanumeric()) || commit.is_empty() || commit.len() > 64 {
        return Err(anyhow::anyhow!("{} answered an invalid commit id {commit:?}", hub.endpoint));
    }
    let matcher = glob_set(&request.include)?;
    let mut remote = Vec::new();
    let mut next = Some(format!("{base}/api/models/{}/tree/{commit}?recursive=true", request.repo));
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > MAX_TREE_PAGES {
            return Err(anyhow::anyhow!("{}: the hub's file listing did not end after {MAX_TREE_PAGES} pages", request.repo));
        }
        let mut link = None;
        let entries: Vec<TreeEntry> = get_json(&api, hub, request, &url, Some(&mut link)).await?;
        for entry in entries {
            if entry.kind == "file" && matcher.as_ref().is_none_or(|m| m.is_match(&entry.path)) {
                validate_repo_path("file", &entry.path)
                    .map_err(|e| UsageError::new(format!("{} lists a bad path: {e}", request.repo)))?;
                remote.push(RemoteFile { path: entry.path, size: entry.size });
            }
        }
        next = link;
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
    // A file whose cached size is wrong was cut short by something else (hf-hub only links a blob
    // once it is complete): drop it so it is fetched again.
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
    let todo: Vec<&RemoteFile> = remote.iter().filter(|f| !snapshot.join(&f.path).exists()).collect();
    check_free_space(&hub.cache_dir, todo.iter().map(|f| f.size).sum())?;

    let observer = observer.unwrap_or_else(|| Arc::new(NoObserver));
    let transferred = Arc::new(Transferred::default());
    observer.start(todo.len(), todo.iter().map(|f| f.size).sum());
    // The pinned commit, not the branch: every file comes from the same snapshot.
    let repo = api.repo(Repo::with_revision(request.repo.clone(), RepoType::Model, commit.clone()));
    for f in &todo {
        let progress = FileProgress {
            name: f.path.clone(),
            total: f.size,
            observer: observer.clone(),
            transferred: transferred.clone(),
            already: None,
        };
        fetch_with_retries(hub, request, &repo, &snapshot, f, progress).await.with_context(|| {
            format!("downloading {}@{}; run the same command again to complete it", request.repo, request.revision)
        })?;
    }
    observer.finish();
    // hf-hub wrote refs/<commit>; the ref users name is the revision they asked for.
    if request.revision != commit {
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
            Err(_) => wrong.push(format!("{} (missing)", f.path)),
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
    let transferred = crate::core::lock(&transferred.0).clone();
    Ok(Downloaded {
        snapshot,
        commit,
        files: remote.len(),
        total_bytes: remote.iter().map(|f| f.size).sum(),
        fetched_files: todo.len(),
        fetched_bytes: transferred.values().sum(),
        elapsed: started.elapsed(),
    })
}

/// One file, retried on transient failures (connect errors, timeouts, 5xx, cut transfers); each
/// retry resumes from what hf-hub committed.
async fn fetch_with_retries(
    hub: &HubConfig,
    request: &DownloadRequest,
    repo: &hf_hub::api::tokio::ApiRepo,
    snapshot: &Path,
    file: &RemoteFile,
    progress: FileProgress,
) -> Result<()> {
    if file.size == 0 {
        return write_empty(snapshot, file);
    }
    let attempts = hub.retry_attempts.max(1);
    let mut attempt = 1;
    loop {
        match repo.download_with_progress(&file.path, progress.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < attempts && is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
                attempt += 1;
            }
            Err(e) => return Err(explain(hub, request, Failure::Api(e), Some(&file.path))),
        }
    }
}

/// An empty file needs no transfer (and a range request on an empty body has no answer hf-hub
/// reads): it is written straight into the snapshot.
fn write_empty(snapshot: &Path, file: &RemoteFile) -> Result<()> {
    let path = snapshot.join(&file.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, b"").with_context(|| format!("writing {}", path.display()))
}

fn is_transient(e: &ApiError) -> bool {
    match e {
        ApiError::RequestError(r) => {
            r.is_connect() || r.is_timeout() || r.is_body() || r.is_decode() || r.status().is_some_and(|s| s.is_server_error())
        }
        ApiError::IoError(_) => true,
        ApiError::TooManyRetries(inner) => is_transient(inner),
        _ => false,
    }
}

/// Revisions are path segments: a branch like `refs/pr/1` is sent with its slashes encoded, as
/// huggingface_hub does.
fn encode_revision(revision: &str) -> String {
    revision.replace('/', "%2F")
}

/// GETs `url` as JSON with hf-hub's client (token, user agent), bounded in size; `next` receives
/// the `Link: <…>; rel="next"` page the hub paginates long listings with.
async fn get_json<T: serde::de::DeserializeOwned>(
    api: &Api,
    hub: &HubConfig,
    request: &DownloadRequest,
    url: &str,
    next: Option<&mut Option<String>>,
) -> Result<T> {
    let response = api.client().get(url).send().await.map_err(|e| explain(hub, request, Failure::Http(e), None))?;
    let status = response.status();
    if !status.is_success() {
        let code = response.headers().get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        return Err(explain(hub, request, Failure::Status(status.as_u16(), code), None));
    }
    if let Some(next) = next {
        *next = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|link| link.split(',').find(|part| part.contains("rel=\"next\"")))
            .and_then(|part| Some(part[part.find('<')? + 1..part.find('>')?].to_string()));
    }
    let mut body = Vec::new();
    let mut response = response;
    while let Some(chunk) = response.chunk().await.map_err(|e| explain(hub, request, Failure::Http(e), None))? {
        if body.len() + chunk.len() > MAX_LISTING_BYTES {
            return Err(anyhow::anyhow!("{url}: the hub's answer is larger than {MAX_LISTING_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).with_context(|| format!("{url}: the hub answered JSON turnbench cannot read"))
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

/// What went wrong talking to the hub.
enum Failure {
    Http(reqwest::Error),
    /// An HTTP status and the hub's `X-Error-Code`.
    Status(u16, String),
    Api(ApiError),
}

/// Turns the hub's answers into what the user should do.
fn explain(hub: &HubConfig, request: &DownloadRequest, failure: Failure, file: Option<&str>) -> anyhow::Error {
    let repo = &request.repo;
    let token_hint = if hub.token.is_some() {
        "the token in HF_TOKEN has no access to it"
    } else {
        "set HF_TOKEN to a token of an account that accepted its licence"
    };
    let (status, code, source) = match failure {
        Failure::Status(status, code) => (Some(status), code, None),
        Failure::Http(e) => (e.status().map(|s| s.as_u16()), String::new(), Some(e)),
        Failure::Api(ApiError::RequestError(e)) => (e.status().map(|s| s.as_u16()), String::new(), Some(e)),
        Failure::Api(ApiError::TooManyRetries(inner)) => return explain(hub, request, Failure::Api(*inner), file),
        Failure::Api(other) => return anyhow::Error::new(other),
    };
    match status {
        Some(401) => UsageError::new(format!(
            "{repo}: the hub answered 401 (authentication required): the repo is gated or private; {token_hint} \
             (accept the licence on {}/{repo} first)",
            hub.endpoint
        ))
        .into(),
        Some(403) => UsageError::new(format!(
            "{repo}: the hub answered 403 (forbidden): gated repo; {token_hint} (request access on {}/{repo})",
            hub.endpoint
        ))
        .into(),
        Some(404) => UsageError::new(match (file, code.as_str()) {
            (Some(path), _) => format!("{repo}: no file {path:?} (404)"),
            (None, "RevisionNotFound") => format!("{repo}: no revision {:?} (404)", request.revision),
            (None, "RepoNotFound") => format!("{repo}: no such model repo on {} (404); check the name", hub.endpoint),
            // The hub says which in X-Error-Code; without it, both are possible.
            (None, _) => format!(
                "{repo}: no such model repo on {} or no revision {:?} in it (404); check the name",
                hub.endpoint, request.revision
            ),
        })
        .into(),
        _ => match source {
            Some(e) if e.is_connect() || e.is_timeout() => anyhow::Error::new(e).context(format!(
                "cannot reach {}: no network? `turnbench setup --offline` uses only the cache",
                hub.endpoint
            )),
            Some(e) => anyhow::Error::new(e),
            None => anyhow::anyhow!("{repo}: the hub answered HTTP {}", status.unwrap_or_default()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_with_slashes_are_one_path_segment() {
        assert_eq!(encode_revision("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_revision("main"), "main");
    }
}
