//! The quality of the built-in text detectors (`refusal`, `abandonment`, `repetition`) on the
//! labelled answers of `tests/fixtures/detect/labelled.jsonl`, and of `repetition` on real
//! code: the sources of the crates this build pulls in, each file as a fenced answer.
//!
//! Holds, per detector: recall ≥ 0.9 on its failures, false triggers ≤ 0.5% on ordinary
//! answers, and none at all for `repetition` on code. `cargo test --test detect_quality --
//! --nocapture` prints the table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
#![allow(clippy::print_stdout)] // the quality table is the report

use std::path::{Path, PathBuf};

mod support;
use std::sync::Arc;
use support::dependency_sources;

use rawrxd::detect::{Detectors, Ending, Finding, Tools};
use rawrxd::patch::Pipeline;
use rawrxd::rules::{validate_spec, Endpoint, RuleSpec};

const DETECTORS: [&str; 3] = ["refusal", "abandonment", "repetition"];

fn detectors() -> Arc<Detectors> {
    let rules = DETECTORS
        .iter()
        .map(|name| {
            validate_spec(
                Path::new("t.toml"),
                None,
                &RuleSpec {
                    id: Some(name.to_string()),
                    kind: Some("detect".into()),
                    detector: Some(name.to_string()),
                    ..RuleSpec::default()
                },
            )
            .unwrap()
        })
        .collect();
    let pipeline = Pipeline::new(rules).unwrap();
    Arc::new(Detectors::new(pipeline.table().clone()).unwrap())
}

/// The detectors that fire on `text`, streamed in pieces of about a token.
fn fired(detectors: &Arc<Detectors>, text: &str) -> Vec<&'static str> {
    let mut names: Vec<_> = findings(detectors, text)
        .into_iter()
        .map(|f| f.detector)
        .collect();
    names.sort_unstable();
    names
}

fn findings(detectors: &Arc<Detectors>, text: &str) -> Vec<Finding> {
    let selected = detectors.select("m", Endpoint::Chat).unwrap();
    let mut watch = selected.watch(Arc::new(Tools::default()));
    let mut piece = String::new();
    for c in text.chars() {
        piece.push(c);
        if piece.len() >= 4 && !c.is_alphanumeric() {
            watch.text(&piece);
            piece.clear();
        }
    }
    watch.text(&piece);
    watch.end(Ending::Other);
    watch.take_findings()
}

#[derive(serde::Deserialize)]
struct Item {
    id: String,
    label: String,
    source: String,
    text: String,
}

fn corpus() -> Vec<Item> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detect/labelled.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_labelled_answers_meet_the_recall_and_false_trigger_bounds() {
    let detectors = detectors();
    let items = corpus();
    let ordinary: Vec<&Item> = items.iter().filter(|i| i.label == "ordinary").collect();
    let failures = items.len() - ordinary.len();
    assert!(
        ordinary.len() >= 300,
        "only {} ordinary answers",
        ordinary.len()
    );
    assert!(failures >= 60, "only {failures} failure answers");
    let mut problems = Vec::new();
    println!(
        "detector      recall              false triggers on {} ordinary",
        ordinary.len()
    );
    for name in DETECTORS {
        let positives: Vec<&Item> = items.iter().filter(|i| i.label == name).collect();
        let missed: Vec<&str> = positives
            .iter()
            .filter(|i| !fired(&detectors, &i.text).contains(&name))
            .map(|i| i.id.as_str())
            .collect();
        let false_triggers: Vec<&Item> = ordinary
            .iter()
            .copied()
            .filter(|i| fired(&detectors, &i.text).contains(&name))
            .collect();
        let recall = 1.0 - missed.len() as f64 / positives.len() as f64;
        let false_rate = false_triggers.len() as f64 / ordinary.len() as f64;
        println!(
            "{name:<13} {:>3}/{:<3} = {recall:.3}   {} ({:.2}%)   missed: {missed:?}",
            positives.len() - missed.len(),
            positives.len(),
            false_triggers.len(),
            false_rate * 100.0
        );
        for item in &false_triggers {
            println!("    false trigger {} ({})", item.id, item.source);
        }
        if recall < 0.9 {
            problems.push(format!(
                "{name}: recall {recall:.3} < 0.9 (missed {missed:?})"
            ));
        }
        if false_rate > 0.005 {
            problems.push(format!(
                "{name}: false triggers {:.2}% > 0.5%: {:?}",
                false_rate * 100.0,
                false_triggers.iter().map(|i| &i.id).collect::<Vec<_>>()
            ));
        }
        if name == "repetition" {
            let on_code: Vec<&String> = false_triggers
                .iter()
                .filter(|i| i.text.contains("```"))
                .map(|i| &i.id)
                .collect();
            if !on_code.is_empty() {
                problems.push(format!("repetition fired on code: {on_code:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn repetition_never_fires_on_the_code_of_this_builds_crates() {
    let detectors = detectors();
    let crates = dependency_sources();
    assert!(crates.len() > 50, "only {} crates found", crates.len());
    let mut files = Vec::new();
    // Up to 48 KiB of each crate's `src/`, whole files in path order: every crate has its say
    // (a debug build reads about 0.2 MiB/s with all periods tracked). In a release build
    // `RAWRXD_SCAN_PER_CRATE=0` reads everything:
    // `RAWRXD_SCAN_PER_CRATE=0 cargo test --release --test detect_quality -- --nocapture`.
    let per_crate = match std::env::var("RAWRXD_SCAN_PER_CRATE")
        .ok()
        .map(|v| v.parse())
    {
        Some(Ok(0)) => usize::MAX,
        Some(Ok(n)) => n,
        _ => 48 << 10,
    };
    let mut texts = Vec::new();
    for dir in &crates {
        let mut crate_files = Vec::new();
        rust_files(&dir.join("src"), &mut crate_files);
        let mut taken = 0;
        for file in crate_files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            if taken + text.len() > per_crate {
                continue;
            }
            taken += text.len();
            files.push(file);
            texts.push(text);
        }
    }
    let (mut bytes, mut fired_on) = (0usize, Vec::new());
    for (file, text) in files.iter().zip(&texts) {
        bytes += text.len();
        let answer = format!("Here is the file:\n\n```rust\n{text}\n```\n");
        if let Some(finding) = findings(&detectors, &answer)
            .into_iter()
            .find(|f| f.detector == "repetition")
        {
            let mut from = finding.at.saturating_sub(160);
            while !answer.is_char_boundary(from) {
                from -= 1;
            }
            fired_on.push(format!(
                "{}: {} at {:?}",
                file.display(),
                finding.evidence,
                &answer[from..finding.at.min(answer.len())]
            ));
        }
    }
    println!(
        "repetition on code: {} files, {} MiB from {} crates: fired on {}",
        files.len(),
        bytes >> 20,
        crates.len(),
        fired_on.len()
    );
    assert!(bytes > 5 << 20, "only {bytes} bytes of code");
    assert!(fired_on.is_empty(), "fired on:\n{}", fired_on.join("\n"));
}
