//! The SQLite store (`rawrxd.db`): rules and the corrections audit table.
//!
//! The schema comes from the numbered SQL files in `migrations/`, compiled into the binary and
//! applied in order when the store opens; each applied file is recorded in
//! `schema_migrations`. A database that records a migration this binary does not know was
//! written by a newer rawrxd and is refused rather than guessed at.
//!
//! **The live rule set is always built from here**: rule files are synced into the store
//! ([`Store::sync_files`]) and the admin API writes here, then the reloader reads every rule
//! back ([`Store::load_rules`]). Other programs may write rules too; `meta.rules_version`
//! (kept by triggers) tells a rule change apart from an audit write.
//!
//! Every write runs in an `IMMEDIATE` transaction: two connections write this file (the rule
//! manager and the audit writer), and a deferred transaction that read first would fail at
//! once with `SQLITE_BUSY` instead of waiting for the other's commit.
//!
//! A [`Store`] is one blocking rusqlite connection: it lives on a background thread (the
//! reloader, the audit writer) or inside `spawn_blocking`, never on a runtime worker.
//!
//! May use: `rules`. Used by `audit`, `live`, `proxy`, `app`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::rules::{Kind, RuleSpec};

/// Every migration, in order: (version, file name, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "0001_init.sql",
    include_str!("../../migrations/0001_init.sql"),
)];

/// `source` of rules written through the admin API (or by another program).
pub const API_SOURCE: &str = "api";

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} was written by a newer rawrxd (schema version {found}; this \
         binary knows up to {known}); upgrade rawrxd or point --db at another file"
    )]
    Newer {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the database {path} has no rawrxd schema (run the proxy once to create it)")]
    NoSchema { path: PathBuf },
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("rule {id:?} is stored with an unreadable spec: {reason}")]
    BadRow { id: String, reason: String },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// One rule file's rules, ready to store.
#[derive(Debug, Clone)]
pub struct FileRules {
    /// The file's path as the rule directory lists it.
    pub path: String,
    /// The rules' specs in file order (defaults spelled out, see [`crate::rules::Rule::to_spec`]).
    pub specs: Vec<RuleSpec>,
}

impl FileRules {
    /// A digest of the rules (not of the file's text: comment edits change nothing).
    fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for spec in &self.specs {
            hasher.update(serde_json::to_vec(spec).unwrap_or_default());
            hasher.update(b"\n");
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What [`Store::sync_files`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Files whose rules were (re)written.
    pub written: Vec<String>,
    /// Files that disappeared; their rules were deleted.
    pub removed: Vec<String>,
}

/// One rule as stored.
#[derive(Debug, Clone)]
pub struct StoredRule {
    pub spec: RuleSpec,
    /// A rule file's path, or [`API_SOURCE`].
    pub source: String,
    /// The admin API's enable/disable switch, when set; it wins over the spec.
    pub enabled_override: Option<bool>,
}

/// One correction, as logged and stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Correction {
    pub ts: String,
    pub ts_ms: i64,
    #[serde(rename = "type")]
    pub kind_label: String,
    pub rule_id: String,
    pub kind: String,
    pub mode: String,
    pub model: String,
    pub endpoint: String,
    pub confidence: f64,
    pub detected: String,
    pub corrected: String,
}

/// A search of the corrections table; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct CorrectionQuery {
    /// Words that must all appear (in the rule id, the detected or corrected text, the model).
    pub text: Option<String>,
    pub rule: Option<String>,
    /// Unix milliseconds; only corrections at or after this time.
    pub since_ms: Option<i64>,
    pub limit: usize,
}

/// How long, and how many, corrections are kept; see [`Store::plan_prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Rows older than this go (`None`: kept whatever their age).
    pub max_age: Option<Duration>,
    /// Only the newest this many rows stay (`None`: no row limit).
    pub max_rows: Option<u64>,
}

impl Retention {
    /// True when nothing is ever pruned.
    pub fn is_off(&self) -> bool {
        self.max_age.is_none() && self.max_rows.is_none()
    }
}

/// What one prune of the corrections table removes, fixed when the prune starts: rows
/// stamped before `before_ms` and rows with an id up to `through_id` (the oldest ones past
/// the row limit). Rows written after the plan was made are never in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunePlan {
    pub before_ms: Option<i64>,
    pub through_id: Option<i64>,
}

