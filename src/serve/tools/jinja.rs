//! A model's Jinja chat template, compiled once and rendered the way Hugging Face
//! transformers' `apply_chat_template` does: `trim_blocks` and `lstrip_blocks`, loop controls,
//! jinja2's lenient undefined, `raise_exception(msg)` (an error), `strftime_now(fmt)` (UTC),
//! a `tojson` that is `json.dumps(x, ensure_ascii=False)` with its `indent`, `separators`,
//! `sort_keys` and `ensure_ascii` arguments, Python's string/dict/list methods
//! (`minijinja-contrib`'s `pycompat`), and values printed as Python prints them.
//! The variables: `messages`, `tools` (`None` when the request has none),
//! `add_generation_prompt`, `bos_token`, `eos_token`. One difference is known and kept: a
//! `for` over `none` renders nothing here, where jinja2 raises (Hermes 2 Pro's tool-use
//! template without tools); `tests/tool_templates.rs` pins every other case to jinja2's bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::json;

use super::parse::json_end;
use super::python::{self, Dumps};
use super::CallFormat;

const NAME: &str = "chat_template";

/// A compiled chat template.
pub struct Jinja {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    uses_tools: bool,
    format: Option<CallFormat>,
}

impl std::fmt::Debug for Jinja {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jinja")
            .field("uses_tools", &self.uses_tools)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Jinja {
    /// Compiles a chat template once (per model). `bos_token`/`eos_token` are the model's
    /// BOS/EOS token texts.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Jinja, String> {
        let env = environment(source)?;
        let uses_tools = env
            .get_template(NAME)
            .map(|t| t.undeclared_variables(false).contains("tools"))
            .map_err(|e| describe(&e))?;
        let mut jinja = Jinja {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            uses_tools,
            format: None,
        };
        jinja.format = jinja.detect_format(source);
        Ok(jinja)
    }

    /// Renders `messages` (OpenAI/HF-shaped objects: `role`, `content` (string or null),
    /// `tool_calls` with `function.arguments` as an object, `tool_call_id`, `name`) with the
    /// request's `tools` as sent; `add_generation_prompt` opens the assistant's turn.
    pub fn render(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        let tools = match tools {
            Some(tools) => Value::from_serialize(tools),
            None => Value::from(()),
        };
        let context = minijinja::context! {
            messages => Value::from_serialize(messages),
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        template.render(context).map_err(|e| describe(&e))
    }

    /// Whether the template uses `tools` at all (Ollama's `tools` capability).
    pub fn supports_tools(&self) -> bool {
        self.uses_tools
    }

    /// The tool-call format this template teaches the model, if one can be told.
    pub fn call_format(&self) -> Option<CallFormat> {
        self.format.clone()
    }

    /// Known markers in the source first; otherwise the markers the template puts around a
    /// probe call it renders (the JSON of the call between the assistant's turn opening and
    /// its end, which a plain answer shows).
    fn detect_format(&self, source: &str) -> Option<CallFormat> {
        if !self.uses_tools {
            return None;
        }
        if source.contains("<tool_call>") {
            return Some(CallFormat::Hermes);
        }
        if source.contains("[TOOL_CALLS]") {
            return Some(CallFormat::Mistral);
        }
        if source.contains("<|python_tag|>") || source.contains("<|start_header_id|>") {
            return Some(CallFormat::Llama3);
        }
        self.probe_format()
    }

    fn probe_format(&self) -> Option<CallFormat> {
        const FN: &str = "rawrxd_probe_function";
        const ANSWER: &str = "rawrxd probe answer";
        let tools = [json!({"type": "function", "function": {"name": FN,
            "description": "probe", "parameters": {"type": "object",
            "properties": {"a": {"type": "string"}}}}})];
        let user = json!({"role": "user", "content": "rawrxd probe question"});
        let call = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "abcdefghi",
            "type": "function", "function": {"name": FN, "arguments": {"a": "b"}}}]});
        let answer = json!({"role": "assistant", "content": ANSWER});
        let prefix = self
            .render(std::slice::from_ref(&user), Some(&tools), true)
            .ok()?;
        let with_call = self
            .render(&[user.clone(), call], Some(&tools), false)
            .ok()?;
        let with_answer = self.render(&[user, answer], Some(&tools), false).ok()?;
        let turn = with_call.strip_prefix(&prefix)?;
        let turn_end = with_answer.strip_prefix(&prefix)?.split_once(ANSWER)?.1;
        let at = turn.find(FN)?;
        let mut start = turn[..at].rfind('{')?;
        if let Some(bracket) = turn[..start].trim_end().strip_suffix('[') {
            start = bracket.len();
        }
        let end = start + json_end(&turn[start..])?;
        serde_json::from_str::<serde_json::Value>(&turn[start..end]).ok()?;
        let open = turn[..start].trim();
        if open.is_empty() || open.contains(char::is_whitespace) {
            return None;
        }
        let after = turn[end..].trim_start();
        let close = after
            .strip_suffix(turn_end.trim_start())
            .unwrap_or(after)
            .trim();
        Some(CallFormat::Tagged {
            open: open.to_string(),
            close: (!close.is_empty() && !close.contains(char::is_whitespace))
                .then(|| close.to_string()),
        })
    }
}

fn describe(e: &Error) -> String {
    let mut text = format!("chat template: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The environment transformers builds (`_compile_jinja_template`), with `source` added.
fn environment(source: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        out.write_str(&python::str_of(value))
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the output"))
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: &Value| python::str_of(value));
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_template_owned(NAME, source.to_string())
        .map_err(|e| describe(&e))?;
    Ok(env)
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "indent: not a count"))?,
        ),
    };
    let separators: Option<Value> = kwargs.get("separators")?;
    let separators = match separators {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "separators: not text"))?;
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => Some((item, key)),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "separators: want (item, key)",
                    ))
                }
            }
        }
    };
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let options = Dumps {
        indent,
        separators,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    python::dumps(value, &options).map(Value::from)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    python::strftime(now, &format)
}
