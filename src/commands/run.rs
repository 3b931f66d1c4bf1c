//! `turnbench run`: the flags become a validated plan (every usage error before any process),
//! and the one driver runs it.

use anyhow::Result;

use crate::cli::RunArgs;
use crate::plan::Plan;

pub async fn run(args: RunArgs) -> Result<()> {
    let plan = Plan::build(&args).await?;
    crate::run::execute(plan).await.map(|_| ())
}
