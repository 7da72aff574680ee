//! The proxy against a scripted upstream: every scenario is run direct and through the proxy,
//! and the client must see the same bytes (except the in-band error DESIGN.md prescribes when
//! the upstream dies mid-stream), frame by frame as they are produced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;

const LINE_GAP: Duration = Duration::from_millis(100);

fn assert_same_response(direct: &Seen, proxied: &Seen) {
    assert_eq!(direct.status, proxied.status);
    assert_eq!(direct.error, None);
    assert_eq!(proxied.error, None, "proxied body failed");
    assert_eq!(direct.body(), proxied.body(), "bodies differ");
    for name in ["content-type", "content-length"] {
        assert_eq!(direct.header(name), proxied.header(name), "header {name}");
    }
}

/// Frames must arrive spread out as the upstream produced them, not in one lump at the end.
fn assert_incremental(seen: &Seen, expected_lines: usize) {
    assert!(
        seen.frames.len() >= expected_lines,
        "{} frames for {expected_lines} lines",
        seen.frames.len()
    );
    let first = seen.frames[0].0;
    let last = seen.frames[seen.frames.len() - 1].0;
    let spread = last - first;
    let expected = LINE_GAP * (expected_lines as u32 - 1);
    assert!(
        spread >= expected.mul_f32(0.8),
        "frames arrived within {spread:?}; the upstream spread them over {expected:?}"
    );
    // The first line is written LINE_GAP after the head: it must not wait for the rest.
    let first_after_head = first - seen.head_at;
    assert!(
        first_after_head < LINE_GAP * 2,
        "first frame came {first_after_head:?} after the head"
    );
}

#[tokio::test]
async fn ndjson_stream_arrives_line_by_line_and_byte_identical() {
    let lines: Vec<String> = (0..5).map(token_line).collect();
    let upstream = Upstream::start(Script::ndjson(&lines, LINE_GAP)).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let body = br#"{"model":"m","prompt":"hi"}"#;

    let direct = call(upstream.addr, "POST", "/api/generate", body).await;
    let proxied = call(proxy.addr, "POST", "/api/generate", body).await;

    assert_same_response(&direct, &proxied);
    assert_eq!(proxied.text().lines().count(), 5);
    assert_incremental(&direct, 5);
    assert_incremental(&proxied, 5);
}

#[tokio::test]
async fn sse_stream_arrives_event_by_event_and_byte_identical() {
    let events = [
        r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
        r#"{"choices":[{"delta":{"content":"lo"}}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
    ];
    let upstream = Upstream::start(Script::sse(&events, LINE_GAP)).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let body = br#"{"model":"m","stream":true,"messages":[]}"#;

    let direct = call(upstream.addr, "POST", "/v1/chat/completions", body).await;
    let proxied = call(proxy.addr, "POST", "/v1/chat/completions", body).await;

    assert_same_response(&direct, &proxied);
    assert!(proxied.text().ends_with("data: [DONE]\n\n"));
    assert_incremental(&proxied, 3);
}

