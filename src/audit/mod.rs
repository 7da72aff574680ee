//! The audit trail: every applied (or shadowed) rule becomes one line in
//! `logs/corrections.log` (path fixes also in `logs/navigation_fixes.log`) and one row in the
//! `corrections` table, searchable with full-text search.
//!
//! **Nothing here runs on the request path.** The request path hands [`Hit`]s to a
//! [`HitSink`], which counts them and pushes [`AuditEvent`]s into a bounded channel with
//! `try_send`: if the writer falls behind, the event is dropped and counted
//! (`rawrxd_audit_lines_dropped_total`), never waited for. One writer thread drains the channel
//! in batches: one `write` of whole lines per batch (the file is opened for appending and
//! written without a userspace buffer, so a killed process leaves only whole lines behind; a
//! torn tail from a crash mid-write is cut off at the next start), then one SQLite transaction.
//!
//! The `corrections` table is pruned by the same thread ([`Retention`]: `audit_retention`,
//! `audit_max_rows`): when the writer starts, every [`PRUNE_INTERVAL`] after that, and
//! sooner when many rows have arrived. A prune is planned once (the age cut and the id cut
//! for the row limit), then runs in steps of at most [`PRUNE_BATCH`] rows, one transaction
//! each, with a batch of new events written between two steps, so writing never waits for
//! more than one step. The FTS index follows by trigger, in the same transaction.
//!
//! The log rotates by size: `corrections.log` becomes `corrections.log.1.gz` (older ones shift
//! to `.2.gz` … up to `keep`), compressed with flate2.
//!
//! Line formats (DESIGN.md):
//! `2025-01-20T14:32:45Z | Type: invalid_path | Rule: fix-paths | Confidence: 0.92 | Detected: "src/mian.rs" | Corrected: "src/main.rs"`
//! and `2025-01-20T14:32:45Z | From: src/mian.rs | To: src/main.rs | Effectiveness: 0.95 | Reasoning: edit_distance`.
//! Text is quoted JSON-style, so a newline in a match never breaks a line; shadow-mode lines
//! end with ` | Mode: shadow`.
//!
//! May use: `patch` (the `Hit` type), `store`, `rules`, `telemetry`. Used by `proxy`, `app`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::patch::Hit;
use crate::rules::{Endpoint, Kind};
use crate::store::{Correction, PrunePlan, Retention, Store};
use crate::telemetry::metrics::{Metrics, RuleLabels};

/// File names inside the log directory.
pub const CORRECTIONS_LOG: &str = "corrections.log";
pub const NAVIGATION_LOG: &str = "navigation_fixes.log";

/// Events waiting for the writer before new ones are dropped.
const CHANNEL_CAPACITY: usize = 16_384;
/// Most events written in one batch (one write, one transaction).
const MAX_BATCH: usize = 1024;
/// Longest detected/corrected text written into a log line, in characters (the database row
/// keeps the whole text).
const MAX_LOGGED_CHARS: usize = 512;
/// Most rows one prune step deletes (one transaction, a few milliseconds).
pub const PRUNE_BATCH: usize = 2_000;
/// Time between two prunes of the corrections table when few rows arrive.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(300);
/// A prune also starts once this many rows were written since the last one (or a tenth of
/// `max_rows`, if smaller, but at least one batch), so the table stays near its row limit
/// under a flood of corrections.
const PRUNE_AFTER_ROWS: u64 = 100_000;

/// One correction on its way to the writer.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: SystemTime,
    pub rule_id: String,
    pub kind: Kind,
    pub shadow: bool,
    pub confidence: f64,
    /// Already masked for redact rules.
    pub detected: String,
    pub corrected: String,
    pub model: Arc<str>,
    pub endpoint: &'static str,
    /// Path rules: the class of the fix or why it is only flagged.
    pub reasoning: Option<String>,
    /// A path rule only flagged it (`fabricated_path`; text unchanged).
    pub flagged: bool,
}

/// Where the writer puts things and when it rotates.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub log_dir: PathBuf,
    pub db_path: PathBuf,
    /// Rotate `corrections.log` (and `navigation_fixes.log`) when it reaches this size.
    pub max_log_bytes: u64,
    /// Compressed logs kept per file.
    pub keep: usize,
    /// How long, and how many, rows of the corrections table are kept.
    pub retention: Retention,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create the log directory {path}: {source}")]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The sending half, shared by every request; see the module docs.
