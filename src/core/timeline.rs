//! The timeline: every sample the samplers took during a run, in tidy form
//! (`t_ms,test,source,metric,device,value`), on the same clock as the records (`RunClock`), so
//! per-turn joins are a matter of comparing times.
//!
//! Samples are appended to `timeline.csv` as they arrive (a crash loses at most one tick) and the
//! file is rewritten atomically, sorted by time, when the run writes its reports.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::core::results::write_atomic;

pub const TIMELINE_FILE: &str = "timeline.csv";
pub const TIMELINE_HEADER: &str = "t_ms,test,source,metric,device,value";

/// Where a sample came from.
pub mod source {
    /// Whole machine (sysinfo): CPU overall and per core, memory, load.
    pub const SYSTEM: &str = "system";
    /// The engine's process tree (the managed server and its descendants).
    pub const ENGINE: &str = "engine";
    /// One GPU (NVML or the scripted probe); `device` is `gpu<index>`.
    pub const GPU: &str = "gpu";
    /// The server's `/metrics` gauges.
    pub const SERVER: &str = "server";
    /// GPU hygiene around a managed server: foreign memory before start, release time after stop.
    pub const HYGIENE: &str = "hygiene";
    /// One replica behind the endpoint (`--metrics-url`, or one `engine` label of its
    /// `/metrics`); `device` names it.
    pub const REPLICA: &str = "replica";
}

/// Metric names used by the joins and the report.
pub mod metric {
    pub const CPU_PCT: &str = "cpu_pct";
    pub const UTIL_SM_PCT: &str = "util_sm_pct";
    pub const MEM_USED_MIB: &str = "mem_used_mib";
    pub const KV_CACHE_USAGE_PCT: &str = "kv_cache_usage_pct";
    pub const RSS_MIB: &str = "rss_mib";
    pub const GPU_RELEASE_MS: &str = "gpu_release_ms";
    pub const GPU_FOREIGN_MIB: &str = "gpu_foreign_mib";
    pub const REQUESTS_RUNNING: &str = "requests_running";
    pub const REQUESTS_WAITING: &str = "requests_waiting";
    pub const PREEMPTIONS_TOTAL: &str = "preemptions_total";
    pub const PREFIX_CACHE_HITS_TOTAL: &str = "prefix_cache_hits_total";
    pub const PREFIX_CACHE_QUERIES_TOTAL: &str = "prefix_cache_queries_total";
}

/// One measured value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Milliseconds since the run's origin (the clock of `TurnRecord.timing`).
    pub t_ms: f64,
    pub test: u32,
    pub source: String,
    pub metric: String,
    /// `all`, `cpu3`, `gpu0`, or empty when the metric has no device.
    pub device: String,
    pub value: f64,
}

impl Sample {
    pub fn new(t_ms: f64, test: u32, source: &str, metric: &str, device: &str, value: f64) -> Self {
        Self { t_ms, test, source: source.into(), metric: metric.into(), device: device.into(), value }
    }
}

/// All samples of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub samples: Vec<Sample>,
}

impl Timeline {
    /// Samples of one source and metric, optionally one test, in time order.
    pub fn series<'a>(&'a self, source: &'a str, metric: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.source == source && s.metric == metric)
    }

    pub fn sort(&mut self) {
        self.samples.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    }

    /// The tidy CSV, header included.
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        rows_csv(&self.samples, true)
    }

    pub fn from_csv(bytes: &[u8]) -> Result<Self> {
        let mut r = csv::Reader::from_reader(bytes);
        let mut samples = Vec::new();
        for (i, row) in r.deserialize::<Sample>().enumerate() {
            match row {
                Ok(s) => samples.push(s),
                // A torn last line (the process died mid-write) is not worth failing a report.
                Err(_) if i + 2 >= bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() => break,
                Err(e) => return Err(e).with_context(|| format!("{TIMELINE_FILE}: row {}", i + 2)),
            }
        }
        Ok(Self { samples })
    }

    /// Reads `dir/timeline.csv`; `None` when the run has none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(TIMELINE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_csv(&bytes).map(Some)
    }
}

