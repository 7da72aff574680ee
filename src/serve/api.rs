//! Ollama's native endpoints (`ollama/ollama` `docs/api.md`): health, version, tags, show,
//! ps, and generate/chat streamed as NDJSON (`stream` defaults to true) or answered whole.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::calls::{normalize_calls, ollama_call, Calls, Choice, Issued, Out};
use super::engine::{answer_room, Done, EngineError, Event, Job};
use super::fit::fit_messages;
use super::http::{full, json, read_json, stream, EventBody, Format, ServeBody, ServeError};
use super::models::{Loaded, ModelError, ModelFile};
use super::options::{self, Options};
use super::template::{self, Message};
use super::tools::{forced_grammar, Jinja};
use super::ServeState;
use crate::gguf::GgufMeta;

/// The Ollama API version reported by `/api/version` (clients gate features on it).
pub const OLLAMA_VERSION: &str = "0.12.0";

pub const NDJSON: &str = "application/x-ndjson";

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One NDJSON line.
pub fn line(value: &Value) -> Bytes {
    let mut out = value.to_string().into_bytes();
    out.push(b'\n');
    Bytes::from(out)
}

impl From<ModelError> for ServeError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NotFound(_) => ServeError::NotFound(e.to_string()),
            ModelError::Engine(EngineError::Busy { .. }) | ModelError::AllBusy { .. } => {
                ServeError::Busy(e.to_string())
            }
            ModelError::Engine(_) | ModelError::Meta(_) => ServeError::Internal(e.to_string()),
        }
    }
}

pub fn health(state: &ServeState) -> Response<ServeBody> {
    if state.models.is_loading() || state.preloading.load(std::sync::atomic::Ordering::Acquire) {
        full(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json; charset=utf-8",
            Bytes::from(json!({"status": "loading model"}).to_string()),
        )
    } else {
        json(&json!({"status": "ok"}))
    }
}

pub fn version() -> Response<ServeBody> {
    json(&json!({ "version": OLLAMA_VERSION }))
}

pub fn details(meta: &GgufMeta) -> Value {
    let arch = meta.architecture();
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": meta.str("general.size_label").unwrap_or(""),
        "quantization_level": meta.quantization(),
    })
}

pub async fn tags(state: &ServeState) -> Result<Response<ServeBody>, ServeError> {
    let mut models = Vec::new();
    // The cached list; headers come from the cache the refresher fills.
    for file in state.models.catalog().models.values() {
        let details = match state.models.meta(file).await {
            Ok(meta) => details(&meta),
            Err(e) => {
                tracing::debug!("skipping {}: {e}", file.path.display());
                continue;
            }
        };
        models.push(json!({
            "name": file.tagged(),
            "model": file.tagged(),
            "modified_at": rfc3339(file.modified),
            "size": file.size,
            "digest": file.digest(),
            "details": details,
        }));
    }
    Ok(json(&json!({ "models": models })))
}

pub fn ps(state: &ServeState) -> Response<ServeBody> {
    let far = SystemTime::now() + Duration::from_secs(100 * 365 * 86400);
    let models: Vec<Value> = state
        .models
        .loaded()
        .iter()
        .map(|l| {
            json!({
                "name": l.file.tagged(),
                "model": l.file.tagged(),
                "size": l.file.size,
                "digest": l.file.digest(),
                "details": details(&l.meta),
                "expires_at": rfc3339(l.expires_at().unwrap_or(far)),
                "size_vram": 0,
                "context_length": l.engine.config().ctx_per_slot,
                // rawrxd's own counters (Ollama clients ignore unknown fields).
                "rawrxd": engine_stats(l),
            })
        })
        .collect();
    json(&json!({ "models": models }))
}

