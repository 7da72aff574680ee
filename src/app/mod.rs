//! The entry points, the top layer: the command line ([`cli`]), one function per subcommand
//! ([`run`]: proxy, serve, up, rules, audit; [`gguf`]: `rawrxd gguf`), the offline `rules`/`audit` commands
//! ([`commands`]), the shutdown signal, and [`App`], the wiring of a full proxy: the store, the
//! audit writer, the shared state and the rule manager, started in that order and stopped in
//! reverse. `main` and the integration tests both go through [`App::start`], so tests run what
//! users run.
//!
//! May use: everything below it. Nothing in the crate imports `app`.

pub mod cli;
pub mod commands;
pub mod gguf;
pub mod run;
pub mod shutdown;

use std::sync::Arc;

use crate::audit::{Audit, AuditConfig, AuditError};
use crate::config::ProxyConfig;
use crate::live::reload::RuleManager;
use crate::live::Live;
use crate::proxy::state::ProxyState;
use crate::rules::RuleError;
use crate::store::{Retention, Store, StoreError};
use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("invalid rules in {dir}:\n{}", .errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Rules { dir: String, errors: Vec<RuleError> },
}

/// A started proxy's background parts; the HTTP server runs on [`App::state`].
pub struct App {
    pub state: Arc<ProxyState>,
    manager: Option<RuleManager>,
    audit: Arc<Audit>,
}

impl App {
    /// Opens (and migrates) the database, starts the audit writer, loads the rule files into
    /// the store and the live set, and starts watching them.
    pub fn start(config: ProxyConfig) -> Result<App, AppError> {
        let store = Store::open(&config.db_path)?;
        let metrics = Arc::new(Metrics::new());
        let audit = Audit::start(
            AuditConfig {
                log_dir: config.log_dir.clone(),
                db_path: config.db_path.clone(),
                max_log_bytes: config.audit_max_size,
                keep: config.audit_keep,
                retention: Retention {
                    max_age: config.audit_retention,
                    max_rows: config.audit_max_rows,
                },
            },
            metrics.clone(),
        )?;
        let dir = config.rules_dir.display().to_string();
        let state = Arc::new(ProxyState::assemble(
            config,
            Live::empty(),
            metrics,
            Some(audit.clone()),
        ));
        let manager = match RuleManager::start(state.clone(), store) {
            Ok(manager) => manager,
            Err(errors) => {
                audit.close();
                return Err(AppError::Rules { dir, errors });
            }
        };
        let _ = state.rules.set(manager.handle());
        Ok(App {
            state,
            manager: Some(manager),
            audit,
        })
    }

    /// Stops watching rules and flushes the audit log (blocks until both are done).
    pub fn stop(mut self) {
        if let Some(manager) = self.manager.take() {
            manager.stop();
        }
        self.audit.close();
    }
}
