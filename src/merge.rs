//! `turnbench merge`: the shard folders of one `run --shard I/N` run become one results folder.
//! The shards are checked to belong together (run id, plan hash, N, each index once), their
//! records, level windows and samples are moved onto one clock (each shard's offset from the
//! earliest shard's clock origin), and every report is built from the merged raw records by the
//! one writer — so a merged percentile is exact, never an average of the shards'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::analysis::load::{LoadSettings, SETTINGS_KEY};
use crate::analysis::Summary;
use crate::core::audit::{TOKENS_FILE, TRANSCRIPTS_FILE};
use crate::core::record::read_records;
use crate::core::results::{self, ClientCalibration, Manifest, MergedShard, ShardInfo, MANIFEST_FILE, TURNS_FILE};
use crate::core::timeline::{metric, source, Timeline, TIMELINE_FILE};
use crate::core::UsageError;
use crate::metrics::monitor::SYSTEM_FILE;
use crate::report::{self, load_run, LoadedRun};
use crate::schedule::LevelWindow;

/// One shard folder, read.
struct ShardRun {
    info: ShardInfo,
    run: LoadedRun,
    origin: jiff::Timestamp,
}

/// Merges the shard folders found in `dirs` into `out` (created); returns the summary.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Summary> {
    let shards = find_and_check(dirs, out)?;
    let common = shards.iter().map(|s| s.origin).min().context("no shard")?;
    let offset_ms = |s: &ShardRun| s.origin.duration_since(common).as_secs_f64() * 1000.0;

    let mut records = Vec::new();
    // One shard's timeline stands for the run: every shard watched the same server (its
    // counters would interleave out of step), and each its own machine (whose CPU is in
    // `merged_from`). The shard that sampled longest is the one.
    let mut timeline = Timeline::default();
    let mut windows: Vec<Vec<LevelWindow>> = Vec::new();
    let mut merged_from = Vec::new();
    for s in &shards {
        let off = offset_ms(s);
        // Merging sorts every shard's records onto one clock, so they are held here (and let go
        // before the reports, which read the merged file one record at a time).
        let (shard_records, warnings) = read_records(&s.run.turns())?;
        for w in &warnings {
            eprintln!("warning: shard {}: {w}", s.info.index);
        }
        let mut shard_timeline = Timeline::read(&s.run.dir)?.unwrap_or_default();
        let cpu: Vec<f64> = shard_timeline.series(source::SYSTEM, metric::CPU_PCT).filter(|x| x.device == "all").map(|x| x.value).collect();
        for sample in &mut shard_timeline.samples {
            sample.t_ms += off;
        }
        if span(&shard_timeline) > span(&timeline) {
            timeline = shard_timeline;
        }
        if let Some(mut load) = LoadSettings::from_manifest(&s.run.manifest) {
            for w in &mut load.levels {
                w.start_ms += off;
                w.stop_ms += off;
                w.end_ms += off;
            }
            windows.push(load.levels);
        }
        let m = &s.run.manifest;
        merged_from.push(MergedShard {
            index: s.info.index,
            dir: s.run.dir.display().to_string(),
            offset_ms: off,
            records: shard_records.len(),
            completed: m.completed == Some(true),
            cpu_mean_pct: (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
            cpu_max_pct: cpu.iter().copied().reduce(f64::max),
            ceiling_requests_per_s: m.client_calibration.as_ref().map(|c| c.requests_per_s),
        });
        records.extend(shard_records.into_iter().map(|mut r| {
            r.timing.shift(off);
            r.settle();
            r.shard = Some(s.info.index);
            r
        }));
    }
    records.sort_by(|a, b| a.timing.scheduled_ms.total_cmp(&b.timing.scheduled_ms));
    timeline.sort();

    let manifest = merged_manifest(&shards, common, &windows, merged_from)?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new("."))).ok();
    std::fs::create_dir(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut turns = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut turns, r)?;
        turns.push(b'\n');
    }
    results::write_atomic(&out.join(TURNS_FILE), &turns)?;
    drop((records, turns));
    if !timeline.samples.is_empty() {
        results::write_atomic(&out.join(TIMELINE_FILE), &timeline.to_csv()?)?;
    }
    // The audit files are per request and keyed by conversation and turn: shards' lines join as
    // they are. The machine description is the first shard's (each shard's is in its folder).
    for name in [TRANSCRIPTS_FILE, TOKENS_FILE] {
        let mut joined = Vec::new();
        for s in &shards {
            if let Ok(bytes) = std::fs::read(s.run.dir.join(name)) {
                joined.extend_from_slice(&bytes);
                // A shard killed mid-line: its torn line must not swallow the next shard's first.
                if !joined.is_empty() && !joined.ends_with(b"\n") {
                    joined.push(b'\n');
                }
            }
        }
        results::write_atomic(&out.join(name), &joined)?;
    }
    if let Ok(bytes) = std::fs::read(shards[0].run.dir.join(SYSTEM_FILE)) {
        results::write_atomic(&out.join(SYSTEM_FILE), &bytes)?;
    }
    results::write_manifest(out, &manifest)?;
    report::write_reports(out, &manifest)
}

