//! Turning chat messages (or a generate prompt) into the model's prompt text.
//!
//! The GGUF's `tokenizer.chat_template` is applied by llama.cpp (`llama_chat_apply_template`,
//! which recognises the common template families). When the file has none, or llama.cpp does
//! not recognise it, a built-in llama.cpp template is chosen by `general.architecture`:
//! Gemma models get Gemma turns (`<start_of_turn>user\n…<end_of_turn>\n<start_of_turn>model\n`),
//! not ChatML.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};

/// One chat message, as the templates need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant message's tool calls, each `{"id"?, "type": "function", "function":
    /// {"name", "arguments"}}` with the arguments as an object (as Jinja templates expect).
    pub tool_calls: Vec<serde_json::Value>,
    /// A tool result's call id (OpenAI `tool_call_id`).
    pub tool_call_id: Option<String>,
    /// A tool result's tool name (Ollama `tool_name`, OpenAI `name`).
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            ..Message::default()
        }
    }

    /// Whether only a Jinja template can render this message (llama.cpp's applier and Ollama
    /// Go templates carry no tool calls or results).
    pub fn needs_tools(&self) -> bool {
        !self.tool_calls.is_empty() || self.role == "tool"
    }

    /// The message as Hugging Face chat templates see it.
    pub fn to_value(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("role".into(), self.role.clone().into());
        out.insert("content".into(), self.content.clone().into());
        if !self.tool_calls.is_empty() {
            out.insert("tool_calls".into(), self.tool_calls.clone().into());
        }
        if let Some(id) = &self.tool_call_id {
            out.insert("tool_call_id".into(), id.clone().into());
        }
        if let Some(name) = &self.name {
            out.insert("name".into(), name.clone().into());
        }
        serde_json::Value::Object(out)
    }
}

/// llama.cpp's built-in template name for an architecture without a template of its own.
pub fn fallback_for(architecture: &str) -> &'static str {
    let arch = architecture.to_ascii_lowercase();
    if arch.starts_with("gemma") {
        "gemma"
    } else if arch.starts_with("llama4") {
        "llama4"
    } else if arch == "llama" {
        "llama3"
    } else if arch.starts_with("phi3") {
        "phi3"
    } else if arch.starts_with("mistral") {
        "mistral-v7"
    } else if arch.starts_with("deepseek") {
        "deepseek3"
    } else {
        "chatml"
    }
}

/// What `/api/show` reports as the template for a built-in one (Ollama-style Go template).
pub fn describe_builtin(name: &str) -> &'static str {
    match name {
        "gemma" => "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
        _ => "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
    }
}

/// Renders `messages` with the model's template (or the fallback for `architecture`), ending
/// with the opening of the assistant's turn.
pub fn render(
    model: &LlamaModel,
    architecture: &str,
    messages: &[Message],
) -> Result<String, String> {
    let chat = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid message: {e}"))?;
    if let Ok(template) = model.chat_template(None) {
        match model.apply_chat_template(&template, &chat, true) {
            Ok(text) => return Ok(text),
            Err(e) => tracing::debug!("the model's chat template failed ({e}); using a fallback"),
        }
    }
    let name = fallback_for(architecture);
    let template = LlamaChatTemplate::new(name).map_err(|e| e.to_string())?;
    model
        .apply_chat_template(&template, &chat, true)
        .map_err(|e| format!("cannot apply the {name} chat template: {e}"))
}

/// The subset of Ollama's Go templates rawrxd renders for a request's `template` or a created
/// model's: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}`, and `{{ if .System }}…{{ end }}`
/// (or `.Prompt`, `.Response`) blocks, not nested; `{{-`/`-}}` trim markers are accepted and
/// trim as in Go. Templates that range over `.Messages` or use `.Tools` are refused by
/// [`check`], so a model is never created with a template it would render wrongly.
pub fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    let mut open_if = false;
    while let Some(at) = rest.find("{{") {
        let Some(len) = rest[at..].find("}}") else {
            return Err("template: an action `{{` is never closed".into());
        };
        let action = action_body(&rest[at..at + len + 2]);
        match action.as_str() {
            ".System" | ".Prompt" | ".Response" => {}
            "if .System" | "if .Prompt" | "if .Response" if !open_if => open_if = true,
            "end" if open_if => open_if = false,
            other => {
                return Err(format!(
                    "template: `{{{{ {other} }}}}` is not supported; rawrxd renders .System, \
                     .Prompt, .Response and `if` blocks over them (not .Messages, .Tools or \
                     nested blocks); leave the template out to use the model's own chat template"
                ))
            }
        }
        rest = &rest[at + len + 2..];
    }
    if open_if {
        return Err("template: an `if` block has no `{{ end }}`".into());
    }
    Ok(())
}

