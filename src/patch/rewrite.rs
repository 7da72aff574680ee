//! Re-framing: finds the model's text inside each NDJSON line, SSE event or whole JSON body,
//! runs it through the rule pipeline ([`crate::patch`]) and writes the message back with every
//! other field, and the key order, unchanged. A line or event whose text no rule touched is
//! forwarded as its original bytes.
//!
//! This module does no I/O: [`Rewriter::feed`] takes upstream bytes and returns client bytes,
//! so the framing can be tested for every split of the input.
//!
//! Where the text lives (DESIGN.md): `/api/generate` → `response`, `thinking`; `/api/chat` →
//! `message.content`, `message.thinking`; `/v1/chat/completions` → `choices[i].delta.content`
//! (streamed) or `choices[i].message.content`; `/v1/completions` → `choices[i].text`.
//!
//! A line or event whose text a rule holds back (the start of a possible path, a partial
//! match) waits whole ([`super::delay`]) and goes out as it came once its text is released
//! unchanged; only when a rule changed the text are the waiting lines rewritten, the first
//! carrying the released text and the others empty text.
//!
//! Held-back text is flushed into the final chunk: the `done:true` line (NDJSON), the chunk
//! carrying the choice's `finish_reason`, or a chunk inserted before `data: [DONE]` (SSE).
//!
//! A `block` rule ends the response: the text before the match, then the rule's message, then
//! a well-formed end — NDJSON: that line gets `"done":true,"done_reason":"stop"` and
//! `"rawrxd_blocked":"<rule id>"`; SSE: that chunk gets `"finish_reason":"content_filter"`,
//! followed by `data: [DONE]`; whole JSON: the text field holds the message, with `done_reason`
//! `"stop"` / `finish_reason` `"content_filter"`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::patch::delay::{Delay, Unit};
use crate::patch::{Compiled, Context, Hit, Session, ToolFixer};
use crate::rules::Endpoint;

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Sse,
}

/// Bytes of lines or events that may wait whole behind held text before they are sent
/// rewritten instead.
const MAX_WAITING: usize = 256 * 1024;