pub struct Audit {
    sender: Mutex<Option<SyncSender<AuditEvent>>>,
    metrics: Arc<Metrics>,
    /// Lines written and committed by the writer.
    pub written: Arc<AtomicU64>,
    pub dropped: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Audit {
    /// Opens the log files and the database, and starts the writer thread.
    pub fn start(config: AuditConfig, metrics: Arc<Metrics>) -> Result<Arc<Audit>, AuditError> {
        let logs = LogFiles::open(&config)?;
        let store = Store::open(&config.db_path)?;
        let (sender, receiver) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            receiver,
            logs,
            store,
            written: written.clone(),
            metrics: metrics.clone(),
            last_error: None,
            pruner: Pruner::new(config.retention),
        };
        let handle = std::thread::Builder::new()
            .name("rawrxd-audit".into())
            .spawn(move || writer.run())
            .map_err(|source| AuditError::Open {
                path: config.log_dir.clone(),
                source,
            })?;
        Ok(Arc::new(Audit {
            sender: Mutex::new(Some(sender)),
            metrics,
            written,
            dropped: AtomicU64::new(0),
            writer: Mutex::new(Some(handle)),
        }))
    }

    /// Queues one event; never blocks.
    pub fn record(&self, event: AuditEvent) {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = sender.as_ref() else {
            return;
        };
        match sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.audit_dropped.inc();
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped = dropped + 1,
                        "audit writer is behind; corrections are counted but not logged"
                    );
                }
            }
        }
    }

    /// Stops taking events, lets the writer finish what it has, and waits for it.
    pub fn close(&self) {
        drop(self.sender.lock().unwrap_or_else(|e| e.into_inner()).take());
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// What the request path holds to report one request's corrections.
/// An agent failure a `detect` rule saw, for the audit.
#[derive(Debug, Clone)]
pub struct FailureEvent {
    pub rule_id: String,
    pub shadow: bool,
    pub confidence: f64,
    /// `refusal`, …, `pattern`.
    pub detector: &'static str,
    /// What was done: `audit`, `retry`, `stop`, or why nothing could be (`delivered`).
    pub action: String,
    /// The failing answer (for a retry: the first answer's text) or what showed the failure.
    pub detected: String,
    /// For a retry: the answer delivered instead; for a stop: where it was cut.
    pub corrected: String,
    pub evidence: String,
}

#[derive(Clone)]
pub struct HitSink {
    pub audit: Option<Arc<Audit>>,
    pub metrics: Arc<Metrics>,
    pub model: Arc<str>,
    pub endpoint: Endpoint,
}

impl HitSink {
    /// One `agent_failure` line (and row): the detector, its confidence, what was done and
    /// why, in `Reasoning`.
    pub fn record_failure(&self, failure: FailureEvent) {
        let mode = if failure.shadow { "shadow" } else { "enforce" };
        self.metrics
            .rule_hits
            .get_or_create(&RuleLabels {
                rule: failure.rule_id.clone(),
                mode,
            })
            .inc();
        tracing::info!(
            target: "rawrxd::detect",
            rule = %failure.rule_id,
            detector = failure.detector,
            action = %failure.action,
            shadow = failure.shadow,
            "agent failure: {}",
            failure.evidence
        );
        if let Some(audit) = &self.audit {
            audit.record(AuditEvent {
                at: SystemTime::now(),
                rule_id: failure.rule_id,
                kind: Kind::Detect,
                shadow: failure.shadow,
                confidence: failure.confidence,
                detected: failure.detected,
                corrected: failure.corrected,
                model: self.model.clone(),
                endpoint: self.endpoint.name(),
                reasoning: Some(format!(
                    "detector={} action={} evidence={}",
                    failure.detector, failure.action, failure.evidence
                )),
                flagged: false,
            });
        }
    }

    pub fn record(&self, hits: Vec<Hit>) {
        for hit in hits {
            let detected = if hit.kind == Kind::Redact {
                mask_secret(&hit.detected)
            } else {
                hit.detected
            };
            let mode = if hit.shadow { "shadow" } else { "enforce" };
            self.metrics
                .rule_hits
                .get_or_create(&RuleLabels {
                    rule: hit.rule_id.clone(),
                    mode,
                })
                .inc();
            tracing::debug!(
                target: "rawrxd::correction",
                rule = %hit.rule_id,
                kind = hit.kind.name(),
                shadow = hit.shadow,
                detected = %detected,
                corrected = %hit.corrected,
            );
            if let Some(audit) = &self.audit {
                let (confidence, reasoning, flagged) = match hit.path {
                    Some(note) => (note.confidence, Some(note.reasoning), note.flagged),
                    None => (1.0, None, false),
                };
                audit.record(AuditEvent {
                    at: SystemTime::now(),
                    rule_id: hit.rule_id,
                    kind: hit.kind,
                    shadow: hit.shadow,
                    confidence,
                    detected,
                    corrected: hit.corrected,
                    model: self.model.clone(),
                    endpoint: self.endpoint.name(),
                    reasoning,
                    flagged,
                });
            }
        }
    }
}

/// The log line's `Type` for an event: its kind's, or `fabricated_path` for a flagged path.
pub fn event_label(event: &AuditEvent) -> &'static str {
    if event.flagged {
        "fabricated_path"
    } else {
        type_label(event.kind)
    }
}

