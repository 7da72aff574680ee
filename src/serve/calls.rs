//! Tool calls on the wire: the tool calls of a request's messages made ready for a chat
//! template, OpenAI's `tool_choice`, and the calls a model makes turned into Ollama's and
//! OpenAI's response shapes.
//!
//! Ollama sends a call as one chunk whose `message.tool_calls` holds it, arguments as an
//! object; OpenAI as `delta.tool_calls` (`index`, `id`, arguments as a JSON string) and ends
//! with `finish_reason: "tool_calls"`. The splitting of the generated text into text and calls
//! is [`super::tools::CallParser`]'s; this module numbers the calls and gives them ids.

use serde_json::{json, Map, Value};

use super::tools::{CallFormat, CallParser, Forced, Piece, ToolCall};

/// A request message's tool call, as templates expect it: `{"id"?, "type": "function",
/// "function": {"name", "arguments"}}` with the arguments as an object. Ollama sends them as an
/// object, OpenAI as a JSON string (parsed here; a string that is not a JSON object stays a
/// string).
pub fn normalize_call(call: &Value) -> Result<Value, String> {
    let function = call
        .get("function")
        .ok_or("a tool call has no \"function\"")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("a tool call's function has no name")?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::String(s.clone()),
        },
        Some(other) => other.clone(),
    };
    let mut out = Map::new();
    if let Some(id) = call.get("id").filter(|v| v.is_string()) {
        out.insert("id".into(), id.clone());
    }
    out.insert("type".into(), json!("function"));
    out.insert(
        "function".into(),
        json!({"name": name, "arguments": arguments}),
    );
    Ok(Value::Object(out))
}

/// A request message's `tool_calls` (absent: none), each normalized ([`normalize_call`]).
pub fn normalize_calls(calls: Option<Vec<Value>>) -> Result<Vec<Value>, String> {
    calls
        .unwrap_or_default()
        .iter()
        .map(normalize_call)
        .collect()
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The model decides (`"auto"`, absent, and always on Ollama's API).
    Auto,
    /// No calls: the tools are not shown to the model.
    None,
    /// A call is required (`"required"`) or a named one (`{"type": "function", "function":
    /// {"name": …}}`): generation is constrained by a grammar.
    Forced(Forced),
}

impl Choice {
    pub fn parse(value: Option<&Value>) -> Result<Choice, String> {
        match value {
            None | Some(Value::Null) => Ok(Choice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(Choice::Auto),
                "none" => Ok(Choice::None),
                "required" => Ok(Choice::Forced(Forced::Any)),
                other => Err(format!(
                    "invalid tool_choice {other:?}: use \"auto\", \"none\", \"required\" or a function"
                )),
            },
            Some(object @ Value::Object(_)) => object
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(|n| Choice::Forced(Forced::Named(n.to_string())))
                .ok_or_else(|| {
                    "invalid tool_choice: a function choice needs {\"type\": \"function\", \
                     \"function\": {\"name\": …}}"
                        .to_string()
                }),
            Some(_) => Err("invalid tool_choice: a string or an object".into()),
        }
    }
}

/// A call the model made, numbered in its answer and with an id.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub index: usize,
    pub id: String,
    pub call: ToolCall,
}

/// What an answer releases: text, or a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Text(String),
    Call(Issued),
}

/// The calls of one answer, as it streams.
pub struct Calls {
    parser: CallParser,
    format: CallFormat,
    made: usize,
}

impl Calls {
    pub fn new(format: CallFormat, tool_names: Vec<String>) -> Calls {
        Calls {
            parser: CallParser::new(format.clone(), tool_names),
            format,
            made: 0,
        }
    }

    /// Generated text in; what can be released now out.
    pub fn push(&mut self, text: &str) -> Vec<Out> {
        let pieces = self.parser.push(text);
        self.number(pieces)
    }

    /// The end of the answer: whatever was held (an unfinished call comes out as text).
    pub fn finish(&mut self) -> Vec<Out> {
        let pieces = self.parser.finish();
        self.number(pieces)
    }

    /// Whether the format's markers may be control tokens, which the engine must then write
    /// out as text (Mistral's `[TOOL_CALLS]`, Llama 3's `<|python_tag|>`; Hermes' `<tool_call>`
    /// is an ordinary token).
    pub fn marks_with_control_tokens(&self) -> bool {
        !matches!(self.format, CallFormat::Hermes)
    }

    /// Calls released so far.
    pub fn made(&self) -> usize {
        self.made
    }

