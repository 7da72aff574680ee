//! Rule files: the model of `rules/*.toml` and its validation.
//!
//! Two types, as STYLE.md asks: [`RuleSpec`] is one `[[rule]]` table exactly as written (every
//! field optional, unknown fields an error) and [`Rule`] is the validated form the pipeline
//! runs, reached only through [`validate_spec`], [`parse_file`] or [`load_dir`]. Validation
//! never stops at the first problem: every [`RuleError`] names the file, the line (of the
//! offending field when known, else of its `[[rule]]` header), the rule id and the field.
//!
//! The built-in secret detectors for `redact` rules ([`Detector`]) live here too, because a
//! rule's longest possible match is part of what validation checks: the streaming pipeline
//! holds back at most `max_len` characters, so **every pattern must have a bounded longest
//! match, and `max_len` must not be smaller than it** where that can be computed.
//!
//! The pieces: parsing ([`parse_file`], [`load_dir`]: TOML with file/line locations, duplicate
//! ids), validation (one rule as written → [`Rule`] and its [`Action`]), the built-in [`Detector`]s,
//! and model globs.
//!
//! May use: nothing else in the crate. Used by every layer above it.

mod detectors;
mod glob;
mod parse;
#[cfg(test)]
mod tests;
mod validate;

pub use detectors::Detector;
pub use glob::model_matches;
use glob::*;
use parse::*;
pub use parse::{load_dir, parse_file, validate_spec};
use validate::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use regex_automata::util::syntax;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// `max_len` of a `regex`, `redact` or `block` pattern when the rule does not set one.
pub const DEFAULT_MAX_LEN: usize = 256;
/// The largest `max_len` a rule may ask for.
pub const MAX_MAX_LEN: usize = 65536;
/// `mask` of a `redact` rule when the rule does not set one.
pub const DEFAULT_MASK: &str = "[REDACTED]";
/// `min_confidence` of a `path` rule when the rule does not set one.
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.8;
/// The longest rule id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Fields every kind accepts.
const COMMON_FIELDS: &[&str] = &[
    "id",
    "kind",
    "enabled",
    "mode",
    "models",
    "endpoints",
    "description",
];

/// Every field of a `[[rule]]` table, in [`RuleSpec`] order.
const ALL_FIELDS: &[&str] = &[
    "id",
    "kind",
    "find",
    "replace",
    "case_insensitive",
    "whole_word",
    "enabled",
    "mode",
    "models",
    "endpoints",
    "pattern",
    "max_len",
    "detector",
    "mask",
    "message",
    "roots",
    "min_confidence",
    "action",
    "text",
    "position",
    "name",
    "value",
    "op",
    "sequences",
    "from",
    "to",
    "max_retries",
    "correction",
    "retry_options",
    "repeats",
    "description",
];

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Replace,
    Regex,
    Redact,
    Block,
    Path,
    SystemPrompt,
    Param,
    Stop,
    Alias,
    Detect,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Replace,
        Kind::Regex,
        Kind::Redact,
        Kind::Block,
        Kind::Path,
        Kind::SystemPrompt,
        Kind::Param,
        Kind::Stop,
        Kind::Alias,
        Kind::Detect,
    ];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Replace => "replace",
            Kind::Regex => "regex",
            Kind::Redact => "redact",
            Kind::Block => "block",
            Kind::Path => "path",
            Kind::SystemPrompt => "system_prompt",
            Kind::Param => "param",
            Kind::Stop => "stop",
            Kind::Alias => "alias",
            Kind::Detect => "detect",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The fields this kind accepts besides the common ones (`id`, `kind`, `enabled`, `mode`,
    /// `models`, `endpoints`, `description`).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Replace => &["find", "replace", "case_insensitive", "whole_word"],
            Kind::Regex => &["pattern", "replace", "max_len"],
            Kind::Redact => &["detector", "pattern", "mask", "max_len"],
            Kind::Block => &["find", "pattern", "case_insensitive", "message", "max_len"],
            Kind::Path => &["roots", "min_confidence", "action"],
            Kind::SystemPrompt => &["text", "position"],
            Kind::Param => &["name", "value", "op"],
            Kind::Stop => &["sequences"],
            Kind::Alias => &["from", "to"],
            Kind::Detect => &[
                "detector",
                "pattern",
                "position",
                "max_len",
                "case_insensitive",
                "action",
                "max_retries",
                "correction",
                "retry_options",
                "repeats",
            ],
        }
    }
}

