//! State shared by every connection: the validated config, the upstream client, the live
//! rules and their status, counters and metrics, the audit sender, and the per-request record
//! that becomes the access-log line and the request metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Method, StatusCode};
use tokio::sync::Semaphore;

use crate::audit::Audit;
use crate::config::ProxyConfig;
use crate::live::reload::{LiveSlot, RuleStatus, RulesHandle};
use crate::live::Live;
use crate::patch::CounterRegistry;
use crate::proxy::upstream::Upstream;
use crate::telemetry::metrics::{endpoint_label, EndpointLabels, Metrics, RequestLabels};

/// Everything a request handler needs; one per running proxy, behind an `Arc`.
pub struct ProxyState {
    pub config: ProxyConfig,
    pub upstream: Upstream,
    pub stats: Arc<Stats>,
    pub started: Instant,
    /// One permit per open client connection (see [`crate::proxy::server`]).
    pub connection_slots: Arc<Semaphore>,
    /// The rules in force; see [`crate::live`].
    pub live: ArcSwap<Live>,
    /// Per-rule hit counters by rule id; they survive rebuilds of the live set.
    pub counters: CounterRegistry,
    pub metrics: Arc<Metrics>,
    /// The runtime switch for all patching (`PUT /rawrxd/patching`); off, every response
    /// passes through untouched.
    pub patching: AtomicBool,
    rule_status: Mutex<RuleStatus>,
    /// Where corrections are audited; `None` when the proxy runs without a log directory
    /// (then they only go to tracing).
    pub audit: Option<Arc<Audit>>,
    /// The rule manager, when the rules come from the store (see [`crate::live::reload`]).
    pub rules: OnceLock<RulesHandle>,
}

impl ProxyState {
    /// A proxy without rules.
    pub fn new(config: ProxyConfig) -> Self {
        Self::with_rules(config, Live::empty())
    }

    /// A proxy with a fixed rule set and no store or audit log (tests, benches).
    pub fn with_rules(config: ProxyConfig, live: Live) -> Self {
        Self::assemble(config, live, Arc::new(Metrics::new()), None)
    }

    pub fn assemble(
        config: ProxyConfig,
        live: Live,
        metrics: Arc<Metrics>,
        audit: Option<Arc<Audit>>,
    ) -> Self {
        let upstream = Upstream::new(&config);
        let connection_slots = Arc::new(Semaphore::new(config.max_connections));
        metrics
            .rules_loaded
            .set(live.pipeline.table().rules.len() as i64);
        ProxyState {
            config,
            upstream,
            stats: Arc::new(Stats::default()),
            started: Instant::now(),
            connection_slots,
            live: ArcSwap::from_pointee(live),
            counters: CounterRegistry::default(),
            metrics,
            patching: AtomicBool::new(true),
            rule_status: Mutex::new(RuleStatus::default()),
            audit,
            rules: OnceLock::new(),
        }
    }

    pub fn lock_rule_status(&self) -> MutexGuard<'_, RuleStatus> {
        self.rule_status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn patching_enabled(&self) -> bool {
        self.patching.load(Ordering::Relaxed)
    }

    pub fn set_patching(&self, enabled: bool) {
        self.patching.store(enabled, Ordering::Relaxed);
        self.metrics.patching_enabled.set(i64::from(enabled));
        tracing::info!(enabled, "hot patching switched");
    }

    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.connection_slots.available_permits()
    }
}

impl LiveSlot for ProxyState {
    fn rules_dir(&self) -> &std::path::Path {
        &self.config.rules_dir
    }

    fn live(&self) -> &ArcSwap<Live> {
        &self.live
    }

    fn counters(&self) -> &CounterRegistry {
        &self.counters
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock_rule_status(&self) -> MutexGuard<'_, RuleStatus> {
        ProxyState::lock_rule_status(self)
    }
}

