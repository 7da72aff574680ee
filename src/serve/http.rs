//! The HTTP side of `rawrxd serve`: the accept loop (HTTP/1.1 + h2c, graceful drain, the
//! same hyper-util setup as the proxy's `server`), routing by path and method, request bodies
//! (size-limited JSON; any or no `Content-Type`), errors in Ollama's / OpenAI's shape, and the
//! streamed response body fed by the engine's events.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::Event;
use super::{api, manage, openai, ServeState};
use crate::edge::wire::Flavor;

/// The response body type of every serve endpoint.
pub type ServeBody = UnsyncBoxBody<Bytes, Infallible>;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// An error on the request path, with its one status mapping.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("405 method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{}", crate::edge::guard::JSON_ONLY)]
    UnsupportedMediaType,
    /// A size limit other than the request body's (`serve.max_model_size`).
    #[error("{0}")]
    OverLimit(String),
    /// Not enough free disk space for what the request would write.
    #[error("{0}")]
    NoSpace(String),
}

impl ServeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ServeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Conflict(_) => StatusCode::CONFLICT,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServeError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServeError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServeError::OverLimit(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    fn openai_type(&self) -> &'static str {
        match self {
            ServeError::Internal(_) | ServeError::Busy(_) | ServeError::NoSpace(_) => {
                "server_error"
            }
            ServeError::NotFound(_) => "not_found_error",
            ServeError::Unauthorized(_) => "authentication_error",
            ServeError::Forbidden(_) => "permission_error",
            _ => "invalid_request_error",
        }
    }

    pub fn into_response(self, flavor: Flavor) -> Response<ServeBody> {
        let body = flavor.error_body(&self.to_string(), self.openai_type());
        full(self.status(), "application/json; charset=utf-8", body)
    }
}

/// A complete response.
pub fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ServeBody> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A complete JSON response.
pub fn json(value: &serde_json::Value) -> Response<ServeBody> {
    full(
        StatusCode::OK,
        "application/json; charset=utf-8",
        Bytes::from(value.to_string()),
    )
}

/// Reads a JSON request body of at most `limit` bytes, whatever its `Content-Type`.
pub async fn read_json<T: DeserializeOwned>(
    request: Request<Incoming>,
    limit: usize,
) -> Result<T, ServeError> {
    let bytes = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ServeError::TooLarge(limit)
            } else {
                ServeError::BadRequest(format!("cannot read the request body: {e}"))
            }
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ServeError::BadRequest("missing request body".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ServeError::BadRequest(format!("invalid JSON: {e}")))
}

/// Turns one engine event into the bytes sent for it.
pub type Format = Box<dyn FnMut(Event) -> Bytes + Send>;

/// A streamed response: the engine's events, each formatted into one NDJSON line or SSE
/// event. **Dropping this body (client gone) drops the receiver, which cancels the request
/// in the engine.** If the engine's channel ends without `Done`/`Error`, one error frame is
/// sent so the client never takes a cut stream for a finished one.
pub struct EventBody {
    rx: UnboundedReceiver<Event>,
    first: Option<Event>,
    format: Format,
    done: bool,
}