/// `enforce` changes the output; `shadow` only reports what it would have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        [Mode::Enforce, Mode::Shadow]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// Which API a request uses; `endpoints = [...]` in a rule names these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Generate,
    Chat,
    OpenaiChat,
    OpenaiCompletions,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Generate,
        Endpoint::Chat,
        Endpoint::OpenaiChat,
        Endpoint::OpenaiCompletions,
    ];

    /// The endpoint a request path belongs to (exact path, no query string), if rules apply
    /// to it at all.
    pub fn of_path(path: &str) -> Option<Endpoint> {
        match path {
            "/api/generate" => Some(Endpoint::Generate),
            "/api/chat" => Some(Endpoint::Chat),
            "/v1/chat/completions" => Some(Endpoint::OpenaiChat),
            "/v1/completions" => Some(Endpoint::OpenaiCompletions),
            _ => None,
        }
    }

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Generate => "generate",
            Endpoint::Chat => "chat",
            Endpoint::OpenaiChat => "openai_chat",
            Endpoint::OpenaiCompletions => "openai_completions",
        }
    }

    pub fn parse(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// One `[[rule]]` table exactly as written (all kinds' fields optional; unknown fields are an
/// error). Also the shape the admin API accepts as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_insensitive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_word: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roots: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_options: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl RuleSpec {
    /// The names of the fields that are set, in [`ALL_FIELDS`] order.
    fn present_fields(&self) -> Vec<&'static str> {
        let present = [
            self.id.is_some(),
            self.kind.is_some(),
            self.find.is_some(),
            self.replace.is_some(),
            self.case_insensitive.is_some(),
            self.whole_word.is_some(),
            self.enabled.is_some(),
            self.mode.is_some(),
            self.models.is_some(),
            self.endpoints.is_some(),
            self.pattern.is_some(),
            self.max_len.is_some(),
            self.detector.is_some(),
            self.mask.is_some(),
            self.message.is_some(),
            self.roots.is_some(),
            self.min_confidence.is_some(),
            self.action.is_some(),
            self.text.is_some(),
            self.position.is_some(),
            self.name.is_some(),
            self.value.is_some(),
            self.op.is_some(),
            self.sequences.is_some(),
            self.from.is_some(),
            self.to.is_some(),
            self.max_retries.is_some(),
            self.correction.is_some(),
            self.retry_options.is_some(),
            self.repeats.is_some(),
            self.description.is_some(),
        ];
        ALL_FIELDS
            .iter()
            .zip(present)
            .filter_map(|(name, set)| set.then_some(*name))
            .collect()
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub mode: Mode,
    /// Globs on the model name (`*` and `?`); default `["*"]`.
    pub models: Vec<String>,
    /// Empty means every endpoint (`"*"` in the file).
    pub endpoints: Vec<Endpoint>,
    pub action: Action,
    /// The file the rule came from (or `<api>` and the like).
    pub source: PathBuf,
    pub description: Option<String>,
}

impl Rule {
    pub fn kind(&self) -> Kind {
        match self.action {
            Action::Replace { .. } => Kind::Replace,
            Action::Regex { .. } => Kind::Regex,
            Action::Redact { .. } => Kind::Redact,
            Action::Block { .. } => Kind::Block,
            Action::Path { .. } => Kind::Path,
            Action::SystemPrompt { .. } => Kind::SystemPrompt,
            Action::Param { .. } => Kind::Param,
            Action::Stop { .. } => Kind::Stop,
            Action::Alias { .. } => Kind::Alias,
            Action::Detect(_) => Kind::Detect,
        }
    }

