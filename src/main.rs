//! The `rawrxd` binary: parses the command line, sets up tracing, loads the configuration and
//! hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

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
        Command::Serve(args) => serve(args),
        Command::Up(args) => up(args),
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

fn serve(args: rawrxd::serve::ServeArgs) -> anyhow::Result<()> {
    use rawrxd::serve;
    let config = args
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid serve configuration: {e}"))?;
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
            serve::spawn_preload(state.clone(), config.clone());
        }
        let finished = serve::run(listener, state, shutdown::signal(), config.shutdown_grace).await;
        if !finished.drained {
            tracing::warn!("exiting with requests still in flight");
        }
        Ok(())
    })
}

/// `rawrxd up`: `serve` on its own runtime thread, then the proxy (exactly as `rawrxd proxy`)
/// with serve's bound address as its upstream. The proxy owns shutdown: when it has drained,
/// the process exits and serve with it.
fn up(args: rawrxd::serve::UpArgs) -> anyhow::Result<()> {
    use rawrxd::serve;
    let mut config = args
        .serve_args()
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid serve configuration: {e}"))?;
    // Serve accepts the browser origins its proxy lets through (the proxy checked them).
    let proxy_config = config::load(args.proxy.config.as_deref(), &args.proxy.overrides())?
        .proxy
        .validate()?;
    config.access.allow_origins_of(&proxy_config.access);
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("rawrxd-serve".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let state = Arc::new(serve::ServeState::new(&config));
                if config.preload {
                    serve::spawn_preload(state.clone(), config.clone());
                }
                let _ = ready_tx.send(Ok(()));
                serve::run(
                    listener,
                    state,
                    std::future::pending(),
                    config.shutdown_grace,
                )
                .await;
            });
        })
        .context("cannot start the serve thread")?;
    ready_rx
        .recv()
        .context("the serve thread died")?
        .map_err(|e| anyhow::anyhow!("cannot start serve: {e}"))?;
    let mut proxy_args = args.proxy;
    if let Some(upstream) = &proxy_args.upstream {
        tracing::warn!("--upstream {upstream} ignored: `rawrxd up` proxies to its own serve");
    }
    proxy_args.upstream = Some(format!("http://{addr}"));
    proxy(proxy_args)
}
