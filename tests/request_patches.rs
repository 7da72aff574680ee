//! Request-side behavior patches through the proxy: what the upstream receives for each kind
//! on each endpoint (a scripted upstream that records every request), idempotence over a
//! multi-turn conversation, aliases, bodies that cannot be patched, shadow mode, the patching
//! switch, live reload and the audit trail; then against the real backend (`rawrxd up` on
//! Gemma 3 270M).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{call, save, spawn_up, Received, Script, TestProxy, Upstream};

async fn upstream() -> Upstream {
    Upstream::start(Script::status(200, "application/json", b"{\"done\":true}")).await
}

/// What the upstream received last, as JSON, after checking that its `Content-Length` is the
/// body's length.
fn received_json(received: &Received) -> Value {
    let length: usize = received.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, received.body.len(), "Content-Length fixed");
    serde_json::from_slice(&received.body).unwrap()
}

const RULES: &str = r#"
[[rule]]
id = "house"
kind = "system_prompt"
text = "Answer in English."

[[rule]]
id = "cap-temp"
kind = "param"
name = "temperature"
op = "max"
value = 0.4

[[rule]]
id = "fences"
kind = "stop"
sequences = ["\n```\n\n"]
"#;

#[tokio::test]
async fn each_kind_reaches_the_upstream_on_each_endpoint() {
    let upstream = upstream().await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let cases = [
        (
            "/api/generate",
            json!({"model": "m", "prompt": "hi", "options": {"temperature": 0.9}}),
            json!({"model": "m", "prompt": "hi", "options": {"temperature": 0.4, "stop": ["\n```\n\n"]},
                   "system": "Answer in English."}),
        ),
        (
            "/api/chat",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "m", "messages": [{"role": "system", "content": "Answer in English."},
                   {"role": "user", "content": "hi"}],
                   "options": {"temperature": 0.4, "stop": ["\n```\n\n"]}}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "system", "content": "Be terse."},
                   {"role": "user", "content": "hi"}], "temperature": 2, "stop": "END"}),
            json!({"model": "m", "messages": [{"role": "system", "content": "Answer in English.\n\nBe terse."},
                   {"role": "user", "content": "hi"}], "temperature": 0.4, "stop": ["END", "\n```\n\n"]}),
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "fn main", "temperature": 0.1}),
            json!({"model": "m", "prompt": "Answer in English.\n\nfn main", "temperature": 0.1,
                   "stop": ["\n```\n\n"]}),
        ),
    ];
    for (path, sent, expected) in cases {
        let seen = call(proxy.addr, "POST", path, sent.to_string().as_bytes()).await;
        assert_eq!(seen.status, 200, "{path}");
        let got = received_json(&upstream.last());
        assert_eq!(got, expected, "{path}");
        // Key order is kept: the client's keys first, in its order.
        let text = String::from_utf8(upstream.last().body).unwrap();
        assert!(text.starts_with(r#"{"model":"m","#), "{path}: {text}");
    }
    // Per rule: the system prompt and the stop on all four endpoints, the temperature cap on
    // three (the completions request is under it).
    assert_eq!(applied(&proxy), [4, 3, 4]);
}

/// Per rule of the live table (in file order): how many times it changed a request.
fn applied(proxy: &TestProxy) -> Vec<u64> {
    let live = proxy.state.live.load();
    live.pipeline
        .table()
        .counters
        .iter()
        .map(|c| c.applied.load(std::sync::atomic::Ordering::Relaxed))
        .collect()
}

#[tokio::test]
async fn a_resent_conversation_gets_the_system_prompt_once() {
    let upstream = upstream().await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    let mut messages = vec![json!({"role": "user", "content": "first"})];
    for turn in 0..3 {
        let body = json!({"model": "m", "messages": messages});
        call(proxy.addr, "POST", "/api/chat", body.to_string().as_bytes()).await;
        let got = received_json(&upstream.last());
        let sent: Vec<Value> = got["messages"].as_array().unwrap().clone();
        let systems = sent.iter().filter(|m| m["role"] == "system").count();
        assert_eq!(systems, 1, "turn {turn}: {got}");
        // The agent keeps the history it sent (with the system message) and adds a turn.
        messages = sent;
        messages.push(json!({"role": "assistant", "content": "ok"}));
        messages.push(json!({"role": "user", "content": format!("turn {turn}")}));
    }
}

#[tokio::test]
async fn aliases_rename_the_model_and_scoped_rules_follow_the_new_name() {
    let upstream = upstream().await;
    let rules = r#"
[[rule]]
id = "gpt-alias"
kind = "alias"
from = "gpt-*"
to = "qwen2.5-coder:7b"

[[rule]]
id = "qwen-ctx"
kind = "param"
name = "num_ctx"
op = "default"
value = 16384
models = ["qwen*"]
"#;
    let proxy = TestProxy::with_rules(&upstream.url(), rules).await;
    call(
        proxy.addr,
        "POST",
        "/api/chat",
        br#"{"model":"gpt-4o","messages":[]}"#,
    )
    .await;
    assert_eq!(
        received_json(&upstream.last()),
        json!({"model": "qwen2.5-coder:7b", "messages": [], "options": {"num_ctx": 16384}})
    );
    // On every patched endpoint.
    for path in ["/api/generate", "/v1/chat/completions", "/v1/completions"] {
        call(
            proxy.addr,
            "POST",
            path,
            br#"{"model":"gpt-4o","prompt":"x"}"#,
        )
        .await;
        let got = received_json(&upstream.last());
        assert_eq!(got["model"], "qwen2.5-coder:7b", "{path}");
        // num_ctx has no OpenAI spelling: skipped there.
        let ctx = match path {
            "/api/generate" => json!(16384),
            _ => Value::Null,
        };
        assert_eq!(got["options"]["num_ctx"], ctx, "{path}");
    }
    // Another model: nothing applies, the bytes go on as sent (no re-serialization).
    let sent = br#"{ "model" : "llama3", "messages" : [] }"#;
    call(proxy.addr, "POST", "/api/chat", sent).await;
    assert_eq!(upstream.last().body, sent);
    // Listings are the upstream's own.
    call(proxy.addr, "GET", "/api/tags", b"").await;
    assert_eq!(upstream.last().request_line(), "GET /api/tags HTTP/1.1");
}

#[tokio::test]
async fn bodies_that_cannot_be_patched_go_on_untouched_and_are_counted() {
    let upstream = upstream().await;
    let proxy = TestProxy::with_rules(&upstream.url(), RULES).await;
    for body in [
        &b"not json"[..],
        b"[1,2,3]",
        br#"{"model":"m","options":"hot"}"#,
        br#"{"model":"m","messages":"hi"}"#,
    ] {
        let path = if body.starts_with(br#"{"model":"m","messages"#) {
            "/api/chat"
        } else {
            "/api/generate"
        };
        let seen = call(proxy.addr, "POST", path, body).await;
        assert_eq!(seen.status, 200);
        assert_eq!(upstream.last().body, body);
    }
    let stats = call(proxy.addr, "GET", "/rawrxd/stats", b"").await.json();
    assert_eq!(stats["behaviorPatchesSkipped"], 4, "{stats}");
    assert_eq!(stats["behaviorPatchesApplied"], 0, "{stats}");
    let metrics = call(proxy.addr, "GET", "/rawrxd/metrics", b"").await.text();
    assert!(
        metrics.contains("rawrxd_request_patches_skipped_total 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn shadow_rules_and_the_switch_leave_the_request_as_sent() {
    let upstream = upstream().await;
    let shadow = RULES.replace("value = 0.4\n", "value = 0.4\nmode = \"shadow\"\n");
    let proxy = TestProxy::with_rules(&upstream.url(), &shadow).await;
    let sent = br#"{"model":"m","prompt":"x","options":{"temperature":0.9,"stop":["\n```\n\n"]},"system":"Answer in English."}"#;
    call(proxy.addr, "POST", "/api/generate", sent).await;
    assert_eq!(upstream.last().body, sent, "shadow: original bytes");
    let live = proxy.state.live.load();
    let cap = &live.pipeline.table().counters[1];
    assert_eq!(cap.shadowed.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(applied(&proxy), [0, 0, 0]);

    proxy.state.set_patching(false);
    let sent = br#"{"model":"m","prompt":"x"}"#;
    call(proxy.addr, "POST", "/api/generate", sent).await;
    assert_eq!(upstream.last().body, sent, "switch off: untouched");
}

#[tokio::test]
async fn a_param_rule_edited_live_applies_to_the_next_request_and_is_audited() {
    let upstream = upstream().await;
    let dir = support::tempdir("request-live");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let rule = |value: f64| {
        format!("[[rule]]\nid = \"cap-temp\"\nkind = \"param\"\nname = \"temperature\"\nop = \"max\"\nvalue = {value}\n")
    };
    save(&rules.join("params.toml"), &rule(0.5));
    let proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    let body = br#"{"model":"m","prompt":"x","options":{"temperature":0.9}}"#;
    call(proxy.addr, "POST", "/api/generate", body).await;
    assert_eq!(
        received_json(&upstream.last())["options"]["temperature"],
        0.5
    );

    save(&rules.join("params.toml"), &rule(0.2));
    let started = Instant::now();
    loop {
        call(proxy.addr, "POST", "/api/generate", body).await;
        if received_json(&upstream.last())["options"]["temperature"] == 0.2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the edit never went live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Audited: one behavior_patch line per applied rule, with the value before and after.
    let log = dir.join("logs/corrections.log");
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("0.2") || started.elapsed() > Duration::from_secs(5) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.contains(
            "Type: behavior_patch | Rule: cap-temp | Confidence: 1.00 | Detected: \"options.temperature=0.9\" | Corrected: \"options.temperature=0.5\""
        ),
        "{text}"
    );
    assert!(
        text.contains("Corrected: \"options.temperature=0.2\""),
        "{text}"
    );
    let stats = call(proxy.addr, "GET", "/rawrxd/stats", b"").await.json();
    assert!(
        stats["behaviorPatchesApplied"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    assert!(
        stats["ruleHits"]["cap-temp"]["applied"].as_u64().unwrap() >= 2,
        "{stats}"
    );
}

#[test]
fn rules_test_shows_the_patched_request_and_the_rules_that_fired() {
    let dir = support::tempdir("request-cli");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    save(&dir.join("rules/request.toml"), RULES);
    save(
        &dir.join("chat.json"),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"temperature":1}}"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rawrxd"))
        .args([
            "rules",
            "test",
            "--request",
            "chat.json",
            "--rules",
            "rules",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(
            r#"{"model":"m","messages":[{"role":"system","content":"Answer in English."},{"role":"user","content":"hi"}],"options":{"temperature":0.4,"stop":["\n```\n\n"]}}"#
        ),
        "{stdout}"
    );
    assert!(stdout.contains("3 patch(es)"), "{stdout}");
    assert!(
        stdout.contains("cap-temp (param): options.temperature=1 -> options.temperature=0.4"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------
// Against the real backend: `rawrxd up` on Gemma 3 270M.

#[tokio::test]
async fn against_the_real_model_each_kind_changes_the_answer() {
    let rules = r#"
[[rule]]
id = "short"
kind = "param"
name = "num_predict"
op = "max"
value = 5
models = ["gemma3:270m"]
endpoints = ["generate"]

[[rule]]
id = "alias"
kind = "alias"
from = "gpt-4o"
to = "gemma3:270m"

[[rule]]
id = "stop-at-comma"
kind = "stop"
sequences = [","]
endpoints = ["openai_completions"]

[[rule]]
id = "house"
kind = "system_prompt"
text = "You are a careful assistant who answers questions about the Rust programming language."
endpoints = ["chat"]
"#;
    let (_up, proxy, serve) = spawn_up("request-real", rules);

    // The alias makes `gpt-4o` answer; num_predict is capped at 5 (the client asked for 50).
    let seen = call(
        proxy,
        "POST",
        "/api/generate",
        json!({"model": "gpt-4o", "prompt": "The capital of France is", "stream": false,
               "options": {"num_predict": 50, "temperature": 0}})
        .to_string()
        .as_bytes(),
    )
    .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let answer = seen.json();
    assert!(answer["eval_count"].as_u64().unwrap() <= 5, "{answer}");
    assert_eq!(answer["done"], true, "{answer}");

    // The added stop sequence ends the answer where serve alone would go on.
    let completion = json!({"model": "gemma3:270m", "temperature": 0, "max_tokens": 40,
        "prompt": "Fruits I like: apple, banana, cherry, grape, kiwi, mango, lemon"});
    let direct = call(
        serve,
        "POST",
        "/v1/completions",
        completion.to_string().as_bytes(),
    )
    .await;
    let direct = direct.json()["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let comma = direct
        .find(',')
        .unwrap_or_else(|| panic!("serve's own answer has no comma to stop at: {direct:?}"));
    let patched = call(
        proxy,
        "POST",
        "/v1/completions",
        completion.to_string().as_bytes(),
    )
    .await;
    let patched = patched.json();
    assert_eq!(
        patched["choices"][0]["text"].as_str().unwrap(),
        &direct[..comma],
        "{patched}"
    );
    assert_eq!(patched["choices"][0]["finish_reason"], "stop", "{patched}");

    // The system prompt reaches the model: it costs prompt tokens.
    let chat = json!({"model": "gemma3:270m", "stream": false,
        "options": {"temperature": 0, "num_predict": 1},
        "messages": [{"role": "user", "content": "What is a borrow checker?"}]});
    let direct = call(serve, "POST", "/api/chat", chat.to_string().as_bytes())
        .await
        .json();
    let patched = call(proxy, "POST", "/api/chat", chat.to_string().as_bytes())
        .await
        .json();
    let (with, without) = (
        patched["prompt_eval_count"].as_u64().unwrap(),
        direct["prompt_eval_count"].as_u64().unwrap(),
    );
    assert!(
        with >= without + 10,
        "system prompt tokens: {with} through the proxy vs {without} direct"
    );
}
