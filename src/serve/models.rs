//! Which models exist and which are loaded. A model is one of: a `--model` path or a `*.gguf`
//! file of the models directory (named `<file stem>:latest`), or a named manifest of the
//! [`registry`](super::registry) (`name:tag`, made by pull, create or copy). A name without
//! a tag means `:latest`.
//!
//! **The list of models is a cached [`Catalog`], never built on the request path.** A
//! background thread (`rawrxd-models`) rescans the directory every [`REFRESH_INTERVAL`] (so a
//! file dropped in shows up within it) and reads the GGUF header of each new file; model
//! management refreshes it at once ([`Models::refresh`], [`Models::refresh_on_end`]), and
//! [`Models::invalidate`] asks the thread for a rescan now. Requests look names up in the
//! current snapshot (an `ArcSwap`).
//!
//! **Loaded engines are keyed by the file ([`FileKey`]: device, inode, size, modification
//! time), not by the name**, so every name of one file (`/api/copy`, a symlink, a hard link,
//! `--model` and the same file in the directory) shares one engine. A model is loaded on first
//! use (or at start with `--preload`), after its header passes [`read_meta`]'s checks right
//! before llama.cpp's loader opens the file, and stays loaded for its `keep_alive`, renewed by
//! every request; [`Models::reap`] unloads expired idle models. At most `max_loaded` engines
//! exist: loading another first unloads the least recently used idle one; **an engine with a
//! request in flight (or a response still streaming) is never unloaded** — when every loaded
//! engine is busy the load is refused with [`ModelError::AllBusy`] (503) after a short grace
//! (`IDLE_WAIT`, 1 s, for responses finishing their last bytes), rather than queued. Loads are serialised; `/health` reports 503 while one is in progress.

use std::collections::{BTreeMap, HashMap};
use std::future::Future as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::engine::{Engine, EngineConfig, EngineError};
use super::http::ServeBody;
use super::registry::{self, Manifest};
use super::tools::Jinja;
use crate::gguf::{read_meta, GgufMeta};

/// How often the background thread rescans the models directory.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// How long an unloaded engine is given to free its model before the next one loads.
const UNLOAD_WAIT: Duration = Duration::from_secs(10);

/// How long a load waits for a loaded model to become idle (a response finishing its last
/// bytes) before answering that all are busy.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What identifies a file's content on disk: equal for every path and name that reaches the
/// same file (symlinks and hard links included), different once it is replaced or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
    #[cfg(not(unix))]
    path: PathBuf,
    len: u64,
    modified: SystemTime,
}

impl FileKey {
    fn new(_path: &Path, meta: &std::fs::Metadata) -> std::io::Result<FileKey> {
        Ok(FileKey {
            #[cfg(unix)]
            dev: std::os::unix::fs::MetadataExt::dev(meta),
            #[cfg(unix)]
            ino: std::os::unix::fs::MetadataExt::ino(meta),
            #[cfg(not(unix))]
            path: std::fs::canonicalize(_path)?,
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }
}

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
    /// The file's identity (what engines are keyed by).
    pub key: FileKey,
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

/// One snapshot of the servable models, by `name:tag`.
#[derive(Debug, Default)]
pub struct Catalog {
    pub models: BTreeMap<String, ModelFile>,
}

/// A loaded model.
/// The model's Jinja chat template (`tokenizer.chat_template`), compiled with its BOS and
/// EOS texts; `None` when it has none or it does not compile (logged).
pub fn compile_template(meta: &GgufMeta, engine: &Engine) -> Option<Arc<Jinja>> {
    let source = meta.str("tokenizer.chat_template")?;
    let vocab = engine.model.vocab();
    let text =
        |token| String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned();
    match Jinja::new(source, &text(vocab.bos()), &text(vocab.eos())) {
        Ok(jinja) => Some(Arc::new(jinja)),
        Err(e) => {
            tracing::warn!("the model's chat template does not compile as Jinja ({e}); tool calling is off for it");
            None
        }
    }
}

pub struct Loaded {
    /// The model as named by the request that loaded it.
    pub file: ModelFile,
    pub meta: Arc<GgufMeta>,
    pub engine: Engine,
    /// The GGUF's Jinja chat template, compiled (`None`: the file has none, or it does not
    /// compile); used for requests with tools.
    pub jinja: Option<Arc<Jinja>>,
    pub load_duration: Duration,
    use_state: Mutex<UseState>,
}

struct UseState {
    /// `None`: never expires.
    expires: Option<Instant>,
    last_used: Instant,
}

impl Loaded {
    fn use_state(&self) -> std::sync::MutexGuard<'_, UseState> {
        self.use_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn expires_at(&self) -> Option<SystemTime> {
        let expires = self.use_state().expires;
        expires.map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now()))
    }

