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

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::value::RawValue;
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
        let mut doc = match Doc::parse(body) {
            Ok(doc) => doc,
            Err(reason) => return Outcome::Skipped { reason },
        };
        let mut hits = Vec::new();
        let mut changed = false;
        for &index in &selected {
            let rule = &rules[index];
            let shadow = rule.mode == Mode::Shadow;
            let effect = if shadow {
                apply_rule(rule, endpoint, &mut doc.clone())
            } else {
                apply_rule(rule, endpoint, &mut doc)
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
                            path: None,
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
                match doc.write(&mut out) {
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

fn apply_rule(rule: &Rule, endpoint: Endpoint, body: &mut Doc<'_>) -> Result<Effect, Skip> {
    match &rule.action {
        Action::Alias { to, .. } => {
            let before = body
                .field("model")?
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            if before == *to {
                return Ok(None);
            }
            body.put("model", Value::String(to.clone()));
            Ok(Some((format!("model={before}"), format!("model={to}"))))
        }
        Action::SystemPrompt { text, position } => system_prompt(endpoint, body, text, *position),
        Action::Param { name, value, op } => param(endpoint, body, name, value, *op),
        Action::Stop { sequences } => stop(endpoint, body, sequences),
        _ => Ok(None),
    }
}

/// A JSON object whose fields rules read and write: the request body ([`Doc`]) or one of its
/// objects (`options`).
trait Object {
    /// The value of `key`, when present.
    fn field(&mut self, key: &str) -> Result<Option<&mut Value>, Skip>;
    /// Sets `key` (in place when present, else at the end).
    fn put(&mut self, key: &str, value: Value);
    /// Removes `key`, keeping the order of the others; whether it was there.
    fn take(&mut self, key: &str) -> bool;
}

impl Object for Map<String, Value> {
    fn field(&mut self, key: &str) -> Result<Option<&mut Value>, Skip> {
        Ok(self.get_mut(key))
    }

    fn put(&mut self, key: &str, value: Value) {
        self.insert(key.to_string(), value);
    }

    fn take(&mut self, key: &str) -> bool {
        self.shift_remove(key).is_some()
    }
}

/// A request body as rules see it: its top-level fields in order, each kept as the client's
/// bytes until a rule reads it (then parsed), so a long conversation is never copied into a
/// tree. `messages` can be opened one level further: a list of messages, each kept as
/// bytes unless a rule reads it.
#[derive(Clone)]
struct Doc<'a> {
    fields: Vec<(Cow<'a, str>, Slot<'a>)>,
}

#[derive(Clone)]
enum Slot<'a> {
    Raw(&'a RawValue),
    Parsed(Value),
    /// A list opened one level (`messages`).
    List(Vec<Slot<'a>>),
}

impl<'a> Slot<'a> {
    /// The slot as a value, parsed as needed.
    fn into_value(self) -> Result<Value, Skip> {
        match self {
            Slot::Raw(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string()),
            Slot::Parsed(value) => Ok(value),
            Slot::List(items) => items
                .into_iter()
                .map(Slot::into_value)
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Slot::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Slot::Parsed(value) => serde_json::to_writer(&mut *out, value)?,
            Slot::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out)?;
                }
                out.push(b']');
            }
        }
        Ok(())
    }
}

/// The top level of a body: field names and their values' bytes, in order.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Fields<'de>, M::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Just the role of a message (the rest is skipped, not copied).
#[derive(serde::Deserialize)]
struct Role<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
}

impl<'a> Doc<'a> {
    fn parse(body: &'a [u8]) -> Result<Doc<'a>, Skip> {
        match serde_json::from_slice::<Fields<'a>>(body) {
            Ok(Fields(fields)) => {
                // A repeated key is read differently by different parsers (the upstream's
                // takes the last, a rule would change the first): leave such a body alone.
                let mut seen = std::collections::HashSet::new();
                if let Some((key, _)) = fields.iter().find(|(key, _)| !seen.insert(key.clone())) {
                    return Err(format!("the body repeats the key {key:?}"));
                }
                Ok(Doc {
                    fields: fields
                        .into_iter()
                        .map(|(key, raw)| (key, Slot::Raw(raw)))
                        .collect(),
                })
            }
            Err(e) if e.is_data() => Err("the body is not a JSON object".into()),
            Err(e) => Err(format!("the body is not JSON: {e}")),
        }
    }

