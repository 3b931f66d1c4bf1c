//! GPUs: a [`GpuProbe`] reads every device once per call. [`NvmlProbe`] uses NVML through
//! nvml-wrapper (loaded at run time; no driver means no probe, and one line saying why);
//! [`ScriptedProbe`] replays values from a JSON file so tests drive the whole GPU data path —
//! sampling, hygiene decisions, joins, reports — on machines without a GPU.
//!
//! Hygiene (before and after each managed server): [`foreign_memory`] finds GPU memory held by
//! processes that are not turnbench's, and [`wait_for_release`] waits after teardown until the
//! memory in use is back near the baseline taken before the server started.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::core::timeline::{metric, source, Sample};

/// Environment variable naming a JSON script for [`ScriptedProbe`]: a testing hook that stands in
/// for NVML (see README, "Resources").
pub const GPU_SCRIPT_ENV: &str = "TURNBENCH_GPU_SCRIPT";

/// What the driver says about itself and its devices (for `system.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub nvml_version: Option<String>,
    pub devices: Vec<GpuDeviceInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuDeviceInfo {
    pub index: u32,
    pub name: String,
    pub memory_total_mib: Option<f64>,
}

/// A process holding GPU memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    #[serde(default)]
    pub used_mib: Option<f64>,
}

/// One device at one instant. Every reading is optional: NVML answers `NotSupported` for many
/// of them on some boards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuDeviceSample {
    pub index: u32,
    pub util_sm_pct: Option<f64>,
    pub util_mem_pct: Option<f64>,
    pub mem_used_mib: Option<f64>,
    pub mem_total_mib: Option<f64>,
    pub power_w: Option<f64>,
    pub temp_c: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    pub mem_clock_mhz: Option<f64>,
    /// NVML's clocks-throttle-reason bit mask (0 = not throttled).
    pub throttle_reasons: Option<u64>,
    pub processes: Vec<GpuProcess>,
}

impl GpuDeviceSample {
    /// Timeline rows for this device; `engine_pids` selects the per-process memory that is the
    /// engine's (`engine_mem_mib`).
    pub fn to_samples(&self, t_ms: f64, test: u32, engine_pids: &[u32]) -> Vec<Sample> {
        let device = format!("gpu{}", self.index);
        let mut out = Vec::with_capacity(11);
        let mut push = |m: &str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                out.push(Sample::new(t_ms, test, source::GPU, m, &device, v));
            }
        };
        push(metric::UTIL_SM_PCT, self.util_sm_pct);
        push("util_mem_pct", self.util_mem_pct);
        push(metric::MEM_USED_MIB, self.mem_used_mib);
        push("mem_total_mib", self.mem_total_mib);
        push("power_w", self.power_w);
        push("temp_c", self.temp_c);
        push("sm_clock_mhz", self.sm_clock_mhz);
        push("mem_clock_mhz", self.mem_clock_mhz);
        push("throttle_reasons", self.throttle_reasons.map(|r| r as f64));
        if !engine_pids.is_empty() {
            let engine: f64 = self
                .processes
                .iter()
                .filter(|p| engine_pids.contains(&p.pid))
                .filter_map(|p| p.used_mib)
                .sum();
            push("engine_mem_mib", Some(engine));
        }
        out
    }
}

/// Reads GPUs. Calls block (NVML is a C library): call from a blocking thread.
pub trait GpuProbe: Send + Sync {
    fn info(&self) -> GpuInfo;
    /// Every device, now.
    fn sample(&self) -> Result<Vec<GpuDeviceSample>>;
}

/// Opens the run's GPU probe: the script named by `TURNBENCH_GPU_SCRIPT` when set, else NVML.
/// `Err` carries the one-line reason GPU metrics are unavailable.
pub fn open_probe() -> std::result::Result<Box<dyn GpuProbe>, String> {
    if let Some(path) = std::env::var_os(GPU_SCRIPT_ENV) {
        return ScriptedProbe::load(Path::new(&path)).map(|p| Box::new(p) as Box<dyn GpuProbe>).map_err(|e| format!("{e:#}"));
    }
    NvmlProbe::init().map(|p| Box::new(p) as Box<dyn GpuProbe>)
}

/// NVML through nvml-wrapper.
pub struct NvmlProbe {
    nvml: nvml_wrapper::Nvml,
    count: u32,
}

impl NvmlProbe {
    pub fn init() -> std::result::Result<Self, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| nvml_reason(&e))?;
        let count = nvml.device_count().map_err(|e| format!("NVML device count: {e}"))?;
        if count == 0 {
            return Err("NVML found no GPU".into());
        }
        Ok(Self { nvml, count })
    }
}