/// Identifies one text field in a stream: (choice index, which field).
type FieldKey = (u64, &'static str);

/// Rewrites one streamed response.
pub struct Rewriter {
    compiled: Arc<Compiled>,
    endpoint: Endpoint,
    format: Format,
    pending: Vec<u8>,
    sessions: HashMap<FieldKey, Session>,
    finished: bool,
    blocked: bool,
    hits: Vec<Hit>,
    /// The last JSON chunk seen, as a template for a chunk the proxy has to add (parsed, or
    /// the raw bytes of an NDJSON line that passed unchanged).
    last_chunk: Option<Map<String, Value>>,
    last_line: Vec<u8>,
    context: Context,
    /// Path rules for tool-call arguments (`None` without path rules).
    tools: Option<ToolFixer>,
    /// Streamed OpenAI tool calls being assembled: (choice, call index) → (name, arguments so
    /// far). Their fragments are held and released whole, fixed, before the choice ends.
    pending_calls: Vec<((u64, u64), String, String)>,
    /// Lines or events waiting whole while the main text field's session holds their text.
    delay: Delay,
}

impl Rewriter {
    pub fn new(compiled: Arc<Compiled>, endpoint: Endpoint, format: Format) -> Self {
        Self::in_context(compiled, endpoint, format, Context::default())
    }

    /// A rewriter for a request with `context` (its workspace, for path rules).
    pub fn in_context(
        compiled: Arc<Compiled>,
        endpoint: Endpoint,
        format: Format,
        context: Context,
    ) -> Self {
        let tools = compiled
            .has_path_rules()
            .then(|| compiled.tool_fixer(&context));
        Rewriter {
            context,
            tools,
            pending_calls: Vec::new(),
            delay: Delay::default(),
            compiled,
            endpoint,
            format,
            pending: Vec::new(),
            sessions: HashMap::new(),
            finished: false,
            blocked: false,
            hits: Vec::new(),
            last_chunk: None,
            last_line: Vec::new(),
        }
    }

    /// True once the stream has ended (final chunk seen, or blocked): the rest of the upstream
    /// body can be dropped.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True once a block rule ended the response.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Corrections made since the last call.
    pub fn take_hits(&mut self) -> Vec<Hit> {
        std::mem::take(&mut self.hits)
    }

    /// Bytes of model text currently held back.
    pub fn held(&self) -> usize {
        self.sessions.values().map(Session::held).sum::<usize>() + self.delay.owed_bytes()
    }

    /// Characters of model text currently held back.
    pub fn held_chars(&self) -> usize {
        self.sessions
            .values()
            .map(Session::held_chars)
            .sum::<usize>()
            + self.delay.owed_chars()
    }

    /// Takes upstream bytes; returns the bytes to send the client now.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        // Room for the units waiting too: they may all go now.
        let mut out = Vec::with_capacity(bytes.len() + self.delay.queued_bytes() + 64);
        if self.finished {
            return out;
        }
        self.pending.extend_from_slice(bytes);
        // Work on the buffer taken out of `self`, so each line is read in place, not copied.
        let pending = std::mem::take(&mut self.pending);
        let mut consumed = 0;
        while !self.finished {
            let rest = &pending[consumed..];
            let Some(end) = (match self.format {
                Format::Ndjson => rest.iter().position(|&b| b == b'\n').map(|i| i + 1),
                Format::Sse => event_end(rest),
            }) else {
                break;
            };
            self.unit(&rest[..end], &mut out);
            consumed += end;
        }
        self.pending = pending;
        self.pending.drain(..consumed);
        out
    }

    /// One NDJSON line or SSE event.
    fn unit(&mut self, unit: &[u8], out: &mut Vec<u8>) {
        match self.format {
            Format::Ndjson => self.ndjson_line(unit, out),
            Format::Sse => self.sse_event(unit, out),
        }
    }

    /// The upstream body ended: processes a last unterminated line/event and releases any
    /// text still held (in a chunk shaped like the last one).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.finished && !self.pending.is_empty() {
            let unit = std::mem::take(&mut self.pending);
            self.unit(&unit, &mut out);
        }
        if !self.finished {
            self.flush_open_sessions(&mut out);
        }
        self.finished = true;
        out
    }

    /// Emits a chunk carrying whatever the open sessions still hold.
    fn flush_open_sessions(&mut self, out: &mut Vec<u8>) {
        if !self.delay.is_empty() {
            // The waiting units first, with the rest of their field's text.
            let key = self.delay_key();
            if let Some(session) = self.sessions.get_mut(&key) {
                if !session.is_done() {
                    let text = session.finish();
                    self.hits.extend(session.take_hits());
                    self.delay.owe(&text);
                }
            }
            self.release_delayed(true, out);
        }
        let mut keys: Vec<FieldKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.is_done())
            .map(|(k, _)| *k)
            .collect();
        keys.sort();
        for key in keys {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            let text = session.finish();
            self.hits.extend(session.take_hits());
            self.emit_text(key, text, out);
        }
    }

    /// The text field whose lines or events can wait whole: the first choice's text (SSE),
    /// `response` or `message.content` (NDJSON).
    fn delay_key(&self) -> FieldKey {
        match self.format {
            Format::Ndjson => (0, ndjson_fields(self.endpoint)[0]),
            Format::Sse => (0, sse_field(self.endpoint)),
        }
    }

    /// One line or event of the main text field, whose `text` the session turned into
    /// `released`: it goes on as it came when nothing waits and the text went through (no
    /// copy), else it joins the units waiting.
    fn pass_or_wait(
        &mut self,
        unit: &[u8],
        text: &str,
        released: &str,
        end: bool,
        out: &mut Vec<u8>,
    ) {
        if self.delay.is_empty() && released == text {
            out.extend_from_slice(unit);
            self.remember_unit(unit);
            return;
        }
        self.delay.push(unit, text, released);
        self.release_delayed(end, out);
        if self.delay.queued_bytes() > MAX_WAITING {
            // A stream of lines behind one held word (an upstream sending empty chunks):
            // past this, they go rewritten rather than pile up.
            self.spill(out);
        }
    }

    /// Sends the waiting units that can go as they came; rewrites them all once the text
    /// released differs from theirs, or at the `end` unless it is exactly theirs.
    fn release_delayed(&mut self, end: bool, out: &mut Vec<u8>) {
        if end && !self.delay.in_step() {
            self.spill(out);
            return;
        }
        let (last, diverged) = self.delay.release(out);
        // The template for a chunk the proxy adds is needed only once nothing waits (a unit
        // still waiting is the more recent chunk).
        if let (Some(at), true) = (last, self.delay.is_empty()) {
            self.remember_unit(&out[at..]);
        }
        if diverged {
            self.spill(out);
        }
    }

    /// Sends every waiting unit rewritten: the first with all the text released for them,
    /// the others with empty text (a unit whose text that leaves as it was goes as it came).
    fn spill(&mut self, out: &mut Vec<u8>) {
        if self.delay.is_empty() {
            return;
        }
        let (units, mut owed) = self.delay.spill();
        if units.is_empty() {
            // Text released for lines already sent rewritten: a chunk of its own.
            let key = self.delay_key();
            self.emit_text(key, owed, out);
            return;
        }
        for unit in units {
            let text = std::mem::take(&mut owed);
            if text == unit.text {
                out.extend_from_slice(&unit.bytes);
                self.remember_unit(&unit.bytes);
            } else {
                self.rewrite_unit(&unit, text, out);
            }
        }
    }

    /// Keeps a unit sent as it came as the template for chunks the proxy adds.
    fn remember_unit(&mut self, bytes: &[u8]) {
        match self.format {
            Format::Ndjson => {
                self.last_line.clear();
                self.last_line.extend_from_slice(trim_newline(bytes));
            }
            // SSE keeps the parsed chunk of every event it reads.
            Format::Sse => {}
        }
    }

    /// Sends `unit` with its text field set to `text`.
    fn rewrite_unit(&mut self, unit: &Unit, text: String, out: &mut Vec<u8>) {
        let key = self.delay_key();
        match self.format {
            Format::Ndjson => {
                let body = trim_newline(&unit.bytes);
                let span = serde_json::from_slice::<Peek>(body).ok().and_then(|peek| {
                    match peek.texts(self.endpoint) {
                        [Some(Cow::Borrowed(s)), _] => span_in(body, s),
                        _ => None,
                    }
                });
                if let Some(line) =
                    span.and_then(|span| splice(body, &[(key.1, text.clone())], &[Some(span)]))
                {
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                    self.last_line = line;
                    return;
                }
                let Ok(Value::Object(mut chunk)) = serde_json::from_slice::<Value>(body) else {
                    out.extend_from_slice(&unit.bytes);
                    return;
                };
                set_ndjson_text(&mut chunk, self.endpoint, key.1, text);
                write_line(&chunk, out);
                self.last_line.clear();
                self.last_chunk = Some(chunk);
            }
            Format::Sse => {
                let Some(mut chunk) = sse_payload(&unit.bytes) else {
                    out.extend_from_slice(&unit.bytes);
                    return;
                };
                if let Some(choice) = chunk
                    .get_mut("choices")
                    .and_then(Value::as_array_mut)
                    .and_then(|c| c.first_mut())
                {
                    set_sse_text(self.endpoint, choice, text);
                }
                write_event(&chunk, out);
            }
        }
    }

    /// A chunk the proxy adds, shaped like the last one, carrying `text` in field `key`.
    fn emit_text(&mut self, key: FieldKey, text: String, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let mut chunk = self.template();
        match self.format {
            Format::Ndjson => {
                set_ndjson_text(&mut chunk, self.endpoint, key.1, text);
                chunk.insert("done".into(), Value::Bool(false));
                write_line(&chunk, out);
            }
            Format::Sse => {
                let choice = sse_choice(self.endpoint, key.0, text);
                chunk.insert("choices".into(), Value::Array(vec![choice]));
                write_event(&chunk, out);
            }
        }
    }

    /// A copy of the most recent chunk, to shape a chunk the proxy adds.
    fn template(&mut self) -> Map<String, Value> {
        if !self.last_line.is_empty() {
            if let Ok(Value::Object(chunk)) = serde_json::from_slice(&self.last_line) {
                self.last_chunk = Some(chunk);
            }
            self.last_line.clear();
        }
        self.last_chunk.clone().unwrap_or_default()
    }

    fn session(&mut self, key: FieldKey) -> &mut Session {
        let compiled = &self.compiled;
        let context = &self.context;
        self.sessions
            .entry(key)
            .or_insert_with(|| compiled.session_in(context))
    }

    /// Fixes the paths in a `tool_calls` array (Ollama: arguments an object; OpenAI: a JSON
    /// string). Returns true when an argument changed.
    fn fix_tool_calls(&mut self, calls: Option<&mut Value>) -> bool {
        let Some(tools) = &self.tools else {
            return false;
        };
        fix_calls(tools, calls, &mut self.hits)
    }

    /// Takes the argument fragments out of a streamed choice's `delta.tool_calls` (keeping
    /// ids and names); they are released whole by [`Rewriter::release_calls`]. Returns true
    /// when the choice changed.
    fn hold_call_fragments(&mut self, index: u64, choice: &mut Value) -> bool {
        if self.tools.is_none() {
            return false;
        }
        let Some(Value::Array(calls)) = choice.pointer_mut("/delta/tool_calls") else {
            return false;
        };
        let mut changed = false;
        for (position, call) in calls.iter_mut().enumerate() {
            let call_index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .map(str::to_string);
            let Some(Value::String(fragment)) = call.pointer_mut("/function/arguments") else {
                continue;
            };
            let fragment = std::mem::take(fragment);
            changed = true;
            let key = (index, call_index);
            match self.pending_calls.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, held_name, held)) => {
                    if let Some(name) = name {
                        *held_name = name;
                    }
                    held.push_str(&fragment);
                }
                None => self
                    .pending_calls
                    .push((key, name.unwrap_or_default(), fragment)),
            }
        }
        changed
    }

    /// Emits the held tool-call arguments of `choice` (every choice when `None`), fixed, as
    /// one chunk per call.
    fn release_calls(&mut self, choice: Option<u64>, out: &mut Vec<u8>) {
        let mut released = Vec::new();
        self.pending_calls.retain(|entry| {
            let take = choice.map_or(true, |c| entry.0 .0 == c);
            if take {
                released.push(entry.clone());
            }
            !take
        });
        for ((index, call_index), name, arguments) in released {
            let mut value = Value::String(arguments);
            if let Some(tools) = &self.tools {
                let (hits, _) = fix_arguments_value(tools, &name, &mut value);
                self.hits.extend(hits);
            }
            let mut chunk = self.template();
            let delta = serde_json::json!({
                "tool_calls": [{"index": call_index, "function": {"arguments": value}}]
            });
            let choice = serde_json::json!({
                "index": index, "delta": delta, "finish_reason": Value::Null
            });
            chunk.insert("choices".into(), Value::Array(vec![choice]));
            chunk.remove("usage");
            write_event(&chunk, out);
        }
    }

    /// Runs one field's text through its session; `last` flushes it. Returns the new text and
    /// the block message when a block rule fired.
    fn patch_field(&mut self, key: FieldKey, text: &str, last: bool) -> (String, Option<String>) {
        let session = self.session(key);
        let mut new = session.push(text);
        if last {
            new.push_str(&session.finish());
        }
        let blocked = session.blocked().map(str::to_string);
        let hits = session.take_hits();
        self.hits.extend(hits);
        (new, blocked)
    }

    fn blocked_rule_id(&self) -> String {
        self.hits
            .iter()
            .rev()
            .find(|h| h.kind == crate::rules::Kind::Block && !h.shadow)
            .map(|h| h.rule_id.clone())
            .unwrap_or_default()
    }

    fn ndjson_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let body = trim_newline(line);
        // Most lines are one token no rule touches: read the text fields borrowed, and build
        // a JSON tree only for a line that has to change.
        let Ok(peek) = serde_json::from_slice::<Peek>(body) else {
            self.spill(out);
            out.extend_from_slice(line);
            return;
        };
        if peek.error.is_some() {
            // The stream is failing: release what is held first, then the error line last.
            self.flush_open_sessions(out);
            out.extend_from_slice(line);
            self.finished = true;
            return;
        }
        let done = peek.done == Some(true);
        let has_calls = self.tools.is_some()
            && peek
                .message
                .as_ref()
                .is_some_and(|m| m.tool_calls.is_some());
        let fields = ndjson_fields(self.endpoint);
        let texts = peek.texts(self.endpoint);
        // The main text field, patched here when the line may wait whole.
        let mut first = None;
        let second_idle = texts[1].as_deref().map_or(true, str::is_empty)
            && self
                .sessions
                .get(&(0, fields[1]))
                .map_or(true, |s| s.held() == 0);
        if !has_calls && second_idle {
            let text = texts[0].as_deref().unwrap_or_default();
            let (new, block) = self.patch_field((0, fields[0]), text, done);
            if block.is_none() {
                self.pass_or_wait(line, text, &new, done, out);
                self.finished |= done;
                return;
            }
            first = Some((new, block));
        }
        // This line goes now: the lines waiting go before it.
        self.spill(out);
        let mut edits: Vec<(&'static str, String)> = Vec::new();
        // Where each edited text sits in the line, when it is there as written (no escapes):
        // then the line is spliced instead of parsed and written again.
        let mut spans: Vec<Option<(usize, usize)>> = Vec::new();
        let mut blocked = None;
        for (i, (field, text)) in fields.into_iter().zip(texts).enumerate() {
            let key = (0, field);
            let span = match &text {
                Some(Cow::Borrowed(s)) => span_in(body, s),
                _ => None,
            };
            let (new, block) = match (text, first.take().filter(|_| i == 0)) {
                (_, Some(patched)) => patched,
                (Some(text), None) => {
                    let (new, block) = self.patch_field(key, &text, done);
                    if new == *text && block.is_none() {
                        continue;
                    }
                    (new, block)
                }
                // The field is absent here but text of it is held: flush it on the last line.
                (None, _) if done && self.sessions.contains_key(&key) => {
                    let (new, block) = self.patch_field(key, "", true);
                    if new.is_empty() && block.is_none() {
                        continue;
                    }
                    (new, block)
                }
                (None, _) => continue,
            };
            edits.push((field, new));
            spans.push(span);
            if block.is_some() {
                blocked = block;
                break;
            }
        }
        if done {
            self.finished = true;
        }
        if !edits.is_empty() && !has_calls && blocked.is_none() && spans.iter().all(Option::is_some)
        {
            if let Some(line) = splice(body, &edits, &spans) {
                out.extend_from_slice(&line);
                out.push(b'\n');
                self.last_line = line;
                return;
            }
        }
        if edits.is_empty() && !has_calls {
            out.extend_from_slice(line);
            self.remember_unit(line);
            return;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_slice::<Value>(body) else {
            // Cannot happen: the line parsed as an object above.
            out.extend_from_slice(line);
            return;
        };
        let mut changed = !edits.is_empty();
        for (field, new) in edits {
            set_ndjson_text(&mut chunk, self.endpoint, field, new);
        }
        if has_calls {
            changed |= self.fix_tool_calls(
                chunk
                    .get_mut("message")
                    .and_then(|m| m.get_mut("tool_calls")),
            );
        }
        if !changed {
            out.extend_from_slice(line);
            self.remember_unit(line);
            return;
        }
        if blocked.is_some() {
            chunk.insert("done".into(), Value::Bool(true));
            if !done {
                chunk.insert("done_reason".into(), Value::String("stop".into()));
            }
            chunk.insert(
                "rawrxd_blocked".into(),
                Value::String(self.blocked_rule_id()),
            );
            self.finished = true;
            self.blocked = true;
        }
        write_line(&chunk, out);
        self.last_chunk = Some(chunk);
    }

    fn sse_event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let payload = sse_data(event);
        if payload.trim() == "[DONE]" {
            self.flush_open_sessions(out);
            self.release_calls(None, out);
            out.extend_from_slice(event);
            self.finished = true;
            return;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(&payload) else {
            self.spill(out);
            out.extend_from_slice(event);
            return;
        };
        let field = sse_field(self.endpoint);
        // A chunk of one choice carrying only text may wait whole.
        let mut first = None;
        if let Some((text, last)) = self.sse_waitable(&chunk) {
            let (new, block) = self.patch_field((0, field), &text, last);
            if block.is_none() {
                self.pass_or_wait(event, &text, &new, last, out);
                chunk.remove("usage");
                self.last_chunk = Some(chunk);
                return;
            }
            first = Some((new, block));
        }
        // This event goes now: the events waiting go before it.
        self.spill(out);
        let mut changed = false;
        let mut blocked = false;
        if let Some(Value::Array(choices)) = chunk.get("choices").cloned() {
            let mut new_choices = choices.clone();
            for (position, choice) in choices.iter().enumerate() {
                let index = choice
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let last = choice.get("finish_reason").is_some_and(|f| !f.is_null());
                if self.hold_call_fragments(index, &mut new_choices[position]) {
                    changed = true;
                }
                if last {
                    // Held tool-call arguments go out, fixed, before the chunk that ends them.
                    self.release_calls(Some(index), out);
                }
                let key = (index, field);
                let current = sse_text(self.endpoint, choice).map(str::to_string);
                let (new, block) = match (current, first.take()) {
                    (_, Some(patched)) => patched,
                    (Some(current), None) => {
                        let (new, block) = self.patch_field(key, &current, last);
                        if new == current && block.is_none() {
                            continue;
                        }
                        (new, block)
                    }
                    (None, None) if last && self.sessions.contains_key(&key) => {
                        let (new, block) = self.patch_field(key, "", true);
                        if new.is_empty() {
                            continue;
                        }
                        (new, block)
                    }
                    (None, None) => continue,
                };
                let target = &mut new_choices[position];
                set_sse_text(self.endpoint, target, new);
                if block.is_some() {
                    if let Some(object) = target.as_object_mut() {
                        object.insert("finish_reason".into(), "content_filter".into());
                    }
                    blocked = true;
                }
                changed = true;
                if blocked {
                    new_choices.truncate(position + 1);
                    break;
                }
            }
            if changed {
                chunk.insert("choices".into(), Value::Array(new_choices));
            }
        }
        if changed {
            write_event(&chunk, out);
        } else {
            out.extend_from_slice(event);
        }
        if blocked {
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.finished = true;
            self.blocked = true;
        }
        let mut template = chunk;
        template.remove("usage");
        self.last_chunk = Some(template);
    }
}

