//! Answers in the client protocols, as the detectors need them: the text, thinking, tool
//! calls and ending of each NDJSON line (Ollama), SSE event (OpenAI) or whole JSON answer
//! (`"stream": false`), and the well-formed ending of an answer a `stop` rule cut short.
//!
//! Only the first choice (`index` 0) of an OpenAI answer is watched.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::detect::tools::{Arguments, Call};
use crate::detect::{Ending, Watch};
use crate::patch::rewrite::{event_end, sse_data, trim_newline};
use crate::rules::Endpoint;

/// Reads one answer's units into a [`Watch`], remembering what a stop ending needs.
#[derive(Debug, Default)]
pub struct Reader {
    /// OpenAI's streamed tool calls, by index: name, id and the argument fragments so far.
    partial_calls: BTreeMap<u64, (String, String)>,
    /// Fields of the last chunk that a synthesized ending repeats (`model`, `id`, …).
    template: Map<String, Value>,
    /// The answer has ended (final line, `finish_reason`, or `[DONE]`).
    pub ended: bool,
}

impl Reader {
    /// One NDJSON line of `/api/generate` or `/api/chat`.
    pub fn ndjson_line(&mut self, endpoint: Endpoint, line: &[u8], watch: &mut Watch) {
        let Ok(Value::Object(chunk)) = serde_json::from_slice::<Value>(trim_newline(line)) else {
            return;
        };
        self.remember(&chunk, &["model"]);
        ollama_answer(endpoint, &chunk, watch);
        if chunk.get("done").and_then(Value::as_bool) == Some(true) {
            self.ended = true;
            watch.end(ending_of(chunk.get("done_reason")));
        }
    }

    /// One SSE event of `/v1/chat/completions` or `/v1/completions`.
    pub fn sse_event(&mut self, endpoint: Endpoint, event: &[u8], watch: &mut Watch) {
        let data = sse_data(event);
        if data.trim() == "[DONE]" {
            if !self.ended {
                self.flush_calls(watch);
                self.ended = true;
                watch.end(Ending::Other);
            }
            return;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        self.remember(
            &chunk,
            &["id", "object", "created", "model", "system_fingerprint"],
        );
        let Some(choice) = first_choice(&chunk) else {
            return;
        };
        if endpoint == Endpoint::OpenaiCompletions {
            if let Some(text) = choice.get("text").and_then(Value::as_str) {
                watch.text(text);
            }
        } else if let Some(delta) = choice.get("delta") {
            for field in ["reasoning_content", "reasoning"] {
                if let Some(text) = delta.get(field).and_then(Value::as_str) {
                    watch.thinking(text);
                }
            }
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                watch.text(text);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    let index = call
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(position as u64);
                    let entry = self.partial_calls.entry(index).or_default();
                    if let Some(function) = call.get("function") {
                        if let Some(name) = function.get("name").and_then(Value::as_str) {
                            entry.0.push_str(name);
                        }
                        if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                            entry.1.push_str(arguments);
                        }
                    }
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.flush_calls(watch);
            self.ended = true;
            watch.end(ending_of(Some(reason)));
        }
    }

    /// The end of the upstream's stream without a final chunk: judged as it stands.
    pub fn cut_off(&mut self, watch: &mut Watch) {
        if !self.ended {
            self.flush_calls(watch);
            self.ended = true;
            watch.end(Ending::Other);
        }
    }

    fn flush_calls(&mut self, watch: &mut Watch) {
        for (_, (name, arguments)) in std::mem::take(&mut self.partial_calls) {
            watch.tool_call(Call {
                name,
                arguments: Arguments::Text(arguments),
            });
        }
    }

    fn remember(&mut self, chunk: &Map<String, Value>, keys: &[&str]) {
        for key in keys {
            if let Some(value) = chunk.get(*key) {
                self.template.insert(key.to_string(), value.clone());
            }
        }
    }

    /// The last bytes of an answer a `stop` rule ended: a final chunk in the client's protocol
    /// (`done_reason`/`finish_reason` `stop`) naming the rule in `rawrxd_stopped`, and, on
    /// SSE, `data: [DONE]`.
    pub fn stop_ending(&self, endpoint: Endpoint, rule_id: &str) -> Vec<u8> {
        let mut chunk = self.template.clone();
        let mut out = Vec::new();
        match endpoint {
            Endpoint::Generate | Endpoint::Chat => {
                chunk
                    .entry("model")
                    .or_insert_with(|| Value::String(String::new()));
                chunk.insert("created_at".into(), Value::String(now_rfc3339()));
                if endpoint == Endpoint::Chat {
                    chunk.insert(
                        "message".into(),
                        serde_json::json!({"role": "assistant", "content": ""}),
                    );
                } else {
                    chunk.insert("response".into(), Value::String(String::new()));
                }
                chunk.insert("done".into(), Value::Bool(true));
                chunk.insert("done_reason".into(), Value::String("stop".into()));
                chunk.insert("rawrxd_stopped".into(), Value::String(rule_id.into()));
                out.extend(serde_json::to_vec(&chunk).unwrap_or_default());
                out.push(b'\n');
            }
            Endpoint::OpenaiChat | Endpoint::OpenaiCompletions => {
                let choice = if endpoint == Endpoint::OpenaiChat {
                    serde_json::json!({"index": 0, "delta": {}, "finish_reason": "stop"})
                } else {
                    serde_json::json!({"index": 0, "text": "", "finish_reason": "stop"})
                };
                chunk.insert("choices".into(), Value::Array(vec![choice]));
                chunk.insert("rawrxd_stopped".into(), Value::String(rule_id.into()));
                out.extend(b"data: ");
                out.extend(serde_json::to_vec(&chunk).unwrap_or_default());
                out.extend(b"\n\ndata: [DONE]\n\n");
            }
        }
        out
    }
}