    /// Renews the keep-alive (`None` = forever) and marks the model used now.
    pub fn touch(&self, keep_alive: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.use_state();
        state.expires = keep_alive.map(|d| now + d.min(Duration::from_secs(100 * 365 * 86400)));
        state.last_used = now;
    }

    fn last_used(&self) -> Instant {
        self.use_state().last_used
    }

    fn expired(&self, now: Instant) -> bool {
        self.use_state().expires.is_some_and(|at| at <= now)
    }
}

/// True when nothing but the loaded-models map holds `loaded`: no request is queued,
/// generating, embedding or streaming its response. Checked under the map's lock, which every
/// new holder goes through.
fn idle(loaded: &Arc<Loaded>) -> bool {
    Arc::strong_count(loaded) == 1 && loaded.engine.in_flight() == 0
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model \"{0}\" not found, try pulling it first")]
    NotFound(String),
    #[error(
        "cannot load \"{name}\": all {max_loaded} loaded models (serve.max_loaded) have requests \
         in flight; try again when one finishes, or raise serve.max_loaded"
    )]
    AllBusy { name: String, max_loaded: usize },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Meta(String),
}

/// The models registry and the loaded models; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Models {
    inner: Arc<Inner>,
    /// Stops the refresher thread when the last handle goes.
    _stop: Arc<StopOnDrop>,
}

struct Inner {
    dir: Option<PathBuf>,
    /// Configured files (`--model`, `[serve.model]`), by `name:tag`.
    explicit: Vec<(String, PathBuf)>,
    engine: EngineConfig,
    max_loaded: usize,
    catalog: ArcSwap<Catalog>,
    /// One rescan at a time.
    scan_lock: Mutex<()>,
    /// GGUF headers by file (an invalid file's error too, so it is not re-read per request).
    metas: Mutex<HashMap<FileKey, Result<Arc<GgufMeta>, String>>>,
    loaded: Mutex<HashMap<FileKey, Arc<Loaded>>>,
    load_lock: tokio::sync::Mutex<()>,
    loading: AtomicUsize,
    wake: Arc<Wake>,
    /// Weight patches applied live, by `name:tag`, oldest first: the last one's file is what
    /// the name serves ([`Models::find`]).
    patches: Mutex<HashMap<String, Vec<LivePatch>>>,
}

/// A weight patch applied to a served model (`POST /rawrxd/models/{name}/patch`): the patched
/// copy of the model's file and the patch set that made it.
#[derive(Debug, Clone)]
pub struct LivePatch {
    /// The patched copy, as the model it now serves.
    pub file: ModelFile,
    pub patch_set: crate::gguf::patch::PatchSet,
    /// The patch set and gzip backup files next to it (removed with it on revert).
    pub extra_files: Vec<PathBuf>,
}

/// Wakes the refresher thread (a rescan now, or stop).
#[derive(Default)]
struct Wake {
    state: Mutex<WakeState>,
    cond: Condvar,
}

#[derive(Default)]
struct WakeState {
    now: bool,
    stop: bool,
}

impl Wake {
    fn set(&self, f: impl FnOnce(&mut WakeState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.cond.notify_all();
    }

    /// Waits for a wake-up or `timeout`; true when the thread must stop.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |s| !s.now && !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        guard.now = false;
        guard.stop
    }
}

struct StopOnDrop(Arc<Wake>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.set(|s| s.stop = true);
    }
}

impl Models {
    /// Scans the models (names and files; headers are read by the background thread it
    /// starts) and starts that thread.
    pub fn new(
        dir: Option<PathBuf>,
        explicit: Vec<(String, PathBuf)>,
        engine: EngineConfig,
        max_loaded: usize,
    ) -> Self {
        let wake = Arc::new(Wake::default());
        let inner = Arc::new(Inner {
            dir,
            explicit,
            engine,
            max_loaded: max_loaded.max(1),
            catalog: ArcSwap::from_pointee(Catalog::default()),
            scan_lock: Mutex::new(()),
            metas: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            loading: AtomicUsize::new(0),
            wake: wake.clone(),
            patches: Mutex::new(HashMap::new()),
        });
        inner.rescan();
        let weak = Arc::downgrade(&inner);
        let thread_wake = wake.clone();
        let spawned = std::thread::Builder::new()
            .name("rawrxd-models".into())
            .spawn(move || refresher(weak, thread_wake));
        if let Err(e) = spawned {
            tracing::error!("cannot start the model list refresher: {e}");
        }
        Models {
            inner,
            _stop: Arc::new(StopOnDrop(wake)),
        }
    }

