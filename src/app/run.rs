//! The other half of `main`: one function per subcommand, so the binary only parses the command
//! line and sets up tracing. The offline commands write to the streams they are given; the
//! servers run until SIGINT/SIGTERM. Like `main`, this is where `anyhow` is used: every layer
//! below reports its own error type.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::cli::{AuditCommand, ProxyArgs, RulesCommand, UpArgs};
use super::{commands, shutdown, App};
use crate::{config, proxy, serve};

/// `rawrxd rules …`: writes the report to `out` (or `err` when it is an error, then exit 1).
pub fn run_rules(command: RulesCommand, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let report = match command {
        RulesCommand::Check { files, rules } => commands::check(&files, &rules),
        RulesCommand::List { rules } => commands::list(&rules),
        RulesCommand::Test {
            input: _,
            request: Some(request),
            rules,
            model,
            endpoint,
            root: _,
        } => commands::test_request(&request, &rules, model.as_deref(), endpoint.as_deref()),
        RulesCommand::Test {
            input,
            request: None,
            rules,
            model,
            endpoint,
            root,
        } => commands::test(
            &input.unwrap_or_default(),
            &rules,
            model.as_deref().unwrap_or_default(),
            endpoint.as_deref().unwrap_or("generate"),
            root.as_deref(),
        ),
    };
    match report {
        Ok(text) => {
            let _ = writeln!(out, "{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            let _ = writeln!(err, "{text}");
            ExitCode::FAILURE
        }
    }
}

/// `rawrxd audit …`: paths come from the flags, else from the config (file and environment).
/// Lines go to `out`, the count and errors to `err` (so pipes and `--json` see only lines).
pub fn run_audit(command: AuditCommand, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
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
        .and_then(|proxy| commands::audit_tail(&proxy.log_dir, lines, follow, out).map(|()| None)),
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
                let _ = writeln!(out, "{lines}");
            }
            let _ = writeln!(err, "{count}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(text) => {
            let _ = writeln!(err, "error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// `rawrxd proxy`: config, listener, [`App::start`], the accept loop until SIGINT/SIGTERM,
/// then [`App::stop`].
pub fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
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
    let finished = runtime.block_on(proxy::run(listener, app.state.clone(), shutdown::signal()));
    if !finished.drained {
        tracing::warn!("exiting with requests still in flight");
    }
    app.stop();
    Ok(())
}

/// `rawrxd serve`: the model server until SIGINT/SIGTERM.
pub fn run_serve(args: serve::ServeArgs) -> anyhow::Result<()> {
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
pub fn run_up(args: UpArgs) -> anyhow::Result<()> {
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
    run_proxy(proxy_args)
}