impl Rewriter {
    /// The text of a chunk that may wait whole, and whether it ends its choice: one choice
    /// (index 0), with text, no tool calls (none held either when it ends the choice), while
    /// no other choice's text is held.
    fn sse_waitable(&self, chunk: &Map<String, Value>) -> Option<(String, bool)> {
        let [choice] = chunk.get("choices")?.as_array()?.as_slice() else {
            return None;
        };
        let last = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0
            || choice.pointer("/delta/tool_calls").is_some()
            || last && self.pending_calls.iter().any(|((c, _), _, _)| *c == 0)
        {
            return None;
        }
        let key = self.delay_key();
        if self.sessions.iter().any(|(k, s)| *k != key && s.held() > 0) {
            return None;
        }
        // A chunk without text (a role, the end) carries none: it waits in line all the same.
        let text = sse_text(self.endpoint, choice).unwrap_or_default();
        Some((text.to_string(), last))
    }
}

/// The `data:` lines of an SSE event, joined.
pub(crate) fn sse_data(event: &[u8]) -> String {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    data.join("\n")
}

/// An SSE event's JSON object.
fn sse_payload(event: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(&sse_data(event)) {
        Ok(Value::Object(chunk)) => Some(chunk),
        _ => None,
    }
}

/// The text field of a streamed choice.
fn sse_field(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::OpenaiCompletions => "text",
        _ => "content",
    }
}

