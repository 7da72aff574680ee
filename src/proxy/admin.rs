//! rawrxd's own endpoints under `/rawrxd/` on the proxy port; they never shadow an upstream
//! path. JSON in and out.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /rawrxd/health` | proxy, upstream and rule status (`status`: `ok` or `degraded`) |
//! | `GET /rawrxd/stats` | counters: corrections, requests, bytes, per-rule hits, reloads |
//! | `GET /rawrxd/metrics` | Prometheus (OpenMetrics) text |
//! | `GET /rawrxd/rules`, `POST /rawrxd/rules` | list rules; create an API rule |
//! | `GET/PUT/DELETE /rawrxd/rules/{id}` | one rule; PUT creates or replaces an API rule |
//! | `POST /rawrxd/rules/{id}/enable`, `…/disable` | switch any rule on or off |
//! | `POST /rawrxd/reload` | re-read the rule files now |
//! | `GET/PUT /rawrxd/patching` | the switch for all patching (`{"enabled": false}`) |
//! | `GET /rawrxd/corrections?q=&rule=&since=&limit=` | search the audit table |
//!
//! **Every method that changes state needs `Authorization: Bearer <admin_token>`** when a
//! token is configured (an API key when only `api_keys` are), and **`POST`/`PUT` need
//! `Content-Type: application/json`** (415 otherwise), so no web page can send one without a
//! CORS preflight, which [`crate::edge::guard`] refuses for foreign origins. Rule writes go to the SQLite store and then through the same
//! rebuild-and-swap as a file edit (see [`crate::live::reload`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::live::reload::{AdminError, RulesHandle};
use crate::proxy::body::ProxyBody;
use crate::proxy::error::{json_response, ProxyError};
use crate::proxy::route::method_not_allowed;
use crate::proxy::state::ProxyState;
use crate::rules::{Kind, Rule, RuleError, RuleSpec};
use crate::store::{CorrectionQuery, Store};
use crate::telemetry::metrics;

/// How long `/rawrxd/health` waits for the upstream before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 1 << 20;
/// `limit` of `/rawrxd/corrections` when not given, and its largest value.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

type Answer = Result<Response<ProxyBody>, ProxyError>;

pub async fn handle(state: &ProxyState, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let changes_state = !matches!(method, Method::GET | Method::HEAD);
    if changes_state && !state.config.keys.admin_ok(request.headers()) {
        return Err(ProxyError::Unauthorized);
    }
    // A browser can send a cross-site POST without asking first only with a form or
    // text/plain body; JSON makes it ask (a preflight), which the guard refuses.
    let has_body_method = matches!(method, Method::POST | Method::PUT | Method::PATCH);
    if has_body_method && !crate::edge::guard::is_json(request.headers()) {
        return Err(ProxyError::UnsupportedMediaType);
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    match (segments.as_slice(), &method) {
        (["health"], &Method::GET | &Method::HEAD) => Ok(health(state).await),
        (["health"], other) => Ok(method_not_allowed(other, "GET, HEAD")),
        (["stats"], &Method::GET) => Ok(ok(stats(state))),
        (["stats"], other) => Ok(method_not_allowed(other, "GET")),
        (["metrics"], &Method::GET) => Ok(metrics_text(state)),
        (["metrics"], other) => Ok(method_not_allowed(other, "GET")),
        (["rules"], &Method::GET) => Ok(ok(list_rules(state))),
        (["rules"], &Method::POST) => {
            let spec: RuleSpec = read_json(request).await?;
            let rule = rules_handle(state)?
                .put(spec, true)
                .await
                .map_err(admin_error)?;
            Ok(json_response(
                StatusCode::CREATED,
                Bytes::from(rule_view(state, &rule).to_string()),
            ))
        }
        (["rules"], other) => Ok(method_not_allowed(other, "GET, POST")),
        (["rules", id], &Method::GET) => {
            let id = decode(id);
            let live = state.live.load();
            let rule = live
                .pipeline
                .table()
                .rules
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| ProxyError::NotFound(format!("no rule {id:?}")))?;
            Ok(ok(rule_view(state, rule)))
        }
        (["rules", id], &Method::PUT) => {
            let id = decode(id);
            let mut spec: RuleSpec = read_json(request).await?;
            match &spec.id {
                Some(given) if *given != id => {
                    return Err(ProxyError::BadRequest(format!(
                        "the body's id {given:?} differs from the path's {id:?}"
                    )))
                }
                _ => spec.id = Some(id),
            }
            let rule = rules_handle(state)?
                .put(spec, false)
                .await
                .map_err(admin_error)?;
            Ok(ok(rule_view(state, &rule)))
        }
        (["rules", id], &Method::DELETE) => {
            let id = decode(id);
            rules_handle(state)?
                .delete(id.clone())
                .await
                .map_err(admin_error)?;
            Ok(ok(json!({ "deleted": id })))
        }
        (["rules", _], other) => Ok(method_not_allowed(other, "GET, PUT, DELETE")),
        (["rules", id, action @ ("enable" | "disable")], &Method::POST) => {
            let rule = rules_handle(state)?
                .set_enabled(decode(id), *action == "enable")
                .await
                .map_err(admin_error)?;
            Ok(ok(rule_view(state, &rule)))
        }
        (["rules", _, "enable" | "disable"], other) => Ok(method_not_allowed(other, "POST")),
        (["reload"], &Method::POST) => match rules_handle(state)?.reload().await {
            Ok(rules) => Ok(ok(json!({ "reloaded": true, "rules": rules }))),
            Err(AdminError::Invalid(errors)) => Ok(json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                Bytes::from(
                    json!({
                        "error": "rule files are invalid; the last good rules stay live",
                        "errors": error_list(&errors),
                    })
                    .to_string(),
                ),
            )),
            Err(other) => Err(admin_error(other)),
        },
        (["reload"], other) => Ok(method_not_allowed(other, "POST")),
        (["patching"], &Method::GET) => Ok(ok(json!({ "enabled": state.patching_enabled() }))),
        (["patching"], &Method::PUT | &Method::POST) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Switch {
                enabled: bool,
            }
            let switch: Switch = read_json(request).await?;
            state.set_patching(switch.enabled);
            Ok(ok(json!({ "enabled": switch.enabled })))
        }
        (["patching"], other) => Ok(method_not_allowed(other, "GET, PUT")),
        (["corrections"], &Method::GET) => corrections(state, request.uri().query()).await,
        (["corrections"], other) => Ok(method_not_allowed(other, "GET")),
        _ => Err(ProxyError::NotFound(format!(
            "no rawrxd endpoint at {path}"
        ))),
    }
}

