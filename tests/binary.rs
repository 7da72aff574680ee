//! The real `rawrxd` binary: started as a user would, address read from its log line,
//! stopped with SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::process::{Child, Command};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rawrxd");

fn spawn_proxy(args: &[&str]) -> Spawned {
    let mut all = vec!["proxy", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    spawn_binary(&all, &tempdir())
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rawrxd-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs `rawrxd ARGS` in `dir`, expects it to fail, and returns what it said on stderr.
fn fails_with(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RAWRXD_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "rawrxd {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn binary_streams_logs_each_request_and_drains_on_sigterm() {
    let lines: Vec<String> = (0..4).map(token_line).collect();
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::from_millis(150))).await;
    let mut proxy = spawn_proxy(&["--upstream", &upstream.url()]);
    let addr = proxy.addr;

    let direct = call(upstream.addr, "POST", "/api/generate", b"{}").await;
    let stream = tokio::spawn(async move { call(addr, "POST", "/api/generate", b"{}").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&proxy.child);
    let seen = stream.await.unwrap();
    assert_eq!(seen.error, None);
    assert_eq!(
        seen.body(),
        direct.body(),
        "in-flight stream cut by SIGTERM"
    );

    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.child.wait().unwrap();
        let logs: Vec<String> = proxy.logs.try_iter().collect();
        (status, logs)
    });
    let (status, logs) = status.await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    let access = logs
        .iter()
        .find(|l| l.contains("rawrxd::access"))
        .unwrap_or_else(|| panic!("no access log line in {logs:#?}"));
    for field in [
        "method=POST",
        "path=/api/generate",
        "status=200",
        "upstream_ms=",
        "overhead_ms=",
    ] {
        assert!(access.contains(field), "{field} missing from {access}");
    }
}

#[tokio::test]
async fn binary_health_answers() {
    let upstream = Upstream::start(Script::status(200, "text/plain", b"Ollama is running")).await;
    let proxy = spawn_proxy(&["--upstream", &upstream.url()]);
    let seen = call(proxy.addr, "GET", "/rawrxd/health", b"").await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json()["upstream"]["reachable"], true);
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("proxy"), "{text}");
    let out = Command::new(BIN)
        .args(["proxy", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--upstream",
        "--rules",
        "--db",
        "--log-dir",
        "--config",
    ] {
        assert!(text.contains(flag), "{flag} missing:\n{text}");
    }
}

#[test]
fn unknown_config_key_is_named_and_fatal() {
    let dir = tempdir();
    std::fs::write(
        dir.join("rawrxd.toml"),
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstrem = \"x\"\n",
    )
    .unwrap();
    let text = fails_with(&["proxy"], &dir);
    assert!(text.contains("upstrem"), "{text}");
}

#[test]
fn invalid_values_are_all_reported_at_once() {
    let text = fails_with(
        &[
            "proxy",
            "--listen",
            "0.0.0.0:1",
            "--upstream",
            "ftp://x",
            "--max-body",
            "big",
        ],
        &tempdir(),
    );
    for key in [
        "proxy.listen",
        "proxy.upstream",
        "proxy.max_body",
        "admin_token",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
}

#[test]
fn address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let text = fails_with(&["proxy", "--listen", &addr], &tempdir());
    assert!(text.contains(&format!("cannot listen on {addr}")), "{text}");
}

#[tokio::test]
async fn binary_applies_rule_files_across_chunk_boundaries() {
    let rules = tempdir();
    std::fs::write(
        rules.join("secrets.toml"),
        "[[rule]]\nid = \"no-confidential\"\nkind = \"replace\"\nfind = \"confidential\"\nreplace = \"[redacted]\"\n",
    )
    .unwrap();
    let line = |t: &str, done: bool| {
        format!(
            r#"{{"model":"m","response":{},"done":{done}}}"#,
            serde_json::to_string(t).unwrap()
        )
    };
    let lines = [line("confid", false), line("ential", false), line("", true)];
    let upstream = Upstream::start(Script::ndjson(&lines, Duration::from_millis(100))).await;
    let proxy = spawn_proxy(&[
        "--upstream",
        &upstream.url(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let seen = call(proxy.addr, "POST", "/api/generate", br#"{"model":"m"}"#).await;
    assert_eq!(seen.status, 200);
    let mut so_far = String::new();
    for (_, frame) in &seen.frames {
        so_far.push_str(&String::from_utf8_lossy(frame));
        assert!(!so_far.contains("confid"), "leaked: {so_far}");
    }
    assert!(so_far.contains(r#""response":"[redacted]""#), "{so_far}");
}

#[test]
fn invalid_rule_files_stop_the_start_with_every_error() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/bad.toml"),
        "[[rule]]\nid = \"a\"\nkind = \"regex\"\npattern = \"(\"\nreplace = \"x\"\n\n[[rule]]\nid = \"b\"\nkind = \"nonsense\"\n",
    )
    .unwrap();
    let text = fails_with(&["proxy", "--listen", "127.0.0.1:0"], &dir);
    assert!(text.contains("bad.toml"), "{text}");
    assert!(text.contains("\"a\""), "{text}");
    assert!(text.contains("nonsense"), "{text}");
}
