//! `turnbench completions` and `turnbench man`: both are generated from the clap definition in
//! `cli.rs`, so they can never drift from the flags the binary accepts.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "turnbench", &mut out);
    std::io::stdout().lock().write_all(&out).context("cannot write the completion script to stdout")
}

pub fn man(args: ManArgs) -> Result<()> {
    let command = Cli::command();
    match args.out_dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command).render(&mut out).context("cannot render the man page")?;
            std::io::stdout().lock().write_all(&out).context("cannot write the man page to stdout")
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            // One page per command and subcommand (turnbench.1, turnbench-run.1, …), as git does.
            clap_mangen::generate_to(command, &dir).with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            eprintln!("man pages written to {}", dir.display());
            Ok(())
        }
    }
}