    fn index(&self, key: &str) -> Option<usize> {
        self.fields.iter().position(|(k, _)| k == key)
    }

    /// `messages` as a list whose items stay bytes until read; `None` when absent or null.
    fn messages(&mut self) -> Result<Option<&mut Vec<Slot<'a>>>, Skip> {
        let Some(i) = self.index("messages") else {
            return Ok(None);
        };
        let slot = &mut self.fields[i].1;
        if let Slot::Raw(raw) = slot {
            let text = raw.get();
            if text == "null" {
                return Ok(None);
            }
            let items: Vec<&'a RawValue> = serde_json::from_str(text).map_err(|_| {
                let kind =
                    serde_json::from_str::<Value>(text).map_or("not a list", |v| type_of(&v));
                format!("`messages` is {kind}, not a list")
            })?;
            *slot = Slot::List(items.into_iter().map(Slot::Raw).collect());
        }
        if let Slot::Parsed(value) = slot {
            match value.take() {
                Value::Array(items) => {
                    *slot = Slot::List(items.into_iter().map(Slot::Parsed).collect())
                }
                Value::Null => return Ok(None),
                other => return Err(format!("`messages` is {}, not a list", type_of(&other))),
            }
        }
        match slot {
            Slot::List(items) => Ok(Some(items)),
            _ => Ok(None),
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.push(b'{');
        for (i, (key, slot)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, key.as_ref())?;
            out.push(b':');
            slot.write(out)?;
        }
        out.push(b'}');
        Ok(())
    }
}

