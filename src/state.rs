//! State shared by every connection: the validated config, the upstream client, counters,
//! and the per-request record that becomes the access-log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Method, StatusCode};
use tokio::sync::Semaphore;

use crate::config::ProxyConfig;
use crate::live::Live;
use crate::upstream::Upstream;

/// Everything a request handler needs; one per running proxy, behind an `Arc`.
pub struct ProxyState {
    pub config: ProxyConfig,
    pub upstream: Upstream,
    pub stats: Arc<Stats>,
    pub started: Instant,
    /// One permit per open client connection (see [`crate::server`]).
    pub connection_slots: Arc<Semaphore>,
    /// The rules in force; see [`crate::live`].
    pub live: ArcSwap<Live>,
}

impl ProxyState {
    /// A proxy without rules.
    pub fn new(config: ProxyConfig) -> Self {
        Self::with_rules(config, Live::empty())
    }

    pub fn with_rules(config: ProxyConfig, live: Live) -> Self {
        let upstream = Upstream::new(&config);
        let connection_slots = Arc::new(Semaphore::new(config.max_connections));
        ProxyState {
            config,
            upstream,
            stats: Arc::new(Stats::default()),
            started: Instant::now(),
            connection_slots,
            live: ArcSwap::from_pointee(live),
        }
    }

    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.connection_slots.available_permits()
    }
}

/// Monotonic counters, read by `/rawrxd/health`.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_total: AtomicU64,
    pub requests_in_flight: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    pub connections_total: AtomicU64,
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
    pub fn start(stats: Arc<Stats>, method: Method, path: String) -> Self {
        stats.requests_total.fetch_add(1, Ordering::Relaxed);
        stats.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        RequestRecord {
            stats,
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
