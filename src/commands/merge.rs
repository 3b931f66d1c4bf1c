//! `turnbench merge DIR… --out DIR`: joins the shard folders of one sharded run (see
//! [`crate::merge`]) and prints the merged summary.

use anyhow::Result;

use crate::cli::MergeArgs;
use crate::report::console_summary;

pub fn merge(args: MergeArgs) -> Result<()> {
    let summary = crate::merge::merge(&args.dirs, &args.out)?;
    println!("{}", console_summary(&summary));
    if let Some(load) = &summary.load {
        println!("{}", crate::report::load::console_table(load));
    }
    println!("merged results: {}", args.out.display());
    Ok(())
}