fn engine_stats(l: &Loaded) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = l.engine.stats();
    json!({
        "parallel": l.engine.config().parallel,
        "in_flight": l.engine.in_flight(),
        "steps": stats.steps.load(Relaxed),
        "max_sequences_per_step": stats.max_sequences_per_step.load(Relaxed),
        "prompt_tokens_reused": stats.prompt_tokens_reused.load(Relaxed),
        "prompt_tokens_evaluated": stats.prompt_tokens_evaluated.load(Relaxed),
        "embed_inputs": stats.embed_inputs.load(Relaxed),
        "embeds_cancelled": stats.embeds_cancelled.load(Relaxed),
        "context_shifts": stats.context_shifts.load(Relaxed),
        "prompts_truncated": stats.prompts_truncated.load(Relaxed),
    })
}

#[derive(Debug, Deserialize, Default)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

/// The model name of a request (`model`, or the older `name`); missing → 400.
pub(super) fn model_name(
    model: Option<String>,
    name: Option<String>,
) -> Result<String, ServeError> {
    model
        .filter(|m| !m.is_empty())
        .or(name.filter(|m| !m.is_empty()))
        .ok_or_else(|| ServeError::BadRequest("model is required".into()))
}

pub async fn show(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: ShowRequest = read_json(request, state.max_body).await?;
    let name = model_name(body.model, body.name)?;
    let file = state.models.find(&name)?;
    let meta = state.models.meta(&file).await?;
    let manifest = file.manifest.clone().unwrap_or_default();
    let template = match (&manifest.template, meta.str("tokenizer.chat_template")) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.to_string(),
        (None, None) => {
            template::describe_builtin(template::fallback_for(meta.architecture())).into()
        }
    };
    let mut info = Map::new();
    for (key, value) in &meta.kv {
        if key != "tokenizer.chat_template" {
            info.insert(key.clone(), value.clone());
        }
    }
    let ctx = state.models.engine_config().ctx_per_slot;
    let mut parameters = Vec::new();
    if !manifest.parameters.contains_key("num_ctx") {
        parameters.push(("num_ctx".to_string(), ctx.to_string()));
    }
    for (key, value) in &manifest.parameters {
        let values = match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            let text = match value {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            parameters.push((key.clone(), text));
        }
    }
    let mut modelfile = format!(
        "# Modelfile generated by rawrxd serve\nFROM {}\n",
        file.path.display()
    );
    if let Some(t) = &manifest.template {
        modelfile.push_str(&format!("TEMPLATE \"\"\"{t}\"\"\"\n"));
    }
    if let Some(system) = &manifest.system {
        modelfile.push_str(&format!("SYSTEM \"\"\"{system}\"\"\"\n"));
    }
    for (key, value) in &parameters {
        modelfile.push_str(&format!("PARAMETER {key} {value}\n"));
    }
    let parameters: Vec<String> = parameters
        .iter()
        .map(|(k, v)| format!("{k:<30} {v}"))
        .collect();
    let license = manifest
        .license
        .as_deref()
        .or(meta.str("general.license"))
        .unwrap_or("");
    let mut out = json!({
        "license": license,
        "modelfile": modelfile,
        "parameters": parameters.join("\n"),
        "template": template,
        "details": details(&meta),
        "model_info": info,
        "capabilities": capabilities(&meta, manifest.template.is_some()),
        "modified_at": rfc3339(file.modified),
    });
    if let Some(system) = &manifest.system {
        out["system"] = json!(system);
    }
    // Weight patches applied live (`/rawrxd/models/{name}/patch`), oldest first.
    let patches = state.models.patch_sets(&name);
    if !patches.is_empty() {
        out["rawrxd_patches"] = json!(patches);
    }
    Ok(json(&out))
}

