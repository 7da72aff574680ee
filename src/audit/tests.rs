use super::*;

fn event(kind: Kind, detected: &str, corrected: &str) -> AuditEvent {
    AuditEvent {
        at: UNIX_EPOCH + Duration::from_secs(1_737_383_565),
        rule_id: "fix-paths".into(),
        kind,
        shadow: false,
        confidence: 0.92,
        detected: detected.into(),
        corrected: corrected.into(),
        model: Arc::from("m"),
        endpoint: "chat",
        reasoning: None,
        flagged: false,
    }
}

#[test]
fn lines_follow_the_design_format() {
    let e = event(Kind::Path, "src/mian.rs", "src/main.rs");
    let ts = humantime::format_rfc3339_seconds(e.at).to_string();
    assert_eq!(ts, "2025-01-20T14:32:45Z");
    assert_eq!(
        correction_line(&e, &ts),
        "2025-01-20T14:32:45Z | Type: invalid_path | Rule: fix-paths | Confidence: 0.92 | \
         Detected: \"src/mian.rs\" | Corrected: \"src/main.rs\"\n"
    );
    let e = AuditEvent {
        confidence: 0.95,
        ..e
    };
    assert_eq!(
        navigation_line(&e, &ts, "edit_distance"),
        "2025-01-20T14:32:45Z | From: src/mian.rs | To: src/main.rs | Effectiveness: 0.95 | \
         Reasoning: edit_distance\n"
    );
}

#[test]
fn a_flagged_path_is_a_fabricated_path_line_with_its_reasoning() {
    let e = AuditEvent {
        flagged: true,
        confidence: 0.45,
        reasoning: Some("ambiguous (case): a/x.rs, b/x.rs".into()),
        ..event(Kind::Path, "x.rs", "x.rs")
    };
    assert_eq!(
        correction_line(&e, "T"),
        "T | Type: fabricated_path | Rule: fix-paths | Confidence: 0.45 | Detected: \"x.rs\" | \
         Corrected: \"x.rs\" | Reasoning: \"ambiguous (case): a/x.rs, b/x.rs\"\n"
    );
}

#[test]
fn a_line_stays_one_line_whatever_the_text() {
    let e = AuditEvent {
        shadow: true,
        ..event(Kind::Replace, "two\nlines | \"quoted\"", &"x".repeat(2000))
    };
    let line = correction_line(&e, "T");
    assert_eq!(line.matches('\n').count(), 1);
    assert!(line.ends_with(" | Mode: shadow\n"));
    assert!(
        line.contains(r#"Detected: "two\nlines | \"quoted\"""#),
        "{line}"
    );
    assert!(line.len() < 700, "long text is cut in the log");
    let nav = navigation_line(&event(Kind::Path, "a\nb", "c"), "T", "r");
    assert_eq!(nav.matches('\n').count(), 1);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rawrxd-audit-{}-{}-{name}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_torn_last_line_is_cut_at_open() {
    let dir = temp_dir("torn");
    let path = dir.join("x.log");
    std::fs::write(&path, "whole line\nhalf a li").unwrap();
    repair_torn_tail(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole line\n");
    std::fs::write(&path, "no newline at all").unwrap();
    repair_torn_tail(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
}

#[test]
fn rotation_compresses_and_keeps_at_most_keep_files() {
    let dir = temp_dir("rotate");
    let mut log = LogFile::open(&dir, "c.log", 100, 2).unwrap();
    for i in 0..10 {
        log.append(format!("{i:0>60}\n").as_bytes()).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["c.log", "c.log.1.gz", "c.log.2.gz"]);
    let mut text = String::new();
    flate2::read::GzDecoder::new(File::open(dir.join("c.log.1.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.len() == 60));
}

#[test]
fn the_writer_logs_and_stores_every_event_then_stops_on_close() {
    let dir = temp_dir("writer");
    let metrics = Arc::new(Metrics::new());
    let audit = Audit::start(
        AuditConfig {
            log_dir: dir.join("logs"),
            db_path: dir.join("rawrxd.db"),
            max_log_bytes: 1 << 20,
            keep: 3,
            retention: Retention::default(),
        },
        metrics,
    )
    .unwrap();
    for i in 0..500 {
        audit.record(event(Kind::Path, &format!("src/f{i}.rs"), "src/main.rs"));
    }
    audit.close();
    audit.record(event(Kind::Replace, "after close", "ignored"));
    let log = std::fs::read_to_string(dir.join("logs").join(CORRECTIONS_LOG)).unwrap();
    assert_eq!(log.lines().count(), 500);
    let nav = std::fs::read_to_string(dir.join("logs").join(NAVIGATION_LOG)).unwrap();
    assert_eq!(nav.lines().count(), 500);
    assert_eq!(audit.written.load(Ordering::Relaxed), 500);
    let store = Store::open(&dir.join("rawrxd.db")).unwrap();
    let found = store
        .search_corrections(&crate::store::CorrectionQuery {
            text: Some("f499".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[test]
fn the_writer_prunes_by_age_and_rows_when_it_starts_and_the_index_follows() {
    let dir = temp_dir("prune");
    let db = dir.join("rawrxd.db");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day_ms = 86_400_000;
    let row = |detected: String, ts_ms: i64| Correction {
        ts: "T".into(),
        ts_ms,
        kind_label: "token_replacement".into(),
        rule_id: "r".into(),
        kind: "replace".into(),
        mode: "enforce".into(),
        model: "m".into(),
        endpoint: "chat".into(),
        confidence: 1.0,
        detected,
        corrected: "x".into(),
    };
    {
        let mut store = Store::open(&db).unwrap();
        // 3,000 rows 40 days old (more than one prune step), then 2,500 of today.
        let old: Vec<_> = (0..3_000)
            .map(|i| row(format!("stale{i} memo"), now_ms - 40 * day_ms))
            .collect();
        let fresh: Vec<_> = (0..2_500)
            .map(|i| row(format!("fresh{i} memo"), now_ms - 1_000 + i))
            .collect();
        store.insert_corrections(&old).unwrap();
        store.insert_corrections(&fresh).unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    let audit = Audit::start(
        AuditConfig {
            log_dir: dir.join("logs"),
            db_path: db.clone(),
            max_log_bytes: 1 << 20,
            keep: 3,
            retention: Retention {
                max_age: Some(Duration::from_secs(30 * 86_400)),
                max_rows: Some(2_000),
            },
        },
        metrics.clone(),
    )
    .unwrap();
    let store = Store::open(&db).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.count_corrections().unwrap() > 2_000 {
        assert!(Instant::now() < deadline, "the writer never pruned");
        std::thread::sleep(Duration::from_millis(20));
    }
    // New events are still written while and after pruning.
    audit.record(event(Kind::Replace, "newest memo", "x"));
    audit.close();
    let search = |words: &str| {
        store
            .search_corrections(&crate::store::CorrectionQuery {
                text: Some(words.into()),
                limit: 10_000,
                ..Default::default()
            })
            .unwrap()
    };
    assert!(search("stale0").is_empty(), "a pruned row is still found");
    assert!(search("stale2999").is_empty());
    assert!(search("fresh499").is_empty(), "past the row limit");
    assert_eq!(search("fresh500").len(), 1, "the newest 2,000 stay");
    assert_eq!(search("fresh2499").len(), 1);
    assert_eq!(search("newest").len(), 1);
    assert_eq!(store.count_corrections().unwrap(), 2_001);
    store.check_corrections_index().unwrap();
    assert_eq!(metrics.audit_pruned.get(), 3_500);
    assert!(metrics
        .render()
        .contains("rawrxd_audit_rows_pruned_total 3500"));
}