impl Object for Doc<'_> {
    fn field(&mut self, key: &str) -> Result<Option<&mut Value>, Skip> {
        let Some(i) = self.index(key) else {
            return Ok(None);
        };
        let slot = &mut self.fields[i].1;
        if !matches!(slot, Slot::Parsed(_)) {
            let taken = std::mem::replace(slot, Slot::Parsed(Value::Null));
            *slot = Slot::Parsed(taken.into_value()?);
        }
        match slot {
            Slot::Parsed(value) => Ok(Some(value)),
            _ => Ok(None),
        }
    }

    fn put(&mut self, key: &str, value: Value) {
        match self.index(key) {
            Some(i) => self.fields[i].1 = Slot::Parsed(value),
            None => self
                .fields
                .push((Cow::Owned(key.to_string()), Slot::Parsed(value))),
        }
    }

    fn take(&mut self, key: &str) -> bool {
        match self.index(key) {
            Some(i) => {
                self.fields.remove(i);
                true
            }
            None => false,
        }
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
    body: &mut Doc<'_>,
    text: &str,
    position: Position,
) -> Result<Effect, Skip> {
    match endpoint {
        Endpoint::Generate => {
            let existing = match body.field("system")? {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => return Err(format!("`system` is {}, not a string", type_of(other))),
            };
            if already_there(&existing, text, position) {
                return Ok(None);
            }
            let new = positioned(&existing, text, position);
            let before = format!("system={}", shown(&existing));
            let after = format!("system={}", shown(&new));
            body.put("system", Value::String(new));
            Ok(Some((before, after)))
        }
        Endpoint::OpenaiCompletions => {
            if position != Position::Prepend {
                return Ok(None);
            }
            let prefix = format!("{text}\n\n");
            match body.field("prompt")? {
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
            let Some(messages) = body.messages()? else {
                return Ok(None);
            };
            if messages.is_empty() {
                // A chat without messages only loads the model; nothing to steer.
                return Ok(None);
            }
            let is_system = |role: Option<&str>| {
                role == Some("system") || (openai && role == Some("developer"))
            };
            // Idempotent: the text anywhere in a system message means it is there already.
            // Only system messages are parsed; the others are skimmed for their role.
            let mut first = None;
            for (i, slot) in messages.iter_mut().enumerate() {
                if let Slot::Raw(raw) = slot {
                    match serde_json::from_str::<Role>(raw.get()) {
                        Ok(probe) if !is_system(probe.role.as_deref()) => continue,
                        // A system message, or one the probe cannot read (a repeated key,
                        // not an object): read it whole, as the upstream will.
                        _ => {
                            let value =
                                serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
                            *slot = Slot::Parsed(value);
                        }
                    }
                }
                let Slot::Parsed(value) = slot else {
                    continue;
                };
                if !is_system(value.get("role").and_then(Value::as_str)) {
                    continue;
                }
                let content = content_text(value.get("content"))?;
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
                    messages.insert(0, Slot::Parsed(Value::Object(message)));
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
                    let after = format!("system message={}", shown(&new));
                    if let Some(Slot::Parsed(Value::Object(message))) = messages.get_mut(i) {
                        message.insert("content".into(), Value::String(new));
                    }
                    Ok(Some((before, after)))
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
fn param_field(endpoint: Endpoint, name: &str, body: &Doc<'_>) -> Option<(bool, &'static str)> {
    if !is_openai(endpoint) {
        let top = matches!(name, "keep_alive" | "think");
        let known = crate::rules::PARAMS.iter().find(|(n, _)| *n == name)?.0;
        return Some((!top, known));
    }
    let field = match name {
        "temperature" => "temperature",
        "top_p" => "top_p",
        "seed" => "seed",
        "presence_penalty" => "presence_penalty",
        "frequency_penalty" => "frequency_penalty",
        "num_predict"
            if endpoint == Endpoint::OpenaiChat
                && body.index("max_completion_tokens").is_some() =>
        {
            "max_completion_tokens"
        }
        "num_predict" => "max_tokens",
        _ => return None,
    };
    Some((false, field))
}

fn param(
    endpoint: Endpoint,
    body: &mut Doc<'_>,
    name: &str,
    value: &Value,
    op: ParamOp,
) -> Result<Effect, Skip> {
    let Some((in_options, field)) = param_field(endpoint, name, body) else {
        return Ok(None);
    };
    match in_options {
        false => param_in(body, field, field.to_string(), name, value, op),
        true => match options(body, op != ParamOp::Remove)? {
            Some(options) => param_in(options, field, format!("options.{field}"), name, value, op),
            None => Ok(None),
        },
    }
}

fn param_in(
    target: &mut impl Object,
    field: &str,
    shown_field: String,
    name: &str,
    value: &Value,
    op: ParamOp,
) -> Result<Effect, Skip> {
    let current = target.field(field)?.filter(|v| !v.is_null()).cloned();
    let before = current
        .as_ref()
        .map_or_else(|| "<unset>".to_string(), Value::to_string);
    let write = match op {
        ParamOp::Remove => {
            if current.is_none() || !target.take(field) {
                return Ok(None);
            }
            return Ok(Some((
                format!("{shown_field}={before}"),
                format!("{shown_field}=<removed>"),
            )));
        }
        ParamOp::Set => current.as_ref() != Some(value),
        ParamOp::Default => current.is_none(),
        ParamOp::Max | ParamOp::Min => match &current {
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
    target.put(field, value.clone());
    Ok(Some((
        format!("{shown_field}={before}"),
        format!("{shown_field}={value}"),
    )))
}

fn stop(endpoint: Endpoint, body: &mut Doc<'_>, sequences: &[String]) -> Result<Effect, Skip> {
    match is_openai(endpoint) {
        true => stop_in(body, "stop", sequences),
        false => match options(body, true)? {
            Some(options) => stop_in(options, "options.stop", sequences),
            None => Ok(None),
        },
    }
}

fn stop_in(
    target: &mut impl Object,
    shown_field: &str,
    sequences: &[String],
) -> Result<Effect, Skip> {
    let mut list: Vec<Value> = match target.field("stop")? {
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
    target.put("stop", after);
    Ok(Some((
        format!("{shown_field}={before}"),
        format!("{shown_field}={shown_after}"),
    )))
}

/// Ollama's `options` object, created when missing and `create` is set.
fn options<'d>(
    body: &'d mut Doc<'_>,
    create: bool,
) -> Result<Option<&'d mut Map<String, Value>>, Skip> {
    match body.field("options")? {
        None | Some(Value::Null) if !create => return Ok(None),
        None | Some(Value::Null) => body.put("options", Value::Object(Map::new())),
        Some(Value::Object(_)) => {}
        Some(other) => return Err(format!("`options` is {}, not an object", type_of(other))),
    }
    Ok(body.field("options")?.and_then(Value::as_object_mut))
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
