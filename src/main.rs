use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = turnbench::cli::Cli::parse();
    turnbench::main_with(cli)
}
