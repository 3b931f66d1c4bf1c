//! `turnbench sim`: a vLLM-compatible OpenAI server with a prefix cache and a latency model.

use anyhow::Result;

use crate::cli::SimArgs;

pub async fn serve_command(_args: SimArgs) -> Result<()> {
    anyhow::bail!("sim: not built yet")
}
