//! rawrxd: a transparent hot-patching reverse proxy for local LLM servers, the
//! Ollama-compatible model server behind it, and the tooling around both.
//!
//! The binary (`src/main.rs`) only parses the command line, sets up tracing and calls one
//! function here per subcommand ([`run_proxy`], [`run_serve`], [`run_up`], [`run_rules`],
//! [`run_audit`], [`run_gguf`]). One folder per part; imports run one way, from the entry points down to
//! plain data (the layer list is in `ARCHITECTURE.md`):
//!
//! * [`app`] — the entry points: command line, offline commands, wiring of a full proxy;
//! * [`proxy`] — `rawrxd proxy`: accept loop, routing, upstream client, body wrappers, errors,
//!   and rawrxd's own `/rawrxd/*` endpoints;
//! * [`serve`] — `rawrxd serve`, the Ollama-compatible model server on llama.cpp;
//! * [`live`] — the live rule snapshot and the rule manager that rebuilds and swaps it;
//! * [`audit`] — where hits go: the bounded channel, the writer thread, the log formats;
//! * [`request`] — request-side behavior patches: aliases, system prompts, parameters, stops;
//! * [`patch`] — the response-side text pipeline and the re-framer that feeds it;
//! * [`paths`] — the path fixer behind `path` rules: workspace indexes, lookups, tool calls;
//! * [`store`] — SQLite: migrations, rule rows, switches, the corrections table;
//! * [`rules`] — the rule model, TOML parsing with locations, validation, detectors, globs;
//! * [`gguf`] — GGUF files: the strict reader (the gate before llama.cpp), the writer, and the
//!   `rawrxd gguf` tooling (inspect, hash, verify, set, diff, reversible weight patches);
//! * [`config`] — `rawrxd.toml`, `RAWRXD_*` and flags → validated settings;
//! * [`edge`] — shared by both ports: the guard (`Host`, `Origin`, tokens) and client protocols;
//! * [`telemetry`] — tracing set-up and the Prometheus metrics registry.

pub mod app;
pub mod audit;
pub mod config;
pub mod detect;
pub mod edge;
pub mod gguf;
pub mod live;
pub mod patch;
pub mod paths;
pub mod proxy;
pub mod request;
pub mod rules;
pub mod serve;
pub mod store;
pub mod telemetry;

pub use app::gguf::run_gguf;
pub use app::run::{run_audit, run_proxy, run_rules, run_serve, run_up};
pub use proxy::{run, ProxyState};