    pub fn models_dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// True when `path` is a file of the models directory (not only a `--model` path).
    pub fn in_models_dir(&self, path: &Path) -> bool {
        let explicit = self.inner.explicit.iter().any(|(_, p)| p == path);
        !explicit
            && self
                .inner
                .dir
                .as_ref()
                .is_some_and(|d| path.parent() == Some(d.as_path()))
    }

    pub fn engine_config(&self) -> &EngineConfig {
        &self.inner.engine
    }

    pub fn max_loaded(&self) -> usize {
        self.inner.max_loaded
    }

    /// True while a model load is in progress.
    pub fn is_loading(&self) -> bool {
        self.inner.loading.load(Ordering::Acquire) > 0
    }

    /// The current snapshot of the servable models (no file is touched).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.catalog.load_full()
    }

    /// Rescans the models now and reads the headers of new files (blocking: directory
    /// listing, manifests, `stat`s, new headers). For model management, after it changed the
    /// directory; from async code use [`Models::refresh_async`].
    pub fn refresh(&self) {
        self.inner.rescan();
        self.inner.read_new_metas();
    }

    /// [`Models::refresh`] off the async threads.
    pub async fn refresh_async(&self) {
        let models = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || models.refresh()).await {
            tracing::error!("model list refresh failed: {e}");
        }
    }

    /// Asks the background thread to rescan now (returns at once).
    pub fn invalidate(&self) {
        self.inner.wake.set(|s| s.now = true);
    }

    /// `response` (of a request that changed the models directory), refreshed first: the list
    /// is rescanned now, and a streamed body (pull and create progress, whose work ends with
    /// the stream) is rescanned again before its end reaches the client. A client that read
    /// the answer to its end sees the change in its next request.
    pub async fn refresh_on_end(
        &self,
        response: http::Response<ServeBody>,
    ) -> http::Response<ServeBody> {
        self.refresh_async().await;
        if response.body().size_hint().exact().is_some() {
            return response;
        }
        let models = self.clone();
        response.map(move |body| {
            RefreshOnEnd {
                body,
                models,
                refreshing: None,
            }
            .boxed_unsync()
        })
    }

    /// Every servable model, by `name:tag`. Configured files (`--model`, `[serve.model]`) win
    /// over manifests, which win over same-named files in the directory.
    pub fn list(&self) -> BTreeMap<String, ModelFile> {
        self.catalog().models.clone()
    }

    /// The model `name` serves: its file, or the file of the last weight patch applied to it.
    pub fn find(&self, name: &str) -> Result<ModelFile, ModelError> {
        let key = registry::key(name);
        let file = self
            .catalog()
            .models
            .get(&key)
            .cloned()
            .ok_or_else(|| ModelError::NotFound(name.to_string()))?;
        let patches = self.lock_patches();
        Ok(match patches.get(&key).and_then(|p| p.last()) {
            Some(patch) => patch.file.clone(),
            None => file,
        })
    }

    /// `base` (a model as found) served from `path` instead (a patched copy of its file).
    pub fn file_at(&self, base: &ModelFile, path: &Path) -> std::io::Result<ModelFile> {
        let meta = std::fs::metadata(path)?;
        Ok(ModelFile {
            path: path.to_path_buf(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            key: FileKey::new(path, &meta)?,
            ..base.clone()
        })
    }

    /// From now on, `name` serves `patch.file`; requests already running keep the engine they
    /// hold.
    pub fn push_patch(&self, name: &str, patch: LivePatch) {
        self.lock_patches()
            .entry(registry::key(name))
            .or_default()
            .push(patch);
    }

    /// Undoes the last patch of `name` (which then serves the file before it).
    pub fn pop_patch(&self, name: &str) -> Option<LivePatch> {
        let mut patches = self.lock_patches();
        let key = registry::key(name);
        let popped = patches.get_mut(&key).and_then(Vec::pop);
        if patches.get(&key).is_some_and(Vec::is_empty) {
            patches.remove(&key);
        }
        popped
    }

    /// The patch sets applied to `name`, oldest first (for `/api/show`).
    pub fn patch_sets(&self, name: &str) -> Vec<crate::gguf::patch::PatchSet> {
        self.lock_patches()
            .get(&registry::key(name))
            .map(|p| p.iter().map(|p| p.patch_set.clone()).collect())
            .unwrap_or_default()
    }

    fn lock_patches(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<LivePatch>>> {
        self.inner.patches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file's metadata: from the cache the background thread fills, else read now (off
    /// the async threads) and cached.
    pub async fn meta(&self, file: &ModelFile) -> Result<Arc<GgufMeta>, ModelError> {
        if let Some(meta) = self.inner.cached_meta(&file.key) {
            return meta.map_err(ModelError::Meta);
        }
        let path = file.path.clone();
        let meta = tokio::task::spawn_blocking(move || read_meta(&path))
            .await
            .map_err(|e| ModelError::Meta(e.to_string()))?
            .map(Arc::new)
            .map_err(|e| e.to_string());
        self.inner.store_meta(file.key.clone(), meta.clone());
        meta.map_err(ModelError::Meta)
    }

    /// The loaded models, by name.
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        let map = self.inner.lock_loaded();
        let mut out: Vec<_> = map.values().cloned().collect();
        out.sort_by_key(|l| l.file.tagged());
        out
    }

    /// The loaded engine of `file`; one whose engine died is dropped so the caller loads it
    /// again.
    fn get_loaded(&self, file: &ModelFile) -> Option<Arc<Loaded>> {
        let mut map = self.inner.lock_loaded();
        let loaded = map.get(&file.key).cloned()?;
        if loaded.engine.is_alive() {
            return Some(loaded);
        }
        tracing::error!(model = %file.tagged(), "the model's engine died; reloading it");
        map.remove(&file.key);
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
        let _guard = self.inner.load_lock.lock().await;
        if let Some(loaded) = self.get_loaded(file) {
            loaded.touch(keep_alive);
            return Ok((loaded, started.elapsed()));
        }
        self.make_room(file).await?;
        let loading = LoadingGuard::new(&self.inner.loading);
        let path = file.path.clone();
        let config = self.inner.engine.clone();
        tracing::info!(model = %file.tagged(), path = %path.display(), "loading model");
        // The header is checked (bounded reader) right before llama.cpp's loader opens the
        // file, so a crafted or swapped file never reaches it unchecked.
        let started_load = tokio::task::spawn_blocking(move || {
            let meta = read_meta(&path).map_err(|e| ModelError::Meta(e.to_string()))?;
            let engine = Engine::start(&path, config)?;
            Ok::<_, ModelError>((meta, engine))
        })
        .await;
        drop(loading);
        let (meta, engine) = started_load
            .map_err(|e| EngineError::Load(e.to_string()))
            .map_err(ModelError::from)
            .and_then(|r| r)?;
        let meta = Arc::new(meta);
        self.inner.store_meta(file.key.clone(), Ok(meta.clone()));
        let load_duration = started.elapsed();
        tracing::info!(
            model = %file.tagged(),
            "model loaded in {}",
            humantime::format_duration(Duration::from_millis(load_duration.as_millis() as u64))
        );
        let jinja = compile_template(&meta, &engine);
        let loaded = Arc::new(Loaded {
            file: file.clone(),
            meta,
            jinja,
            engine,
            load_duration,
            use_state: Mutex::new(UseState {
                expires: None,
                last_used: Instant::now(),
            }),
        });
        loaded.touch(keep_alive);
        self.inner
            .lock_loaded()
            .insert(file.key.clone(), loaded.clone());
        Ok((loaded, load_duration))
    }

    /// Unloads least recently used idle engines until one more fits under `max_loaded`, and
    /// waits for their workers to free their models. Called under the load lock.
    async fn make_room(&self, file: &ModelFile) -> Result<(), ModelError> {
        let mut stopping = Vec::new();
        let busy_since = Instant::now();
        loop {
            match self.evict_one(file) {
                Eviction::Room => break,
                Eviction::Evicted(stopped) => stopping.push(stopped),
                Eviction::AllBusy if busy_since.elapsed() < IDLE_WAIT => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Eviction::AllBusy => {
                    return Err(ModelError::AllBusy {
                        name: file.tagged(),
                        max_loaded: self.inner.max_loaded,
                    })
                }
            }
        }
        // The engines were dropped with their map entries; their workers end at once (idle).
        let deadline = Instant::now() + UNLOAD_WAIT;
        while stopping.iter().any(|stopped| !stopped()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// One step of [`Models::make_room`]: room already, or the least recently used idle engine
    /// unloaded (its worker's "stopped" check returned), or none idle.
    fn evict_one(&self, file: &ModelFile) -> Eviction {
        let mut map = self.inner.lock_loaded();
        if map.len() < self.inner.max_loaded {
            return Eviction::Room;
        }
        let victim = map
            .iter()
            .filter(|(_, l)| idle(l))
            .min_by_key(|(_, l)| l.last_used())
            .map(|(key, _)| key.clone());
        match victim.and_then(|key| map.remove(&key)) {
            Some(old) => {
                tracing::info!(
                    model = %old.file.tagged(),
                    "model unloaded to make room for {} (max_loaded {})",
                    file.tagged(),
                    self.inner.max_loaded
                );
                Eviction::Evicted(Box::new(old.engine.stopped()))
            }
            None => Eviction::AllBusy,
        }
    }

    /// Unloads `name`'s engine now if it is loaded (its running requests finish first: the
    /// engine stops when the last handle is gone). Every name of the same file shares it.
    pub fn unload(&self, name: &str) -> bool {
        let Ok(file) = self.find(name) else {
            return false;
        };
        let removed = self.inner.lock_loaded().remove(&file.key);
        if let Some(old) = &removed {
            tracing::info!(model = %old.file.tagged(), "model unloaded");
        }
        removed.is_some()
    }

    /// Unloads every model whose keep-alive is over and that is idle (nothing in flight, no
    /// response streaming).
    pub fn reap(&self) {
        let now = Instant::now();
        let mut map = self.inner.lock_loaded();
        map.retain(|_, l| {
            let expired = l.expired(now) && idle(l);
            if expired {
                tracing::info!(model = %l.file.tagged(), "keep_alive over; model unloaded");
            }
            !expired
        });
    }
}

impl Inner {
    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Arc<Loaded>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_metas(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<FileKey, Result<Arc<GgufMeta>, String>>> {
        self.metas.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_meta(&self, key: &FileKey) -> Option<Result<Arc<GgufMeta>, String>> {
        self.lock_metas().get(key).cloned()
    }

    fn store_meta(&self, key: FileKey, meta: Result<Arc<GgufMeta>, String>) {
        self.lock_metas().insert(key, meta);
    }

    /// Builds the catalog from the directory, the manifests and the configured files, swaps
    /// it in, and forgets headers and idle engines of files no model uses any more.
    fn rescan(&self) {
        let _scan = self.scan_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut models = BTreeMap::new();
        if let Some(dir) = &self.dir {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                    {
                        if let Some(file) = model_file(&path) {
                            models.insert(file.tagged(), file);
                        }
                    }
                }
            }
            for (name, manifest, modified) in registry::read_manifests(dir) {
                let path = manifest.gguf_path(dir);
                let found = std::fs::metadata(&path)
                    .ok()
                    .filter(std::fs::Metadata::is_file)
                    .and_then(|meta| Some((FileKey::new(&path, &meta).ok()?, meta.len())));
                match found {
                    Some((key, size)) => {
                        let file = ModelFile {
                            name: name.name,
                            tag: name.tag,
                            path,
                            size,
                            modified,
                            key,
                            manifest: Some(Arc::new(manifest)),
                        };
                        models.insert(file.tagged(), file);
                    }
                    None => tracing::debug!(
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
                models.insert(file.tagged(), file);
            }
        }
        let keys: std::collections::HashSet<&FileKey> = models.values().map(|f| &f.key).collect();
        self.lock_metas().retain(|key, _| keys.contains(key));
        self.lock_loaded().retain(|key, loaded| {
            let keep = keys.contains(key) || !idle(loaded);
            if !keep {
                tracing::info!(
                    model = %loaded.file.tagged(),
                    "model unloaded: its file changed or is gone"
                );
            }
            keep
        });
        self.catalog.store(Arc::new(Catalog { models }));
    }

    /// Reads the header of every listed file not read yet.
    fn read_new_metas(&self) {
        let catalog = self.catalog.load_full();
        for file in catalog.models.values() {
            if self.cached_meta(&file.key).is_some() {
                continue;
            }
            let meta = read_meta(&file.path).map(Arc::new).map_err(|e| {
                tracing::warn!("model {}: {e}", file.tagged());
                e.to_string()
            });
            self.store_meta(file.key.clone(), meta);
        }
    }
}

/// The `rawrxd-models` thread: reads new headers, then rescans every [`REFRESH_INTERVAL`] or
/// when woken, until the models are dropped.
fn refresher(models: Weak<Inner>, wake: Arc<Wake>) {
    loop {
        match models.upgrade() {
            Some(inner) => inner.read_new_metas(),
            None => return,
        }
        if wake.wait(REFRESH_INTERVAL) {
            return;
        }
        match models.upgrade() {
            Some(inner) => inner.rescan(),
            None => return,
        }
    }
}

/// A response body that rescans the models when it ends, before the end reaches the client.
struct RefreshOnEnd {
    body: ServeBody,
    models: Models,
    refreshing: Option<tokio::task::JoinHandle<()>>,
}

impl Body for RefreshOnEnd {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.refreshing.is_none() {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    let models = this.models.clone();
                    this.refreshing = Some(tokio::task::spawn_blocking(move || models.refresh()));
                }
                other => return other,
            }
        }
        match this.refreshing.as_mut() {
            Some(handle) => match Pin::new(handle).poll(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// What [`Models::evict_one`] did.
enum Eviction {
    Room,
    Evicted(Box<dyn Fn() -> bool + Send + Sync>),
    AllBusy,
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
        key: FileKey::new(path, &meta).ok()?,
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

    fn config() -> EngineConfig {
        EngineConfig {
            parallel: 1,
            ctx_per_slot: 64,
            batch: 64,
            threads: 1,
            queue: 0,
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rawrxd-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_come_from_file_stems_and_latest_resolves() {
        let dir = temp_dir("names");
        std::fs::write(dir.join("tiny-model.gguf"), b"GGUF").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let models = Models::new(Some(dir.clone()), vec![], config(), 2);
        let names: Vec<_> = models.list().into_keys().collect();
        assert_eq!(names, vec!["tiny-model:latest"]);
        assert_eq!(models.find("tiny-model:latest").unwrap().name, "tiny-model");
        assert!(matches!(models.find("other"), Err(ModelError::NotFound(_))));
        assert!(physical_cores() >= 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The list is a snapshot: a new file appears after a refresh (explicit, or the
    /// background thread's within its interval), not by looking it up.
    #[test]
    fn the_list_is_cached_and_refreshed() {
        let dir = temp_dir("refresh");
        std::fs::write(dir.join("a.gguf"), b"GGUF").unwrap();
        let models = Models::new(Some(dir.clone()), vec![], config(), 2);
        std::fs::write(dir.join("b.gguf"), b"GGUF").unwrap();
        assert!(models.find("b").is_err(), "a lookup does not rescan");
        models.refresh();
        assert!(models.find("b").is_ok());
        std::fs::write(dir.join("c.gguf"), b"GGUF").unwrap();
        let deadline = Instant::now() + REFRESH_INTERVAL * 3;
        while models.find("c").is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            models.find("c").is_ok(),
            "the background refresh found c.gguf"
        );
        std::fs::remove_file(dir.join("a.gguf")).unwrap();
        models.refresh();
        assert!(models.find("a").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Two names of one file (a hard link, a symlink, a `--model` path) share a key; a
    /// different file with the same bytes does not.
    #[test]
    fn names_of_one_file_share_its_key() {
        let dir = temp_dir("keys");
        std::fs::write(dir.join("one.gguf"), b"GGUF-one").unwrap();
        std::fs::hard_link(dir.join("one.gguf"), dir.join("linked.gguf")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.join("one.gguf"), dir.join("sym.gguf")).unwrap();
        std::fs::write(dir.join("other.gguf"), b"GGUF-one").unwrap();
        let models = Models::new(
            Some(dir.clone()),
            vec![("mine:v1".into(), dir.join("one.gguf"))],
            config(),
            2,
        );
        let key = |name: &str| models.find(name).unwrap().key;
        assert_eq!(key("one"), key("linked"));
        assert_eq!(key("one"), key("mine:v1"));
        #[cfg(unix)]
        assert_eq!(key("one"), key("sym"));
        assert_ne!(key("one"), key("other"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Headers are read by the background thread: an invalid file's error is cached, a
    /// valid one's metadata too.
    #[tokio::test]
    async fn headers_are_read_and_cached_off_the_request_path() {
        let dir = temp_dir("metas");
        std::fs::write(dir.join("bad.gguf"), b"GGUF").unwrap();
        let models = Models::new(Some(dir.clone()), vec![], config(), 2);
        let file = models.find("bad").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while models.inner.cached_meta(&file.key).is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cached = models.inner.cached_meta(&file.key).unwrap();
        assert!(cached.unwrap_err().contains("past the end of the file"));
        assert!(models.meta(&file).await.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
