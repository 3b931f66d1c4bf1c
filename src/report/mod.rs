//! Exporters: pure functions from the run's records, summary and timeline to bytes
//! (hyperfine-style); [`write_reports`] is the one writer, and it writes every file atomically.
//! `turnbench report` rebuilds every report of a results folder through the same writer.

mod cluster;
mod compare;
mod console;
mod csv_out;
pub(crate) mod fmt;
pub mod html;
mod json;
pub mod load;
mod markdown;
pub mod plot;
pub mod resources;
pub mod svg;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::analysis::resources::join_records;
use std::collections::BTreeMap;

use crate::analysis::ab::ArmB;
use crate::analysis::{summarize_run, Summary};
use crate::core::audit::{read_lines, Transcript, TRANSCRIPTS_FILE};
use crate::core::record::{read_records, TurnRecord};
use crate::core::results::{read_manifest, write_atomic, Manifest, AB_OFF_DIR, MANIFEST_FILE, TURNS_FILE};
use crate::core::timeline::Timeline;
use crate::core::UsageError;
use crate::metrics::monitor::SYSTEM_FILE;

pub use self::compare::{compare, compare_markdown, compare_table, Comparison, TurnComparison};
pub use self::console::{console_summary, progress_line};
pub use self::csv_out::{ConversationsCsv, TurnsCsv};
pub use self::html::{compare_page, HtmlReport, HTML_FILE};
pub use self::json::SummaryJson;
pub use self::markdown::{MarkdownReport, SIMULATED_BANNER};
use self::load::{LoadPlot, LOAD_PLOTS};
use self::plot::{ImageFormat, TtftByTurnPlot};
use self::resources::TimelinePlot;

pub const TURNS_CSV_FILE: &str = "turns.csv";
pub const CONVERSATIONS_CSV_FILE: &str = "conversations.csv";
pub const SUMMARY_FILE: &str = "summary.json";
pub const REPORT_FILE: &str = "report.md";

/// What every exporter reads.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    /// The run's records, with what the machine did during each joined on.
    pub records: &'a [TurnRecord],
    pub summary: &'a Summary,
    pub manifest: &'a Manifest,
    pub timeline: Option<&'a Timeline>,
    /// `system.json` of the folder, when it has one (read as JSON: reports show what is there).
    pub system: Option<&'a serde_json::Value>,
}

/// One output file of a results folder. No IO: returns the file's bytes.
pub trait Exporter {
    /// Path inside the results folder.
    fn file_name(&self) -> String;
    /// Whether this run has anything for it (a timeline plot needs samples, load plots levels).
    fn applies(&self, _input: &ReportInput) -> bool {
        true
    }
    fn export(&self, input: &ReportInput) -> Result<Vec<u8>>;
}

/// Every exporter `write_reports` runs, in write order.
pub fn all_exporters() -> Vec<Box<dyn Exporter>> {
    let mut out: Vec<Box<dyn Exporter>> =
        vec![Box::new(TurnsCsv), Box::new(ConversationsCsv), Box::new(SummaryJson), Box::new(MarkdownReport), Box::new(HtmlReport)];
    for format in [ImageFormat::Png, ImageFormat::Svg] {
        out.push(Box::new(TtftByTurnPlot(format)));
        out.push(Box::new(TimelinePlot(format)));
        for stem in LOAD_PLOTS {
            out.push(Box::new(LoadPlot { stem, format }));
        }
    }
    out
}

/// Reads the folder's timeline (when the run sampled), joins it onto `records` (taken, not
/// copied: a long run holds many), computes the summary once, and writes every exporter's file
/// into `dir`. Returns the summary.
pub fn write_reports(dir: &Path, mut records: Vec<TurnRecord>, manifest: &Manifest) -> Result<Summary> {
    let timeline = Timeline::read(dir).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; reports leave resources out");
        None
    });
    if let Some(t) = &timeline {
        join_records(&mut records, t);
    }
    let records = &records[..];
    let arm_b = read_arm_b(dir)?;
    let arm_b = arm_b.as_ref().map(|(records, identical_prompts)| ArmB { records, identical_prompts: *identical_prompts });
    let summary = summarize_run(records, manifest, timeline.as_ref(), arm_b);
    let system = read_system(dir);
    let input = ReportInput { records, summary: &summary, manifest, timeline: timeline.as_ref(), system: system.as_ref() };
    for exporter in all_exporters() {
        if !exporter.applies(&input) {
            continue;
        }
        let name = exporter.file_name();
        let bytes = exporter.export(&input).with_context(|| format!("cannot build {name}"))?;
        write_atomic(&dir.join(&name), &bytes)?;
    }
    Ok(summary)
}

