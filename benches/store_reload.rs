//! The rule store and the audit trail, measured:
//!
//! * **save → live**: a rule file is saved (write + rename, as editors do) and the time until the
//!   proxy's live snapshot holds the new rules is taken, for a small rule set and for the
//!   1,050-rule fixture (`benches/fixtures/rules-1050`). Target: under 1 s.
//! * **audit writer**: events pushed as fast as `HitSink::record` can go; the cost per
//!   correction on the request path and the lines per second the writer thread commits (log
//!   line + SQLite row with FTS). Corrections dropped by a full channel are counted and
//!   reported; a correction neither written nor dropped within 30 s of the writer's last
//!   progress ends the wait, is reported, and makes the bench exit 1.
//! * **prune**: a corrections table over the row limit and with rows past the retention age,
//!   pruned the way the writer does: the plan, then steps of `PRUNE_BATCH` rows (the longest
//!   the writer pauses writing).
//!
//! `cargo bench --bench store_reload`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // bench code

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rawrxd::app::App;
use rawrxd::audit::{Audit, AuditConfig, HitSink, PRUNE_BATCH};
use rawrxd::config::RawProxy;
use rawrxd::patch::Hit;
use rawrxd::rules::{Endpoint, Kind};
use rawrxd::store::{Correction, Retention, Store};
use rawrxd::telemetry::metrics::Metrics;

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rawrxd-bench-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    dir
}