/// Ollama's `capabilities`: `completion` for generative models, `embedding` for those with a
/// pooling type (every model here can embed, but Ollama lists it for embedding models), `tools`
/// when the GGUF's own Jinja template renders tools (not for a created model's Go template).
fn capabilities(meta: &GgufMeta, own_template: bool) -> Vec<&'static str> {
    let arch = meta.architecture();
    let mut out = Vec::new();
    let causal = meta
        .kv
        .get(&format!("{arch}.attention.causal"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if causal {
        out.push("completion");
    }
    if !causal || meta.kv.contains_key(&format!("{arch}.pooling_type")) {
        out.push("embedding");
    }
    let tools = !own_template
        && meta
            .str("tokenizer.chat_template")
            .and_then(|source| Jinja::new(source, "", "").ok())
            .is_some_and(|j| j.supports_tools());
    if tools && causal {
        out.push("tools");
    }
    out
}

#[derive(Debug, Deserialize, Default)]
struct GenerateRequest {
    model: Option<String>,
    name: Option<String>,
    prompt: Option<String>,
    system: Option<String>,
    template: Option<String>,
    context: Option<Vec<i32>>,
    stream: Option<bool>,
    raw: Option<bool>,
    format: Option<Value>,
    images: Option<Vec<Value>>,
    options: Option<Options>,
    keep_alive: Option<Value>,
    suffix: Option<String>,
    think: Option<Value>,
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    /// An assistant message's calls (`[{"function": {"name", "arguments": {…}}}]`).
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// A tool result's tool name.
    #[serde(default)]
    pub tool_name: Option<String>,
}

impl ChatMessage {
    fn into_message(self) -> Result<Message, ServeError> {
        let tool_calls = normalize_calls(self.tool_calls).map_err(ServeError::BadRequest)?;
        Ok(Message {
            role: self.role,
            content: self.content.unwrap_or_default(),
            tool_calls,
            tool_call_id: None,
            name: self.tool_name,
        })
    }
}

#[derive(Debug, Deserialize, Default)]
struct ChatRequest {
    model: Option<String>,
    name: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Options>,
    keep_alive: Option<Value>,
    tools: Option<Vec<Value>>,
    /// rawrxd's extension: OpenAI's `tool_choice` (also read from `options`).
    tool_choice: Option<Value>,
    think: Option<Value>,
}

/// `think: true` (or a level) asks for a reasoning model; these models are not.
fn check_think(name: &str, think: Option<&Value>) -> Result<(), ServeError> {
    match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(_) => Err(ServeError::BadRequest(format!(
            "\"{name}\" does not support thinking"
        ))),
    }
}

/// What to generate from, before the model (its template and system prompt) is known.
pub(super) enum PromptSpec {
    /// Final prompt text (raw).
    Text(String),
    /// A generate prompt with the request's own template; `system` `None` takes the
    /// model's.
    Template {
        template: String,
        system: Option<String>,
        prompt: String,
    },
    /// Chat messages for the model's template; the model's system prompt goes first when
    /// they have none.
    Chat(Vec<Message>),
}

/// A request's generation settings, before the model's parameters fill in what it leaves
/// out.
pub(super) struct Ask {
    pub options: Options,
    pub format: Option<Value>,
    pub context: Vec<i32>,
    /// A prompt longer than the context keeps its tail (generate); chat drops old messages.
    pub keep_tail: bool,
    /// The request's tools (chat), as sent.
    pub tools: Vec<Value>,
    pub choice: Choice,
}

/// A request admitted by the engine, with its first event already received.
pub(super) struct Started {
    pub loaded: Arc<Loaded>,
    pub load_duration: Duration,
    pub started: Instant,
    pub keep_alive: Option<Duration>,
    pub first: Event,
    pub rx: UnboundedReceiver<Event>,
    /// Set when the answer is read for tool calls.
    pub calls: Option<Calls>,
}

/// Common checks: the model exists, no images (text-only models).
pub(super) fn check_model(
    state: &ServeState,
    name: &str,
    has_images: bool,
) -> Result<ModelFile, ServeError> {
    let file = state.models.find(name)?;
    if has_images {
        return Err(ServeError::BadRequest(format!(
            "model \"{name}\" does not support image input: this server runs text-only models"
        )));
    }
    Ok(file)
}

