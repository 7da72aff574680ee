//! `detect` rules through the proxy against a scripted upstream: each detector on each
//! endpoint (streamed and not), retries (one that succeeds, one that fails again), `stop`
//! cutting a loop and cancelling the upstream, tool calls in both shapes, shadow mode, the
//! audit lines, and that an ordinary answer is not held back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const ENDPOINTS: [(&str, &str); 4] = [
    ("/api/chat", "chat"),
    ("/api/generate", "generate"),
    ("/v1/chat/completions", "openai_chat"),
    ("/v1/completions", "openai_completions"),
];

fn is_sse(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// One piece of text as the upstream streams it on `path`.
fn piece(path: &str, text: &str) -> String {
    match path {
        "/api/chat" => json!({"model":"m","created_at":"2026-01-01T00:00:00Z",
            "message":{"role":"assistant","content":text},"done":false})
        .to_string(),
        "/api/generate" => {
            json!({"model":"m","created_at":"2026-01-01T00:00:00Z","response":text,"done":false})
                .to_string()
        }
        "/v1/chat/completions" => json!({"id":"c1","object":"chat.completion.chunk","created":1,
            "model":"m","choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]})
        .to_string(),
        _ => json!({"id":"c1","object":"text_completion","created":1,"model":"m",
            "choices":[{"index":0,"text":text,"finish_reason":null}]})
        .to_string(),
    }
}

/// The final chunk on `path`.
fn last(path: &str, reason: &str) -> String {
    match path {
        "/api/chat" => json!({"model":"m","created_at":"2026-01-01T00:00:00Z",
            "message":{"role":"assistant","content":""},"done":true,"done_reason":reason})
        .to_string(),
        "/api/generate" => json!({"model":"m","created_at":"2026-01-01T00:00:00Z","response":"",
            "done":true,"done_reason":reason})
        .to_string(),
        "/v1/chat/completions" => json!({"id":"c1","object":"chat.completion.chunk","created":1,
            "model":"m","choices":[{"index":0,"delta":{},"finish_reason":reason}]})
        .to_string(),
        _ => json!({"id":"c1","object":"text_completion","created":1,"model":"m",
            "choices":[{"index":0,"text":"","finish_reason":reason}]})
        .to_string(),
    }
}

/// A streamed answer of `pieces` on `path`, `delay` before each.
fn answer(path: &str, pieces: &[&str], reason: &str, delay: Duration) -> Script {
    let mut units: Vec<String> = pieces.iter().map(|p| piece(path, p)).collect();
    units.push(last(path, reason));
    if is_sse(path) {
        let refs: Vec<&str> = units.iter().map(String::as_str).collect();
        Script::sse(&refs, delay)
    } else {
        Script::ndjson(&units, delay)
    }
}

fn request_body(path: &str, stream: bool) -> Vec<u8> {
    let body = if path.ends_with("chat") || path.ends_with("chat/completions") {
        json!({"model":"m","stream":stream,"messages":[{"role":"user","content":"Write it."}]})
    } else {
        json!({"model":"m","stream":stream,"prompt":"Write it."})
    };
    body.to_string().into_bytes()
}

/// The answer's text as the client got it, after checking the stream is well-formed: every
/// line/event JSON, one final chunk, at the end (and `[DONE]` last on SSE). Also returns the
/// final chunk.
fn read_stream(path: &str, body: &str) -> (String, Value) {
    let mut text = String::new();
    let mut finals = Vec::new();
    let units: Vec<&str> = if is_sse(path) {
        assert!(
            body.ends_with("data: [DONE]\n\n"),
            "no [DONE] at the end: {body:?}"
        );
        body.split("\n\n").filter(|e| !e.is_empty()).collect()
    } else {
        body.lines().collect()
    };
    for unit in units {
        let data = unit.strip_prefix("data: ").unwrap_or(unit);
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {unit:?}"));
        assert!(finals.is_empty(), "a chunk after the final one: {body}");
        let piece = match path {
            "/api/chat" => chunk["message"]["content"].as_str(),
            "/api/generate" => chunk["response"].as_str(),
            "/v1/chat/completions" => chunk["choices"][0]["delta"]["content"].as_str(),
            _ => chunk["choices"][0]["text"].as_str(),
        };
        text.push_str(piece.unwrap_or(""));
        let ended = chunk["done"] == true
            || chunk["choices"][0]["finish_reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty());
        if ended {
            finals.push(chunk);
        }
    }
    assert_eq!(finals.len(), 1, "final chunks: {finals:?} in {body}");
    (text, finals.pop().unwrap())
}

const REFUSAL_RETRY: &str = r#"
[[rule]]
id = "no-refusals"
kind = "detect"
detector = "refusal"
action = "retry"
correction = "You can do this task. Answer it directly."
retry_options = { temperature = 0.7 }
"#;

#[tokio::test]
async fn a_refusal_is_retried_and_the_client_sees_only_the_second_answer_on_every_endpoint() {
    for (path, _) in ENDPOINTS {
        let refusal = answer(
            path,
            &[
                "I", "'m", " sorry", ",", " but", " I", " can", "'t", " help", " with", " that.",
            ],
            "stop",
            Duration::ZERO,
        );
        let clean = answer(path, &["Here", " it", " is", "."], "stop", Duration::ZERO);
        let upstream = Upstream::start_sequence(vec![refusal, clean]).await;
        let proxy = TestProxy::with_rules(&upstream.url(), REFUSAL_RETRY).await;
        let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
        assert_eq!(seen.status, 200, "{path}");
        let (text, _) = read_stream(path, &seen.text());
        assert_eq!(text, "Here it is.", "{path}");
        let received = upstream.received.lock().unwrap().clone();
        assert_eq!(received.len(), 2, "{path}: one retry");
        let retried: Value = serde_json::from_slice(&received[1].body).unwrap();
        let sent = retried.to_string();
        assert!(sent.contains("Answer it directly."), "{path}: {sent}");
        let temperature = if path.starts_with("/api/") {
            &retried["options"]["temperature"]
        } else {
            &retried["temperature"]
        };
        assert_eq!(temperature, 0.7, "{path}: {sent}");
        let stats = &proxy.state.stats;
        assert_eq!(stats.retries.load(Ordering::Relaxed), 1);
        assert_eq!(stats.retries_succeeded.load(Ordering::Relaxed), 1);
        assert_eq!(stats.failures_detected.load(Ordering::Relaxed), 1);
    }
}

#[tokio::test]
async fn a_whole_answer_is_retried_before_anything_is_sent() {
    let first = json!({"model":"m","created_at":"t","message":{"role":"assistant",
        "content":"As an AI language model, I cannot write files."},"done":true,"done_reason":"stop"});
    let second = json!({"model":"m","created_at":"t","message":{"role":"assistant",
        "content":"Done: the file is written."},"done":true,"done_reason":"stop"});
    let upstream = Upstream::start_sequence(vec![
        Script::status(200, "application/json", first.to_string().as_bytes()),
        Script::status(200, "application/json", second.to_string().as_bytes()),
    ])
    .await;
    let proxy = TestProxy::with_rules(&upstream.url(), REFUSAL_RETRY).await;
    let seen = call(
        proxy.addr,
        "POST",
        "/api/chat",
        &request_body("/api/chat", false),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json(), second);
    assert_eq!(
        seen.header("content-length"),
        Some(second.to_string().len().to_string().as_str())
    );
    assert_eq!(upstream.received.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_retry_that_fails_again_is_delivered_and_never_tried_a_third_time() {
    let dir = tempdir("detect-twice");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/detect.toml"), REFUSAL_RETRY).unwrap();
    let path = "/api/chat";
    let refusal = |words: &[&str]| answer(path, words, "stop", Duration::ZERO);
    let upstream = Upstream::start_sequence(vec![
        refusal(&["I cannot", " help with that."]),
        refusal(&["I'm unable", " to do that."]),
        refusal(&["Third answer."]),
    ])
    .await;
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
    let (text, _) = read_stream(path, &seen.text());
    assert_eq!(
        text, "I'm unable to do that.",
        "the last answer is delivered"
    );
    assert_eq!(upstream.received.lock().unwrap().len(), 2, "no third try");
    let stats = &proxy.state.stats;
    assert_eq!(stats.retries.load(Ordering::Relaxed), 1);
    assert_eq!(stats.retries_succeeded.load(Ordering::Relaxed), 0);
    assert_eq!(stats.failures_detected.load(Ordering::Relaxed), 2);
    proxy.shutdown().await;
    let log = std::fs::read_to_string(dir.join("logs/corrections.log")).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("agent_failure"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Detected: \"I cannot help with that.\"")
                && l.contains("Corrected: \"I'm unable to do that.\"")
                && l.contains("action=retry")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains("action=delivered")),
        "{log}"
    );
}

const LOOP_STOP: &str = r#"
[[rule]]
id = "loops"
kind = "detect"
detector = "repetition"
action = "stop"
"#;

#[tokio::test]
async fn stop_cuts_a_loop_with_a_well_formed_ending_and_cancels_the_upstream() {
    for (path, _) in ENDPOINTS {
        let mut pieces = vec!["Sure."];
        pieces.extend(std::iter::repeat_n(
            " The code should not be modified.",
            200,
        ));
        let upstream =
            Upstream::start(answer(path, &pieces, "length", Duration::from_millis(2))).await;
        let proxy = TestProxy::with_rules(&upstream.url(), LOOP_STOP).await;
        let started = Instant::now();
        let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
        let (text, ending) = read_stream(path, &seen.text());
        assert!(
            text.matches("modified.").count() < 40,
            "{path}: cut early: {text}"
        );
        assert!(text.matches("modified.").count() >= 6, "{path}: {text}");
        assert_eq!(ending["rawrxd_stopped"], "loops", "{path}: {ending}");
        let reason = if is_sse(path) {
            &ending["choices"][0]["finish_reason"]
        } else {
            &ending["done_reason"]
        };
        assert_eq!(reason, "stop", "{path}");
        // The upstream saw the connection go before its 200 lines were out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            upstream.disconnects.lock().unwrap().len(),
            1,
            "{path}: upstream cancelled"
        );
        assert!(started.elapsed() < Duration::from_millis(400), "{path}");
    }
}

#[tokio::test]
async fn stop_on_a_whole_answer_cuts_its_text() {
    let looped = format!("Sure.{}", " The code should not be modified.".repeat(50));
    let body =
        json!({"model":"m","created_at":"t","response":looped,"done":true,"done_reason":"length"});
    let upstream = Upstream::start(Script::status(
        200,
        "application/json",
        body.to_string().as_bytes(),
    ))
    .await;
    let proxy = TestProxy::with_rules(&upstream.url(), LOOP_STOP).await;
    let seen = call(
        proxy.addr,
        "POST",
        "/api/generate",
        &request_body("/api/generate", false),
    )
    .await;
    let answer = seen.json();
    let text = answer["response"].as_str().unwrap();
    assert!(text.len() < looped.len() / 2, "{text}");
    assert!(looped.starts_with(text));
    assert_eq!(answer["done_reason"], "stop");
    assert_eq!(answer["rawrxd_stopped"], "loops");
}

#[tokio::test]
async fn empty_and_truncated_answers_are_retried_on_every_endpoint() {
    let rules = r#"
[[rule]]
id = "empty"
kind = "detect"
detector = "empty"
action = "retry"

[[rule]]
id = "truncated"
kind = "detect"
detector = "truncated"
action = "retry"
"#;
    for (path, _) in ENDPOINTS {
        for reason in ["stop", "length"] {
            let nothing = answer(path, &["", "  "], reason, Duration::ZERO);
            let clean = answer(path, &["Fine", "."], "stop", Duration::ZERO);
            let upstream = Upstream::start_sequence(vec![nothing, clean]).await;
            let proxy = TestProxy::with_rules(&upstream.url(), rules).await;
            let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
            let (text, _) = read_stream(path, &seen.text());
            assert_eq!(text, "Fine.", "{path} {reason}");
            assert_eq!(
                upstream.received.lock().unwrap().len(),
                2,
                "{path} {reason}"
            );
        }
    }
}

const TOOL_RULES: &str = r#"
[[rule]]
id = "unknown-tool"
kind = "detect"
detector = "tool_not_offered"
action = "retry"
correction = "Use only the tools you were given."

[[rule]]
id = "bad-args"
kind = "detect"
detector = "tool_args_invalid"
action = "retry"
"#;

fn tool_request() -> Vec<u8> {
    json!({"model":"m","stream":true,
        "messages":[{"role":"user","content":"Read src/main.rs"}],
        "tools":[{"type":"function","function":{"name":"read_file","parameters":{
            "type":"object","required":["path"],"properties":{"path":{"type":"string"}}}}}]})
    .to_string()
    .into_bytes()
}

/// A tool-call answer in Ollama's shape (one chunk, arguments as an object) or OpenAI's
/// (fragments of an argument string, then `finish_reason: "tool_calls"`).
fn tool_answer(path: &str, name: &str, arguments: &str) -> Script {
    if path == "/api/chat" {
        let arguments: Value =
            serde_json::from_str(arguments).unwrap_or(Value::String(arguments.into()));
        let call = json!({"model":"m","created_at":"t","message":{"role":"assistant","content":"",
            "tool_calls":[{"function":{"name":name,"arguments":arguments}}]},"done":false});
        Script::ndjson(&[call.to_string(), last(path, "stop")], Duration::ZERO)
    } else {
        let (head, tail) = arguments.split_at(arguments.len() / 2);
        let events = [
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,
                "delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function",
                "function":{"name":name,"arguments":head}}]},"finish_reason":null}]}).to_string(),
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,
                "delta":{"tool_calls":[{"index":0,"function":{"arguments":tail}}]},"finish_reason":null}]}).to_string(),
            last(path, "tool_calls"),
        ];
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        Script::sse(&refs, Duration::ZERO)
    }
}

