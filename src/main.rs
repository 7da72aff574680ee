//! The `rawrxd` binary: parses the command line, sets up tracing and calls the library's entry
//! point for the subcommand (see `rawrxd::app::run`).

use std::process::ExitCode;

use clap::Parser;

use rawrxd::app::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    rawrxd::telemetry::init();
    let result = match cli.command {
        Command::Proxy(args) => rawrxd::run_proxy(args),
        Command::Serve(args) => rawrxd::run_serve(args),
        Command::Up(args) => rawrxd::run_up(args),
        Command::Rules(command) => {
            return rawrxd::run_rules(
                command,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )
        }
        Command::Gguf(command) => {
            return rawrxd::run_gguf(
                command,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )
        }
        Command::Audit(command) => {
            return rawrxd::run_audit(
                command,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