fn ok(body: Value) -> Response<ProxyBody> {
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

fn rules_handle(state: &ProxyState) -> Result<&RulesHandle, ProxyError> {
    state.rules.get().ok_or_else(|| {
        ProxyError::Unavailable("this proxy runs without a rule store; rules are read-only".into())
    })
}

fn admin_error(error: AdminError) -> ProxyError {
    match error {
        AdminError::Invalid(_) => ProxyError::BadRequest(error.to_string()),
        AdminError::NotFound(message) => ProxyError::NotFound(message),
        AdminError::Conflict(message) => ProxyError::Conflict(message),
        AdminError::Store(_) | AdminError::Stopped => ProxyError::Unavailable(error.to_string()),
    }
}

/// Reads a JSON body of at most [`MAX_ADMIN_BODY`] bytes into `T` (400 with the reason when
/// it does not parse, 413 when it is too large).
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, ProxyError> {
    let bytes = Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ProxyError::BodyTooLarge {
                    limit: MAX_ADMIN_BODY as u64,
                }
            } else {
                ProxyError::BodyIncomplete
            }
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Err(ProxyError::BadRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ProxyError::BadRequest(format!("invalid JSON: {e}")))
}

/// Percent-decodes one path segment.
fn decode(segment: &str) -> String {
    form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| segment.to_string())
}

/// One rule as the API shows it: its spec with defaults, where it comes from, its counters.
fn rule_view(state: &ProxyState, rule: &Rule) -> Value {
    let counters = state.counters.get(&rule.id);
    let source = rule.source.display().to_string();
    let source = if source == "<api>" {
        "api".into()
    } else {
        source
    };
    json!({
        "id": rule.id,
        "kind": rule.kind().name(),
        "enabled": rule.enabled,
        "mode": rule.mode.name(),
        "source": source,
        "hits": counters.hits.load(Ordering::Relaxed),
        "applied": counters.applied.load(Ordering::Relaxed),
        "shadowed": counters.shadowed.load(Ordering::Relaxed),
        "spec": rule.to_spec(),
    })
}

fn list_rules(state: &ProxyState) -> Value {
    let live = state.live.load();
    let rules: Vec<Value> = live
        .pipeline
        .table()
        .rules
        .iter()
        .map(|rule| rule_view(state, rule))
        .collect();
    json!({ "rules": rules })
}

fn error_list(errors: &[RuleError]) -> Vec<Value> {
    errors
        .iter()
        .map(|e| {
            json!({
                "file": e.file.display().to_string(),
                "line": e.line,
                "rule_id": e.rule_id,
                "field": e.field,
                "message": e.message,
                "text": e.render(),
            })
        })
        .collect()
}

