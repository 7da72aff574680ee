//! `rawrxd serve`: an Ollama-compatible GGUF model server on llama.cpp (crate `llama-cpp-2`).
//!
//! The data path, in order: [`http`] accepts and routes; [`api`] (Ollama's `/api/*`) and
//! [`openai`] (`/v1/*`) parse requests and shape responses; [`models`] finds model files and
//! loads them on first use; [`template`] renders chat messages into a prompt ([`tools`]: Jinja
//! chat templates, tool-call parsing, forcing grammars); [`options`] turns Ollama options into
//! sampling settings; the [`engine`] of each loaded model runs
//! continuous batching on its own thread and streams text back, cut at [`stop`] sequences.
//! [`crate::gguf`] reads model metadata without loading the model. Beside the data path, [`manage`]
//! answers pull/create/copy/delete/blob requests by changing the [`registry`] (named
//! manifests and content-addressed blobs in the models directory), reading server-side files
//! only through [`imports`] (inside `serve.import_dirs`) and the network only through
//! [`egress`] (no loopback, private or metadata addresses unless allowed).
//!
//! May use: `gguf`, `config`, `edge`. Never the proxy's parts: `rawrxd up` joins the two in
//! `app`. Used by `app`.

pub mod api;
pub mod calls;
pub mod egress;
pub mod engine;
pub mod fit;
pub mod http;
pub mod imports;
pub mod manage;
pub mod models;
pub mod openai;
pub mod options;
pub mod registry;
pub mod stop;
pub mod template;
pub mod tools;

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
    /// Tokens and the browser policy, checked before any handler (see [`crate::edge::guard`]).
    pub keys: crate::edge::guard::Keys,
    pub access: crate::edge::guard::Access,
    /// What model management may read, reach and write (import dirs, pull policy, sizes).
    pub files: std::sync::Arc<manage::Files>,
}

/// Validated settings of `rawrxd serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub models_dir: Option<PathBuf>,
    /// Named model files (`--model`, `[serve.model]`), by `name:tag`.
    pub models: Vec<(String, PathBuf)>,
    pub engine: EngineConfig,
    /// Most models loaded at once (least recently used idle ones are unloaded).
    pub max_loaded: usize,
    pub max_body: usize,
    pub preload: bool,
    pub shutdown_grace: Duration,
    /// The admin token (management endpoints) and API keys (see [`crate::edge::guard::Keys`]).
    pub keys: crate::edge::guard::Keys,
    /// The `Host` and `Origin` policy (see [`crate::edge::guard::Access`]).
    pub access: crate::edge::guard::Access,
    /// `serve.import_dirs`, as configured (each an existing directory).
    pub import_dirs: Vec<PathBuf>,
    /// `serve.pull_allow_private` and `serve.pull_allowed_hosts`.
    pub pull_policy: egress::PullPolicy,
    /// `serve.max_model_size`, bytes.
    pub max_model_size: u64,
    /// `serve.min_free_space`, bytes.
    pub min_free_space: u64,
}

/// Abandoned downloads and temporary files older than this are removed at start.
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

impl ServeState {
    /// The shared state; first sweeps the models directory of abandoned downloads and
    /// temporary files (older than a day), logging each.
    pub fn new(config: &ServeConfig) -> Self {
        if let Some(dir) = &config.models_dir {
            for (path, len) in registry::sweep_abandoned(dir, ABANDONED_AFTER) {
                tracing::info!(
                    "removed {} ({len} bytes): abandoned for more than a day",
                    path.display()
                );
            }
        }
        Self {
            models: Models::new(
                config.models_dir.clone(),
                config.models.clone(),
                config.engine.clone(),
                config.max_loaded,
            ),
            max_body: config.max_body,
            in_flight: std::sync::Arc::default(),
            files: std::sync::Arc::new(manage::Files {
                import_dirs: config.import_dirs.clone(),
                puller: egress::Puller::new(config.pull_policy.clone()),
                max_model_size: config.max_model_size,
                min_free_space: config.min_free_space,
            }),
            preloading: std::sync::atomic::AtomicBool::new(config.preload),
            keys: config.keys.clone(),
            access: config.access.clone(),
        }
    }
}

