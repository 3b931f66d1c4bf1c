//! Exporters: pure functions from records/summary to bytes; the caller writes files atomically.

use anyhow::Result;

use crate::cli::ReportArgs;

pub fn report_command(_args: ReportArgs) -> Result<()> {
    anyhow::bail!("report: not built yet")
}