    /// The rule written back as a spec, with every default spelled out: what the rule store
    /// keeps and the admin API shows. `validate_spec(rule.to_spec())` gives the rule back.
    pub fn to_spec(&self) -> RuleSpec {
        let mut spec = RuleSpec {
            id: Some(self.id.clone()),
            kind: Some(self.kind().name().to_string()),
            enabled: Some(self.enabled),
            mode: Some(self.mode.name().to_string()),
            models: Some(self.models.clone()),
            endpoints: Some(if self.endpoints.is_empty() {
                vec!["*".to_string()]
            } else {
                self.endpoints
                    .iter()
                    .map(|e| e.name().to_string())
                    .collect()
            }),
            description: self.description.clone(),
            ..RuleSpec::default()
        };
        match &self.action {
            Action::Replace {
                find,
                replace,
                case_insensitive,
                whole_word,
            } => {
                spec.find = Some(find.clone());
                spec.replace = Some(replace.clone());
                spec.case_insensitive = Some(*case_insensitive);
                spec.whole_word = Some(*whole_word);
            }
            Action::Regex {
                pattern,
                replace,
                max_len,
            } => {
                spec.pattern = Some(pattern.clone());
                spec.replace = Some(replace.clone());
                spec.max_len = Some(*max_len);
            }
            Action::Redact {
                detector,
                pattern,
                mask,
                max_len,
            } => {
                spec.detector = detector.map(|d| d.name().to_string());
                spec.pattern = pattern.clone();
                spec.mask = Some(mask.clone());
                // A detector's bound is implied; a custom pattern's is part of the rule.
                spec.max_len = pattern.as_ref().map(|_| *max_len);
            }
            Action::Block {
                find,
                pattern,
                case_insensitive,
                message,
                max_len,
            } => {
                spec.find = find.clone();
                spec.pattern = pattern.clone();
                spec.case_insensitive = Some(*case_insensitive);
                spec.message = Some(message.clone());
                spec.max_len = pattern.as_ref().map(|_| *max_len);
            }
            Action::Path {
                roots,
                min_confidence,
                fix,
            } => {
                spec.roots = Some(roots.clone());
                spec.min_confidence = Some(*min_confidence);
                spec.action = Some(if *fix { "fix" } else { "flag" }.to_string());
            }
            Action::SystemPrompt { text, position } => {
                spec.text = Some(text.clone());
                spec.position = Some(position.name().to_string());
            }
            Action::Param { name, value, op } => {
                spec.name = Some(name.clone());
                spec.value = toml::Value::try_from(value).ok();
                spec.op = Some(op.name().to_string());
            }
            Action::Stop { sequences } => spec.sequences = Some(sequences.clone()),
            Action::Alias { from, to } => {
                spec.from = Some(from.clone());
                spec.to = Some(to.clone());
            }
            Action::Detect(detect) => {
                match &detect.check {
                    Check::Builtin(failure) => spec.detector = Some(failure.name().to_string()),
                    Check::Pattern {
                        pattern,
                        position,
                        case_insensitive,
                        max_len,
                    } => {
                        spec.pattern = Some(pattern.clone());
                        spec.position = Some(position.name().to_string());
                        spec.case_insensitive = Some(*case_insensitive);
                        spec.max_len = Some(*max_len);
                    }
                }
                spec.action = Some(detect.on_failure.name().to_string());
                if detect.on_failure == OnFailure::Retry {
                    spec.max_retries = Some(detect.max_retries);
                    spec.correction = detect.correction.clone();
                    if !detect.retry_options.is_empty() {
                        spec.retry_options = toml::Value::try_from(&detect.retry_options).ok();
                    }
                }
                spec.repeats = detect.repeats;
            }
        }
        spec
    }

    /// Whether the rule is enabled and covers this model and endpoint. A request whose
    /// endpoint is unknown (`None`) is covered only by rules for every endpoint.
    pub fn applies_to(&self, model: &str, endpoint: Option<Endpoint>) -> bool {
        self.enabled && self.covers_endpoint(endpoint) && self.covers_model(model)
    }

    /// Whether one of the rule's globs matches the model. Matching ignores ASCII case, and
    /// `x` and `x:latest` are the same model: each glob is tried against both spellings.
    pub fn covers_model(&self, model: &str) -> bool {
        let names = model_spellings(model);
        self.models
            .iter()
            .any(|glob| names.iter().any(|name| glob_match(glob, name)))
    }

    pub fn covers_endpoint(&self, endpoint: Option<Endpoint>) -> bool {
        self.endpoints.is_empty() || endpoint.is_some_and(|e| self.endpoints.contains(&e))
    }
}

