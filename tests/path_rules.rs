//! `kind = "path"` rules end to end: through the whole proxy (rule files, audit logs, stats,
//! health, the workspace header) against a scripted upstream, an agent-style round trip, and
//! one real generation through `rawrxd up` whose misspelled path gets fixed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::Full;
use serde_json::{json, Value};
use support::{call, save, send, spawn_up, tempdir, Script, TestProxy, Upstream};

/// A workspace with a few real-looking files (with content, for the round trip).
fn workspace(dir: &Path) -> String {
    let root = dir.join("shop");
    for (file, text) in [
        ("src/main.rs", "fn main() {}\n"),
        ("src/utils.rs", "pub fn helper() {}\n"),
        ("src/commands/search.rs", "// search\n"),
        ("README.md", "# shop\n"),
    ] {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    root.canonicalize().unwrap().to_str().unwrap().to_string()
}

fn path_rule(id: &str, root: &str, extra: &str) -> String {
    format!("[[rule]]\nid = \"{id}\"\nkind = \"path\"\nroots = [{root:?}]\n{extra}")
}

/// Waits until `file` holds `needle` (the audit writer is asynchronous).
async fn log_with(file: &Path, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} never held {needle:?}:\n{text}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn chat_lines(pieces: &[&str], tool_call: Option<Value>) -> Vec<String> {
    let mut lines: Vec<String> = pieces
        .iter()
        .map(|p| {
            json!({"model": "m", "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": p}, "done": false})
            .to_string()
        })
        .collect();
    if let Some(call) = tool_call {
        lines.push(
            json!({"model": "m", "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": "", "tool_calls": [call]}, "done": false})
            .to_string(),
        );
    }
    lines.push(
        json!({"model": "m", "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop"})
        .to_string(),
    );
    lines
}

/// The text and tool calls of an NDJSON `/api/chat` response.
fn chat_result(body: &str) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for line in body.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        text.push_str(v["message"]["content"].as_str().unwrap_or(""));
        if let Some(c) = v["message"]["tool_calls"].as_array() {
            calls.extend(c.iter().cloned());
        }
    }
    (text, calls)
}

fn chat_request(
    addr: std::net::SocketAddr,
    workspace: Option<&str>,
) -> http::Request<Full<bytes::Bytes>> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/api/chat"))
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(ws) = workspace {
        builder = builder.header("x-rawrxd-workspace", ws);
    }
    builder
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"where is main?"}]}"#,
        )))
        .unwrap()
}

