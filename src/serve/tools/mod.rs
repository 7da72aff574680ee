//! Tool calling for `rawrxd serve`, sans-IO: no HTTP, no engine. [`jinja`] renders a model's
//! Jinja chat template (messages with tool calls and results, the request's tools) the way
//! Hugging Face transformers does and reads from it which [`CallFormat`] the model was taught;
//! [`parse`] splits the generated text, as it streams, into text and [`ToolCall`]s in that
//! format; [`grammar`] builds the GBNF that forces a call (`tool_choice: "required"` or a
//! named function). [`python`] holds what Python prints (`str`, `json.dumps`, `strftime`), so
//! rendered prompts are byte-identical to transformers'.

pub mod grammar;
pub mod jinja;
pub mod parse;
pub mod python;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

pub use grammar::{forced_grammar, Forced};
pub use jinja::Jinja;
pub use parse::CallParser;

/// How a model writes a tool call in its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFormat {
    /// `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Qwen 2.5/3, Hermes).
    Hermes,
    /// A bare `{"name": …, "parameters"|"arguments": {…}}` at the start of the answer (more
    /// may follow, separated by whitespace or `;`), or JSON after `<|python_tag|>` (Llama 3.x).
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": {…}, "id"?: …}, …]` (Mistral), or one call a
    /// marker as newer Mistral templates write them, `[TOOL_CALLS]name[ARGS]{…}` (with
    /// `[CALL_ID]id` before `[ARGS]` or not). Forcing grammars use the list.
    Mistral,
    /// JSON (one call object, or a list of them) after `open` and, when given, before `close`:
    /// markers a template shows around the calls it renders.
    Tagged { open: String, close: Option<String> },
}

impl CallFormat {
    /// The markers that open a call, each with the marker that must close it (if any).
    pub(crate) fn markers(&self) -> Vec<(String, Option<String>)> {
        match self {
            CallFormat::Hermes => vec![("<tool_call>".into(), Some("</tool_call>".into()))],
            CallFormat::Llama3 => vec![("<|python_tag|>".into(), None)],
            CallFormat::Mistral => vec![("[TOOL_CALLS]".into(), None)],
            CallFormat::Tagged { open, close } => vec![(open.clone(), close.clone())],
        }
    }

    /// A tool-call id of the shape this format's templates accept: Mistral's insist on nine
    /// letters and digits, the others take OpenAI's `call_…`.
    pub fn call_id(&self) -> String {
        match self {
            CallFormat::Mistral => random_alphanumeric(9),
            _ => openai_tool_call_id(),
        }
    }
}

/// One tool call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

/// What the parser releases: text for the client, or a finished call.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

/// A tool of the request, as the model needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// The JSON schema of the arguments (`{"type": "object"}` when the tool gives none).
    pub parameters: Value,
}

/// Reads the request's `tools` (`{"type": "function", "function": {"name", "description",
/// "parameters"}}`; a bare `{"name", …}` object is taken too). A tool without a name, of
/// another type, or with parameters that are not an object is an error naming it.
pub fn parse_tools(tools: &[Value]) -> Result<Vec<ToolDef>, String> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let kind = tool
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("function");
            if kind != "function" {
                return Err(format!(
                    "tools[{i}]: type {kind:?} is not supported (only \"function\")"
                ));
            }
            let function = tool.get("function").unwrap_or(tool);
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("tools[{i}]: the function has no name"))?;
            let description = match function.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(format!("tools[{i}] ({name}): description is not a string")),
            };
            let parameters = match function.get("parameters") {
                None | Some(Value::Null) => serde_json::json!({"type": "object"}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    return Err(format!(
                        "tools[{i}] ({name}): parameters must be a JSON schema object"
                    ))
                }
            };
            Ok(ToolDef {
                name: name.to_string(),
                description,
                parameters,
            })
        })
        .collect()
}

/// A fresh OpenAI-style tool-call id: `call_` and 24 letters and digits.
pub fn openai_tool_call_id() -> String {
    format!("call_{}", random_alphanumeric(24))
}

/// `len` random letters and digits (not for secrets: std's per-process random hash keys and
/// a counter).
fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = RandomState::new();
    let mut out = String::with_capacity(len);
    let mut word = 0u64;
    let mut left = 0;
    for _ in 0..len {
        if left == 0 {
            let mut h = state.build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            word = h.finish();
            left = 10; // 10 draws of 6 bits from 64
        }
        out.push(char::from(ALPHABET[(word % 62) as usize]));
        word /= 64;
        left -= 1;
    }
    out
}

#[cfg(test)]
mod tests;
