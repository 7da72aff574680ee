//! The rule store and the audit trail through the real `rawrxd` binary: SIGKILL while audit
//! lines are being written, 100 reloads under load with the process's memory watched, and the
//! `rawrxd audit` commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

/// What rawrxd's state-changing endpoints require of a body.
const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rawrxd");
const GENERATE: &[u8] = br#"{"model":"m","prompt":"hi"}"#;

/// `rawrxd proxy` with everything under `dir` (rules/, rawrxd.db, logs/).
fn spawn_in(dir: &Path, upstream: &str) -> Spawned {
    let path = |p: &str| dir.join(p).to_str().unwrap().to_string();
    let (rules, db, logs) = (path("rules"), path("rawrxd.db"), path("logs"));
    spawn_binary(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--rules",
            &rules,
            "--db",
            &db,
            "--log-dir",
            &logs,
        ],
        dir,
    )
}

fn alpha_stream(n: usize, delay: Duration) -> Script {
    word_stream("alpha", n, delay)
}

fn rule_file(dir: &Path, replace: &str) {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    save(
        &dir.join("rules/words.toml"),
        &format!(
            "[[rule]]\nid = \"alpha\"\nkind = \"replace\"\nfind = \"alpha\"\nreplace = \"{replace}\"\n"
        ),
    );
}

