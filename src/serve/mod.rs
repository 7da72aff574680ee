//! `rawrxd serve`: an Ollama-compatible GGUF model server on llama.cpp (crate `llama-cpp-2`).
//!
//! The data path, in order: [`http`] accepts and routes; [`api`] (Ollama's `/api/*`) and
//! [`openai`] (`/v1/*`) parse requests and shape responses; [`models`] finds model files and
//! loads them on first use; [`template`] renders chat messages into a prompt; [`options`]
//! turns Ollama options into sampling settings; the [`engine`] of each loaded model runs
//! continuous batching on its own thread and streams text back, cut at [`stop`] sequences.
//! [`gguf`] reads model metadata without loading the model. Beside the data path, [`manage`]
//! answers pull/create/copy/delete/blob requests by changing the [`registry`] (named
//! manifests and content-addressed blobs in the models directory).

pub mod api;
pub mod engine;
pub mod gguf;
pub mod http;
pub mod manage;
pub mod models;
pub mod openai;
pub mod options;
pub mod registry;
pub mod stop;
pub mod template;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use engine::EngineConfig;
pub use http::{run, Finished};
use models::Models;

/// Shared by every request.
pub struct ServeState {
    pub models: Models,
    /// True until `--preload` has loaded its models (`/health` answers 503 meanwhile).
    pub preloading: std::sync::atomic::AtomicBool,
    /// Largest request body accepted (413 beyond).
    pub max_body: usize,
    /// Downloads and uploads in progress (one at a time per file).
    pub in_flight: std::sync::Arc<manage::InFlight>,
}

/// Validated settings of `rawrxd serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub models_dir: Option<PathBuf>,
    pub model_paths: Vec<PathBuf>,
    pub engine: EngineConfig,
    pub max_body: usize,
    pub preload: bool,
    pub shutdown_grace: Duration,
}

impl ServeState {
    pub fn new(config: &ServeConfig) -> Self {
        Self {
            models: Models::new(
                config.models_dir.clone(),
                config.model_paths.clone(),
                config.engine.clone(),
            ),
            max_body: config.max_body,
            in_flight: std::sync::Arc::default(),
            preloading: std::sync::atomic::AtomicBool::new(config.preload),
        }
    }
}

/// The default models directory: `$RAWRXD_MODELS`, else `$XDG_DATA_HOME/rawrxd/models`, else
/// `~/.local/share/rawrxd/models`.
pub fn default_models_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("rawrxd").join("models"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/rawrxd/models"))
}

/// Flags of `rawrxd serve` (each also read from a `RAWRXD_SERVE_*` variable).
#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(
        long,
        value_name = "ADDR",
        env = "RAWRXD_SERVE_LISTEN",
        default_value = "127.0.0.1:11434"
    )]
    pub listen: String,

    #[command(flatten)]
    pub engine: EngineFlags,
}

/// The model and engine flags `rawrxd serve` and `rawrxd up` share.
#[derive(Debug, Args, Default, Clone)]
pub struct EngineFlags {
    /// Directory of *.gguf models [default: $XDG_DATA_HOME/rawrxd/models or ~/.local/share/rawrxd/models]
    #[arg(long, value_name = "DIR", env = "RAWRXD_SERVE_MODELS")]
    pub models: Option<PathBuf>,

    /// A GGUF file to serve, named after its file stem (repeatable)
    #[arg(long = "model", value_name = "PATH")]
    pub model: Vec<PathBuf>,

    /// Sequence slots per loaded model (requests decoded together)
    #[arg(
        long,
        value_name = "N",
        env = "RAWRXD_SERVE_PARALLEL",
        default_value_t = 4
    )]
    pub parallel: u32,

    /// CPU threads for inference [default: physical cores]
    #[arg(long, value_name = "N", env = "RAWRXD_SERVE_THREADS")]
    pub threads: Option<u32>,

    /// Context length of each slot (the largest num_ctx a request gets)
    #[arg(long, value_name = "TOKENS", env = "RAWRXD_SERVE_CTX", default_value_t = options::DEFAULT_NUM_CTX)]
    pub ctx_size: u32,

    /// Requests that may wait for a slot; beyond that the server answers 503
    #[arg(
        long,
        value_name = "N",
        env = "RAWRXD_SERVE_QUEUE",
        default_value_t = 64
    )]
    pub queue: usize,

    /// Load the --model files at start (and keep them loaded) instead of on first use
    #[arg(long)]
    pub preload: bool,
}

impl ServeArgs {
    pub fn validate(&self) -> Result<ServeConfig, String> {
        let mut errors = Vec::new();
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| errors.push(format!("--listen {:?}: {e}", self.listen)))
            .ok();
        if self.engine.parallel == 0 || self.engine.parallel > 256 {
            errors.push("--parallel must be between 1 and 256".into());
        }
        if self.engine.ctx_size < 64 {
            errors.push("--ctx-size must be at least 64".into());
        }
        for path in &self.engine.model {
            if !path.is_file() {
                errors.push(format!("--model {}: no such file", path.display()));
            }
        }
        let threads = self
            .engine
            .threads
            .unwrap_or_else(|| models::physical_cores() as u32)
            .clamp(1, 1024);
        match (listen, errors.is_empty()) {
            (Some(listen), true) => Ok(ServeConfig {
                listen,
                models_dir: self.engine.models.clone().or_else(default_models_dir),
                model_paths: self.engine.model.clone(),
                engine: EngineConfig {
                    parallel: self.engine.parallel,
                    ctx_per_slot: self.engine.ctx_size,
                    batch: 512,
                    threads: threads as i32,
                    queue: self.engine.queue,
                },
                max_body: 100 << 20,
                preload: self.engine.preload,
                shutdown_grace: Duration::from_secs(30),
            }),
            _ => Err(errors.join("; ")),
        }
    }
}

/// Flags of `rawrxd up`: every proxy flag, and serve's flags with serve's address as
/// `--serve-listen` (the proxy's upstream; `--listen` is the proxy's).
#[derive(Debug, Args, Default)]
pub struct UpArgs {
    #[command(flatten)]
    pub proxy: crate::cli::ProxyArgs,

    /// Address `serve` listens on; the proxy forwards to it
    #[arg(
        long,
        value_name = "ADDR",
        env = "RAWRXD_SERVE_LISTEN",
        default_value = "127.0.0.1:11434"
    )]
    pub serve_listen: String,

    #[command(flatten)]
    pub engine: EngineFlags,
}

impl UpArgs {
    /// The serve half, as `rawrxd serve` flags.
    pub fn serve_args(&self) -> ServeArgs {
        ServeArgs {
            listen: self.serve_listen.clone(),
            engine: self.engine.clone(),
        }
    }
}

/// Starts `--preload` in the background (logs a failure).
pub fn spawn_preload(state: std::sync::Arc<ServeState>, config: ServeConfig) {
    tokio::spawn(async move {
        if let Err(e) = preload(&state, &config).await {
            tracing::error!("preload failed: {e}");
        }
    });
}

/// Loads the `--model` files now, kept loaded forever (`--preload`); `/health` turns 200
/// when this returns.
pub async fn preload(state: &ServeState, config: &ServeConfig) -> Result<(), String> {
    let result = preload_all(state, config).await;
    state
        .preloading
        .store(false, std::sync::atomic::Ordering::Release);
    result
}

async fn preload_all(state: &ServeState, config: &ServeConfig) -> Result<(), String> {
    for path in &config.model_paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        state
            .models
            .load(&name, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