/// What a rule does, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Replace literal text.
    Replace {
        find: String,
        replace: String,
        case_insensitive: bool,
        whole_word: bool,
    },
    /// Replace regex matches; `replace` may use `$1`/`${name}` captures.
    Regex {
        pattern: String,
        replace: String,
        max_len: usize,
    },
    /// Mask secrets: exactly one of `detector` and `pattern` is set.
    Redact {
        detector: Option<Detector>,
        pattern: Option<String>,
        mask: String,
        max_len: usize,
    },
    /// Stop the response when text matches: exactly one of `find` and `pattern` is set. For
    /// `find`, `max_len` defaults to the length of `find` in characters.
    Block {
        find: Option<String>,
        pattern: Option<String>,
        case_insensitive: bool,
        message: String,
        max_len: usize,
    },
    /// Fix (or only flag) file paths that do not exist under `roots`.
    Path {
        roots: Vec<String>,
        min_confidence: f64,
        fix: bool,
    },
    /// Add to or replace the request's system prompt.
    SystemPrompt { text: String, position: Position },
    /// Set or clamp a request parameter.
    Param {
        name: String,
        value: serde_json::Value,
        op: ParamOp,
    },
    /// Add stop sequences to the request.
    Stop { sequences: Vec<String> },
    /// Rewrite the request's model: `from` is a model glob, `to` the name the upstream sees.
    Alias { from: String, to: String },
    /// Watch the answer for a failure of the agent (a refusal, a loop, a bad tool call) and
    /// audit it, retry the request, or stop the answer.
    Detect(Detect),
}

/// A `detect` rule: what it watches for and what it does when it sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Detect {
    pub check: Check,
    pub on_failure: OnFailure,
    /// Retries per request (`retry` only): 1 to [`MAX_RETRIES`].
    pub max_retries: usize,
    /// Text added to the retried request (`retry` only).
    pub correction: Option<String>,
    /// Options merged into the retried request (`retry` only): Ollama `options` keys, or
    /// top-level keys on the OpenAI endpoints.
    pub retry_options: serde_json::Map<String, serde_json::Value>,
    /// `repetition` only: how many times in a row a span must repeat.
    pub repeats: Option<usize>,
}

/// The most retries a `detect` rule may ask for per request.
pub const MAX_RETRIES: usize = 3;

/// What a `detect` rule looks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Builtin(Failure),
    /// A custom regex over the answer's text.
    Pattern {
        pattern: String,
        position: Anchor,
        case_insensitive: bool,
        /// Longest match in characters (the window searched around new text).
        max_len: usize,
    },
}

/// The built-in failure detectors of `detect` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    Refusal,
    Abandonment,
    Empty,
    Truncated,
    ToolNotOffered,
    ToolArgsInvalid,
    Repetition,
}

impl Failure {
    pub const ALL: [Failure; 7] = [
        Failure::Refusal,
        Failure::Abandonment,
        Failure::Empty,
        Failure::Truncated,
        Failure::ToolNotOffered,
        Failure::ToolArgsInvalid,
        Failure::Repetition,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Refusal => "refusal",
            Failure::Abandonment => "abandonment",
            Failure::Empty => "empty",
            Failure::Truncated => "truncated",
            Failure::ToolNotOffered => "tool_not_offered",
            Failure::ToolArgsInvalid => "tool_args_invalid",
            Failure::Repetition => "repetition",
        }
    }

    pub fn parse(name: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Where a custom `detect` pattern must match: at the start of the answer (after leading
/// whitespace) or anywhere in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Anywhere,
}

impl Anchor {
    pub fn name(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Anywhere => "anywhere",
        }
    }
}

/// What a `detect` rule does with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Record it only.
    Audit,
    /// Send the request again (with the correction), while nothing of the answer has reached
    /// the client.
    Retry,
    /// End the answer there, well-formed, and cancel the generation.
    Stop,
}

impl OnFailure {
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Audit => "audit",
            OnFailure::Retry => "retry",
            OnFailure::Stop => "stop",
        }
    }

    pub fn parse(name: &str) -> Option<OnFailure> {
        [OnFailure::Audit, OnFailure::Retry, OnFailure::Stop]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// Where a `system_prompt` rule's text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Prepend,
    Append,
    Replace,
}