fn time_text(time: Option<SystemTime>) -> Value {
    time.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_seconds(t).to_string())
    })
}

fn rules_status(state: &ProxyState) -> Value {
    let status = state.lock_rule_status().clone();
    let live = state.live.load();
    let rules = &live.pipeline.table().rules;
    let path_indexes: Vec<Value> = live
        .pipeline
        .path_indexes()
        .into_iter()
        .map(|(rule, roots, files, warnings)| {
            json!({ "rule": rule, "roots": roots, "files": files, "warnings": warnings })
        })
        .collect();
    json!({
        "status": if status.errors.is_empty() { "ok" } else { "error" },
        "path_indexes": path_indexes,
        "loaded": rules.len(),
        "enabled": rules.iter().filter(|r| r.enabled).count(),
        "dir": state.config.rules_dir.display().to_string(),
        "reloads": status.reloads,
        "reload_failures": status.failures,
        "last_reload": time_text(status.last_reload),
        "failed_at": time_text(status.failed_at),
        "errors": error_list(&status.errors),
    })
}

/// The proxy's own status, the upstream's and the rules'. Always 200 while the proxy runs;
/// `status` is `"degraded"` when the upstream is unreachable or the rule files are invalid.
async fn health(state: &ProxyState) -> Response<ProxyBody> {
    let probe = state.upstream.probe(PROBE_TIMEOUT).await;
    let stats = &state.stats;
    let upstream = match &probe.result {
        Ok(code) => json!({
            "url": state.upstream.url(),
            "reachable": true,
            "status": code,
            "latency_ms": round_ms(probe.latency),
        }),
        Err(error) => json!({
            "url": state.upstream.url(),
            "reachable": false,
            "error": error,
            "latency_ms": round_ms(probe.latency),
        }),
    };
    let rules = rules_status(state);
    let healthy = probe.result.is_ok() && rules["status"] == "ok";
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "upstream": upstream,
        "rules": rules,
        "patching": state.patching_enabled(),
        "connections": {
            "open": state.open_connections(),
            "max": state.config.max_connections,
            "total": stats.connections_total.load(Ordering::Relaxed),
        },
        "requests": {
            "total": stats.requests_total.load(Ordering::Relaxed),
            "in_flight": stats.requests_in_flight.load(Ordering::Relaxed),
            "upstream_errors": stats.upstream_errors.load(Ordering::Relaxed),
        },
        "bytes_to_clients": stats.bytes_to_clients.load(Ordering::Relaxed),
    });
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// `/rawrxd/stats`: the original design's keys (camelCase) plus rawrxd's own counters.
///
/// * `hallucinationsDetected`: rule matches, shadowed ones included;
/// * `hallucinationsCorrected`: matches that changed the output;
/// * `navigationErrorsFixed`: applied `path` rules;
/// * `behaviorPatchesApplied`: applied request-side patches (`system_prompt`, `param`,
///   `stop`, `alias`);
/// * `behaviorPatchesSkipped`: requests request-side rules applied to but could not patch
///   (not JSON, or an unexpected type where a rule writes), forwarded as sent;
/// * `failuresDetected`, `retries`, `retriesSucceeded`: `detect` rules — failures seen
///   (shadowed included), requests sent again, retried answers no enforced rule failed.
fn stats(state: &ProxyState) -> Value {
    let stats = &state.stats;
    let live = state.live.load();
    let kinds: std::collections::HashMap<&str, Kind> = live
        .pipeline
        .table()
        .rules
        .iter()
        .map(|r| (r.id.as_str(), r.kind()))
        .collect();
    let mut detected = 0;
    let mut corrected = 0;
    let mut navigation = 0;
    let mut behavior = 0;
    let mut per_rule = serde_json::Map::new();
    for (id, hits, applied, shadowed) in state.counters.snapshot() {
        detected += hits;
        corrected += applied;
        match kinds.get(id.as_str()) {
            Some(Kind::Path) => navigation += applied,
            Some(Kind::SystemPrompt | Kind::Param | Kind::Stop | Kind::Alias) => {
                behavior += applied
            }
            _ => {}
        }
        per_rule.insert(
            id,
            json!({ "hits": hits, "applied": applied, "shadowed": shadowed }),
        );
    }
    let status = state.lock_rule_status().clone();
    let (audit_written, audit_dropped) = state.audit.as_ref().map_or((0, 0), |a| {
        (
            a.written.load(Ordering::Relaxed),
            a.dropped.load(Ordering::Relaxed),
        )
    });
    json!({
        "proxyServerRunning": true,
        "hotPatchingEnabled": state.patching_enabled(),
        "hallucinationsDetected": detected,
        "hallucinationsCorrected": corrected,
        "navigationErrorsFixed": navigation,
        "behaviorPatchesApplied": behavior,
        "behaviorPatchesSkipped": stats.request_patches_skipped.load(Ordering::Relaxed),
        "failuresDetected": stats.failures_detected.load(Ordering::Relaxed),
        "retries": stats.retries.load(Ordering::Relaxed),
        "retriesSucceeded": stats.retries_succeeded.load(Ordering::Relaxed),
        "requests": {
            "total": stats.requests_total.load(Ordering::Relaxed),
            "inFlight": stats.requests_in_flight.load(Ordering::Relaxed),
            "patched": stats.requests_patched.load(Ordering::Relaxed),
            "upstreamErrors": stats.upstream_errors.load(Ordering::Relaxed),
        },
        "bytes": {
            "toClients": stats.bytes_to_clients.load(Ordering::Relaxed),
            "fromClients": stats.bytes_from_clients.load(Ordering::Relaxed),
        },
        "rules": {
            "loaded": live.pipeline.table().rules.len(),
            "reloads": status.reloads,
            "reloadFailures": status.failures,
            "lastReload": time_text(status.last_reload),
        },
        "ruleHits": per_rule,
        "audit": {
            "written": audit_written,
            "dropped": audit_dropped,
            "pruned": state.metrics.audit_pruned.get(),
        },
        "uptimeSecs": state.started.elapsed().as_secs(),
    })
}

