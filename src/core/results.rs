//! The results folder (DESIGN §6): `results/<YYYY-MM-DD_HH-MM-SS>[_label]/`, never overwritten;
//! final files written atomically (temp file + rename).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::ConfigSource;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const TURNS_FILE: &str = "turns.jsonl";
/// `--ab prefix-caching`: arm B's results folder, inside arm A's.
pub const AB_OFF_DIR: &str = "ab-off";
/// Several `--endpoint`: each further endpoint's results folder, `vs-<label>`, inside the run's.
pub const VS_DIR_PREFIX: &str = "vs-";

/// A data file a run read, by path and content hash.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: String,
    pub sha256: String,
}

/// What a run was: written first as `manifest.json`, read back by `turnbench report`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub tool_version: String,
    /// Command line with secrets redacted.
    pub command_line: Vec<String>,
    /// Wall-clock start of the run (RFC 3339); record offsets are relative to it.
    pub started_at: String,
    pub label: Option<String>,
    /// `sim`, `external` (later `vllm`).
    pub engine: String,
    /// True when the server is turnbench's simulator: every report says so.
    pub simulated: bool,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    /// The engine's command line, when turnbench started it.
    pub engine_command: Option<Vec<String>>,
    /// KV-cache block size reported by the server (`vllm:cache_config_info`), if any.
    pub block_size: Option<u64>,
    /// Whether the server reports prefix caching enabled.
    pub prefix_caching: Option<bool>,
    /// True when token counts used for selection are estimates, not the model's tokenizer.
    pub token_counts_estimated: bool,
    pub datasets: Vec<SourceFile>,
    /// Profiles the run read (vLLM, simulator): the file or built-in copy, and its SHA-256.
    #[serde(default)]
    pub configs: Vec<ConfigSource>,
    pub seed: u64,
    /// Run settings as resolved (flags and defaults), secrets redacted.
    pub settings: serde_json::Value,
    /// Set when the run was interrupted (Ctrl-C) or failed before the suite ended.
    pub interrupted: bool,
    /// `false` from the first write on, `true` only in the very last write of a run that got to
    /// its end (reports written). A folder whose manifest still says `false` was killed.
    /// Absent in folders written before turnbench recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
    /// When the run was marked complete (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Why the run stopped early because its server died or could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_died: Option<String>,
    /// One entry per test: its server's start-up and teardown, and how it ended.
    #[serde(default)]
    pub tests: Vec<TestRun>,
    /// The client's own ceiling, measured before the first request against an in-process
    /// loopback server (absent with `--calibrate-secs 0` and in folders of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_calibration: Option<ClientCalibration>,
    /// Wall-clock time (RFC 3339, ns) of the run clock's zero, the origin of every `*_ms` in the
    /// records, windows and timeline (absent in folders of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_origin: Option<String>,
    /// `--shard I/N`: which share of a sharded run this folder holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// A folder written by `turnbench merge`: the shards it was built from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedShard>,
}

/// A shard of a run split over several client processes (`--shard I/N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// 1-based.
    pub index: u32,
    pub count: u32,
    /// `--run-id`: common to every shard of the run.
    pub run_id: String,
    /// SHA-256 of the settings every shard must share (all but the shard itself): shards of
    /// different plans are never merged.
    pub plan_hash: String,
}

impl ShardInfo {
    /// Whether item `i` (0-based, in selection order) is this shard's: round-robin, so every
    /// shard gets a like mix of short and long conversations.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count as usize == (self.index - 1) as usize
    }
    /// This shard's part of `total` clients: an even split, the first `total % N` shards one more.
    pub fn share(&self, total: usize) -> usize {
        let n = self.count as usize;
        total / n + usize::from(((self.index - 1) as usize) < total % n)
    }
    /// Folder name of this shard inside `<results-dir>/<run-id>/`.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

/// One shard folder a merged folder was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedShard {
    pub index: u32,
    pub dir: String,
    /// What was added to the shard's `*_ms` times to put them on the merged clock.
    pub offset_ms: f64,
    pub records: usize,
    pub completed: bool,
    /// The shard's machine CPU (mean and peak, percent of all cores) while it ran: a busy client
    /// machine shapes its numbers.
    #[serde(default)]
    pub cpu_mean_pct: Option<f64>,
    #[serde(default)]
    pub cpu_max_pct: Option<f64>,
    /// The shard's own measured client ceiling (requests/s).
    #[serde(default)]
    pub ceiling_requests_per_s: Option<f64>,
}

