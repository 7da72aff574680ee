//! The live rule snapshot. Everything built from the rules sits in one [`Live`] value behind
//! one `ArcSwap` in [`crate::ProxyState`]: building is fallible and happens off the request
//! path, swapping is infallible, and each request loads the snapshot once and keeps it for its
//! whole life, so a stream finishes with the rules it started with.
//!
//! [`reload`] is the rule manager that rebuilds and swaps it (file watcher, re-scan, store
//! polling, admin commands); it updates the snapshot through the [`reload::LiveSlot`] trait,
//! which the proxy's state implements.
//!
//! May use: `request`, `detect`, `audit`, `patch`, `store`, `rules`, `telemetry`. Used by `proxy` and `app`.

pub mod reload;

use std::path::Path;
use std::time::SystemTime;

use std::sync::Arc;

use crate::detect::Detectors;
use crate::patch::Pipeline;
use crate::request::RequestPatches;
use crate::rules::{self, Rule, RuleError};

pub struct Live {
    pub pipeline: Pipeline,
    /// The request-side rules (`alias`, `system_prompt`, `param`, `stop`), sharing the
    /// pipeline's rule table and counters.
    pub request: RequestPatches,
    /// The `detect` rules (agent failures), sharing the same table and counters.
    pub detect: Arc<Detectors>,
    /// When this snapshot was built.
    pub built: SystemTime,
}

impl Live {
    /// No rules: every response passes through untouched.
    pub fn empty() -> Self {
        Live {
            request: RequestPatches::new(Pipeline::empty().table().clone()),
            detect: Arc::new(Detectors::default()),
            pipeline: Pipeline::empty(),
            built: SystemTime::now(),
        }
    }

    /// Validated rules → compiled snapshot.
    pub fn build(rules: Vec<Rule>) -> Result<Self, Vec<RuleError>> {
        Self::from_pipeline(Pipeline::new(rules)?)
    }

    /// The snapshot of a compiled pipeline: its request-side and `detect` rules picked out of
    /// its table (a `detect` pattern that cannot run fails the build).
    pub fn from_pipeline(pipeline: Pipeline) -> Result<Self, Vec<RuleError>> {
        Ok(Live {
            request: RequestPatches::new(pipeline.table().clone()),
            detect: Arc::new(Detectors::new(pipeline.table().clone())?),
            pipeline,
            built: SystemTime::now(),
        })
    }

    /// Reads, validates and compiles every `*.toml` in `dir` (a missing dir means no rules).
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<RuleError>> {
        Self::build(rules::load_dir(dir)?)
    }
}