impl PrunePlan {
    pub fn is_empty(&self) -> bool {
        self.before_ms.is_none() && self.through_id.is_none()
    }
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database, switches it to WAL and applies migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn };
        store.migrate(path)?;
        Ok(store)
    }

    /// Opens an existing database for reading (the CLI's `audit search`); never creates or
    /// upgrades it.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let store = Store { conn };
        match store.schema_version() {
            Ok(0) | Err(_) => Err(StoreError::NoSchema {
                path: path.to_path_buf(),
            }),
            Ok(found) if found > known_version() => Err(StoreError::Newer {
                path: path.to_path_buf(),
                found,
                known: known_version(),
            }),
            Ok(_) => Ok(store),
        }
    }

    fn schema_version(&self) -> Result<i64, rusqlite::Error> {
        self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
    }

    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY NOT NULL,
                 name TEXT NOT NULL,
                 applied_at TEXT NOT NULL
             )",
        )?;
        let current = self.schema_version()?;
        if current > known_version() {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found: current,
                known: known_version(),
            });
        }
        for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)
                .map_err(|source| StoreError::Migration { name, source })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, now_text()],
            )?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            tracing::info!(version, name, db = %path.display(), "database migrated");
        }
        Ok(())
    }

    /// SQLite's `PRAGMA data_version`: changes when another connection commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    /// Goes up on every change to the rules (by any connection).
    pub fn rules_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT value FROM meta WHERE key = 'rules_version'",
            [],
            |row| row.get(0),
        )?)
    }

    /// Makes the stored file rules match `files` (every rule file there is now), in one
    /// transaction: files whose rules changed are rewritten, files that are gone are deleted,
    /// the others are left alone. Rules from the API are not touched.
    pub fn sync_files(&mut self, files: &[FileRules]) -> Result<SyncReport, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: HashMap<String, String> = {
            let mut statement = tx.prepare("SELECT path, sha256 FROM rule_files")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut report = SyncReport::default();
        let now = now_text();
        for file in files {
            let digest = file.digest();
            if stored.get(&file.path) == Some(&digest) {
                continue;
            }
            delete_source(&tx, &file.path)?;
            for (position, spec) in file.specs.iter().enumerate() {
                insert_rule(&tx, spec, &file.path, position as i64, &now)?;
            }
            tx.execute(
                "INSERT INTO rule_files (path, sha256, rules, stored_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (path) DO UPDATE SET sha256 = ?2, rules = ?3, stored_at = ?4",
                params![file.path, digest, file.specs.len() as i64, now],
            )?;
            report.written.push(file.path.clone());
        }
        for path in stored.keys() {
            if !files.iter().any(|f| &f.path == path) {
                delete_source(&tx, path)?;
                tx.execute("DELETE FROM rule_files WHERE path = ?1", [path])?;
                report.removed.push(path.clone());
            }
        }
        report.removed.sort();
        tx.commit()?;
        Ok(report)
    }

    /// Every stored rule: file rules first (by path, then file order), then API rules in the
    /// order they were created.
    pub fn load_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT r.id, r.spec, r.source, o.enabled FROM (
                 SELECT id, spec, source, position FROM correction_patterns
                 UNION ALL
                 SELECT id, spec, source, position FROM behavior_patches
             ) AS r LEFT JOIN rule_overrides AS o ON o.id = r.id
             ORDER BY r.source = 'api', r.source, r.position, r.id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<bool>>(3)?,
            ))
        })?;
        let mut rules = Vec::new();
        for row in rows {
            let (id, spec, source, enabled_override) = row?;
            let spec: RuleSpec = serde_json::from_str(&spec).map_err(|e| StoreError::BadRow {
                id: id.clone(),
                reason: e.to_string(),
            })?;
            // The row's id column is the truth; a spec that disagrees is made to agree.
            let spec = RuleSpec {
                id: Some(id),
                ..spec
            };
            rules.push(StoredRule {
                spec,
                source,
                enabled_override,
            });
        }
        Ok(rules)
    }

    /// Where rule `id` comes from (a file path or [`API_SOURCE`]), if it exists.
    pub fn rule_source(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT source FROM correction_patterns WHERE id = ?1
                 UNION ALL SELECT source FROM behavior_patches WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Stores an API rule, replacing the API rule of the same id (its position is kept).
    pub fn put_api_rule(&mut self, spec: &RuleSpec) -> Result<(), StoreError> {
        let id = spec.id.clone().unwrap_or_default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let position: Option<i64> = tx
            .query_row(
                "SELECT position FROM correction_patterns WHERE id = ?1 AND source = 'api'
                 UNION ALL
                 SELECT position FROM behavior_patches WHERE id = ?1 AND source = 'api'",
                [&id],
                |row| row.get(0),
            )
            .optional()?;
        let position = match position {
            Some(p) => p,
            None => tx.query_row(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM (
                     SELECT position FROM correction_patterns WHERE source = 'api'
                     UNION ALL SELECT position FROM behavior_patches WHERE source = 'api')",
                [],
                |row| row.get(0),
            )?,
        };
        let created: Option<String> = tx
            .query_row(
                "SELECT created_at FROM correction_patterns WHERE id = ?1
                 UNION ALL SELECT created_at FROM behavior_patches WHERE id = ?1",
                [&id],
                |row| row.get(0),
            )
            .optional()?;
        tx.execute("DELETE FROM correction_patterns WHERE id = ?1", [&id])?;
        tx.execute("DELETE FROM behavior_patches WHERE id = ?1", [&id])?;
        let now = now_text();
        insert_rule(&tx, spec, API_SOURCE, position, &now)?;
        if let Some(created) = created {
            for table in ["correction_patterns", "behavior_patches"] {
                tx.execute(
                    &format!("UPDATE {table} SET created_at = ?2 WHERE id = ?1"),
                    params![id, created],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes rule `id` and its switch; true when it existed.
    pub fn delete_rule(&mut self, id: &str) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx.execute("DELETE FROM correction_patterns WHERE id = ?1", [id])?
            + tx.execute("DELETE FROM behavior_patches WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM rule_overrides WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    /// Sets the admin switch of rule `id` (it outlives edits of the rule's file).
    pub fn set_enabled(&mut self, id: &str, enabled: bool) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO rule_overrides (id, enabled, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET enabled = ?2, updated_at = ?3",
            params![id, enabled, now_text()],
        )?;
        Ok(())
    }

    /// Appends corrections in one transaction.
    pub fn insert_corrections(&mut self, rows: &[Correction]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut statement = tx.prepare_cached(
                "INSERT INTO corrections (ts, ts_ms, type, rule_id, kind, mode, model, endpoint,
                                          confidence, detected, corrected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for c in rows {
                statement.execute(params![
                    c.ts,
                    c.ts_ms,
                    c.kind_label,
                    c.rule_id,
                    c.kind,
                    c.mode,
                    c.model,
                    c.endpoint,
                    c.confidence,
                    c.detected,
                    c.corrected
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What a prune at `now_ms` (Unix milliseconds) must remove to honour `retention`.
    ///
    /// The row limit keeps the rows among the newest `max_rows` ids: ids only grow (the
    /// writer is the only inserter), so that is the newest `max_rows` rows, or fewer when
    /// some of them were already pruned by age. Two index lookups (`MIN(id)`, `MAX(id)`), so
    /// planning costs nothing however large the table is (walking a million ids to count them
    /// exactly took ~230 ms, all of it a pause in writing).
    pub fn plan_prune(&self, retention: &Retention, now_ms: i64) -> Result<PrunePlan, StoreError> {
        let before_ms = retention
            .max_age
            .map(|age| now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
        let through_id = match retention.max_rows {
            None => None,
            Some(max_rows) => {
                let max_rows = i64::try_from(max_rows).unwrap_or(i64::MAX);
                let (min, max): (Option<i64>, Option<i64>) = self.conn.query_row(
                    // Two subqueries: SQLite answers a lone MIN or MAX from the index,
                    // but scans the table for `SELECT MIN(id), MAX(id)`.
                    "SELECT (SELECT MIN(id) FROM corrections), (SELECT MAX(id) FROM corrections)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                match (min, max) {
                    (Some(min), Some(max)) if max.saturating_sub(min) >= max_rows => {
                        Some(max - max_rows)
                    }
                    _ => None,
                }
            }
        };
        Ok(PrunePlan {
            before_ms,
            through_id,
        })
    }

    /// Deletes at most `limit` rows of `plan` (oldest first) in one transaction, and returns
    /// how many went; fewer than `limit` means the plan is done. The FTS index follows through
    /// the `corrections_ad` trigger (migrations/0001_init.sql), in the same transaction.
    pub fn prune_step(&mut self, plan: &PrunePlan, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut deleted: i64 = 0;
        if let Some(through_id) = plan.through_id {
            deleted += tx.execute(
                "DELETE FROM corrections WHERE id IN (
                     SELECT id FROM corrections WHERE id <= ?1 ORDER BY id LIMIT ?2)",
                params![through_id, limit],
            )? as i64;
        }
        if let Some(before_ms) = plan.before_ms.filter(|_| deleted < limit) {
            deleted += tx.execute(
                "DELETE FROM corrections WHERE id IN (
                     SELECT id FROM corrections WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT ?2)",
                params![before_ms, limit - deleted],
            )? as i64;
        }
        tx.commit()?;
        Ok(usize::try_from(deleted).unwrap_or(0))
    }

    /// Plans and runs a whole prune in steps of `batch` rows; returns the rows deleted.
    pub fn prune_corrections(
        &mut self,
        retention: &Retention,
        now_ms: i64,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let plan = self.plan_prune(retention, now_ms)?;
        let mut total = 0;
        if plan.is_empty() {
            return Ok(0);
        }
        loop {
            let deleted = self.prune_step(&plan, batch.max(1))?;
            total += deleted as u64;
            if deleted < batch.max(1) {
                return Ok(total);
            }
        }
    }

    /// Rows in the corrections table.
    pub fn count_corrections(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM corrections", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)?)
    }

    /// FTS5's `integrity-check` of the corrections index against the table (external content
    /// checked too, rank 1): `Ok` when the index holds exactly the table's rows.
    pub fn check_corrections_index(&self) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO corrections_fts (corrections_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )?;
        Ok(())
    }

    /// The newest corrections matching `query`, newest first.
    pub fn search_corrections(
        &self,
        query: &CorrectionQuery,
    ) -> Result<Vec<Correction>, StoreError> {
        let fts = query.text.as_deref().and_then(fts_query);
        let mut statement = self.conn.prepare_cached(
            "SELECT ts, ts_ms, type, rule_id, kind, mode, model, endpoint, confidence,
                    detected, corrected
             FROM corrections
             WHERE (?1 IS NULL OR id IN (SELECT rowid FROM corrections_fts
                                         WHERE corrections_fts MATCH ?1))
               AND (?2 IS NULL OR rule_id = ?2)
               AND (?3 IS NULL OR ts_ms >= ?3)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let rows = statement.query_map(
            params![fts, query.rule, query.since_ms, query.limit as i64],
            |row| {
                Ok(Correction {
                    ts: row.get(0)?,
                    ts_ms: row.get(1)?,
                    kind_label: row.get(2)?,
                    rule_id: row.get(3)?,
                    kind: row.get(4)?,
                    mode: row.get(5)?,
                    model: row.get(6)?,
                    endpoint: row.get(7)?,
                    confidence: row.get(8)?,
                    detected: row.get(9)?,
                    corrected: row.get(10)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `PRAGMA integrity_check`, for tests and `rawrxd` diagnostics: `"ok"` when sound.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))?)
    }
}

fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The table a rule of `kind` lives in.
fn table_for(kind: Option<&str>) -> &'static str {
    match kind.and_then(Kind::parse) {
        Some(Kind::SystemPrompt | Kind::Param | Kind::Stop | Kind::Alias) => "behavior_patches",
        _ => "correction_patterns",
    }
}

fn insert_rule(
    tx: &Transaction<'_>,
    spec: &RuleSpec,
    source: &str,
    position: i64,
    now: &str,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(spec).map_err(|e| StoreError::BadRow {
        id: spec.id.clone().unwrap_or_default(),
        reason: e.to_string(),
    })?;
    let table = table_for(spec.kind.as_deref());
    tx.execute(
        &format!(
            "INSERT INTO {table} (id, kind, enabled, mode, spec, source, position, created_at,
                                  updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
        ),
        params![
            spec.id,
            spec.kind,
            spec.enabled.unwrap_or(true),
            spec.mode.as_deref().unwrap_or("enforce"),
            json,
            source,
            position,
            now
        ],
    )?;
    Ok(())
}

fn delete_source(tx: &Transaction<'_>, source: &str) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM correction_patterns WHERE source = ?1",
        [source],
    )?;
    tx.execute("DELETE FROM behavior_patches WHERE source = ?1", [source])?;
    Ok(())
}

/// Free text → an FTS5 query where every word must appear: each whitespace-separated word
/// becomes a quoted phrase, so no input is an FTS syntax error (`src/main.rs` is the phrase
/// "src main rs"). `None` when there are no words.
pub fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Now, as the audit line writes it: `2025-01-20T14:32:45Z`.
pub fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