/// Loads the model `file` (as [`check_model`] found it), renders the prompt with the model's
/// defaults, queues the job and waits for its first event.
pub(super) async fn start(
    state: &ServeState,
    file: &ModelFile,
    keep_alive: Option<Duration>,
    prompt: PromptSpec,
    ask: Ask,
) -> Result<Started, ServeError> {
    let started = Instant::now();
    let manifest = file.manifest.clone().unwrap_or_default();
    let defaults = Options::from_parameters(&manifest.parameters).map_err(ServeError::Internal)?;
    let mut job = job(&ask.options.or(&defaults), ask.format.as_ref(), ask.context)?;
    let (loaded, load_duration) = state.models.load_file(file, keep_alive).await?;
    let model_system = manifest.system.clone().unwrap_or_default();
    let ctx_per_slot = loaded.engine.config().ctx_per_slot;
    job.context_shift = can_shift(&loaded.meta);
    job.keep_tail = ask.keep_tail;
    let mut calls = None;
    job.prompt = match prompt {
        PromptSpec::Text(text) => text,
        PromptSpec::Template {
            template,
            system,
            prompt,
        } => template::substitute(
            &template,
            system.as_deref().unwrap_or(&model_system),
            &prompt,
            None,
        ),
        PromptSpec::Chat(mut messages) => {
            if !model_system.is_empty() && !messages.iter().any(|m| m.role == "system") {
                messages.insert(0, Message::new("system", model_system));
            }
            let tooling = Tooling::decide(&loaded, &manifest, &ask.tools, &ask.choice, &messages)?;
            if let Some(forced) = &tooling.forced {
                if job.grammar.is_some() {
                    return Err(ServeError::BadRequest(
                        "a forced tool_choice cannot be combined with format/response_format"
                            .into(),
                    ));
                }
                job.grammar = Some(forced.clone());
            }
            job.special_text = tooling
                .calls
                .as_ref()
                .is_some_and(Calls::marks_with_control_tokens);
            calls = tooling.calls;
            let limit = job.num_ctx.map_or(ctx_per_slot, |n| n.min(ctx_per_slot)) as usize;
            let room = answer_room(limit, job.num_predict);
            let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
            let model = &loaded.engine.model;
            let render = |kept: &[usize]| {
                if let Some(jinja) = &tooling.jinja {
                    let values: Vec<Value> = kept.iter().map(|&i| messages[i].to_value()).collect();
                    let tools = tooling.show_tools.then_some(ask.tools.as_slice());
                    return jinja.render(&values, tools, true);
                }
                let subset: Vec<Message> = kept.iter().map(|&i| messages[i].clone()).collect();
                match &manifest.template {
                    Some(t) => Ok(template::render_turns(t, &subset)),
                    None => template::render(model, loaded.meta.architecture(), &subset),
                }
            };
            let count = |prompt: &str| {
                let vocab = model.vocab();
                vocab
                    .tokenize(prompt.as_bytes(), vocab.should_add_bos(), true)
                    .len()
            };
            if job.keep_tail {
                // Generate keeps its prompt's tail instead (the engine cuts it).
                let all: Vec<usize> = (0..messages.len()).collect();
                render(&all).map_err(ServeError::BadRequest)?
            } else {
                let fitted = fit_messages(&roles, limit, room, render, count)
                    .map_err(ServeError::BadRequest)?;
                if fitted.dropped > 0 {
                    tracing::info!(
                        model = %file.name,
                        dropped = fitted.dropped,
                        kept = fitted.kept.len(),
                        prompt_tokens = fitted.tokens,
                        num_ctx = limit,
                        "conversation longer than the context: dropped its oldest messages"
                    );
                }
                fitted.prompt
            }
        }
    };
    let mut rx = loaded.engine.submit(job).map_err(|e| match e {
        EngineError::Busy { .. } => ServeError::Busy(e.to_string()),
        other => ServeError::Internal(other.to_string()),
    })?;
    let first = rx
        .recv()
        .await
        .ok_or_else(|| ServeError::Internal("the model was unloaded".into()))?;
    if let Event::Rejected(message) = first {
        return Err(ServeError::BadRequest(message));
    }
    Ok(Started {
        loaded,
        load_duration,
        started,
        keep_alive,
        first,
        rx,
        calls,
    })
}

