//! Ollama's generation `options` (with Ollama's defaults), `keep_alive` and `format`, turned
//! into what the engine needs: a sampler chain description, limits and stop sequences.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// Default context length per sequence slot, like Ollama's `num_ctx`.
pub const DEFAULT_NUM_CTX: u32 = 4096;
/// Default `keep_alive` (Ollama: 5 minutes).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);

/// The `options` object of `/api/generate` and `/api/chat`. Unknown keys are ignored, as
/// Ollama does for runner options (`num_gpu`, `use_mmap`, …).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub num_predict: Option<i64>,
    pub stop: Option<StopList>,
    pub num_ctx: Option<i64>,
    pub num_keep: Option<i64>,
    /// rawrxd's extension of Ollama's API: OpenAI's `tool_choice` (`"required"` or a
    /// function forces a call), in `options` or as a model parameter, for clients that cannot
    /// send `/api/chat`'s top-level `tool_choice`.
    pub tool_choice: Option<Value>,
}

/// `stop` is a list of strings; a single string is accepted too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopList {
    One(String),
    Many(Vec<String>),
}

impl StopList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopList::One(s) => vec![s],
            StopList::Many(v) => v,
        }
    }
}

/// Sampling settings for one request, with Ollama's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None`: a random seed.
    pub seed: Option<u32>,
}

impl Options {
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature.unwrap_or(0.8),
            top_k: self.top_k.unwrap_or(40),
            top_p: self.top_p.unwrap_or(0.9),
            min_p: self.min_p.unwrap_or(0.0),
            repeat_penalty: self.repeat_penalty.unwrap_or(1.1),
            // Ollama: -1 means the whole context (resolved by the engine), 0 disables.
            repeat_last_n: self.repeat_last_n.unwrap_or(64).max(-1),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            // Ollama: -1 (or absent) means random.
            seed: self.seed.filter(|s| *s >= 0).map(|s| s as u32),
        }
    }

    /// Most tokens to generate; `None` = until the end of the context.
    pub fn num_predict(&self) -> Option<u32> {
        match self.num_predict {
            Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            _ => None,
        }
    }

    /// Tokens a context shift or a cut prompt keeps at the start (Ollama's default: 4).
    pub fn num_keep(&self) -> usize {
        match self.num_keep {
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => 4,
        }
    }

    /// These options, with `defaults` (a created model's parameters) filling each key this
    /// request leaves out.
    pub fn or(self, defaults: &Options) -> Options {
        let d = defaults.clone();
        Options {
            temperature: self.temperature.or(d.temperature),
            top_k: self.top_k.or(d.top_k),
            top_p: self.top_p.or(d.top_p),
            min_p: self.min_p.or(d.min_p),
            repeat_penalty: self.repeat_penalty.or(d.repeat_penalty),
            repeat_last_n: self.repeat_last_n.or(d.repeat_last_n),
            presence_penalty: self.presence_penalty.or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(d.frequency_penalty),
            seed: self.seed.or(d.seed),
            num_predict: self.num_predict.or(d.num_predict),
            stop: self.stop.or(d.stop),
            num_ctx: self.num_ctx.or(d.num_ctx),
            num_keep: self.num_keep.or(d.num_keep),
            tool_choice: self.tool_choice.or(d.tool_choice),
        }
    }

    /// A model's `parameters` as options; a known key with a value of the wrong type is an
    /// error naming it.
    pub fn from_parameters(parameters: &serde_json::Map<String, Value>) -> Result<Options, String> {
        serde_json::from_value(Value::Object(parameters.clone()))
            .map_err(|e| format!("invalid parameters: {e}"))
    }

    pub fn stops(&self) -> Vec<String> {
        self.stop
            .clone()
            .map(StopList::into_vec)
            .unwrap_or_default()
    }
}