/// A generate call that succeeded: 200, no transport error, no in-band error, a done line.
fn complete(seen: &Seen) -> bool {
    seen.status == 200
        && seen.error.is_none()
        && seen.text().lines().all(|l| !l.contains("\"error\""))
        && seen
            .text()
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"done\":true"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The audit line format of DESIGN.md.
fn audit_line() -> regex::Regex {
    regex::Regex::new(
        r#"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \| Type: [a-z_]+ \| Rule: \S+ \| Confidence: \d\.\d\d \| Detected: "(?:[^"\\]|\\.)*" \| Corrected: "(?:[^"\\]|\\.)*"(?: \| Mode: shadow)?$"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_auditing_leaves_whole_lines_and_a_sound_database() {
    let upstream = Upstream::start(alpha_stream(100, Duration::ZERO)).await;
    let dir = tempdir("sigkill");
    rule_file(&dir, "A");
    let mut proxy = spawn_in(&dir, &upstream.url());
    let addr = proxy.addr;
    // A rule committed through the API must survive the kill.
    let api_rule = br#"{"id":"api-rule","kind":"replace","find":"zzz","replace":"y"}"#;
    assert_eq!(
        call_with(addr, "POST", "/rawrxd/rules", api_rule, &JSON)
            .await
            .status,
        201
    );

    // Every request makes 100 corrections; keep 4 clients busy, kill mid-flight.
    let stop = Instant::now() + Duration::from_millis(1500);
    let load: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let stream = tokio::net::TcpStream::connect(addr).await;
                    if stream.is_err() {
                        break;
                    }
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        call(addr, "POST", "/api/generate", GENERATE),
                    )
                    .await;
                }
            })
        })
        .collect();
    let log = dir.join("logs/corrections.log");
    let started = Instant::now();
    while std::fs::metadata(&log).map_or(0, |m| m.len()) < 50_000 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no audit lines written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.child.kill().unwrap(); // SIGKILL
    proxy.child.wait().unwrap();
    for task in load {
        let _ = task.await;
    }

    // Every line ends in a newline and has the audit format; a write cut by the kill can
    // only leave an unterminated remainder at the very end.
    let text = std::fs::read_to_string(&log).unwrap();
    let format = audit_line();
    let (whole, rest) = match text.rfind('\n') {
        Some(i) => (&text[..=i], &text[i + 1..]),
        None => ("", text.as_str()),
    };
    let lines: Vec<&str> = whole.lines().collect();
    assert!(lines.len() > 100, "only {} lines", lines.len());
    for line in &lines {
        assert!(format.is_match(line), "torn or malformed line: {line:?}");
    }

    // The database opens cleanly and holds every committed rule.
    let store = rawrxd::store::Store::open(&dir.join("rawrxd.db")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let ids: Vec<String> = store
        .load_rules()
        .unwrap()
        .into_iter()
        .filter_map(|r| r.spec.id)
        .collect();
    assert_eq!(ids, vec!["alpha", "api-rule"]);
    drop(store);

    // A restart opens the same files, cuts any torn tail, and keeps appending whole lines.
    let proxy = spawn_in(&dir, &upstream.url());
    let seen = call(proxy.addr, "GET", "/rawrxd/rules/api-rule", b"").await;
    assert_eq!(seen.status, 200);
    let seen = call(proxy.addr, "POST", "/api/generate", GENERATE).await;
    assert!(complete(&seen));
    drop(proxy);
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(after.ends_with('\n'));
    assert!(
        after.lines().all(|l| format.is_match(l)),
        "rest was {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_reloads_under_load_fail_no_request_and_keep_memory_flat() {
    let upstream = Upstream::start(alpha_stream(5, Duration::from_millis(2))).await;
    let dir = tempdir("reloads");
    rule_file(&dir, "v0");
    let proxy = spawn_in(&dir, &upstream.url());
    let addr = proxy.addr;
    let pid = proxy.child.id();

    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Requests finished so far: each measured reload waits for one more, so the reloads and
    // the requests interleave however fast either side runs.
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let running = running.clone();
            let finished = finished.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    let seen = call(addr, "POST", "/api/generate", GENERATE).await;
                    finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if complete(&seen) {
                        ok += 1;
                    } else {
                        failed.push(format!("{} {:?} {}", seen.status, seen.error, seen.text()));
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    let reload = |i: usize| {
        let dir = dir.clone();
        async move {
            rule_file(&dir, &format!("v{i}"));
            let seen = call_with(addr, "POST", "/rawrxd/reload", b"", &JSON).await;
            assert_eq!(seen.status, 200, "reload {i}: {}", seen.text());
        }
    };
    // Warm up (allocator pools, metric label sets), then measure across 100 reloads.
    for i in 1..=20 {
        reload(i).await;
    }
    let before = rss_kib(pid);
    for i in 21..=120 {
        let seen = finished.load(std::sync::atomic::Ordering::Relaxed);
        let waited = std::time::Instant::now();
        while finished.load(std::sync::atomic::Ordering::Relaxed) == seen {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "no request finished for 10 s before reload {i}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        reload(i).await;
    }
    let after = rss_kib(pid);
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:#?}");
        total += ok;
    }
    assert!(total >= 100, "only {total} requests ran during the reloads");
    let stats = call(addr, "GET", "/rawrxd/stats", b"").await.json();
    assert!(
        stats["rules"]["reloads"].as_u64().unwrap() >= 121,
        "{stats}"
    );
    assert_eq!(stats["rules"]["reloadFailures"], 0);
    // The latest rules are live.
    let seen = call(addr, "POST", "/api/generate", GENERATE).await;
    assert!(seen.text().contains("v120 "), "{}", seen.text());
    let growth = after.saturating_sub(before);
    eprintln!("RSS before {before} KiB, after 100 reloads {after} KiB, growth {growth} KiB");
    assert!(growth < 4096, "RSS grew {growth} KiB over 100 reloads");
}

#[tokio::test]
async fn audit_commands_read_the_log_and_search_the_table() {
    let upstream = Upstream::start(alpha_stream(3, Duration::ZERO)).await;
    let dir = tempdir("auditcli");
    rule_file(&dir, "A");
    let proxy = spawn_in(&dir, &upstream.url());
    for _ in 0..2 {
        assert!(complete(
            &call(proxy.addr, "POST", "/api/generate", GENERATE).await
        ));
    }
    // The writer is asynchronous: wait for the 6 lines.
    let log = dir.join("logs/corrections.log");
    let started = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 6 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(&dir)
            .env_remove("RAWRXD_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&["audit", "tail", "-n", "2"]);
    assert!(out.status.success());
    let tail = String::from_utf8(out.stdout).unwrap();
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| audit_line().is_match(l)), "{tail}");

    let out = run(&[
        "audit", "search", "alpha", "--rule", "alpha", "--since", "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = String::from_utf8(out.stdout).unwrap();
    assert_eq!(found.lines().count(), 6, "{found}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 correction(s) found"));
    let out = run(&["audit", "search", "--json", "--limit", "1"]);
    let row: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["rule_id"], "alpha");
    assert_eq!(row["corrected"], "A");
    let out = run(&["audit", "search", "nothing-like-this"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = run(&["audit", "search", "x", "--db", "/nonexistent/rawrxd.db"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database"));

    // tail -f prints lines appended after it started.
    let mut follower = Command::new(BIN)
        .args(["audit", "tail", "-n", "0", "-f"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(complete(
        &call(proxy.addr, "POST", "/api/generate", GENERATE).await
    ));
    for _ in 0..3 {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("tail -f saw nothing");
        assert!(audit_line().is_match(&line), "{line}");
    }
    follower.kill().unwrap();
    let _ = follower.wait();
}

#[tokio::test]
async fn sigterm_flushes_every_queued_audit_line_before_exit() {
    let upstream = Upstream::start(alpha_stream(200, Duration::ZERO)).await;
    let dir = tempdir("sigterm-audit");
    rule_file(&dir, "A");
    let mut proxy = spawn_in(&dir, &upstream.url());
    for _ in 0..10 {
        assert!(complete(
            &call(proxy.addr, "POST", "/api/generate", GENERATE).await
        ));
    }
    let status = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(proxy.child.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.join("logs/corrections.log")).unwrap();
    assert_eq!(log.lines().count(), 2000);
    let store = rawrxd::store::Store::open(&dir.join("rawrxd.db")).unwrap();
    let rows = store
        .search_corrections(&rawrxd::store::CorrectionQuery {
            limit: 5000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 2000);
}