impl Position {
    pub fn name(self) -> &'static str {
        match self {
            Position::Prepend => "prepend",
            Position::Append => "append",
            Position::Replace => "replace",
        }
    }

    pub fn parse(name: &str) -> Option<Position> {
        [Position::Prepend, Position::Append, Position::Replace]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// How a `param` rule treats the request's value: `set` overwrites it, `default` fills it in
/// when absent, `max`/`min` clamp it (numeric values only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamOp {
    Set,
    Default,
    Max,
    Min,
    Remove,
}

impl ParamOp {
    pub fn name(self) -> &'static str {
        match self {
            ParamOp::Set => "set",
            ParamOp::Default => "default",
            ParamOp::Max => "max",
            ParamOp::Min => "min",
            ParamOp::Remove => "remove",
        }
    }

    pub fn parse(name: &str) -> Option<ParamOp> {
        [
            ParamOp::Set,
            ParamOp::Default,
            ParamOp::Max,
            ParamOp::Min,
            ParamOp::Remove,
        ]
        .into_iter()
        .find(|o| o.name() == name)
    }
}

/// What a `param` rule's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Any JSON number.
    Number,
    /// A whole number.
    Integer,
    /// Ollama's `keep_alive`: a duration string (`"5m"`) or a number of seconds.
    Duration,
    /// Ollama's `think`: `true`/`false` or a level (`"high"`, `"medium"`, `"low"`).
    Think,
}

/// The parameters a `param` rule may name, and their types. Ollama spells them all (in
/// `options`, or top-level for `keep_alive` and `think`); the OpenAI endpoints have some of
/// them (see `crate::request`).
pub const PARAMS: &[(&str, ParamType)] = &[
    ("temperature", ParamType::Number),
    ("top_p", ParamType::Number),
    ("top_k", ParamType::Integer),
    ("min_p", ParamType::Number),
    ("typical_p", ParamType::Number),
    ("seed", ParamType::Integer),
    ("num_ctx", ParamType::Integer),
    ("num_predict", ParamType::Integer),
    ("num_keep", ParamType::Integer),
    ("repeat_last_n", ParamType::Integer),
    ("repeat_penalty", ParamType::Number),
    ("presence_penalty", ParamType::Number),
    ("frequency_penalty", ParamType::Number),
    ("mirostat", ParamType::Integer),
    ("mirostat_tau", ParamType::Number),
    ("mirostat_eta", ParamType::Number),
    ("keep_alive", ParamType::Duration),
    ("think", ParamType::Think),
];

/// The type of parameter `name`, when a `param` rule may name it.
pub fn param_type(name: &str) -> Option<ParamType> {
    PARAMS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

impl ParamType {
    /// Whether `value` is a value of this type.
    pub fn admits(self, value: &serde_json::Value) -> bool {
        match self {
            ParamType::Number => value.is_number(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Duration => value.is_string() || value.is_number(),
            ParamType::Think => {
                value.is_boolean() || matches!(value.as_str(), Some("high" | "medium" | "low"))
            }
        }
    }

    /// Whether `max` and `min` make sense for it.
    pub fn is_numeric(self) -> bool {
        matches!(self, ParamType::Number | ParamType::Integer)
    }

    pub fn describe(self) -> &'static str {
        match self {
            ParamType::Number => "a number",
            ParamType::Integer => "a whole number",
            ParamType::Duration => "a duration (\"5m\") or a number of seconds",
            ParamType::Think => "true, false, \"high\", \"medium\" or \"low\"",
        }
    }
}

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based line: of the offending field when known, else of the rule's `[[rule]]` header.
    pub line: Option<usize>,
    pub rule_id: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl RuleError {
    /// `rules/a.toml:12: rule "x": field `pattern`: regex parse error: ...`; the parts that
    /// are unknown are left out.
    pub fn render(&self) -> String {
        let mut out = self.file.display().to_string();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(": ");
        if let Some(id) = &self.rule_id {
            out.push_str(&format!("rule {id:?}: "));
        }
        if let Some(field) = &self.field {
            out.push_str(&format!("field `{field}`: "));
        }
        out.push_str(&self.message);
        out
    }

    fn in_file(file: &Path, line: Option<usize>, message: impl Into<String>) -> RuleError {
        RuleError {
            file: file.to_path_buf(),
            line,
            rule_id: None,
            field: None,
            message: message.into(),
        }
    }
}