/// Patches a whole (non-streamed) JSON response body. Returns `None` when nothing changed (or
/// the body is not the expected JSON), so the original bytes can be sent.
pub fn rewrite_json(
    compiled: &Arc<Compiled>,
    endpoint: Endpoint,
    body: &[u8],
) -> Option<(Vec<u8>, Vec<Hit>)> {
    rewrite_json_in(compiled, endpoint, body, &Context::default())
}

/// As [`rewrite_json`], for a request with `context`; tool calls' arguments are fixed too.
pub fn rewrite_json_in(
    compiled: &Arc<Compiled>,
    endpoint: Endpoint,
    body: &[u8],
    context: &Context,
) -> Option<(Vec<u8>, Vec<Hit>)> {
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut hits = Vec::new();
    let mut changed = false;
    if compiled.has_path_rules() {
        let tools = compiled.tool_fixer(context);
        let calls = match endpoint {
            Endpoint::Chat => root
                .get_mut("message")
                .and_then(|m| m.get_mut("tool_calls")),
            _ => None,
        };
        changed |= fix_calls(&tools, calls, &mut hits);
        if endpoint == Endpoint::OpenaiChat {
            if let Some(Value::Array(choices)) = root.get_mut("choices") {
                for choice in choices {
                    changed |=
                        fix_calls(&tools, choice.pointer_mut("/message/tool_calls"), &mut hits);
                }
            }
        }
    }
    match endpoint {
        Endpoint::Generate | Endpoint::Chat => {
            for field in ndjson_fields(endpoint) {
                let Some(text) = get_ndjson_text(&root, endpoint, field).map(str::to_string) else {
                    continue;
                };
                let patched = compiled.apply_in(&text, context);
                hits.extend(patched.hits);
                if patched.text != text {
                    set_ndjson_text(&mut root, endpoint, field, patched.text);
                    changed = true;
                }
                if patched.blocked.is_some() {
                    root.insert("done_reason".into(), "stop".into());
                    break;
                }
            }
        }
        Endpoint::OpenaiChat | Endpoint::OpenaiCompletions => {
            if let Some(Value::Array(choices)) = root.get_mut("choices") {
                for choice in choices.iter_mut() {
                    let text = match endpoint {
                        Endpoint::OpenaiChat => choice.pointer("/message/content"),
                        _ => choice.get("text"),
                    }
                    .and_then(Value::as_str)
                    .map(str::to_string);
                    let Some(text) = text else { continue };
                    let patched = compiled.apply_in(&text, context);
                    hits.extend(patched.hits);
                    if patched.text != text {
                        let slot = match endpoint {
                            Endpoint::OpenaiChat => choice.pointer_mut("/message/content"),
                            _ => choice.get_mut("text"),
                        };
                        if let Some(slot) = slot {
                            *slot = Value::String(patched.text);
                        }
                        changed = true;
                    }
                    if patched.blocked.is_some() {
                        if let Some(object) = choice.as_object_mut() {
                            object.insert("finish_reason".into(), "content_filter".into());
                        }
                    }
                }
            }
        }
    }
    if !changed && hits.is_empty() {
        return None;
    }
    if !changed {
        return Some((body.to_vec(), hits));
    }
    serde_json::to_vec(&Value::Object(root))
        .ok()
        .map(|bytes| (bytes, hits))
}

