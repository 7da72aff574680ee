//! Hostile and broken clients: every case gets a clear answer, and the proxy keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(5);

/// After each bad client, a good request must still work.
async fn still_serving(proxy: &TestProxy) {
    let seen = call(proxy.addr, "GET", "/api/tags", b"").await;
    assert_eq!(seen.status, 200, "proxy stopped serving");
}

async fn setup() -> (Upstream, TestProxy) {
    let upstream = Upstream::start(Script::status(200, "application/json", b"{\"ok\":true}")).await;
    let proxy = TestProxy::start_with(&upstream.url(), |c| {
        c.max_body = rawrxd::config::ByteSize::Bytes(1024)
    })
    .await;
    (upstream, proxy)
}

#[tokio::test]
async fn malformed_request_line_gets_400() {
    let (_upstream, proxy) = setup().await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /api/tags HTTP/9.9\r\n\r\n",
        b"GET /a b c\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ] {
        let answer = raw_exchange(proxy.addr, garbage, true, WAIT).await;
        assert_eq!(
            raw_status(&answer),
            400,
            "for {:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    still_serving(&proxy).await;
}

#[tokio::test]
async fn body_shorter_than_content_length_gets_400() {
    let (upstream, proxy) = setup().await;
    let answer = raw_exchange(
        proxy.addr,
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"model\":",
        true,
        WAIT,
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        400,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("ended before its declared length"), "{text}");
    assert!(
        upstream.received.lock().unwrap().is_empty(),
        "a cut body must not reach the model"
    );
    still_serving(&proxy).await;
}

#[tokio::test]
async fn declared_oversized_body_gets_413_without_reading_it() {
    let (upstream, proxy) = setup().await;
    let answer = raw_exchange(
        proxy.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1025\r\n\r\n",
        false,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(raw_status(&answer), 413);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("invalid_request_error"),
        "OpenAI-shaped error: {text}"
    );
    assert!(upstream.received.lock().unwrap().is_empty());
    still_serving(&proxy).await;
}

#[tokio::test]
async fn chunked_body_growing_past_the_limit_gets_413() {
    let (upstream, proxy) = setup().await;
    let mut raw =
        b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'a'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(proxy.addr, &raw, false, Duration::from_secs(1)).await;
    assert_eq!(
        raw_status(&answer),
        413,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        upstream
            .received
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.body.len() <= 1024),
        "more than the limit reached the upstream"
    );
    still_serving(&proxy).await;
}

#[tokio::test]
async fn default_limit_is_100_mib() {
    let upstream = Upstream::start(Script::status(200, "application/json", b"{}")).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        (100 << 20) + 1
    );
    let answer = raw_exchange(
        proxy.addr,
        head.as_bytes(),
        false,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(raw_status(&answer), 413);
}

#[tokio::test]
async fn invalid_utf8_in_header_values_is_forwarded_not_fatal() {
    let (upstream, proxy) = setup().await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Weird: caf\xe9 \xff\xfe\r\nConnection: close\r\n\r\n",
        false,
        WAIT,
    )
    .await;
    assert_eq!(raw_status(&answer), 200);
    let got = upstream.last();
    assert_eq!(
        got.header_values("x-weird"),
        vec![b"caf\xe9 \xff\xfe".to_vec()]
    );
    still_serving(&proxy).await;
}

#[tokio::test]
async fn a_thousand_concurrent_connections() {
    let (_upstream, proxy) = setup().await;
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            raw_exchange(
                addr,
                b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                false,
                Duration::from_secs(30),
            )
            .await
        }));
    }
    let mut ok = 0;
    for client in clients {
        if raw_status(&client.await.unwrap()) == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    still_serving(&proxy).await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_instead_of_failing() {
    let lines = [token_line(0), token_line(1)];
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::from_millis(150))).await;
    let proxy = TestProxy::start_with(&upstream.url(), |c| c.max_connections = 2).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            raw_exchange(
                addr,
                b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                false,
                Duration::from_secs(10),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(proxy.state.open_connections() <= 2);
    for client in clients {
        let answer = client.await.unwrap();
        assert_eq!(raw_status(&answer), 200);
    }
}

/// Blob uploads carry whole model files (`ollama create` from a file): they stream through
/// whatever `max_body` is; every other path keeps the limit.
#[tokio::test]
async fn blob_uploads_are_exempt_from_the_body_limit() {
    let (upstream, proxy) = setup().await;
    let model = vec![b'm'; 64 * 1024];
    let path = format!("/api/blobs/sha256:{}", "a".repeat(64));
    let seen = call(proxy.addr, "POST", &path, &model).await;
    assert_eq!(seen.status, 200);
    let received = upstream.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body.len(),
        model.len(),
        "the whole file reached serve"
    );
    let refused = call(proxy.addr, "POST", "/api/generate", &model).await;
    assert_eq!(refused.status, 413);
    still_serving(&proxy).await;
}
