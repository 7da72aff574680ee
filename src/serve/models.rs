//! Which models exist and which are loaded. A model is one of: a `--model` path or a `*.gguf`
//! file of the models directory (named `<file stem>:latest`), or a named manifest of the
//! [`registry`](super::registry) (`name:tag`, made by pull, create or copy). A name without
//! a tag means `:latest`.
//!
//! A model is loaded on first use (or at start with `--preload`) and stays loaded for its
//! `keep_alive`, renewed by every request; [`Models::reap`] unloads expired idle models.
//! Loads are serialised; `/health` reports 503 while one is in progress.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::engine::{Engine, EngineConfig, EngineError};
use super::gguf::{read_meta, GgufMeta};
use super::registry::{self, Manifest};

/// A model the server can serve.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// The name, without tag.
    pub name: String,
    pub tag: String,
    /// The GGUF file.
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    /// The registry manifest (template, system, parameters) of a named model.
    pub manifest: Option<Arc<Manifest>>,
}

impl ModelFile {
    /// Ollama's `name:tag` form, the key a model is known by.
    pub fn tagged(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// The sha256 of a registry model; for a plain file (whose content is not hashed on every
    /// listing: that would read gigabytes) a stable identifier of 64 hex digits made from the
    /// path, size and modification time.
    pub fn digest(&self) -> String {
        if let Some(sha) = self.manifest.as_ref().and_then(|m| m.sha256.clone()) {
            return sha;
        }
        use std::hash::{Hash, Hasher};
        let mut out = String::new();
        for salt in 0u8..4 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (salt, &self.path, self.size, self.modified).hash(&mut h);
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    }
}

/// A loaded model.
pub struct Loaded {
    pub file: ModelFile,
    pub meta: Arc<GgufMeta>,
    pub engine: Engine,
    pub load_duration: Duration,
    /// `None`: never expires.
    expires: Mutex<Option<Instant>>,
}

impl Loaded {
    pub fn expires_at(&self) -> Option<SystemTime> {
        let expires = *self.expires.lock().unwrap_or_else(|p| p.into_inner());
        expires.map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now()))
    }

    /// Renews the keep-alive (`None` = forever).
    pub fn touch(&self, keep_alive: Option<Duration>) {
        *self.expires.lock().unwrap_or_else(|p| p.into_inner()) =
            keep_alive.map(|d| Instant::now() + d.min(Duration::from_secs(100 * 365 * 86400)));
    }

    fn expired(&self, now: Instant) -> bool {
        let expires = *self.expires.lock().unwrap_or_else(|p| p.into_inner());
        expires.is_some_and(|at| at <= now) && self.engine.in_flight() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model \"{0}\" not found, try pulling it first")]
    NotFound(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Meta(String),
}

/// The registry of model files and the loaded models.
pub struct Models {
    dir: Option<PathBuf>,
    /// Configured files (`--model`, `[serve.model]`), by `name:tag`.
    explicit: Vec<(String, PathBuf)>,
    engine: EngineConfig,
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
    load_lock: tokio::sync::Mutex<()>,
    loading: AtomicUsize,
    meta_cache: Mutex<HashMap<PathBuf, Arc<GgufMeta>>>,
}

impl Models {
    pub fn new(
        dir: Option<PathBuf>,
        explicit: Vec<(String, PathBuf)>,
        engine: EngineConfig,
    ) -> Self {
        Self {
            dir,
            explicit,
            engine,
            loaded: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            loading: AtomicUsize::new(0),
            meta_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn models_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// True when `path` is a file of the models directory (not only a `--model` path).
    pub fn in_models_dir(&self, path: &Path) -> bool {
        let explicit = self.explicit.iter().any(|(_, p)| p == path);
        !explicit
            && self
                .dir
                .as_ref()
                .is_some_and(|d| path.parent() == Some(d.as_path()))
    }

    pub fn engine_config(&self) -> &EngineConfig {
        &self.engine
    }

    /// True while a model load is in progress.
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire) > 0
    }

