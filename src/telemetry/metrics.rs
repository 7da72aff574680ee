//! Prometheus metrics (`GET /rawrxd/metrics`), on the `prometheus-client` crate.
//!
//! Every metric is registered once in [`Metrics::new`]; the request path only increments
//! atomics. Label values are bounded: endpoints are folded into a fixed set of names
//! ([`endpoint_label`]) and statuses are numbers, so a client cannot grow the label space by
//! inventing paths. Rule ids are labels too; they come from the operator's rule files.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 100 µs … ~3.4 min, doubling: request latencies from instant errors to long generations.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 22))
}

/// 10 µs … ~5 s, doubling: what the proxy adds before the response head.
fn overhead_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: HistogramFamily<RequestLabels>,
    pub overhead_seconds: HistogramFamily<EndpointLabels>,
    pub rule_hits: Family<RuleLabels, Counter>,
    pub reloads: Family<ResultLabels, Counter>,
    pub rules_loaded: Gauge,
    pub rules_valid: Gauge,
    pub patching_enabled: Gauge,
    pub audit_written: Counter,
    pub audit_dropped: Counter,
    pub audit_pruned: Counter,
    pub bytes_to_clients: Counter,
    pub request_patches_skipped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rawrxd");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        let overhead_seconds: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(overhead_histogram);
        let rule_hits = Family::<RuleLabels, Counter>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        let rules_loaded = Gauge::default();
        let rules_valid = Gauge::default();
        let patching_enabled = Gauge::default();
        let audit_written = Counter::default();
        let audit_dropped = Counter::default();
        let audit_pruned = Counter::default();
        let bytes_to_clients = Counter::default();
        let request_patches_skipped = Counter::default();
        registry.register(
            "requests",
            "Requests served, by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response, by endpoint and status",
            request_seconds.clone(),
        );
        registry.register(
            "overhead_seconds",
            "Time the proxy adds before the response head (total minus upstream wait)",
            overhead_seconds.clone(),
        );
        registry.register(
            "rule_hits",
            "Rule matches, by rule id and mode (enforce or shadow)",
            rule_hits.clone(),
        );
        registry.register(
            "rule_reloads",
            "Rule set rebuilds, by result (ok or error)",
            reloads.clone(),
        );
        registry.register(
            "rules_loaded",
            "Rules in the live set",
            rules_loaded.clone(),
        );
        registry.register(
            "rules_valid",
            "1 when the last rule reload succeeded, 0 while rule files are invalid",
            rules_valid.clone(),
        );
        registry.register(
            "patching_enabled",
            "1 when rules are applied, 0 when patching is switched off",
            patching_enabled.clone(),
        );
        registry.register(
            "audit_lines_written",
            "Corrections written to the audit log",
            audit_written.clone(),
        );
        registry.register(
            "audit_lines_dropped",
            "Corrections not audited because the audit writer fell behind",
            audit_dropped.clone(),
        );
        registry.register(
            "audit_rows_pruned",
            "Rows of the corrections table deleted by retention (audit_retention, audit_max_rows)",
            audit_pruned.clone(),
        );
        registry.register(
            "bytes_to_clients",
            "Response body bytes sent to clients",
            bytes_to_clients.clone(),
        );
        registry.register(
            "request_patches_skipped",
            "Requests forwarded unpatched because request-side rules could not read their body",
            request_patches_skipped.clone(),
        );
        rules_valid.set(1);
        patching_enabled.set(1);
        Metrics {
            registry,
            requests,
            request_seconds,
            overhead_seconds,
            rule_hits,
            reloads,
            rules_loaded,
            rules_valid,
            patching_enabled,
            audit_written,
            audit_dropped,
            audit_pruned,
            bytes_to_clients,
            request_patches_skipped,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The fixed label for a request path.
pub fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/api/generate" => "generate",
        "/api/chat" => "chat",
        "/v1/chat/completions" => "openai_chat",
        "/v1/completions" => "openai_completions",
        "/api/embed" | "/api/embeddings" | "/v1/embeddings" => "embed",
        "/api/tags" | "/v1/models" => "models",
        "/api/show" => "show",
        "/api/ps" => "ps",
        "/api/pull" | "/api/push" | "/api/create" | "/api/copy" | "/api/delete" => "manage",
        "/api/version" | "/" => "version",
        p if p == "/rawrxd" || p.starts_with("/rawrxd/") => "rawrxd",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics_with_labels() {
        let metrics = Metrics::new();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: "chat",
                status: 200,
            })
            .inc();
        metrics
            .overhead_seconds
            .get_or_create(&EndpointLabels { endpoint: "chat" })
            .observe(0.0002);
        let text = metrics.render();
        assert!(
            text.contains("rawrxd_requests_total{endpoint=\"chat\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rawrxd_overhead_seconds_bucket{le="),
            "{text}"
        );
        assert!(text.contains("rawrxd_rules_valid 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn endpoints_fold_into_a_fixed_set() {
        assert_eq!(endpoint_label("/api/chat"), "chat");
        assert_eq!(endpoint_label("/rawrxd/stats"), "rawrxd");
        assert_eq!(endpoint_label("/some/random/path/123"), "other");
    }
}