/// The log line's `Type` for a rule kind.
pub fn type_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Replace => "token_replacement",
        Kind::Regex => "regex_filter",
        Kind::Redact => "secret_redacted",
        Kind::Block => "blocked_content",
        Kind::Path => "invalid_path",
        Kind::SystemPrompt | Kind::Param | Kind::Stop | Kind::Alias => "behavior_patch",
        Kind::Detect => "agent_failure",
    }
}

/// `"text"`, JSON-escaped, cut to [`MAX_LOGGED_CHARS`].
fn quoted(text: &str) -> String {
    let cut: String;
    let text = if text.chars().count() > MAX_LOGGED_CHARS {
        cut = text.chars().take(MAX_LOGGED_CHARS).chain(['…']).collect();
        &cut
    } else {
        text
    };
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// A path, unquoted unless it holds something that would break the line or its fields.
fn bare(text: &str) -> String {
    if text.chars().any(|c| c.is_control() || c == '|') || text.trim() != text {
        quoted(text)
    } else {
        text.chars().take(MAX_LOGGED_CHARS).collect()
    }
}

/// The `corrections.log` line for one event (with its newline).
pub fn correction_line(event: &AuditEvent, ts: &str) -> String {
    let mut line = format_line(
        ts,
        event_label(event),
        &event.rule_id,
        event.confidence,
        &event.detected,
        &event.corrected,
        event.shadow,
    );
    // A flagged path says why (ambiguous between which files, how far), since no navigation
    // line is written for it.
    let says_why = event.flagged || event.kind == Kind::Detect;
    if let (true, Some(reasoning)) = (says_why, &event.reasoning) {
        line.pop();
        line.push_str(" | Reasoning: ");
        line.push_str(&quoted(reasoning));
        line.push('\n');
    }
    line
}

/// The `corrections.log` line for a stored correction (as `rawrxd audit search` prints it).
pub fn stored_line(c: &Correction) -> String {
    format_line(
        &c.ts,
        &c.kind_label,
        &c.rule_id,
        c.confidence,
        &c.detected,
        &c.corrected,
        c.mode == "shadow",
    )
}

fn format_line(
    ts: &str,
    kind_label: &str,
    rule_id: &str,
    confidence: f64,
    detected: &str,
    corrected: &str,
    shadow: bool,
) -> String {
    let mut line = format!(
        "{ts} | Type: {kind_label} | Rule: {} | Confidence: {confidence:.2} | Detected: {} | \
         Corrected: {}",
        bare(rule_id),
        quoted(detected),
        quoted(corrected),
    );
    if shadow {
        line.push_str(" | Mode: shadow");
    }
    line.push('\n');
    line
}

/// The `navigation_fixes.log` line for a path fix (with its newline).
pub fn navigation_line(event: &AuditEvent, ts: &str, reasoning: &str) -> String {
    format!(
        "{ts} | From: {} | To: {} | Effectiveness: {:.2} | Reasoning: {reasoning}\n",
        bare(&event.detected),
        bare(&event.corrected),
        event.confidence,
    )
}

/// One append-only log file and its rotation.
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: usize,
}

