//! stub
pub async fn setup_command(_args: crate::cli::SetupArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
