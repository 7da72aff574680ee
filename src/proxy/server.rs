//! The accept loop: a capped number of client connections, each served as HTTP/1.1 or h2c
//! (prior knowledge), and a graceful shutdown that stops accepting, lets in-flight requests
//! finish, and gives up after the configured grace period.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::edge::listening_message;
use crate::proxy::route;
use crate::proxy::state::ProxyState;

/// How long a client may take to send a request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How a [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// True when every connection closed within the grace period.
    pub drained: bool,
}

/// Serves `listener` until `shutdown` resolves, then drains (see the module docs).
pub async fn run(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()>,
) -> Finished {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            "{} (upstream {})",
            listening_message("proxy", addr),
            state.upstream.url()
        );
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        // Take a connection slot first: at the cap, clients wait in the listen backlog.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = state.connection_slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        state
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| route::handle(state.clone(), request));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, "connection ended: {error}");
            }
            drop(permit);
        });
    }

    drop(listener);
    let open = graceful.count();
    tracing::info!("stopped accepting; waiting for {open} open connection(s) to finish");
    match tokio::time::timeout(state.config.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!("all connections finished");
            Finished { drained: true }
        }
        Err(_) => {
            tracing::warn!(
                "grace period of {} over; closing the remaining connections",
                humantime::format_duration(state.config.shutdown_grace)
            );
            Finished { drained: false }
        }
    }
}
