//! `turnbench setup`: the model catalog (`configs/models.toml`) and downloads through hf-hub into
//! the cache Python's huggingface_hub uses (`models--org--name/{blobs,snapshots,refs}`), so a
//! model fetched by any tool is found here and nothing is fetched twice.
//!
//! hf-hub 1.0 does not resume a partial plain-HTTP download: it restarts that file from byte 0
//! (`<blob>.incomplete` is truncated), and it never checks a finished file's size. [`download`]
//! therefore lists the files itself first (sizes from the tree API), drops cached files whose
//! size is wrong, downloads, and checks every size afterwards: an interrupted download completes
//! when run again, re-fetching only the incomplete files.
//!
//! Everything environmental (endpoint, cache folder, token) is passed in a [`HubConfig`];
//! only [`HubConfig::from_env`] reads the environment, so tests can run in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use hf_hub::progress::{DownloadEvent, FileStatus, Progress, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Deserialize;

use crate::cli::SetupArgs;
use crate::UsageError;

/// Default Hugging Face endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

// ---------------------------------------------------------------------------------------------
// Catalog

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
    #[serde(default = "main")]
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

fn main() -> String {
    "main".into()
}

/// The catalog compiled into the binary (used when `configs/models.toml` is absent).
pub const BUILTIN_CATALOG: &str = include_str!("../configs/models.toml");

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

// ---------------------------------------------------------------------------------------------
// Cache

/// Where the hub talks to, where the cache is, and the token: read once from the environment by
/// the CLI, passed explicitly everywhere else.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    /// Attempts per request for transient failures (connect errors, 5xx).
    pub retry_attempts: usize,
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
        }
    }

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

fn is_commit_hash(s: &str) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Download

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

// ---------------------------------------------------------------------------------------------
// CLI

/// Progress bars: one per file in flight, one overall.
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    files: Mutex<HashMap<String, ProgressBar>>,
    done: Mutex<HashMap<String, u64>>,
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.set_prefix("total");
        Self { multi, overall, files: Mutex::default(), done: Mutex::default() }
    }
}

impl DownloadObserver for Bars {
    fn start(&self, _files: usize, total_bytes: u64) {
        self.overall.set_length(total_bytes);
    }
    fn file(&self, name: &str, done: u64, total: u64, complete: bool) {
        let (Ok(mut files), Ok(mut seen)) = (self.files.lock(), self.done.lock()) else { return };
        let before = seen.insert(name.to_string(), done).unwrap_or(0);
        self.overall.inc(done.saturating_sub(before));
        if complete {
            if let Some(bar) = files.remove(name) {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
            return;
        }
        let bar = files.entry(name.to_string()).or_insert_with(|| {
            let bar = self.multi.insert_before(&self.overall, ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template("{msg:>30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(name.to_string());
            bar
        });
        bar.set_position(done);
    }
    fn finish(&self) {
        self.overall.finish_and_clear();
    }
}

pub async fn setup_command(args: SetupArgs) -> Result<()> {
    let catalog = Catalog::load(&args.catalog)?;
    let mut hub = HubConfig::from_env();
    if let Some(dir) = &args.cache_dir {
        hub.cache_dir = dir.clone();
    }
    if args.list {
        print!("{}", render_list(&catalog, &hub.cache_dir));
        return Ok(());
    }
    let wanted = args.model.clone().unwrap_or_else(|| catalog.recommended.clone());
    let entry = catalog.find(&wanted);
    let repo = match entry {
        Some(m) => m.repo.clone(),
        None => {
            validate_repo_id(&wanted).map_err(|e| {
                UsageError::new(format!("{e}; catalog names: {}", catalog.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")))
            })?;
            wanted.clone()
        }
    };
    let request = DownloadRequest {
        repo: repo.clone(),
        revision: args.revision.clone().or_else(|| entry.map(|m| m.revision.clone())).unwrap_or_else(main),
        include: if args.include.is_empty() { entry.map(|m| m.include.clone()).unwrap_or_default() } else { args.include.clone() },
        offline: args.offline,
    };
    eprintln!(
        "{} {}@{} into {}{}",
        if request.offline { "looking up" } else { "downloading" },
        request.repo,
        request.revision,
        hub.cache_dir.display(),
        if hub.endpoint != DEFAULT_ENDPOINT { format!(" from {}", hub.endpoint) } else { String::new() }
    );
    let observer: Option<Arc<dyn DownloadObserver>> = if args.quiet { None } else { Some(Arc::new(Bars::new())) };
    let done = download(&hub, &request, observer).await?;
    let secs = done.elapsed.as_secs_f64().max(1e-6);
    let fetched = if done.fetched_files == 0 {
        "all already in the cache, nothing fetched".to_string()
    } else {
        format!(
            "fetched {} files, {} at {}/s",
            done.fetched_files,
            human_bytes(done.fetched_bytes),
            human_bytes((done.fetched_bytes as f64 / secs) as u64)
        )
    };
    println!(
        "{}@{}: {} files, {} in {} ({fetched})",
        request.repo,
        &done.commit[..done.commit.len().min(12)],
        done.files,
        human_bytes(done.total_bytes),
        done.snapshot.display(),
    );
    let model_arg = match entry {
        Some(m) => m.name.clone(),
        None => request.repo.clone(),
    };
    let has_own_template = crate::template::ChatTemplate::from_path(&done.snapshot).is_ok();
    let template_note = match (has_own_template, entry) {
        (true, _) => "the model's own chat template".to_string(),
        (false, Some(m)) => format!("--chat-template {}", m.chat_template),
        (false, None) => "no chat template found: pass --chat-template for --prompt-mode completion".into(),
    };
    println!("chat template: {template_note}");
    println!("next: turnbench run --engine vllm --model {model_arg}");
    Ok(())
}

/// `setup --list`: the catalog, and what of it is in the cache.
pub fn render_list(catalog: &Catalog, cache: &Path) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["name", "repo", "context", "min GPU", "template", "downloaded", ""]);
    for m in &catalog.models {
        let local = cached_snapshot(cache, &m.repo, &m.revision);
        let downloaded = match &local {
            Some(s) => human_bytes(snapshot_size(s)),
            None => "-".into(),
        };
        let mut notes = Vec::new();
        if m.name == catalog.recommended {
            notes.push("recommended");
        }
        if m.gated {
            notes.push("gated: needs HF_TOKEN");
        }
        table.add_row([
            m.name.clone(),
            m.repo.clone(),
            m.context_length.to_string(),
            format!("{} GiB", m.min_gpu_memory_gib),
            m.chat_template.clone(),
            downloaded,
            notes.join(", "),
        ]);
    }
    format!("{table}\ncache: {}\n", cache.display())
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

    #[test]
    fn glob_escape_matches_only_itself() {
        let set = glob_set(&[glob_escape("a[1]*.json")]).unwrap().unwrap();
        assert!(set.is_match("a[1]*.json"));
        assert!(!set.is_match("a1x.json"));
    }
}
