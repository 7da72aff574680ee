//! How much model text the rule pipeline holds back while streaming real model output.
//!
//! Replays recorded Ollama `/api/generate` NDJSON streams (`tests/fixtures/recorded/*.ndjson`,
//! real output of Gemma 3 270M, see that folder's README) line by line through the
//! re-framer with the default rule pack plus a set of typical replace/regex rules, and reports
//! the median, p99 and largest number of characters held back after each line, and how many
//! lines ended with anything held. `cargo bench --bench held_back`. Without recordings it fails
//! (exit status 1) rather than report nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code
#![allow(clippy::print_stdout, clippy::print_stderr)] // it reports on stdout, fails on stderr

use std::path::Path;

use rawrxd::patch::rewrite::{Format, Rewriter};
use rawrxd::patch::Pipeline;
use rawrxd::rules::{load_dir, parse_file, Endpoint};

/// The extra rules, shared with `benches/path_fix.rs`.
const EXTRA_RULES: &str = include_str!("../tests/fixtures/held_back_rules.toml");

fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

/// Without recordings there is nothing to measure: say so and exit non-zero, so a missing
/// fixture never passes for a measurement.
fn fail(message: &str) -> ! {
    eprintln!("held_back: {message}");
    std::process::exit(1);
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut rules = load_dir(&root.join("rules")).expect("default pack");
    rules.extend(parse_file(Path::new("extra.toml"), EXTRA_RULES).expect("extra rules"));
    let rule_count = rules.len();
    let pipeline = Pipeline::new(rules).expect("compiles");
    let compiled = pipeline
        .select("gemma3:270m", Some(Endpoint::Generate))
        .expect("rules apply");

    let dir = root.join("tests/fixtures/recorded");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(error) => fail(&format!("cannot read {}: {error}", dir.display())),
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "ndjson"));
    files.sort();
    if files.is_empty() {
        fail(&format!(
            "no recordings (*.ndjson) in {}; they are part of the repository (see its README; \
             scripts/record-ndjson.py records new ones)",
            dir.display()
        ));
    }
    let mut held_after_line = Vec::new();
    let (mut lines_total, mut chars_total, mut held_lines) = (0usize, 0usize, 0usize);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rewriter = Rewriter::new(compiled.clone(), Endpoint::Generate, Format::Ndjson);
        for line in text.split_inclusive('\n') {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            chars_total += value["response"].as_str().unwrap_or("").chars().count();
            rewriter.feed(line.as_bytes());
            let held = rewriter.held_chars();
            held_after_line.push(held);
            if held > 0 {
                held_lines += 1;
            }
            lines_total += 1;
        }
        rewriter.finish();
    }
    held_after_line.sort_unstable();
    println!("held_back: {} recordings, {lines_total} token lines, {chars_total} characters of model text, {rule_count} rules", files.len());
    println!(
        "held_back: characters held after each line: median {}, p99 {}, max {}",
        percentile(&held_after_line, 0.5),
        percentile(&held_after_line, 0.99),
        held_after_line.last().copied().unwrap_or(0)
    );
    println!(
        "held_back: lines with anything held: {held_lines} of {lines_total} ({:.1}%)",
        100.0 * held_lines as f64 / lines_total.max(1) as f64
    );
}