#[tokio::test]
async fn text_and_tool_calls_are_fixed_flagged_audited_and_counted() {
    let dir = tempdir("path-e2e");
    let root = workspace(&dir);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    save(
        &dir.join("rules/paths.toml"),
        &path_rule("fix-paths", &root, ""),
    );
    // The path is cut across chunks; a fabricated one is only flagged.
    let script = Script::ndjson(
        &chat_lines(
            &[
                "Open `src/mi",
                "an.rs` first, then `src/qu",
                "antum_flux.rs`.",
            ],
            Some(json!({"function": {"name": "read_file", "arguments": {"path": "src/utlis.rs"}}})),
        ),
        Duration::from_millis(5),
    );
    let upstream = Upstream::start(script).await;
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;

    let seen = send(proxy.addr, chat_request(proxy.addr, Some(&root))).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let (text, calls) = chat_result(&seen.text());
    assert_eq!(
        text,
        "Open `src/main.rs` first, then `src/quantum_flux.rs`."
    );
    assert_eq!(calls[0]["function"]["arguments"]["path"], "src/utils.rs");
    // rawrxd's own header never reaches the upstream.
    assert_eq!(upstream.last().header("x-rawrxd-workspace"), None);

    let log = log_with(&dir.join("logs/corrections.log"), "fabricated_path").await;
    let log = if log.contains("src/utils.rs") {
        log
    } else {
        log_with(&dir.join("logs/corrections.log"), "src/utils.rs").await
    };
    assert!(
        log.contains("Type: invalid_path | Rule: fix-paths | Confidence: 0.90 | Detected: \"src/mian.rs\" | Corrected: \"src/main.rs\""),
        "{log}"
    );
    assert!(
        log.contains("Type: fabricated_path | Rule: fix-paths"),
        "{log}"
    );
    assert!(
        log.contains("Detected: \"src/utlis.rs\" | Corrected: \"src/utils.rs\""),
        "{log}"
    );
    let nav = log_with(&dir.join("logs/navigation_fixes.log"), "src/utils.rs").await;
    assert!(
        nav.contains("From: src/mian.rs | To: src/main.rs | Effectiveness: 0.90 | Reasoning: typo"),
        "{nav}"
    );
    assert!(
        !nav.contains("quantum"),
        "a flag is not a navigation fix: {nav}"
    );

    let stats = call(proxy.addr, "GET", "/rawrxd/stats", b"").await.json();
    assert_eq!(stats["navigationErrorsFixed"], 2, "{stats}");
    assert_eq!(stats["ruleHits"]["fix-paths"]["hits"], 3, "{stats}");
    let health = call(proxy.addr, "GET", "/rawrxd/health", b"").await.json();
    let index = &health["rules"]["path_indexes"][0];
    assert_eq!(index["rule"], "fix-paths", "{health}");
    assert_eq!(index["files"], 4, "{health}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn shadow_rules_report_without_changing_and_a_foreign_workspace_is_ignored() {
    let dir = tempdir("path-shadow");
    let root = workspace(&dir);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    save(
        &dir.join("rules/paths.toml"),
        &path_rule("fix-paths", &root, "mode = \"shadow\"\n"),
    );
    let upstream = Upstream::start(Script::ndjson(
        &chat_lines(&["See src/mian.rs now."], None),
        Duration::ZERO,
    ))
    .await;
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    // /etc is not under the rule's root: ignored, every root is searched (and still found).
    let seen = send(proxy.addr, chat_request(proxy.addr, Some("/etc"))).await;
    let (text, _) = chat_result(&seen.text());
    assert_eq!(text, "See src/mian.rs now.");
    assert_eq!(upstream.last().header("x-rawrxd-workspace"), None);
    let log = log_with(&dir.join("logs/corrections.log"), "Mode: shadow").await;
    assert!(
        log.contains("Detected: \"src/mian.rs\" | Corrected: \"src/main.rs\" | Mode: shadow"),
        "{log}"
    );
    let stats = call(proxy.addr, "GET", "/rawrxd/stats", b"").await.json();
    assert_eq!(stats["navigationErrorsFixed"], 0, "{stats}");
    assert_eq!(stats["ruleHits"]["fix-paths"]["shadowed"], 1, "{stats}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_missing_root_is_a_reported_rule_error_and_the_last_good_rules_stay() {
    let dir = tempdir("path-badroot");
    let root = workspace(&dir);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let file = dir.join("rules/paths.toml");
    save(&file, &path_rule("fix-paths", &root, ""));
    let upstream = Upstream::start(Script::ndjson(
        &chat_lines(&["See src/mian.rs now."], None),
        Duration::ZERO,
    ))
    .await;
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    save(
        &file,
        &path_rule("fix-paths", "/no/such/rawrxd/workspace", ""),
    );
    let started = Instant::now();
    let health = loop {
        let health = call(proxy.addr, "GET", "/rawrxd/health", b"").await.json();
        if health["rules"]["status"] == "error" {
            break health;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        health["rules"]["errors"]
            .to_string()
            .contains("/no/such/rawrxd/workspace"),
        "{health}"
    );
    let seen = send(proxy.addr, chat_request(proxy.addr, None)).await;
    assert_eq!(chat_result(&seen.text()).0, "See src/main.rs now.");
    proxy.shutdown().await;
}

/// An OpenAI chat completion (not streamed) whose answer is a `read_file` call of `path`.
fn read_file_completion(path: &str) -> String {
    let arguments = json!({ "path": path }).to_string();
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "read_file", "arguments": arguments}}]}}]
    })
    .to_string()
}