fn nvml_reason(e: &nvml_wrapper::error::NvmlError) -> String {
    use nvml_wrapper::error::NvmlError;
    match e {
        NvmlError::LibloadingError(inner) => format!("cannot load the NVML library (no NVIDIA driver?): {inner}"),
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".into(),
        other => format!("NVML: {other}"),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

impl GpuProbe for NvmlProbe {
    fn info(&self) -> GpuInfo {
        let cuda = self.nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
        let devices = (0..self.count)
            .map(|i| {
                let d = self.nvml.device_by_index(i).ok();
                GpuDeviceInfo {
                    index: i,
                    name: d.as_ref().and_then(|d| d.name().ok()).unwrap_or_else(|| "unknown".into()),
                    memory_total_mib: d.as_ref().and_then(|d| d.memory_info().ok()).map(|m| m.total as f64 / MIB),
                }
            })
            .collect();
        GpuInfo {
            driver_version: self.nvml.sys_driver_version().ok(),
            cuda_version: cuda,
            nvml_version: self.nvml.sys_nvml_version().ok(),
            devices,
        }
    }

    fn sample(&self) -> Result<Vec<GpuDeviceSample>> {
        use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
        use nvml_wrapper::enums::device::UsedGpuMemory;
        let mut out = Vec::with_capacity(self.count as usize);
        for i in 0..self.count {
            let d = self.nvml.device_by_index(i).with_context(|| format!("NVML device {i}"))?;
            let util = d.utilization_rates().ok();
            let mem = d.memory_info().ok();
            let mut processes: Vec<GpuProcess> = Vec::new();
            for list in [d.running_compute_processes(), d.running_graphics_processes()].into_iter().flatten() {
                for p in list {
                    if processes.iter().any(|q| q.pid == p.pid) {
                        continue;
                    }
                    let used_mib = match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b as f64 / MIB),
                        UsedGpuMemory::Unavailable => None,
                    };
                    processes.push(GpuProcess { pid: p.pid, used_mib });
                }
            }
            out.push(GpuDeviceSample {
                index: i,
                util_sm_pct: util.as_ref().map(|u| u.gpu as f64),
                util_mem_pct: util.as_ref().map(|u| u.memory as f64),
                mem_used_mib: mem.as_ref().map(|m| m.used as f64 / MIB),
                mem_total_mib: mem.as_ref().map(|m| m.total as f64 / MIB),
                power_w: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
                temp_c: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
                sm_clock_mhz: d.clock_info(Clock::SM).ok().map(f64::from),
                mem_clock_mhz: d.clock_info(Clock::Memory).ok().map(f64::from),
                throttle_reasons: d.current_throttle_reasons().ok().map(|r| r.bits()),
                processes,
            });
        }
        Ok(out)
    }
}

/// A GPU that plays back a script (testing hook, `TURNBENCH_GPU_SCRIPT`):
///
/// ```json
/// { "info": { "driver_version": "550.54", "cuda_version": "12.4", "nvml_version": "12.550",
///             "devices": [ { "index": 0, "name": "Scripted H100", "memory_total_mib": 81559 } ] },
///   "frames": [ [ { "index": 0, "util_sm_pct": 37, "mem_used_mib": 1234,
///                   "processes": [ { "pid": 4242, "used_mib": 8000 } ] } ] ] }
/// ```
///
/// Each `sample()` returns the next frame (a list of devices); the last frame repeats forever.
pub struct ScriptedProbe {
    script: Script,
    cursor: Mutex<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default)]
    pub info: GpuInfo,
    pub frames: Vec<Vec<GpuDeviceSample>>,
}

impl ScriptedProbe {
    pub fn new(script: Script) -> Self {
        Self { script, cursor: Mutex::new(0) }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{GPU_SCRIPT_ENV}: cannot read {}", path.display()))?;
        let script: Script = serde_json::from_str(&text).with_context(|| format!("{GPU_SCRIPT_ENV}: {} is not a GPU script", path.display()))?;
        anyhow::ensure!(!script.frames.is_empty(), "{GPU_SCRIPT_ENV}: {} has no frames", path.display());
        Ok(Self::new(script))
    }

    /// How many frames have been read.
    pub fn calls(&self) -> usize {
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl GpuProbe for ScriptedProbe {
    fn info(&self) -> GpuInfo {
        self.script.info.clone()
    }

    fn sample(&self) -> Result<Vec<GpuDeviceSample>> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let i = (*cursor).min(self.script.frames.len().saturating_sub(1));
        *cursor += 1;
        self.script.frames.get(i).cloned().context("empty GPU script")
    }
}

/// GPU memory held by processes outside `own_pids` (turnbench and its children), per device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForeignMemory {
    /// `(device index, pid, MiB)` of every foreign process.
    pub processes: Vec<(u32, u32, Option<f64>)>,
}

impl ForeignMemory {
    pub fn is_busy(&self) -> bool {
        !self.processes.is_empty()
    }

    pub fn total_mib(&self) -> f64 {
        self.processes.iter().filter_map(|p| p.2).sum()
    }