/// Where `part` (a slice of `whole`) starts and ends in it.
fn span_in(whole: &[u8], part: &str) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len() && whole.get(start..end) == Some(part.as_bytes())).then_some((start, end))
}

/// `line` with each edited text (at its span, inside its quotes) replaced by the new text,
/// JSON-escaped. `None` when the spans overlap or are out of order.
fn splice(
    line: &[u8],
    edits: &[(&'static str, String)],
    spans: &[Option<(usize, usize)>],
) -> Option<Vec<u8>> {
    let mut order: Vec<(usize, usize, &str)> = spans
        .iter()
        .zip(edits)
        .map(|(span, (_, new))| span.map(|(start, end)| (start, end, new.as_str())))
        .collect::<Option<_>>()?;
    order.sort_unstable_by_key(|&(start, _, _)| start);
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut copied = 0;
    for (start, end, new) in order {
        if start < copied {
            return None;
        }
        out.extend_from_slice(&line[copied..start]);
        let quoted = serde_json::to_string(new).ok()?;
        out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
        copied = end;
    }
    out.extend_from_slice(&line[copied..]);
    Some(out)
}

/// Fixes the paths of every call in a `tool_calls` array; returns true when one changed.
fn fix_calls(tools: &ToolFixer, calls: Option<&mut Value>, hits: &mut Vec<Hit>) -> bool {
    let Some(Value::Array(calls)) = calls else {
        return false;
    };
    let mut changed = false;
    for call in calls {
        let Some(function) = call.get_mut("function").and_then(Value::as_object_mut) else {
            continue;
        };
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(arguments) = function.get_mut("arguments") {
            let (found, fixed) = fix_arguments_value(tools, &name, arguments);
            hits.extend(found);
            changed |= fixed;
        }
    }
    changed
}

/// Fixes one call's arguments: an object (Ollama) in place, or a JSON string (OpenAI) parsed,
/// fixed and written back (only when something changed). Returns the hits and whether the
/// value changed.
fn fix_arguments_value(tools: &ToolFixer, name: &str, arguments: &mut Value) -> (Vec<Hit>, bool) {
    match arguments {
        Value::Object(object) => {
            let before = object.clone();
            let hits = tools.fix(name, object);
            let changed = *object != before;
            (hits, changed)
        }
        Value::String(text) => {
            let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text) else {
                return (Vec::new(), false);
            };
            let before = object.clone();
            let hits = tools.fix(name, &mut object);
            if object == before {
                return (hits, false);
            }
            match serde_json::to_string(&Value::Object(object)) {
                Ok(fixed) => {
                    *text = fixed;
                    (hits, true)
                }
                Err(_) => (hits, false),
            }
        }
        _ => (Vec::new(), false),
    }
}

/// An optional string borrowed from the line when it has no escapes (serde's own `Cow`
/// inside an `Option` always copies).
fn borrowed<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    let text: Option<Text<'de>> = serde::Deserialize::deserialize(deserializer)?;
    Ok(text.map(|t| t.0))
}

/// The fields of an NDJSON line the rewriter needs, borrowed from the line.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    response: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<PeekMessage<'a>>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PeekMessage<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    thinking: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

