//! Per-request entry point: rawrxd's own endpoints under `/rawrxd/`, everything else
//! forwarded to the upstream unchanged (less hop-by-hop headers) and streamed back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::audit::HitSink;
use crate::detect::Tools;
use crate::edge::guard::is_model_management;
use crate::edge::wire::{Flavor, Framing};
use crate::patch::rewrite::{rewrite_json_in, Format, Rewriter};
use crate::patch::{Compiled, Context};
use crate::proxy::admin;
use crate::proxy::body::{BodyFault, LimitedBody, PatchBody, ProxyBody, UpstreamBody};
use crate::proxy::detect::{self, DetectBody, Plan, Resend};
use crate::proxy::error::ProxyError;
use crate::proxy::state::{ProxyState, RequestRecord};
use crate::proxy::upstream::{strip_hop_by_hop, SendError};
use crate::request::Outcome;
use crate::rules::Endpoint;

/// Prefix of the proxy's own endpoints; never forwarded.
pub const OWN_PREFIX: &str = "/rawrxd";

/// Response header on the patchable endpoints: milliseconds the proxy added before the
/// response head (its own time, the upstream's wait excluded).
pub const OVERHEAD_HEADER: &str = "x-rawrxd-overhead-ms";

/// Serves one request. Never fails: every error becomes a response in the client's API shape.
pub async fn handle(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = request.uri().path().to_string();
    let flavor = Flavor::of_path(&path);
    let is_own = path == OWN_PREFIX || path.starts_with("/rawrxd/");
    let mut record = RequestRecord::start(&state, request.method().clone(), path.clone());
    // Who may ask comes before what is asked: Host, Origin and tokens (see `guard`).
    let admitted = state
        .config
        .access
        .check(request.method(), request.uri(), request.headers());
    let (result, waited) = match admitted {
        Err(refusal) => {
            tracing::warn!(path = %path, "refused: {refusal}");
            (
                Err(ProxyError::Forbidden(refusal.to_string())),
                Duration::ZERO,
            )
        }
        Ok(admitted) if admitted.preflight => {
            (Ok(preflight(&admitted, request.headers())), Duration::ZERO)
        }
        Ok(admitted) => {
            let (result, waited) = if is_own {
                (admin::handle(&state, request).await, Duration::ZERO)
            } else if let Err(error) = may_forward(&state, &request) {
                (Err(error), Duration::ZERO)
            } else {
                match forward(&state, request).await {
                    Ok(upstreamed) => {
                        let mut response = respond(&state, upstreamed, record)
                            .await
                            .unwrap_or_else(|error| error.into_response(flavor));
                        admitted.decorate(response.headers_mut());
                        return Ok(response);
                    }
                    Err((error, waited)) => (Err(error), waited),
                }
            };
            let mut response = result.unwrap_or_else(|error| error.into_response(flavor));
            admitted.decorate(response.headers_mut());
            (Ok(response), waited)
        }
    };
    let response = result.unwrap_or_else(|error| error.into_response(flavor));
    record.responded(response.status(), waited);
    record.completed();
    Ok(response)
}

/// The token checks for a forwarded request: management paths need the admin token (when
/// set), everything else an API key (when any are set) — except `GET /` and `/api/version`,
/// which clients use to see whether a server is there.
fn may_forward<B>(state: &ProxyState, request: &Request<B>) -> Result<(), ProxyError> {
    let keys = &state.config.keys;
    let path = request.uri().path();
    if is_model_management(path) {
        return match keys.admin_ok(request.headers()) {
            true => Ok(()),
            false => Err(ProxyError::Unauthorized),
        };
    }
    let probe = matches!(path, "/" | "/api/version")
        && matches!(*request.method(), Method::GET | Method::HEAD);
    match probe || keys.api_ok(request.headers()) {
        true => Ok(()),
        false => Err(ProxyError::ApiKeyRequired),
    }
}

/// `204` to an allowed CORS preflight; the proxy answers these itself (the upstream's own
/// CORS policy would disagree with the proxy's).
fn preflight(
    admitted: &crate::edge::guard::Admitted,
    request: &http::HeaderMap,
) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::NO_CONTENT;
    *response.headers_mut() = crate::edge::guard::Access::preflight_headers(admitted, request);
    response
}

