//! Tool calls against the request's `tools`: is the called tool one of them, and do its
//! arguments make a JSON object that the tool's `parameters` schema accepts?
//!
//! Schemas are checked with the `jsonschema` crate, built without its HTTP and file
//! resolvers: a tool schema is the client's (or a web page's) input, and a `$ref` to a URL
//! must not make the proxy fetch anything; its `pattern`s run on the linear-time `regex`
//! engine, so none can backtrack for long. A schema that does not compile is not held
//! against the call (the check is then only "a JSON object").

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

/// The tools a request offers: name → `parameters` schema.
#[derive(Debug, Default)]
pub struct Tools {
    schemas: HashMap<String, Option<Value>>,
    /// Compiled on first use per tool.
    compiled: Mutex<HashMap<String, Option<std::sync::Arc<jsonschema::Validator>>>>,
}

/// A tool call as the model made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: Arguments,
}

/// A call's arguments: an object on Ollama, a string of JSON on OpenAI.
#[derive(Debug, Clone, PartialEq)]
pub enum Arguments {
    Value(Value),
    Text(String),
}

impl Tools {
    /// The `tools` of a request body (Ollama's and OpenAI's share the shape:
    /// `[{"type":"function","function":{"name":…,"parameters":{…}}}]`).
    pub fn of_request(body: &Value) -> Tools {
        let mut schemas = HashMap::new();
        if let Some(tools) = body.get("tools").and_then(Value::as_array) {
            for tool in tools {
                let function = tool.get("function").unwrap_or(tool);
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    schemas.insert(name.to_string(), function.get("parameters").cloned());
                }
            }
        }
        Tools {
            schemas,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    pub fn offers(&self, name: &str) -> bool {
        self.schemas.contains_key(name)
    }

    /// The offered names, for the audit (`none` when there are none).
    pub fn names(&self) -> String {
        if self.schemas.is_empty() {
            return "none".into();
        }
        let mut names: Vec<&str> = self.schemas.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.join(", ")
    }

    /// `Ok` when the call's arguments are a JSON object its tool's schema accepts; else why
    /// not.
    pub fn check_arguments(&self, call: &Call) -> Result<(), String> {
        let parsed;
        let arguments = match &call.arguments {
            Arguments::Value(value) => value,
            Arguments::Text(text) => {
                parsed =
                    serde_json::from_str::<Value>(if text.trim().is_empty() { "{}" } else { text })
                        .map_err(|e| format!("{}: arguments are not JSON ({e})", call.name))?;
                &parsed
            }
        };
        if !arguments.is_object() {
            return Err(format!(
                "{}: arguments are not a JSON object: {}",
                call.name,
                cut(&arguments.to_string())
            ));
        }
        let Some(validator) = self.validator(&call.name) else {
            return Ok(());
        };
        let problems: Vec<String> = validator
            .iter_errors(arguments)
            .take(3)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        match problems.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "{}: arguments break the tool's schema: {}",
                call.name,
                problems.join("; ")
            )),
        }
    }

    fn validator(&self, name: &str) -> Option<std::sync::Arc<jsonschema::Validator>> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        compiled
            .entry(name.to_string())
            .or_insert_with(|| {
                let schema = self.schemas.get(name)?.as_ref()?;
                // `pattern`s run on the linear-time `regex` engine: a schema is request input,
                // and a backtracking pattern must not stall the proxy's worker thread.
                let built = jsonschema::options()
                    .with_pattern_options(jsonschema::PatternOptions::regex())
                    .build(schema);
                match built {
                    Ok(validator) => Some(std::sync::Arc::new(validator)),
                    Err(error) => {
                        tracing::debug!("tool {name:?}: schema not checked: {error}");
                        None
                    }
                }
            })
            .clone()
    }
}

fn cut(text: &str) -> String {
    text.chars().take(200).collect()
}
