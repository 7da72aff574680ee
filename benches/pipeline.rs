//! Rule pipeline throughput and per-chunk streaming cost (criterion).
//!
//! `cargo bench --bench pipeline` — see BENCHMARKS.md for the numbers and targets:
//! literal pass ≥ 1 GB/s with 1,000 rules on one core; ≤ 2 µs per token-sized chunk.
//!
//! Two sets of 50 regex rules run over the same text: `50_regexes_matching`, whose rules
//! match it at the rate [`corpus`] states (each rule about ten times per MiB), and
//! `50_regexes_no_match`, the same kinds of pattern made never to match (each needs a
//! literal `#N` the text lacks): the cost of scanning alone. The set-up checks both claims
//! before anything is timed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code
#![allow(clippy::print_stdout)] // the set-up reports the match counts it checked

use std::collections::HashMap;
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

/// Words that make the 50 matching rules (and their targets in the text) distinct: ten per
/// kind of pattern.
const CRATES: [&str; 10] = [
    "tokio", "serde", "hyper", "regex", "clap", "rusqlite", "tracing", "axum", "bytes", "notify",
];
const MODULES: [&str; 10] = [
    "route", "admin", "store", "audit", "config", "server", "upstream", "rewrite", "reload",
    "metrics",
];
const OWNERS: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];
const REFS: [&str; 10] = [
    "commit",
    "revision",
    "sha",
    "changeset",
    "patch",
    "hash",
    "build",
    "tag",
    "snapshot",
    "rev",
];
const USERS: [&str; 10] = [
    "ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ida", "jon",
];

/// Regex rule `i` of the matching set (the kinds users write: versions, file:line paths, TODO
/// owners, commit hashes, home directories), and a sentence of model text it matches.
fn matching_rule(i: usize) -> (String, String, String) {
    let v = (i / 5) % 10;
    match i % 5 {
        0 => (
            format!(r"\b{} v(\d{{1,3}})\.(\d{{1,3}})\.(\d{{1,3}})\b", CRATES[v]),
            format!("{} $1.$2.$3", CRATES[v]),
            format!("Upgrade {} v1.{i}.3 first, then rebuild. ", CRATES[v]),
        ),
        1 => (
            format!(r"\bsrc/{}\.rs:(\d{{1,5}})\b", MODULES[v]),
            format!("src/{}.rs (line $1)", MODULES[v]),
            format!(
                "The handler is in src/{}.rs:{} for now. ",
                MODULES[v],
                100 + i
            ),
        ),
        2 => (
            format!(r"TODO\({}\):?", OWNERS[v]),
            "TODO:".into(),
            format!("    // TODO({}): handle the timeout\n", OWNERS[v]),
        ),
        3 => (
            format!(r"\b{} ([0-9a-f]{{7,40}})\b", REFS[v]),
            format!("{} <$1>", REFS[v]),
            format!("This was fixed in {} 3f9a2c1d{i:02}. ", REFS[v]),
        ),
        _ => (
            format!(r"/home/{}/([\w./-]{{1,48}})", USERS[v]),
            "~/$1".into(),
            format!("It reads /home/{}/.config/app{i}.toml at start. ", USERS[v]),
        ),
    }
}

/// The 50 matching regex rules.
fn matching_regex_rules() -> String {
    let mut toml = String::new();
    for i in 0..50 {
        let (pattern, replace, _) = matching_rule(i);
        toml.push_str(&format!(
            "[[rule]]\nid = \"re-{i}\"\nkind = \"regex\"\npattern = '{pattern}'\nreplace = '{replace}'\nmax_len = 64\n\n"
        ));
    }
    toml
}

/// 50 regex rules of the same kinds that never match: each needs a literal `#N` after its
/// match, which the text never has. The cost of scanning without rewriting.
fn no_match_regex_rules() -> String {
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
            "[[rule]]\nid = \"nomatch-{i}\"\nkind = \"regex\"\npattern = '(?:{pattern})#{i}'\nreplace = \"[re {i}]\"\nmax_len = 64\n\n"
        ));
    }
    toml
}

fn compile(toml: &str) -> Arc<Compiled> {
    let rules = parse_file(Path::new("bench.toml"), toml).unwrap();
    Pipeline::new(rules).unwrap().select("bench", None).unwrap()
}

/// About `size` bytes of model-like text (prose and code), with one literal hit per ~16 KiB
/// and one sentence for a matching regex rule per ~2 KiB (every 25th piece, cycling through
/// the 50 rules: each matches about ten times per MiB).
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
    let (mut i, mut target) = (0, 0);
    while text.len() < size {
        text.push_str(pieces[i % pieces.len()]);
        if i % 200 == 199 {
            text.push_str("forbidden0042word ");
        }
        if i % 25 == 24 {
            text.push_str(&matching_rule(target % 50).2);
            target += 1;
        }
        i += 1;
    }
    text
}

/// Hits per rule id when `compiled` patches `text` in one go.
fn hits_by_rule(compiled: &Arc<Compiled>, text: &str) -> HashMap<String, usize> {
    let mut hits = HashMap::new();
    for hit in compiled.apply(text).hits {
        *hits.entry(hit.rule_id).or_insert(0) += 1;
    }
    hits
}

/// Checks what the names promise: every matching rule matches `text`, no no-match rule does.
fn check_sets(text: &str, matching: &Arc<Compiled>, no_match: &Arc<Compiled>) {
    let hits = hits_by_rule(matching, text);
    for i in 0..50 {
        assert!(
            hits.get(&format!("re-{i}")).copied().unwrap_or(0) > 0,
            "matching rule re-{i} never matches the corpus"
        );
    }
    let total: usize = hits.values().sum();
    assert!(
        hits_by_rule(no_match, text).is_empty(),
        "a no-match rule matched"
    );
    println!(
        "corpus: {} bytes; 50_regexes_matching: {total} matches ({:.0} per MiB, {}-{} per rule); \
         50_regexes_no_match: 0 matches",
        text.len(),
        total as f64 * (1 << 20) as f64 / text.len() as f64,
        hits.values().min().copied().unwrap_or(0),
        hits.values().max().copied().unwrap_or(0),
    );
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
    let matching = compile(&matching_regex_rules());
    let no_match = compile(&no_match_regex_rules());
    check_sets(&text, &matching, &no_match);
    let both = compile(&(literal_rules() + &matching_regex_rules()));
    let mut group = c.benchmark_group("pipeline_1MiB");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(20);
    for (name, compiled) in [
        ("1000_literals", &literal),
        ("50_regexes_matching", &matching),
        ("50_regexes_no_match", &no_match),
        ("1000_literals+50_regexes_matching", &both),
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
    let both = compile(&(literal_rules() + &matching_regex_rules()));
    let both_no_match = compile(&(literal_rules() + &no_match_regex_rules()));
    let mut group = c.benchmark_group("stream_token_chunks");
    group.throughput(Throughput::Elements(chunks.len() as u64));
    group.sample_size(20);
    for (name, compiled) in [
        ("1000_literals", &literal),
        ("1000_literals+50_regexes_matching", &both),
        ("1000_literals+50_regexes_no_match", &both_no_match),
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