fn metrics_text(state: &ProxyState) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(state.metrics.render()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// Parses the query of `/rawrxd/corrections` (400 with the reason when it is wrong).
pub fn correction_query(query: Option<&str>) -> Result<CorrectionQuery, ProxyError> {
    let mut out = CorrectionQuery {
        limit: DEFAULT_LIMIT,
        ..CorrectionQuery::default()
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "q" => out.text = Some(value).filter(|v| !v.trim().is_empty()),
            "rule" => out.rule = Some(value).filter(|v| !v.is_empty()),
            "since" => out.since_ms = Some(parse_since(&value, SystemTime::now())?),
            "limit" => {
                out.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ProxyError::BadRequest(format!(
                            "limit {value:?} must be a number from 1 to {MAX_LIMIT}"
                        ))
                    })?
            }
            other => {
                return Err(ProxyError::BadRequest(format!(
                    "unknown parameter {other:?} (use q, rule, since, limit)"
                )))
            }
        }
    }
    Ok(out)
}

/// `since`: an RFC 3339 time (`2025-01-20T14:00:00Z`), a duration back from now (`15m`,
/// `2h`), or Unix milliseconds.
pub fn parse_since(text: &str, now: SystemTime) -> Result<i64, ProxyError> {
    let millis = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64
    };
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(millis(time));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(millis(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)));
    }
    Err(ProxyError::BadRequest(format!(
        "since {text:?} is not a time (2025-01-20T14:00:00Z), a duration (15m) or Unix \
         milliseconds"
    )))
}

async fn corrections(state: &ProxyState, query: Option<&str>) -> Answer {
    let query = correction_query(query)?;
    let db = state.config.db_path.clone();
    let found = tokio::task::spawn_blocking(move || {
        Store::open_read_only(&db).and_then(|store| store.search_corrections(&query))
    })
    .await
    .map_err(|e| ProxyError::Unavailable(format!("corrections search failed: {e}")))?
    .map_err(|e| ProxyError::Unavailable(e.to_string()))?;
    Ok(ok(json!({ "corrections": found })))
}

fn round_ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 1e2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_durations_and_millis() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_since("1500", now).unwrap(), 1500);
        assert_eq!(parse_since("1m", now).unwrap(), 9_940_000);
        assert_eq!(parse_since("1970-01-01T00:00:02Z", now).unwrap(), 2000);
        assert!(parse_since("yesterday-ish", now).is_err());
    }

    #[test]
    fn correction_queries_are_validated() {
        let q = correction_query(Some("q=src%2Fmain.rs&rule=fix&limit=5")).unwrap();
        assert_eq!(q.text.as_deref(), Some("src/main.rs"));
        assert_eq!(q.rule.as_deref(), Some("fix"));
        assert_eq!(q.limit, 5);
        assert!(correction_query(Some("limit=0")).is_err());
        assert!(correction_query(Some("limit=lots")).is_err());
        assert!(correction_query(Some("colour=red")).is_err());
        assert_eq!(correction_query(None).unwrap().limit, DEFAULT_LIMIT);
    }
}