fn called(path: &str, body: &str) -> Vec<(String, String)> {
    let mut calls = Vec::new();
    let mut arguments = String::new();
    let mut name = String::new();
    for unit in body.split('\n').filter(|u| !u.is_empty()) {
        let data = unit.strip_prefix("data: ").unwrap_or(unit);
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if path == "/api/chat" {
            for call in chunk["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                calls.push((
                    call["function"]["name"].as_str().unwrap().to_string(),
                    call["function"]["arguments"].to_string(),
                ));
            }
        } else {
            for call in chunk["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                name.push_str(call["function"]["name"].as_str().unwrap_or(""));
                arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    if !name.is_empty() {
        calls.push((name, arguments));
    }
    calls
}

#[tokio::test]
async fn bad_tool_calls_are_retried_in_both_shapes() {
    for path in ["/api/chat", "/v1/chat/completions"] {
        for (name, arguments, rule) in [
            ("write_file", r#"{"path":"a.rs"}"#, "unknown-tool"),
            ("read_file", r#"{"file":"a.rs"}"#, "bad-args"),
            ("read_file", r#"{"path": 12}"#, "bad-args"),
        ] {
            let good = tool_answer(path, "read_file", r#"{"path":"src/main.rs"}"#);
            let upstream =
                Upstream::start_sequence(vec![tool_answer(path, name, arguments), good]).await;
            let proxy = TestProxy::with_rules(&upstream.url(), TOOL_RULES).await;
            let seen = call(proxy.addr, "POST", path, &tool_request()).await;
            let calls = called(path, &seen.text());
            assert_eq!(calls.len(), 1, "{path} {rule}: {}", seen.text());
            assert_eq!(calls[0].0, "read_file", "{path} {rule}");
            assert!(
                calls[0].1.contains("src/main.rs"),
                "{path} {rule}: {calls:?}"
            );
            let received = upstream.received.lock().unwrap().clone();
            assert_eq!(received.len(), 2, "{path} {rule}");
            if rule == "unknown-tool" {
                assert!(String::from_utf8_lossy(&received[1].body).contains("Use only the tools"));
            }
            assert!(seen.text().contains(if path == "/api/chat" {
                "\"done\":true"
            } else {
                "[DONE]"
            }));
        }
    }
}

#[tokio::test]
async fn an_ordinary_answer_is_not_held_back() {
    let rules = format!("{REFUSAL_RETRY}{TOOL_RULES}{LOOP_STOP}");
    for (path, _) in ENDPOINTS {
        let pieces = ["Here", " is", " the", " answer", "."];
        let upstream =
            Upstream::start(answer(path, &pieces, "stop", Duration::from_millis(150))).await;
        let proxy = TestProxy::with_rules(&upstream.url(), &rules).await;
        let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
        let (text, _) = read_stream(path, &seen.text());
        assert_eq!(text, "Here is the answer.");
        // "Here" rules out every refusal phrase: the first word goes out before the second is
        // written (150 ms later).
        let first = seen
            .frames
            .iter()
            .find(|(_, bytes)| String::from_utf8_lossy(bytes).contains("Here"));
        let (at, _) = first.unwrap_or_else(|| panic!("{path}: no frame with the first word"));
        let second_written = seen.sent + Duration::from_millis(300);
        assert!(
            *at < second_written - Duration::from_millis(50),
            "{path}: the first word was held"
        );
        assert_eq!(upstream.received.lock().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn audit_and_shadow_rules_change_nothing_but_count() {
    let rules = r#"
[[rule]]
id = "seen-refusal"
kind = "detect"
detector = "refusal"
action = "audit"

[[rule]]
id = "shadow-retry"
kind = "detect"
detector = "refusal"
action = "retry"
mode = "shadow"

[[rule]]
id = "handed-back"
kind = "detect"
detector = "abandonment"
action = "audit"
"#;
    let path = "/api/generate";
    let upstream = Upstream::start(answer(
        path,
        &[
            "I can't",
            " help with all of it. fn a() {}",
            " I'll leave the rest to you.",
        ],
        "stop",
        Duration::ZERO,
    ))
    .await;
    let proxy = TestProxy::with_rules(&upstream.url(), rules).await;
    let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
    let (text, _) = read_stream(path, &seen.text());
    assert_eq!(
        text,
        "I can't help with all of it. fn a() {} I'll leave the rest to you."
    );
    assert_eq!(upstream.received.lock().unwrap().len(), 1);
    assert_eq!(
        proxy.state.stats.failures_detected.load(Ordering::Relaxed),
        3
    );
    assert_eq!(proxy.state.stats.retries.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_custom_pattern_stops_an_openai_stream() {
    let rules = r#"
[[rule]]
id = "no-lorem"
kind = "detect"
pattern = 'lorem\s+ipsum'
action = "stop"
"#;
    let path = "/v1/chat/completions";
    let upstream = Upstream::start(answer(
        path,
        &["A", " lorem", " ipsum", " dolor", " sit"],
        "stop",
        Duration::from_millis(5),
    ))
    .await;
    let proxy = TestProxy::with_rules(&upstream.url(), rules).await;
    let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
    let (text, ending) = read_stream(path, &seen.text());
    assert_eq!(text, "A lorem ipsum");
    assert_eq!(ending["rawrxd_stopped"], "no-lorem");
    assert_eq!(ending["id"], "c1");
}

#[tokio::test]
async fn a_retry_that_cannot_be_sent_delivers_the_first_answers_start_well_formed() {
    for (path, _) in ENDPOINTS {
        // The upstream answers the first request, and drops the connection of the second.
        let upstream = Upstream::start_sequence(vec![
            answer(
                path,
                &["I cannot", " help", " with that."],
                "stop",
                Duration::ZERO,
            ),
            Script::default().close(),
        ])
        .await;
        let proxy = TestProxy::with_rules(&upstream.url(), REFUSAL_RETRY).await;
        let seen = call(proxy.addr, "POST", path, &request_body(path, true)).await;
        let (text, ending) = read_stream(path, &seen.text());
        assert!(text.starts_with("I cannot"), "{path}: {text}");
        assert_eq!(ending["rawrxd_stopped"], "no-refusals", "{path}");
        assert_eq!(upstream.received.lock().unwrap().len(), 2, "{path}");
    }
}

/// Text of a streamed `/api/generate` answer straight from `rawrxd serve`.
async fn generated(addr: std::net::SocketAddr, body: &Value) -> String {
    let seen = call(addr, "POST", "/api/generate", body.to_string().as_bytes()).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    read_stream("/api/generate", &seen.text()).0
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_real_model_a_retry_answers_differently_and_a_real_loop_is_stopped() {
    let dir = tempdir("detect-real");
    let (_up, proxy, serve) = spawn_up_in(&dir, "");
    let model = "gemma3:270m";

    // The greedy first answer, straight from serve.
    let prompt = "Write a haiku about the sea.";
    let options = json!({"temperature": 0, "num_predict": 24});
    let request = json!({"model": model, "prompt": prompt, "stream": true, "options": options});
    let first = generated(serve, &request).await;
    assert!(first.trim().len() > 8, "{first:?}");
    // The answer the retry should give: the prompt with the correction, other options.
    let correction = "Answer in one short sentence.";
    let retried_request = json!({"model": model, "stream": true,
        "prompt": format!("{prompt}\n\n{correction}"),
        "options": {"temperature": 0.9, "seed": 42, "num_predict": 24}});
    let retried = generated(serve, &retried_request).await;
    assert_ne!(retried, first, "the retry's options give another answer");
    // A start-of-answer pattern that matches the first answer and not the retried one (the
    // base model echoes the prompt, so both may begin alike): the first answer up to one
    // character past where the two part.
    let (a, b) = (first.trim_start(), retried.trim_start());
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let start: String = a.chars().take((common + 1).max(12)).collect();
    assert!(!b.starts_with(&start), "{first:?} vs {retried:?}");
    let pattern = toml::Value::String(regex::escape(&start)).to_string();

    // A prompt the base model loops on when greedy.
    let loop_prompt = "List shell commands to clean a build directory.";
    let loop_request = json!({"model": model, "prompt": loop_prompt, "stream": true,
        "options": {"temperature": 0, "num_predict": 256}});
    let looped = generated(serve, &loop_request).await;

    let rules = format!(
        r#"
[[rule]]
id = "first-answer"
kind = "detect"
pattern = {pattern}
position = "start"
action = "retry"
correction = "{correction}"
retry_options = {{ temperature = 0.9, seed = 42 }}
endpoints = ["generate"]
models = ["gemma3:270m"]

[[rule]]
id = "loops"
kind = "detect"
detector = "repetition"
action = "stop"
"#
    );
    save(&dir.join("rules/request.toml"), &rules);
    // Wait for the rule manager to load the rules.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = call(proxy, "GET", "/rawrxd/rules", b"").await.text();
        if listed.contains("first-answer") && listed.contains("\"loops\"") {
            break;
        }
        assert!(Instant::now() < deadline, "rules never loaded: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Through the proxy: only the retried answer reaches the client.
    let through = call(
        proxy,
        "POST",
        "/api/generate",
        request.to_string().as_bytes(),
    )
    .await;
    let (text, _) = read_stream("/api/generate", &through.text());
    assert_eq!(text, retried, "the client sees the retried answer only");

    // The loop is stopped: a well-formed ending naming the rule, the text a prefix of serve's.
    let through = call(
        proxy,
        "POST",
        "/api/generate",
        loop_request.to_string().as_bytes(),
    )
    .await;
    let (text, ending) = read_stream("/api/generate", &through.text());
    assert_eq!(
        ending["rawrxd_stopped"], "loops",
        "serve's own answer: {looped:?}"
    );
    assert!(
        looped.starts_with(&text),
        "{text:?} is not a prefix of {looped:?}"
    );
    assert!(text.len() < looped.len(), "nothing was cut: {text:?}");

    // The official Python clients see the same, well-formed.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/test_detect.py");
    let proxy_url = format!("http://{proxy}");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args(["--proxy", &proxy_url, "--loop-prompt", loop_prompt])
            .args(["--retry-prompt", prompt, "--retried", &retried])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (scripts/test.sh puts its venv first on PATH)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && report.contains("detect clients: 5 passed, 0 failed"),
        "{report}"
    );
}

/// A whole (`"stream": false`) answer on `path` with `text` and, on the chat endpoints,
/// `calls` (Ollama: arguments as objects; OpenAI: as strings).
fn whole_answer(path: &str, text: &str, calls: &[(&str, &str)]) -> Value {
    match path {
        "/api/chat" => {
            let calls: Vec<Value> = calls
                .iter()
                .map(|(name, args)| {
                    json!({"function": {"name": name,
                        "arguments": serde_json::from_str::<Value>(args).unwrap_or(json!(args))}})
                })
                .collect();
            let mut message = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            json!({"model": "m", "created_at": "t", "message": message, "done": true,
                "done_reason": "stop"})
        }
        "/api/generate" => json!({"model": "m", "created_at": "t", "response": text,
            "done": true, "done_reason": "stop"}),
        "/v1/chat/completions" => {
            let calls: Vec<Value> = calls
                .iter()
                .map(|(name, args)| {
                    json!({"id": "call_1", "type": "function",
                        "function": {"name": name, "arguments": args}})
                })
                .collect();
            let mut message = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        }
        _ => json!({"id": "c1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}),
    }
}

fn whole_script(answer: &Value) -> Script {
    Script::status(200, "application/json", answer.to_string().as_bytes())
}

#[tokio::test]
async fn every_text_detector_on_every_endpoint_not_streamed() {
    let rules = r#"
[[rule]]
id = "refusal"
kind = "detect"
detector = "refusal"
action = "retry"

[[rule]]
id = "empty"
kind = "detect"
detector = "empty"
action = "retry"

[[rule]]
id = "handed-back"
kind = "detect"
detector = "abandonment"
action = "retry"

[[rule]]
id = "loops"
kind = "detect"
detector = "repetition"
action = "stop"

[[rule]]
id = "lorem"
kind = "detect"
pattern = 'lorem ipsum'
action = "retry"
"#;
    let looped = format!("Ok.{}", " The code should not be modified.".repeat(30));
    for (path, _) in ENDPOINTS {
        for (first, rule) in [
            ("I'm sorry, but I cannot help with that.", "refusal"),
            ("", "empty"),
            ("fn a() {}\nI'll leave the rest to you.", "handed-back"),
            ("Some lorem ipsum here.", "lorem"),
        ] {
            let clean = whole_answer(path, "All done.", &[]);
            let upstream = Upstream::start_sequence(vec![
                whole_script(&whole_answer(path, first, &[])),
                whole_script(&clean),
            ])
            .await;
            let proxy = TestProxy::with_rules(&upstream.url(), rules).await;
            let seen = call(proxy.addr, "POST", path, &request_body(path, false)).await;
            assert_eq!(seen.json(), clean, "{path} {rule}");
            assert_eq!(upstream.received.lock().unwrap().len(), 2, "{path} {rule}");
        }
        // A loop is cut, not retried.
        let upstream = Upstream::start(whole_script(&whole_answer(path, &looped, &[]))).await;
        let proxy = TestProxy::with_rules(&upstream.url(), rules).await;
        let seen = call(proxy.addr, "POST", path, &request_body(path, false)).await;
        let answer = seen.json();
        assert_eq!(answer["rawrxd_stopped"], "loops", "{path}: {answer}");
        let text = answer["response"]
            .as_str()
            .or(answer["message"]["content"].as_str())
            .or(answer["choices"][0]["message"]["content"].as_str())
            .or(answer["choices"][0]["text"].as_str())
            .unwrap();
        assert!(
            looped.starts_with(text) && text.len() < looped.len() / 2,
            "{path}: {text}"
        );
        assert_eq!(upstream.received.lock().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn bad_tool_calls_are_retried_not_streamed_in_both_shapes() {
    for path in ["/api/chat", "/v1/chat/completions"] {
        for (name, arguments) in [
            ("write_file", r#"{"path":"a.rs"}"#),
            ("read_file", r#"{"file":"a.rs"}"#),
        ] {
            let good = whole_answer(path, "", &[("read_file", r#"{"path":"src/main.rs"}"#)]);
            let upstream = Upstream::start_sequence(vec![
                whole_script(&whole_answer(path, "", &[(name, arguments)])),
                whole_script(&good),
            ])
            .await;
            let proxy = TestProxy::with_rules(&upstream.url(), TOOL_RULES).await;
            let mut request: Value = serde_json::from_slice(&tool_request()).unwrap();
            request["stream"] = json!(false);
            let seen = call(proxy.addr, "POST", path, request.to_string().as_bytes()).await;
            assert_eq!(seen.json(), good, "{path} {name}");
            assert_eq!(upstream.received.lock().unwrap().len(), 2, "{path} {name}");
        }
    }
}
