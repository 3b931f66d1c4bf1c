//! `summary.json`: the [`Summary`](crate::analysis::Summary), pretty-printed
//! (schema: `docs/summary.schema.json`).

use anyhow::Result;

use super::{Exporter, ReportInput, SUMMARY_FILE};

pub struct SummaryJson;

impl Exporter for SummaryJson {
    fn file_name(&self) -> String {
        SUMMARY_FILE.to_string()
    }

    fn export(&self, input: &ReportInput) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.write_to(input, &mut bytes)?;
        Ok(bytes)
    }

    /// Written as it is serialized: a long run's conversations are many.
    fn write_to(&self, input: &ReportInput, out: &mut dyn std::io::Write) -> Result<()> {
        serde_json::to_writer_pretty(&mut *out, input.summary)?;
        out.write_all(b"\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tests::{failed, rec};
    use crate::analysis::{summarize, Summary};
    use crate::core::record::Status;
    use crate::core::results::Manifest;

    #[test]
    fn summary_json_round_trips() {
        let records = vec![
            rec("a", 1, 100.0, 200.0, 100, 0),
            rec("a", 2, 20.0, 90.0, 150, 96),
            failed("b", 1, Status::Timeout, "t"),
        ];
        let manifest = Manifest { simulated: true, engine: "sim".into(), ..Default::default() };
        let summary = summarize(&records, &manifest);
        let input = ReportInput { records: &records, picks: &crate::report::Picks::of(&records), summary: &summary, manifest: &manifest, timeline: None, system: None };
        let bytes = SummaryJson.export(&input).unwrap();
        let back: Summary = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, summary);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["errors"][0]["status"], "timeout");
    }
}