/// Monotonic counters, read by `/rawrxd/health`.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_total: AtomicU64,
    pub requests_in_flight: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub connections_total: AtomicU64,
    /// Responses that went through the rule pipeline.
    pub requests_patched: AtomicU64,
    /// Requests whose body request-side rules could not patch (forwarded as sent).
    pub request_patches_skipped: AtomicU64,
    /// Agent failures `detect` rules saw (shadowed ones included).
    pub failures_detected: AtomicU64,
    /// Requests sent again by `retry` rules.
    pub retries: AtomicU64,
    /// Retried answers that no enforced `retry` or `stop` rule found failing.
    pub retries_succeeded: AtomicU64,
}

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still streaming; if dropped in this state the client went away.
    Streaming,
    Complete,
    UpstreamFailed,
    /// Ended early by a block rule.
    Blocked,
}

/// One request's life, written as one access-log line when it ends (dropped).
pub struct RequestRecord {
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    method: Method,
    path: String,
    started: Instant,
    status: Option<StatusCode>,
    upstream_wait: Option<Duration>,
    overhead: Option<Duration>,
    bytes: u64,
    outcome: Outcome,
    finished: bool,
}

impl RequestRecord {
    pub fn start(state: &ProxyState, method: Method, path: String) -> Self {
        let stats = state.stats.clone();
        stats.requests_total.fetch_add(1, Ordering::Relaxed);
        stats.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        RequestRecord {
            stats,
            metrics: state.metrics.clone(),
            method,
            path,
            started: Instant::now(),
            status: None,
            upstream_wait: None,
            overhead: None,
            bytes: 0,
            outcome: Outcome::Streaming,
            finished: false,
        }
    }

    /// The response head is ready: `upstream_wait` is the time spent waiting on the upstream
    /// (zero for answers the proxy gives itself); the rest of the elapsed time is overhead.
    pub fn responded(&mut self, status: StatusCode, upstream_wait: Duration) {
        self.status = Some(status);
        self.upstream_wait = Some(upstream_wait);
        self.overhead = Some(self.started.elapsed().saturating_sub(upstream_wait));
    }

    /// What the proxy has added so far, before the response head (see [`Self::responded`]).
    pub fn overhead(&self) -> Option<Duration> {
        self.overhead
    }

    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    pub fn completed(&mut self) {
        self.outcome = Outcome::Complete;
    }

    pub fn blocked(&mut self) {
        self.outcome = Outcome::Blocked;
    }

    pub fn upstream_failed(&mut self, message: &str) {
        self.outcome = Outcome::UpstreamFailed;
        self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(method = %self.method, path = %self.path, "{message}");
    }

    /// Writes the access-log line once; called on drop at the latest.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.stats
            .requests_in_flight
            .fetch_sub(1, Ordering::Relaxed);
        self.stats
            .bytes_to_clients
            .fetch_add(self.bytes, Ordering::Relaxed);
        let endpoint = endpoint_label(&self.path);
        let labels = RequestLabels {
            endpoint,
            status: self.status.map_or(0, |s| s.as_u16()),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .request_seconds
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(overhead) = self.overhead {
            self.metrics
                .overhead_seconds
                .get_or_create(&EndpointLabels { endpoint })
                .observe(overhead.as_secs_f64());
        }
        self.metrics.bytes_to_clients.inc_by(self.bytes);
        let outcome = match self.outcome {
            Outcome::Streaming => "client_gone",
            Outcome::Complete => "complete",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::Blocked => "blocked",
        };
        let millis = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1e3);
        tracing::info!(
            target: "rawrxd::access",
            method = %self.method,
            path = %self.path,
            status = self.status.map_or(0, |s| s.as_u16()),
            upstream_ms = format_args!("{:.2}", millis(self.upstream_wait)),
            overhead_ms = format_args!("{:.3}", millis(self.overhead)),
            total_ms = format_args!("{:.1}", self.started.elapsed().as_secs_f64() * 1e3),
            bytes = self.bytes,
            outcome,
        );
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.finish();
    }
}
