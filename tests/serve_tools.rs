//! Issue 18: tool calling on `rawrxd serve` with the real model. The Gemma test file has no
//! chat template, so the tests write a copy with Qwen 2.5's tool-capable Jinja template in its
//! metadata (with the project's own GGUF writer, `rawrxd::gguf::edit::set`). Checked here:
//! `/api/show` capabilities; the prompt for a conversation with tools, a call and a result is
//! the one Python's jinja2 renders (the answer and prompt length equal those of that prompt sent
//! raw); a forced call (OpenAI `tool_choice`, and rawrxd's `tool_choice` on Ollama's API) is a
//! valid call on both APIs, streamed and whole; a tool-less model keeps ignoring tools.
//! The official clients (ollama, openai, langchain-ollama), directly and through the proxy, are
//! in `tests/clients/test_tools.py`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};
use support::{post_json, serve_models_in_process};

const PLAIN: &str = "gemma-3-270m-q4_k_m";
const TOOLS: &str = "gemma-qwen-tools";

/// The Qwen 2.5 template the test model carries.
fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/templates/Qwen-Qwen2.5-7B-Instruct.jinja")
}

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let model =
            support::model_with_template(TOOLS, &std::fs::read_to_string(template_path()).unwrap());
        serve_models_in_process(
            2,
            2048,
            vec![
                support::model_path().display().to_string(),
                model.display().to_string(),
            ],
        )
    })
}

/// Two tools: `get_weather` (a city from a list, a unit) and `read_file` (a short path), shared
/// with `tests/clients/test_tools.py`.
fn tools() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tools/weather_and_files.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks a call's arguments against the tool's schema.
fn assert_valid(name: &str, arguments: &Value) {
    let tools = tools();
    let tool = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == name)
        .unwrap_or_else(|| panic!("unknown tool {name}"));
    let schema = &tool["function"]["parameters"];
    let validator = jsonschema::validator_for(schema).unwrap();
    assert!(
        validator.is_valid(arguments),
        "{name} arguments {arguments} do not match {schema}"
    );
}

#[test]
fn show_reports_the_tools_capability_only_for_a_tool_template() {
    let (status, plain) = post_json(server(), "/api/show", &json!({"model": PLAIN}));
    assert_eq!(status, 200);
    assert_eq!(plain["capabilities"], json!(["completion"]));
    let (status, tools) = post_json(server(), "/api/show", &json!({"model": TOOLS}));
    assert_eq!(status, 200);
    assert_eq!(tools["capabilities"], json!(["completion", "tools"]));
}

/// The prompt jinja2 renders for `messages` and `tools` with the test model's template.
fn reference_prompt(messages: &Value, tools: &Value) -> String {
    let python = std::env::var_os("RAWRXD_VENV")
        .map(|v| PathBuf::from(v).join("bin/python3"))
        .filter(|p| p.is_file())
        .or_else(|| {
            let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
            local.is_file().then_some(local)
        })
        .unwrap_or_else(|| PathBuf::from("python3"));
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/render_templates.py");
    let input = json!({"cases": [{
        "template": template_path(),
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "messages": messages,
        "tools": tools,
        "add_generation_prompt": true,
    }]});
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh makes .venv)", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "render_templates.py failed");
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    results[0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("python refused: {results}"))
        .to_string()
}