/// The official `ollama` and `openai` Python clients (streamed and not) get tool calls whose
/// misspelled path the proxy fixed (tests/clients/test_path_tools.py does the talking).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_clients_get_fixed_tool_calls() {
    let dir = tempdir("path-clients");
    let root = workspace(&dir);
    let rules = path_rule("fix-paths", &root, "");
    let ollama_upstream = Upstream::start(Script::ndjson(
        &chat_lines(
            &[],
            Some(json!({"function": {"name": "read_file", "arguments": {"path": "src/utlis.rs"}}})),
        ),
        Duration::from_millis(2),
    ))
    .await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "read_file", "arguments": ""}}]}),
        Value::Null,
    )];
    for piece in ["{\"pa", "th\": \"src/ut", "lis.rs\"}"] {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    let sse_upstream = Upstream::start(Script::sse(&events, Duration::from_millis(2))).await;
    let whole_upstream = Upstream::start(Script::status(
        200,
        "application/json",
        read_file_completion("src/utlis.rs").as_bytes(),
    ))
    .await;
    let mut proxies = Vec::new();
    for upstream in [&ollama_upstream, &sse_upstream, &whole_upstream] {
        proxies.push(TestProxy::with_rules(&upstream.url(), &rules).await);
    }
    let urls: Vec<String> = proxies
        .iter()
        .map(|p| format!("http://{}", p.addr))
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/test_path_tools.py"
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args([
                "--ollama",
                &urls[0],
                "--openai-stream",
                &urls[1],
                "--openai",
                &urls[2],
            ])
            .args(["--root", &root])
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
        output.status.success() && report.contains("path clients: 3 passed, 0 failed"),
        "{report}"
    );
    for mut proxy in proxies {
        proxy.shutdown().await;
    }
}

/// An agent asks for a file, the model names it wrong in a `read_file` call (OpenAI, not
/// streamed), and the agent opens what the fixed call names: the file exists.
#[tokio::test]
async fn agent_round_trip_the_fixed_read_file_argument_names_a_real_file() {
    let dir = tempdir("path-agent");
    let root = workspace(&dir);
    let completion = read_file_completion("Src/Commands/serach.rs");
    let upstream = Upstream::start(Script::status(
        200,
        "application/json",
        completion.as_bytes(),
    ))
    .await;
    let mut proxy =
        TestProxy::with_rules(&upstream.url(), &path_rule("fix-paths", &root, "")).await;
    let body = br#"{"model":"m","messages":[{"role":"user","content":"show me the search command"}],"tools":[]}"#;
    let seen = call(proxy.addr, "POST", "/v1/chat/completions", body).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let reply = seen.json();
    let arguments: Value = serde_json::from_str(
        reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let path = arguments["path"].as_str().unwrap();
    assert_eq!(path, "src/commands/search.rs");
    // What the agent does next: read the file the call names.
    let content = std::fs::read_to_string(Path::new(&root).join(path)).unwrap();
    assert_eq!(content, "// search\n");
    proxy.shutdown().await;
}

/// One real generation: greedy Gemma repeats a misspelled path from its prompt, and the
/// proxy in front of `rawrxd serve` fixes it as it streams.
#[tokio::test]
async fn a_real_generation_through_rawrxd_up_gets_its_path_fixed() {
    let dir = tempdir("path-real-ws");
    let root = workspace(&dir);
    let (_up, proxy, serve) = spawn_up("path-real", &path_rule("fix-paths", &root, ""));
    let body = json!({"model": "gemma3:270m", "prompt": "cat src/mian.rs\ncat src/mian.rs\ncat src/mian.rs\ncat",
        "options": {"temperature": 0, "num_predict": 12}})
    .to_string();
    let direct = call(serve, "POST", "/api/generate", body.as_bytes()).await;
    let fixed = call(proxy, "POST", "/api/generate", body.as_bytes()).await;
    let text = |seen: &support::Seen| {
        seen.text()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["response"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect::<String>()
    };
    let (direct, fixed) = (text(&direct), text(&fixed));
    assert!(
        direct.contains("src/mian.rs"),
        "the model no longer repeats the path: {direct:?}"
    );
    assert_eq!(fixed, direct.replace("src/mian.rs", "src/main.rs"));
}