/// CSV rows of `samples`, with or without the header line.
fn rows_csv(samples: &[Sample], header: bool) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    if header {
        w.write_record(TIMELINE_HEADER.split(','))?;
    }
    for s in samples {
        w.serialize(s)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Shared collector the samplers write into: keeps every sample in memory and appends it to the
/// live `timeline.csv` (when a path is given).
#[derive(Clone, Default)]
pub struct TimelineSink {
    inner: Arc<Mutex<SinkInner>>,
}

#[derive(Default)]
struct SinkInner {
    samples: Vec<Sample>,
    file: Option<(PathBuf, File)>,
    write_error: Option<String>,
}

impl TimelineSink {
    /// In memory only.
    pub fn memory() -> Self {
        Self::default()
    }

    /// In memory and appended live to `path` (created with its header).
    pub fn create(path: &Path) -> Result<Self> {
        let sink = Self::memory();
        sink.attach(path)?;
        Ok(sink)
    }

    /// From now on also appends to `path` (created with its header and the samples so far).
    pub fn attach(&self, path: &Path) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let so_far = Timeline { samples: inner.samples.clone() }.to_csv()?;
        file.write_all(&so_far).with_context(|| format!("cannot write {}", path.display()))?;
        inner.file = Some((path.to_path_buf(), file));
        Ok(())
    }

    /// Adds one tick's samples (one write to the live file).
    pub fn push(&self, batch: Vec<Sample>) {
        if batch.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((path, file)) = &mut inner.file {
            let body = rows_csv(&batch, false).unwrap_or_default();
            if let Err(e) = file.write_all(&body) {
                let msg = format!("cannot append to {}: {e}", path.display());
                inner.file = None;
                inner.write_error = Some(msg);
            }
        }
        inner.samples.extend(batch);
    }

    /// Everything collected so far, sorted by time.
    pub fn timeline(&self) -> Timeline {
        let mut t = Timeline { samples: self.inner.lock().unwrap_or_else(|p| p.into_inner()).samples.clone() };
        t.sort();
        t
    }

    /// The first error appending to the live file, if any (the in-memory copy is still complete).
    pub fn write_error(&self) -> Option<String> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).write_error.clone()
    }

    /// Rewrites `dir/timeline.csv` atomically, sorted, from the in-memory copy.
    pub fn finish(&self, dir: &Path) -> Result<Timeline> {
        let timeline = self.timeline();
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.file = None;
        }
        write_atomic(&dir.join(TIMELINE_FILE), &timeline.to_csv()?)?;
        Ok(timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_and_tolerates_a_torn_last_line() {
        let t = Timeline {
            samples: vec![
                Sample::new(1.5, 1, source::GPU, metric::UTIL_SM_PCT, "gpu0", 37.0),
                Sample::new(2.0, 1, source::SYSTEM, metric::CPU_PCT, "all", 12.25),
            ],
        };
        let bytes = t.to_csv().unwrap();
        assert!(bytes.starts_with(TIMELINE_HEADER.as_bytes()));
        assert_eq!(Timeline::from_csv(&bytes).unwrap(), t);
        let mut torn = bytes.clone();
        torn.extend_from_slice(b"3.0,1,gpu,util_sm");
        assert_eq!(Timeline::from_csv(&torn).unwrap(), t);
    }

    #[test]
    fn sink_appends_live_and_finishes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let sink = TimelineSink::create(&dir.path().join(TIMELINE_FILE)).unwrap();
        sink.push(vec![Sample::new(5.0, 1, "system", "cpu_pct", "all", 1.0)]);
        sink.push(vec![Sample::new(3.0, 1, "system", "cpu_pct", "all", 2.0)]);
        let live = std::fs::read_to_string(dir.path().join(TIMELINE_FILE)).unwrap();
        assert_eq!(live.lines().count(), 3, "{live}");
        let t = sink.finish(dir.path()).unwrap();
        assert_eq!(t.samples[0].t_ms, 3.0);
        let back = Timeline::read(dir.path()).unwrap().unwrap();
        assert_eq!(back, t);
    }
}