    /// Every servable model, by `name:tag`. Configured files (`--model`, `[serve.model]`) win
    /// over manifests, which win over same-named files in the directory. Re-reads the directory each time, so files
    /// dropped in appear at once.
    pub fn list(&self) -> BTreeMap<String, ModelFile> {
        let mut out = BTreeMap::new();
        if let Some(dir) = &self.dir {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                    {
                        if let Some(file) = model_file(&path) {
                            out.insert(file.tagged(), file);
                        }
                    }
                }
            }
            for (name, manifest, modified) in registry::read_manifests(dir) {
                let path = manifest.gguf_path(dir);
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => {
                        let file = ModelFile {
                            name: name.name,
                            tag: name.tag,
                            path,
                            size: meta.len(),
                            modified,
                            manifest: Some(Arc::new(manifest)),
                        };
                        out.insert(file.tagged(), file);
                    }
                    _ => tracing::warn!(
                        "model {} skipped: its file {} is missing",
                        name.tagged(),
                        path.display()
                    ),
                }
            }
        }
        for (name, path) in &self.explicit {
            if let Some(mut file) = model_file(path) {
                if let Ok(parsed) = registry::ModelName::parse(name) {
                    file.name = parsed.name;
                    file.tag = parsed.tag;
                }
                out.insert(file.tagged(), file);
            }
        }
        out
    }

    pub fn find(&self, name: &str) -> Result<ModelFile, ModelError> {
        self.list()
            .remove(&registry::key(name))
            .ok_or_else(|| ModelError::NotFound(name.to_string()))
    }

    /// The file's metadata (read once per path, off the async threads).
    pub async fn meta(&self, file: &ModelFile) -> Result<Arc<GgufMeta>, ModelError> {
        if let Some(meta) = self.cached_meta(&file.path) {
            return Ok(meta);
        }
        let path = file.path.clone();
        let meta = tokio::task::spawn_blocking(move || read_meta(&path))
            .await
            .map_err(|e| ModelError::Meta(e.to_string()))?
            .map_err(|e| ModelError::Meta(e.to_string()))?;
        let meta = Arc::new(meta);
        self.meta_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file.path.clone(), meta.clone());
        Ok(meta)
    }

    fn cached_meta(&self, path: &Path) -> Option<Arc<GgufMeta>> {
        self.meta_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    /// The loaded models, by name.
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        let map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map.values().cloned().collect();
        out.sort_by_key(|l| l.file.tagged());
        out
    }

    /// The loaded engine of `file`; one whose engine died, or that was loaded from another
    /// file than the name now points at (re-created or re-pulled), is dropped so the caller
    /// loads it again.
    fn get_loaded(&self, file: &ModelFile) -> Option<Arc<Loaded>> {
        let key = file.tagged();
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = map.get(&key).cloned()?;
        if loaded.file.path != file.path {
            tracing::info!(model = %key, "the model's file changed; loading the new one");
        } else if loaded.engine.is_alive() {
            return Some(loaded);
        } else {
            tracing::error!(model = %key, "the model's engine died; reloading it");
        }
        map.remove(&key);
        None
    }

    /// The loaded model `name`, loading it first if needed. The second value is how long this
    /// call spent loading (zero when it was already loaded).
    pub async fn load(
        &self,
        name: &str,
        keep_alive: Option<Duration>,
    ) -> Result<(Arc<Loaded>, Duration), ModelError> {
        let file = self.find(name)?;
        self.load_file(&file, keep_alive).await
    }

    /// [`Models::load`] for a model already found (the request path finds it once).
    pub async fn load_file(
        &self,
        file: &ModelFile,
        keep_alive: Option<Duration>,
    ) -> Result<(Arc<Loaded>, Duration), ModelError> {
        if let Some(loaded) = self.get_loaded(file) {
            loaded.touch(keep_alive);
            return Ok((loaded, Duration::ZERO));
        }
        let started = Instant::now();
        let _guard = self.load_lock.lock().await;
        if let Some(loaded) = self.get_loaded(file) {
            loaded.touch(keep_alive);
            return Ok((loaded, started.elapsed()));
        }
        let meta = self.meta(file).await?;
        let loading = LoadingGuard::new(&self.loading);
        let path = file.path.clone();
        let config = self.engine.clone();
        tracing::info!(model = %file.tagged(), path = %path.display(), "loading model");
        let engine = tokio::task::spawn_blocking(move || Engine::start(&path, config)).await;
        drop(loading);
        let engine = engine
            .map_err(|e| EngineError::Load(e.to_string()))
            .and_then(|r| r)?;
        let load_duration = started.elapsed();
        tracing::info!(
            model = %file.tagged(),
            "model loaded in {}",
            humantime::format_duration(Duration::from_millis(load_duration.as_millis() as u64))
        );
        let loaded = Arc::new(Loaded {
            file: file.clone(),
            meta,
            engine,
            load_duration,
            expires: Mutex::new(None),
        });
        loaded.touch(keep_alive);
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file.tagged(), loaded.clone());
        Ok((loaded, load_duration))
    }

    /// Unloads `name` now if it is loaded (its running requests finish first: the engine
    /// stops when the last handle is gone).
    pub fn unload(&self, name: &str) -> bool {
        let removed = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&registry::key(name));
        if removed.is_some() {
            tracing::info!(model = %registry::key(name), "model unloaded");
        }
        removed.is_some()
    }

    /// Unloads every model whose keep-alive is over and that has no request in flight.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, l)| l.expired(now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            map.remove(&name);
            tracing::info!(model = %name, "keep_alive over; model unloaded");
        }
    }
}

/// Counts a load in progress, also when the loading request is cancelled.
struct LoadingGuard<'a>(&'a AtomicUsize);

impl<'a> LoadingGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn model_file(path: &Path) -> Option<ModelFile> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let name = path.file_stem()?.to_str()?.to_string();
    Some(ModelFile {
        name,
        tag: registry::DEFAULT_TAG.to_string(),
        path: path.to_path_buf(),
        size: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        manifest: None,
    })
}

/// Physical CPU cores (Linux `/proc/cpuinfo`), else the available parallelism.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let mut physical = "";
    for line in info.lines() {
        let mut parts = line.splitn(2, ':');
        let key = parts.next().unwrap_or("").trim();
        let value = parts.next().unwrap_or("").trim();
        match key {
            "physical id" => physical = value,
            "core id" => {
                cores.insert((physical.to_string(), value.to_string()));
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_come_from_file_stems_and_latest_resolves() {
        let dir = std::env::temp_dir().join(format!("rawrxd-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tiny-model.gguf"), b"GGUF").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let config = EngineConfig {
            parallel: 1,
            ctx_per_slot: 64,
            batch: 64,
            threads: 1,
            queue: 0,
        };
        let models = Models::new(Some(dir.clone()), vec![], config);
        let names: Vec<_> = models.list().into_keys().collect();
        assert_eq!(names, vec!["tiny-model:latest"]);
        assert_eq!(models.find("tiny-model:latest").unwrap().name, "tiny-model");
        assert!(matches!(models.find("other"), Err(ModelError::NotFound(_))));
        assert!(physical_cores() >= 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
