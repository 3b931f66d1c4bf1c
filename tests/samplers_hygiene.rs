//! GPU hygiene decisions driven by a scripted GPU through the run's `Monitor`: refuse a busy GPU
//! (usage error) unless allowed, and after teardown wait for memory to come back and record how
//! long it took.

use std::sync::Arc;
use std::time::Duration;

use turnbench::core::RunClock;
use turnbench::metrics::gpu::{GpuDeviceSample, GpuInfo, GpuProbe, GpuProcess, Script, ScriptedProbe};
use turnbench::metrics::monitor::Monitor;

fn frame(used: f64, foreign: &[(u32, f64)]) -> Vec<GpuDeviceSample> {
    vec![GpuDeviceSample {
        index: 0,
        mem_used_mib: Some(used),
        mem_total_mib: Some(10_000.0),
        processes: foreign.iter().map(|(pid, m)| GpuProcess { pid: *pid, used_mib: Some(*m) }).collect(),
        ..Default::default()
    }]
}

fn monitor(frames: Vec<Vec<GpuDeviceSample>>, allow_busy: bool) -> (Monitor, Arc<ScriptedProbe>) {
    let probe = Arc::new(ScriptedProbe::new(Script { info: GpuInfo::default(), frames }));
    let m = Monitor::with_probe(
        Some(probe.clone() as Arc<dyn GpuProbe>),
        None,
        Duration::from_millis(200),
        RunClock::start(),
        allow_busy,
        reqwest::Client::new(),
        None,
    );
    (m, probe)
}

#[tokio::test]
async fn a_busy_gpu_is_refused_as_a_usage_error() {
    let (m, _) = monitor(vec![frame(6000.0, &[(1, 5000.0)])], false);
    let err = m.check_gpu(1, "sim server for c1").await.unwrap_err();
    assert_eq!(turnbench::core::error::exit_code(&err), 2);
    let msg = err.to_string();
    assert!(msg.contains("GPU busy before starting the sim server for c1: pid 1 holds 5000 MiB on gpu0"), "{msg}");
    assert!(msg.contains("--allow-busy-gpu"), "{msg}");
    assert!(m.sink.timeline().samples.is_empty());
}

#[tokio::test]
async fn allowed_busy_gpu_starts_and_records_the_foreign_memory() {
    let (m, _) = monitor(vec![frame(6000.0, &[(1, 5000.0)])], true);
    let baseline = m.check_gpu(1, "server").await.unwrap();
    assert_eq!(baseline.memory_used_mib, Some(6000.0));
    let rows = m.sink.timeline().samples;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].source.as_str(), rows[0].metric.as_str(), rows[0].value), ("hygiene", "gpu_foreign_mib", 5000.0));
}

#[tokio::test]
async fn an_idle_gpu_is_allowed() {
    let (m, _) = monitor(vec![frame(300.0, &[])], false);
    assert_eq!(m.check_gpu(1, "server").await.unwrap().memory_used_mib, Some(300.0));
}

#[tokio::test]
async fn teardown_waits_for_memory_to_return_and_records_how_long() {
    // Before start: 1000 MiB. After teardown the memory drains over three polls (250 ms apart).
    let (m, probe) = monitor(vec![frame(1000.0, &[]), frame(9000.0, &[]), frame(5000.0, &[]), frame(1100.0, &[])], false);
    let baseline = m.check_gpu(3, "server").await.unwrap();
    let waited = m.after_stop(3, baseline).await.unwrap();
    assert_eq!(probe.calls(), 4, "polled until back near the baseline");
    let rows = m.sink.timeline().samples;
    let release = rows.iter().find(|s| s.metric == "gpu_release_ms").unwrap();
    assert_eq!(release.test, 3);
    // Two 250 ms waits at least (sleeps guarantee the floor; the probe's call count pins the rest).
    assert!(release.value >= 450.0, "two 250 ms waits: {}", release.value);
    assert_eq!(release.value, waited);
}

#[tokio::test]
async fn memory_that_never_returns_is_warned_about_after_the_timeout() {
    // Before start: 1000 MiB; after teardown 9000 MiB for good (the last frame repeats).
    let (m, _) = monitor(vec![frame(1000.0, &[]), frame(9000.0, &[])], false);
    let m = m.with_release_timeout(Duration::from_millis(300));
    let baseline = m.check_gpu(2, "server").await.unwrap();
    let (waited, warning) = m.release_after_stop(2, baseline).await.unwrap();
    assert!(waited >= 300.0, "gave up after the timeout, not before: {waited} ms");
    let warning = warning.expect("a warning");
    assert_eq!(
        warning,
        "warning: GPU memory not back to its baseline (1000 MiB) 300 ms after test 2's server stopped (now 9000 MiB)"
    );
    let rows = m.sink.timeline().samples;
    let release: Vec<_> = rows.iter().filter(|s| s.metric == "gpu_release_ms").collect();
    assert_eq!(release.len(), 1, "{rows:?}");
    assert_eq!((release[0].test, release[0].value), (2, waited));
    // Memory that does come back is not warned about.
    let (m, _) = monitor(vec![frame(1000.0, &[]), frame(1000.0, &[])], false);
    let m = m.with_release_timeout(Duration::from_millis(300));
    let baseline = m.check_gpu(1, "server").await.unwrap();
    assert_eq!(m.release_after_stop(1, baseline).await.unwrap().1, None);
}

#[test]
fn the_release_warning_says_seconds_from_one_second_up() {
    let w = turnbench::metrics::monitor::release_warning(1000.0, Duration::from_secs(60), 4, None);
    assert_eq!(w, "warning: GPU memory not back to its baseline (1000 MiB) 60 s after test 4's server stopped (now ? MiB)");
}