/// Feeds a whole (`"stream": false`) answer to `watch`.
pub fn whole(endpoint: Endpoint, answer: &Value, watch: &mut Watch) {
    let Some(chunk) = answer.as_object() else {
        return;
    };
    match endpoint {
        Endpoint::Generate | Endpoint::Chat => {
            ollama_answer(endpoint, chunk, watch);
            watch.end(ending_of(chunk.get("done_reason")));
        }
        Endpoint::OpenaiChat | Endpoint::OpenaiCompletions => {
            let Some(choice) = first_choice(chunk) else {
                watch.end(Ending::Other);
                return;
            };
            if endpoint == Endpoint::OpenaiCompletions {
                if let Some(text) = choice.get("text").and_then(Value::as_str) {
                    watch.text(text);
                }
            } else if let Some(message) = choice.get("message") {
                message_answer(message, &["reasoning_content", "reasoning"], watch);
            }
            watch.end(ending_of(choice.get("finish_reason")));
        }
    }
}

/// A whole answer cut at byte `at` of its text by a `stop` rule: the text shortened, the
/// ending `stop`, and `rawrxd_stopped` naming the rule.
pub fn stop_whole(endpoint: Endpoint, answer: &mut Value, at: usize, rule_id: &str) {
    let Some(chunk) = answer.as_object_mut() else {
        return;
    };
    let cut = |text: &mut Value| {
        if let Value::String(s) = text {
            let mut end = at.min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    };
    match endpoint {
        Endpoint::Generate => {
            if let Some(text) = chunk.get_mut("response") {
                cut(text);
            }
            chunk.insert("done_reason".into(), Value::String("stop".into()));
        }
        Endpoint::Chat => {
            if let Some(text) = chunk.get_mut("message").and_then(|m| m.get_mut("content")) {
                cut(text);
            }
            chunk.insert("done_reason".into(), Value::String("stop".into()));
        }
        Endpoint::OpenaiChat | Endpoint::OpenaiCompletions => {
            if let Some(choice) = chunk
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .and_then(|c| c.first_mut())
            {
                let text = if endpoint == Endpoint::OpenaiChat {
                    choice.get_mut("message").and_then(|m| m.get_mut("content"))
                } else {
                    choice.get_mut("text")
                };
                if let Some(text) = text {
                    cut(text);
                }
                if let Some(choice) = choice.as_object_mut() {
                    choice.insert("finish_reason".into(), Value::String("stop".into()));
                }
            }
        }
    }
    chunk.insert("rawrxd_stopped".into(), Value::String(rule_id.into()));
}

fn ollama_answer(endpoint: Endpoint, chunk: &Map<String, Value>, watch: &mut Watch) {
    if endpoint == Endpoint::Generate {
        if let Some(text) = chunk.get("thinking").and_then(Value::as_str) {
            watch.thinking(text);
        }
        if let Some(text) = chunk.get("response").and_then(Value::as_str) {
            watch.text(text);
        }
        return;
    }
    if let Some(message) = chunk.get("message") {
        message_answer(message, &["thinking"], watch);
    }
}

/// A chat message (Ollama's `message`, OpenAI's `choices[0].message`): its thinking (under
/// `thinking_fields`), text and whole tool calls (arguments as an object or a JSON string).
fn message_answer(message: &Value, thinking_fields: &[&str], watch: &mut Watch) {
    for field in thinking_fields {
        if let Some(text) = message.get(*field).and_then(Value::as_str) {
            watch.thinking(text);
        }
    }
    if let Some(text) = message.get("content").and_then(Value::as_str) {
        watch.text(text);
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function").unwrap_or(call);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        let arguments = match function.get("arguments") {
            Some(Value::String(text)) => Arguments::Text(text.clone()),
            Some(other) => Arguments::Value(other.clone()),
            None => Arguments::Value(Value::Object(Map::new())),
        };
        watch.tool_call(Call {
            name: name.to_string(),
            arguments,
        });
    }
}

fn first_choice(chunk: &Map<String, Value>) -> Option<&Value> {
    chunk
        .get("choices")?
        .as_array()?
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}

fn ending_of(reason: Option<&Value>) -> Ending {
    match reason.and_then(Value::as_str) {
        Some("length") => Ending::Length,
        _ => Ending::Other,
    }
}

/// Now as RFC 3339 with nanoseconds, UTC (Ollama's `created_at`).
fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// The longest line or event read as one unit.
pub const MAX_UNIT: usize = 1 << 20;

/// Splits a byte stream into NDJSON lines or SSE events, keeping an unfinished one.
#[derive(Debug, Default)]
pub struct Units {
    buffer: Vec<u8>,
    sse: bool,
}

impl Units {
    pub fn new(sse: bool) -> Self {
        Units {
            buffer: Vec::new(),
            sse,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole unit (with its terminator), if one is complete — or, past
    /// [`MAX_UNIT`] bytes without an end, what there is (it will not parse, and goes out as
    /// it came: an upstream that never ends its line must not grow the proxy's memory).
    pub fn next_unit(&mut self) -> Option<Vec<u8>> {
        let end = if self.sse {
            event_end(&self.buffer)
        } else {
            self.buffer.iter().position(|&b| b == b'\n').map(|i| i + 1)
        };
        let end = match end {
            Some(end) => end,
            None if self.buffer.len() > MAX_UNIT => self.buffer.len(),
            None => return None,
        };
        Some(self.buffer.drain(..end).collect())
    }

    /// What is left when the stream ends (an unfinished unit).
    pub fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }
}
