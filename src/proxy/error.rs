//! The request-path error and its one mapping to an HTTP status and a body in the client's
//! API shape (see [`crate::edge::wire::Flavor`]).

use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::edge::wire::Flavor;
use crate::proxy::body::ProxyBody;

/// Everything that can stop the proxy from answering with the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} is unreachable: {reason}")]
    UpstreamUnreachable { upstream: String, reason: String },
    #[error("upstream {upstream} sent no response headers within {}", humantime::format_duration(*.waited))]
    UpstreamTimeout { upstream: String, waited: Duration },
    #[error("upstream {upstream} failed: {reason}")]
    UpstreamFailed { upstream: String, reason: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request body ended before its declared length")]
    BodyIncomplete,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method {0} not allowed here")]
    MethodNotAllowed(String),
    #[error("the proxy is shutting down")]
    ShuttingDown,
    #[error("{}", crate::edge::guard::ADMIN_TOKEN_NEEDED)]
    Unauthorized,
    #[error("{}", crate::edge::guard::API_KEY_NEEDED)]
    ApiKeyRequired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{}", crate::edge::guard::JSON_ONLY)]
    UnsupportedMediaType,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyIncomplete | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ShuttingDown | ProxyError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Unauthorized | ProxyError::ApiKeyRequired => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::Conflict(_) => StatusCode::CONFLICT,
        }
    }

    /// The `type` field of an OpenAI-shaped error.
    fn openai_type(&self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamFailed { .. } => {
                "upstream_error"
            }
            ProxyError::UpstreamTimeout { .. } => "timeout_error",
            ProxyError::ShuttingDown | ProxyError::Unavailable(_) => "server_error",
            ProxyError::Unauthorized | ProxyError::ApiKeyRequired => "authentication_error",
            ProxyError::Forbidden(_) => "permission_error",
            _ => "invalid_request_error",
        }
    }

    /// The response a client of `flavor` gets for this error.
    pub fn into_response(self, flavor: Flavor) -> Response<ProxyBody> {
        let body = flavor.error_body(&self.to_string(), self.openai_type());
        json_response(self.status(), body)
    }
}

/// A complete JSON response.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the one mapping from error to status that clients rely on.
    #[test]
    fn status_mapping() {
        let up = || "http://u".to_string();
        let cases = [
            (
                ProxyError::UpstreamUnreachable {
                    upstream: up(),
                    reason: "refused".into(),
                },
                502,
            ),
            (
                ProxyError::UpstreamFailed {
                    upstream: up(),
                    reason: "reset".into(),
                },
                502,
            ),
            (
                ProxyError::UpstreamTimeout {
                    upstream: up(),
                    waited: Duration::from_secs(1),
                },
                504,
            ),
            (ProxyError::BodyTooLarge { limit: 1 }, 413),
            (ProxyError::BodyIncomplete, 400),
            (ProxyError::BadRequest("x".into()), 400),
            (ProxyError::NotFound("x".into()), 404),
            (ProxyError::MethodNotAllowed("PUT".into()), 405),
            (ProxyError::ShuttingDown, 503),
            (ProxyError::Unauthorized, 401),
            (ProxyError::ApiKeyRequired, 401),
            (ProxyError::Forbidden("x".into()), 403),
            (ProxyError::UnsupportedMediaType, 415),
            (ProxyError::Conflict("x".into()), 409),
            (ProxyError::Unavailable("x".into()), 503),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
        }
    }
}
