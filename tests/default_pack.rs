//! The default rule pack (`rules/`) is safe to leave on: it catches real-looking credentials
//! of every kind it targets, and finds nothing in a large corpus of ordinary code and prose —
//! the source and documentation of every crate this project builds with (as the cargo
//! registry holds them), this repository's own docs, and real model output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};

mod support;
use std::sync::Arc;
use support::dependency_sources;

use rawrxd::live::Live;
use rawrxd::patch::Compiled;
use rawrxd::rules::Endpoint;

fn default_pack() -> Arc<Compiled> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let live = Live::load_dir(&dir).unwrap();
    assert!(!live.pipeline.table().rules.is_empty());
    live.pipeline
        .select("any-model", Some(Endpoint::Chat))
        .unwrap()
}

#[test]
fn the_default_pack_catches_each_kind_of_secret() {
    let pack = default_pack();
    // Made-up credentials in the shapes real ones have (none of these is a live key).
    let samples = [
        ("aws", "export AWS_ACCESS_KEY_ID=AKIAQ3EGUJ7ZT4XWBN5K"),
        ("github", "token = \"ghp_k3Jd8sLq0ZxV7bN2mW9pR4tY6uI1oE5aH8cF\""),
        (
            "github fine-grained",
            "github_pat_11ABCDEFG0123456789abcd_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz012345",
        ),
        ("openai", "OPENAI_API_KEY=sk-proj-4fG7hJ2kL9mN3pQ8rS1tU6vW0xY5zA2bC7dE9fG3hJ"),
        (
            "jwt",
            "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
        (
            "private key",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98Yl0r1eZL9g0H1M2hYd8sW3wQ4Xk2R7b5aLq9N2eC3pD\nvK8sF4jH6gT1yU0iO9pL2mN5bV7cX3zA1sD4fG6hJ8kL0qW2eR4tY6uI8oP0aS2d\n-----END RSA PRIVATE KEY-----",
        ),
    ];
    for (what, text) in samples {
        let patched = pack.apply(text);
        assert_eq!(patched.hits.len(), 1, "{what} not caught in {text:?}");
        assert!(
            patched.text.contains("[REDACTED:"),
            "{what}: {}",
            patched.text
        );
    }
}

/// Every text file under `dir` (recursively) with one of the extensions.
fn files_under(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, extensions, out);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e))
        {
            out.push(path);
        }
    }
}

#[test]
fn the_default_pack_finds_nothing_in_ordinary_code_and_prose() {
    let pack = default_pack();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let dependencies = dependency_sources();
    for dir in &dependencies {
        files_under(dir, &["rs", "md", "toml", "txt", "c", "h"], &mut files);
    }
    // This repository's prose and the recorded model output. (Its tests, fixtures and README
    // are left out: they show made-up secrets, and AWS's documented example key, on purpose.)
    for doc in ["ARCHITECTURE.md", "BENCHMARKS.md", "rules/README.md"] {
        files.push(root.join(doc));
    }
    files_under(
        &root.join("tests/fixtures/recorded"),
        &["ndjson"],
        &mut files,
    );
    let mut bytes = 0usize;
    let mut found = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue; // not UTF-8
        };
        bytes += text.len();
        for hit in pack.apply(&text).hits {
            found.push(format!(
                "{}: {} {:?}",
                file.display(),
                hit.rule_id,
                hit.detected
            ));
        }
    }
    eprintln!(
        "default pack: {} files, {} MiB from {} dependency crates: {} hit(s)",
        files.len(),
        bytes >> 20,
        dependencies.len(),
        found.len()
    );
    // The corpus must be real: the dependencies' sources are there after any build.
    assert!(
        dependencies.len() > 50,
        "only {} crates found",
        dependencies.len()
    );
    assert!(bytes > 20 << 20, "corpus of only {bytes} bytes");
    assert!(found.is_empty(), "false positives:\n{}", found.join("\n"));
}