impl EventBody {
    pub fn new(first: Event, rx: UnboundedReceiver<Event>, format: Format) -> Self {
        Self {
            rx,
            first: Some(first),
            format,
            done: false,
        }
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let event = match this.first.take() {
                Some(event) => event,
                None => match ready!(this.rx.poll_recv(cx)) {
                    Some(event) => event,
                    None => Event::Error("the generation ended unexpectedly".into()),
                },
            };
            if matches!(event, Event::Done(_) | Event::Error(_) | Event::Rejected(_)) {
                this.done = true;
            }
            let bytes = (this.format)(event);
            // Text held back (a tool call still being read) formats to nothing: no frame.
            if !bytes.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A streamed response body fed by a channel of ready-made frames (model management's
/// NDJSON progress lines). Dropping it (client gone) closes the channel, which stops the
/// sender's work at its next line.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self { rx }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(ready!(this.rx.poll_recv(cx)).map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed response with `content_type` ([`EventBody`] or [`ChannelBody`]).
pub fn stream<B>(content_type: &'static str, body: B) -> Response<ServeBody>
where
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let mut response = Response::new(body.boxed_unsync());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Answers one request; never fails.
pub async fn handle(
    state: Arc<ServeState>,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, Infallible> {
    let path = request.uri().path().to_string();
    let flavor = Flavor::of_path(&path);
    let method = request.method().clone();
    let admitted = match state
        .access
        .check(&method, request.uri(), request.headers())
    {
        Ok(admitted) => admitted,
        Err(refusal) => {
            tracing::warn!(%method, %path, "refused: {refusal}");
            return Ok(ServeError::Forbidden(refusal.to_string()).into_response(flavor));
        }
    };
    if admitted.preflight {
        let mut response = full(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
        *response.headers_mut() =
            crate::edge::guard::Access::preflight_headers(&admitted, request.headers());
        return Ok(response);
    }
    let mut response = match may_serve(&state, &method, &path, request.headers()) {
        Ok(()) => route(state, request, &path, method.clone()).await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| {
        if e.status().is_server_error() {
            tracing::warn!(%method, %path, "{e}");
        } else {
            tracing::debug!(%method, %path, "{e}");
        }
        e.into_response(flavor)
    });
    admitted.decorate(response.headers_mut());
    Ok(response)
}

/// The token and content-type checks: management needs the admin token (when set) and, for
/// `POST`s with a JSON body, `Content-Type: application/json` (a browser cannot send that
/// cross-site without a preflight); everything else needs an API key when any are set,
/// except the liveness probes (`/`, `/health`, `/api/version`).
fn may_serve(
    state: &ServeState,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<(), ServeError> {
    if crate::edge::guard::is_model_management(path) {
        if !state.keys.admin_ok(headers) {
            return Err(ServeError::Unauthorized(
                crate::edge::guard::ADMIN_TOKEN_NEEDED.into(),
            ));
        }
        // Blob uploads carry the model file itself (application/octet-stream).
        if *method == Method::POST
            && !path.starts_with("/api/blobs/")
            && !crate::edge::guard::is_json(headers)
        {
            return Err(ServeError::UnsupportedMediaType);
        }
        return Ok(());
    }
    let probe = matches!(
        path.trim_end_matches('/'),
        "" | "/health" | "/api/health" | "/api/version"
    );
    if probe || state.keys.api_ok(headers) {
        Ok(())
    } else {
        Err(ServeError::Unauthorized(
            crate::edge::guard::API_KEY_NEEDED.into(),
        ))
    }
}

/// Routes by path and method.
async fn route(
    state: Arc<ServeState>,
    request: Request<Incoming>,
    path: &str,
    method: Method,
) -> Result<Response<ServeBody>, ServeError> {
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match path.trim_end_matches('/') {
        "" if get => Ok(full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"Ollama is running"),
        )),
        "/health" | "/api/health" if get => Ok(api::health(&state)),
        "/api/version" if get => Ok(api::version()),
        "/api/tags" if get => api::tags(&state).await,
        "/api/ps" if get => Ok(api::ps(&state)),
        "/api/show" if post => api::show(&state, request).await,
        "/api/generate" if post => api::generate(&state, request).await,
        "/api/chat" if post => api::chat(&state, request).await,
        "/api/pull" if post => changed(&state, manage::pull(&state, request).await).await,
        "/api/copy" if post => changed(&state, manage::copy(&state, request).await).await,
        "/api/delete" if method == Method::DELETE => {
            changed(&state, manage::delete(&state, request).await).await
        }
        "/api/create" if post => changed(&state, manage::create(&state, request).await).await,
        "/api/push" if post => manage::push(&state, request).await,
        p if p.starts_with("/api/blobs/") && (method == Method::HEAD || get) => {
            manage::blob_exists(&state, &p["/api/blobs/".len()..])
        }
        p if p.starts_with("/api/blobs/") && post => {
            let digest = p["/api/blobs/".len()..].to_string();
            manage::upload_blob(&state, &digest, request).await
        }
        p if p.starts_with("/api/blobs/") => Err(ServeError::MethodNotAllowed),
        p if p.starts_with("/rawrxd/models/") && post => {
            manage::live(&state, &p["/rawrxd/models/".len()..], request).await
        }
        p if p.starts_with("/rawrxd/models/") => Err(ServeError::MethodNotAllowed),
        "/api/embed" if post => api::embed(&state, request, false).await,
        "/api/embeddings" if post => api::embed(&state, request, true).await,
        "/v1/models" if get => openai::models(&state).await,
        "/v1/embeddings" if post => openai::embeddings(&state, request).await,
        "/v1/chat/completions" if post => openai::chat(&state, request).await,
        "/v1/completions" if post => openai::completions(&state, request).await,
        ""
        | "/health"
        | "/api/health"
        | "/api/version"
        | "/api/tags"
        | "/api/ps"
        | "/api/show"
        | "/api/generate"
        | "/api/chat"
        | "/api/embed"
        | "/api/embeddings"
        | "/api/pull"
        | "/api/copy"
        | "/api/delete"
        | "/api/create"
        | "/api/push"
        | "/v1/embeddings"
        | "/v1/models"
        | "/v1/chat/completions"
        | "/v1/completions" => Err(ServeError::MethodNotAllowed),
        _ => Err(ServeError::NotFound("404 page not found".into())),
    }
}

/// The answer of a request that may have changed the models directory (pull, create, copy,
/// delete), sent once the cached model list has been refreshed — for a streamed answer, again
/// before its end — so the client's next request sees the change.
async fn changed(
    state: &ServeState,
    result: Result<Response<ServeBody>, ServeError>,
) -> Result<Response<ServeBody>, ServeError> {
    match result {
        Ok(response) => Ok(state.models.refresh_on_end(response).await),
        Err(e) => Err(e),
    }
}

/// How a [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub drained: bool,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish within `grace`.
pub async fn run(
    listener: TcpListener,
    state: Arc<ServeState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Finished {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("{}", crate::edge::listening_message("serve", addr));
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let reaper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                state.models.reap();
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(state.clone(), request));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, "connection ended: {error}");
            }
        });
    }
    drop(listener);
    reaper.abort();
    let drained = tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok();
    Finished { drained }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lines() -> Format {
        Box::new(|event| {
            Bytes::from(match event {
                Event::Text(t) => format!("text {t}\n"),
                Event::Done(_) => "done\n".to_string(),
                Event::Error(e) | Event::Rejected(e) => format!("error {e}\n"),
            })
        })
    }

