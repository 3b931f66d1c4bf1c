//! turnbench: replay multi-turn conversations against an LLM server and report, turn by turn,
//! how fast it answered and how much of each prompt its prefix cache reused.
//!
//! `main.rs` only parses; [`run`] is the whole tool, so tests drive it in-process.

pub mod analysis;
pub mod cli;
pub mod client;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod models;
pub mod record;
pub mod replay;
pub mod report;
pub mod results;
pub mod runner;
pub mod schedule;
pub mod load;
pub mod sim;
pub mod template;
pub mod workload;

use std::process::ExitCode;

use anyhow::Result;

use cli::{Cli, Command};
pub use error::UsageError;

/// Runs one turnbench command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => runner::run_command(args).await,
        Command::Report(args) => report::report_command(args),
        Command::Sim(args) => sim::serve_command(args).await,
        Command::Setup(args) => models::setup_command(args).await,
        Command::Template(args) => template::render_command(args),
    }
}

/// Runs `cli` on a fresh runtime, prints any error with its causes on one line each, and maps it
/// to an exit code: 2 for bad input (flags, data files), 1 for everything else.
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