    pub fn describe(&self) -> String {
        self.processes
            .iter()
            .map(|(dev, pid, mib)| match mib {
                Some(m) => format!("pid {pid} holds {m:.0} MiB on gpu{dev}"),
                None => format!("pid {pid} uses gpu{dev}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Foreign GPU processes in one probe reading.
pub fn foreign_memory(devices: &[GpuDeviceSample], own_pids: &[u32]) -> ForeignMemory {
    let mut processes = Vec::new();
    for d in devices {
        for p in &d.processes {
            if !own_pids.contains(&p.pid) {
                processes.push((d.index, p.pid, p.used_mib));
            }
        }
    }
    ForeignMemory { processes }
}

/// Total GPU memory in use over all devices, when every device reports it.
pub fn memory_used_mib(devices: &[GpuDeviceSample]) -> Option<f64> {
    devices.iter().map(|d| d.mem_used_mib).sum()
}

/// Memory counts as released when it is within this much of the baseline: max(256 MiB, 2 % of
/// the total).
pub fn release_tolerance_mib(devices: &[GpuDeviceSample]) -> f64 {
    let total: f64 = devices.iter().filter_map(|d| d.mem_total_mib).sum();
    (total * 0.02).max(256.0)
}

/// Outcome of waiting for GPU memory to come back after a teardown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Release {
    /// Time from the call until memory was back near the baseline (or until giving up).
    pub waited: Duration,
    /// False when `timeout` passed first.
    pub released: bool,
    pub last_used_mib: Option<f64>,
}

/// Polls `probe` every `poll` until total memory used is within the tolerance of `baseline_mib`
/// or `timeout` passes. Blocking.
pub fn wait_for_release(probe: &dyn GpuProbe, baseline_mib: f64, timeout: Duration, poll: Duration) -> Release {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(devices) = probe.sample() {
            last = memory_used_mib(&devices);
            let tolerance = release_tolerance_mib(&devices);
            if last.is_some_and(|used| used <= baseline_mib + tolerance) {
                return Release { waited: start.elapsed(), released: true, last_used_mib: last };
            }
        }
        if start.elapsed() >= timeout {
            return Release { waited: start.elapsed(), released: false, last_used_mib: last };
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(used: f64, procs: &[(u32, f64)]) -> Vec<GpuDeviceSample> {
        vec![GpuDeviceSample {
            index: 0,
            mem_used_mib: Some(used),
            mem_total_mib: Some(10_000.0),
            processes: procs.iter().map(|(pid, m)| GpuProcess { pid: *pid, used_mib: Some(*m) }).collect(),
            ..Default::default()
        }]
    }

    #[test]
    fn scripted_probe_steps_then_repeats_the_last_frame() {
        let p = ScriptedProbe::new(Script { info: GpuInfo::default(), frames: vec![frame(1.0, &[]), frame(2.0, &[])] });
        let used: Vec<f64> = (0..4).map(|_| p.sample().unwrap()[0].mem_used_mib.unwrap()).collect();
        assert_eq!(used, [1.0, 2.0, 2.0, 2.0]);
        assert_eq!(p.calls(), 4);
    }

    #[test]
    fn own_processes_are_not_foreign() {
        let f = foreign_memory(&frame(9000.0, &[(10, 4000.0), (77, 5000.0)]), &[10]);
        assert!(f.is_busy());
        assert_eq!(f.processes, vec![(0, 77, Some(5000.0))]);
        assert_eq!(f.describe(), "pid 77 holds 5000 MiB on gpu0");
        assert!(!foreign_memory(&frame(4000.0, &[(10, 4000.0)]), &[10]).is_busy());
    }

    #[test]
    fn release_waits_until_memory_is_back_near_baseline() {
        // Baseline 1000; tolerance max(256, 2 % of 10000) = 256.
        let p = ScriptedProbe::new(Script {
            info: GpuInfo::default(),
            frames: vec![frame(9000.0, &[]), frame(5000.0, &[]), frame(1200.0, &[])],
        });
        let r = wait_for_release(&p, 1000.0, Duration::from_secs(5), Duration::from_millis(1));
        assert!(r.released);
        assert_eq!(p.calls(), 3);
        assert_eq!(r.last_used_mib, Some(1200.0));

        let stuck = ScriptedProbe::new(Script { info: GpuInfo::default(), frames: vec![frame(9000.0, &[])] });
        let r = wait_for_release(&stuck, 1000.0, Duration::from_millis(30), Duration::from_millis(5));
        assert!(!r.released);
        assert!(r.waited >= Duration::from_millis(30));
    }

    #[test]
    fn device_rows_carry_engine_memory() {
        let mut d = frame(9000.0, &[(10, 4000.0), (11, 1000.0), (77, 5000.0)]).remove(0);
        d.util_sm_pct = Some(37.0);
        let rows = d.to_samples(1.0, 2, &[10, 11]);
        let get = |m: &str| rows.iter().find(|s| s.metric == m).map(|s| s.value);
        assert_eq!(get("util_sm_pct"), Some(37.0));
        assert_eq!(get("engine_mem_mib"), Some(5000.0));
        assert_eq!(get("power_w"), None);
        assert!(rows.iter().all(|s| s.device == "gpu0" && s.source == "gpu" && s.test == 2));
    }
}
