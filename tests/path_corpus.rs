//! The labelled path corpus (`tests/fixtures/paths/`, made by `scripts/gen-path-corpus.py`
//! from the file lists of ripgrep and flask): every item streamed through a `path` rule with
//! random chunk cuts, in its shape (prose in `/api/chat` NDJSON, Ollama tool calls, OpenAI
//! streamed tool calls), and scored per class against the bars of issue 15.
//!
//! `cargo test --test path_corpus -- --nocapture` prints the per-class table (BENCHMARKS.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rawrxd::patch::rewrite::{Format, Rewriter};
use rawrxd::patch::{Compiled, Context, Hit, Pipeline};
use rawrxd::rules::{parse_file, Endpoint};
use serde_json::{json, Value};

const FIXTURES: &str = "tests/fixtures/paths";

/// A small deterministic generator for chunk cuts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `text` cut at random char boundaries (1 to 8 chars a piece).
    fn cuts(&mut self, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let n = 1 + (self.next() % 8) as usize;
            let end = (at + n).min(chars.len());
            pieces.push(chars[at..end].iter().collect());
            at = end;
        }
        pieces
    }
}

struct Corpus {
    _dir: PathBuf,
    roots: BTreeMap<String, String>,
    compiled: Arc<Compiled>,
}

/// Materialises both projects as empty files and builds one path rule over both roots.
fn corpus() -> Corpus {
    let dir = support::tempdir("path-corpus");
    let mut roots = BTreeMap::new();
    for project in ["ripgrep", "flask"] {
        let root = dir.join(project);
        let list = std::fs::read_to_string(Path::new(FIXTURES).join(format!("{project}.txt")))
            .expect("path list");
        for line in list
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let path = root.join(line);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let root = root.canonicalize().unwrap();
        roots.insert(project.to_string(), root.to_str().unwrap().to_string());
    }
    let toml = format!(
        "[[rule]]\nid = \"fix-paths\"\nkind = \"path\"\nroots = [{}]\n",
        roots
            .values()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rules = parse_file(Path::new("paths.toml"), &toml).expect("rule");
    let pipeline = Pipeline::new(rules).expect("pipeline");
    let compiled = pipeline.select("m", Some(Endpoint::Chat)).expect("applies");
    Corpus {
        _dir: dir,
        roots,
        compiled,
    }
}

fn substitute(value: &Value, root: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("{ROOT}", root)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, root)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, root)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A rewriter for one item, in its project's workspace.
fn rewriter(c: &Corpus, ctx: &Context, endpoint: Endpoint, format: Format) -> Rewriter {
    Rewriter::in_context(c.compiled.clone(), endpoint, format, ctx.clone())
}

/// Runs NDJSON or SSE bytes through a rewriter in random pieces.
fn run(rewriter: &mut Rewriter, bytes: &str, rng: &mut Rng) -> String {
    let mut out = Vec::new();
    let raw = bytes.as_bytes();
    let mut at = 0;
    while at < raw.len() {
        let n = 1 + (rng.next() % 64) as usize;
        let end = (at + n).min(raw.len());
        out.extend(rewriter.feed(&raw[at..end]));
        at = end;
    }
    out.extend(rewriter.finish());
    String::from_utf8(out).unwrap()
}

/// A prose item: streamed as `/api/chat` NDJSON in random pieces; returns the text.
fn prose(c: &Corpus, ctx: &Context, text: &str, rng: &mut Rng) -> (String, Vec<Hit>) {
    let mut ndjson = String::new();
    for piece in rng.cuts(text) {
        let line = json!({"model": "m", "message": {"role": "assistant", "content": piece}, "done": false});
        ndjson.push_str(&line.to_string());
        ndjson.push('\n');
    }
    ndjson.push_str(r#"{"model":"m","message":{"role":"assistant","content":""},"done":true}"#);
    ndjson.push('\n');
    let mut rewriter = rewriter(c, ctx, Endpoint::Chat, Format::Ndjson);
    let out = run(&mut rewriter, &ndjson, rng);
    let hits = rewriter.take_hits();
    let mut text = String::new();
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        text.push_str(v["message"]["content"].as_str().unwrap_or(""));
    }
    (text, hits)
}