/// The upstream's response head, and what to do with its body.
struct Upstreamed {
    response: Response<Incoming>,
    waited: Duration,
    /// The patchable endpoint the request went to, if any.
    endpoint: Option<Endpoint>,
    /// The rules to apply, when any apply to this request.
    patch: Option<Patch>,
    /// The `detect` rules to watch the answer with, when any apply.
    detect: Option<Plan>,
    /// The model the request names (after aliases).
    model: Arc<str>,
}

/// What to patch a response with.
struct Patch {
    compiled: Arc<Compiled>,
    /// The request's workspace, for path rules.
    context: Context,
}

/// The header an IDE or agent names its workspace with (for `path` rules); never forwarded.
pub const WORKSPACE_HEADER: &str = "x-rawrxd-workspace";

/// A failure and how long the upstream had been waited on when it happened.
type Failure = (ProxyError, Duration);

/// Largest non-streamed JSON response the proxy will buffer to patch; larger ones pass
/// through unpatched.
const MAX_PATCHED_JSON: usize = 64 << 20;

/// Sends the request upstream; returns the response head and the time spent waiting for it.
async fn forward(state: &ProxyState, request: Request<Incoming>) -> Result<Upstreamed, Failure> {
    // Blob uploads (`POST /api/blobs/sha256:…`, how clients create a model from a file) carry
    // whole model files; they stream through, and no rule ever reads them.
    let limit = if request.uri().path().starts_with("/api/blobs/") {
        u64::MAX
    } else {
        state.config.max_body
    };
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
    // The workspace header is rawrxd's own: read it, and never forward it.
    let workspace = parts
        .headers
        .remove(WORKSPACE_HEADER)
        .and_then(|v| v.to_str().ok().map(str::to_string));
    let (body, fault) = LimitedBody::new(body, limit, state.stats.clone());
    // The rules to apply depend on the model named in the request body: read it whole (the
    // bytes are forwarded unchanged unless a request-side rule changes them). Requests no rule
    // can touch stream straight through.
    let live = state.live.load_full();
    let endpoint = (parts.method == Method::POST)
        .then(|| Endpoint::of_path(parts.uri.path()))
        .flatten();
    let patchable = endpoint.filter(|_| {
        (!live.pipeline.is_empty() || !live.request.is_empty() || !live.detect.is_empty())
            && state.patching_enabled()
    });
    let mut detect = None;
    let mut request_model: Arc<str> = Arc::from("");
    let (body, patch) = match patchable {
        Some(endpoint) => {
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let error = match fault.get() {
                        Some(BodyFault::TooLarge) => ProxyError::BodyTooLarge { limit },
                        _ => ProxyError::BodyIncomplete,
                    };
                    return Err((error, Duration::ZERO));
                }
            };
            let mut model = model_of(&bytes);
            let mut bytes = bytes;
            if !live.request.is_empty() {
                match live.request.apply(endpoint, &model, &bytes) {
                    Outcome::NotApplicable => {}
                    Outcome::Skipped { reason } => {
                        state
                            .stats
                            .request_patches_skipped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        state.metrics.request_patches_skipped.inc();
                        tracing::warn!(
                            "request-side rules skipped, body forwarded as sent: {reason}"
                        );
                    }
                    Outcome::Patched(patched) => {
                        if let Some(body) = patched.body {
                            bytes = Bytes::from(body);
                            parts
                                .headers
                                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                        }
                        model = patched.model;
                        HitSink {
                            audit: state.audit.clone(),
                            metrics: state.metrics.clone(),
                            model: Arc::from(model.as_str()),
                            endpoint,
                        }
                        .record(patched.hits);
                    }
                }
            }
            request_model = Arc::from(model.as_str());
            detect = live.detect.select(&model, endpoint).map(|selected| {
                // The body is parsed again only when a rule checks tool calls against it.
                let tools = match selected.checks_tools() {
                    true => Tools::of_request(
                        &serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                    ),
                    false => Tools::default(),
                };
                let resend = selected.may_retry().then(|| Resend {
                    method: parts.method.clone(),
                    uri: uri.clone(),
                    headers: parts.headers.clone(),
                    body: bytes.clone(),
                });
                Plan {
                    selected,
                    tools: Arc::new(tools),
                    endpoint,
                    resend,
                }
            });
            let patch = live
                .pipeline
                .select(&model, Some(endpoint))
                .map(|compiled| {
                    let context = Context::for_workspace(workspace);
                    if let Some(workspace) = &context.workspace {
                        if compiled.has_path_rules() && !compiled.honours_workspace(workspace) {
                            tracing::warn!(
                                "{WORKSPACE_HEADER}: {workspace:?} is not one of the path rules' \
                                 roots nor inside one; ignored (every root is searched)"
                            );
                        }
                    }
                    Patch { compiled, context }
                });
            let body = Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync();
            (body, patch)
        }
        None => (body.boxed_unsync(), None),
    };
    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = parts.headers;

    let sent = Instant::now();
    let result = state.upstream.send(upstream_request).await;
    let waited = sent.elapsed();
    let upstream = || state.upstream.url().to_string();
    let error = match result {
        Ok(response) => {
            return Ok(Upstreamed {
                response,
                waited,
                endpoint,
                patch,
                detect,
                model: request_model,
            })
        }
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

/// Builds the client's response: the upstream's, streamed, with the rules applied when any do.
async fn respond(
    state: &Arc<ProxyState>,
    upstreamed: Upstreamed,
    mut record: RequestRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Upstreamed {
        response,
        waited,
        endpoint,
        patch,
        detect,
        model,
    } = upstreamed;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let framing = Framing::of_headers(&parts.headers);
    record.responded(parts.status, waited);
    if let (Some(_), Some(overhead)) = (endpoint, record.overhead()) {
        let millis = format!("{:.3}", overhead.as_secs_f64() * 1e3);
        if let Ok(value) = HeaderValue::from_str(&millis) {
            parts.headers.insert(OVERHEAD_HEADER, value);
        }
    }
    let body = UpstreamBody::new(body, framing, record);
    let answered =
        parts.status.is_success() && !parts.headers.contains_key(header::CONTENT_ENCODING);
    let patch = patch.filter(|_| answered);
    let detect = detect.filter(|_| answered);
    let Some(endpoint) = endpoint.filter(|_| patch.is_some() || detect.is_some()) else {
        return Ok(Response::from_parts(parts, body.boxed_unsync()));
    };
    if patch.is_some() {
        state
            .stats
            .requests_patched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let sink = HitSink {
        audit: state.audit.clone(),
        metrics: state.metrics.clone(),
        model,
        endpoint,
    };
    let format = match framing {
        Framing::Ndjson => Format::Ndjson,
        Framing::Sse => Format::Sse,
        Framing::Opaque if is_json(&parts.headers) => {
            // Not streamed: patch the whole body and fix its length.
            let bytes = Limited::new(body, MAX_PATCHED_JSON)
                .collect()
                .await
                .map_err(|error| ProxyError::UpstreamFailed {
                    upstream: "upstream".into(),
                    reason: error.to_string(),
                })?
                .to_bytes();
            let bytes = match &detect {
                Some(plan) => detect::whole(state, plan, &sink, bytes).await,
                None => bytes,
            };
            let patched = patch.as_ref().and_then(|patch| {
                rewrite_json_in(&patch.compiled, endpoint, &bytes, &patch.context)
            });
            let bytes = match patched {
                Some((patched, hits)) => {
                    sink.record(hits);
                    Bytes::from(patched)
                }
                None => bytes,
            };
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            let body = Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync();
            return Ok(Response::from_parts(parts, body));
        }
        Framing::Opaque => return Ok(Response::from_parts(parts, body.boxed_unsync())),
    };
    // The length changes with the text; the stream is re-framed as chunked.
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = match (detect, patch) {
        (Some(plan), patch) => {
            let watched =
                DetectBody::new(body, framing, state.clone(), Arc::new(plan), sink.clone());
            match patch {
                Some(Patch {
                    compiled, context, ..
                }) => {
                    let rewriter = Rewriter::in_context(compiled, endpoint, format, context);
                    PatchBody::new(watched, rewriter, sink).boxed_unsync()
                }
                None => watched.boxed_unsync(),
            }
        }
        (
            None,
            Some(Patch {
                compiled, context, ..
            }),
        ) => {
            let rewriter = Rewriter::in_context(compiled, endpoint, format, context);
            PatchBody::new(body, rewriter, sink).boxed_unsync()
        }
        (None, None) => body.boxed_unsync(),
    };
    Ok(Response::from_parts(parts, body))
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// The `model` named in a request body (empty when there is none).
fn model_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ModelField {
        #[serde(default)]
        model: String,
    }
    serde_json::from_slice::<ModelField>(body)
        .map(|m| m.model)
        .unwrap_or_default()
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