fn save(path: &Path, text: &str) {
    let temp = path.with_extension("toml.tmp~");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn save_to_live(label: &str, extra_rules: Option<&Path>, rounds: usize) {
    let dir = tempdir("reload");
    if let Some(extra) = extra_rules {
        std::fs::copy(extra, dir.join("rules/big.toml")).unwrap();
    }
    let file = dir.join("rules/edit.toml");
    let rule = |i: usize| {
        format!("[[rule]]\nid = \"edited\"\nkind = \"replace\"\nfind = \"x\"\nreplace = \"v{i}\"\n")
    };
    save(&file, &rule(0));
    let config = RawProxy {
        rules: dir.join("rules"),
        db: dir.join("rawrxd.db"),
        log_dir: dir.join("logs"),
        ..RawProxy::default()
    }
    .validate()
    .unwrap();
    let app = App::start(config).unwrap();
    let mut samples = Vec::with_capacity(rounds);
    for i in 1..=rounds {
        let before = app.state.live.load().built;
        let saved = Instant::now();
        save(&file, &rule(i));
        while app.state.live.load().built == before {
            assert!(
                saved.elapsed() < Duration::from_secs(5),
                "reload never happened"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        samples.push(saved.elapsed());
        // Let the debounce window close before the next save.
        std::thread::sleep(Duration::from_millis(150));
    }
    let rules = app.state.live.load().pipeline.table().rules.len();
    app.stop();
    samples.sort();
    println!(
        "save -> live, {label} ({rules} rules, {rounds} saves): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.95).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

/// Returns false when some corrections were neither written nor counted as dropped in time.
fn audit_throughput(events: usize) -> bool {
    let dir = tempdir("audit");
    let metrics = Arc::new(Metrics::new());
    let audit = Audit::start(
        AuditConfig {
            log_dir: dir.join("logs"),
            db_path: dir.join("rawrxd.db"),
            max_log_bytes: 1 << 30,
            keep: 1,
            retention: Retention::default(),
        },
        metrics.clone(),
    )
    .unwrap();
    let sink = HitSink {
        audit: Some(audit.clone()),
        metrics,
        model: Arc::from("gemma3:270m"),
        endpoint: Endpoint::Chat,
    };
    let hit = |i: usize| Hit {
        rule_id: "no-confidential".into(),
        kind: Kind::Replace,
        detected: format!("confidential {i}"),
        corrected: "[redacted]".into(),
        shadow: false,
        path: None,
    };
    let started = Instant::now();
    let mut record_time = Duration::ZERO;
    let mut sent = 0;
    // Every correction ends up written or counted as dropped; one that is neither within
    // this long of the writer's last progress is reported as lost, and the wait ends.
    let stall_limit = Duration::from_secs(30);
    let accounted =
        || audit.written.load(Ordering::Relaxed) + audit.dropped.load(Ordering::Relaxed);
    let wait_until = |target: u64| -> bool {
        let mut last = accounted();
        let mut progress_at = Instant::now();
        while accounted() < target {
            let now = accounted();
            if now != last {
                (last, progress_at) = (now, Instant::now());
            } else if progress_at.elapsed() > stall_limit {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    };
    let mut complete = true;
    while sent < events && complete {
        // Bursts of 100 (a long stream's worth), then a pause, so the channel never fills.
        let batch: Vec<Hit> = (sent..sent + 100).map(hit).collect();
        let t = Instant::now();
        sink.record(batch);
        record_time += t.elapsed();
        sent += 100;
        complete = wait_until((sent as u64).saturating_sub(8_000));
    }
    complete = complete && wait_until(sent as u64);
    let total = started.elapsed();
    let written = audit.written.load(Ordering::Relaxed);
    let dropped = audit.dropped.load(Ordering::Relaxed);
    audit.close();
    println!(
        "audit: {sent} corrections: request-path cost {:.2} us/correction; writer {:.0} lines/s (log + SQLite + FTS); written {written}, dropped {dropped}",
        record_time.as_secs_f64() * 1e6 / sent.max(1) as f64,
        written as f64 / total.as_secs_f64(),
    );
    if !complete {
        println!(
            "audit: INCOMPLETE: {} corrections neither written nor counted as dropped after {}s without progress",
            sent as u64 - written - dropped,
            stall_limit.as_secs()
        );
    }
    complete
}

/// Pruning the corrections table (audit_retention, audit_max_rows) on a table over the
/// default row limit: the time to plan a prune and each bounded step's time, which is how
/// long the writer stops writing at most.
fn prune_cost(rows: usize, max_rows: u64, old: usize) {
    let dir = tempdir("prune");
    let mut store = Store::open(&dir.join("rawrxd.db")).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day_ms = 86_400_000;
    let filled = Instant::now();
    let mut chunk = Vec::with_capacity(10_000);
    for i in 0..rows {
        let ts_ms = if i < old {
            now_ms - 100 * day_ms
        } else {
            now_ms
        };
        chunk.push(Correction {
            ts: "2025-01-20T14:32:45Z".into(),
            ts_ms,
            kind_label: "token_replacement".into(),
            rule_id: "no-confidential".into(),
            kind: "replace".into(),
            mode: "enforce".into(),
            model: "gemma3:270m".into(),
            endpoint: "chat".into(),
            confidence: 1.0,
            detected: format!("confidential {i}"),
            corrected: "[redacted]".into(),
        });
        if chunk.len() == chunk.capacity() || i + 1 == rows {
            store.insert_corrections(&chunk).unwrap();
            chunk.clear();
        }
    }
    let filled = filled.elapsed();
    let retention = Retention {
        max_age: Some(Duration::from_secs(30 * 86_400)),
        max_rows: Some(max_rows),
    };
    let t = Instant::now();
    let plan = store.plan_prune(&retention, now_ms).unwrap();
    let plan_time = t.elapsed();
    let mut steps = Vec::new();
    let mut deleted = 0;
    loop {
        let t = Instant::now();
        let n = store.prune_step(&plan, PRUNE_BATCH).unwrap();
        steps.push(t.elapsed());
        deleted += n;
        if n < PRUNE_BATCH {
            break;
        }
    }
    let left = store.count_corrections().unwrap();
    store.check_corrections_index().unwrap();
    steps.sort();
    println!(
        "prune: {rows} rows ({old} older than audit_retention; filled in {:.0} s), audit_max_rows {max_rows}: \
         plan {:.0} ms; {} steps of <= {PRUNE_BATCH} rows deleted {deleted}: step p50 {:.0} ms, max {:.0} ms; {left} rows left, FTS index in step",
        filled.as_secs_f64(),
        plan_time.as_secs_f64() * 1e3,
        steps.len(),
        percentile(&steps, 0.5).as_secs_f64() * 1e3,
        steps[steps.len() - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/rules-1050/rules.toml");
    save_to_live("small set", None, 30);
    save_to_live("with the 1,050-rule fixture", Some(&fixture), 15);
    let complete = audit_throughput(100_000);
    prune_cost(1_050_000, 1_000_000, 100_000);
    if !complete {
        std::process::exit(1);
    }
}
