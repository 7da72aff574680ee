//! Request-side behavior patches: `alias`, `system_prompt`, `param` and `stop` rules, applied
//! to the JSON body of `/api/generate`, `/api/chat`, `/v1/chat/completions` and
//! `/v1/completions` before it is forwarded.
//!
//! Order: aliases first (the first enabled `alias` rule whose `from` glob matches the model
//! rewrites `model`); every other rule then selects by the model the upstream will actually
//! see, and they run in file order (rule files by name, rules as written; API rules after file
//! rules). The body is re-serialized with its key order kept (serde_json's `preserve_order`)
//! only when an enforced rule changed something; otherwise the original bytes go on, and a
//! request no request-side rule applies to is not even parsed.
//!
//! Where each kind writes, per API:
//!
//! | kind | Ollama (`generate`, `chat`) | OpenAI (`chat/completions`, `completions`) |
//! |---|---|---|
//! | `system_prompt` | chat: first `system` message (inserted at the front when none); generate: `system` | chat: first `system`/`developer` message (inserted when none); completions: a prefix of `prompt`, only with `position = "prepend"` |
//! | `param` | `options.<name>`; `keep_alive`, `think` top-level | `temperature`, `top_p`, `seed`, `presence_penalty`, `frequency_penalty`; `num_predict` → `max_completion_tokens` when the request uses it, else `max_tokens`; other names are skipped |
//! | `stop` | `options.stop` | `stop` (a string becomes a list) |
//! | `alias` | `model` | `model` |
//!
//! `system_prompt` is idempotent: a request that already carries the text anywhere in its
//! system messages (agents resend the whole history every turn) is left alone. `param` ops:
//! `set` overwrites, `default` fills a missing value, `max`/`min` clamp a present value and
//! write the bound when the value is missing (the server's own default is unknown, so the bound
//! is the only value known to keep the rule; a negative `num_predict`, "no limit", is above any
//! `max`), `remove` deletes.
//!
//! A body that is not a JSON object, or holds an unexpected type where a rule writes
//! (`options` not an object, a string temperature…), is forwarded untouched — the upstream
//! gives its own error — and the skip is counted ([`Outcome::Skipped`]), never a proxy error.
//! Shadow rules report what they would change and leave the body as it is.
//!
//! May use: `rules`, `patch` (the `Hit` and counter types). Used by `live`, `proxy`, `app`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::patch::{Hit, RuleTable};
use crate::rules::{model_matches, Action, Endpoint, Kind, Mode, ParamOp, Position, Rule};

/// System prompt text longer than this is shortened in audit lines.
const SHOWN_CHARS: usize = 80;

/// The request-side rules of one live snapshot.
#[derive(Debug, Default)]
pub struct RequestPatches {
    table: Arc<RuleTable>,
    /// Indexes into `table.rules` of enabled `alias` rules, in order.
    aliases: Vec<usize>,
    /// Indexes of the other enabled request-side rules, in order.
    others: Vec<usize>,
}

/// What [`RequestPatches::apply`] decided.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// No request-side rule applies: forward the original bytes (the body was not parsed).
    NotApplicable,
    /// Rules applied. `body` is the new body when an enforced rule changed it.
    Patched(Patched),
    /// Rules apply, but the body cannot be patched; forward the original bytes.
    Skipped { reason: String },
}

#[derive(Debug, PartialEq)]
pub struct Patched {
    /// The body to forward instead of the original, when an enforced rule changed it.
    pub body: Option<Vec<u8>>,
    /// The model the upstream will see (after aliases).
    pub model: String,
    /// One per rule that changed (or, in shadow mode, would have changed) the request.
    pub hits: Vec<Hit>,
}

/// Why a body could not be patched.
type Skip = String;

/// One rule's effect: `None` when it changed nothing, else what it saw and what it wrote.
type Effect = Option<(String, String)>;

pub fn is_request_side(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::SystemPrompt | Kind::Param | Kind::Stop | Kind::Alias
    )
}