impl<'a> Peek<'a> {
    /// The texts of [`ndjson_fields`], in that order.
    fn texts(self, endpoint: Endpoint) -> [Option<Cow<'a, str>>; 2] {
        match endpoint {
            Endpoint::Generate => [self.response, self.thinking],
            _ => match self.message {
                Some(message) => [message.content, message.thinking],
                None => [None, None],
            },
        }
    }
}

fn ndjson_fields(endpoint: Endpoint) -> [&'static str; 2] {
    match endpoint {
        Endpoint::Generate => ["response", "thinking"],
        _ => ["content", "thinking"],
    }
}

fn get_ndjson_text<'a>(
    chunk: &'a Map<String, Value>,
    endpoint: Endpoint,
    field: &str,
) -> Option<&'a str> {
    match endpoint {
        Endpoint::Generate => chunk.get(field)?.as_str(),
        _ => chunk.get("message")?.get(field)?.as_str(),
    }
}

fn set_ndjson_text(chunk: &mut Map<String, Value>, endpoint: Endpoint, field: &str, text: String) {
    match endpoint {
        Endpoint::Generate => {
            chunk.insert(field.into(), Value::String(text));
        }
        _ => {
            let message = chunk
                .entry("message")
                .or_insert_with(|| serde_json::json!({"role": "assistant"}));
            if let Some(message) = message.as_object_mut() {
                message.insert(field.into(), Value::String(text));
            }
        }
    }
}

fn sse_text(endpoint: Endpoint, choice: &Value) -> Option<&str> {
    match endpoint {
        Endpoint::OpenaiCompletions => choice.get("text")?.as_str(),
        _ => choice.get("delta")?.get("content")?.as_str(),
    }
}

fn set_sse_text(endpoint: Endpoint, choice: &mut Value, text: String) {
    let Some(choice) = choice.as_object_mut() else {
        return;
    };
    match endpoint {
        Endpoint::OpenaiCompletions => {
            choice.insert("text".into(), Value::String(text));
        }
        _ => {
            let delta = choice
                .entry("delta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(delta) = delta.as_object_mut() {
                delta.insert("content".into(), Value::String(text));
            }
        }
    }
}

fn sse_choice(endpoint: Endpoint, index: u64, text: String) -> Value {
    match endpoint {
        Endpoint::OpenaiCompletions => {
            serde_json::json!({"index": index, "text": text, "finish_reason": null})
        }
        _ => serde_json::json!({"index": index, "delta": {"content": text}, "finish_reason": null}),
    }
}

fn write_line(chunk: &Map<String, Value>, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, chunk).is_ok() {
        out.push(b'\n');
    }
}

fn write_event(chunk: &Map<String, Value>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, chunk).is_ok() {
        out.extend_from_slice(b"\n\n");
    }
}