/// Arm B of an A/B run (`DIR/ab-off/`), when there is one: its records, and whether every turn
/// both arms ran sent the same prompt (by the prompt hashes in both `transcripts.jsonl`).
fn read_arm_b(dir: &Path) -> Result<Option<(Vec<TurnRecord>, bool)>> {
    let b = dir.join(AB_OFF_DIR);
    if !b.join(TURNS_FILE).is_file() {
        return Ok(None);
    }
    let (records, _) = read_records(&b.join(TURNS_FILE))?;
    let hashes = |d: &Path| -> Result<BTreeMap<(String, u32), String>> {
        let lines: Vec<Transcript> = read_lines(&d.join(TRANSCRIPTS_FILE))?;
        Ok(lines.into_iter().filter(|t| !t.key.warmup).map(|t| ((t.key.conversation_id, t.key.turn), t.prompt_sha256)).collect())
    };
    let identical = match (hashes(dir), hashes(&b)) {
        (Ok(a), Ok(b)) => !b.is_empty() && b.iter().all(|(k, h)| a.get(k) == Some(h)),
        _ => false,
    };
    Ok(Some((records, identical)))
}

/// `dir/system.json` as JSON; `None` (with a warning when it is unreadable) when absent.
fn read_system(dir: &Path) -> Option<serde_json::Value> {
    let path = dir.join(SYSTEM_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    serde_json::from_str(&text)
        .map_err(|e| eprintln!("warning: {}: {e}; reports leave the system out", path.display()))
        .ok()
}

/// A results folder read back: records, manifest, and warnings (e.g. a truncated last line).
pub struct LoadedRun {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub records: Vec<TurnRecord>,
    pub warnings: Vec<String>,
}

/// Reads `DIR/manifest.json` and `DIR/turns.jsonl`. A path that is not a results folder is a
/// [`UsageError`].
pub fn load_run(dir: &Path) -> Result<LoadedRun> {
    if !dir.exists() {
        return Err(UsageError::new(format!("no such results folder: {}", dir.display())).into());
    }
    if !dir.is_dir() {
        return Err(UsageError::new(format!("not a results folder (not a directory): {}", dir.display())).into());
    }
    let turns = dir.join(TURNS_FILE);
    if !turns.is_file() {
        return Err(UsageError::new(format!("not a results folder: {} has no {TURNS_FILE}", dir.display())).into());
    }
    if !dir.join(MANIFEST_FILE).is_file() {
        return Err(UsageError::new(format!("not a results folder: {} has no {MANIFEST_FILE}", dir.display())).into());
    }
    let manifest = read_manifest(dir)?;
    let (records, warnings) = read_records(&turns)?;
    Ok(LoadedRun { dir: dir.to_path_buf(), manifest, records, warnings })
}

/// Compares the run in `dir` (whose summary is `summary`) with the one in `other_dir`, and writes
/// `compare-<other>.md` and `compare-<other>.html` into `dir`; returns the comparison and both paths.
pub fn write_comparison(dir: &Path, summary: &Summary, other_dir: &Path) -> Result<(Comparison, PathBuf, PathBuf)> {
    let other = load_run(other_dir)?;
    for w in &other.warnings {
        eprintln!("warning: {w}");
    }
    let other_summary = crate::analysis::summarize(&other.records, &other.manifest);
    let cmp = compare(&folder_name(dir), summary, &folder_name(other_dir), &other_summary);
    let md = dir.join(compare_file_name(other_dir));
    write_atomic(&md, compare_markdown(&cmp).as_bytes())?;
    let page = dir.join(compare_html_file_name(other_dir));
    write_atomic(&page, compare_page(&cmp, summary, &other_summary).as_bytes())?;
    Ok((cmp, md, page))
}

/// A folder's display name (its last component, made file-name safe).
pub fn folder_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = canonical.file_name().and_then(|n| n.to_str()).unwrap_or("other");
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect()
}

/// File name of the comparison written into DIR: `compare-<other folder name>.md`.
pub fn compare_file_name(other: &Path) -> String {
    format!("compare-{}.md", folder_name(other))
}

/// The same comparison as a page: `compare-<other folder name>.html`.
pub fn compare_html_file_name(other: &Path) -> String {
    format!("compare-{}.html", folder_name(other))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tests::{failed, rec};
    use crate::core::record::Status;

    #[test]
    fn write_reports_writes_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let records = vec![rec("a", 1, 100.0, 200.0, 100, 0), failed("a", 2, Status::Stream, "cut")];
        let s = write_reports(tmp.path(), records.clone(), &Manifest::default()).unwrap();
        assert_eq!(s.requests.failed, 1);
        let manifest = Manifest::default();
        let summary = crate::analysis::summarize(&records, &manifest);
        let input = ReportInput { records: &records, summary: &summary, manifest: &manifest, timeline: None, system: None };
        for e in all_exporters().into_iter().filter(|e| e.applies(&input)) {
            assert!(tmp.path().join(e.file_name()).is_file(), "{}", e.file_name());
        }
        let leftovers: Vec<_> = walk(tmp.path()).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn missing_folder_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_run(&tmp.path().join("nope")).err().unwrap();
        assert_eq!(crate::core::error::exit_code(&err), 2);
        let err = load_run(tmp.path()).err().unwrap();
        assert!(err.to_string().contains("no turns.jsonl"), "{err}");
        assert_eq!(crate::core::error::exit_code(&err), 2);
    }

    #[test]
    fn compare_file_is_named_after_other_folder() {
        assert_eq!(compare_file_name(Path::new("/x/2026-01-01_00-00-00_base")), "compare-2026-01-01_00-00-00_base.md");
    }
}