#[test]
fn a_conversation_with_tools_a_call_and_a_result_is_prompted_as_jinja2_renders_it() {
    let messages = json!([
        {"role": "system", "content": "You help with the weather."},
        {"role": "user", "content": "Is it warm in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
        ]},
        {"role": "tool", "content": "{\"temperature\": 24}", "tool_name": "get_weather"},
        {"role": "user", "content": "And should I take a coat?"}
    ]);
    let options = json!({"temperature": 0, "num_predict": 12});
    let (status, chat) = post_json(
        server(),
        "/api/chat",
        &json!({"model": TOOLS, "messages": messages, "tools": tools(), "stream": false, "options": options}),
    );
    assert_eq!(status, 200, "{chat}");
    // The template sees OpenAI-shaped messages (tool calls with a type, results by name).
    let reference_messages = json!([
        {"role": "system", "content": "You help with the weather."},
        {"role": "user", "content": "Is it warm in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
        ]},
        {"role": "tool", "content": "{\"temperature\": 24}", "name": "get_weather"},
        {"role": "user", "content": "And should I take a coat?"}
    ]);
    let prompt = reference_prompt(&reference_messages, &tools());
    assert!(
        prompt.contains("<tools>") && prompt.contains("<tool_response>"),
        "{prompt}"
    );
    let (status, raw) = post_json(
        server(),
        "/api/generate",
        &json!({"model": TOOLS, "prompt": prompt, "raw": true, "stream": false, "options": options}),
    );
    assert_eq!(status, 200, "{raw}");
    assert_eq!(chat["prompt_eval_count"], raw["prompt_eval_count"]);
    // The text the model writes is the same either way (as text, or as a call it made).
    let as_text = raw["response"].as_str().unwrap();
    let chat_text = chat["message"]["content"].as_str().unwrap();
    assert!(
        as_text.starts_with(chat_text.trim_end()) || chat["message"]["tool_calls"].is_array(),
        "chat {chat} vs raw {raw}"
    );

    // The same conversation in OpenAI's shape gives the same prompt.
    let openai_messages = json!([
        {"role": "system", "content": "You help with the weather."},
        {"role": "user", "content": "Is it warm in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temperature\": 24}"},
        {"role": "user", "content": "And should I take a coat?"}
    ]);
    let (status, oa) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"model": TOOLS, "messages": openai_messages, "tools": tools(), "temperature": 0, "max_tokens": 12}),
    );
    assert_eq!(status, 200, "{oa}");
    assert_eq!(oa["usage"]["prompt_tokens"], raw["prompt_eval_count"]);
}

#[test]
fn a_forced_call_is_a_valid_call_on_both_apis_streamed_and_whole() {
    let ask = "What is the weather in Tokyo?";
    // OpenAI, whole, `required`.
    let (status, body) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"model": TOOLS, "messages": [{"role": "user", "content": ask}], "tools": tools(),
                "tool_choice": "required", "max_tokens": 80, "seed": 1}),
    );
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let name = call["function"]["name"].as_str().unwrap();
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_valid(name, &arguments);

    // OpenAI, streamed, a named function.
    let sse = support::post_text(
        server(),
        "/v1/chat/completions",
        &json!({"model": TOOLS, "messages": [{"role": "user", "content": "Show me src/main.rs"}],
                "tools": tools(), "tool_choice": {"type": "function", "function": {"name": "read_file"}},
                "max_tokens": 80, "stream": true, "seed": 2}),
    );
    let events: Vec<Value> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 1, "{sse}");
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["function"]["name"], "read_file");
    let arguments: Value =
        serde_json::from_str(deltas[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_valid("read_file", &arguments);
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls",
        "{sse}"
    );

    // Ollama, streamed, with rawrxd's `tool_choice` in the options: one chunk with the call,
    // its arguments an object.
    let ndjson = support::post_text(
        server(),
        "/api/chat",
        &json!({"model": TOOLS, "messages": [{"role": "user", "content": ask}], "tools": tools(),
                "options": {"tool_choice": "required", "num_predict": 80, "seed": 3}}),
    );
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let calls: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l["message"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{ndjson}");
    let name = calls[0]["function"]["name"].as_str().unwrap();
    assert!(calls[0]["function"]["arguments"].is_object());
    assert_valid(name, &calls[0]["function"]["arguments"]);
    assert_eq!(lines.last().unwrap()["done"], true);
    // The call's text is not streamed as content.
    let content: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap_or(""))
        .collect();
    assert!(!content.contains("<tool_call>"), "{ndjson}");
}

#[test]
fn tool_choice_errors_are_400() {
    for (choice, needle) in [
        (json!("sometimes"), "invalid tool_choice"),
        (
            json!({"type": "function", "function": {"name": "nope"}}),
            "nope",
        ),
    ] {
        let (status, body) = post_json(
            server(),
            "/v1/chat/completions",
            &json!({"model": TOOLS, "messages": [{"role": "user", "content": "hi"}],
                    "tools": tools(), "tool_choice": choice}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(needle), "{body}");
    }
    // A forced call cannot also be held to a response format.
    let (status, body) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"model": TOOLS, "messages": [{"role": "user", "content": "hi"}], "tools": tools(),
                "tool_choice": "required", "response_format": {"type": "json_object"}}),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_model_without_tool_support_ignores_tools_as_before() {
    let (status, body) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"model": PLAIN, "messages": [{"role": "user", "content": "hi"}], "tools": tools(),
                "tool_choice": "required", "max_tokens": 4}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"]["tool_calls"].is_null());
    assert_ne!(body["choices"][0]["finish_reason"], "tool_calls");
}

