//! `--endpoint A --endpoint B…`: the run has gone against A; each further endpoint gets A's exact
//! recorded prompts (so the answers in the history are the same for all), its results in
//! `<A>/vs-<label>/`, and `<A>/compare-vs-<label>.md|.html` sets the two side by side.

use std::path::Path;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::plan::{EndpointArm, Plan};
use crate::report::{compare_table, load_run, summarize_dir, write_comparison};

pub async fn arm(plan: &Plan, dir_a: &Path, arm: &EndpointArm, stop: &CancellationToken, abort: &CancellationToken) -> Result<()> {
    if stop.is_cancelled() {
        return Ok(());
    }
    eprintln!("compare: {} ({}) — the same prompts again", arm.label, arm.url);
    let b = plan.arm_endpoint(dir_a, arm)?;
    let dir_b = super::drive(&b, stop, abort).await?;
    let Some(dir_b) = dir_b else { return Ok(()) };
    // The run's own reports stand as written; its summary is only read here.
    let a = load_run(dir_a)?;
    let summary = summarize_dir(&a.dir, &a.manifest)?;
    let (cmp, md, page) = write_comparison(dir_a, &summary, &dir_b)?;
    println!("{}", compare_table(&cmp));
    println!("comparison: {} and {}", md.display(), page.display());
    Ok(())
}
