//! The samplers end to end through the real binary (`turnbench run --engine sim`): a scripted
//! GPU (`TURNBENCH_GPU_SCRIPT`) whose values must reach timeline.csv, the per-turn join in
//! turns.csv, summary.json and report.md; GPU hygiene refusing and allowing; and a run on this
//! machine's real NVML path (no GPU here) completing with its one-line notice.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{assert_success, Suite, BIN};
use serde_json::{json, Value};

struct Fixture {
    suite: Suite,
}

impl Fixture {
    fn new() -> Self {
        let turns: Vec<Value> =
            (1..=3).map(|n| json!({"user": format!("Question {n}: explain the sampler."), "max_tokens": 16})).collect();
        Self { suite: Suite::new(json!([{"id": "watched", "title": "watched", "tags": ["qa"], "turns": turns}]), json!([])) }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.suite.path(name)
    }

    fn script(&self, processes: Value) -> PathBuf {
        let script = json!({
            "info": {"driver_version": "550.54.15", "cuda_version": "12.4", "nvml_version": "12.550.54.15",
                     "devices": [{"index": 0, "name": "Scripted H100", "memory_total_mib": 81559.0}]},
            "frames": [[{"index": 0, "util_sm_pct": 37.0, "util_mem_pct": 12.0, "mem_used_mib": 1234.0,
                         "mem_total_mib": 81559.0, "power_w": 123.5, "temp_c": 41.0, "sm_clock_mhz": 1980.0,
                         "mem_clock_mhz": 2619.0, "throttle_reasons": 0, "processes": processes}]]
        });
        let path = self.path("gpu.json");
        std::fs::write(&path, script.to_string()).unwrap();
        path
    }

    fn run(&self, gpu_script: Option<&Path>, extra: &[&str]) -> Output {
        let mut cmd = self.suite.command(&[
            "--warmup=0",
            "--sample-interval=20",
            "--engine-arg=--inter-token-ms=4",
            "--engine-arg=--overhead-ms=20",
        ]);
        cmd.args(extra).env_remove("TURNBENCH_GPU_SCRIPT");
        if let Some(s) = gpu_script {
            cmd.env("TURNBENCH_GPU_SCRIPT", s);
        }
        cmd.output().unwrap()
    }

    fn results(&self) -> PathBuf {
        self.suite.results()
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_schema_valid(summary: &Value) {
    let schema = read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/summary.schema.json"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(summary).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "summary.json does not match its schema: {errors:#?}");
}

/// turns.csv rows as header → value maps.
fn turns_csv(dir: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(dir.join("turns.csv")).unwrap();
    let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records().map(|row| headers.iter().cloned().zip(row.unwrap().iter().map(String::from)).collect()).collect()
}

#[test]
fn scripted_gpu_values_reach_timeline_join_summary_and_report() {
    let fx = Fixture::new();
    let script = fx.script(json!([]));
    let out = fx.run(Some(&script), &[]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("GPU metrics unavailable"), "{stderr}");
    let dir = fx.results();

    // timeline.csv: tidy rows with the scripted values, sorted by time.
    let timeline = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
    assert!(timeline.starts_with("t_ms,test,source,metric,device,value\n"));
    assert!(timeline.lines().any(|l| l.ends_with(",1,gpu,util_sm_pct,gpu0,37.0")), "no scripted GPU row:\n{}", &timeline[..500.min(timeline.len())]);
    assert!(timeline.contains(",gpu,power_w,gpu0,123.5"));
    assert!(timeline.contains(",1,engine,cpu_pct,,"), "engine CPU sampled");
    assert!(timeline.contains(",1,engine,rss_mib,,"));
    assert!(timeline.contains(",1,system,cpu_pct,all,"));
    assert!(timeline.contains(",1,server,kv_cache_usage_pct,,"), "server gauges scraped");
    assert!(timeline.contains(",1,server,requests_running,,"));
    assert!(timeline.contains(",1,hygiene,gpu_release_ms,,"));
    let times: Vec<f64> = timeline.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "timeline sorted by time");

    // Per-turn join in turns.csv.
    let rows = turns_csv(&dir);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["gpu_util_mean_pct"], "37", "{row:?}");
        assert_eq!(row["gpu_util_max_pct"], "37");
        assert_eq!(row["gpu_memory_peak_mib"], "1234");
    }
    // Engine CPU is measured over windows of at least 100 ms, so a turn shorter than that may
    // have none of its own; the test as a whole has.
    assert!(rows.iter().any(|r| r["engine_cpu_mean_pct"].parse::<f64>().is_ok()), "{rows:?}");

