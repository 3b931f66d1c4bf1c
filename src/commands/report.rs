//! `turnbench report DIR [--compare OTHER]`: rebuilds every report of a results folder from its
//! `manifest.json` and `turns.jsonl` through the same writer a run uses.

use anyhow::Result;

use crate::cli::ReportArgs;
use crate::report::{compare_table, console_summary, load_run, write_comparison, write_reports};

pub fn report(args: ReportArgs) -> Result<()> {
    let run = load_run(&args.dir)?;
    let summary = write_reports(&run.dir, &run.manifest)?;
    println!("{}", console_summary(&summary));
    println!("reports written to {}", run.dir.display());

    if let Some(other_dir) = &args.compare {
        let (cmp, md, page) = write_comparison(&run.dir, &summary, other_dir)?;
        println!("{}", compare_table(&cmp));
        println!("comparison written to {}", md.display());
        println!("side-by-side page written to {}", page.display());
    }
    Ok(())
}
