//! Logging setup: tracing to stderr, filtered by `RUST_LOG` (default `info`, with llama.cpp's
//! own log — target `llama-cpp-2`, very chatty at info while loading a model — at `warn`).
//! [`metrics`] is the Prometheus registry every part counts into (served at
//! `/rawrxd/metrics`).
//!
//! May use: nothing else in the crate. Used by every layer that counts.

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Colours only when stderr is a terminal.
pub fn init() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