    // Per-test summary, valid against the schema.
    let summary = read_json(&dir.join("summary.json"));
    assert_schema_valid(&summary);
    let res = &summary["resources"];
    assert_eq!(res["gpu_sampled"], true);
    let tests = res["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 1);
    let t = &tests[0];
    assert_eq!(t["test"], 1);
    assert_eq!(t["conversation_id"], "watched");
    assert_eq!(t["gpu_util_mean_pct"], 37.0);
    assert_eq!(t["gpu_memory_peak_mib"], 1234.0);
    assert!(t["gpu_release_ms"].as_f64().is_some());
    let manifest = read_json(&dir.join("manifest.json"));
    assert_eq!(manifest["tests"][0]["gpu_release_ms"], t["gpu_release_ms"], "also in the manifest's test record");
    assert!(t["engine_rss_peak_mib"].as_f64().unwrap() > 1.0);

    // report.md and the plot.
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## Resources"), "{report}");
    assert!(report.contains("| 37.0 / 37.0 | 1234 |"), "{report}");
    assert!(dir.join("plots/timeline.png").is_file() && dir.join("plots/timeline.svg").is_file());
    let svg = std::fs::read_to_string(dir.join("plots/timeline.svg")).unwrap();
    assert!(svg.contains("GPU util % (gpu0)"));
    // The plot's model draws the run's samples: the GPU panel is the scripted 37 % at every
    // sample time of timeline.csv, and nothing else.
    let timeline = turnbench::core::timeline::Timeline::read(&dir).unwrap().unwrap();
    let figure = turnbench::report::resources::timeline_figure(&timeline);
    let gpu = figure.panels.iter().flat_map(|p| &p.series).find(|s| s.label == "GPU util % (gpu0)").expect("a GPU series");
    let sampled = timeline.series("gpu", "util_sm_pct").count();
    assert!(sampled > 0 && gpu.points.len() == sampled, "{} points for {sampled} samples", gpu.points.len());
    assert!(gpu.points.iter().all(|(_, y)| *y == 37.0), "{:?}", gpu.points);

    // system.json from the probe.
    let system = read_json(&dir.join("system.json"));
    assert_eq!(system["gpu"]["devices"][0]["name"], "Scripted H100");
    assert_eq!(system["gpu"]["driver_version"], "550.54.15");
    assert_eq!(system["gpu"]["cuda_version"], "12.4");
    assert!(system["gpu_unavailable"].is_null());
    assert!(system["engine_version"].as_str().unwrap().starts_with("turnbench sim "));
    assert!(system["cpu_logical_cores"].as_u64().unwrap() >= 1);

    // `turnbench report` rebuilds the same join from the folder alone.
    std::fs::remove_file(dir.join("turns.csv")).unwrap();
    let again = Command::new(BIN).arg("report").arg(&dir).output().unwrap();
    assert_success(&again);
    assert!(turns_csv(&dir).iter().all(|r| r["gpu_util_mean_pct"] == "37"));
}

#[test]
fn busy_gpu_is_refused_unless_allowed() {
    let fx = Fixture::new();
    // A process that is not turnbench's (pid 1 is init, never our child) holds 8 GiB.
    let script = fx.script(json!([{"pid": 1, "used_mib": 8000.0}]));
    let out = fx.run(Some(&script), &[]);
    assert_eq!(out.status.code(), Some(2), "refused as a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GPU busy") && stderr.contains("pid 1 holds 8000 MiB on gpu0"), "{stderr}");
    assert!(stderr.contains("--allow-busy-gpu"), "{stderr}");
    assert!(!fx.path("results").exists() || std::fs::read_dir(fx.path("results")).unwrap().next().is_none(), "nothing started, no results");