/// A created model's `tool_choice` parameter.
fn manifest_choice(file: &ModelFile) -> Option<&Value> {
    file.manifest
        .as_ref()
        .and_then(|m| m.parameters.get("tool_choice"))
}

/// How a chat request's tools are handled on its model.
struct Tooling {
    /// Render with the model's Jinja template (the request has tools, or messages with tool
    /// calls or results, and the template knows tools).
    jinja: Option<Arc<Jinja>>,
    /// Show the request's tools to the model (not with `tool_choice: "none"`).
    show_tools: bool,
    /// Read the answer for calls.
    calls: Option<Calls>,
    /// The grammar of a forced call.
    forced: Option<String>,
}

impl Tooling {
    fn decide(
        loaded: &Loaded,
        manifest: &super::registry::Manifest,
        tools: &[Value],
        choice: &Choice,
        messages: &[Message],
    ) -> Result<Tooling, ServeError> {
        let none = Tooling {
            jinja: None,
            show_tools: false,
            calls: None,
            forced: None,
        };
        let has_tools = !tools.is_empty();
        if !has_tools && !messages.iter().any(Message::needs_tools) {
            return Ok(none);
        }
        // A created model's own (Go) template, or a file whose template knows no tools:
        // tools are ignored, as Ollama's clients expect of a model without the capability.
        let jinja = match (&manifest.template, &loaded.jinja) {
            (None, Some(j)) if j.supports_tools() => j.clone(),
            _ => {
                if has_tools {
                    tracing::warn!(
                        model = %loaded.file.name,
                        tools = tools.len(),
                        "tools ignored: the model's chat template has no tool support; answering as a plain chat"
                    );
                }
                return Ok(none);
            }
        };
        let names: Vec<String> = super::tools::parse_tools(tools)
            .map_err(ServeError::BadRequest)?
            .into_iter()
            .map(|d| d.name)
            .collect();
        let show_tools = has_tools && *choice != Choice::None;
        let format = jinja.call_format();
        let calls = match (&format, show_tools) {
            (Some(f), true) => Some(Calls::new(f.clone(), names)),
            _ => None,
        };
        let forced = match (choice, &format) {
            (Choice::Forced(forced), Some(f)) if show_tools => Some(
                forced_grammar(tools, forced, f).map_err(ServeError::BadRequest)?,
            ),
            (Choice::Forced(_), None) if show_tools => {
                return Err(ServeError::BadRequest(format!(
                    "model \"{}\" has tools in its template, but not in a tool-call format rawrxd can force",
                    loaded.file.name
                )))
            }
            _ => None,
        };
        Ok(Tooling {
            jinja: Some(jinja),
            show_tools,
            calls,
            forced,
        })
    }
}

/// Whether a model's KV cache can move positions (a context shift): not with multi-section
/// RoPE (Qwen2-VL-style `rope.dimension_sections`), where llama.cpp cannot shift.
fn can_shift(meta: &GgufMeta) -> bool {
    let key = format!("{}.rope.dimension_sections", meta.architecture());
    !meta.kv.contains_key(&key)
}

/// The engine job for Ollama `options` and `format`.
fn job(options: &Options, format: Option<&Value>, context: Vec<i32>) -> Result<Job, ServeError> {
    Ok(Job {
        num_keep: options.num_keep(),
        keep_tail: true,
        context_shift: true,
        special_text: false,
        prompt: String::new(),
        context,
        sampling: options.sampling(),
        stop: options.stops(),
        num_predict: options.num_predict(),
        num_ctx: options
            .num_ctx
            .filter(|n| *n > 0)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        grammar: options::grammar(format).map_err(ServeError::BadRequest)?,
    })
}

