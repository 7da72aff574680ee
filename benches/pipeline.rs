//! Rule pipeline throughput and per-chunk streaming cost (criterion).
//!
//! `cargo bench --bench pipeline` — see BENCHMARKS.md for the numbers and targets:
//! literal pass ≥ 1 GB/s with 1,000 rules on one core; ≤ 2 µs per token-sized chunk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rawrxd::patch::{Compiled, Pipeline};
use rawrxd::rules::parse_file;

/// 1,000 literal rules: made-up words a model should not say, each replaced.
fn literal_rules() -> String {
    let mut toml = String::new();
    for i in 0..1000 {
        toml.push_str(&format!(
            "[[rule]]\nid = \"lit-{i}\"\nkind = \"replace\"\nfind = \"forbidden{i:04}word\"\nreplace = \"ok{i}\"\n\n"
        ));
    }
    toml
}

/// 50 regex rules of the kinds users write (versions, paths, TODO tags, ids…).
fn regex_rules() -> String {
    let patterns = [
        r"\bv(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b",
        r"TODO\(([a-z]{1,16})\)",
        r"\bsrc/mian\.rs\b",
        r"/home/[a-z]{1,16}/secret",
        r"\b[0-9a-f]{40}\b",
    ];
    let mut toml = String::new();
    for i in 0..50 {
        let pattern = patterns[i % patterns.len()];
        toml.push_str(&format!(
            "[[rule]]\nid = \"re-{i}\"\nkind = \"regex\"\npattern = '(?:{pattern})#{i}'\nreplace = \"[re {i}]\"\nmax_len = 64\n\n"
        ));
    }
    toml
}

fn compile(toml: &str) -> Arc<Compiled> {
    let rules = parse_file(Path::new("bench.toml"), toml).unwrap();
    Pipeline::new(rules).unwrap().select("bench", None).unwrap()
}

/// About `size` bytes of model-like text (prose and code), with one literal hit per ~16 KiB.
fn corpus(size: usize) -> String {
    let pieces = [
        "The function returns a Result so the caller can decide what to do with the error. ",
        "fn main() {\n    let config = Config::load(\"rawrxd.toml\")?;\n    run(config)\n}\n",
        "To fix the build, run `cargo build --release` and check the output in target/. ",
        "Here is the updated handler:\n```rust\nasync fn handle(req: Request) -> Response {\n",
        "    let body = req.into_body().collect().await?.to_bytes();\n```\n",
        "Note that the path src/main.rs contains the entry point; see ARCHITECTURE.md. ",
    ];
    let mut text = String::with_capacity(size + 256);
    let mut i = 0;
    while text.len() < size {
        text.push_str(pieces[i % pieces.len()]);
        if i % 200 == 199 {
            text.push_str("forbidden0042word ");
        }
        i += 1;
    }
    text
}

/// Splits text into token-sized chunks (~4 bytes, on char boundaries).
fn tokens(text: &str) -> Vec<&str> {
    split(text, 4)
}

/// Splits text into pieces of about `size` bytes, on char boundaries.
fn split(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn throughput(c: &mut Criterion) {
    let text = corpus(1 << 20);
    let literal = compile(&literal_rules());
    let regex = compile(&regex_rules());
    let both = compile(&(literal_rules() + &regex_rules()));
    let mut group = c.benchmark_group("pipeline_1MiB");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(20);
    for (name, compiled) in [
        ("1000_literals", &literal),
        ("50_regexes", &regex),
        ("1000_literals+50_regexes", &both),
    ] {
        group.bench_with_input(BenchmarkId::new("one_shot", name), &text, |b, text| {
            b.iter(|| black_box(compiled.apply(black_box(text))))
        });
        // The way a large body flows through the proxy: one session, 64 KiB pieces.
        let pieces = split(&text, 64 << 10);
        group.bench_with_input(
            BenchmarkId::new("stream_64KiB", name),
            &pieces,
            |b, pieces| {
                b.iter(|| {
                    let mut session = compiled.session();
                    let mut released = 0;
                    for piece in pieces {
                        released += session.push(piece).len();
                    }
                    released += session.finish().len();
                    black_box(released)
                })
            },
        );
    }
    // The floor: aho-corasick alone counting the same literals' matches.
    let words: Vec<String> = (0..1000).map(|i| format!("forbidden{i:04}word")).collect();
    let ac = aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostLongest)
        .build(&words)
        .unwrap();
    group.bench_with_input(
        BenchmarkId::new("baseline_aho_corasick_count", "1000_literals"),
        &text,
        |b, text| b.iter(|| black_box(ac.find_iter(black_box(text.as_str())).count())),
    );
    group.finish();
}

fn per_chunk(c: &mut Criterion) {
    let text = corpus(64 << 10);
    let chunks = tokens(&text);
    let literal = compile(&literal_rules());
    let both = compile(&(literal_rules() + &regex_rules()));
    let mut group = c.benchmark_group("stream_token_chunks");
    group.throughput(Throughput::Elements(chunks.len() as u64));
    group.sample_size(20);
    for (name, compiled) in [
        ("1000_literals", &literal),
        ("1000_literals+50_regexes", &both),
    ] {
        group.bench_with_input(BenchmarkId::new("session", name), &chunks, |b, chunks| {
            b.iter(|| {
                let mut session = compiled.session();
                let mut released = 0;
                for chunk in chunks {
                    released += session.push(chunk).len();
                }
                released += session.finish().len();
                black_box(released)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, throughput, per_chunk);
criterion_main!(benches);
