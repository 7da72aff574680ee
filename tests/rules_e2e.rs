//! Rules applied through the proxy, end to end: a scripted upstream streams the model's text
//! in awkward pieces; the client must get the patched text and never the start of a match.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use support::*;

const RULES: &str = r#"
[[rule]]
id = "no-confidential"
kind = "replace"
find = "confidential"
replace = "[redacted]"

[[rule]]
id = "aws"
kind = "redact"
detector = "aws_access_key"
mask = "[AWS KEY]"

[[rule]]
id = "no-rm"
kind = "block"
find = "rm -rf /"
message = "[blocked: destructive command]"

[[rule]]
id = "only-for-other-models"
kind = "replace"
find = "report"
replace = "REPORT"
models = ["llama*"]
"#;

fn gen_line(text: &str, done: bool) -> String {
    format!(
        r#"{{"model":"gemma3:270m","created_at":"2025-01-20T14:32:45Z","response":{},"done":{done}}}"#,
        serde_json::to_string(text).unwrap()
    )
}

/// The `response` texts of an NDJSON body, concatenated.
fn ndjson_text(body: &str) -> String {
    body.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["response"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn straddling_match_never_reaches_the_client() {
    let lines = [
        gen_line("The confid", false),
        gen_line("ential report", false),
        gen_line("", true),
    ];
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::from_millis(50))).await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let body = br#"{"model":"gemma3:270m","prompt":"x"}"#;
    let seen = call(proxy.addr, "POST", "/api/generate", body).await;
    assert_eq!(seen.status, 200);
    // Frame by frame, the client never holds the start of the match.
    let mut so_far = Vec::new();
    for (_, frame) in &seen.frames {
        so_far.extend_from_slice(frame);
        assert!(!String::from_utf8_lossy(&so_far).contains("confid"));
    }
    let text = seen.text();
    assert_eq!(
        ndjson_text(&text),
        "The [redacted] report",
        "model-scoped rule must not apply"
    );
    assert_eq!(text.lines().count(), 3);
    assert!(seen.header("content-length").is_none());
    // The request reached the upstream unchanged.
    assert_eq!(upstream.last().body, body);
}

#[tokio::test]
async fn model_globs_select_rules() {
    let lines = [gen_line("a report", false), gen_line("", true)];
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::ZERO)).await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let body = br#"{"model":"llama3.2","prompt":"x"}"#;
    let seen = call(proxy.addr, "POST", "/api/generate", body).await;
    assert_eq!(ndjson_text(&seen.text()), "a REPORT");
}

#[tokio::test]
async fn block_ends_the_stream_and_the_upstream_request() {
    let lines: Vec<String> = ["Sure, run rm -r", "f / then", " more", " and more"]
        .iter()
        .map(|t| gen_line(t, false))
        .chain((0..50).map(|i| gen_line(&format!(" {i}"), false)))
        .collect();
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::from_millis(20))).await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let seen = call(proxy.addr, "POST", "/api/generate", br#"{"model":"m"}"#).await;
    assert_eq!(seen.error, None);
    let text = seen.text();
    assert!(!text.contains("rm -r"), "{text}");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["rawrxd_blocked"], "no-rm");
    assert_eq!(
        ndjson_text(&text),
        "Sure, run [blocked: destructive command]"
    );
    // The upstream stream was dropped, so the model stops generating.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        upstream.disconnects.lock().unwrap().len(),
        1,
        "upstream request not cancelled"
    );
}

#[tokio::test]
async fn secrets_are_redacted_in_sse_and_in_whole_json() {
    let events = [
        r#"{"id":"1","choices":[{"index":0,"delta":{"content":"key AKIAIOSF"},"finish_reason":null}]}"#,
        r#"{"id":"1","choices":[{"index":0,"delta":{"content":"ODNN7EXAMPLE ok"},"finish_reason":null}]}"#,
        r#"{"id":"1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ];
    let upstream = Upstream::start(Script::sse(&events, Duration::from_millis(20))).await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let seen = call(
        proxy.addr,
        "POST",
        "/v1/chat/completions",
        br#"{"model":"m","stream":true}"#,
    )
    .await;
    let text = seen.text();
    assert!(!text.contains("AKIA"), "{text}");
    assert!(text.contains("[AWS KEY] ok"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));

    let answer = br#"{"model":"m","message":{"role":"assistant","content":"it is confidential"},"done":true}"#;
    let upstream = Upstream::start(Script::status(
        200,
        "application/json; charset=utf-8",
        answer,
    ))
    .await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let seen = call(
        proxy.addr,
        "POST",
        "/api/chat",
        br#"{"model":"m","stream":false}"#,
    )
    .await;
    let expected =
        r#"{"model":"m","message":{"role":"assistant","content":"it is [redacted]"},"done":true}"#;
    assert_eq!(seen.text(), expected);
    assert_eq!(
        seen.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
}

#[tokio::test]
async fn other_endpoints_and_errors_pass_through_untouched() {
    let answer = br#"{"models":[{"name":"confidential:latest"}]}"#;
    let upstream = Upstream::start(Script::status(200, "application/json", answer)).await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let seen = call(proxy.addr, "GET", "/api/tags", b"").await;
    assert_eq!(seen.body(), answer);

    let error = br#"{"error":"confidential model not found"}"#;
    let upstream = Upstream::start(Script::status(404, "application/json", error)).await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let seen = call(proxy.addr, "POST", "/api/generate", br#"{"model":"x"}"#).await;
    assert_eq!(seen.status, 404);
    assert_eq!(seen.body(), error);
}

#[tokio::test]
async fn a_stream_keeps_the_rules_it_started_with() {
    let lines: Vec<String> = ["one secret", " two secret", " three secret"]
        .iter()
        .map(|t| gen_line(t, false))
        .chain([gen_line("", true)])
        .collect();
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::from_millis(150))).await;
    let old = "[[rule]]\nid = \"old\"\nkind = \"replace\"\nfind = \"secret\"\nreplace = \"OLD\"\n";
    let proxy = TestProxy::with_rules(&upstream.url(), old).await;
    let addr = proxy.addr;
    let running =
        tokio::spawn(async move { call(addr, "POST", "/api/generate", br#"{"model":"m"}"#).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Swap in new rules while the first stream is still running.
    let new = "[[rule]]\nid = \"new\"\nkind = \"replace\"\nfind = \"secret\"\nreplace = \"NEW\"\n";
    let rules = rawrxd::rules::parse_file(std::path::Path::new("new.toml"), new).unwrap();
    let old_live = proxy.state.live.load_full();
    proxy.state.live.store(std::sync::Arc::new(
        rawrxd::live::Live::build(rules).unwrap(),
    ));

    let fresh = call(proxy.addr, "POST", "/api/generate", br#"{"model":"m"}"#).await;
    assert_eq!(ndjson_text(&fresh.text()), "one NEW two NEW three NEW");
    let first = running.await.unwrap();
    assert_eq!(ndjson_text(&first.text()), "one OLD two OLD three OLD");

    // Per-rule counters saw each correction.
    let counters = &old_live.pipeline.table().counters[0];
    assert_eq!(
        counters.applied.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(counters.hits.load(std::sync::atomic::Ordering::Relaxed), 3);
}
