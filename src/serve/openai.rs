//! OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/completions` (whole JSON, or SSE
//! `data: {…}` events ending with `data: [DONE]` when `stream` is true; usage in a last chunk
//! with `stream_options.include_usage`) and `/v1/models`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{check_model, collect, finish_calls, split, start, Ask, PromptSpec, Started};
use super::calls::{normalize_calls, openai_call, Choice, Out};
use super::engine::{Done, Event};
use super::http::{json, read_json, stream, EventBody, Format, ServeBody, ServeError};
use super::options::{Options, StopList};
use super::template::Message;
use super::ServeState;

pub const SSE: &str = "text/event-stream";

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn next_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

pub async fn models(state: &ServeState) -> Result<Response<ServeBody>, ServeError> {
    let data: Vec<Value> = state
        .models
        .catalog()
        .models
        .values()
        .map(|f| {
            json!({
                "id": f.tagged(),
                "object": "model",
                "created": unix(f.modified),
                "owned_by": "library",
            })
        })
        .collect();
    Ok(json(&json!({ "object": "list", "data": data })))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OaiMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize, Default)]
struct Common {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<StopList>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    messages: Vec<OaiMessage>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    prompt: Option<Value>,
}

impl Common {
    /// Ollama's mapping of OpenAI parameters (temperature and top_p default to 1).
    fn options(&self) -> Options {
        Options {
            temperature: Some(self.temperature.unwrap_or(1.0)),
            top_p: Some(self.top_p.unwrap_or(1.0)),
            seed: self.seed,
            num_predict: self.max_completion_tokens.or(self.max_tokens),
            stop: self.stop.clone(),
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            ..Options::default()
        }
    }

    /// `response_format` → Ollama's `format`.
    fn format(&self) -> Result<Option<Value>, ServeError> {
        let Some(rf) = &self.response_format else {
            return Ok(None);
        };
        match rf.get("type").and_then(Value::as_str) {
            None | Some("text") => Ok(None),
            Some("json_object") => Ok(Some(json!("json"))),
            Some("json_schema") => Ok(rf
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .or(Some(json!("json")))),
            Some(other) => Err(ServeError::BadRequest(format!(
                "invalid response_format type {other:?}"
            ))),
        }
    }

    fn model(&self) -> Result<String, ServeError> {
        self.model
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ServeError::BadRequest("model is required".into()))
    }
}

fn usage(done: &Done) -> Value {
    json!({
        "prompt_tokens": done.prompt_eval_count,
        "completion_tokens": done.eval_count,
        "total_tokens": done.prompt_eval_count + done.eval_count,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

pub async fn chat(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: ChatRequest = read_json(request, state.max_body).await?;
    let name = body.common.model()?;
    let mut images = false;
    let mut messages = Vec::new();
    for m in body.messages {
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    if part.kind == "text" {
                        text.push_str(part.text.as_deref().unwrap_or(""));
                    } else {
                        images = true;
                    }
                }
                text
            }
        };
        let tool_calls = normalize_calls(m.tool_calls).map_err(ServeError::BadRequest)?;
        messages.push(Message {
            role: m.role,
            content,
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
        });
    }
    let file = check_model(state, &name, images)?;
    if messages.is_empty() {
        return Err(ServeError::BadRequest("messages is required".into()));
    }
    let ask = Ask {
        options: body.common.options(),
        format: body.common.format()?,
        context: Vec::new(),
        keep_tail: false,
        tools: body.tools.unwrap_or_default(),
        choice: Choice::parse(body.tool_choice.as_ref()).map_err(ServeError::BadRequest)?,
    };
    let started = start(
        state,
        &file,
        Some(super::options::DEFAULT_KEEP_ALIVE),
        PromptSpec::Chat(messages),
        ask,
    )
    .await?;
    respond(Kind::Chat, name, &body.common, started).await
}

pub async fn completions(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: CompletionRequest = read_json(request, state.max_body).await?;
    let name = body.common.model()?;
    let file = check_model(state, &name, false)?;
    let prompt = match body.prompt {
        Some(Value::String(s)) => s,
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or("").to_string()
        }
        None => String::new(),
        Some(_) => {
            return Err(ServeError::BadRequest(
                "prompt must be a string (or a list of one string)".into(),
            ))
        }
    };
    if prompt.is_empty() {
        return Err(ServeError::BadRequest("prompt is required".into()));
    }
    let ask = Ask {
        options: body.common.options(),
        format: body.common.format()?,
        context: Vec::new(),
        keep_tail: true,
        tools: Vec::new(),
        choice: Choice::Auto,
    };
    let started = start(
        state,
        &file,
        Some(super::options::DEFAULT_KEEP_ALIVE),
        PromptSpec::Text(prompt),
        ask,
    )
    .await?;
    respond(Kind::Completion, name, &body.common, started).await
}