    let out = fx.run(Some(&script), &["--allow-busy-gpu"]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: GPU busy"), "{stderr}");
    let summary = read_json(&fx.results().join("summary.json"));
    assert_schema_valid(&summary);
    assert_eq!(summary["resources"]["tests"][0]["gpu_foreign_mib"], 8000.0);
    assert_eq!(summary["requests"]["ok"], 3);
}

#[test]
fn without_nvml_the_run_completes_with_one_notice() {
    if turnbench::metrics::gpu::NvmlProbe::init().is_ok() {
        eprintln!("skipped: this machine has NVML (see the GPU check in the closing note)");
        return;
    }
    let fx = Fixture::new();
    let out = fx.run(None, &[]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let notices: Vec<&str> = stderr.lines().filter(|l| l.contains("GPU metrics unavailable")).collect();
    assert_eq!(notices.len(), 1, "{stderr}");
    assert!(notices[0].starts_with("GPU metrics unavailable: ") && notices[0].len() > "GPU metrics unavailable: ".len());
    let dir = fx.results();
    let system = read_json(&dir.join("system.json"));
    assert!(system["gpu"].is_null());
    assert!(system["gpu_unavailable"].as_str().is_some());
    let summary = read_json(&dir.join("summary.json"));
    assert_schema_valid(&summary);
    assert_eq!(summary["resources"]["gpu_sampled"], false);
    assert_eq!(summary["requests"]["ok"], 3);
    let timeline = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
    assert!(!timeline.contains(",gpu,"));
    assert!(timeline.contains(",engine,cpu_pct,"));
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("GPU metrics unavailable for this run"), "{report}");
}

/// The real NVML path, where there is a GPU: the probe's own readings, then a run through the
/// binary. Without NVML it says loudly that it skipped; `TURNBENCH_REQUIRE_GPU=1` makes that a
/// failure (for machines that have a GPU).
#[test]
fn on_a_gpu_the_nvml_probe_reads_it_and_a_run_records_it() {
    use turnbench::metrics::gpu::{wait_for_release, GpuProbe, NvmlProbe};
    let probe = match NvmlProbe::init() {
        Ok(p) => p,
        Err(why) => {
            assert!(std::env::var("TURNBENCH_REQUIRE_GPU").as_deref() != Ok("1"), "TURNBENCH_REQUIRE_GPU=1 but NVML: {why}");
            eprintln!("\n*** SKIPPED the NVML test (tests/samplers_e2e.rs): {why} ***\n");
            return;
        }
    };
    let info = probe.info();
    assert!(!info.devices.is_empty(), "{info:?}");
    for d in &info.devices {
        assert!(!d.name.is_empty() && d.memory_total_mib.is_some_and(|m| m > 0.0), "{d:?}");
    }
    let devices = probe.sample().unwrap();
    assert_eq!(devices.len(), info.devices.len());
    for d in &devices {
        let (used, total) = (d.mem_used_mib.unwrap(), d.mem_total_mib.unwrap());
        assert!(used <= total, "{d:?}");
        assert!(d.util_sm_pct.is_some_and(|u| (0.0..=100.0).contains(&u)), "{d:?}");
    }
    // Nothing of ours holds memory: it is "released" at once against what is used now.
    let used_now = turnbench::metrics::gpu::memory_used_mib(&devices).unwrap();
    assert!(wait_for_release(&probe, used_now, Duration::from_secs(2), Duration::from_millis(10)).released);
    drop(probe);

    let fx = Fixture::new();
    let out = fx.run(None, &[]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("GPU metrics unavailable"), "{stderr}");
    let dir = fx.results();
    let system = read_json(&dir.join("system.json"));
    assert!(system["gpu"]["devices"][0]["name"].as_str().is_some_and(|n| !n.is_empty()), "{system}");
    let timeline = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
    assert!(timeline.contains(",gpu,mem_total_mib,gpu0,"), "{}", &timeline[..500.min(timeline.len())]);
    assert_eq!(read_json(&dir.join("summary.json"))["resources"]["gpu_sampled"], true);
}
