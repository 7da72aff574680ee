//! rawrxd: a transparent hot-patching reverse proxy for local LLM servers.
//!
//! The binary (`src/main.rs`) only parses the command line, sets up tracing and calls into
//! this library. The proxy's data path, in the order a request travels it:
//!
//! * [`server`] accepts connections (capped), serves HTTP/1.1 and h2c, drains on shutdown;
//! * [`guard`] refuses what a browser page or a LAN peer must not do (`Host`, `Origin`,
//!   tokens) before anything else runs, on the proxy's port and on serve's;
//! * [`route`] decides between rawrxd's own endpoints ([`admin`]) and forwarding;
//! * [`upstream`] rewrites the request for the upstream and sends it over a pooled client;
//! * [`body`] wraps both bodies: the request body is size-limited, the response body is
//!   streamed through frame by frame and closed with an in-band error if the upstream dies;
//! * [`wire`] knows the client protocols (Ollama NDJSON, OpenAI SSE) and their error shapes;
//! * [`rewrite`] finds the model's text in NDJSON lines, SSE events and JSON bodies and runs it
//!   through [`patch`], the leak-free streaming rule pipeline built from [`rules`] and held in
//!   the [`live`] snapshot;
//! * [`error`] maps every request-path failure to one HTTP status.
//!
//! [`serve`] is `rawrxd serve`, the Ollama-compatible model server on llama.cpp.
//!
//! [`config`] and [`cli`] turn defaults, `rawrxd.toml`, `RAWRXD_*` and flags into one
//! validated [`config::ProxyConfig`].

pub mod admin;
pub mod app;
pub mod audit;
pub mod body;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod guard;
pub mod live;
pub mod metrics;
pub mod patch;
pub mod reload;
pub mod rewrite;
pub mod route;
pub mod rules;
pub mod serve;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod wire;

pub use server::run;
pub use state::ProxyState;
