//! The client protocols the proxy speaks back: which error shape a path expects, how a
//! streamed response is framed, and what an in-band error looks like in each framing.
//!
//! Ollama's native API (`/api/*` and everything not under `/v1/`) reports errors as
//! `{"error":"…"}`; the OpenAI-compatible API (`/v1/*`) as
//! `{"error":{"message":"…","type":"…","code":null}}`. Streams are NDJSON (one JSON object per
//! line, `application/x-ndjson`) or SSE (`text/event-stream`, `data: {…}` events).

use bytes::Bytes;
use http::HeaderMap;

/// Which API family a request belongs to; decides the shape of error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Ollama's native API: `{"error":"…"}`.
    Ollama,
    /// OpenAI-compatible API under `/v1/`: `{"error":{"message":…,"type":…}}`.
    OpenAi,
}

impl Flavor {
    pub fn of_path(path: &str) -> Self {
        if path == "/v1" || path.starts_with("/v1/") {
            Flavor::OpenAi
        } else {
            Flavor::Ollama
        }
    }

    /// A complete JSON error body in this flavor's shape.
    pub fn error_body(self, message: &str, kind: &str) -> Bytes {
        let value = match self {
            Flavor::Ollama => serde_json::json!({ "error": message }),
            Flavor::OpenAi => serde_json::json!({
                "error": { "message": message, "type": kind, "code": null }
            }),
        };
        Bytes::from(value.to_string())
    }
}

/// How a streamed response body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Newline-delimited JSON (Ollama's streams).
    Ndjson,
    /// Server-sent events (OpenAI-compatible streams).
    Sse,
    /// Anything else: no in-band error can be expressed.
    Opaque,
}

impl Framing {
    pub fn of_headers(headers: &HeaderMap) -> Self {
        let Some(content_type) = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return Framing::Opaque;
        };
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Framing::Ndjson,
            "text/event-stream" => Framing::Sse,
            _ => Framing::Opaque,
        }
    }

    /// The bytes that tell a client of this framing that the stream failed, given the last
    /// bytes already sent (`tail`, at most the last two), so the error starts on a fresh line
    /// or event. `None` for [`Framing::Opaque`].
    pub fn inband_error(self, message: &str, tail: &[u8]) -> Option<Bytes> {
        let mut out = Vec::with_capacity(message.len() + 64);
        match self {
            Framing::Ndjson => {
                if !tail.is_empty() && !tail.ends_with(b"\n") {
                    out.push(b'\n');
                }
                out.extend_from_slice(Flavor::Ollama.error_body(message, "").as_ref());
                out.push(b'\n');
            }
            Framing::Sse => {
                // An SSE event ends at a blank line; finish whatever event was cut.
                if tail.ends_with(b"\n\n") || tail.is_empty() {
                } else if tail.ends_with(b"\n") {
                    out.push(b'\n');
                } else {
                    out.extend_from_slice(b"\n\n");
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(
                    Flavor::OpenAi
                        .error_body(message, "upstream_error")
                        .as_ref(),
                );
                out.extend_from_slice(b"\n\n");
            }
            Framing::Opaque => return None,
        }
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_follows_the_path() {
        assert_eq!(Flavor::of_path("/v1/chat/completions"), Flavor::OpenAi);
        assert_eq!(Flavor::of_path("/api/chat"), Flavor::Ollama);
        assert_eq!(Flavor::of_path("/v10"), Flavor::Ollama);
    }

    #[test]
    fn error_bodies_have_each_api_shape() {
        let ollama: serde_json::Value =
            serde_json::from_slice(&Flavor::Ollama.error_body("boom \"x\"", "t")).unwrap();
        assert_eq!(ollama, serde_json::json!({"error": "boom \"x\""}));
        let openai: serde_json::Value =
            serde_json::from_slice(&Flavor::OpenAi.error_body("boom", "upstream_error")).unwrap();
        assert_eq!(openai["error"]["message"], "boom");
        assert_eq!(openai["error"]["type"], "upstream_error");
    }

    #[test]
    fn framing_from_content_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(Framing::of_headers(&headers), Framing::Opaque);
        headers.insert("content-type", "application/x-ndjson".parse().unwrap());
        assert_eq!(Framing::of_headers(&headers), Framing::Ndjson);
        headers.insert(
            "content-type",
            "text/event-stream; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(Framing::of_headers(&headers), Framing::Sse);
    }

    #[test]
    fn inband_errors_start_on_a_fresh_line_or_event() {
        let line = Framing::Ndjson.inband_error("cut", b"}\n").unwrap();
        assert_eq!(&line[..], b"{\"error\":\"cut\"}\n");
        let line = Framing::Ndjson.inband_error("cut", b"{\"res").unwrap();
        assert_eq!(&line[..], b"\n{\"error\":\"cut\"}\n");
        let event = Framing::Sse.inband_error("cut", b"}\n\n").unwrap();
        assert!(event.starts_with(b"data: {\"error\":{"));
        assert!(event.ends_with(b"\n\n"));
        let event = Framing::Sse.inband_error("cut", b"{\"").unwrap();
        assert!(event.starts_with(b"\n\ndata: "));
        let event = Framing::Sse.inband_error("cut", b"}\n").unwrap();
        assert!(event.starts_with(b"\ndata: "));
        assert_eq!(Framing::Opaque.inband_error("cut", b""), None);
    }
}