/// The counters of Ollama's final chunk.
fn counters(out: &mut Map<String, Value>, done: &Done, s: &Started, with_context: bool) {
    out.insert("done".into(), json!(true));
    out.insert("done_reason".into(), json!(done.reason.as_str()));
    if with_context {
        out.insert("context".into(), json!(done.context));
    }
    out.insert("total_duration".into(), json!(nanos(s.started.elapsed())));
    out.insert("load_duration".into(), json!(nanos(s.load_duration)));
    out.insert("prompt_eval_count".into(), json!(done.prompt_eval_count));
    out.insert(
        "prompt_eval_duration".into(),
        json!(nanos(done.prompt_eval_duration)),
    );
    out.insert("eval_count".into(), json!(done.eval_count));
    out.insert("eval_duration".into(), json!(nanos(done.eval_duration)));
}

/// Generate or chat, as one NDJSON stream or one JSON object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Generate,
    Chat,
}

fn chunk(kind: Kind, model: &str, text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("created_at".into(), json!(now_rfc3339()));
    match kind {
        Kind::Generate => {
            out.insert("response".into(), json!(text));
        }
        Kind::Chat => {
            out.insert(
                "message".into(),
                json!({"role": "assistant", "content": text}),
            );
        }
    }
    out
}

async fn respond(
    kind: Kind,
    model: String,
    streamed: bool,
    mut s: Started,
) -> Result<Response<ServeBody>, ServeError> {
    if streamed {
        let first = std::mem::replace(&mut s.first, Event::Text(String::new()));
        let rx = std::mem::replace(&mut s.rx, tokio::sync::mpsc::unbounded_channel().1);
        let mut calls = s.calls.take();
        let format: Format = Box::new(move |event| {
            let mut out = Vec::new();
            let mut emit = |outs: Vec<Out>| {
                for piece in outs {
                    let c = match piece {
                        Out::Text(text) => chunk(kind, &model, &text),
                        Out::Call(issued) => {
                            let mut c = chunk(kind, &model, "");
                            c["message"]["tool_calls"] = json!([ollama_call(&issued)]);
                            c
                        }
                    };
                    let mut c = c;
                    c.insert("done".into(), json!(false));
                    out.extend_from_slice(&line(&Value::Object(c)));
                }
            };
            match event {
                Event::Text(text) => emit(split(&mut calls, &text)),
                Event::Done(done) => {
                    emit(finish_calls(&mut calls));
                    s.loaded.touch(s.keep_alive);
                    let mut c = chunk(kind, &model, "");
                    counters(&mut c, &done, &s, kind == Kind::Generate);
                    out.extend_from_slice(&line(&Value::Object(c)));
                }
                Event::Error(e) | Event::Rejected(e) => {
                    out.extend_from_slice(&line(&json!({ "error": e })));
                }
            }
            Bytes::from(out)
        });
        return Ok(stream(NDJSON, EventBody::new(first, rx, format)));
    }
    let (text, issued, done) = collect(&mut s).await?;
    s.loaded.touch(s.keep_alive);
    let mut c = chunk(kind, &model, &text);
    if !issued.is_empty() {
        c["message"]["tool_calls"] = issued.iter().map(ollama_call).collect();
    }
    counters(&mut c, &done, &s, kind == Kind::Generate);
    Ok(json(&Value::Object(c)))
}

/// Generated text through the answer's call reader, if it has one.
pub(super) fn split(calls: &mut Option<Calls>, text: &str) -> Vec<Out> {
    match calls {
        Some(calls) => calls.push(text),
        None if text.is_empty() => Vec::new(),
        None => vec![Out::Text(text.to_string())],
    }
}

/// What the call reader still holds at the end of the answer.
pub(super) fn finish_calls(calls: &mut Option<Calls>) -> Vec<Out> {
    calls.as_mut().map(Calls::finish).unwrap_or_default()
}