/// How long a timeline sampled, ms (0 without samples).
fn span(t: &Timeline) -> f64 {
    let times = t.samples.iter().map(|s| s.t_ms);
    let (lo, hi) = times.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if hi >= lo { hi - lo } else { 0.0 }
}

/// The shard folders of `dirs` (each a shard folder or a folder of them), read and checked to be
/// the N shards of one run, in index order.
fn find_and_check(dirs: &[PathBuf], out: &Path) -> Result<Vec<ShardRun>> {
    let mut folders = Vec::new();
    for d in dirs {
        if d.join(MANIFEST_FILE).is_file() {
            folders.push(d.clone());
            continue;
        }
        let entries = std::fs::read_dir(d)
            .map_err(|e| UsageError::new(format!("{}: not a shard folder nor a folder of them ({e})", d.display())))?;
        let mut inside: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(MANIFEST_FILE).is_file())
            .collect();
        if inside.is_empty() {
            return Err(UsageError::new(format!("{}: holds no results folder (no {MANIFEST_FILE} in it or below)", d.display())).into());
        }
        inside.sort();
        folders.extend(inside);
    }
    if out.exists() {
        return Err(UsageError::new(format!("--out {}: already exists (merge never overwrites)", out.display())).into());
    }
    let mut by_index: BTreeMap<u32, Vec<ShardRun>> = BTreeMap::new();
    let mut first: Option<ShardInfo> = None;
    for folder in folders {
        let run = load_run(&folder)?;
        let info = run.manifest.shard.clone().ok_or_else(|| {
            UsageError::new(format!("{}: not a shard (its run had no --shard); merge joins the shards of one run", folder.display()))
        })?;
        if !(1..=info.count).contains(&info.index) || info.count > crate::plan::MAX_SHARDS {
            return Err(UsageError::new(format!(
                "{}: the manifest's shard {}/{} is out of range",
                folder.display(),
                info.index,
                info.count
            ))
            .into());
        }
        let origin = run
            .manifest
            .clock_origin
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .ok_or_else(|| UsageError::new(format!("{}: the manifest has no clock_origin (written by an older turnbench)", folder.display())))?;
        match &first {
            None => first = Some(info.clone()),
            Some(f) => {
                let differs = if f.run_id != info.run_id {
                    Some(format!("run id {:?}, not {:?}", info.run_id, f.run_id))
                } else if f.count != info.count {
                    Some(format!("{} shards, not {}", info.count, f.count))
                } else if f.plan_hash != info.plan_hash {
                    Some("other settings or data (plan hash differs)".to_string())
                } else {
                    None
                };
                if let Some(why) = differs {
                    return Err(UsageError::new(format!("{}: not a shard of the same run: {why}", folder.display())).into());
                }
            }
        }
        by_index.entry(info.index).or_default().push(ShardRun { info, run, origin });
    }
    let first = first.context("no shard folder")?;
    let missing: Vec<String> = (1..=first.count).filter(|i| !by_index.contains_key(i)).map(|i| i.to_string()).collect();
    if !missing.is_empty() {
        return Err(UsageError::new(format!(
            "run {:?}: shard{} {} of {} missing (found {})",
            first.run_id,
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            first.count,
            by_index.keys().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    let mut out = Vec::new();
    for (index, mut copies) in by_index {
        if copies.len() > 1 {
            // A retried shard (a Job's pod restarted) leaves its failed attempt beside it: keep the
            // one attempt that completed.
            let complete: Vec<usize> =
                (0..copies.len()).filter(|&i| copies[i].run.manifest.completed == Some(true)).collect();
            if complete.len() != 1 {
                let names: Vec<String> = copies.iter().map(|c| c.run.dir.display().to_string()).collect();
                return Err(UsageError::new(format!(
                    "shard {index} appears {} times ({}), {} of them complete: keep one",
                    copies.len(),
                    names.join(", "),
                    complete.len()
                ))
                .into());
            }
            let keep = copies.swap_remove(complete[0]);
            eprintln!("shard {index}: using {} (the attempt that completed)", keep.run.dir.display());
            copies = vec![keep];
        }
        out.extend(copies);
    }
    Ok(out)
}

/// The merged run's manifest: the first shard's, on the common clock, with the level windows,
/// tests, outcome and client ceilings of all shards.
fn merged_manifest(
    shards: &[ShardRun],
    common: jiff::Timestamp,
    windows: &[Vec<LevelWindow>],
    merged_from: Vec<MergedShard>,
) -> Result<Manifest> {
    let manifests: Vec<&Manifest> = shards.iter().map(|s| &s.run.manifest).collect();
    let mut m = manifests[0].clone();
    m.command_line = crate::plan::redacted_command_line();
    m.started_at = manifests.iter().map(|x| x.started_at.clone()).min().unwrap_or_default();
    m.clock_origin = Some(common.to_string());
    m.shard = None;
    m.interrupted = manifests.iter().any(|x| x.interrupted);
    m.completed = Some(manifests.iter().all(|x| x.completed == Some(true)));
    m.completed_at = manifests.iter().filter_map(|x| x.completed_at.clone()).max();
    m.server_died = manifests.iter().find_map(|x| x.server_died.clone());
    m.tests = manifests.iter().flat_map(|x| x.tests.iter().cloned()).collect();
    m.tests.sort_by_key(|t| t.test);
    // N clients side by side: the merged run's ceiling is the sum of theirs.
    let calibrations: Vec<&ClientCalibration> = manifests.iter().filter_map(|x| x.client_calibration.as_ref()).collect();
    m.client_calibration = (calibrations.len() == manifests.len()).then(|| ClientCalibration {
        concurrency: calibrations.iter().map(|c| c.concurrency).sum(),
        answer_tokens: calibrations[0].answer_tokens,
        seconds: calibrations.iter().map(|c| c.seconds).fold(0.0, f64::max),
        requests: calibrations.iter().map(|c| c.requests).sum(),
        requests_per_s: calibrations.iter().map(|c| c.requests_per_s).sum(),
        chunks_per_s: calibrations.iter().map(|c| c.chunks_per_s).sum(),
        cpu_ms_per_request: calibrations.iter().map(|c| c.cpu_ms_per_request).sum::<f64>() / calibrations.len() as f64,
    });
    if let Some(mut load) = LoadSettings::from_manifest(&m) {
        load.levels = merge_windows(windows);
        m.settings[SETTINGS_KEY] = serde_json::to_value(&load)?;
    }
    m.settings["cluster"]["merged_shards"] = shards.len().into();
    let conversations: Option<u64> =
        manifests.iter().map(|x| x.settings.pointer("/multi_user/conversations").and_then(|v| v.as_u64())).sum();
    if let Some(n) = conversations {
        m.settings["multi_user"]["conversations"] = n.into();
    }
    m.merged_from = merged_from;
    Ok(m)
}

/// The shards' windows of each level (same label), as one: from the first start to the last
/// end, offering what they offered together.
fn merge_windows(shards: &[Vec<LevelWindow>]) -> Vec<LevelWindow> {
    let mut out: Vec<LevelWindow> = Vec::new();
    for levels in shards {
        for w in levels {
            match out.iter_mut().find(|o| o.label == w.label) {
                None => out.push(w.clone()),
                Some(o) => {
                    o.start_ms = o.start_ms.min(w.start_ms);
                    o.stop_ms = o.stop_ms.max(w.stop_ms);
                    o.end_ms = o.end_ms.max(w.end_ms);
                    o.target_qps = match (o.target_qps, w.target_qps) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                    o.concurrency = match (o.concurrency, w.concurrency) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                    o.scheduled_conversations += w.scheduled_conversations;
                }
            }
        }
    }
    out.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(label: &str, start: f64, end: f64, qps: f64) -> LevelWindow {
        LevelWindow {
            label: label.into(),
            target_qps: Some(qps),
            concurrency: None,
            start_ms: start,
            stop_ms: end - 10.0,
            end_ms: end,
            scheduled_conversations: 5,
        }
    }

    #[test]
    fn windows_of_a_level_join_and_offer_together() {
        let merged = merge_windows(&[
            vec![window("qps-8", 100.0, 1100.0, 4.0), window("qps-16", 1200.0, 2200.0, 8.0)],
            vec![window("qps-8", 103.0, 1090.0, 4.0), window("qps-16", 1195.0, 2210.0, 8.0)],
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].label.as_str(), merged[0].start_ms, merged[0].end_ms), ("qps-8", 100.0, 1100.0));
        assert_eq!(merged[0].target_qps, Some(8.0));
        assert_eq!(merged[0].scheduled_conversations, 10);
        assert_eq!((merged[1].start_ms, merged[1].end_ms, merged[1].target_qps), (1195.0, 2210.0, Some(16.0)));
    }
}
