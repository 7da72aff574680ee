//! Any text through a `path` rule over a small workspace: streamed in pieces of any size it
//! comes out as fixing it whole does, never panics; the same text as an OpenAI tool call's
//! arguments and as an Ollama one is fixed or left, never a panic or broken JSON.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rawrxd::patch::rewrite::rewrite_json;
use rawrxd::patch::{Compiled, Pipeline};
use rawrxd::rules::{parse_file, Endpoint};

const FILES: &[&str] = &[
    "src/main.rs",
    "src/lib.rs",
    "src/commands/mod.rs",
    "src/commands/search.rs",
    "crates/printer/src/json.rs",
    "crates/cli/src/json.rs",
    "docs/config.yml",
    ".github/workflows/ci.yml",
    "README.md",
    "LICENSE-MIT",
    "src/flask/app.py",
];

fn compiled() -> Arc<Compiled> {
    static COMPILED: OnceLock<Arc<Compiled>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let root: PathBuf =
                std::env::temp_dir().join(format!("rawrxd-fuzz-paths-{}", std::process::id()));
            for file in FILES {
                let path = root.join(file);
                std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
                std::fs::write(path, "").expect("write");
            }
            let rules = format!(
                "[[rule]]\nid = \"p\"\nkind = \"path\"\nroots = [{:?}]\n",
                root.display().to_string()
            );
            let rules = parse_file(Path::new("fuzz.toml"), &rules).expect("valid rules");
            Pipeline::new(rules)
                .expect("compiles")
                .select("m", None)
                .expect("rules apply")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let compiled = compiled();
    let whole = compiled.apply(text);
    let step = 1 + (seed as usize % 9);
    let mut session = compiled.session();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    for piece in chars.chunks(step) {
        out.push_str(&session.push(&piece.iter().collect::<String>()));
    }
    out.push_str(&session.finish());
    assert_eq!(out, whole.text, "streamed output differs from the whole");

    for (endpoint, arguments) in [
        (Endpoint::OpenaiChat, serde_json::Value::String(text.to_string())),
        (
            Endpoint::Chat,
            serde_json::json!({"path": text, "command": text, "paths": [text]}),
        ),
    ] {
        let call = serde_json::json!({"function": {"name": "read_file", "arguments": arguments}});
        let body = match endpoint {
            Endpoint::Chat => serde_json::json!({"message": {"role": "assistant", "content": "",
                "tool_calls": [call]}, "done": true}),
            _ => serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant",
                "content": null, "tool_calls": [call]}}]}),
        };
        let bytes = serde_json::to_vec(&body).expect("serializes");
        if let Some((patched, _)) = rewrite_json(&compiled, endpoint, &bytes) {
            serde_json::from_slice::<serde_json::Value>(&patched).expect("still JSON");
        }
    }
});
