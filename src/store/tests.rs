use super::*;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rawrxd-store-{}-{}-{name}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    dir.join("rawrxd.db")
}

fn spec(id: &str, kind: &str) -> RuleSpec {
    RuleSpec {
        id: Some(id.into()),
        kind: Some(kind.into()),
        find: Some("a".into()),
        replace: Some("b".into()),
        ..RuleSpec::default()
    }
}

#[test]
fn every_migration_file_is_compiled_in_and_numbered_in_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    files.sort();
    let known: Vec<&str> = MIGRATIONS.iter().map(|m| m.1).collect();
    assert_eq!(files, known);
    for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
        assert_eq!(*version, i as i64 + 1);
        assert!(name.starts_with(&format!("{version:04}_")), "{name}");
    }
}

#[test]
fn opening_twice_migrates_once_and_a_newer_database_is_refused() {
    let path = temp_db("newer");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), known_version());
    drop(store);
    let store = Store::open(&path).unwrap();
    let journal: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    store
        .conn
        .execute(
            "INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 'later')",
            [],
        )
        .unwrap();
    drop(store);
    let err = Store::open(&path).err().unwrap().to_string();
    assert!(err.contains("newer rawrxd"), "{err}");
    assert!(err.contains("999"), "{err}");
}

#[test]
fn file_sync_rewrites_only_changed_files_and_deletes_removed_ones() {
    let mut store = Store::open(&temp_db("sync")).unwrap();
    let a = FileRules {
        path: "rules/a.toml".into(),
        specs: vec![spec("a1", "replace"), spec("a2", "replace")],
    };
    let b = FileRules {
        path: "rules/b.toml".into(),
        specs: vec![RuleSpec {
            id: Some("b1".into()),
            kind: Some("stop".into()),
            sequences: Some(vec!["END".into()]),
            ..RuleSpec::default()
        }],
    };
    let report = store.sync_files(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(report.written, vec!["rules/a.toml", "rules/b.toml"]);
    let version = store.rules_version().unwrap();
    // Same rules again: nothing written, version unchanged.
    let report = store.sync_files(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(report, SyncReport::default());
    assert_eq!(store.rules_version().unwrap(), version);
    // Request-side kinds live in behavior_patches.
    let in_patches: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM behavior_patches", [], |r| r.get(0))
        .unwrap();
    assert_eq!(in_patches, 1);
    // b removed, a changed.
    let a2 = FileRules {
        specs: vec![spec("a1", "replace")],
        ..a
    };
    let report = store.sync_files(&[a2]).unwrap();
    assert_eq!(report.written, vec!["rules/a.toml"]);
    assert_eq!(report.removed, vec!["rules/b.toml"]);
    let ids: Vec<_> = store
        .load_rules()
        .unwrap()
        .into_iter()
        .map(|r| r.spec.id.unwrap())
        .collect();
    assert_eq!(ids, vec!["a1"]);
    assert!(store.rules_version().unwrap() > version);
}

#[test]
fn api_rules_come_after_file_rules_and_switches_outlive_file_edits() {
    let mut store = Store::open(&temp_db("api")).unwrap();
    store.put_api_rule(&spec("z-api", "replace")).unwrap();
    let file = FileRules {
        path: "rules/a.toml".into(),
        specs: vec![spec("a1", "replace")],
    };
    store.sync_files(std::slice::from_ref(&file)).unwrap();
    store.set_enabled("a1", false).unwrap();
    let rules = store.load_rules().unwrap();
    assert_eq!(rules[0].spec.id.as_deref(), Some("a1"));
    assert_eq!(rules[0].enabled_override, Some(false));
    assert_eq!(rules[1].source, API_SOURCE);
    // The file changes; the switch stays.
    let edited = FileRules {
        specs: vec![RuleSpec {
            replace: Some("c".into()),
            ..spec("a1", "replace")
        }],
        ..file
    };
    store.sync_files(&[edited]).unwrap();
    assert_eq!(store.load_rules().unwrap()[0].enabled_override, Some(false));
    assert_eq!(store.rule_source("a1").unwrap().unwrap(), "rules/a.toml");
    assert!(store.delete_rule("z-api").unwrap());
    assert!(!store.delete_rule("z-api").unwrap());
    assert_eq!(store.rule_source("z-api").unwrap(), None);
}

#[test]
fn corrections_are_searchable_by_words_rule_and_time() {
    let mut store = Store::open(&temp_db("fts")).unwrap();
    let row = |rule: &str, detected: &str, ts_ms: i64| Correction {
        ts: "2025-01-20T14:32:45Z".into(),
        ts_ms,
        kind_label: "token_replacement".into(),
        rule_id: rule.into(),
        kind: "replace".into(),
        mode: "enforce".into(),
        model: "gemma3:270m".into(),
        endpoint: "chat".into(),
        confidence: 1.0,
        detected: detected.into(),
        corrected: "fixed".into(),
    };
    store
        .insert_corrections(&[
            row("paths", "src/mian.rs", 1000),
            row("words", "confidential memo", 2000),
            row("words", "quote \" inside", 3000),
        ])
        .unwrap();
    let search = |text: Option<&str>, rule: Option<&str>, since_ms: Option<i64>| {
        store
            .search_corrections(&CorrectionQuery {
                text: text.map(Into::into),
                rule: rule.map(Into::into),
                since_ms,
                limit: 10,
            })
            .unwrap()
            .into_iter()
            .map(|c| c.detected)
            .collect::<Vec<_>>()
    };
    assert_eq!(search(Some("src/mian.rs"), None, None), vec!["src/mian.rs"]);
    assert_eq!(search(Some("memo"), None, None), vec!["confidential memo"]);
    assert_eq!(search(Some("\""), None, None).len(), 0, "no syntax error");
    assert_eq!(search(None, Some("words"), None).len(), 2);
    assert_eq!(search(None, None, Some(2500)), vec!["quote \" inside"]);
    assert_eq!(search(Some("gemma3"), None, None).len(), 3);
}

fn correction(detected: &str, ts_ms: i64) -> Correction {
    Correction {
        ts: "2025-01-20T14:32:45Z".into(),
        ts_ms,
        kind_label: "token_replacement".into(),
        rule_id: "words".into(),
        kind: "replace".into(),
        mode: "enforce".into(),
        model: "gemma3:270m".into(),
        endpoint: "chat".into(),
        confidence: 1.0,
        detected: detected.into(),
        corrected: "fixed".into(),
    }
}

fn found(store: &Store, words: &str) -> Vec<String> {
    store
        .search_corrections(&CorrectionQuery {
            text: Some(words.into()),
            limit: 10_000,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|c| c.detected)
        .collect()
}

const DAY_MS: i64 = 86_400_000;

#[test]
fn pruning_drops_old_rows_keeps_the_newest_and_the_index_follows() {
    let mut store = Store::open(&temp_db("prune")).unwrap();
    let now = 1_000 * DAY_MS;
    // 40 rows 100 days old, then 200 recent ones (ids grow with time).
    let old: Vec<_> = (0..40)
        .map(|i| correction(&format!("ancient{i} memo"), now - 100 * DAY_MS + i))
        .collect();
    let recent: Vec<_> = (0..200)
        .map(|i| correction(&format!("recent{i} memo"), now - DAY_MS + i))
        .collect();
    store.insert_corrections(&old).unwrap();
    store.insert_corrections(&recent).unwrap();
    assert_eq!(found(&store, "ancient7").len(), 1);

    // Nothing to do: within age and rows.
    let lenient = Retention {
        max_age: Some(Duration::from_secs(365 * 86_400)),
        max_rows: Some(1_000),
    };
    assert!(store
        .plan_prune(&lenient, now)
        .unwrap()
        .through_id
        .is_none());
    assert_eq!(store.prune_corrections(&lenient, now, 7).unwrap(), 0);

    // By age, in steps of 7 rows: every old row goes, every recent one stays.
    let by_age = Retention {
        max_age: Some(Duration::from_secs(30 * 86_400)),
        max_rows: None,
    };
    assert_eq!(store.prune_corrections(&by_age, now, 7).unwrap(), 40);
    assert_eq!(store.count_corrections().unwrap(), 200);
    assert!(
        found(&store, "ancient7").is_empty(),
        "FTS still finds a pruned row"
    );
    assert!(found(&store, "ancient").is_empty());
    assert_eq!(found(&store, "memo").len(), 200);
    store.check_corrections_index().unwrap();

    // By rows: the newest 50 stay.
    let by_rows = Retention {
        max_age: None,
        max_rows: Some(50),
    };
    let plan = store.plan_prune(&by_rows, now).unwrap();
    assert!(plan.through_id.is_some());
    // One bounded step deletes no more than its limit.
    assert_eq!(store.prune_step(&plan, 30).unwrap(), 30);
    assert_eq!(store.count_corrections().unwrap(), 170);
    assert_eq!(store.prune_corrections(&by_rows, now, 30).unwrap(), 120);
    let kept: Vec<String> = found(&store, "memo");
    let newest: Vec<String> = (150..200)
        .rev()
        .map(|i| format!("recent{i} memo"))
        .collect();
    assert_eq!(kept, newest);
    assert!(found(&store, "recent149").is_empty());
    assert_eq!(found(&store, "recent150").len(), 1);
    store.check_corrections_index().unwrap();

    // Rows written after a plan are not in it.
    let plan = store.plan_prune(&by_rows, now).unwrap();
    assert_eq!(plan.through_id, None, "exactly at the limit");
    store
        .insert_corrections(&[correction("latest memo", now)])
        .unwrap();
    let plan = store.plan_prune(&by_rows, now).unwrap();
    assert_eq!(store.prune_step(&plan, 100).unwrap(), 1);
    assert_eq!(found(&store, "latest").len(), 1);
    assert!(found(&store, "recent150").is_empty());
    assert_eq!(store.count_corrections().unwrap(), 50);

    // Off: nothing planned.
    assert!(store
        .plan_prune(&Retention::default(), now)
        .unwrap()
        .is_empty());
    store.check_corrections_index().unwrap();
}

#[test]
fn rows_pruned_by_age_out_of_order_never_let_the_table_exceed_the_row_limit() {
    // Every third row carries an old timestamp (a clock that jumped): age pruning leaves
    // gaps among the newest ids, and the row limit still holds.
    let mut store = Store::open(&temp_db("gaps")).unwrap();
    let now = 1_000 * DAY_MS;
    let rows: Vec<_> = (0..120)
        .map(|i| {
            let ts = if i % 3 == 0 { now - 100 * DAY_MS } else { now };
            correction(&format!("row{i} memo"), ts)
        })
        .collect();
    store.insert_corrections(&rows).unwrap();
    let retention = Retention {
        max_age: Some(Duration::from_secs(30 * 86_400)),
        max_rows: Some(50),
    };
    store.prune_corrections(&retention, now, 16).unwrap();
    let kept = found(&store, "memo");
    assert!(kept.len() <= 50, "{}", kept.len());
    assert_eq!(kept.len(), 34, "the fresh rows among the newest 50 ids");
    assert!(kept.iter().all(|d| {
        let i: usize = d[3..d.len() - 5].parse().unwrap();
        i >= 70 && i % 3 != 0
    }));
    // Again, with new rows: still bounded, still the newest.
    let more: Vec<_> = (120..200)
        .map(|i| correction(&format!("row{i} memo"), now))
        .collect();
    store.insert_corrections(&more).unwrap();
    store.prune_corrections(&retention, now, 16).unwrap();
    assert_eq!(store.count_corrections().unwrap(), 50);
    assert_eq!(found(&store, "row150").len(), 1);
    assert!(found(&store, "row149").is_empty());
    store.check_corrections_index().unwrap();
}

#[test]
fn the_index_check_notices_an_index_out_of_step() {
    // A deletion that bypasses the trigger leaves the FTS index behind; the check used by
    // the pruning tests must see that, or it proves nothing.
    let mut store = Store::open(&temp_db("fts-check")).unwrap();
    store
        .insert_corrections(&[correction("alpha", 1), correction("beta", 2)])
        .unwrap();
    store.check_corrections_index().unwrap();
    store
        .conn
        .execute_batch("DROP TRIGGER corrections_ad; DELETE FROM corrections WHERE id = 1;")
        .unwrap();
    assert!(store.check_corrections_index().is_err());
}
