//! The GBNF (llama.cpp grammar) that forces a tool call, for OpenAI's `tool_choice:
//! "required"` or `{"type": "function", "function": {"name": …}}`. Its language is exactly one
//! call in the model's [`CallFormat`] (for `Any`, of any one of the tools; several calls are
//! left to unforced turns), with arguments matching the tool's `parameters` schema: llama.cpp's
//! `json_schema_to_grammar` builds the call object, whose `root` rule is renamed and wrapped
//! in the format's markers.

use serde_json::{json, Value};

use super::{parse_tools, CallFormat, ToolDef};

/// Which call a request forces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forced {
    /// Some call, of any of the request's tools.
    Any,
    /// A call of this tool.
    Named(String),
}

/// The grammar's rule for the call object (json_schema_to_grammar's `root`, renamed).
const CALL_RULE: &str = "rawrxd-call";

/// GBNF whose language is one call in `format` of the forced tool(s) of `tools` (the
/// request's tool objects), arguments following the tool's `parameters`. Its root rule is
/// `root`.
pub fn forced_grammar(
    tools: &[Value],
    forced: &Forced,
    format: &CallFormat,
) -> Result<String, String> {
    let defs = parse_tools(tools)?;
    let chosen: Vec<&ToolDef> = match forced {
        Forced::Any => defs.iter().collect(),
        Forced::Named(name) => defs.iter().filter(|d| &d.name == name).take(1).collect(),
    };
    if chosen.is_empty() {
        return Err(match forced {
            Forced::Any => "tool_choice requires a call, but the request has no tools".into(),
            Forced::Named(name) => format!("tool_choice names {name:?}, which is not in tools"),
        });
    }
    // Llama 3 models are taught `parameters`; the others `arguments`.
    let key = if *format == CallFormat::Llama3 {
        "parameters"
    } else {
        "arguments"
    };
    let objects: Vec<Value> = chosen
        .iter()
        .map(|d| {
            json!({
                "type": "object",
                "properties": {"name": {"const": d.name}, key: d.parameters},
                "required": ["name", key],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = match <[Value; 1]>::try_from(objects) {
        Ok([one]) => one,
        Err(many) => json!({ "anyOf": many }),
    };
    let object = llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map_err(|e| format!("cannot build a grammar for the tools' parameters: {e}"))?;
    let object = rename_root(&object)?;
    let root = match format {
        CallFormat::Hermes => format!(
            "{} {CALL_RULE} {}",
            literal("<tool_call>\n"),
            literal("\n</tool_call>")
        ),
        CallFormat::Llama3 => CALL_RULE.to_string(),
        CallFormat::Mistral => format!("{} {CALL_RULE} {}", literal("[TOOL_CALLS]["), literal("]")),
        CallFormat::Tagged { open, close } => match close {
            Some(close) => format!("{} {CALL_RULE} {}", literal(open), literal(close)),
            None => format!("{} {CALL_RULE}", literal(open)),
        },
    };
    Ok(format!("root ::= {root}\n{object}"))
}

/// `grammar` with its `root` rule renamed to [`CALL_RULE`] (definition and any reference).
fn rename_root(grammar: &str) -> Result<String, String> {
    if grammar.contains(CALL_RULE) {
        return Err(format!(
            "the generated grammar already has a rule {CALL_RULE}"
        ));
    }
    let mut found = false;
    let lines: Vec<String> = grammar
        .lines()
        .map(|line| match line.strip_prefix("root ::=") {
            Some(rest) => {
                found = true;
                format!("{CALL_RULE} ::={rest}")
            }
            None => line.to_string(),
        })
        .collect();
    if !found {
        return Err("the generated grammar has no root rule".into());
    }
    Ok(lines.join("\n") + "\n")
}

/// A GBNF string literal matching `text` exactly. (Not JSON's string syntax: GBNF has no
/// `\b` or `\f`, and takes `\xHH`.)
fn literal(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
