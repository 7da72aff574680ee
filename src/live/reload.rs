//! Live reload: the rule manager thread keeps the live rule set equal to what the rule files
//! and the database say, without ever stopping the proxy.
//!
//! One thread owns the rule store's connection and does every rule write and rebuild, so
//! they are serialised without locks. It wakes up for:
//!
//! * **file changes**: the watcher (notify) only says "changed"; events are debounced
//!   ([`DEBOUNCE`], at most [`MAX_DELAY`] after the first one) and a periodic re-check of the
//!   directory listing ([`RESCAN_EVERY`]) backs it up, because watchers miss events;
//! * **database changes by other programs**: `PRAGMA data_version` is polled
//!   ([`POLL_EVERY`]); only a change of `meta.rules_version` (kept by triggers) rebuilds, so
//!   audit writes do not;
//! * **admin requests** ([`RulesHandle`]): rule writes, enable/disable, forced reloads.
//!
//! A file reload parses and validates every file; **if anything is invalid nothing changes**:
//! the last good rules stay live and the errors go to the log, `/rawrxd/health` and the
//! `rawrxd_rules_valid` metric. Otherwise changed files are written to SQLite in one
//! transaction, and the live set is rebuilt from SQLite off the request path and swapped in.
//! Requests already running keep the snapshot they loaded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::oneshot;

use crate::live::Live;
use crate::patch::{CounterRegistry, Pipeline};
use crate::rules::{self, Rule, RuleError, RuleSpec};
use crate::store::{FileRules, Store, StoreError, API_SOURCE};
use crate::telemetry::metrics::Metrics;

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest a reload waits behind a stream of file events.
pub const MAX_DELAY: Duration = Duration::from_millis(400);
/// How often the database is checked for changes by other programs.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often the rule directory is listed, in case the watcher missed something.
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// The `source` shown for rules from the API, in errors and listings.
const API_PATH: &str = "<api>";

/// How the rules are doing, for `/rawrxd/health` and `/rawrxd/stats`.
#[derive(Debug, Clone, Default)]
pub struct RuleStatus {
    /// Successful rebuilds (including the first).
    pub reloads: u64,
    /// Rejected reloads (invalid files or rows).
    pub failures: u64,
    pub last_reload: Option<SystemTime>,
    /// Why the last attempt failed; empty when it succeeded.
    pub errors: Vec<RuleError>,
    pub failed_at: Option<SystemTime>,
}

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid rule: {}", render(.0))]
    Invalid(Vec<RuleError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("rule store failure: {0}")]
    Store(String),
    #[error("the rule manager is not running")]
    Stopped,
}

fn render(errors: &[RuleError]) -> String {
    errors
        .iter()
        .map(RuleError::render)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        AdminError::Store(error.to_string())
    }
}

type Reply<T> = oneshot::Sender<Result<T, AdminError>>;

enum Command {
    /// Something under the rule directory changed.
    Changed,
    Reload(Reply<usize>),
    Put {
        spec: Box<RuleSpec>,
        create: bool,
        reply: Reply<Rule>,
    },
    Delete {
        id: String,
        reply: Reply<()>,
    },
    SetEnabled {
        id: String,
        enabled: bool,
        reply: Reply<Rule>,
    },
}

/// Sends requests to the rule manager; cheap to clone.
#[derive(Clone)]
pub struct RulesHandle {
    sender: Sender<Command>,
}

impl RulesHandle {
    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(command(reply))
            .map_err(|_| AdminError::Stopped)?;
        answer.await.map_err(|_| AdminError::Stopped)?
    }

    /// Re-reads the rule files now; returns the number of live rules.
    pub async fn reload(&self) -> Result<usize, AdminError> {
        self.ask(Command::Reload).await
    }

    /// Creates an API rule (`create`: refuse an existing id) or creates/replaces one.
    pub async fn put(&self, spec: RuleSpec, create: bool) -> Result<Rule, AdminError> {
        self.ask(|reply| Command::Put {
            spec: Box::new(spec),
            create,
            reply,
        })
        .await
    }

    pub async fn delete(&self, id: String) -> Result<(), AdminError> {
        self.ask(|reply| Command::Delete { id, reply }).await
    }

    pub async fn set_enabled(&self, id: String, enabled: bool) -> Result<Rule, AdminError> {
        self.ask(|reply| Command::SetEnabled { id, enabled, reply })
            .await
    }
}