/// A whole answer (`stream: false`): its text, the calls it made, its counters.
pub(super) async fn collect(s: &mut Started) -> Result<(String, Vec<Issued>, Done), ServeError> {
    let mut text = String::new();
    let mut issued = Vec::new();
    let mut calls = s.calls.take();
    let mut event = Some(std::mem::replace(&mut s.first, Event::Text(String::new())));
    loop {
        let current = match event.take() {
            Some(e) => e,
            None => {
                s.rx.recv()
                    .await
                    .unwrap_or_else(|| Event::Error("the generation ended unexpectedly".into()))
            }
        };
        let outs = match current {
            Event::Text(t) => split(&mut calls, &t),
            Event::Done(done) => {
                for out in finish_calls(&mut calls) {
                    match out {
                        Out::Text(t) => text.push_str(&t),
                        Out::Call(c) => issued.push(c),
                    }
                }
                return Ok((text, issued, done));
            }
            Event::Error(e) => return Err(ServeError::Internal(e)),
            Event::Rejected(e) => return Err(ServeError::BadRequest(e)),
        };
        for out in outs {
            match out {
                Out::Text(t) => text.push_str(&t),
                Out::Call(c) => issued.push(c),
            }
        }
    }
}

/// A request with no prompt/messages only loads (or, with `keep_alive: 0`, unloads) the model.
async fn load_only(
    state: &ServeState,
    kind: Kind,
    model: &str,
    keep_alive: Option<Duration>,
) -> Result<Response<ServeBody>, ServeError> {
    let reason = if keep_alive == Some(Duration::ZERO) {
        state.models.find(model)?;
        state.models.unload(model);
        "unload"
    } else {
        state.models.load(model, keep_alive).await?;
        "load"
    };
    let mut c = chunk(kind, model, "");
    c.insert("done_reason".into(), json!(reason));
    c.insert("done".into(), json!(true));
    Ok(json(&Value::Object(c)))
}

pub async fn generate(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: GenerateRequest = read_json(request, state.max_body).await?;
    let name = model_name(body.model, body.name)?;
    let file = check_model(
        state,
        &name,
        body.images.as_ref().is_some_and(|i| !i.is_empty()),
    )?;
    check_think(&name, body.think.as_ref())?;
    if body.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ServeError::BadRequest(format!(
            "\"{name}\" does not support insert"
        )));
    }
    let keep_alive =
        options::keep_alive(body.keep_alive.as_ref()).map_err(ServeError::BadRequest)?;
    let prompt = body.prompt.unwrap_or_default();
    let context = body.context.unwrap_or_default();
    if prompt.is_empty() && context.is_empty() {
        return load_only(state, Kind::Generate, &name, keep_alive).await;
    }
    let ask = Ask {
        options: body.options.unwrap_or_default(),
        format: body.format,
        context,
        keep_tail: true,
        tools: Vec::new(),
        choice: Choice::Auto,
    };
    let system = body.system.filter(|s| !s.is_empty());
    let spec = if body.raw.unwrap_or(false) {
        PromptSpec::Text(prompt)
    } else if let Some(template) = body.template.filter(|t| !t.is_empty()) {
        template::check(&template).map_err(ServeError::BadRequest)?;
        PromptSpec::Template {
            template,
            system,
            prompt,
        }
    } else {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", prompt));
        PromptSpec::Chat(messages)
    };
    let started = start(state, &file, keep_alive, spec, ask).await?;
    respond(Kind::Generate, name, body.stream.unwrap_or(true), started).await
}