/// The default models directory: `$XDG_DATA_HOME/rawrxd/models`, else
/// `~/.local/share/rawrxd/models`.
pub fn default_models_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("rawrxd").join("models"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/rawrxd/models"))
}

/// Flags of `rawrxd serve`. Each overrides `[serve]` in `rawrxd.toml` and its
/// `RAWRXD_SERVE_*` variable.
#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:11434]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Config file [default: rawrxd.toml in the working directory, when present]
    #[arg(long, value_name = "FILE", env = "RAWRXD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Bearer token for model management (pull, create, copy, delete, push, blobs); required to listen off loopback
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,

    #[command(flatten)]
    pub engine: EngineFlags,
}

/// The model and engine flags `rawrxd serve` and `rawrxd up` share.
#[derive(Debug, Args, Default, Clone)]
pub struct EngineFlags {
    /// Models directory (GGUF files, pulled and created models) [default: $XDG_DATA_HOME/rawrxd/models or ~/.local/share/rawrxd/models]
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,

    /// A GGUF file to serve, as NAME=PATH (e.g. gemma3:270m=/models/g.gguf) or PATH (named after its file stem); repeatable
    #[arg(long = "model", value_name = "[NAME=]PATH")]
    pub model: Vec<String>,

    /// Sequence slots per loaded model (requests decoded together) [default: 4]
    #[arg(long, value_name = "N")]
    pub parallel: Option<u32>,

    /// CPU threads for inference [default: physical cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,

    /// Context length of each slot (the largest num_ctx a request gets) [default: 4096]
    #[arg(long, value_name = "TOKENS")]
    pub ctx_size: Option<u32>,

    /// Requests that may wait for a slot; beyond that the server answers 503 [default: 64]
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,

    /// Load the configured models at start (and keep them loaded) instead of on first use
    #[arg(long)]
    pub preload: bool,

    /// Most models loaded at once; loading another unloads the least recently used idle one [default: 2]
    #[arg(long, value_name = "N")]
    pub max_loaded: Option<usize>,
}

/// `NAME=PATH` or `PATH` (named after the file stem) → (`name:tag`, path).
fn named_model(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = match text.split_once('=') {
        Some((name, path)) if registry::ModelName::parse(name).is_ok() => {
            (name.to_string(), PathBuf::from(path))
        }
        _ => {
            let path = PathBuf::from(text);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| format!("--model {text}: no file name to name the model after"))?
                .to_string();
            (stem, path)
        }
    };
    Ok((registry::key(&name), path))
}

impl EngineFlags {
    /// The `[serve]` values these flags set.
    fn overrides(&self, listen: Option<String>) -> Result<crate::config::ServeOverrides, String> {
        let mut model = std::collections::BTreeMap::new();
        for text in &self.model {
            let (name, path) = named_model(text)?;
            model.insert(name, path);
        }
        Ok(crate::config::ServeOverrides {
            listen,
            models: self.models.clone(),
            model,
            parallel: self.parallel,
            threads: self.threads,
            ctx: self.ctx_size,
            queue: self.queue,
            preload: self.preload.then_some(true),
            admin_token: None,
            max_loaded: self.max_loaded,
        })
    }
}

impl ServeArgs {
    /// Merges `rawrxd.toml`, `RAWRXD_SERVE_*` and these flags, and validates the result.
    pub fn validate(&self) -> Result<ServeConfig, String> {
        let mut overrides = self.engine.overrides(self.listen.clone())?;
        overrides.admin_token = self.admin_token.clone();
        let raw = crate::config::load_all(
            self.config.as_deref(),
            &crate::config::ProxyOverrides::default(),
            &overrides,
        )
        .map_err(|e| e.to_string())?;
        validate(&raw.serve)
    }
}

