//! The `rawrxd` binary: parses the command line, sets up tracing, loads the configuration and
//! hands over to the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use rawrxd::app::App;
use rawrxd::cli::{Cli, Command, ProxyArgs, RulesCommand};
use rawrxd::{config, server, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command {
        Command::Proxy(args) => proxy(args),
        Command::Rules(command) => return rules(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rawrxd rules …`: prints the report; exit 1 when it is an error.
#[allow(clippy::print_stdout, clippy::print_stderr)] // the binary's own output
fn rules(command: RulesCommand) -> ExitCode {
    use rawrxd::commands;
    let report = match command {
        RulesCommand::Check { files, rules } => commands::check(&files, &rules),
        RulesCommand::List { rules } => commands::list(&rules),
        RulesCommand::Test {
            input,
            rules,
            model,
            endpoint,
        } => commands::test(&input, &rules, &model, &endpoint),
    };
    match report {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let raw = config::load(args.config.as_deref(), &args.overrides())?;
    let config = raw.proxy.validate()?;
    let listen = config.listen;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen}"))?;
    let app = App::start(config)?;
    tracing::info!(
        "{} rule(s) live from {}",
        app.state.live.load().pipeline.table().rules.len(),
        app.state.config.rules_dir.display()
    );
    let finished = runtime.block_on(server::run(
        listener,
        app.state.clone(),
        shutdown::signal(),
    ));
    if !finished.drained {
        tracing::warn!("exiting with requests still in flight");
    }
    app.stop();
    Ok(())
}
