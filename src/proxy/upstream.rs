//! The way to the upstream model server: a pooled keep-alive HTTP/1.1 client, the request
//! rewrite (hop-by-hop headers out, `Host` set to the upstream's authority, path joined onto
//! the upstream's base URL) and the wait for response headers, bounded by `header_timeout`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{ProxyConfig, UpstreamUrl};
use crate::proxy::body::BoxError;
use crate::proxy::error::ProxyError;

/// The body type sent upstream.
pub type UpstreamRequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Headers that describe one connection, not the message; never forwarded (RFC 9110 §7.6.1).
/// `expect` is answered by the proxy itself (hyper sends `100 Continue` when the body is read).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

pub struct Upstream {
    client: Client<HttpConnector, UpstreamRequestBody>,
    url: UpstreamUrl,
    host: HeaderValue,
    header_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        // An authority is always a valid header value (it is ASCII without controls).
        let host = HeaderValue::from_str(config.upstream.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Upstream {
            client,
            url: config.upstream.clone(),
            host,
            header_timeout: config.header_timeout,
        }
    }

    /// The upstream's base URL as configured.
    pub fn url(&self) -> &str {
        &self.url.text
    }

    /// The upstream URI for a client's request path and query.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, ProxyError> {
        let pq = path_and_query.map_or("/", PathAndQuery::as_str);
        let joined;
        let pq = if self.url.path_prefix.is_empty() {
            pq
        } else {
            joined = format!("{}{pq}", self.url.path_prefix);
            &joined
        };
        Uri::builder()
            .scheme("http")
            .authority(self.url.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("cannot forward this path: {e}")))
    }

    /// Rewrites a client's headers for the upstream, in place.
    pub fn prepare_headers(&self, headers: &mut HeaderMap) {
        strip_hop_by_hop(headers);
        headers.insert(header::HOST, self.host.clone());
    }

    /// Sends `request` and waits (at most `header_timeout`) for the response head.
    pub async fn send(
        &self,
        request: Request<UpstreamRequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(self.header_timeout, self.client.request(request)).await {
            Err(_) => Err(SendError::Timeout(self.header_timeout)),
            Ok(Err(error)) if error.is_connect() => Err(SendError::Connect(error_chain(&error))),
            Ok(Err(error)) => Err(SendError::Other(error_chain(&error))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Asks the upstream for `GET /` (Ollama answers "Ollama is running"), for health checks.
    pub async fn probe(&self, timeout: Duration) -> Probe {
        let started = Instant::now();
        let request = self.uri_for(None).and_then(|uri| {
            Request::get(uri)
                .header(header::HOST, self.host.clone())
                .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
                .map_err(|e| ProxyError::BadRequest(e.to_string()))
        });
        let result = match request {
            Err(error) => Err(error.to_string()),
            Ok(request) => {
                match tokio::time::timeout(timeout, self.client.request(request)).await {
                    Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
                    Ok(Err(error)) => Err(error_chain(&error)),
                    // Read the body to the end so the connection goes back to the pool.
                    Ok(Ok(response)) => {
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        Ok(status)
                    }
                }
            }
        };
        Probe {
            result,
            latency: started.elapsed(),
        }
    }
}

/// The outcome of [`Upstream::probe`].
pub struct Probe {
    pub result: Result<u16, String>,
    pub latency: Duration,
}

/// Why [`Upstream::send`] got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No TCP connection could be made.
    Connect(String),
    /// The head did not arrive within the timeout.
    Timeout(Duration),
    /// Anything else: the connection broke, the request body failed, bad response…
    Other(String),
}

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// An error and its sources on one line: hyper's top-level messages alone are too terse.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_listed_ones_go() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("authorization", "Bearer t".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn paths_join_onto_the_base_url() {
        let mut config = crate::config::RawProxy::default().validate().unwrap();
        let upstream = Upstream::new(&config);
        let pq: PathAndQuery = "/api/tags?x=1".parse().unwrap();
        assert_eq!(
            upstream.uri_for(Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:11434/api/tags?x=1"
        );
        config.upstream = UpstreamUrl::parse("http://h:1/base/").unwrap();
        let upstream = Upstream::new(&config);
        assert_eq!(
            upstream.uri_for(Some(&pq)).unwrap().to_string(),
            "http://h:1/base/api/tags?x=1"
        );
    }
}
