//! Real models' chat templates (`tests/fixtures/templates/`) rendered by `serve::tools::Jinja`
//! and by Python `jinja2` set up as Hugging Face transformers' `apply_chat_template`
//! (`tests/clients/render_templates.py`) over conversations with tools, tool calls and tool
//! results: the bytes must be the same, and a conversation a template refuses must be refused
//! by both. Needs python3 with `jinja2` (`tests/clients/requirements.txt`, which
//! scripts/test.sh installs into `.venv/`); it fails, never skips, without it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rawrxd::serve::tools::{CallFormat, Jinja};
use serde_json::{json, Value};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/templates");
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/render_templates.py"
);

/// (file, BOS text, EOS text, the format the template teaches)
const TEMPLATES: &[(&str, &str, &str, CallFormat)] = &[
    (
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        "",
        "<|im_end|>",
        CallFormat::Hermes,
    ),
    (
        "Qwen-Qwen3-0.6B.jinja",
        "",
        "<|im_end|>",
        CallFormat::Hermes,
    ),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        "<|begin_of_text|>",
        "<|im_end|>",
        CallFormat::Hermes,
    ),
    (
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
        CallFormat::Llama3,
    ),
    (
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
        CallFormat::Llama3,
    ),
    (
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "<s>",
        "</s>",
        CallFormat::Mistral,
    ),
];

/// The python3 of the project's `.venv` (scripts/test.sh), else the one on PATH.
fn python() -> PathBuf {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let p = PathBuf::from(venv).join("bin/python3");
        if p.is_file() {
            return p;
        }
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    if local.is_file() {
        return local;
    }
    PathBuf::from("python3")
}

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"}},
            "required": ["city"]}}}),
        json!({"type": "function", "function": {
            "name": "search",
            "description": "Search the web — «quoted» \"text\".",
            "parameters": {"type": "object", "properties": {
                "q": {"type": "string", "description": "Query"},
                "limit": {"type": "integer", "description": "Most results", "minimum": 1},
                "exact": {"type": "boolean", "description": "Exact match"},
                "ratio": {"type": "number", "description": "Threshold"}},
            "required": ["q"]}}}),
    ]
}