#[tokio::test]
async fn request_reaches_upstream_as_sent_less_hop_by_hop_headers() {
    let upstream = Upstream::start(Script::status(200, "application/json", b"{}")).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let body = b"{\"model\":\"m\",\"prompt\":\"\xc3\xa9\xe2\x9c\x93\"}";
    let request = http::Request::builder()
        .method("PUT")
        .uri("/api/some/path?a=1&b=two%20words")
        .header("host", "localhost:11435")
        .header("authorization", "Bearer abc")
        .header("x-custom", "one")
        .header("x-custom", "two")
        .header("connection", "x-hop-only")
        .header("x-hop-only", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let seen = send(proxy.addr, request).await;
    assert_eq!(seen.status, 200);

    let got = upstream.last();
    assert_eq!(
        got.request_line(),
        "PUT /api/some/path?a=1&b=two%20words HTTP/1.1"
    );
    assert_eq!(
        got.header("host").as_deref(),
        Some(upstream.addr.to_string().as_str())
    );
    assert_eq!(got.header("authorization").as_deref(), Some("Bearer abc"));
    assert_eq!(
        got.header_values("x-custom"),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    for hop in ["x-hop-only", "keep-alive", "te", "transfer-encoding"] {
        assert_eq!(got.header(hop), None, "{hop} was forwarded");
    }
    assert_eq!(got.body, body);
}

#[tokio::test]
async fn large_request_body_streams_to_the_upstream_intact() {
    let upstream = Upstream::start(Script::status(200, "application/json", b"{}")).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let body = pattern(20 << 20);
    let seen = call(proxy.addr, "POST", "/api/chat", &body).await;
    assert_eq!(seen.status, 200);
    let got = upstream.last();
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body, "body changed on the way");
}

#[tokio::test]
async fn error_statuses_pass_through_unchanged() {
    let answer = br#"{"error":"model \"nope\" not found, try pulling it first"}"#;
    let upstream = Upstream::start(Script::status(
        404,
        "application/json; charset=utf-8",
        answer,
    ))
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let direct = call(upstream.addr, "POST", "/api/generate", b"{}").await;
    let proxied = call(proxy.addr, "POST", "/api/generate", b"{}").await;
    assert_same_response(&direct, &proxied);
    assert_eq!(proxied.status, 404);
    assert_eq!(proxied.body(), answer);
}

#[tokio::test]
async fn huge_response_body_is_byte_identical() {
    let size = 64 << 20;
    let upstream = Upstream::start(Script::huge(size)).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let direct = call(upstream.addr, "GET", "/api/blob", b"").await;
    let proxied = call(proxy.addr, "GET", "/api/blob", b"").await;
    assert_same_response(&direct, &proxied);
    assert_eq!(proxied.body().len(), size);
    assert!(
        proxied.frames.len() > 1,
        "a 64 MiB body must be streamed, not buffered"
    );
}

#[tokio::test]
async fn head_requests_keep_the_upstream_length() {
    let upstream = Upstream::start(
        Script::default()
            .write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\n"),
    )
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let seen = call(proxy.addr, "HEAD", "/", b"").await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("content-length"), Some("17"));
    assert!(seen.body().is_empty());
}

#[tokio::test]
async fn stalled_upstream_gives_504_in_the_clients_api_shape() {
    let upstream = Upstream::start(Script::stall(Duration::from_secs(3))).await;
    let proxy = TestProxy::start_with(&upstream.url(), |c| c.header_timeout = "300ms".into()).await;

    let started = Instant::now();
    let ollama = call(proxy.addr, "POST", "/api/generate", b"{}").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(ollama.status, 504);
    let error = ollama.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("no response headers within 300ms"),
        "{error}"
    );

    let openai = call(proxy.addr, "POST", "/v1/chat/completions", b"{}").await;
    assert_eq!(openai.status, 504);
    let json = openai.json();
    assert!(json["error"]["message"].as_str().unwrap().contains("300ms"));
    assert_eq!(json["error"]["type"], "timeout_error");
}

