//! The `rawrxd` binary: parses the command line, sets up tracing, loads the configuration and
//! hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use rawrxd::cli::{Cli, Command, ProxyArgs, RulesCommand};
use rawrxd::live::Live;
use rawrxd::{config, server, shutdown, telemetry, ProxyState};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command {
        Command::Proxy(args) => proxy(args),
        Command::Rules(command) => return rules(command),
        Command::Serve(args) => serve(args),
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
    let live = Live::load_dir(&config.rules_dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  - {e}")).collect();
        anyhow::anyhow!(
            "invalid rules in {}:\n{}",
            config.rules_dir.display(),
            lines.join("\n")
        )
    })?;
    tracing::info!(
        "{} rule(s) loaded from {}",
        live.pipeline.table().rules.len(),
        config.rules_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let state = Arc::new(ProxyState::with_rules(config, live));
        let finished = server::run(listener, state, shutdown::signal()).await;
        if !finished.drained {
            tracing::warn!("exiting with requests still in flight");
        }
        Ok(())
    })
}

fn serve(args: rawrxd::serve::ServeArgs) -> anyhow::Result<()> {
    use rawrxd::serve;
    let config = args
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid serve flags: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let state = Arc::new(serve::ServeState::new(&config));
        if config.preload {
            let (state, config) = (state.clone(), config.clone());
            tokio::spawn(async move {
                if let Err(e) = serve::preload(&state, &config).await {
                    tracing::error!("preload failed: {e}");
                }
            });
        }
        let finished = serve::run(listener, state, shutdown::signal(), config.shutdown_grace).await;
        if !finished.drained {
            tracing::warn!("exiting with requests still in flight");
        }
        Ok(())
    })
}
