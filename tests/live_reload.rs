//! Live reload, the rule store and the admin API, through the whole proxy as `rawrxd proxy`
//! runs it (`App`: SQLite store, file watcher, audit writer) in front of a scripted upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn alpha_stream(n: usize, delay: Duration) -> Script {
    word_stream("alpha", n, delay)
}

fn replace_rule(id: &str, find: &str, replace: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\nkind = \"replace\"\nfind = \"{find}\"\nreplace = \"{replace}\"\n"
    )
}

const GENERATE: &[u8] = br#"{"model":"m","prompt":"hi"}"#;

/// The text of an NDJSON generate stream, and whether it ended with a done line.
fn stream_text(seen: &Seen) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for line in seen.text().lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        assert!(value.get("error").is_none(), "in-band error: {line}");
        text.push_str(value["response"].as_str().unwrap_or(""));
        done |= value["done"] == true;
    }
    (text, done)
}

async fn get_json(proxy: &TestProxy, path: &str) -> Value {
    let seen = call(proxy.addr, "GET", path, b"").await;
    assert_eq!(seen.status, 200, "{path}: {}", seen.text());
    seen.json()
}

/// Polls `check` every 20 ms until it holds; panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn editing_a_rule_file_under_50_streams_fails_nothing_and_is_live_within_a_second() {
    let upstream = Upstream::start(alpha_stream(20, Duration::from_millis(60))).await;
    let dir = tempdir("reload50");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let file = dir.join("rules/words.toml");
    std::fs::write(&file, replace_rule("alpha", "alpha", "ONE")).unwrap();
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    let addr = proxy.addr;

    let running: Vec<_> = (0..50)
        .map(|_| tokio::spawn(async move { call(addr, "POST", "/api/generate", GENERATE).await }))
        .collect();
    // Every stream has started (and loaded its rules) before the edit.
    eventually(Duration::from_secs(5), "50 streams in flight", || async {
        upstream.received.lock().unwrap().len() >= 50
    })
    .await;
    let saved = Instant::now();
    save(&file, &replace_rule("alpha", "alpha", "TWO"));
    // New requests, one every 25 ms, until one carries the new rules.
    let mut probes = Vec::new();
    while saved.elapsed() < Duration::from_millis(1500) {
        let sent = saved.elapsed();
        probes.push((
            sent,
            tokio::spawn(async move { call(addr, "POST", "/api/generate", GENERATE).await }),
        ));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for stream in running {
        let seen = stream.await.unwrap();
        assert_eq!(seen.status, 200);
        assert!(seen.error.is_none());
        let (text, done) = stream_text(&seen);
        assert!(done, "stream did not finish: {text}");
        assert_eq!(text, "ONE ".repeat(20), "a running stream changed rules");
    }
    let mut first_new = None;
    for (sent, probe) in probes {
        let seen = probe.await.unwrap();
        assert_eq!(seen.status, 200);
        let (text, done) = stream_text(&seen);
        assert!(done);
        match text.as_str() {
            t if t == "ONE ".repeat(20) => {
                assert!(
                    first_new.is_none(),
                    "old rules after new ones (at {sent:?})"
                )
            }
            t if t == "TWO ".repeat(20) => {
                first_new.get_or_insert(sent);
            }
            other => panic!("mixed rules in one stream: {other}"),
        }
    }
    let first_new = first_new.expect("the edit never went live");
    assert!(
        first_new < Duration::from_secs(1),
        "first request with the new rules was sent {first_new:?} after the save"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_keeps_the_last_good_rules_and_shows_in_health_until_fixed() {
    let upstream = Upstream::start(alpha_stream(3, Duration::ZERO)).await;
    let dir = tempdir("invalid");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let file = dir.join("rules/words.toml");
    std::fs::write(&file, replace_rule("alpha", "alpha", "ONE")).unwrap();
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;

    save(
        &file,
        "[[rule]]\nid = \"broken\"\nkind = \"regex\"\npattern = \"(unclosed\"\nreplace = \"x\"\n",
    );
    eventually(
        Duration::from_secs(2),
        "health reports the bad file",
        || async { get_json(&proxy, "/rawrxd/health").await["rules"]["status"] == "error" },
    )
    .await;
    let health = get_json(&proxy, "/rawrxd/health").await;
    assert_eq!(health["status"], "degraded");
    let error = &health["rules"]["errors"][0];
    assert_eq!(error["rule_id"], "broken");
    assert_eq!(error["field"], "pattern");
    assert!(error["file"].as_str().unwrap().ends_with("words.toml"));
    assert_eq!(error["line"], 4);
    // The last good rules are still applied.
    let (text, _) = stream_text(&call(proxy.addr, "POST", "/api/generate", GENERATE).await);
    assert_eq!(text, "ONE ONE ONE ");
    let metrics = call(proxy.addr, "GET", "/rawrxd/metrics", b"").await.text();
    assert!(metrics.contains("rawrxd_rules_valid 0"), "{metrics}");
    assert!(metrics.contains("rawrxd_rule_reloads_total{result=\"error\"}"));

    save(&file, &replace_rule("alpha", "alpha", "FIXED"));
    eventually(
        Duration::from_secs(2),
        "the fixed file goes live",
        || async {
            let (text, _) = stream_text(&call(proxy.addr, "POST", "/api/generate", GENERATE).await);
            text == "FIXED FIXED FIXED "
        },
    )
    .await;
    let health = get_json(&proxy, "/rawrxd/health").await;
    assert_eq!(health["rules"]["status"], "ok");
    assert_eq!(health["rules"]["errors"], json!([]));
    assert!(health["rules"]["reload_failures"].as_u64().unwrap() >= 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn removing_and_adding_files_is_picked_up_and_the_store_holds_what_is_live() {
    let upstream = Upstream::start(alpha_stream(2, Duration::ZERO)).await;
    let dir = tempdir("files");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/a.toml"),
        replace_rule("alpha", "alpha", "A"),
    )
    .unwrap();
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    std::fs::remove_file(dir.join("rules/a.toml")).unwrap();
    std::fs::write(dir.join("rules/b.toml"), replace_rule("beta", "alpha", "B")).unwrap();
    eventually(Duration::from_secs(2), "b replaces a", || async {
        let (text, _) = stream_text(&call(proxy.addr, "POST", "/api/generate", GENERATE).await);
        text == "B B "
    })
    .await;
    proxy.shutdown().await;
    let store = rawrxd::store::Store::open(&dir.join("rawrxd.db")).unwrap();
    let ids: Vec<_> = store
        .load_rules()
        .unwrap()
        .into_iter()
        .map(|r| (r.spec.id.unwrap(), r.source))
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].0, "beta");
    assert!(ids[0].1.ends_with("b.toml"));
}

#[tokio::test]
async fn a_rule_written_to_the_database_by_another_program_goes_live() {
    let upstream = Upstream::start(alpha_stream(2, Duration::ZERO)).await;
    let dir = tempdir("external");
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    // Audit writes and other non-rule changes do not rebuild; a rule insert does.
    let reloads = get_json(&proxy, "/rawrxd/stats").await["rules"]["reloads"].clone();
    let mut other = rawrxd::store::Store::open(&dir.join("rawrxd.db")).unwrap();
    other
        .put_api_rule(&rawrxd::rules::RuleSpec {
            id: Some("ide-rule".into()),
            kind: Some("replace".into()),
            find: Some("alpha".into()),
            replace: Some("IDE".into()),
            ..Default::default()
        })
        .unwrap();
    let took = eventually(Duration::from_secs(2), "external rule live", || async {
        let (text, _) = stream_text(&call(proxy.addr, "POST", "/api/generate", GENERATE).await);
        text == "IDE IDE "
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let stats = get_json(&proxy, "/rawrxd/stats").await;
    assert_eq!(
        stats["rules"]["reloads"].as_u64(),
        reloads.as_u64().map(|r| r + 1)
    );
    let rule = get_json(&proxy, "/rawrxd/rules/ide-rule").await;
    assert_eq!(rule["source"], "api");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_checks_its_token_and_validates_bodies() {
    let upstream = Upstream::start(alpha_stream(2, Duration::ZERO)).await;
    let dir = tempdir("admin");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/file.toml"),
        replace_rule("from-file", "nothing-matches-this", "x"),
    )
    .unwrap();
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |raw| {
        raw.admin_token = Some("s3cret".into());
    })
    .await;
    let addr = proxy.addr;
    let auth = [
        ("authorization", "Bearer s3cret"),
        ("content-type", "application/json"),
    ];
    let rule = json!({"id": "api-alpha", "kind": "replace", "find": "alpha", "replace": "API"});
    let body = rule.to_string();

    // Token: missing or wrong → 401; reads need none.
    let seen = call(addr, "POST", "/rawrxd/rules", body.as_bytes()).await;
    assert_eq!(seen.status, 401);
    assert!(seen.json()["error"].as_str().unwrap().contains("token"));
    let wrong = [("authorization", "Bearer nope")];
    assert_eq!(
        call_with(addr, "POST", "/rawrxd/rules", body.as_bytes(), &wrong)
            .await
            .status,
        401
    );
    assert_eq!(call(addr, "POST", "/rawrxd/reload", b"").await.status, 401);
    assert_eq!(
        call(addr, "PUT", "/rawrxd/patching", br#"{"enabled":false}"#)
            .await
            .status,
        401
    );
    assert_eq!(call(addr, "GET", "/rawrxd/rules", b"").await.status, 200);

    // Bodies: each refusal says why.
    let cases: &[(&[u8], u16, &str)] = &[
        (b"", 400, "JSON body is required"),
        (b"{not json", 400, "invalid JSON"),
        (
            br#"{"id":"x","kind":"replace","find":"a","replace":"b","colour":1}"#,
            400,
            "colour",
        ),
        (br#"{"id":"x","find":"a"}"#, 400, "kind"),
        (
            br#"{"id":"x","kind":"regex","pattern":"(","replace":""}"#,
            400,
            "pattern",
        ),
        (
            br#"{"id":"from-file","kind":"replace","find":"a","replace":"b"}"#,
            409,
            "file.toml",
        ),
    ];
    for (body, status, says) in cases {
        let seen = call_with(addr, "POST", "/rawrxd/rules", body, &auth).await;
        assert_eq!(seen.status, *status, "{}", String::from_utf8_lossy(body));
        let error = seen.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{error:?} should mention {says:?}");
    }
    let huge = vec![b' '; 2 << 20];
    assert_eq!(
        call_with(addr, "POST", "/rawrxd/rules", &huge, &auth)
            .await
            .status,
        413
    );

    // A valid rule is created once, applies at once, and is audited.
    let seen = call_with(addr, "POST", "/rawrxd/rules", body.as_bytes(), &auth).await;
    assert_eq!(seen.status, 201, "{}", seen.text());
    assert_eq!(seen.json()["source"], "api");
    let again = call_with(addr, "POST", "/rawrxd/rules", body.as_bytes(), &auth).await;
    assert_eq!(again.status, 409);
    let seen = call(addr, "POST", "/api/generate", GENERATE).await;
    assert_eq!(stream_text(&seen).0, "API API ");
    let overhead: f64 = seen
        .header("x-rawrxd-overhead-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..1000.0).contains(&overhead));

    // PUT: id mismatch → 400; file rules → 409; replace an API rule → 200.
    let mismatch = call_with(addr, "PUT", "/rawrxd/rules/other", body.as_bytes(), &auth).await;
    assert_eq!(mismatch.status, 400);
    let file_rule = json!({"kind": "replace", "find": "a", "replace": "b"}).to_string();
    let seen = call_with(
        addr,
        "PUT",
        "/rawrxd/rules/from-file",
        file_rule.as_bytes(),
        &auth,
    )
    .await;
    assert_eq!(seen.status, 409);
    let replaced = json!({"kind": "replace", "find": "alpha", "replace": "PUT"}).to_string();
    let seen = call_with(
        addr,
        "PUT",
        "/rawrxd/rules/api-alpha",
        replaced.as_bytes(),
        &auth,
    )
    .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(
        stream_text(&call(addr, "POST", "/api/generate", GENERATE).await).0,
        "PUT PUT "
    );

    // Disable / enable, and the global switch.
    let seen = call_with(addr, "POST", "/rawrxd/rules/api-alpha/disable", b"", &auth).await;
    assert_eq!(seen.json()["enabled"], false);
    assert_eq!(
        stream_text(&call(addr, "POST", "/api/generate", GENERATE).await).0,
        "alpha alpha "
    );
    call_with(addr, "POST", "/rawrxd/rules/api-alpha/enable", b"", &auth).await;
    let off = call_with(
        addr,
        "PUT",
        "/rawrxd/patching",
        br#"{"enabled":false}"#,
        &auth,
    )
    .await;
    assert_eq!(off.status, 200);
    assert_eq!(
        stream_text(&call(addr, "POST", "/api/generate", GENERATE).await).0,
        "alpha alpha "
    );
    assert_eq!(
        get_json(&proxy, "/rawrxd/stats").await["hotPatchingEnabled"],
        false
    );
    let bad = call_with(
        addr,
        "PUT",
        "/rawrxd/patching",
        br#"{"enabled":"no"}"#,
        &auth,
    )
    .await;
    assert_eq!(bad.status, 400);
    call_with(
        addr,
        "PUT",
        "/rawrxd/patching",
        br#"{"enabled":true}"#,
        &auth,
    )
    .await;
    assert_eq!(
        stream_text(&call(addr, "POST", "/api/generate", GENERATE).await).0,
        "PUT PUT "
    );

    // Deletes: unknown → 404, file rule → 409, API rule → 200.
    let del = |id: &'static str| async move {
        call_with(addr, "DELETE", &format!("/rawrxd/rules/{id}"), b"", &auth)
            .await
            .status
    };
    assert_eq!(del("missing").await, 404);
    assert_eq!(del("from-file").await, 409);
    assert_eq!(del("api-alpha").await, 200);
    assert_eq!(
        call(addr, "GET", "/rawrxd/rules/api-alpha", b"")
            .await
            .status,
        404
    );
    assert_eq!(call(addr, "PATCH", "/rawrxd/rules", b"").await.status, 401);
    let wrong_method = call_with(addr, "PATCH", "/rawrxd/rules", b"", &auth).await;
    assert_eq!(wrong_method.status, 405);

    // Stats, metrics and the audit trail saw the corrections.
    let stats = get_json(&proxy, "/rawrxd/stats").await;
    for key in [
        "hallucinationsDetected",
        "hallucinationsCorrected",
        "navigationErrorsFixed",
        "behaviorPatchesApplied",
        "proxyServerRunning",
        "requests",
        "bytes",
        "ruleHits",
        "rules",
        "uptimeSecs",
    ] {
        assert!(stats.get(key).is_some(), "stats lack {key}: {stats}");
    }
    assert_eq!(stats["hallucinationsCorrected"], 6);
    assert_eq!(stats["ruleHits"]["api-alpha"]["applied"], 6);
    let metrics = call(addr, "GET", "/rawrxd/metrics", b"").await.text();
    assert!(
        metrics.contains("rawrxd_rule_hits_total{rule=\"api-alpha\",mode=\"enforce\"} 6"),
        "{metrics}"
    );
    assert!(metrics.contains("rawrxd_requests_total{endpoint=\"generate\",status=\"200\"}"));
    assert!(metrics.contains("rawrxd_overhead_seconds_bucket{"));
    eventually(Duration::from_secs(2), "corrections searchable", || async {
        let found = get_json(
            &proxy,
            "/rawrxd/corrections?q=alpha&rule=api-alpha&limit=50",
        )
        .await;
        found["corrections"].as_array().unwrap().len() == 6
    })
    .await;
    let found = get_json(&proxy, "/rawrxd/corrections?q=PUT&since=1h").await;
    assert_eq!(found["corrections"].as_array().unwrap().len(), 4);
    assert_eq!(found["corrections"][0]["type"], "token_replacement");
    let bad = call(addr, "GET", "/rawrxd/corrections?limit=0", b"").await;
    assert_eq!(bad.status, 400);
    proxy.shutdown().await;
    let log = std::fs::read_to_string(dir.join("logs/corrections.log")).unwrap();
    assert_eq!(log.lines().count(), 6, "{log}");
    assert!(log.lines().all(|l| l.contains(
        "| Type: token_replacement | Rule: api-alpha | Confidence: 1.00 | Detected: \"alpha\" |"
    )));
}

#[tokio::test]
async fn a_rule_directory_created_after_start_is_picked_up() {
    let upstream = Upstream::start(alpha_stream(2, Duration::ZERO)).await;
    let dir = tempdir("latedir");
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    assert!(proxy.state.live.load().pipeline.table().rules.is_empty());
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    save(
        &dir.join("rules/late.toml"),
        &replace_rule("late", "alpha", "LATE"),
    );
    eventually(
        Duration::from_secs(3),
        "rules from a new directory",
        || async {
            let (text, _) = stream_text(&call(proxy.addr, "POST", "/api/generate", GENERATE).await);
            text == "LATE LATE "
        },
    )
    .await;
    // Once the directory is watched, edits are fast again.
    save(
        &dir.join("rules/late.toml"),
        &replace_rule("late", "alpha", "AGAIN"),
    );
    let took = eventually(
        Duration::from_secs(2),
        "edit in the new directory",
        || async {
            let (text, _) = stream_text(&call(proxy.addr, "POST", "/api/generate", GENERATE).await);
            text == "AGAIN AGAIN "
        },
    )
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    proxy.shutdown().await;
}

/// Retention shows in `/rawrxd/stats`: rows over `audit_max_rows` are pruned when the audit
/// writer starts, and counted as `audit.pruned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_report_the_rows_retention_pruned() {
    let upstream = Upstream::start(alpha_stream(2, Duration::ZERO)).await;
    let dir = tempdir("pruned");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    save(
        &dir.join("rules/a.toml"),
        &replace_rule("alpha", "alpha", "beta"),
    );
    let mut proxy = TestProxy::app(&upstream.url(), &dir, |_| {}).await;
    for _ in 0..3 {
        call(proxy.addr, "POST", "/api/generate", GENERATE).await;
    }
    // Two corrections per request.
    eventually(
        Duration::from_secs(5),
        "six corrections written",
        || async { get_json(&proxy, "/rawrxd/stats").await["audit"]["written"] == 6 },
    )
    .await;
    assert_eq!(
        get_json(&proxy, "/rawrxd/stats").await["audit"]["pruned"],
        0
    );
    proxy.shutdown().await;

    let mut proxy = TestProxy::app(&upstream.url(), &dir, |raw| {
        raw.audit_max_rows = 2;
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "four rows pruned at start",
        || async { get_json(&proxy, "/rawrxd/stats").await["audit"]["pruned"] == 4 },
    )
    .await;
    proxy.shutdown().await;
}
