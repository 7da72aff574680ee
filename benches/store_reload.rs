//! The rule store and the audit trail, measured:
//!
//! * **save → live**: a rule file is saved (write + rename, as editors do) and the time until the
//!   proxy's live snapshot holds the new rules is taken, for a small rule set and for the
//!   1,050-rule fixture (`benches/fixtures/rules-1050`). Target: under 1 s.
//! * **audit writer**: events pushed as fast as `HitSink::record` can go; the cost per
//!   correction on the request path and the lines per second the writer thread commits (log
//!   line + SQLite row with FTS).
//!
//! `cargo bench --bench store_reload`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // bench code

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rawrxd::app::App;
use rawrxd::audit::{Audit, AuditConfig, HitSink};
use rawrxd::config::RawProxy;
use rawrxd::metrics::Metrics;
use rawrxd::patch::Hit;
use rawrxd::rules::{Endpoint, Kind};
use rawrxd::store::Retention;

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

fn audit_throughput(events: usize) {
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
    };
    let started = Instant::now();
    let mut record_time = Duration::ZERO;
    let mut sent = 0;
    while sent < events {
        // Bursts of 100 (a long stream's worth), then a pause, so the channel never fills.
        let batch: Vec<Hit> = (sent..sent + 100).map(hit).collect();
        let t = Instant::now();
        sink.record(batch);
        record_time += t.elapsed();
        sent += 100;
        while sent as u64 - audit.written.load(Ordering::Relaxed) > 8_000 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    while audit.written.load(Ordering::Relaxed) < events as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = started.elapsed();
    let dropped = audit.dropped.load(Ordering::Relaxed);
    audit.close();
    println!(
        "audit: {events} corrections: request-path cost {:.2} us/correction; writer {:.0} lines/s (log + SQLite + FTS); dropped {dropped}",
        record_time.as_secs_f64() * 1e6 / events as f64,
        events as f64 / total.as_secs_f64(),
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/rules-1050/rules.toml");
    save_to_live("small set", None, 30);
    save_to_live("with the 1,050-rule fixture", Some(&fixture), 15);
    audit_throughput(100_000);
}
