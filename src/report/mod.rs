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
pub mod picks;
pub mod plot;
pub mod resources;
pub mod svg;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use std::collections::BTreeMap;
use std::io::Write;

use crate::analysis::ab::ArmB;
use crate::analysis::resources::ResourceJoin;
use crate::analysis::{Summary, SummaryBuilder};
use crate::core::audit::{read_lines, Transcript, TRANSCRIPTS_FILE};
use crate::core::record::{for_each_record, read_records, TurnRecord};
use crate::core::results::{read_manifest, write_atomic, write_atomic_with, Manifest, AB_OFF_DIR, MANIFEST_FILE, TURNS_FILE};
use crate::core::timeline::Timeline;
use crate::core::UsageError;
use crate::metrics::monitor::SYSTEM_FILE;

pub use self::compare::{compare, compare_markdown, compare_table, Comparison, TurnComparison};
pub use self::console::{console_summary, progress_line, ProgressWindow};
pub use self::csv_out::{ConversationsCsv, TurnsCsv};
pub use self::html::{compare_page, HtmlReport, HTML_FILE};
pub use self::json::SummaryJson;
pub use self::markdown::{MarkdownReport, SIMULATED_BANNER};
use self::load::{LoadPlot, LOAD_PLOTS};
pub use self::picks::{Picker, Picks};
use self::plot::{ImageFormat, TtftByTurnPlot};
use self::resources::TimelinePlot;

pub const TURNS_CSV_FILE: &str = "turns.csv";
pub const CONVERSATIONS_CSV_FILE: &str = "conversations.csv";
pub const SUMMARY_FILE: &str = "summary.json";
pub const REPORT_FILE: &str = "report.md";

/// What every exporter reads.
#[derive(Clone, Copy)]
pub struct ReportInput<'a> {
    /// The run's records, with what the machine did during each joined on: read again, one at
    /// a time, by the exporters that list every one (`turns.csv`).
    pub records: &'a dyn RecordSource,
    /// The records the reports show one by one (bounded), picked in the same pass as the summary.
    pub picks: &'a Picks,
    pub summary: &'a Summary,
    pub manifest: &'a Manifest,
    pub timeline: Option<&'a Timeline>,
    /// `system.json` of the folder, when it has one (read as JSON: reports show what is there).
    pub system: Option<&'a serde_json::Value>,
}

/// The run's records, handed out one at a time (a results folder's `turns.jsonl`, or records in
/// memory).
pub trait RecordSource {
    fn for_each(&self, f: &mut dyn FnMut(&TurnRecord) -> Result<()>) -> Result<()>;
}

impl RecordSource for Vec<TurnRecord> {
    fn for_each(&self, f: &mut dyn FnMut(&TurnRecord) -> Result<()>) -> Result<()> {
        self.iter().try_for_each(f)
    }
}

/// `turns.jsonl` of a results folder, read line by line each time, with the timeline joined on.
pub struct TurnsFile<'a> {
    pub path: PathBuf,
    pub timeline: Option<&'a Timeline>,
}

impl TurnsFile<'_> {
    /// Every record; returns the reader's warnings (a truncated last line).
    pub fn read(&self, f: &mut dyn FnMut(&TurnRecord) -> Result<()>) -> Result<Vec<String>> {
        let mut join = self.timeline.map(ResourceJoin::new);
        for_each_record(&self.path, |mut r| {
            if let Some(join) = &mut join {
                join.join(&mut r);
            }
            f(&r)
        })
    }
}

impl RecordSource for TurnsFile<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&TurnRecord) -> Result<()>) -> Result<()> {
        self.read(f).map(drop)
    }
}