#[tokio::test]
async fn unreachable_upstream_gives_502() {
    // Bind and drop: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = TestProxy::start(&format!("http://127.0.0.1:{port}")).await;
    let seen = call(proxy.addr, "POST", "/api/chat", b"{}").await;
    assert_eq!(seen.status, 502);
    assert!(seen.json()["error"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
    let seen = call(proxy.addr, "GET", "/v1/models", b"").await;
    assert_eq!(seen.status, 502);
    assert_eq!(seen.json()["error"]["type"], "upstream_error");
}

#[tokio::test]
async fn ndjson_death_mid_stream_ends_with_an_inband_error_line() {
    let whole = [
        format!("{}\n", token_line(0)),
        format!("{}\n", token_line(1)),
    ];
    let script = Script::dies_mid_stream("application/x-ndjson", &whole, r#"{"model":"m","resp"#);
    let upstream = Upstream::start(script).await;
    let proxy = TestProxy::start(&upstream.url()).await;

    let direct = call(upstream.addr, "POST", "/api/generate", b"{}").await;
    let proxied = call(proxy.addr, "POST", "/api/generate", b"{}").await;

    assert!(
        direct.error.is_some(),
        "talking direct, the cut shows as a broken body"
    );
    assert_eq!(
        proxied.error, None,
        "through the proxy the stream ends cleanly"
    );
    let body = proxied.body();
    assert!(
        body.starts_with(&direct.body()),
        "everything sent before the death passes"
    );
    let text = proxied.text();
    let last = text.lines().last().unwrap();
    let error: serde_json::Value = serde_json::from_str(last).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("mid-stream"),
        "{last}"
    );
    assert!(text.ends_with('\n'));
    // The cut half-line stays on its own line; the error is a line of its own.
    assert_eq!(text.lines().count(), 4);
}

#[tokio::test]
async fn sse_death_mid_stream_ends_with_an_inband_error_event() {
    let script = Script::dies_mid_stream(
        "text/event-stream",
        &["data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"],
        "data: {\"choi",
    );
    let upstream = Upstream::start(script).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let proxied = call(proxy.addr, "POST", "/v1/chat/completions", b"{}").await;
    assert_eq!(proxied.error, None);
    let text = proxied.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{text:?}");
    let last = events[2].strip_prefix("data: ").unwrap();
    let error: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["type"], "upstream_error");
}

#[tokio::test]
async fn opaque_death_mid_stream_is_a_cut_stream_not_a_clean_end() {
    let script = Script::dies_mid_stream("application/octet-stream", &["abc"], "def");
    let upstream = Upstream::start(script).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let proxied = call(proxy.addr, "GET", "/blob", b"").await;
    assert!(
        proxied.error.is_some(),
        "the client must see the stream was cut"
    );
    assert_eq!(proxied.body(), b"abcdef");
}

#[tokio::test]
async fn client_disconnect_reaches_the_upstream_within_100ms() {
    let lines: Vec<String> = (0..200).map(token_line).collect();
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::from_millis(20))).await;
    let proxy = TestProxy::start(&upstream.url()).await;

    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(request("POST", proxy.addr, "/api/generate", b"{}"))
        .await
        .unwrap();
    let mut body = response.into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    drop(sender);
    connection.abort();
    let gone = Instant::now();

    let deadline = gone + Duration::from_secs(2);
    let seen = loop {
        if let Some(at) = upstream.disconnects.lock().unwrap().first().copied() {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream never saw the disconnect"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let lag = seen.saturating_duration_since(gone);
    assert!(
        lag < Duration::from_millis(100),
        "upstream saw the disconnect after {lag:?}"
    );
}

#[tokio::test]
async fn health_reports_whether_the_upstream_answers() {
    let upstream = Upstream::start(Script::status(200, "text/plain", b"Ollama is running")).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let seen = call(proxy.addr, "GET", "/rawrxd/health", b"").await;
    assert_eq!(seen.status, 200);
    let health = seen.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["upstream"]["reachable"], true);
    assert_eq!(health["upstream"]["url"], upstream.url());
    assert!(health["requests"]["total"].as_u64().unwrap() >= 1);
    assert!(
        upstream
            .received
            .lock()
            .unwrap()
            .iter()
            .all(|r| !r.request_line().contains("/rawrxd")),
        "own endpoints must never be forwarded"
    );

    drop(upstream);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = TestProxy::start(&format!("http://127.0.0.1:{port}")).await;
    let health = call(proxy.addr, "GET", "/rawrxd/health", b"").await.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["upstream"]["reachable"], false);
    assert!(health["upstream"]["error"].as_str().is_some());

    let missing = call(proxy.addr, "GET", "/rawrxd/nothing", b"").await;
    assert_eq!(missing.status, 404);
    let wrong = call(proxy.addr, "DELETE", "/rawrxd/health", b"").await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn graceful_shutdown_lets_running_streams_finish() {
    let lines: Vec<String> = (0..5).map(token_line).collect();
    let upstream = Upstream::start(Script::ndjson(&lines, LINE_GAP)).await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let addr = proxy.addr;

    let stream = tokio::spawn(async move { call(addr, "POST", "/api/generate", b"{}").await });
    tokio::time::sleep(LINE_GAP * 2).await;
    let finished = proxy.shutdown().await;
    assert!(finished.drained);
    let seen = stream.await.unwrap();
    assert_eq!(seen.error, None);
    assert_eq!(
        seen.text().lines().count(),
        5,
        "the stream was cut by the shutdown"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let lines: Vec<String> = (0..50).map(token_line).collect();
    let upstream = Upstream::start(Script::ndjson(&lines, LINE_GAP)).await;
    let mut proxy =
        TestProxy::start_with(&upstream.url(), |c| c.shutdown_grace = "200ms".into()).await;
    let addr = proxy.addr;
    let _stream = tokio::spawn(async move { call(addr, "POST", "/api/generate", b"{}").await });
    tokio::time::sleep(LINE_GAP).await;
    let started = Instant::now();
    let finished = proxy.shutdown().await;
    assert!(!finished.drained);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn h2c_clients_are_served_too() {
    let upstream =
        Upstream::start(Script::status(200, "application/json", br#"{"models":[]}"#)).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri(format!("http://{}/api/tags", proxy.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let seen = collect(response, Instant::now()).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body(), br#"{"models":[]}"#);
    assert_eq!(upstream.last().request_line(), "GET /api/tags HTTP/1.1");
}
