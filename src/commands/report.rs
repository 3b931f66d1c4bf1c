//! `turnbench report DIR [--compare OTHER]`: rebuilds every report of a results folder from its
//! `manifest.json` and `turns.jsonl` through the same writer a run uses.

use anyhow::Result;

use crate::analysis::summarize;
use crate::cli::ReportArgs;
use crate::core::results::write_atomic;
use crate::report::{
    compare, compare_file_name, compare_html_file_name, compare_markdown, compare_page, compare_table, console_summary,
    folder_name, load_run, write_reports,
};

pub fn report(args: ReportArgs) -> Result<()> {
    let run = load_run(&args.dir)?;
    for w in &run.warnings {
        eprintln!("warning: {w}");
    }
    let summary = write_reports(&run.dir, &run.records, &run.manifest)?;
    println!("{}", console_summary(&summary));
    println!("reports written to {}", run.dir.display());

    if let Some(other_dir) = &args.compare {
        let other = load_run(other_dir)?;
        for w in &other.warnings {
            eprintln!("warning: {w}");
        }
        let other_summary = summarize(&other.records, &other.manifest);
        let cmp = compare(&folder_name(&run.dir), &summary, &folder_name(other_dir), &other_summary);
        println!("{}", compare_table(&cmp));
        let path = run.dir.join(compare_file_name(other_dir));
        write_atomic(&path, compare_markdown(&cmp).as_bytes())?;
        println!("comparison written to {}", path.display());
        let page = run.dir.join(compare_html_file_name(other_dir));
        write_atomic(&page, compare_page(&cmp, &summary, &other_summary).as_bytes())?;
        println!("side-by-side page written to {}", page.display());
    }
    Ok(())
}