/// What the rule manager keeps up to date: the live snapshot, the per-rule counters it is built
/// with, the rule metrics and the status `/rawrxd/health` reports. The proxy's shared state
/// implements it (`crate::proxy::ProxyState`); naming only this trait keeps `live` below
/// `proxy` in the layers.
pub trait LiveSlot: Send + Sync + 'static {
    /// Where the rule files are.
    fn rules_dir(&self) -> &Path;
    /// The snapshot the rule manager swaps.
    fn live(&self) -> &ArcSwap<Live>;
    /// Per-rule counters, carried over from one snapshot to the next.
    fn counters(&self) -> &CounterRegistry;
    fn metrics(&self) -> &Metrics;
    fn lock_rule_status(&self) -> MutexGuard<'_, RuleStatus>;
}

/// The running manager: stop it with [`RuleManager::stop`].
pub struct RuleManager {
    handle: RulesHandle,
    thread: Option<JoinHandle<()>>,
    stop: Arc<Mutex<bool>>,
}

impl RuleManager {
    /// Loads the rule files into the store and the live set (an invalid rule set here is an
    /// error: the proxy does not start on rules it cannot read), then starts watching.
    pub fn start(state: Arc<dyn LiveSlot>, store: Store) -> Result<RuleManager, Vec<RuleError>> {
        let (sender, receiver) = mpsc::channel();
        let mut worker = Worker {
            dir: state.rules_dir().to_path_buf(),
            state,
            store,
            receiver,
            sender: sender.clone(),
            watcher: None,
            listing: Vec::new(),
            data_version: 0,
            rules_version: 0,
        };
        worker.reload_files()?;
        worker.watch();
        let stop = Arc::new(Mutex::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rawrxd-rules".into())
            .spawn(move || worker.run(stopped))
            .map_err(|e| {
                vec![RuleError {
                    file: PathBuf::new(),
                    line: None,
                    rule_id: None,
                    field: None,
                    message: format!("cannot start the rule manager: {e}"),
                }]
            })?;
        Ok(RuleManager {
            handle: RulesHandle { sender },
            thread: Some(thread),
            stop,
        })
    }

    pub fn handle(&self) -> RulesHandle {
        self.handle.clone()
    }

    /// Stops the thread (it finishes the command in hand first).
    pub fn stop(mut self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let _ = self.handle.sender.send(Command::Changed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    state: Arc<dyn LiveSlot>,
    store: Store,
    dir: PathBuf,
    receiver: Receiver<Command>,
    /// For the watcher's callback.
    sender: Sender<Command>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The rule directory as last listed: name, size, modification time.
    listing: Vec<(PathBuf, u64, Option<SystemTime>)>,
    data_version: i64,
    rules_version: i64,
}

impl Worker {
    fn run(mut self, stop: Arc<Mutex<bool>>) {
        let mut pending: Option<(Instant, Instant)> = None; // (first event, last event)
        let mut next_poll = Instant::now() + POLL_EVERY;
        let mut next_rescan = Instant::now() + RESCAN_EVERY;
        loop {
            let now = Instant::now();
            let mut wake = next_poll.min(next_rescan);
            if let Some((first, last)) = pending {
                wake = wake.min((last + DEBOUNCE).min(first + MAX_DELAY));
            }
            match self
                .receiver
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(Command::Changed) => {
                    if *stop.lock().unwrap_or_else(|e| e.into_inner()) {
                        return;
                    }
                    let now = Instant::now();
                    pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                }
                Ok(Command::Reload(reply)) => {
                    pending = None;
                    let result = self
                        .reload_files()
                        .map(|()| self.state.live().load().pipeline.table().rules.len())
                        .map_err(AdminError::Invalid);
                    let _ = reply.send(result);
                }
                Ok(Command::Put {
                    spec,
                    create,
                    reply,
                }) => {
                    let _ = reply.send(self.put(*spec, create));
                }
                Ok(Command::Delete { id, reply }) => {
                    let _ = reply.send(self.delete(&id));
                }
                Ok(Command::SetEnabled { id, enabled, reply }) => {
                    let _ = reply.send(self.set_enabled(&id, enabled));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if let Some((first, last)) = pending {
                if now >= last + DEBOUNCE || now >= first + MAX_DELAY {
                    pending = None;
                    let _ = self.reload_files();
                }
            }
            if now >= next_rescan {
                next_rescan = now + RESCAN_EVERY;
                if self.watcher.is_none() {
                    self.watch();
                }
                if list_dir(&self.dir) != self.listing {
                    tracing::debug!("rule directory changed (seen by the periodic re-check)");
                    let _ = self.reload_files();
                }
            }
            if now >= next_poll {
                next_poll = now + POLL_EVERY;
                self.poll_database();
            }
        }
    }

    /// Starts watching the rule directory (when it exists).
    fn watch(&mut self) {
        if !self.dir.is_dir() {
            return;
        }
        let sender = self.sender.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = sender.send(Command::Changed);
            }
        });
        match watcher {
            Ok(mut watcher) => match watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.watcher = Some(watcher),
                Err(error) => tracing::warn!(
                    dir = %self.dir.display(),
                    "cannot watch the rule directory ({error}); relying on the periodic re-check"
                ),
            },
            Err(error) => tracing::warn!("cannot start a file watcher: {error}"),
        }
    }