impl RequestPatches {
    /// The request-side rules of `table` (the live pipeline's table, so hits count in the
    /// same per-rule counters).
    pub fn new(table: Arc<RuleTable>) -> Self {
        let mut aliases = Vec::new();
        let mut others = Vec::new();
        for (index, rule) in table.rules.iter().enumerate() {
            if !rule.enabled || !is_request_side(rule.kind()) {
                continue;
            }
            match rule.kind() {
                Kind::Alias => aliases.push(index),
                _ => others.push(index),
            }
        }
        RequestPatches {
            table,
            aliases,
            others,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.others.is_empty()
    }

    /// Patches one request body for `endpoint`; `model` is the request's `model` field.
    pub fn apply(&self, endpoint: Endpoint, model: &str, body: &[u8]) -> Outcome {
        let rules = &self.table.rules;
        let alias = self.aliases.iter().copied().find(|&i| {
            let rule = &rules[i];
            rule.applies_to(model, Some(endpoint))
                && matches!(&rule.action, Action::Alias { from, .. } if model_matches(from, model))
        });
        // A shadow alias only reports: the upstream still sees the client's model.
        let target = match alias.map(|i| &rules[i]) {
            Some(Rule {
                action: Action::Alias { to, .. },
                mode: Mode::Enforce,
                ..
            }) => to.as_str(),
            _ => model,
        };
        let selected: Vec<usize> = alias
            .into_iter()
            .chain(
                self.others
                    .iter()
                    .copied()
                    .filter(|&i| rules[i].applies_to(target, Some(endpoint))),
            )
            .collect();
        if selected.is_empty() {
            return Outcome::NotApplicable;
        }
        let mut value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(e) => {
                return Outcome::Skipped {
                    reason: format!("the body is not JSON: {e}"),
                }
            }
        };
        let Some(object) = value.as_object_mut() else {
            return Outcome::Skipped {
                reason: "the body is not a JSON object".into(),
            };
        };
        let mut hits = Vec::new();
        let mut changed = false;
        for &index in &selected {
            let rule = &rules[index];
            let shadow = rule.mode == Mode::Shadow;
            let effect = if shadow {
                apply_rule(rule, endpoint, &mut object.clone())
            } else {
                apply_rule(rule, endpoint, object)
            };
            match effect {
                Err(reason) => {
                    return Outcome::Skipped {
                        reason: format!("rule {:?}: {reason}", rule.id),
                    }
                }
                Ok(None) => {}
                Ok(Some((detected, corrected))) => {
                    changed |= !shadow;
                    hits.push((
                        index,
                        Hit {
                            rule_id: rule.id.clone(),
                            kind: rule.kind(),
                            detected,
                            corrected,
                            shadow,
                        },
                    ));
                }
            }
        }
        let body = match changed {
            true => {
                // Sized once for the original plus what rules usually add, so writing is one
                // allocation (a growing Vec would allocate up to twice the body).
                let mut out = Vec::with_capacity(body.len() + body.len() / 8 + 1024);
                match serde_json::to_writer(&mut out, &value) {
                    Ok(()) => Some(out),
                    Err(e) => {
                        return Outcome::Skipped {
                            reason: format!("cannot write the patched body: {e}"),
                        }
                    }
                }
            }
            false => None,
        };
        // Counted only once the outcome stands (a skip changes no counter but its own).
        let hits = hits
            .into_iter()
            .map(|(index, hit)| {
                if let Some(counters) = self.table.counters.get(index) {
                    counters.hits.fetch_add(1, Ordering::Relaxed);
                    match hit.shadow {
                        true => counters.shadowed.fetch_add(1, Ordering::Relaxed),
                        false => counters.applied.fetch_add(1, Ordering::Relaxed),
                    };
                }
                hit
            })
            .collect();
        Outcome::Patched(Patched {
            body,
            model: target.to_string(),
            hits,
        })
    }
}

fn apply_rule(
    rule: &Rule,
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
) -> Result<Effect, Skip> {
    match &rule.action {
        Action::Alias { to, .. } => {
            let before = body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if before == to {
                return Ok(None);
            }
            let before = format!("model={before}");
            body.insert("model".into(), Value::String(to.clone()));
            Ok(Some((before, format!("model={to}"))))
        }
        Action::SystemPrompt { text, position } => system_prompt(endpoint, body, text, *position),
        Action::Param { name, value, op } => param(endpoint, body, name, value, *op),
        Action::Stop { sequences } => stop(endpoint, body, sequences),
        _ => Ok(None),
    }
}

fn is_openai(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::OpenaiChat | Endpoint::OpenaiCompletions)
}

/// `text` shortened for an audit line.
fn shown(text: &str) -> String {
    match text.chars().count() > SHOWN_CHARS {
        true => text.chars().take(SHOWN_CHARS).chain(['…']).collect(),
        false => text.to_string(),
    }
}

