//! Splits a model's answer, as it streams, into text and tool calls.
//!
//! Ordinary text goes out at once. Text is held back only while it could still be the start
//! of a call marker (`<tool_call>`, `[TOOL_CALLS]`, …), while the JSON after a marker is still
//! open, or (Llama 3) while a `{` object at the start of the answer is still open. A call that
//! turns out malformed (bad JSON, unknown tool, arguments not an object, a missing closing
//! marker, or more than [`MAX_CALL`] bytes) goes out as text, exactly the bytes the model
//! wrote; so does whatever is still held when the answer ends. Every decision depends on the
//! text alone, never on how it was cut into pieces: for any split, the pieces (adjacent texts
//! joined) are the same as for the whole answer at once.

use serde_json::{Map, Value};

use super::{CallFormat, Piece, ToolCall};

/// Longest call (marker to end) held back; a longer one goes out as text.
pub const MAX_CALL: usize = 1 << 20;

/// The streaming call parser of one answer.
#[derive(Debug)]
pub struct CallParser {
    /// Opening markers, each with the marker that must close its call (if any).
    markers: Vec<(String, Option<String>)>,
    /// Llama 3: a JSON object where the answer starts (or right after a call) is a call.
    bare: bool,
    /// Mistral: `[TOOL_CALLS]name[ARGS]{…}` too, besides `[TOOL_CALLS][{…}]`.
    named: bool,
    names: Vec<String>,
    /// Text not yet released; it starts at the undecided part.
    held: String,
    /// Only whitespace (or `;` between calls) so far: a bare `{` here starts a call.
    at_start: bool,
    /// The scan of an open call's JSON (which starts at this offset of `held`), kept while
    /// more text is awaited.
    scanning: Option<(usize, Scanner)>,
}

/// How far a JSON value starting with `{` or `[` goes.
enum Scan {
    /// It ends at this byte offset (exclusive).
    Complete(usize),
    /// A closing bracket that does not match: not JSON, up to this offset.
    Broken(usize),
    /// Still open.
    Open,
}

/// Finds where a JSON value starting with `{` or `[` ends, resumably: text that arrives later
/// is scanned from where the last run stopped, so a long call costs linear time.
#[derive(Debug, Default)]
struct Scanner {
    /// Bytes of the value already scanned.
    pos: usize,
    /// The closing brackets owed.
    stack: Vec<char>,
    in_string: bool,
    escaped: bool,
}

