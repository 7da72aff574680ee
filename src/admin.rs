//! rawrxd's own endpoints under `/rawrxd/` on the proxy port. They never shadow an upstream
//! path. For now: `GET /rawrxd/health`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::error::{json_response, ProxyError};
use crate::route::method_not_allowed;
use crate::state::ProxyState;

/// How long `/rawrxd/health` waits for the upstream before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn handle(
    state: &ProxyState,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match request.uri().path() {
        "/rawrxd/health" => match *request.method() {
            Method::GET | Method::HEAD => Ok(health(state).await),
            ref other => Ok(method_not_allowed(other, "GET, HEAD")),
        },
        other => Err(ProxyError::NotFound(format!(
            "no rawrxd endpoint at {other}"
        ))),
    }
}

/// The proxy's own status, and whether the upstream answers. Always 200 while the proxy
/// runs; `status` is `"ok"` or `"degraded"` (upstream unreachable).
async fn health(state: &ProxyState) -> Response<ProxyBody> {
    let probe = state.upstream.probe(PROBE_TIMEOUT).await;
    let stats = &state.stats;
    let (status, upstream) = match probe.result {
        Ok(code) => (
            "ok",
            serde_json::json!({
                "url": state.upstream.url(),
                "reachable": true,
                "status": code,
                "latency_ms": round_ms(probe.latency),
            }),
        ),
        Err(error) => (
            "degraded",
            serde_json::json!({
                "url": state.upstream.url(),
                "reachable": false,
                "error": error,
                "latency_ms": round_ms(probe.latency),
            }),
        ),
    };
    let body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "upstream": upstream,
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

fn round_ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 1e2
}