/// `existing` with `text` put where `position` says.
fn positioned(existing: &str, text: &str, position: Position) -> String {
    match position {
        Position::Replace => text.to_string(),
        _ if existing.is_empty() => text.to_string(),
        Position::Prepend => format!("{text}\n\n{existing}"),
        Position::Append => format!("{existing}\n\n{text}"),
    }
}

fn system_prompt(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    text: &str,
    position: Position,
) -> Result<Effect, Skip> {
    match endpoint {
        Endpoint::Generate => {
            let existing = match body.get("system") {
                None | Some(Value::Null) => "",
                Some(Value::String(s)) => s.as_str(),
                Some(other) => return Err(format!("`system` is {}, not a string", type_of(other))),
            };
            if already_there(existing, text, position) {
                return Ok(None);
            }
            let new = positioned(existing, text, position);
            let before = format!("system={}", shown(existing));
            body.insert("system".into(), Value::String(new.clone()));
            Ok(Some((before, format!("system={}", shown(&new)))))
        }
        Endpoint::OpenaiCompletions => {
            if position != Position::Prepend {
                return Ok(None);
            }
            let prefix = format!("{text}\n\n");
            match body.get_mut("prompt") {
                Some(Value::String(prompt)) => {
                    if prompt.starts_with(text) {
                        return Ok(None);
                    }
                    let before = format!("prompt={}", shown(prompt));
                    prompt.insert_str(0, &prefix);
                    Ok(Some((before, format!("prompt={}", shown(prompt)))))
                }
                Some(Value::Array(prompts)) if prompts.iter().all(Value::is_string) => {
                    let mut count = 0;
                    for prompt in prompts.iter_mut() {
                        if let Value::String(prompt) = prompt {
                            if !prompt.starts_with(text) {
                                prompt.insert_str(0, &prefix);
                                count += 1;
                            }
                        }
                    }
                    Ok((count > 0).then(|| {
                        (
                            format!("prompt[{}]", prompts.len()),
                            format!("{count} prompt(s) prefixed with {}", shown(text)),
                        )
                    }))
                }
                None | Some(Value::Null) => Ok(None),
                Some(other) => Err(format!("`prompt` is {}", type_of(other))),
            }
        }
        Endpoint::Chat | Endpoint::OpenaiChat => {
            let openai = is_openai(endpoint);
            let messages = match body.get_mut("messages") {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::Array(messages)) => messages,
                Some(other) => return Err(format!("`messages` is {}, not a list", type_of(other))),
            };
            if messages.is_empty() {
                // A chat without messages only loads the model; nothing to steer.
                return Ok(None);
            }
            let is_system = |m: &Value| {
                matches!(m.get("role").and_then(Value::as_str), Some("system"))
                    || (openai && m.get("role").and_then(Value::as_str) == Some("developer"))
            };
            // Idempotent: the text anywhere in a system message means it is there already.
            let mut first = None;
            for (i, message) in messages.iter().enumerate() {
                if !is_system(message) {
                    continue;
                }
                let content = content_text(message.get("content"))?;
                if position != Position::Replace && content.contains(text) {
                    return Ok(None);
                }
                first.get_or_insert((i, content));
            }
            match first {
                None => {
                    if text.is_empty() {
                        return Ok(None);
                    }
                    let mut message = Map::new();
                    message.insert("role".into(), Value::String("system".into()));
                    message.insert("content".into(), Value::String(text.to_string()));
                    messages.insert(0, Value::Object(message));
                    Ok(Some((
                        "system message=<none>".into(),
                        format!("system message={}", shown(text)),
                    )))
                }
                Some((i, existing)) => {
                    if position == Position::Replace && existing == text {
                        return Ok(None);
                    }
                    let new = positioned(&existing, text, position);
                    let before = format!("system message={}", shown(&existing));
                    if let Some(Value::Object(message)) = messages.get_mut(i) {
                        message.insert("content".into(), Value::String(new.clone()));
                    }
                    Ok(Some((before, format!("system message={}", shown(&new)))))
                }
            }
        }
    }
}

/// Whether a `system` field already says what the rule would make it say.
fn already_there(existing: &str, text: &str, position: Position) -> bool {
    match position {
        Position::Replace => existing == text,
        _ => !text.is_empty() && existing.contains(text),
    }
}