    /// Files → validate all → store (changed files only) → rebuild from the store.
    fn reload_files(&mut self) -> Result<(), Vec<RuleError>> {
        self.listing = list_dir(&self.dir);
        let result = self.sync_files().and_then(|()| self.rebuild());
        if let Err(errors) = &result {
            self.failed(errors.clone());
        }
        result
    }

    fn sync_files(&mut self) -> Result<(), Vec<RuleError>> {
        let rules = rules::load_dir(&self.dir)?;
        let api_ids = self.api_ids().map_err(|e| vec![store_error(e)])?;
        let clashes: Vec<RuleError> = rules
            .iter()
            .filter(|rule| api_ids.contains(&rule.id))
            .map(|rule| RuleError {
                file: rule.source.clone(),
                line: None,
                rule_id: Some(rule.id.clone()),
                field: Some("id".into()),
                message: "this id is taken by a rule created through the admin API; rename \
                          one of them (DELETE /rawrxd/rules/ID removes the API rule)"
                    .into(),
            })
            .collect();
        if !clashes.is_empty() {
            return Err(clashes);
        }
        let mut files: Vec<FileRules> = Vec::new();
        for rule in &rules {
            let path = rule.source.display().to_string();
            match files.last_mut() {
                Some(file) if file.path == path => file.specs.push(rule.to_spec()),
                _ => files.push(FileRules {
                    path,
                    specs: vec![rule.to_spec()],
                }),
            }
        }
        let report = self
            .store
            .sync_files(&files)
            .map_err(|e| vec![store_error(e)])?;
        for path in &report.written {
            tracing::info!(file = %path, "rule file stored");
        }
        for path in &report.removed {
            tracing::info!(file = %path, "rule file gone; its rules were removed");
        }
        Ok(())
    }