impl LogFile {
    fn open(dir: &Path, name: &str, max: u64, keep: usize) -> Result<LogFile, AuditError> {
        let path = dir.join(name);
        let open_error = |source| AuditError::Open {
            path: path.clone(),
            source,
        };
        repair_torn_tail(&path).map_err(open_error)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(open_error)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path,
            file,
            size,
            max,
            keep,
        })
    }

    /// Appends whole lines with one write call, then rotates if the file is full.
    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.file.write_all(lines)?;
        self.size += lines.len() as u64;
        if self.size >= self.max {
            self.rotate()?;
        }
        Ok(())
    }

    /// `x.log` → `x.log.1.gz`, shifting older ones up and dropping the oldest past `keep`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}.gz", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            if numbered(n).exists() {
                std::fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        let plain = PathBuf::from(format!("{}.1", self.path.display()));
        std::fs::rename(&self.path, &plain)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        if self.keep == 0 {
            return std::fs::remove_file(&plain);
        }
        compress(&plain, &numbered(1))?;
        std::fs::remove_file(&plain)
    }
}

/// Gzips `from` into `to` through a temporary file, so `to` is whole or absent.
fn compress(from: &Path, to: &Path) -> std::io::Result<()> {
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    let mut input = File::open(from)?;
    let output = File::create(&partial)?;
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
    std::io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    std::fs::rename(&partial, to)
}

/// Cuts a log back to its last whole line (a crash can leave a partial last write).
fn repair_torn_tail(path: &Path) -> std::io::Result<()> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Look back at most 64 KiB for the last newline; lines are far shorter.
    let window = len.min(64 << 10);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => len - window + i as u64 + 1,
        None if window == len => 0,
        None => return Ok(()),
    };
    tracing::warn!(
        path = %path.display(),
        cut = len - keep,
        "cutting a partial last line left by a crash"
    );
    file.set_len(keep)
}

struct LogFiles {
    corrections: LogFile,
    navigation: LogFile,
}

impl LogFiles {
    fn open(config: &AuditConfig) -> Result<LogFiles, AuditError> {
        std::fs::create_dir_all(&config.log_dir).map_err(|source| AuditError::LogDir {
            path: config.log_dir.clone(),
            source,
        })?;
        let open = |name| LogFile::open(&config.log_dir, name, config.max_log_bytes, config.keep);
        Ok(LogFiles {
            corrections: open(CORRECTIONS_LOG)?,
            navigation: open(NAVIGATION_LOG)?,
        })
    }
}

struct Writer {
    receiver: Receiver<AuditEvent>,
    logs: LogFiles,
    store: Store,
    written: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// The last error reported, so a full disk is not reported once per batch.
    last_error: Option<String>,
    pruner: Pruner,
}

/// When the corrections table is pruned next, and the prune in progress.
struct Pruner {
    retention: Retention,
    /// The prune under way: more steps to run.
    plan: Option<PrunePlan>,
    /// Rows deleted by the prune under way.
    deleted: u64,
    next_at: Instant,
    rows_since: u64,
    rows_trigger: u64,
}

impl Pruner {
    fn new(retention: Retention) -> Pruner {
        let tenth = retention
            .max_rows
            .map_or(PRUNE_AFTER_ROWS, |rows| rows / 10);
        Pruner {
            retention,
            plan: None,
            deleted: 0,
            // Due at once: the first prune runs when the writer starts.
            next_at: Instant::now(),
            rows_since: 0,
            rows_trigger: tenth.clamp(MAX_BATCH as u64, PRUNE_AFTER_ROWS),
        }
    }

    /// How long the writer may wait for events before the next step is due.
    fn wait(&self, now: Instant) -> Duration {
        if self.retention.is_off() {
            PRUNE_INTERVAL
        } else if self.plan.is_some() || self.rows_since >= self.rows_trigger {
            Duration::ZERO
        } else {
            self.next_at.saturating_duration_since(now)
        }
    }

