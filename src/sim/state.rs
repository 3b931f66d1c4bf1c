//! The state of one engine (a replica), shared by the requests it serves: the config, the prefix
//! cache, the admission semaphore, and the counters and histograms that `/metrics` reports.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::core::blocks::{block_hashes, PrefixCache};
use super::histogram::Histograms;
use super::SimConfig;

/// What every request reads and updates; one per engine (replica), behind an `Arc`.
pub(super) struct Shared {
    pub(super) cfg: SimConfig,
    /// This engine's index among the replicas (0-based): its `engine="i"` label in `/metrics`.
    pub(super) engine: usize,
    /// The model name as a JSON string literal (quotes included).
    pub(super) model_json: String,
    /// The model name escaped for a Prometheus label value.
    pub(super) model_label: String,
    pub(super) cache: Mutex<PrefixCache>,
    pub(super) sem: Arc<Semaphore>,
    pub(super) running: AtomicUsize,
    pub(super) waiting: AtomicUsize,
    pub(super) blocks_in_use: AtomicUsize,
    pub(super) requests: AtomicU64,
    pub(super) queries: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) prompt_tokens: AtomicU64,
    pub(super) generation_tokens: AtomicU64,
    pub(super) success: AtomicU64,
    pub(super) histograms: Mutex<Histograms>,
    pub(super) created_unix: f64,
}
pub(super) use crate::core::lock;

pub(super) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Shared {
    pub(super) fn new(cfg: SimConfig, engine: usize) -> Self {
        let model_json = serde_json::to_string(&cfg.model_name).unwrap_or_else(|_| "\"turnbench-sim\"".into());
        let model_label = cfg.model_name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        Self {
            model_json,
            model_label,
            cache: Mutex::new(PrefixCache::new(cfg.block_size, cfg.kv_cache_blocks)),
            sem: Arc::new(Semaphore::new(cfg.max_num_seqs)),
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            blocks_in_use: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: AtomicU64::new(0),
            histograms: Mutex::new(Histograms::new()),
            created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            engine,
            cfg,
        }
    }

    /// The block hashes this engine's prefix cache keys `tokens` by (none with caching off): what
    /// a request looks up and inserts, and what prefix-affinity routing asks every replica about.
    pub(super) fn prompt_hashes(&self, tokens: &[u32]) -> Vec<u64> {
        if self.cfg.enable_prefix_caching {
            block_hashes(tokens, self.cfg.block_size)
        } else {
            Vec::new()
        }
    }

    /// Requests in flight: running plus waiting for a running slot.
    pub(super) fn load(&self) -> usize {
        self.running.load(Relaxed) + self.waiting.load(Relaxed)
    }
}
