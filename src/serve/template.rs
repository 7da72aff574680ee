//! Turning chat messages (or a generate prompt) into the model's prompt text.
//!
//! The GGUF's `tokenizer.chat_template` is applied by llama.cpp (`llama_chat_apply_template`,
//! which recognises the common template families). When the file has none, or llama.cpp does
//! not recognise it, a built-in llama.cpp template is chosen by `general.architecture`:
//! Gemma models get Gemma turns (`<start_of_turn>user\n…<end_of_turn>\n<start_of_turn>model\n`),
//! not ChatML.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};

/// One chat message, as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
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

/// Minimal Go-template substitution for a request's own `template` (Ollama's `/api/generate`
/// `template` field): `{{ .System }}`, `{{ .Prompt }}` and `{{ .Response }}` (empty).
pub fn substitute(template: &str, system: &str, prompt: &str) -> String {
    let mut out = template.to_string();
    for (names, value) in [
        (["{{ .System }}", "{{.System}}"], system),
        (["{{ .Prompt }}", "{{.Prompt}}"], prompt),
        (["{{ .Response }}", "{{.Response}}"], ""),
    ] {
        for name in names {
            out = out.replace(name, value);
        }
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
    fn substitutes_prompt_and_system() {
        assert_eq!(
            substitute("[{{ .System }}] {{.Prompt}}{{ .Response }}", "s", "p"),
            "[s] p"
        );
    }
}