/// One output file of a results folder. No IO: returns the file's bytes, or writes them into a
/// writer (the files that list every record, so a long run's are never held whole).
pub trait Exporter {
    /// Path inside the results folder.
    fn file_name(&self) -> String;
    /// Whether this run has anything for it (a timeline plot needs samples, load plots levels).
    fn applies(&self, _input: &ReportInput) -> bool {
        true
    }
    fn export(&self, input: &ReportInput) -> Result<Vec<u8>>;
    /// The same bytes, into `out`.
    fn write_to(&self, input: &ReportInput, out: &mut dyn Write) -> Result<()> {
        Ok(out.write_all(&self.export(input)?)?)
    }
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

/// Builds every report of the results folder `dir` from its `turns.jsonl`, read one record at
/// a time (a run's records are never all in memory): joins the timeline on (when the run
/// sampled), computes the summary and the picks in one pass, then writes every exporter's file
/// atomically (`turns.csv` in a second pass). Returns the summary; a truncated last line is a
/// warning on stderr.
pub fn write_reports(dir: &Path, manifest: &Manifest) -> Result<Summary> {
    let timeline = Timeline::read(dir).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; reports leave resources out");
        None
    });
    let arm_b = read_arm_b(dir)?;
    let arm_b = arm_b.as_ref().map(|(records, identical_prompts)| ArmB { records, identical_prompts: *identical_prompts });
    let turns = TurnsFile { path: dir.join(TURNS_FILE), timeline: timeline.as_ref() };
    let mut builder = SummaryBuilder::new(manifest, arm_b);
    let mut picker = Picker::default();
    let warnings = turns.read(&mut |r| {
        builder.push(r);
        picker.push(r);
        Ok(())
    })?;
    let summary = builder.finish(timeline.as_ref());
    let picks = picker.finish();
    let system = read_system(dir);
    let input =
        ReportInput { records: &turns, picks: &picks, summary: &summary, manifest, timeline: timeline.as_ref(), system: system.as_ref() };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    write_exports(dir, &input)?;
    Ok(summary)
}

/// Writes every exporter that applies to `input` into `dir`, each file atomically.
pub fn write_exports(dir: &Path, input: &ReportInput) -> Result<()> {
    for exporter in all_exporters() {
        if !exporter.applies(input) {
            continue;
        }
        let name = exporter.file_name();
        write_atomic_with(&dir.join(&name), |out| exporter.write_to(input, out)).with_context(|| format!("cannot build {name}"))?;
    }
    Ok(())
}

/// The summary of the results folder `dir` (records read one at a time, no timeline).
pub fn summarize_dir(dir: &Path, manifest: &Manifest) -> Result<Summary> {
    let mut builder = SummaryBuilder::new(manifest, None);
    for_each_record(&dir.join(TURNS_FILE), |r| {
        builder.push(&r);
        Ok(())
    })?;
    Ok(builder.finish(None))
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

/// A results folder checked and its manifest read (the records stay in `turns.jsonl`, read one
/// at a time by whoever needs them).
pub struct LoadedRun {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl LoadedRun {
    pub fn turns(&self) -> PathBuf {
        self.dir.join(TURNS_FILE)
    }
}

/// Checks that `dir` is a results folder and reads `DIR/manifest.json`. A path that is not a
/// results folder is a [`UsageError`].
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
    Ok(LoadedRun { dir: dir.to_path_buf(), manifest })
}

/// Compares the run in `dir` (whose summary is `summary`) with the one in `other_dir`, and writes
/// `compare-<other>.md` and `compare-<other>.html` into `dir`; returns the comparison and both paths.
pub fn write_comparison(dir: &Path, summary: &Summary, other_dir: &Path) -> Result<(Comparison, PathBuf, PathBuf)> {
    let other = load_run(other_dir)?;
    let other_summary = summarize_dir(&other.dir, &other.manifest)?;
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
        write_turns(tmp.path(), &records);
        let s = write_reports(tmp.path(), &Manifest::default()).unwrap();
        assert_eq!(s.requests.failed, 1);
        let manifest = Manifest::default();
        let summary = crate::analysis::summarize(&records, &manifest);
        assert_eq!(s, summary, "read back one record at a time, the summary is that of the records");
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: &manifest, timeline: None, system: None };
        for e in all_exporters().into_iter().filter(|e| e.applies(&input)) {
            assert!(tmp.path().join(e.file_name()).is_file(), "{}", e.file_name());
        }
        // As the file holds them (implied fields filled in).
        let (settled, _) = read_records(&tmp.path().join(TURNS_FILE)).unwrap();
        let settled_input = ReportInput { records: &settled, ..input };
        assert_eq!(std::fs::read(tmp.path().join(TURNS_CSV_FILE)).unwrap(), TurnsCsv.export(&settled_input).unwrap(), "turns.csv, streamed");
        let leftovers: Vec<_> = walk(tmp.path()).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    /// `dir/turns.jsonl` holding `records`, as a run writes it.
    pub(crate) fn write_turns(dir: &Path, records: &[TurnRecord]) {
        let mut sink = crate::core::record::RecordSink::create(&dir.join(TURNS_FILE)).unwrap();
        for r in records {
            sink.append(r).unwrap();
        }
    }

    #[test]
    fn a_failed_export_leaves_no_file_and_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.csv");
        let err = write_atomic_with(&path, |out| {
            out.write_all(b"half")?;
            anyhow::bail!("the source broke")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("the source broke"), "{err:#}");
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "nothing left behind");
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