/// Checks every `[serve]` value and reports all problems together.
pub fn validate(raw: &crate::config::RawServe) -> Result<ServeConfig, String> {
    let mut errors = Vec::new();
    let listen = raw
        .listen
        .parse::<SocketAddr>()
        .map_err(|e| errors.push(format!("serve.listen {:?}: {e}", raw.listen)))
        .ok();
    if raw.parallel == 0 || raw.parallel > 256 {
        errors.push("serve.parallel (--parallel) must be between 1 and 256".into());
    }
    if raw.ctx < 64 {
        errors.push("serve.ctx (--ctx-size) must be at least 64".into());
    }
    if raw.max_loaded == 0 || raw.max_loaded > 64 {
        errors.push("serve.max_loaded (--max-loaded) must be between 1 and 64".into());
    }
    let files: std::collections::HashSet<_> = raw
        .model
        .values()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    if raw.preload && files.len() > raw.max_loaded {
        errors.push(format!(
            "serve.preload loads all {} configured model files, more than serve.max_loaded ({})",
            files.len(),
            raw.max_loaded
        ));
    }
    let mut models = Vec::new();
    for (name, path) in &raw.model {
        match registry::ModelName::parse(name) {
            Ok(parsed) if path.is_file() => models.push((parsed.tagged(), path.clone())),
            Ok(_) => errors.push(format!("model {name}: {} is not a file", path.display())),
            Err(e) => errors.push(e),
        }
    }
    let admin_token = raw.admin_token.as_deref().filter(|t| !t.is_empty());
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && admin_token.is_none() {
            errors.push(format!(
                "serve.listen: {addr} is not a loopback address; set serve.admin_token \
                 (or --admin-token) before exposing the model server to the network"
            ));
        }
    }
    let keys = crate::edge::guard::Keys::new(admin_token, &raw.api_keys.items());
    let access = crate::edge::guard::Access::new(
        "serve",
        &raw.allowed_origins.items(),
        &raw.allowed_hosts.items(),
    )
    .map_err(|e| errors.extend(e))
    .ok();
    for dir in &raw.import_dirs {
        if !dir.is_absolute() {
            errors.push(format!(
                "serve.import_dirs: {} is not an absolute path",
                dir.display()
            ));
        } else if !dir.is_dir() {
            errors.push(format!(
                "serve.import_dirs: {} is not a directory",
                dir.display()
            ));
        }
    }
    let pull_policy =
        egress::PullPolicy::new(raw.pull_allow_private, &raw.pull_allowed_hosts.items())
            .map_err(|e| errors.extend(e))
            .ok();
    let mut size = |key: &str, value: &crate::config::ByteSize| {
        value
            .to_bytes()
            .map_err(|e| errors.push(format!("serve.{key}: {e}")))
            .ok()
    };
    let max_model_size = size("max_model_size", &raw.max_model_size);
    let min_free_space = size("min_free_space", &raw.min_free_space);
    if max_model_size == Some(0) {
        errors.push("serve.max_model_size must be more than 0".into());
    }
    let threads = raw
        .threads
        .unwrap_or_else(|| models::physical_cores() as u32)
        .clamp(1, 1024);
    match (
        listen,
        access,
        pull_policy,
        max_model_size,
        min_free_space,
        errors.is_empty(),
    ) {
        (
            Some(listen),
            Some(access),
            Some(pull_policy),
            Some(max_model_size),
            Some(min_free_space),
            true,
        ) => Ok(ServeConfig {
            listen,
            models_dir: raw.models.clone().or_else(default_models_dir),
            models,
            engine: EngineConfig {
                parallel: raw.parallel,
                ctx_per_slot: raw.ctx,
                batch: 512,
                threads: threads as i32,
                queue: raw.queue,
            },
            max_loaded: raw.max_loaded,
            max_body: 100 << 20,
            preload: raw.preload,
            shutdown_grace: Duration::from_secs(30),
            import_dirs: raw.import_dirs.clone(),
            pull_policy,
            max_model_size,
            min_free_space,
            keys,
            access,
        }),
        _ => Err(errors.join("; ")),
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

/// Loads the configured model files now, kept loaded forever (`--preload`); `/health` turns
/// 200 when this returns.
pub async fn preload(state: &ServeState, config: &ServeConfig) -> Result<(), String> {
    let result = preload_all(state, config).await;
    state
        .preloading
        .store(false, std::sync::atomic::Ordering::Release);
    result
}

async fn preload_all(state: &ServeState, config: &ServeConfig) -> Result<(), String> {
    for (name, _) in &config.models {
        state
            .models
            .load(name, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn settings_layer_file_env_and_flags_and_models_get_names() {
        figment::Jail::expect_with(|jail| {
            let gguf = jail.directory().join("g.gguf");
            std::fs::write(&gguf, b"GGUF").unwrap();
            jail.create_file(
                "rawrxd.toml",
                &format!(
                    "[serve]\nlisten = \"127.0.0.1:1234\"\nparallel = 2\nctx = 1024\n\
                     [serve.model]\n\"gemma3:270m\" = \"{}\"\n",
                    gguf.display()
                ),
            )?;
            jail.set_env("RAWRXD_SERVE_CTX", "2048");
            let args = ServeArgs {
                engine: EngineFlags {
                    parallel: Some(3),
                    model: vec![
                        format!("other={}", gguf.display()),
                        gguf.display().to_string(),
                    ],
                    ..EngineFlags::default()
                },
                ..ServeArgs::default()
            };
            let config = args.validate().unwrap();
            assert_eq!(config.listen.port(), 1234, "file beats defaults");
            assert_eq!(config.engine.ctx_per_slot, 2048, "env beats file");
            assert_eq!(config.engine.parallel, 3, "flags beat everything");
            assert_eq!(config.engine.queue, 64, "default");
            let mut names: Vec<_> = config.models.iter().map(|(n, _)| n.as_str()).collect();
            names.sort();
            assert_eq!(names, vec!["g:latest", "gemma3:270m", "other:latest"]);

            jail.create_file("typo.toml", "[serve]\nparalel = 2\n")?;
            let typo = ServeArgs {
                config: Some("typo.toml".into()),
                ..ServeArgs::default()
            };
            assert!(typo.validate().unwrap_err().contains("paralel"));
            let bad = ServeArgs {
                engine: EngineFlags {
                    parallel: Some(0),
                    model: vec!["x:1=/no/such.gguf".into()],
                    ..EngineFlags::default()
                },
                ..ServeArgs::default()
            };
            let err = bad.validate().unwrap_err();
            assert!(err.contains("serve.parallel"), "{err}");
            assert!(err.contains("x:1") && err.contains("not a file"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn model_management_limits_validate_together() {
        let defaults = validate(&crate::config::RawServe::default()).unwrap();
        assert!(defaults.import_dirs.is_empty());
        assert_eq!(defaults.max_model_size, 64 << 30);
        assert_eq!(defaults.min_free_space, 1 << 30);
        assert!(defaults
            .pull_policy
            .check("127.0.0.1", "127.0.0.1".parse().unwrap())
            .is_err());
        let raw = crate::config::RawServe {
            import_dirs: vec!["relative".into(), "/no/such/rawrxd/dir".into()],
            pull_allowed_hosts: crate::config::StringList::Items(vec!["not a host".into()]),
            max_model_size: crate::config::ByteSize::Text("lots".into()),
            min_free_space: crate::config::ByteSize::Text("1 parsec".into()),
            ..crate::config::RawServe::default()
        };
        let err = validate(&raw).unwrap_err();
        for needle in [
            "relative is not an absolute path",
            "/no/such/rawrxd/dir is not a directory",
            "serve.pull_allowed_hosts: \"not a host\"",
            "serve.max_model_size",
            "serve.min_free_space",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let raw = crate::config::RawServe {
            import_dirs: vec![std::env::temp_dir()],
            pull_allow_private: true,
            pull_allowed_hosts: crate::config::StringList::Items(vec![
                "mirror.lan".into(),
                "10.1.0.0/16".into(),
            ]),
            max_model_size: crate::config::ByteSize::Text("2TiB".into()),
            ..crate::config::RawServe::default()
        };
        let config = validate(&raw).unwrap();
        assert_eq!(config.max_model_size, 2 << 40);
        // Lists from the environment, written as TOML arrays.
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "RAWRXD_SERVE_PULL_ALLOWED_HOSTS",
                "[\"mirror.lan\", \"10.0.0.0/8\"]",
            );
            jail.set_env("RAWRXD_SERVE_MAX_MODEL_SIZE", "1GiB");
            let config = ServeArgs::default().validate().unwrap();
            assert!(config
                .pull_policy
                .check("x", "10.2.3.4".parse().unwrap())
                .is_ok());
            assert_eq!(config.max_model_size, 1 << 30);
            Ok(())
        });
        assert!(config
            .pull_policy
            .check("127.0.0.1", "127.0.0.1".parse().unwrap())
            .is_ok());
    }
}
