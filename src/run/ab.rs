//! `--ab prefix-caching`: arm A has run (the plan itself, caching on); arm B is the same engine
//! restarted with prefix caching off, sending arm A's exact recorded prompts (so answers cannot
//! differ between arms), its results in `<A>/ab-off/`. Then arm A's reports are written again,
//! now with the comparison (`summary.json` `ab`, the A/B section of `report.md`).

use std::path::Path;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::analysis::ab::headline;
use crate::plan::Plan;
use crate::report::{load_run, write_reports};

pub async fn arm_b(plan: &Plan, dir_a: &Path, stop: &CancellationToken, abort: &CancellationToken) -> Result<()> {
    if stop.is_cancelled() {
        return Ok(());
    }
    eprintln!("A/B: arm B — arm A's exact prompts again, prefix caching off");
    let b = plan.arm_b(dir_a)?;
    super::drive(&b, stop, abort).await?;
    let a = load_run(dir_a)?;
    let summary = write_reports(dir_a, &a.manifest)?;
    if let Some(ab) = &summary.ab {
        println!("{}", headline(ab));
    }
    println!("A/B results: {} (arm B in {})", dir_a.display(), dir_a.join(crate::core::results::AB_OFF_DIR).display());
    Ok(())
}
