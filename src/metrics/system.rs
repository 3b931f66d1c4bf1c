//! The machine and the engine's process tree, through sysinfo.
//!
//! Engine CPU % is the delta of accumulated CPU time over wall time (sysinfo's per-process
//! `cpu_usage()` reads about half the true value at 10 Hz). Each tick refreshes only the watched
//! tree; a full process scan, to find new children, runs once a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::gpu::GpuInfo;
use crate::core::timeline::{metric, source, Sample};

const MIB: f64 = 1024.0 * 1024.0;
const RESCAN: Duration = Duration::from_secs(1);
/// CPU time is counted in 10 ms ticks: a reading over a shorter window than this would be
/// mostly rounding, so faster ticks measure against an older snapshot.
const MIN_CPU_WINDOW_MS: f64 = 100.0;

/// Samples the whole machine and (optionally) one process tree.
pub struct HostSampler {
    sys: System,
    root: Option<Pid>,
    tree: Vec<Pid>,
    last_scan: Option<Instant>,
    /// Accumulated CPU ms per pid at the previous tick, and when that tick was.
    prev: Option<(Instant, HashMap<Pid, u64>)>,
    /// Whether to sample the whole machine (off for the cost benchmark of the tree alone).
    pub system: bool,
    /// No CPU % on the first tick: the interval since `new` is too short to mean anything.
    cpu_primed: bool,
}

impl HostSampler {
    /// `root`: the engine's root pid (the tree is it and its descendants).
    pub fn new(root: Option<u32>) -> Result<Self, String> {
        let mut sys = System::new().map_err(|e| format!("sysinfo: {e}"))?;
        sys.refresh_cpu_usage();
        Ok(Self { sys, root: root.map(Pid::from_u32), tree: Vec::new(), last_scan: None, prev: None, system: true, cpu_primed: false })
    }

    /// Pids of the watched tree, as of the last scan.
    pub fn engine_pids(&self) -> Vec<u32> {
        self.tree.iter().map(|p| p.as_u32()).collect()
    }

    fn rescan(&mut self, root: Pid) {
        self.sys.refresh_processes_specifics(ProcessesToUpdate::All, true, ProcessRefreshKind::nothing());
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for (pid, p) in self.sys.processes() {
            if p.thread_kind().is_some() {
                continue;
            }
            if let Some(parent) = p.parent() {
                children.entry(parent).or_default().push(*pid);
            }
        }
        let mut tree = Vec::new();
        if self.sys.process(root).is_some() {
            let mut stack = vec![root];
            while let Some(p) = stack.pop() {
                tree.push(p);
                if let Some(c) = children.get(&p) {
                    stack.extend(c.iter().copied());
                }
            }
        }
        self.tree = tree;
        self.last_scan = Some(Instant::now());
    }

    /// One tick's rows.
    pub fn sample(&mut self, t_ms: f64, test: u32) -> Vec<Sample> {
        self.sample_at(Instant::now(), t_ms, test)
    }

    /// One tick's rows, taken at `now` (the end of the engine's CPU window; tests pass their own).
    pub(crate) fn sample_at(&mut self, now: Instant, t_ms: f64, test: u32) -> Vec<Sample> {
        let mut out = Vec::new();
        if self.system {
            self.sys.refresh_cpu_usage();
            self.sys.refresh_memory();
            if self.cpu_primed {
                out.push(Sample::new(t_ms, test, source::SYSTEM, metric::CPU_PCT, "all", self.sys.global_cpu_usage() as f64));
                for (i, cpu) in self.sys.cpus().iter().enumerate() {
                    out.push(Sample::new(t_ms, test, source::SYSTEM, metric::CPU_PCT, &format!("cpu{i}"), cpu.usage() as f64));
                }
            }
            self.cpu_primed = true;
            out.push(Sample::new(t_ms, test, source::SYSTEM, metric::MEM_USED_MIB, "", self.sys.used_memory() as f64 / MIB));
            out.push(Sample::new(t_ms, test, source::SYSTEM, "mem_available_mib", "", self.sys.available_memory() as f64 / MIB));
            if let Ok(load) = System::load_average() {
                out.push(Sample::new(t_ms, test, source::SYSTEM, "load1", "", load.one));
            }
        }
        if let Some(root) = self.root {
            out.extend(self.sample_tree(root, now, t_ms, test));
        }
        out
    }