impl Scanner {
    /// Scans `s`, which extends the text of earlier runs; offsets are in `s`.
    fn run(&mut self, s: &str) -> Scan {
        let from = self.pos.min(s.len());
        for (i, c) in s[from..].char_indices() {
            let i = from + i;
            if self.in_string {
                match c {
                    _ if self.escaped => self.escaped = false,
                    '\\' => self.escaped = true,
                    '"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' => self.stack.push('}'),
                '[' => self.stack.push(']'),
                '}' | ']' => {
                    if self.stack.pop() != Some(c) {
                        return Scan::Broken(i + 1);
                    }
                    if self.stack.is_empty() {
                        return Scan::Complete(i + 1);
                    }
                }
                _ if self.stack.is_empty() => return Scan::Broken(i),
                _ => {}
            }
        }
        self.pos = s.len();
        Scan::Open
    }
}

fn scan(s: &str) -> Scan {
    Scanner::default().run(s)
}

/// The end of the JSON object or array `s` starts with, if it is complete and balanced.
pub(crate) fn json_end(s: &str) -> Option<usize> {
    match scan(s) {
        Scan::Complete(end) => Some(end),
        _ => None,
    }
}

/// The calls a JSON value holds: one call object, or a non-empty list of them, each with a
/// known `name` and `arguments` (or `parameters`) that is an object or a string holding one.
/// With `name` (Mistral's `name[ARGS]{…}`), the value is the arguments of that one call.
fn calls(json: &str, name: Option<&str>, names: &[String]) -> Option<Vec<ToolCall>> {
    let value: Value = serde_json::from_str(json).ok()?;
    let one = |name: Option<&str>, arguments: Option<&Value>| -> Option<ToolCall> {
        let name = name?;
        if !names.iter().any(|n| n == name) {
            return None;
        }
        let arguments = match arguments {
            None => Value::Object(Map::new()),
            Some(Value::Object(o)) => Value::Object(o.clone()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s).ok()? {
                v @ Value::Object(_) => v,
                _ => return None,
            },
            Some(_) => return None,
        };
        Some(ToolCall {
            name: name.to_string(),
            arguments,
        })
    };
    let object = |v: &Value| -> Option<ToolCall> {
        let object = v.as_object()?;
        let arguments = object.get("arguments").or_else(|| object.get("parameters"));
        one(object.get("name")?.as_str(), arguments)
    };
    match (&value, name) {
        (Value::Object(_), Some(name)) => one(Some(name), Some(&value)).map(|c| vec![c]),
        (_, Some(_)) => None,
        (Value::Array(items), None) if !items.is_empty() => items.iter().map(object).collect(),
        (Value::Object(_), None) => object(&value).map(|c| vec![c]),
        _ => None,
    }
}

/// `name[ARGS]` or `name[CALL_ID]id[ARGS]` (Mistral's newer templates) at the start of `s`:
/// the name and where the arguments start, `Ok(None)` while it could still become one, `Err`
/// when it cannot.
fn named_head(s: &str) -> Result<Option<(&str, usize)>, ()> {
    const ARGS: &str = "[ARGS]";
    const CALL_ID: &str = "[CALL_ID]";
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let name_len = s.find(|c: char| !word(c)).unwrap_or(s.len());
    if name_len == 0 {
        return Err(());
    }
    let mut rest = &s[name_len..];
    let mut at = name_len;
    if let Some(after) = rest.strip_prefix(CALL_ID) {
        let id_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        at += CALL_ID.len() + id_len;
        rest = &after[id_len..];
    } else if !rest.is_empty() && CALL_ID.starts_with(rest) && !ARGS.starts_with(rest) {
        return Ok(None);
    }
    if rest.starts_with(ARGS) {
        Ok(Some((&s[..name_len], at + ARGS.len())))
    } else if ARGS.starts_with(rest) || CALL_ID.starts_with(rest) {
        Ok(None)
    } else {
        Err(())
    }
}

/// What the held text starts with.
enum Step {
    /// Release this many bytes as text.
    Text(usize),
    /// These calls, made by this many bytes.
    Calls(Vec<ToolCall>, usize),
    /// Nothing can be decided until more text comes.
    Wait,
}

impl CallParser {
    /// A parser for `format`; only calls of `tool_names` are calls (none when it is empty).
    pub fn new(format: CallFormat, tool_names: Vec<String>) -> CallParser {
        let bare = format == CallFormat::Llama3;
        CallParser {
            markers: format
                .markers()
                .into_iter()
                .filter(|(open, _)| !open.is_empty())
                .collect(),
            bare,
            named: format == CallFormat::Mistral,
            names: tool_names,
            held: String::new(),
            at_start: bare,
            scanning: None,
        }
    }

    /// Feeds generated text; returns what can be released now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        self.drain(false)
    }

    /// The end of the answer: releases everything held (an unfinished call as text).
    pub fn finish(&mut self) -> Vec<Piece> {
        self.drain(true)
    }