    fn number(&mut self, pieces: Vec<Piece>) -> Vec<Out> {
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Text(text) => Out::Text(text),
                Piece::Call(call) => {
                    let issued = Issued {
                        index: self.made,
                        id: self.format.call_id(),
                        call,
                    };
                    self.made += 1;
                    Out::Call(issued)
                }
            })
            .collect()
    }
}

/// A call in Ollama's shape (`message.tool_calls[]`).
pub fn ollama_call(issued: &Issued) -> Value {
    json!({
        "id": issued.id,
        "function": {
            "index": issued.index,
            "name": issued.call.name,
            "arguments": issued.call.arguments,
        },
    })
}

/// A call in OpenAI's shape: `delta.tool_calls[]` (with `index`) when `streamed`, else
/// `message.tool_calls[]`; the arguments as a JSON string either way.
pub fn openai_call(issued: &Issued, streamed: bool) -> Value {
    let mut out = json!({
        "id": issued.id,
        "type": "function",
        "function": {
            "name": issued.call.name,
            "arguments": issued.call.arguments.to_string(),
        },
    });
    if streamed {
        out["index"] = json!(issued.index);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_of_both_apis_are_normalized_with_object_arguments() {
        let ollama = json!({"function": {"name": "get", "arguments": {"city": "Paris"}}});
        assert_eq!(
            normalize_call(&ollama).unwrap(),
            json!({"type": "function", "function": {"name": "get", "arguments": {"city": "Paris"}}})
        );
        let openai = json!({"id": "call_1", "type": "function",
                            "function": {"name": "get", "arguments": "{\"city\": \"Paris\"}"}});
        assert_eq!(
            normalize_call(&openai).unwrap(),
            json!({"id": "call_1", "type": "function",
                   "function": {"name": "get", "arguments": {"city": "Paris"}}})
        );
        // Not JSON: kept as the string the client sent.
        let odd = json!({"function": {"name": "get", "arguments": "city=Paris"}});
        assert_eq!(
            normalize_call(&odd).unwrap()["function"]["arguments"],
            "city=Paris"
        );
        assert!(normalize_call(&json!({"function": {}})).is_err());
        assert!(normalize_call(&json!({"name": "x"})).is_err());
    }

    #[test]
    fn tool_choice_values() {
        assert_eq!(Choice::parse(None).unwrap(), Choice::Auto);
        assert_eq!(Choice::parse(Some(&json!("auto"))).unwrap(), Choice::Auto);
        assert_eq!(Choice::parse(Some(&json!("none"))).unwrap(), Choice::None);
        assert_eq!(
            Choice::parse(Some(&json!("required"))).unwrap(),
            Choice::Forced(Forced::Any)
        );
        assert_eq!(
            Choice::parse(Some(
                &json!({"type": "function", "function": {"name": "f"}})
            ))
            .unwrap(),
            Choice::Forced(Forced::Named("f".into()))
        );
        assert!(Choice::parse(Some(&json!("always"))).is_err());
        assert!(Choice::parse(Some(&json!({"type": "function"}))).is_err());
        assert!(Choice::parse(Some(&json!(3))).is_err());
    }

    #[test]
    fn calls_are_numbered_and_shaped_per_api() {
        let mut calls = Calls::new(CallFormat::Hermes, vec!["get".into()]);
        let mut out = calls.push("Let me look.<tool_call>\n{\"name\": \"get\", ");
        out.extend(calls.push("\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
        out.extend(calls.push("<tool_call>{\"name\": \"get\", \"arguments\": {}}</tool_call>"));
        out.extend(calls.finish());
        let text: String = out
            .iter()
            .filter_map(|o| match o {
                Out::Text(t) => Some(t.as_str()),
                Out::Call(_) => None,
            })
            .collect();
        assert_eq!(text.trim(), "Let me look.");
        let issued: Vec<&Issued> = out
            .iter()
            .filter_map(|o| match o {
                Out::Call(i) => Some(i),
                Out::Text(_) => None,
            })
            .collect();
        assert_eq!(issued.len(), 2);
        assert_eq!(calls.made(), 2);
        assert_eq!((issued[0].index, issued[1].index), (0, 1));
        assert_ne!(issued[0].id, issued[1].id);
        let o = ollama_call(issued[0]);
        assert_eq!(o["function"]["arguments"], json!({"city": "Paris"}));
        assert_eq!(o["function"]["name"], "get");
        let streamed = openai_call(issued[0], true);
        assert_eq!(streamed["index"], 0);
        assert_eq!(streamed["type"], "function");
        let args: Value =
            serde_json::from_str(streamed["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        assert!(openai_call(issued[1], false).get("index").is_none());
    }
}
