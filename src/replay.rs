//! The replay engine.

use anyhow::Result;

use crate::cli::RunArgs;

pub async fn run_command(_args: RunArgs) -> Result<()> {
    anyhow::bail!("run: not built yet")
}