fn action_body(action: &str) -> String {
    let inner = &action[2..action.len() - 2];
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    inner.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renders one turn: `response` is `None` for the turn being generated, where the output
/// stops at `{{ .Response }}`.
pub fn substitute(template: &str, system: &str, prompt: &str, response: Option<&str>) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut skipping = false;
    while let Some(at) = rest.find("{{") {
        let Some(len) = rest[at..].find("}}") else {
            break;
        };
        let raw = &rest[at..at + len + 2];
        let mut literal = &rest[..at];
        if raw.starts_with("{{-") {
            literal = literal.trim_end();
        }
        if !skipping {
            out.push_str(literal);
        }
        rest = &rest[at + len + 2..];
        if raw.ends_with("-}}") {
            rest = rest.trim_start();
        }
        let value = |name: &str| match name {
            ".System" => Some(system),
            ".Prompt" => Some(prompt),
            ".Response" => Some(response.unwrap_or("")),
            _ => None,
        };
        let action = action_body(raw);
        if action == ".Response" && response.is_none() && !skipping {
            return out;
        }
        if let Some(cond) = action.strip_prefix("if ") {
            skipping = !value(cond).is_some_and(|v| !v.is_empty());
            if cond == ".Response" && response.is_none() {
                // The turn being generated: its response block starts the output.
                return out;
            }
        } else if action == "end" {
            skipping = false;
        } else if let Some(v) = value(&action) {
            if !skipping {
                out.push_str(v);
            }
        }
    }
    if !skipping {
        out.push_str(rest);
    }
    out
}

/// Renders chat `messages` with a created model's template, turn by turn as Ollama does for
/// templates without `.Messages`: each user message with the assistant reply after it, the
/// system prompt in the first turn, and the last turn open for the reply.
pub fn render_turns(template: &str, messages: &[Message]) -> String {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let system = system.join("\n");
    let turns: Vec<&Message> = messages.iter().filter(|m| m.role != "system").collect();
    let mut out = String::new();
    let mut i = 0;
    let mut first = true;
    while i < turns.len() {
        let message = turns[i];
        let (prompt, reply) = if message.role == "assistant" {
            ("", Some(message.content.as_str()))
        } else {
            let reply = turns
                .get(i + 1)
                .filter(|m| m.role == "assistant")
                .map(|m| m.content.as_str());
            if reply.is_some() {
                i += 1;
            }
            (message.content.as_str(), reply)
        };
        let system = if first { system.as_str() } else { "" };
        first = false;
        i += 1;
        let reply = match reply {
            None if i >= turns.len() => None,
            other => Some(other.unwrap_or("")),
        };
        out.push_str(&substitute(template, system, prompt, reply));
    }
    if turns.is_empty() {
        out.push_str(&substitute(template, &system, "", None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_architectures_get_gemma_turns() {
        assert_eq!(fallback_for("gemma3"), "gemma");
        assert_eq!(fallback_for("gemma"), "gemma");
        assert_eq!(fallback_for("qwen2"), "chatml");
    }

    #[test]
    fn substitutes_prompt_and_system_and_stops_at_the_response() {
        assert_eq!(
            substitute(
                "[{{ .System }}] {{.Prompt}}{{ .Response }}<end>",
                "s",
                "p",
                None
            ),
            "[s] p"
        );
        assert_eq!(
            substitute("{{.Prompt}}={{ .Response }}<end>", "", "p", Some("r")),
            "p=r<end>"
        );
        let t = "{{ if .System }}<sys>{{ .System }}</sys>\n{{ end }}U: {{ .Prompt }}\nA: {{ .Response }}\n";
        assert_eq!(substitute(t, "", "hi", None), "U: hi\nA: ");
        assert_eq!(substitute(t, "be", "hi", None), "<sys>be</sys>\nU: hi\nA: ");
        assert_eq!(substitute("a {{- .Prompt -}}  b", "", "P", None), "aPb");
    }

    #[test]
    fn templates_outside_the_subset_are_refused() {
        check("{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}").unwrap();
        for bad in [
            "{{ range .Messages }}{{ .Content }}{{ end }}",
            "{{ .Tools }}",
            "{{ if .System }}{{ if .Prompt }}{{ end }}{{ end }}",
            "{{ if .System }}x",
            "{{ .Prompt ",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chats_render_turn_by_turn() {
        let m = |role: &str, content: &str| Message::new(role, content);
        let t = "{{ if .System }}[{{ .System }}]{{ end }}U:{{ .Prompt }} A:{{ .Response }};";
        let messages = [
            m("system", "S"),
            m("user", "one"),
            m("assistant", "1"),
            m("user", "two"),
        ];
        assert_eq!(render_turns(t, &messages), "[S]U:one A:1;U:two A:");
    }
}
