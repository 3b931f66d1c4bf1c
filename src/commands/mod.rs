//! The commands: each parses nothing and decides little; it turns its clap arguments into the
//! layers' inputs and delegates (`run` → plan → driver; `report` → the writer).

mod merge;
mod report;
mod shell;
mod run;
mod setup;
mod sim;
mod template;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::core::error;

pub use sim::sim_config;

/// Runs one turnbench command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Report(args) => report::report(args),
        Command::Merge(args) => merge::merge(args),
        Command::Sim(args) => sim::sim(args).await,
        Command::Setup(args) => setup::setup(args).await,
        Command::Template(args) => template::template(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    }
}

/// Runs `cli` on a fresh runtime, prints any error with its causes on one line each, and maps it
/// to an exit code: 2 for bad input (flags, data files), 130 for Ctrl-C, 1 for everything else.
pub fn main_with(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(error::exit_code(&err))
        }
    }
}