/// A conversation that shows the model, turn after turn, a sentence and then a call: the base
/// model copies the pattern (greedy), so its answer is free text with a call block in it.
fn few_shot(turns: usize, content: &str, calls: bool) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You check the weather."})];
    for city in ["Paris", "London", "Tokyo", "Paris", "London", "Tokyo"]
        .iter()
        .take(turns)
    {
        messages.push(json!({"role": "user", "content": format!("Weather in {city}?")}));
        let mut reply = json!({"role": "assistant", "content": content.replace("CITY", city)});
        if calls {
            reply["tool_calls"] =
                json!([{"function": {"name": "get_weather", "arguments": {"city": city}}}]);
        }
        messages.push(reply);
        if calls {
            messages.push(json!({"role": "tool", "content": "{\"temperature\": 20}", "tool_name": "get_weather"}));
        }
    }
    messages.push(json!({"role": "user", "content": "Weather in Paris?"}));
    Value::Array(messages)
}

#[test]
fn a_free_form_answer_with_a_call_block_streams_its_text_and_its_call() {
    let body = json!({"model": TOOLS, "messages": few_shot(6, "Let me check CITY.", true), "tools": tools(),
                      "options": {"temperature": 0, "num_predict": 60}});
    let ndjson = support::post_text(server(), "/api/chat", &body);
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first_call = lines
        .iter()
        .position(|l| l["message"]["tool_calls"].is_array())
        .unwrap_or_else(|| panic!("no call in {ndjson}"));
    let before: String = lines[..first_call]
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert!(before.contains("Let me check"), "{ndjson}");
    assert!(
        first_call > 1,
        "the text streamed in pieces before the call: {ndjson}"
    );
    let call = &lines[first_call]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather");
    assert_valid("get_weather", &call["arguments"]);
    let all: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap_or(""))
        .collect();
    assert!(
        !all.contains("<tool_call>"),
        "the call's text is not content: {ndjson}"
    );

    // The same answer whole, and through the OpenAI endpoint.
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let (_, answer) = post_json(server(), "/api/chat", &whole);
    assert!(answer["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Let me check"));
    assert_eq!(answer["message"]["tool_calls"][0]["function"], *call);
}

#[test]
fn a_malformed_call_from_the_model_comes_back_as_text() {
    // The history shows calls cut off in the middle of their JSON; the model copies one.
    let broken = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"CITY</tool_call>";
    let body = json!({"model": TOOLS, "messages": few_shot(6, broken, false), "tools": tools(),
                      "stream": false, "options": {"temperature": 0, "num_predict": 60}});
    let (status, answer) = post_json(server(), "/api/chat", &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer["message"]["tool_calls"].is_null(), "{answer}");
    let content = answer["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("<tool_call>"),
        "returned as the text it was: {answer}"
    );
    let (status, oa) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"model": TOOLS, "messages": few_shot(6, broken, false), "tools": tools(),
                "temperature": 0, "max_tokens": 60}),
    );
    assert_eq!(status, 200, "{oa}");
    assert!(oa["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("<tool_call>"));
    assert!(oa["choices"][0]["message"]["tool_calls"].is_null());
    assert_ne!(oa["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn official_clients_get_valid_calls_directly_and_through_the_proxy() {
    let template = std::fs::read_to_string(template_path()).unwrap();
    let model = support::model_with_template("qwen-tools-up", &template);
    let dir = support::tempdir("tools-up");
    let (_up, proxy, serve) =
        support::spawn_up_serving(&dir, "", &format!("tools:1b={}", model.display()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/test_tools.py");
    let output = Command::new("python3")
        .arg(script)
        .args(["--serve", &format!("http://{serve}")])
        .args(["--proxy", &format!("http://{proxy}")])
        .args(["--model", "tools:1b"])
        .output()
        .expect("python3 runs (scripts/test.sh puts its venv first on PATH)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && report.contains("tool clients: 10 passed, 0 failed"),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