pub(crate) fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Length of the first complete SSE event (through its blank line), if there is one.
pub(crate) fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::tests::{compiled, replace, rule};
    use crate::rules::Action;

    fn gen_line(text: &str) -> String {
        format!(
            "{{\"model\":\"m\",\"created_at\":\"2025-01-20T14:32:45Z\",\"response\":{},\"done\":false}}\n",
            serde_json::to_string(text).unwrap()
        )
    }

    const GEN_DONE: &str = "{\"model\":\"m\",\"created_at\":\"2025-01-20T14:32:45Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"eval_count\":5}\n";

    fn no_confidential() -> Arc<Compiled> {
        compiled(vec![replace("no-conf", "confidential", "[redacted]")])
    }

    fn block_rm() -> Arc<Compiled> {
        compiled(vec![rule(
            "no-rm",
            Action::Block {
                find: Some("rm -rf".into()),
                pattern: None,
                case_insensitive: false,
                message: "[blocked by policy]".into(),
                max_len: 256,
            },
        )])
    }

    /// Feeds `pieces` one by one, checking no released prefix contains `secret`.
    fn run(rewriter: &mut Rewriter, pieces: &[String], secret: Option<&str>) -> String {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(rewriter.feed(piece.as_bytes()));
            let so_far = String::from_utf8_lossy(&out);
            if let Some(secret) = secret {
                assert!(!so_far.contains(secret), "leaked {secret:?}: {so_far}");
            }
        }
        out.extend(rewriter.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ndjson_generate_straddling_match() {
        let pieces = vec![
            gen_line("The "),
            gen_line("confid"),
            gen_line("ential"),
            gen_line(" report"),
            GEN_DONE.to_string(),
        ];
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
        let out = run(&mut rewriter, &pieces, Some("confid"));
        assert_eq!(out.lines().count(), 5, "no line added or lost");
        let hits = rewriter.take_hits();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].detected, "confidential");
        insta::assert_snapshot!(out);
    }

    #[test]
    fn untouched_lines_keep_their_exact_bytes() {
        let odd = "{ \"response\" : \"hello\",\"done\":false ,\"z\":1, \"a\":2}\n";
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
        assert_eq!(rewriter.feed(odd.as_bytes()), odd.as_bytes());
        let not_json = "garbage line\n";
        assert_eq!(rewriter.feed(not_json.as_bytes()), not_json.as_bytes());
    }

    #[test]
    fn rewritten_lines_keep_key_order() {
        let line = "{\"zeta\":1,\"response\":\"confidential\",\"alpha\":2,\"done\":true}\n";
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
        let out = String::from_utf8(rewriter.feed(line.as_bytes())).unwrap();
        assert_eq!(
            out,
            "{\"zeta\":1,\"response\":\"[redacted]\",\"alpha\":2,\"done\":true}\n"
        );
    }

    #[test]
    fn a_held_line_waits_whole_and_goes_as_it_came() {
        let pieces = [gen_line("it is confid"), GEN_DONE.to_string()];
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
        let first = rewriter.feed(pieces[0].as_bytes());
        assert!(first.is_empty(), "the line waits while its text is held");
        assert_eq!(rewriter.held_chars(), "it is confid".len());
        let out = run(&mut rewriter, &pieces[1..], None);
        // Nothing matched in the end: both lines go byte for byte as they came.
        assert_eq!(out, pieces.concat());
    }

    #[test]
    fn lines_piling_up_behind_a_held_word_are_sent_rewritten_past_the_cap() {
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
        let mut sent = rewriter.feed(gen_line("it is confid").as_bytes()).len();
        assert_eq!(sent, 0, "the line waits");
        let empty = gen_line("");
        for _ in 0..(MAX_WAITING / empty.len() + 2) {
            sent += rewriter.feed(empty.as_bytes()).len();
        }
        assert!(sent > 0, "lines went out once the cap was passed");
        assert!(rewriter.delay.queued_bytes() <= MAX_WAITING);
        // Nothing leaked before the match is decided, and the text is whole at the end.
        let out = run(
            &mut rewriter,
            &["{\"response\":\"ential\",\"done\":true}\n".to_string()],
            None,
        );
        assert!(out.contains("[redacted]"), "{out}");
    }

    #[test]
    fn held_text_changed_at_the_end_goes_in_the_waiting_line() {
        let pieces = [
            gen_line("it is confid"),
            GEN_DONE.replace("\"response\":\"\"", "\"response\":\"ential\""),
        ];
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
        let out = run(&mut rewriter, &pieces, None);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["response"], "it is [redacted]", "{out}");
        assert_eq!(lines[1]["response"], "");
        assert_eq!(lines[1]["done"], true);
        assert_eq!(lines[1]["eval_count"], 5);
    }

    #[test]
    fn held_text_is_released_before_an_error_line() {
        let pieces = [
            gen_line("it is confid"),
            "{\"error\":\"model crashed\"}\n".to_string(),
        ];
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
        let out = run(&mut rewriter, &pieces, None);
        // The waiting line (its text decided clean at the end), then the error line last.
        assert_eq!(out, pieces.concat());
    }

    #[test]
    fn framing_survives_any_split_of_the_bytes() {
        let whole: String = [
            gen_line("The "),
            gen_line("confid"),
            gen_line("ential é"),
            GEN_DONE.to_string(),
        ]
        .concat();
        let expected = {
            let mut r = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
            let mut out = r.feed(whole.as_bytes());
            out.extend(r.finish());
            out
        };
        for cut in 0..=whole.len() {
            let mut r = Rewriter::new(no_confidential(), Endpoint::Generate, Format::Ndjson);
            let mut out = r.feed(&whole.as_bytes()[..cut]);
            out.extend(r.feed(&whole.as_bytes()[cut..]));
            out.extend(r.finish());
            assert_eq!(out, expected, "cut at {cut}");
        }
    }

    #[test]
    fn ndjson_chat_block_ends_the_stream() {
        let chat = |t: &str| {
            format!(
                "{{\"model\":\"m\",\"message\":{{\"role\":\"assistant\",\"content\":{}}},\"done\":false}}\n",
                serde_json::to_string(t).unwrap()
            )
        };
        let pieces = vec![chat("Run "), chat("rm -r"), chat("f / now"), chat("more")];
        let mut rewriter = Rewriter::new(block_rm(), Endpoint::Chat, Format::Ndjson);
        let out = run(&mut rewriter, &pieces, Some("rm -r"));
        assert!(rewriter.is_blocked());
        insta::assert_snapshot!(out);
    }

    #[test]
    fn sse_chat_stream_with_replace_and_done() {
        let event = |t: &str| {
            format!(
                "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
                serde_json::to_string(t).unwrap()
            )
        };
        let pieces = vec![
            event("The confid"),
            event("ential plan"),
            event(" is confidential"),
            "data: [DONE]\n\n".to_string(),
        ];
        let mut rewriter = Rewriter::new(no_confidential(), Endpoint::OpenaiChat, Format::Sse);
        let out = run(&mut rewriter, &pieces, Some("confid"));
        assert!(out.ends_with("data: [DONE]\n\n"));
        insta::assert_snapshot!(out);
    }

    #[test]
    fn sse_completions_block_sets_content_filter() {
        let event = |t: &str| {
            format!(
                "data: {{\"id\":\"c1\",\"choices\":[{{\"index\":0,\"text\":{},\"finish_reason\":null}}]}}\n\n",
                serde_json::to_string(t).unwrap()
            )
        };
        let pieces = vec![event("ok: rm"), event(" -rf /"), event("tail")];
        let mut rewriter = Rewriter::new(block_rm(), Endpoint::OpenaiCompletions, Format::Sse);
        let out = run(&mut rewriter, &pieces, Some("rm -rf"));
        assert!(out.contains("\"finish_reason\":\"content_filter\""));
        assert!(out.ends_with("data: [DONE]\n\n"));
        insta::assert_snapshot!(out);
    }

    /// Every kind at once (and a shadow rule), through both streaming protocols.
    fn every_kind() -> Arc<Compiled> {
        let mut shadow = replace("shadow-plan", "plan", "PLAN");
        shadow.mode = crate::rules::Mode::Shadow;
        compiled(vec![
            rule(
                "aws",
                Action::Redact {
                    detector: Some(crate::rules::Detector::AwsAccessKey),
                    pattern: None,
                    mask: "[AWS]".into(),
                    max_len: crate::rules::Detector::AwsAccessKey.max_len(),
                },
            ),
            replace("no-conf", "confidential", "[redacted]"),
            rule(
                "versions",
                Action::Regex {
                    pattern: r"v(\d)\.(\d)".into(),
                    replace: "version $1.$2".into(),
                    max_len: 16,
                },
            ),
            shadow,
            rule(
                "no-rm",
                Action::Block {
                    find: Some("rm -rf".into()),
                    pattern: None,
                    case_insensitive: false,
                    message: "[blocked]".into(),
                    max_len: 6,
                },
            ),
        ])
    }

    const EVERY_KIND_TOKENS: [&str; 9] = [
        "Use v1",
        ".2 with key AKIAIOS",
        "FODNN7EXAMPLE; the ",
        "confid",
        "ential plan",
        " is ready. ",
        "Then rm ",
        "-rf /tmp",
        " and more",
    ];

    #[test]
    fn every_kind_ndjson() {
        let pieces: Vec<String> = EVERY_KIND_TOKENS.iter().map(|t| gen_line(t)).collect();
        let mut rewriter = Rewriter::new(every_kind(), Endpoint::Generate, Format::Ndjson);
        let out = run(&mut rewriter, &pieces, Some("AKIA"));
        let hits: Vec<String> = rewriter
            .take_hits()
            .iter()
            .map(|h| {
                format!(
                    "{} shadow={} {:?} -> {:?}",
                    h.rule_id, h.shadow, h.detected, h.corrected
                )
            })
            .collect();
        insta::assert_snapshot!(format!("{out}\n{}", hits.join("\n")));
    }

    #[test]
    fn every_kind_sse() {
        let pieces: Vec<String> = EVERY_KIND_TOKENS
            .iter()
            .map(|t| {
                format!(
                    "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
                    serde_json::to_string(t).unwrap()
                )
            })
            .collect();
        let mut rewriter = Rewriter::new(every_kind(), Endpoint::OpenaiChat, Format::Sse);
        let out = run(&mut rewriter, &pieces, Some("AKIA"));
        insta::assert_snapshot!(out);
    }

    #[test]
    fn whole_json_bodies_for_each_endpoint() {
        let c = no_confidential();
        let cases = [
            (
                Endpoint::Generate,
                r#"{"model":"m","response":"a confidential b","done":true}"#,
            ),
            (
                Endpoint::Chat,
                r#"{"model":"m","message":{"role":"assistant","content":"confidential"},"done":true}"#,
            ),
            (
                Endpoint::OpenaiChat,
                r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"confidential!"},"finish_reason":"stop"}]}"#,
            ),
            (
                Endpoint::OpenaiCompletions,
                r#"{"id":"x","choices":[{"index":0,"text":"so confidential","finish_reason":"stop"}]}"#,
            ),
        ];
        let mut all = String::new();
        for (endpoint, body) in cases {
            let (out, hits) = rewrite_json(&c, endpoint, body.as_bytes()).unwrap();
            assert_eq!(hits.len(), 1);
            all.push_str(&format!(
                "{}: {}\n",
                endpoint.name(),
                String::from_utf8(out).unwrap()
            ));
        }
        assert!(rewrite_json(&c, Endpoint::Generate, br#"{"response":"fine"}"#).is_none());
        assert!(rewrite_json(&c, Endpoint::Generate, b"not json").is_none());
        insta::assert_snapshot!(all);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::patch::tests::{alphabet_text, compiled, rule_set};

    /// `text` cut at `cuts` into the text of streamed chunks.
    fn pieces(text: &str, cuts: &[usize]) -> Vec<String> {
        let mut bounds: Vec<usize> = cuts
            .iter()
            .map(|c| c % (text.len() + 1))
            .filter(|&c| text.is_char_boundary(c))
            .collect();
        bounds.extend([0, text.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        bounds
            .windows(2)
            .map(|w| text[w[0]..w[1]].to_string())
            .collect()
    }

    fn ndjson(pieces: &[String]) -> Vec<String> {
        let mut lines: Vec<String> = pieces
            .iter()
            .map(|p| {
                format!(
                    "{{\"model\":\"m\",\"response\":{},\"done\":false}}\n",
                    serde_json::to_string(p).unwrap()
                )
            })
            .collect();
        lines.push("{\"model\":\"m\",\"response\":\"\",\"done\":true,\"eval_count\":3}\n".into());
        lines
    }

    fn sse(pieces: &[String], bare_end: bool) -> Vec<String> {
        let mut events: Vec<String> = pieces
            .iter()
            .map(|p| format!("data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"text\":{},\"finish_reason\":null}}]}}\n\n", serde_json::to_string(p).unwrap()))
            .collect();
        events.push(if bare_end {
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\"}]}\n\n".into()
        } else {
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\n".into()
        });
        events.push("data: [DONE]\n\n".into());
        events
    }

    /// The texts of a rewritten stream, one per line or event.
    fn texts(out: &str, format: Format) -> Vec<String> {
        let units: Vec<&str> = match format {
            Format::Ndjson => out.lines().collect(),
            Format::Sse => out.split("\n\n").filter(|e| !e.is_empty()).collect(),
        };
        units
            .iter()
            .filter(|u| !u.contains("[DONE]"))
            .map(|u| {
                let v: Value = serde_json::from_str(u.strip_prefix("data: ").unwrap_or(u))
                    .unwrap_or_else(|e| panic!("{u:?}: {e}"));
                let text = match format {
                    Format::Ndjson => &v["response"],
                    Format::Sse => &v["choices"][0]["text"],
                };
                text.as_str().unwrap_or("").to_string()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whole lines and events wait and go as they came, or are rewritten: either way the
        /// text is what the rules make of the whole text, no line is lost or added, and a
        /// stream no rule changes goes out byte for byte.
        #[test]
        fn waiting_units_keep_the_text_and_the_bytes(
            rules in rule_set(),
            text in alphabet_text(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            byte_cuts in proptest::collection::vec(any::<usize>(), 0..6),
            sse_format in any::<bool>(),
            bare_end in any::<bool>(),
        ) {
            let c = compiled(rules);
            let whole = c.apply(&text);
            let pieces = pieces(&text, &cuts);
            let (format, endpoint, units) = if sse_format {
                (Format::Sse, Endpoint::OpenaiCompletions, sse(&pieces, bare_end))
            } else {
                (Format::Ndjson, Endpoint::Generate, ndjson(&pieces))
            };
            let input = units.concat();
            let mut rewriter = Rewriter::new(c.clone(), endpoint, format);
            let mut out = Vec::new();
            let mut at = 0;
            let mut splits: Vec<usize> = byte_cuts.iter().map(|b| b % (input.len() + 1)).collect();
            splits.push(input.len());
            splits.sort_unstable();
            for split in splits {
                out.extend(rewriter.feed(&input.as_bytes()[at..split]));
                at = split;
            }
            out.extend(rewriter.finish());
            let out = String::from_utf8(out).unwrap();
            let got = texts(&out, format).concat();
            prop_assert_eq!(&got, &whole.text, "{}", out);
            if whole.blocked.is_none() {
                prop_assert_eq!(texts(&out, format).len(), texts(&input, format).len(), "{}", out);
                if whole.text == text {
                    prop_assert_eq!(&out, &input);
                }
            }
        }
    }
}