    fn api_ids(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .store
            .load_rules()?
            .into_iter()
            .filter(|r| r.source == API_SOURCE)
            .filter_map(|r| r.spec.id)
            .collect())
    }

    /// Reads every rule from the store, builds the live set and swaps it in.
    fn rebuild(&mut self) -> Result<(), Vec<RuleError>> {
        self.data_version = self.store.data_version().unwrap_or(self.data_version);
        self.rules_version = self.store.rules_version().unwrap_or(self.rules_version);
        let rules = self.stored_rules().map_err(|e| vec![store_error(e)])??;
        let live = build(rules, self.state.counters())?;
        let count = live.pipeline.table().rules.len();
        self.state.live().store(Arc::new(live));
        self.state.metrics().rules_loaded.set(count as i64);
        self.state.metrics().rules_valid.set(1);
        self.state
            .metrics()
            .reloads
            .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "ok" })
            .inc();
        let mut status = self.state.lock_rule_status();
        status.reloads += 1;
        status.last_reload = Some(SystemTime::now());
        status.errors.clear();
        status.failed_at = None;
        tracing::info!(rules = count, "rules live");
        Ok(())
    }

    /// Every stored rule, validated.
    fn stored_rules(&self) -> Result<Result<Vec<Rule>, Vec<RuleError>>, StoreError> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for stored in self.store.load_rules()? {
            let source = if stored.source == API_SOURCE {
                PathBuf::from(API_PATH)
            } else {
                PathBuf::from(&stored.source)
            };
            match rules::validate_spec(&source, None, &stored.spec) {
                Ok(mut rule) => {
                    if let Some(enabled) = stored.enabled_override {
                        rule.enabled = enabled;
                    }
                    rules.push(rule);
                }
                Err(e) => errors.extend(e),
            }
        }
        Ok(if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        })
    }

    fn failed(&mut self, errors: Vec<RuleError>) {
        for error in &errors {
            tracing::error!("rules not reloaded: {error}");
        }
        tracing::warn!("the last good rules stay live");
        self.state.metrics().rules_valid.set(0);
        self.state
            .metrics()
            .reloads
            .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "error" })
            .inc();
        let mut status = self.state.lock_rule_status();
        status.failures += 1;
        status.errors = errors;
        status.failed_at = Some(SystemTime::now());
    }

    /// Rebuilds when another program changed the rules in the database.
    fn poll_database(&mut self) {
        let Ok(data_version) = self.store.data_version() else {
            return;
        };
        if data_version == self.data_version {
            return;
        }
        self.data_version = data_version;
        match self.store.rules_version() {
            Ok(version) if version != self.rules_version => {
                tracing::info!("rules changed in the database; rebuilding");
                if let Err(errors) = self.rebuild() {
                    self.failed(errors);
                }
            }
            _ => {}
        }
    }

    fn source_of(&self, id: &str) -> Result<Option<String>, AdminError> {
        Ok(self.store.rule_source(id)?)
    }

    fn put(&mut self, spec: RuleSpec, create: bool) -> Result<Rule, AdminError> {
        let rule =
            rules::validate_spec(Path::new(API_PATH), None, &spec).map_err(AdminError::Invalid)?;
        match self.source_of(&rule.id)? {
            Some(source) if source != API_SOURCE => {
                return Err(AdminError::Conflict(format!(
                    "rule {:?} is defined in {source}; edit that file (the API can only enable \
                     or disable it)",
                    rule.id
                )))
            }
            Some(_) if create => {
                return Err(AdminError::Conflict(format!(
                    "rule {:?} already exists; PUT /rawrxd/rules/{} replaces it",
                    rule.id, rule.id
                )))
            }
            _ => {}
        }
        // Check that the whole set still compiles before writing anything.
        let mut candidate = self.stored_rules()?.map_err(AdminError::Invalid)?;
        candidate.retain(|r| r.id != rule.id);
        candidate.push(rule.clone());
        Pipeline::new(candidate).map_err(AdminError::Invalid)?;
        self.store.put_api_rule(&rule.to_spec())?;
        self.rebuild().map_err(AdminError::Invalid)?;
        self.find(&rule.id)
    }

    fn delete(&mut self, id: &str) -> Result<(), AdminError> {
        match self.source_of(id)? {
            None => Err(AdminError::NotFound(format!("no rule {id:?}"))),
            Some(source) if source != API_SOURCE => Err(AdminError::Conflict(format!(
                "rule {id:?} is defined in {source}; remove it from that file (or disable it \
                 with POST /rawrxd/rules/{id}/disable)"
            ))),
            Some(_) => {
                self.store.delete_rule(id)?;
                self.rebuild().map_err(AdminError::Invalid)
            }
        }
    }

    fn set_enabled(&mut self, id: &str, enabled: bool) -> Result<Rule, AdminError> {
        if self.source_of(id)?.is_none() {
            return Err(AdminError::NotFound(format!("no rule {id:?}")));
        }
        self.store.set_enabled(id, enabled)?;
        self.rebuild().map_err(AdminError::Invalid)?;
        self.find(id)
    }

    fn find(&self, id: &str) -> Result<Rule, AdminError> {
        self.state
            .live()
            .load()
            .pipeline
            .table()
            .rules
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| AdminError::NotFound(format!("no rule {id:?}")))
    }
}

/// Validated rules → a live snapshot whose counters continue from `counters`.
pub fn build(rules: Vec<Rule>, counters: &CounterRegistry) -> Result<Live, Vec<RuleError>> {
    Live::from_pipeline(Pipeline::with_counters(rules, counters)?)
}

fn store_error(error: StoreError) -> RuleError {
    RuleError {
        file: PathBuf::from("rawrxd.db"),
        line: None,
        rule_id: None,
        field: None,
        message: error.to_string(),
    }
}

/// `*.toml` files in `dir` with their size and modification time, sorted.
fn list_dir(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut listing: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (p, size, modified)
        })
        .collect();
    listing.sort();
    listing
}