fn choice(kind: Kind, text: &str, finish: Option<&str>, streamed: bool) -> Value {
    match (kind, streamed) {
        (Kind::Chat, true) => json!({
            "index": 0,
            "delta": if finish.is_some() { json!({}) } else { json!({"role": "assistant", "content": text}) },
            "finish_reason": finish,
        }),
        (Kind::Chat, false) => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }),
        (Kind::Completion, _) => json!({
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish,
        }),
    }
}

/// OpenAI's finish reason: `tool_calls` when the answer made calls.
fn finish_reason(done: &Done, calls_made: bool) -> &'static str {
    if calls_made {
        "tool_calls"
    } else {
        done.reason.as_str()
    }
}

async fn respond(
    kind: Kind,
    model: String,
    common: &Common,
    mut s: Started,
) -> Result<Response<ServeBody>, ServeError> {
    let id = next_id(match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    });
    let created = unix(SystemTime::now());
    let object = match (kind, common.stream.unwrap_or(false)) {
        (Kind::Chat, true) => "chat.completion.chunk",
        (Kind::Chat, false) => "chat.completion",
        (Kind::Completion, _) => "text_completion",
    };
    let envelope = move |choices: Value| {
        json!({
            "id": id,
            "object": object,
            "created": created,
            "model": model,
            "system_fingerprint": "fp_rawrxd",
            "choices": choices,
        })
    };
    if common.stream.unwrap_or(false) {
        let include_usage = common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let first = std::mem::replace(&mut s.first, Event::Text(String::new()));
        let rx = std::mem::replace(&mut s.rx, tokio::sync::mpsc::unbounded_channel().1);
        let keep = (s.loaded.clone(), s.keep_alive);
        let mut calls = s.calls.take();
        let mut made = false;
        let format: Format = Box::new(move |ev| {
            let mut out = Vec::new();
            let mut emit = |outs: Vec<Out>, made: &mut bool| {
                for piece in outs {
                    let choices = match piece {
                        Out::Text(text) => json!([choice(kind, &text, None, true)]),
                        Out::Call(issued) => {
                            *made = true;
                            json!([{
                                "index": 0,
                                "delta": {"role": "assistant", "content": null,
                                          "tool_calls": [openai_call(&issued, true)]},
                                "finish_reason": null,
                            }])
                        }
                    };
                    out.extend_from_slice(&event(&envelope(choices)));
                }
            };
            match ev {
                Event::Text(text) => emit(split(&mut calls, &text), &mut made),
                Event::Done(done) => {
                    emit(finish_calls(&mut calls), &mut made);
                    keep.0.touch(keep.1);
                    let reason = finish_reason(&done, made);
                    out.extend_from_slice(&event(&envelope(json!([choice(
                        kind,
                        "",
                        Some(reason),
                        true
                    )]))));
                    if include_usage {
                        let mut last = envelope(json!([]));
                        last["usage"] = usage(&done);
                        out.extend_from_slice(&event(&last));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                }
                Event::Error(e) | Event::Rejected(e) => out.extend_from_slice(&event(&json!({
                    "error": {"message": e, "type": "server_error", "code": null}
                }))),
            }
            Bytes::from(out)
        });
        return Ok(stream(SSE, EventBody::new(first, rx, format)));
    }
    let (text, issued, done) = collect(&mut s).await?;
    s.loaded.touch(s.keep_alive);
    let reason = finish_reason(&done, !issued.is_empty());
    let mut answer = choice(kind, &text, Some(reason), false);
    if !issued.is_empty() {
        answer["message"]["tool_calls"] = issued.iter().map(|c| openai_call(c, false)).collect();
        if text.is_empty() {
            answer["message"]["content"] = Value::Null;
        }
    }
    let mut out = envelope(json!([answer]));
    out["usage"] = usage(&done);
    Ok(json(&out))
}

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    model: Option<String>,
    input: Option<super::api::Input>,
}

/// `POST /v1/embeddings`: normalized vectors, one per input.
pub async fn embeddings(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: EmbeddingsRequest = read_json(request, state.max_body).await?;
    let name = body
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ServeError::BadRequest("model is required".into()))?;
    let inputs = body
        .input
        .map(super::api::Input::into_vec)
        .unwrap_or_default();
    if inputs.is_empty() {
        return Err(ServeError::BadRequest("input is required".into()));
    }
    let job = super::engine::EmbedJob {
        inputs,
        truncate: true,
        normalize: true,
    };
    let (result, _) =
        super::api::embed_inputs(state, &name, Some(super::options::DEFAULT_KEEP_ALIVE), job)
            .await?;
    let data: Vec<Value> = result
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "embedding": embedding, "index": index}))
        .collect();
    Ok(json(&json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    })))
}