pub async fn chat(
    state: &ServeState,
    request: Request<Incoming>,
) -> Result<Response<ServeBody>, ServeError> {
    let body: ChatRequest = read_json(request, state.max_body).await?;
    let name = model_name(body.model, body.name)?;
    let messages = body.messages.unwrap_or_default();
    let images = messages
        .iter()
        .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()));
    let file = check_model(state, &name, images)?;
    check_think(&name, body.think.as_ref())?;
    let keep_alive =
        options::keep_alive(body.keep_alive.as_ref()).map_err(ServeError::BadRequest)?;
    if messages.is_empty() {
        return load_only(state, Kind::Chat, &name, keep_alive).await;
    }
    let options = body.options.unwrap_or_default();
    let choice = body
        .tool_choice
        .as_ref()
        .or(options.tool_choice.as_ref())
        .or(manifest_choice(&file));
    let choice = Choice::parse(choice).map_err(ServeError::BadRequest)?;
    let ask = Ask {
        options,
        format: body.format,
        context: Vec::new(),
        keep_tail: false,
        tools: body.tools.unwrap_or_default(),
        choice,
    };
    let messages = messages
        .into_iter()
        .map(ChatMessage::into_message)
        .collect::<Result<Vec<_>, _>>()?;
    let started = start(state, &file, keep_alive, PromptSpec::Chat(messages), ask).await?;
    respond(Kind::Chat, name, body.stream.unwrap_or(true), started).await
}

/// `input` of `/api/embed` and `/v1/embeddings`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Input {
    One(String),
    Many(Vec<String>),
}

impl Input {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            Input::One(s) => vec![s],
            Input::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
struct EmbedRequest {
    model: Option<String>,
    name: Option<String>,
    input: Option<Input>,
    /// `/api/embeddings` (legacy): one prompt.
    prompt: Option<String>,
    truncate: Option<bool>,
    keep_alive: Option<Value>,
}

/// Loads the model and embeds `inputs`; returns the vectors, prompt tokens and load time.
pub(super) async fn embed_inputs(
    state: &ServeState,
    name: &str,
    keep_alive: Option<Duration>,
    job: super::engine::EmbedJob,
) -> Result<(super::engine::Embeddings, Duration), ServeError> {
    state.models.find(name)?;
    let (loaded, load_duration) = state.models.load(name, keep_alive).await?;
    // Admitted under the same cap as generation (503 beyond); dropping this future (the
    // client left) stops the work before its next input.
    let result = loaded
        .engine
        .embed(job)
        .await
        .map_err(|e| match e {
            EngineError::Busy { .. } => ServeError::Busy(e.to_string()),
            other => ServeError::Internal(other.to_string()),
        })?
        .map_err(ServeError::BadRequest)?;
    loaded.touch(keep_alive);
    Ok((result, load_duration))
}

/// `POST /api/embed` (normalized vectors, `input` string or list) and the legacy
/// `POST /api/embeddings` (`prompt`, one raw vector).
pub async fn embed(
    state: &ServeState,
    request: Request<Incoming>,
    legacy: bool,
) -> Result<Response<ServeBody>, ServeError> {
    let started = Instant::now();
    let body: EmbedRequest = read_json(request, state.max_body).await?;
    let name = model_name(body.model, body.name)?;
    state.models.find(&name)?;
    let keep_alive =
        options::keep_alive(body.keep_alive.as_ref()).map_err(ServeError::BadRequest)?;
    let inputs = if legacy {
        vec![body.prompt.unwrap_or_default()]
    } else {
        body.input.map(Input::into_vec).unwrap_or_default()
    };
    if inputs.is_empty() || (legacy && inputs[0].is_empty()) {
        // Ollama: no input only loads the model.
        state.models.load(&name, keep_alive).await?;
        return Ok(json(&if legacy {
            json!({ "embedding": [] })
        } else {
            json!({ "model": name, "embeddings": [] })
        }));
    }
    let job = super::engine::EmbedJob {
        inputs,
        truncate: body.truncate.unwrap_or(true),
        normalize: !legacy,
    };
    let (result, load_duration) = embed_inputs(state, &name, keep_alive, job).await?;
    if legacy {
        let vector = result.vectors.into_iter().next().unwrap_or_default();
        return Ok(json(&json!({ "embedding": vector })));
    }
    Ok(json(&json!({
        "model": name,
        "embeddings": result.vectors,
        "total_duration": nanos(started.elapsed()),
        "load_duration": nanos(load_duration),
        "prompt_eval_count": result.prompt_tokens,
    })))
}
