//! `turns.csv` (one flat row per record) and `conversations.csv` (one row per conversation).
//!
//! Each file is defined by one column list, `(header, value)`, so a header and its values can
//! never drift apart. Unknown values are empty cells; lists (`tags`, `rag_actions`) are joined
//! with `;`; floats are written in full precision.

use std::io::Write;

use anyhow::Result;

use super::{Exporter, ReportInput, CONVERSATIONS_CSV_FILE, TURNS_CSV_FILE};
use crate::analysis::{record_reuse_pct, ConversationStats};
use crate::core::record::TurnRecord;

fn o<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

type Column<T> = (&'static str, fn(&T) -> String);

/// Every `TurnRecord` field except the raw chunk list (its length is `content_chunks`), plus
/// `observed_reuse_tokens` and `reuse_pct`.
pub static TURN_COLUMNS: &[Column<TurnRecord>] = &[
    ("test", |r| r.test.to_string()),
    ("conversation_id", |r| r.conversation_id.clone()),
    ("tags", |r| r.tags.join(";")),
    ("turn", |r| r.turn.to_string()),
    ("warmup", |r| r.warmup.to_string()),
    ("level", |r| o(r.level.as_ref())),
    ("session", |r| o(r.session)),
    ("rag_phase", |r| o(r.rag_phase.map(|p| p.as_str()))),
    ("rag_actions", |r| r.rag_actions.join(";")),
    ("max_tokens", |r| r.max_tokens.to_string()),
    ("status", |r| r.status.as_str().to_string()),
    ("http_status", |r| o(r.http_status)),
    ("error", |r| o(r.error.as_ref())),
    ("scheduled_ms", |r| r.timing.scheduled_ms.to_string()),
    ("sent_ms", |r| r.timing.sent_ms.to_string()),
    ("first_token_ms", |r| o(r.timing.first_token_ms)),
    ("end_ms", |r| r.timing.end_ms.to_string()),
    ("content_chunks", |r| r.timing.content_chunk_ms.len().to_string()),
    ("queue_ms", |r| r.derived.queue_ms.to_string()),
    ("ttft_ms", |r| o(r.derived.ttft_ms)),
    ("e2e_ms", |r| r.derived.e2e_ms.to_string()),
    ("latency_from_schedule_ms", |r| r.derived.latency_from_schedule_ms.to_string()),
    ("tpot_ms", |r| o(r.derived.tpot_ms)),
    ("itl_mean_ms", |r| o(r.derived.itl_mean_ms)),
    ("output_tps", |r| o(r.derived.output_tps)),
    ("decode_tps", |r| o(r.derived.decode_tps)),
    ("prompt_tokens", |r| o(r.usage.prompt_tokens)),
    ("completion_tokens", |r| o(r.usage.completion_tokens)),
    ("cached_tokens", |r| o(r.usage.cached_tokens)),
    ("output_chunks", |r| r.output_chunks.to_string()),
    ("server_hits", |r| o(r.cache.server_hits)),
    ("server_queries", |r| o(r.cache.server_queries)),
    ("common_prefix_tokens", |r| o(r.cache.common_prefix_tokens)),
    ("expected_reusable_tokens", |r| o(r.cache.expected_reusable_tokens)),
    ("previous_prompt_tokens", |r| o(r.cache.previous_prompt_tokens)),
    ("block_size", |r| o(r.cache.block_size)),
    ("reuse_flag", |r| o(r.cache.flag.map(|f| f.as_str()))),
    ("observed_reuse_tokens", |r| o(r.observed_reuse())),
    ("reuse_pct", |r| o(record_reuse_pct(r))),
    ("gpu_util_mean_pct", |r| o(r.resources.as_ref().and_then(|x| x.gpu_util_mean_pct))),
    ("gpu_util_max_pct", |r| o(r.resources.as_ref().and_then(|x| x.gpu_util_max_pct))),
    ("gpu_memory_peak_mib", |r| o(r.resources.as_ref().and_then(|x| x.gpu_memory_peak_mib))),
    ("engine_cpu_mean_pct", |r| o(r.resources.as_ref().and_then(|x| x.engine_cpu_mean_pct))),
    ("kv_cache_usage_max_pct", |r| o(r.resources.as_ref().and_then(|x| x.kv_cache_usage_max_pct))),
];

pub static CONVERSATION_COLUMNS: &[Column<ConversationStats>] = &[
    ("test", |c| c.test.to_string()),
    ("conversation_id", |c| c.conversation_id.clone()),
    ("level", |c| o(c.level.as_ref())),
    ("session", |c| o(c.session)),
    ("tags", |c| c.tags.join(";")),
    ("turns", |c| c.turns.to_string()),
    ("turns_completed", |c| c.turns_completed.to_string()),
    ("failed_turns", |c| c.failed_turns.to_string()),
    ("prompt_tokens", |c| c.prompt_tokens.to_string()),
    ("cached_tokens", |c| c.cached_tokens.to_string()),
    ("output_tokens", |c| c.output_tokens.to_string()),
    ("ttft_first_ms", |c| o(c.ttft_first_ms)),
    ("ttft_later_mean_ms", |c| o(c.ttft_later_mean_ms)),
    ("e2e_sum_ms", |c| c.e2e_sum_ms.to_string()),
    ("status", |c| c.status.as_str().to_string()),
];

/// Writes the header and then each row `each` hands over, into `out`.
fn write_csv<T: ?Sized>(
    columns: &[Column<T>],
    out: &mut dyn Write,
    each: impl FnOnce(&mut dyn FnMut(&T) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(columns.iter().map(|(h, _)| *h))?;
    each(&mut |row| Ok(w.write_record(columns.iter().map(|(_, f)| f(row)))?))?;
    w.flush()?;
    Ok(())
}

fn to_bytes(write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write(&mut out)?;
    Ok(out)
}

/// `turns.csv`: every record, warm-ups included (see the `warmup` column).
pub struct TurnsCsv;

impl Exporter for TurnsCsv {
    fn file_name(&self) -> String {
        TURNS_CSV_FILE.to_string()
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        to_bytes(|out| self.write_to(input, out))
    }

    /// Row by row as the records are read: a long run's file is never held whole.
    fn write_to(&self, input: &ReportInput, out: &mut dyn Write) -> Result<()> {
        write_csv(TURN_COLUMNS, out, |row| input.records.for_each(row))
    }
}

/// `conversations.csv`: one row per replayed conversation (warm-ups excluded).
pub struct ConversationsCsv;

impl Exporter for ConversationsCsv {
    fn file_name(&self) -> String {
        CONVERSATIONS_CSV_FILE.to_string()
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        to_bytes(|out| self.write_to(input, out))
    }

    fn write_to(&self, input: &ReportInput, out: &mut dyn Write) -> Result<()> {
        write_csv(CONVERSATION_COLUMNS, out, |row| input.summary.conversations.iter().try_for_each(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summarize;
    use crate::analysis::tests::{failed, rec};
    use crate::core::record::{ReuseFlag, Status};
    use crate::core::results::Manifest;

    fn parse(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::Reader::from_reader(bytes);
        let headers = r.headers().unwrap().iter().map(str::to_string).collect();
        let rows = r.records().map(|x| x.unwrap().iter().map(str::to_string).collect()).collect();
        (headers, rows)
    }

    #[test]
    fn turns_csv_has_a_flat_row_per_record() {
        let mut a = rec("a, \"quoted\"", 2, 50.0, 150.0, 1100, 992);
        a.tags = vec!["qa".into(), "long".into()];
        a.cache.flag = Some(ReuseFlag::CapacityEviction);
        let records = vec![a, failed("b", 1, Status::Http5xx, "503: busy")];
        let summary = summarize(&records, &Manifest::default());
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: &Manifest::default(), timeline: None, system: None };
        let bytes = TurnsCsv.export(&input).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("test,conversation_id,tags,turn,warmup,level,session,rag_phase,"), "{text}");
        assert!(!text.contains("content_chunk_ms"), "no raw chunk list");
        let (headers, rows) = parse(&bytes);
        assert_eq!(rows.len(), 2);
        let row = |i: usize, col: &str| rows[i][headers.iter().position(|h| h == col).unwrap()].clone();
        assert_eq!(row(0, "conversation_id"), "a, \"quoted\"");
        assert_eq!(row(0, "tags"), "qa;long");
        assert_eq!(row(0, "ttft_ms"), "50");
        assert_eq!(row(0, "cached_tokens"), "992");
        assert_eq!(row(0, "reuse_flag"), "capacity_eviction");
        assert_eq!(row(0, "content_chunks"), "5");
        assert_eq!(row(1, "status"), "http_5xx");
        assert_eq!(row(1, "error"), "503: busy");
        assert_eq!(row(1, "ttft_ms"), "");
    }

    #[test]
    fn conversations_csv_has_a_row_per_conversation() {
        let records = vec![
            rec("a", 1, 100.0, 200.0, 100, 0),
            rec("a", 2, 20.0, 90.0, 150, 96),
            failed("a", 3, Status::Timeout, "t"),
        ];
        let summary = summarize(&records, &Manifest::default());
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: &Manifest::default(), timeline: None, system: None };
        let bytes = ConversationsCsv.export(&input).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "test,conversation_id,level,session,tags,turns,turns_completed,failed_turns,prompt_tokens,cached_tokens,output_tokens,ttft_first_ms,ttft_later_mean_ms,e2e_sum_ms,status"
        );
        assert_eq!(lines.next().unwrap(), "0,a,,,qa,3,2,1,250,96,20,100,20,290,partial");
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn empty_input_still_has_headers() {
        let summary = summarize(&[], &Manifest::default());
        let input = ReportInput { records: &Vec::new(), picks: &crate::report::Picks::default(), summary: &summary, manifest: &Manifest::default(), timeline: None, system: None };
        let (h, rows) = parse(&TurnsCsv.export(&input).unwrap());
        assert_eq!((h.len(), rows.len()), (TURN_COLUMNS.len(), 0));
    }
}