    fn sample_tree(&mut self, root: Pid, now: Instant, t_ms: f64, test: u32) -> Vec<Sample> {
        if self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.rescan(root);
        }
        // Only the tree's CPU times and memory, every tick (cheap: a few pids).
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&self.tree),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let mut cpu_ms = HashMap::new();
        let (mut rss, mut threads, mut count) = (0u64, 0u64, 0u64);
        for pid in &self.tree {
            if let Some(p) = self.sys.process(*pid) {
                cpu_ms.insert(*pid, p.accumulated_cpu_time());
                rss += p.memory();
                threads += proc_threads(pid.as_u32()).unwrap_or(1);
                count += 1;
            }
        }
        let mut out = Vec::new();
        if count > 0 {
            out.push(Sample::new(t_ms, test, source::ENGINE, metric::RSS_MIB, "", rss as f64 / MIB));
            out.push(Sample::new(t_ms, test, source::ENGINE, "threads", "", threads as f64));
            out.push(Sample::new(t_ms, test, source::ENGINE, "processes", "", count as f64));
        }
        match &self.prev {
            Some((then, before)) => {
                let wall_ms = now.duration_since(*then).as_secs_f64() * 1000.0;
                if wall_ms >= MIN_CPU_WINDOW_MS {
                    // Only pids seen at both ends: a new child's earlier CPU time is not this window's.
                    let used: u64 =
                        cpu_ms.iter().filter_map(|(pid, now)| before.get(pid).map(|b| now.saturating_sub(*b))).sum();
                    if count > 0 {
                        out.push(Sample::new(t_ms, test, source::ENGINE, metric::CPU_PCT, "", used as f64 / wall_ms * 100.0));
                    }
                    self.prev = Some((now, cpu_ms));
                }
            }
            None => self.prev = Some((now, cpu_ms)),
        }
        out
    }
}

/// `num_threads` from `/proc/<pid>/stat`.
fn proc_threads(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(17)?.parse().ok()
}

/// `system.json`: the machine a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub turnbench_version: String,
    pub cpu_model: Option<String>,
    pub cpu_logical_cores: usize,
    pub cpu_physical_cores: Option<usize>,
    pub memory_total_mib: f64,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub kernel: Option<String>,
    pub arch: String,
    /// NVML's view; `None` when GPU metrics are unavailable.
    pub gpu: Option<GpuInfo>,
    /// Why GPU metrics are unavailable, when they are.
    pub gpu_unavailable: Option<String>,
    /// `turnbench sim <version>` for the simulator; what the server reports (`/version`) for others.
    pub engine_version: Option<String>,
}

impl SystemInfo {
    pub fn collect(gpu: Result<GpuInfo, String>, engine_version: Option<String>) -> Self {
        let mut sys = System::new().ok();
        if let Some(s) = &mut sys {
            s.refresh_memory();
            s.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        }
        let cpus = sys.as_ref().map(|s| s.cpus()).unwrap_or(&[]);
        let (gpu, gpu_unavailable) = match gpu {
            Ok(g) => (Some(g), None),
            Err(why) => (None, Some(why)),
        };
        Self {
            turnbench_version: env!("CARGO_PKG_VERSION").to_string(),
            cpu_model: cpus.first().map(|c| c.brand().trim().to_string()).filter(|b| !b.is_empty()),
            cpu_logical_cores: cpus.len().max(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)),
            cpu_physical_cores: System::physical_core_count().ok(),
            memory_total_mib: sys.as_ref().map(|s| s.total_memory() as f64 / MIB).unwrap_or(0.0),
            os: System::name().ok(),
            os_version: System::long_os_version().ok(),
            kernel: System::kernel_version().ok(),
            arch: System::cpu_arch(),
            gpu,
            gpu_unavailable,
            engine_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_rows_and_own_tree() {
        let mut s = HostSampler::new(Some(std::process::id())).unwrap();
        // The engine CPU window's ends are given, not slept for: a stalled machine cannot
        // stretch 30 ms into 100.
        let t0 = Instant::now();
        let first = s.sample_at(t0, 0.0, 1);
        assert!(!first.iter().any(|r| r.metric == "cpu_pct"), "no CPU % before an interval has passed");
        assert!(first.iter().any(|r| r.source == "system" && r.metric == "mem_used_mib"));
        assert!(first.iter().any(|r| r.source == "engine" && r.metric == "rss_mib" && r.value > 1.0));
        assert!(s.engine_pids().contains(&std::process::id()));
        let early = s.sample_at(t0 + Duration::from_millis(30), 30.0, 1);
        assert!(!early.iter().any(|r| r.source == "engine" && r.metric == "cpu_pct"), "window too short for CPU time");
        let second = s.sample_at(t0 + Duration::from_millis(120), 120.0, 1);
        assert!(second.iter().any(|r| r.source == "engine" && r.metric == "cpu_pct"));
        assert!(second.iter().any(|r| r.source == "system" && r.metric == "cpu_pct" && r.device == "cpu0"));
        let threads = second.iter().find(|r| r.metric == "threads").unwrap().value;
        assert!(threads >= 1.0);
    }

    #[test]
    fn system_info_names_the_machine() {
        let info = SystemInfo::collect(Err("no NVML".into()), Some("turnbench sim 0.1.0".into()));
        assert!(info.cpu_logical_cores >= 1);
        assert!(info.memory_total_mib > 0.0);
        assert_eq!(info.gpu_unavailable.as_deref(), Some("no NVML"));
    }
}