fn call(id: &str, name: &str, arguments: Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// (what it is, messages, with tools, add_generation_prompt)
fn conversations() -> Vec<(&'static str, Vec<Value>, bool, bool)> {
    let system = json!({"role": "system", "content": "You are a helpful assistant."});
    let user = json!({"role": "user", "content": "Hi there — ¿qué tal? Say \"hi\".\n"});
    let ask = json!({"role": "user", "content": "What's the weather in Paris?"});
    // Content "" here, null in the two-call turn (Qwen 3's template refuses null).
    let one_call = json!({"role": "assistant", "content": "", "tool_calls": [
        call("abc123def", "get_weather", json!({"city": "Paris", "unit": "celsius"}))]});
    let result = json!({"role": "tool", "tool_call_id": "abc123def", "name": "get_weather",
        "content": "{\"temperature\": 21.5, \"sky\": \"clear\"}"});
    let two_calls = json!({"role": "assistant", "content": null, "tool_calls": [
        call("abc123def", "get_weather", json!({"city": "Paris"})),
        call("xyz789uvw", "search", json!({"q": "Rome \"news\" é", "limit": 3, "exact": true,
            "ratio": 0.5, "nested": {"a": [1, 2.0, null]}}))]});
    let second = json!({"role": "tool", "tool_call_id": "xyz789uvw", "name": "search",
        "content": "No results."});
    vec![
        (
            "system and user",
            vec![system.clone(), user.clone()],
            false,
            true,
        ),
        (
            "system and user, no generation prompt",
            vec![system.clone(), user],
            false,
            false,
        ),
        ("user with tools", vec![ask.clone()], true, true),
        (
            "a call, its result and the next user turn",
            vec![
                system.clone(),
                ask.clone(),
                one_call,
                result.clone(),
                json!({"role": "assistant", "content": "It is 21.5 °C and clear."}),
                json!({"role": "user", "content": "And tomorrow?"}),
            ],
            true,
            true,
        ),
        (
            "two calls in one turn",
            vec![system, ask, two_calls, result, second],
            true,
            true,
        ),
    ]
}

#[test]
fn real_templates_render_as_transformers_does() {
    let tools = tools();
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (file, bos, eos, format) in TEMPLATES {
        let path = format!("{DIR}/{file}");
        let source = std::fs::read_to_string(&path).unwrap();
        let jinja = Jinja::new(&source, bos, eos).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(jinja.supports_tools(), "{file}");
        assert_eq!(jinja.call_format().as_ref(), Some(format), "{file}");
        for (what, messages, with_tools, generation) in conversations() {
            let t = with_tools.then_some(tools.as_slice());
            ours.push((file, what, jinja.render(&messages, t, generation)));
            cases.push(json!({"template": path, "bos_token": bos, "eos_token": eos,
                "messages": messages, "tools": with_tools.then_some(&tools),
                "add_generation_prompt": generation}));
        }
    }

    let python = python();
    let mut child = Command::new(&python)
        .arg(SCRIPT)
        // transformers' strftime_now is local time; ours is UTC.
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} not runnable ({e}): install Python 3 and \
                 `pip install -r tests/clients/requirements.txt` (scripts/test.sh does)",
                python.display()
            )
        });
    let input = json!({ "cases": cases }).to_string();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{} {SCRIPT} failed (is jinja2 installed? `pip install -r tests/clients/requirements.txt`):\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(theirs.len(), ours.len());

    let mut failures = Vec::new();
    let mut refused = Vec::new();
    for ((file, what, ours), theirs) in ours.iter().zip(&theirs) {
        let error = theirs.get("error").and_then(Value::as_str);
        if let Some(error) = error {
            refused.push(format!("{file} / {what}"));
            // minijinja iterates `none` as an empty list, where jinja2 raises; a template
            // that loops over `tools` without checking them renders here with none.
            if error == "TypeError: 'NoneType' object is not iterable" && ours.is_ok() {
                continue;
            }
        }
        match (ours, theirs.get("text").and_then(Value::as_str)) {
            (Ok(a), Some(b)) if a == b => {}
            (Ok(a), Some(b)) => {
                let at = a
                    .char_indices()
                    .zip(b.chars())
                    .find(|((_, x), y)| x != y)
                    .map_or(a.len().min(b.len()), |((i, _), _)| i);
                let from = a.floor_char_boundary_compat(at.saturating_sub(80));
                failures.push(format!(
                    "{file} / {what}: differs at byte {at}\n  ours:   {:?}\n  python: {:?}",
                    a.get(from..(at + 80).min(a.len())).unwrap_or(a),
                    b.get(from..(at + 80).min(b.len())).unwrap_or(b),
                ));
            }
            (Err(_), None) => {}
            (Ok(a), None) => failures.push(format!(
                "{file} / {what}: python refused ({}), we rendered {a:?}",
                theirs["error"]
            )),
            (Err(e), Some(_)) => failures.push(format!(
                "{file} / {what}: we refused ({e}), python rendered"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every other conversation renders: Llama 3.1/3.2 take one call a turn, Hermes 2 Pro's
    // tool_use template needs tools, Qwen 3's wants content to be a string.
    assert_eq!(
        refused,
        [
            "Qwen-Qwen3-0.6B.jinja / two calls in one turn",
            "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja / system and user",
            "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja / system and user, no generation prompt",
            "meta-llama-Llama-3.1-8B-Instruct.jinja / two calls in one turn",
            "meta-llama-Llama-3.2-3B-Instruct.jinja / two calls in one turn",
        ]
    );
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, at: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, at: usize) -> usize {
        (0..=at.min(self.len()))
            .rev()
            .find(|&i| self.is_char_boundary(i))
            .unwrap_or(0)
    }
}