    fn due(&self, now: Instant) -> bool {
        !self.retention.is_off()
            && (self.plan.is_some() || self.rows_since >= self.rows_trigger || now >= self.next_at)
    }

    fn finish(&mut self, now: Instant) {
        self.plan = None;
        self.deleted = 0;
        self.rows_since = 0;
        self.next_at = now + PRUNE_INTERVAL;
    }
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            // Ends when every sender is gone and the channel is drained.
            match self.receiver.recv_timeout(self.pruner.wait(Instant::now())) {
                Ok(first) => {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match self.receiver.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    self.write(&batch);
                    self.pruner.rows_since += batch.len() as u64;
                    batch.clear();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // At most one bounded step between two batches.
            self.prune_step();
        }
        tracing::debug!("audit writer stopped");
    }

    /// One step of the prune under way, or the start of a new one when it is due.
    fn prune_step(&mut self) {
        let now = Instant::now();
        if !self.pruner.due(now) {
            return;
        }
        let plan = match self.pruner.plan {
            Some(plan) => plan,
            None => {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis() as i64;
                match self.store.plan_prune(&self.pruner.retention, now_ms) {
                    Ok(plan) if plan.is_empty() => return self.pruner.finish(now),
                    Ok(plan) => plan,
                    Err(error) => {
                        self.report(format!("cannot prune the corrections table: {error}"));
                        return self.pruner.finish(now);
                    }
                }
            }
        };
        match self.store.prune_step(&plan, PRUNE_BATCH) {
            Ok(deleted) => {
                self.metrics.audit_pruned.inc_by(deleted as u64);
                self.pruner.deleted += deleted as u64;
                if deleted < PRUNE_BATCH {
                    if self.pruner.deleted > 0 {
                        tracing::info!(
                            rows = self.pruner.deleted,
                            "pruned old corrections (audit_retention, audit_max_rows)"
                        );
                    }
                    self.pruner.finish(Instant::now());
                } else {
                    self.pruner.plan = Some(plan);
                }
            }
            Err(error) => {
                self.report(format!("cannot prune the corrections table: {error}"));
                self.pruner.finish(now);
            }
        }
    }

    fn write(&mut self, batch: &[AuditEvent]) {
        let mut corrections = String::new();
        let mut navigation = String::new();
        let mut rows = Vec::with_capacity(batch.len());
        for event in batch {
            let ts = humantime::format_rfc3339_seconds(event.at).to_string();
            corrections.push_str(&correction_line(event, &ts));
            if event.kind == Kind::Path && !event.shadow && !event.flagged {
                let reasoning = event.reasoning.as_deref().unwrap_or("path_index");
                navigation.push_str(&navigation_line(event, &ts, reasoning));
            }
            rows.push(Correction {
                ts_ms: event
                    .at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis() as i64,
                ts,
                kind_label: event_label(event).into(),
                rule_id: event.rule_id.clone(),
                kind: event.kind.name().into(),
                mode: if event.shadow { "shadow" } else { "enforce" }.into(),
                model: event.model.to_string(),
                endpoint: event.endpoint.into(),
                confidence: event.confidence,
                detected: event.detected.clone(),
                corrected: event.corrected.clone(),
            });
        }
        let logged = self
            .logs
            .corrections
            .append(corrections.as_bytes())
            .and_then(|()| self.logs.navigation.append(navigation.as_bytes()));
        if let Err(error) = logged {
            self.report(format!("cannot write the audit log: {error}"));
        }
        match self.store.insert_corrections(&rows) {
            Ok(()) => {
                self.written.fetch_add(rows.len() as u64, Ordering::Relaxed);
                self.metrics.audit_written.inc_by(rows.len() as u64);
                self.last_error = None;
            }
            Err(error) => self.report(format!("cannot store corrections: {error}")),
        }
    }

    fn report(&mut self, message: String) {
        if self.last_error.as_ref() != Some(&message) {
            tracing::error!("{message}");
            self.last_error = Some(message);
        }
    }
}

/// The first four characters and a length: enough to find a secret, not enough to use it.
pub fn mask_secret(secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    format!("{head}…({} chars)", secret.chars().count())
}

#[cfg(test)]
mod tests;
