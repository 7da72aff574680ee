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
            // Only when the calls it renders are JSON in the tags: GLM, Qwen3-Coder and
            // others put XML there, which no parser here reads.
            return self
                .probe_format()
                .filter(|f| {
                    matches!(f, CallFormat::Tagged { open, close }
                        if open == "<tool_call>" && close.as_deref() == Some("</tool_call>"))
                })
                .map(|_| CallFormat::Hermes);
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
        let call = json!({"role": "assistant", "content": "", "tool_calls": [{"id": "abcdefghi",
            "type": "function", "function": {"name": FN, "arguments": {"a": "b"}}}]});
        let answer = json!({"role": "assistant", "content": ANSWER});
        let base = self
            .render(std::slice::from_ref(&user), Some(&tools), false)
            .ok()?;
        let with_call = self
            .render(&[user.clone(), call], Some(&tools), false)
            .ok()?;
        let with_answer = self.render(&[user, answer], Some(&tools), false).ok()?;
        // What the assistant's turn adds, and what ends a turn with a plain answer.
        let turn = &with_call[shared_prefix(&base, &with_call)..];
        let turn_end = with_answer.split_once(ANSWER)?.1;
        let at = turn.find(FN)?;
        let mut start = turn[..at].rfind('{')?;
        if let Some(bracket) = turn[..start].trim_end().strip_suffix('[') {
            start = bracket.len();
        }
        let end = start + json_end(&turn[start..])?;
        serde_json::from_str::<serde_json::Value>(&turn[start..end]).ok()?;
        // The marker is the last word before the JSON (the turn's header, or an empty
        // `<think></think>`, may come first).
        let word = turn[..start].split_whitespace().last()?;
        // …and in it, the last special token (`<|assistant_start|><|tools_prefix|>`).
        let open = word.rfind(['<', '[']).map_or(word, |i| &word[i..]);
        // The closing marker is what follows the JSON but not a plain answer, cut where a
        // marker starts (`<|END_ACTION|><|END_OF_TURN_TOKEN|>` vs
        // `<|END_RESPONSE|><|END_OF_TURN_TOKEN|>` → `<|END_ACTION|>`).
        let after = turn[end..].trim_start();
        let mut cut = after.len() - shared_suffix(after, turn_end);
        if !after[cut..].starts_with(['<', '[']) && !after[cut..].starts_with(char::is_whitespace) {
            cut = after[cut..]
                .find(['<', '['])
                .map_or(after.len(), |i| cut + i);
        }
        let close = after[..cut].split_whitespace().next().map(|w| {
            // Its first special token only (`</TOOLCALL><SPECIAL_12>`).
            w.char_indices()
                .skip(1)
                .find(|(_, c)| *c == '<' || *c == '[')
                .map_or(w, |(i, _)| &w[..i])
        });
        Some(CallFormat::Tagged {
            open: open.to_string(),
            close: close.map(str::to_string),
        })
    }
}

/// The length of the longest common suffix of `a` and `b`, at a char boundary.
fn shared_suffix(a: &str, b: &str) -> usize {
    a.chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

/// The length of the longest common prefix of `a` and `b`, at a char boundary.
fn shared_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
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

/// Instructions one render may run (minijinja's fuel).
const RENDER_FUEL: u64 = 5_000_000;

/// The environment transformers builds (`_compile_jinja_template`), with `source` added.
fn environment(source: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    // A template comes with the model file: one that loops without end (or nearly) runs out
    // of fuel and fails the request instead of holding a server thread. A real template over
    // a long conversation with tools uses well under a hundredth of this.
    env.set_fuel(Some(RENDER_FUEL));
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
    env.add_template_owned(NAME, without_generation_blocks(source))
        .map_err(|e| describe(&e))?;
    Ok(env)
}

/// `source` with transformers' `{% generation %}…{% endgeneration %}` (its `AssistantTracker`
/// extension, which only marks the assistant's tokens for training) as `{% if true %}…{% endif
/// %}`: the same block tags, so `trim_blocks`, `lstrip_blocks` and `-` trim alike.
fn without_generation_blocks(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_string();
    }
    let tag = |word: &str| regex::Regex::new(&format!(r"\{{%([-+]?)\s*{word}\s*([-+]?)%\}}"));
    let (Ok(open), Ok(close)) = (tag("generation"), tag("endgeneration")) else {
        return source.to_string();
    };
    let source = open.replace_all(source, "{%${1} if true ${2}%}");
    close
        .replace_all(&source, "{%${1} endif ${2}%}")
        .into_owned()
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