/// Parses Ollama's `keep_alive`: seconds as a number, or a duration string (`"5m"`, `"1h30m"`,
/// `"0"`, `"-1"`). `Ok(None)` = keep forever (negative values).
pub fn keep_alive(value: Option<&Value>) -> Result<Option<Duration>, String> {
    let Some(value) = value else {
        return Ok(Some(DEFAULT_KEEP_ALIVE));
    };
    match value {
        Value::Null => Ok(Some(DEFAULT_KEEP_ALIVE)),
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(0.0);
            if secs < 0.0 {
                Ok(None)
            } else {
                Ok(Some(Duration::from_secs_f64(secs.min(1e12))))
            }
        }
        Value::String(s) => {
            let s = s.trim();
            if s.starts_with('-') {
                return Ok(None);
            }
            if let Ok(secs) = s.parse::<f64>() {
                return Ok(Some(Duration::from_secs_f64(secs.min(1e12))));
            }
            humantime::parse_duration(s)
                .map(Some)
                .map_err(|e| format!("invalid keep_alive {s:?}: {e}"))
        }
        other => Err(format!("invalid keep_alive {other}")),
    }
}

/// The grammar for `format`: `"json"` → llama.cpp's JSON grammar; a JSON schema object →
/// a grammar generated from it; `""`/absent → none.
pub fn grammar(format: Option<&Value>) -> Result<Option<String>, String> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(JSON_GRAMMAR.to_string())),
        Some(Value::String(s)) => Err(format!(
            "invalid format {s:?}: use \"json\" or a JSON schema"
        )),
        Some(schema @ Value::Object(_)) => llama_cpp_2::json_schema_to_grammar(&schema.to_string())
            .map(Some)
            .map_err(|e| format!("invalid format schema: {e}")),
        Some(other) => Err(format!("invalid format {other}")),
    }
}

/// llama.cpp's `grammars/json.gbnf`.
pub const JSON_GRAMMAR: &str = include_str!("json.gbnf");

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_forms() {
        assert_eq!(keep_alive(None).unwrap(), Some(DEFAULT_KEEP_ALIVE));
        assert_eq!(keep_alive(Some(&json!(0))).unwrap(), Some(Duration::ZERO));
        assert_eq!(keep_alive(Some(&json!("0"))).unwrap(), Some(Duration::ZERO));
        assert_eq!(keep_alive(Some(&json!(-1))).unwrap(), None);
        assert_eq!(keep_alive(Some(&json!("-1m"))).unwrap(), None);
        assert_eq!(
            keep_alive(Some(&json!("10m"))).unwrap(),
            Some(Duration::from_secs(600))
        );
        assert!(keep_alive(Some(&json!("soon"))).is_err());
    }

    #[test]
    fn defaults_are_ollamas() {
        let s = Options::default().sampling();
        assert_eq!((s.temperature, s.top_k, s.top_p), (0.8, 40, 0.9));
        assert_eq!(s.seed, None);
        let o: Options = serde_json::from_value(json!({"stop": "x", "num_predict": -1})).unwrap();
        assert_eq!(o.stops(), vec!["x"]);
        assert_eq!(o.num_predict(), None);
        assert_eq!((s.repeat_penalty, s.repeat_last_n), (1.1, 64));
    }

    #[test]
    fn repeat_last_n_minus_one_means_whole_context() {
        let last_n = |v: i64| {
            serde_json::from_value::<Options>(json!({ "repeat_last_n": v }))
                .unwrap()
                .sampling()
                .repeat_last_n
        };
        assert_eq!(last_n(-1), -1);
        assert_eq!(last_n(-7), -1);
        assert_eq!(last_n(0), 0);
        assert_eq!(last_n(128), 128);
    }

    #[test]
    fn request_options_win_over_model_parameters_key_by_key() {
        let model = Options::from_parameters(
            json!({"temperature": 0.1, "num_predict": 5, "stop": ["x"]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let request: Options = serde_json::from_value(json!({"temperature": 0.7})).unwrap();
        let merged = request.or(&model);
        assert_eq!(merged.temperature, Some(0.7));
        assert_eq!(merged.num_predict(), Some(5));
        assert_eq!(merged.stops(), vec!["x"]);
        assert!(Options::from_parameters(json!({"top_k": "many"}).as_object().unwrap()).is_err());
    }
}
