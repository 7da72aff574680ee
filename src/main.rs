//! The `rawrxd` binary: parses the command line, sets up tracing, loads the configuration and
//! hands over to the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use rawrxd::app::App;
use rawrxd::cli::{AuditCommand, Cli, Command, ProxyArgs, RulesCommand};
use rawrxd::{config, server, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command {
        Command::Proxy(args) => proxy(args),
        Command::Rules(command) => return rules(command),
        Command::Audit(command) => return audit(command),
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

/// `rawrxd audit …`: paths come from the flags, else from the config (file and environment).
#[allow(clippy::print_stdout, clippy::print_stderr)] // the binary's own output
fn audit(command: AuditCommand) -> ExitCode {
    use rawrxd::commands;
    let paths = |config: Option<&std::path::Path>, overrides: config::ProxyOverrides| {
        config::load(config, &overrides).map(|raw| raw.proxy)
    };
    let result = match command {
        AuditCommand::Tail {
            lines,
            follow,
            log_dir,
            config,
        } => paths(
            config.as_deref(),
            config::ProxyOverrides {
                log_dir,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
        .and_then(|proxy| {
            commands::audit_tail(&proxy.log_dir, lines, follow, &mut std::io::stdout().lock())
                .map(|()| None)
        }),
        AuditCommand::Search {
            query,
            rule,
            since,
            limit,
            json,
            db,
            config,
        } => paths(
            config.as_deref(),
            config::ProxyOverrides {
                db,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
        .and_then(|proxy| {
            commands::audit_search(
                &proxy.db,
                &query.join(" "),
                rule,
                since.as_deref(),
                limit,
                json,
            )
            .map(Some)
        }),
    };
    match result {
        Ok(Some(text)) => {
            // The count goes to stderr, so stdout holds only lines (for pipes and --json).
            let (lines, count) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
            if !lines.is_empty() {
                println!("{lines}");
            }
            eprintln!("{count}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(text) => {
            eprintln!("error: {text}");
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
    let finished = runtime.block_on(server::run(listener, app.state.clone(), shutdown::signal()));
    if !finished.drained {
        tracing::warn!("exiting with requests still in flight");
    }
    app.stop();
    Ok(())
}