/// An Ollama tool call: one `/api/chat` line with `message.tool_calls`; returns the call.
fn ollama_tool(c: &Corpus, ctx: &Context, call: &Value, rng: &mut Rng) -> (Value, Vec<Hit>) {
    let line = json!({"model": "m", "message": {"role": "assistant", "content": "",
        "tool_calls": [{"function": {"name": call["name"], "arguments": call["arguments"]}}]},
        "done": false});
    let ndjson = format!(
        "{line}\n{}\n",
        r#"{"model":"m","message":{"role":"assistant","content":""},"done":true}"#
    );
    let mut rewriter = rewriter(c, ctx, Endpoint::Chat, Format::Ndjson);
    let out = run(&mut rewriter, &ndjson, rng);
    let hits = rewriter.take_hits();
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let function = &first["message"]["tool_calls"][0]["function"];
    (
        json!({"name": function["name"], "arguments": function["arguments"]}),
        hits,
    )
}

/// An OpenAI tool call streamed as SSE: the arguments string in random fragments; returns
/// the call with its arguments reassembled and parsed.
fn openai_tool(c: &Corpus, ctx: &Context, call: &Value, rng: &mut Rng) -> (Value, Vec<Hit>) {
    let arguments = serde_json::to_string(&call["arguments"]).unwrap();
    let chunk = |delta: Value, finish: Value| {
        let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut sse = chunk(
        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": call["name"], "arguments": ""}}]}),
        Value::Null,
    );
    for piece in rng.cuts(&arguments) {
        sse.push_str(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    sse.push_str(&chunk(json!({}), json!("tool_calls")));
    sse.push_str("data: [DONE]\n\n");
    let mut rewriter = rewriter(c, ctx, Endpoint::OpenaiChat, Format::Sse);
    let out = run(&mut rewriter, &sse, rng);
    let hits = rewriter.take_hits();
    let mut name = Value::Null;
    let mut assembled = String::new();
    let mut finished = false;
    for event in out.split("\n\n") {
        let Some(data) = event.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            assert!(finished, "[DONE] before the finish chunk");
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let choice = &v["choices"][0];
        if !choice["finish_reason"].is_null() {
            finished = true;
        }
        if let Some(calls) = choice["delta"]["tool_calls"].as_array() {
            assert!(!finished, "tool call fragments after the finish chunk");
            for call in calls {
                if let Some(n) = call["function"]["name"].as_str() {
                    name = json!(n);
                }
                assembled.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    let arguments: Value = serde_json::from_str(&assembled)
        .unwrap_or_else(|e| panic!("arguments {assembled:?} are not JSON: {e}"));
    (json!({"name": name, "arguments": arguments}), hits)
}

#[derive(Default)]
struct Score {
    items: usize,
    /// Output changed and equals the expected fix.
    right: usize,
    /// Output changed but not to the expected text.
    wrong: usize,
    flagged: usize,
}

#[test]
fn the_labelled_corpus_meets_the_bars() {
    let c = corpus();
    let corpus = std::fs::read_to_string(Path::new(FIXTURES).join("corpus.jsonl")).unwrap();
    let mut rng = Rng(0x15_15_15_15);
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let mut failures = Vec::new();
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let item: Value = serde_json::from_str(line).unwrap();
        let project = item["project"].as_str().unwrap();
        let root = &c.roots[project];
        let ctx = Context {
            workspace: Some(root.clone()),
        };
        let text = substitute(&item["text"], root);
        let expect = substitute(&item["expect"], root);
        let (got, hits) = match item["shape"].as_str().unwrap() {
            "prose" => {
                let input = text.as_str().unwrap();
                let (out, hits) = prose(&c, &ctx, input, &mut rng);
                // Streaming equals fixing the whole text at once.
                let whole = c.compiled.apply_in(input, &ctx);
                assert_eq!(out, whole.text, "{}: streamed != whole", item["id"]);
                (Value::String(out), hits)
            }
            "ollama_tool" => ollama_tool(&c, &ctx, &text, &mut rng),
            "openai_tool" => openai_tool(&c, &ctx, &text, &mut rng),
            other => panic!("unknown shape {other}"),
        };
        let class = item["class"].as_str().unwrap().to_string();
        let score = scores.entry(class.clone()).or_default();
        score.items += 1;
        let changed = got != text;
        if changed && got == expect {
            score.right += 1;
        } else if changed {
            score.wrong += 1;
        }
        if hits
            .iter()
            .any(|h| h.path.as_ref().is_some_and(|p| p.flagged))
        {
            score.flagged += 1;
        }
        let ok = match item["action"].as_str().unwrap() {
            "fix" => got == expect,
            _ => !changed,
        };
        if !ok {
            failures.push(format!(
                "{} [{class}] {}\n    got:    {}\n    expect: {}",
                item["id"].as_str().unwrap(),
                item["note"].as_str().unwrap_or(""),
                got,
                expect
            ));
        }
    }
    println!("| class | items | fixed right | rewritten wrong | flagged | recall |");
    println!("|---|---:|---:|---:|---:|---:|");
    let (mut right, mut wrong) = (0, 0);
    for (class, s) in &scores {
        right += s.right;
        wrong += s.wrong;
        println!(
            "| {class} | {} | {} | {} | {} | {:.3} |",
            s.items,
            s.right,
            s.wrong,
            s.flagged,
            s.right as f64 / s.items as f64
        );
    }
    let precision = right as f64 / (right + wrong).max(1) as f64;
    println!("rewrite precision: {precision:.4} ({right} right, {wrong} wrong)");
    for f in &failures {
        println!("{f}");
    }
    let recall = |class: &str| {
        let s = &scores[class];
        s.right as f64 / s.items as f64
    };
    let total: usize = scores.values().map(|s| s.items).sum();
    assert!(total >= 400, "{total} items");
    assert!(precision >= 0.99, "rewrite precision {precision}");
    for class in [
        "correct",
        "outside_root",
        "create_intent",
        "ambiguous",
        "prose",
        "fabricated",
    ] {
        let s = &scores[class];
        assert_eq!(s.right + s.wrong, 0, "{class}: text rewritten");
    }
    for class in ["separator", "miscased", "unicode", "misrooted"] {
        assert!(recall(class) >= 0.95, "{class} recall {}", recall(class));
    }
    assert!(
        recall("misspelled") >= 0.85,
        "misspelled recall {}",
        recall("misspelled")
    );
    let fabricated = &scores["fabricated"];
    let flagged = fabricated.flagged as f64 / fabricated.items as f64;
    assert!(flagged >= 0.90, "fabricated flagged {flagged}");
}

/// Streamed in any split, a text with paths comes out as fixing it whole does: pieces of
/// paths (misspelled, Windows, look-alike, quoted, with line suffixes), create-intent words
/// and no-break spaces at random places, cut at random char boundaries.
mod streaming_equals_whole {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn shared() -> &'static Corpus {
        static CORPUS: OnceLock<Corpus> = OnceLock::new();
        CORPUS.get_or_init(corpus)
    }

    const PIECES: &[&str] = &[
        "crates/core/flags/defs.rs",
        "crates/core/flags/dfes.rs",
        "crates\\core\\main.rs",
        "src/flask/ap.py",
        "src/flask/app.py:12:5",
        "Src/Flask/App.py",
        "flask/app.py",
        "src\u{FF0F}flask/app.py",
        "src/fla\u{200B}sk/cli.py",
        "`tests/conftest.py`",
        "\"README.md\"",
        "[link](docs/index.rst)",
        "./src/flask/json/tag.py",
        "/etc/passwd",
        "new file",
        "create ",
        "(new)",
        " ",
        "\u{00A0}",
        "/",
        ". ",
        ", ",
        "\n",
        "see ",
        "the ",
        "e.g. ",
        "v1.2.3",
        "https://example.com/a.py",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn any_split(
            parts in proptest::collection::vec(0..PIECES.len(), 1..24),
            cuts in proptest::collection::vec(1usize..12, 1..64),
            in_flask in any::<bool>(),
        ) {
            let c = shared();
            let text: String = parts.iter().map(|&i| PIECES[i]).collect();
            let root = &c.roots[if in_flask { "flask" } else { "ripgrep" }];
            let ctx = Context { workspace: Some(root.clone()) };
            let whole = c.compiled.apply_in(&text, &ctx);
            let mut session = c.compiled.session_in(&ctx);
            let chars: Vec<char> = text.chars().collect();
            let mut out = String::new();
            let (mut at, mut k) = (0, 0);
            while at < chars.len() {
                let n = cuts[k % cuts.len()];
                k += 1;
                let end = (at + n).min(chars.len());
                let piece: String = chars[at..end].iter().collect();
                out.push_str(&session.push(&piece));
                at = end;
            }
            out.push_str(&session.finish());
            prop_assert_eq!(out, whole.text);
        }
    }
}
