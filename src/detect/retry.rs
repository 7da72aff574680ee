//! The body of a retried request: the original request (after request-side patches) with the
//! rule's `correction` added and its `retry_options` merged.
//!
//! Where the correction goes:
//! * chat endpoints: a new `user` message at the end — unless the last message already is
//!   the user's, in which case the correction is added to it as a new paragraph, so roles
//!   still alternate (Mistral's and Gemma's templates reject two user messages in a row);
//! * generate / completions: a new paragraph at the end of the `prompt`.
//!
//! `retry_options` go into `options` on Ollama's endpoints and at the top level on the
//! OpenAI ones (so write them in the API's own names: `num_predict` vs `max_tokens`).

use serde_json::{Map, Value};

use crate::rules::Endpoint;

/// The retried body, or why the request cannot be retried.
pub fn retry_body(
    endpoint: Endpoint,
    original: &[u8],
    correction: Option<&str>,
    options: &Map<String, Value>,
) -> Result<Vec<u8>, String> {
    let mut body: Value =
        serde_json::from_slice(original).map_err(|e| format!("the request is not JSON: {e}"))?;
    let Some(object) = body.as_object_mut() else {
        return Err("the request is not a JSON object".into());
    };
    if let Some(correction) = correction {
        match endpoint {
            Endpoint::Chat | Endpoint::OpenaiChat => correct_chat(object, correction)?,
            Endpoint::Generate | Endpoint::OpenaiCompletions => correct_prompt(object, correction)?,
        }
    }
    if !options.is_empty() {
        let target = match endpoint {
            Endpoint::Generate | Endpoint::Chat => {
                let options_value = object
                    .entry("options")
                    .or_insert_with(|| Value::Object(Map::new()));
                if options_value.is_null() {
                    *options_value = Value::Object(Map::new());
                }
                options_value
                    .as_object_mut()
                    .ok_or("the request's `options` is not an object")?
            }
            Endpoint::OpenaiChat | Endpoint::OpenaiCompletions => object,
        };
        for (key, value) in options {
            target.insert(key.clone(), value.clone());
        }
    }
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

fn correct_chat(object: &mut Map<String, Value>, correction: &str) -> Result<(), String> {
    let messages = object
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .ok_or("the request has no `messages` array")?;
    if let Some(last) = messages.last_mut() {
        if last.get("role").and_then(Value::as_str) == Some("user") {
            match last.get_mut("content") {
                Some(Value::String(content)) => {
                    content.push_str("\n\n");
                    content.push_str(correction);
                    return Ok(());
                }
                // OpenAI content parts: one more text part.
                Some(Value::Array(parts)) => {
                    parts.push(serde_json::json!({"type": "text", "text": correction}));
                    return Ok(());
                }
                _ => {}
            }
        }
    }
    messages.push(serde_json::json!({"role": "user", "content": correction}));
    Ok(())
}

fn correct_prompt(object: &mut Map<String, Value>, correction: &str) -> Result<(), String> {
    let add = |prompt: &mut String| {
        if !prompt.is_empty() {
            prompt.push_str("\n\n");
        }
        prompt.push_str(correction);
    };
    match object.get_mut("prompt") {
        Some(Value::String(prompt)) => add(prompt),
        Some(Value::Array(prompts)) if prompts.iter().all(Value::is_string) => {
            for prompt in prompts {
                if let Value::String(prompt) = prompt {
                    add(prompt);
                }
            }
        }
        None | Some(Value::Null) => {
            object.insert("prompt".into(), Value::String(correction.into()));
        }
        Some(_) => return Err("the request's `prompt` is not text".into()),
    }
    Ok(())
}