/// The text of a message's `content`: a string, or (OpenAI) a list of parts whose `text`
/// parts are joined.
fn content_text(content: Option<&Value>) -> Result<String, Skip> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")),
        Some(other) => Err(format!("a system message's content is {}", type_of(other))),
    }
}

/// Where parameter `name` lives for `endpoint`: (inside `options`?, field name), or `None`
/// when that API has no such parameter.
fn param_field(
    endpoint: Endpoint,
    name: &str,
    body: &Map<String, Value>,
) -> Option<(bool, String)> {
    if !is_openai(endpoint) {
        let top = matches!(name, "keep_alive" | "think");
        return Some((!top, name.to_string()));
    }
    let field = match name {
        "temperature" | "top_p" | "seed" | "presence_penalty" | "frequency_penalty" => name,
        "num_predict"
            if endpoint == Endpoint::OpenaiChat && body.contains_key("max_completion_tokens") =>
        {
            "max_completion_tokens"
        }
        "num_predict" => "max_tokens",
        _ => return None,
    };
    Some((false, field.to_string()))
}

fn param(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    name: &str,
    value: &Value,
    op: ParamOp,
) -> Result<Effect, Skip> {
    let Some((in_options, field)) = param_field(endpoint, name, body) else {
        return Ok(None);
    };
    let target = match in_options {
        false => body,
        true => match options(body, op != ParamOp::Remove)? {
            Some(options) => options,
            None => return Ok(None),
        },
    };
    let current = target.get(&field).filter(|v| !v.is_null());
    let shown_field = match in_options {
        true => format!("options.{field}"),
        false => field.clone(),
    };
    let before = current.map_or_else(|| "<unset>".to_string(), Value::to_string);
    let write = match op {
        ParamOp::Remove => {
            if current.is_none() {
                return Ok(None);
            }
            target.shift_remove(&field);
            return Ok(Some((
                format!("{shown_field}={before}"),
                format!("{shown_field}=<removed>"),
            )));
        }
        ParamOp::Set => current != Some(value),
        ParamOp::Default => current.is_none(),
        ParamOp::Max | ParamOp::Min => match current {
            None => true,
            Some(current) => {
                let (Some(have), Some(bound)) = (current.as_f64(), value.as_f64()) else {
                    return Err(format!(
                        "{shown_field} is {}, not a number",
                        type_of(current)
                    ));
                };
                // num_predict below zero means "no limit": above any maximum.
                let unlimited = name == "num_predict" && have < 0.0;
                match op {
                    ParamOp::Max => unlimited || have > bound,
                    _ => !unlimited && have < bound,
                }
            }
        },
    };
    if !write {
        return Ok(None);
    }
    target.insert(field, value.clone());
    Ok(Some((
        format!("{shown_field}={before}"),
        format!("{shown_field}={value}"),
    )))
}

fn stop(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    sequences: &[String],
) -> Result<Effect, Skip> {
    let (target, shown_field) = match is_openai(endpoint) {
        true => (body, "stop"),
        false => match options(body, true)? {
            Some(options) => (options, "options.stop"),
            None => return Ok(None),
        },
    };
    let mut list: Vec<Value> = match target.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
        Some(other) => return Err(format!("{shown_field} is {}", type_of(other))),
    };
    let before = Value::Array(list.clone()).to_string();
    let mut added = false;
    for sequence in sequences {
        if !list.iter().any(|s| s.as_str() == Some(sequence)) {
            list.push(Value::String(sequence.clone()));
            added = true;
        }
    }
    if !added {
        return Ok(None);
    }
    let after = Value::Array(list);
    let shown_after = after.to_string();
    target.insert("stop".into(), after);
    Ok(Some((
        format!("{shown_field}={before}"),
        format!("{shown_field}={shown_after}"),
    )))
}

/// Ollama's `options` object, created when missing and `create` is set.
fn options(
    body: &mut Map<String, Value>,
    create: bool,
) -> Result<Option<&mut Map<String, Value>>, Skip> {
    match body.get("options") {
        None | Some(Value::Null) if !create => return Ok(None),
        None | Some(Value::Null) => {
            body.insert("options".into(), Value::Object(Map::new()));
        }
        Some(Value::Object(_)) => {}
        Some(other) => return Err(format!("`options` is {}, not an object", type_of(other))),
    }
    Ok(body.get_mut("options").and_then(Value::as_object_mut))
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