/// What this client can do on this machine when the server costs nothing: a closed loop of
/// streamed chat requests against an in-process simulator with the zero-latency profile. The
/// loopback server shares the process, so the ceiling is a lower bound of the client's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientCalibration {
    pub concurrency: usize,
    /// Streamed tokens (chunks) per answer.
    pub answer_tokens: u32,
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub chunks_per_s: f64,
    /// CPU (user + system) of client and loopback server together, per request.
    pub cpu_ms_per_request: f64,
}

/// How one test went, server-side (DESIGN §7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestRun {
    pub test: u32,
    pub conversation_id: String,
    /// `completed`, `failed`, `interrupted` or `server_failed` (its server never served it).
    pub outcome: String,
    /// Spawn to ready (health + model listed) of the server started for this test.
    pub time_to_ready_ms: Option<f64>,
    /// SIGTERM to no process left, for the server stopped after this test.
    pub teardown_ms: Option<f64>,
    /// Whether the prefix-cache reset before this test was verified (`--isolation run`).
    pub cache_reset_verified: Option<bool>,
    /// The server's log, relative to the results folder.
    pub server_log: Option<String>,
    /// The managed server's process group (its leader is the process turnbench started), to
    /// check afterwards that nothing of it is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pgid: Option<u32>,
    /// After the server's teardown: until GPU memory was back near its pre-start level (GPU
    /// hygiene; absent without a GPU probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_release_ms: Option<f64>,
    pub error: Option<String>,
}

/// Creates `base/<run-id>/shard-I-of-N` (`-2`, `-3`… when a retried shard finds its folder).
pub fn create_shard_dir(base: &Path, shard: &ShardInfo) -> Result<PathBuf> {
    create_fresh_dir(&base.join(&shard.run_id), &shard.dir_name())
}

/// Creates `base/<timestamp>[_label]`, adding `-2`, `-3`… rather than ever reusing a folder.
pub fn create_run_dir(base: &Path, label: Option<&str>) -> Result<PathBuf> {
    let stamp = jiff::Zoned::now().strftime("%Y-%m-%d_%H-%M-%S").to_string();
    let name = match label {
        Some(l) => format!("{stamp}_{}", sanitize_label(l)),
        None => stamp,
    };
    create_fresh_dir(base, &name)
}

/// Creates `parent/name`, or `name-2`, `name-3`… when it exists: a folder is never reused.
fn create_fresh_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    fs::create_dir_all(parent).with_context(|| format!("cannot create results folder {}", parent.display()))?;
    for n in 1.. {
        let candidate = if n == 1 { parent.join(name) } else { parent.join(format!("{name}-{n}")) };
        match fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", candidate.display())),
        }
    }
    unreachable!()
}

fn sanitize_label(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' })
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees a half-written report.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| Ok(out.write_all(bytes)?))
}

/// [`write_atomic`] for a file written piece by piece: `write` gets a buffered writer on the
/// temporary file, which replaces `path` only when `write` succeeded (else it is removed).
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let f = fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, f);
    let written = write(&mut out).and_then(|()| out.flush().map_err(Into::into));
    if let Err(e) = written {
        drop(out);
        fs::remove_file(&tmp).ok();
        return Err(e.context(format!("cannot write {}", tmp.display())));
    }
    if let Ok(f) = out.into_inner() {
        f.sync_all().ok();
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}

pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    write_atomic(&dir.join(MANIFEST_FILE), &serde_json::to_vec_pretty(manifest)?)
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid manifest", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_are_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = create_run_dir(tmp.path(), Some("x y")).unwrap();
        let b = create_run_dir(tmp.path(), Some("x y")).unwrap();
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_str().unwrap().ends_with("_x-y"));
    }

    #[test]
    fn shards_split_disjointly_and_evenly() {
        let shards: Vec<ShardInfo> =
            (1..=3).map(|index| ShardInfo { index, count: 3, run_id: "r".into(), plan_hash: String::new() }).collect();
        for i in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1, "item {i} has exactly one owner");
        }
        assert_eq!(shards.iter().map(|s| s.share(10)).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(shards.iter().map(|s| s.share(2)).collect::<Vec<_>>(), vec![1, 1, 0]);
        let tmp = tempfile::tempdir().unwrap();
        let a = create_shard_dir(tmp.path(), &shards[1]).unwrap();
        let b = create_shard_dir(tmp.path(), &shards[1]).unwrap();
        assert_eq!(a, tmp.path().join("r/shard-2-of-3"));
        assert_eq!(b, tmp.path().join("r/shard-2-of-3-2"));
    }

    #[test]
    fn atomic_write_replaces_content() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"22").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"22");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1, "no temp file left behind");
    }
}