    /// A stream whose engine side vanishes without `Done` ends with an error frame, never
    /// cleanly.
    #[tokio::test]
    async fn a_cut_stream_ends_with_an_error_frame() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Event::Text("b".into())).unwrap();
        drop(tx);
        let body = EventBody::new(Event::Text("a".into()), rx, lines());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            &bytes[..],
            b"text a\ntext b\nerror the generation ended unexpectedly\n"
        );
    }

    /// Dropping the body (the client went away) closes the engine's sender side.
    #[test]
    fn dropping_the_body_closes_the_channel() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let body = EventBody::new(Event::Text("a".into()), rx, lines());
        assert!(!tx.is_closed());
        drop(body);
        assert!(tx.is_closed());
    }

    /// Pins the error → status mapping clients rely on, for every variant. The macro builds
    /// one value of each listed variant and a `match` over the listed variants with no
    /// wildcard arm, so a new variant does not compile until it is listed here with its status.
    #[test]
    fn status_mapping() {
        macro_rules! pinned {
            ($($variant:ident $(($arg:expr))? => $status:literal,)*) => {{
                fn pinned(error: &ServeError) -> u16 {
                    match error {
                        $(ServeError::$variant { .. } => $status,)*
                    }
                }
                [$(ServeError::$variant $(($arg))?,)*].map(|error| {
                    let status = pinned(&error);
                    (error, status)
                })
            }};
        }
        let cases = pinned! {
            BadRequest("x".into()) => 400,
            NotFound("x".into()) => 404,
            MethodNotAllowed => 405,
            TooLarge(1) => 413,
            Busy("x".into()) => 503,
            Conflict("x".into()) => 409,
            Internal("x".into()) => 500,
            Unauthorized("x".into()) => 401,
            Forbidden("x".into()) => 403,
            UnsupportedMediaType => 415,
            OverLimit("x".into()) => 413,
            NoSpace("x".into()) => 507,
        };
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }
}
