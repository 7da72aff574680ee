//! Per-request entry point: rawrxd's own endpoints under `/rawrxd/`, everything else
//! forwarded to the upstream unchanged (less hop-by-hop headers) and streamed back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::admin;
use crate::body::{BodyFault, LimitedBody, ProxyBody, UpstreamBody};
use crate::error::ProxyError;
use crate::state::{ProxyState, RequestRecord};
use crate::upstream::{strip_hop_by_hop, SendError};
use crate::wire::{Flavor, Framing};

/// Prefix of the proxy's own endpoints; never forwarded.
pub const OWN_PREFIX: &str = "/rawrxd";

/// Serves one request. Never fails: every error becomes a response in the client's API shape.
pub async fn handle(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = request.uri().path().to_string();
    let flavor = Flavor::of_path(&path);
    let is_own = path == OWN_PREFIX || path.starts_with("/rawrxd/");
    let mut record = RequestRecord::start(state.stats.clone(), request.method().clone(), path);
    let (result, waited) = if is_own {
        (admin::handle(&state, request).await, Duration::ZERO)
    } else {
        match forward(&state, request).await {
            Ok((response, waited)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let framing = Framing::of_headers(&parts.headers);
                record.responded(parts.status, waited);
                let body = UpstreamBody::new(body, framing, record).boxed_unsync();
                return Ok(Response::from_parts(parts, body));
            }
            Err((error, waited)) => (Err(error), waited),
        }
    };
    let response = result.unwrap_or_else(|error| error.into_response(flavor));
    record.responded(response.status(), waited);
    record.completed();
    Ok(response)
}

/// A failure and how long the upstream had been waited on when it happened.
type Failure = (ProxyError, Duration);

/// Sends the request upstream; returns the response head and the time spent waiting for it.
async fn forward(
    state: &ProxyState,
    request: Request<Incoming>,
) -> Result<(Response<Incoming>, Duration), Failure> {
    let limit = state.config.max_body;
    let (mut parts, body) = request.into_parts();
    if let Some(declared) = declared_length(&parts.headers) {
        if declared > limit {
            return Err((ProxyError::BodyTooLarge { limit }, Duration::ZERO));
        }
    }
    let uri = state
        .upstream
        .uri_for(parts.uri.path_and_query())
        .map_err(|e| (e, Duration::ZERO))?;
    state.upstream.prepare_headers(&mut parts.headers);
    let (body, fault) = LimitedBody::new(body, limit);
    let mut upstream_request = Request::new(body.boxed_unsync());
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = parts.headers;

    let sent = Instant::now();
    let result = state.upstream.send(upstream_request).await;
    let waited = sent.elapsed();
    let upstream = || state.upstream.url().to_string();
    let error = match result {
        Ok(response) => return Ok((response, waited)),
        // A failing client body surfaces as an upstream error; report the client's fault.
        Err(_) if fault.get() == Some(&BodyFault::TooLarge) => ProxyError::BodyTooLarge { limit },
        Err(_) if fault.get() == Some(&BodyFault::Incomplete) => ProxyError::BodyIncomplete,
        Err(SendError::Connect(reason)) => ProxyError::UpstreamUnreachable {
            upstream: upstream(),
            reason,
        },
        Err(SendError::Timeout(waited)) => ProxyError::UpstreamTimeout {
            upstream: upstream(),
            waited,
        },
        Err(SendError::Other(reason)) => ProxyError::UpstreamFailed {
            upstream: upstream(),
            reason,
        },
    };
    Err((error, waited))
}

/// The request's `Content-Length`, when present and valid (hyper has already rejected
/// malformed ones).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Answers `405` with an `Allow` header listing what is allowed.
pub fn method_not_allowed(method: &http::Method, allow: &'static str) -> Response<ProxyBody> {
    let mut response =
        ProxyError::MethodNotAllowed(method.to_string()).into_response(Flavor::Ollama);
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    debug_assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    response
}