    fn drain(&mut self, end: bool) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        while !self.held.is_empty() {
            let step = match self.step() {
                Step::Wait if end => Step::Text(self.held.len()),
                step => step,
            };
            match step {
                Step::Wait => break,
                Step::Text(n) => {
                    self.scanning = None;
                    let n = n.clamp(1, self.held.len());
                    let n = (n..=self.held.len())
                        .find(|&i| self.held.is_char_boundary(i))
                        .unwrap_or(self.held.len());
                    let text: String = self.held.drain(..n).collect();
                    if let Some(Piece::Text(last)) = out.last_mut() {
                        last.push_str(&text);
                    } else {
                        out.push(Piece::Text(text));
                    }
                }
                Step::Calls(calls, n) => {
                    self.scanning = None;
                    self.held.drain(..n.min(self.held.len()));
                    out.extend(calls.into_iter().map(Piece::Call));
                    self.at_start = self.bare;
                }
            }
        }
        out
    }

    fn step(&mut self) -> Step {
        let held = self.held.as_str();
        if self.at_start {
            let rest = held.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
            let skipped = held.len() - rest.len();
            if skipped > 0 {
                return Step::Text(skipped);
            }
            if rest.starts_with('{') {
                self.at_start = false;
                return match self.call_at(0, None) {
                    // Not a call: the object is text, and the answer is under way.
                    Step::Text(n) => Step::Text(n),
                    other => {
                        // Still undecided, or calls: the start stays a call position.
                        self.at_start = true;
                        other
                    }
                };
            }
            self.at_start = false;
        }
        let held = self.held.as_str();
        for (at, _) in held.char_indices() {
            let tail = &held[at..];
            for index in 0..self.markers.len() {
                let open = &self.markers[index].0;
                if tail.starts_with(open.as_str()) {
                    if at > 0 {
                        return Step::Text(at);
                    }
                    let close = self.markers[index].1.clone();
                    return self.call_at(open.len(), close.as_deref());
                }
                if open.starts_with(tail) {
                    // Could still become this marker.
                    return if at > 0 { Step::Text(at) } else { Step::Wait };
                }
            }
        }
        Step::Text(held.len())
    }

    /// The call whose marker (if any) starts the held text and whose JSON follows after
    /// `skip` bytes (and whitespace), closed by `close` when given. Only its first
    /// [`MAX_CALL`] bytes are looked at: a call that does not end within them is text (those
    /// bytes; the rest is read again), whether they arrived at once or in pieces.
    fn call_at(&mut self, skip: usize, close: Option<&str>) -> Step {
        let full = self.held.len() >= MAX_CALL;
        let limit = (0..=MAX_CALL.min(self.held.len()))
            .rev()
            .find(|&i| self.held.is_char_boundary(i))
            .unwrap_or(0);
        let wait = if full { Step::Text(limit) } else { Step::Wait };
        let held = &self.held[..limit];
        let after = &held[skip.min(limit)..];
        let body = after.trim_start();
        if body.is_empty() {
            return wait;
        }
        let mut json_at = limit - body.len();
        let mut name = None;
        if !body.starts_with(['{', '[']) {
            let head = if self.named && skip > 0 {
                named_head(body)
            } else {
                Err(())
            };
            match head {
                // Only the marker is text; what follows is read again.
                Err(()) => return Step::Text(skip.max(1)),
                Ok(None) => return wait,
                Ok(Some((named, args_at))) => {
                    let args = held[json_at + args_at..].trim_start();
                    if args.is_empty() {
                        return wait;
                    }
                    name = Some(named.to_string());
                    json_at = limit - args.len();
                    if !args.starts_with('{') {
                        return Step::Text(json_at);
                    }
                }
            }
        }
        let body = &held[json_at..];
        let mut scanner = match self.scanning.take() {
            Some((at, scanner)) if at == json_at => scanner,
            _ => Scanner::default(),
        };
        let json_len = match scanner.run(body) {
            Scan::Open => {
                self.scanning = Some((json_at, scanner));
                return wait;
            }
            Scan::Broken(n) => return Step::Text(json_at + n),
            Scan::Complete(n) => n,
        };
        let json_end = json_at + json_len;
        let end = match close {
            None => json_end,
            Some(close) => {
                let rest = &held[json_end..];
                let trimmed = rest.trim_start();
                let close_at = json_end + (rest.len() - trimmed.len());
                if trimmed.starts_with(close) {
                    close_at + close.len()
                } else if close.starts_with(trimmed) {
                    // Whitespace, or the start of the closing marker, so far.
                    return wait;
                } else {
                    return Step::Text(json_end);
                }
            }
        };
        match calls(&body[..json_len], name.as_deref(), &self.names) {
            Some(calls) => Step::Calls(calls, end),
            None => Step::Text(end),
        }
    }
}
