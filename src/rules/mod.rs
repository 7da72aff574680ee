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
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Replace,
        Kind::Regex,
        Kind::Redact,
        Kind::Block,
        Kind::Path,
        Kind::SystemPrompt,
        Kind::Param,
        Kind::Stop,
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

/// A model name and its other spelling: `x:latest` ↔ `x`. A name's tag is what follows a
/// `:` in its last `/`-separated segment, so `host:5000/x` has no tag.
fn model_spellings(model: &str) -> Vec<String> {
    let last_segment = model.rsplit('/').next().unwrap_or(model);
    let mut names = vec![model.to_string()];
    if let Some(untagged) = model.strip_suffix(":latest") {
        names.push(untagged.to_string());
    } else if !model.is_empty() && !last_segment.contains(':') {
        names.push(format!("{model}:latest"));
    }
    names
}

/// Glob match with `*` (any run, including none) and `?` (one character), ignoring ASCII case.
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
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
}

impl ParamOp {
    pub fn name(self) -> &'static str {
        match self {
            ParamOp::Set => "set",
            ParamOp::Default => "default",
            ParamOp::Max => "max",
            ParamOp::Min => "min",
        }
    }

    pub fn parse(name: &str) -> Option<ParamOp> {
        [ParamOp::Set, ParamOp::Default, ParamOp::Max, ParamOp::Min]
            .into_iter()
            .find(|o| o.name() == name)
    }
}

/// Built-in secret / personal-data detectors for `redact`.
///
/// The patterns favour precision over recall (they ship in the default pack, which must leave
/// ordinary code and prose alone), use ASCII word boundaries (`(?-u:\b)`) so DFAs can run
/// them on any text, and match only ASCII, so a match's length in characters equals its length
/// in bytes; [`Detector::max_len`] bounds both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    Email,
    AwsAccessKey,
    GithubToken,
    OpenaiKey,
    PrivateKey,
    Jwt,
}

/// local@domain.tld: a 1–64 character local part starting with a letter or digit, 1–6 DNS
/// labels, a 2–24 letter top-level domain.
const EMAIL: &str = r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,24}(?-u:\b)";
/// AWS access key ids (long-term `AKIA`, temporary `ASIA`, and the rarer `ABIA`/`ACCA`).
const AWS_ACCESS_KEY: &str = r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)";
/// Classic (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`) and fine-grained (`github_pat_`) tokens.
const GITHUB_TOKEN: &str =
    r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{82})(?-u:\b)";
/// `sk-` keys: prefixed project/service-account/admin keys, keys carrying OpenAI's `T3BlbkFJ`
/// marker, and unprefixed alphanumeric keys of 32 or more characters (as OpenAI-compatible
/// servers issue). Kebab-case words after `sk-` match none of these.
const OPENAI_KEY: &str = r"(?-u:\b)sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,256}|[A-Za-z0-9_-]{1,128}T3BlbkFJ[A-Za-z0-9_-]{1,128}|[A-Za-z0-9]{32,128}(?-u:\b))";
/// A whole PEM (or PGP) private key block: header, a body of base64 and header lines (also
/// with `\n` escapes, as in source code strings) of at most 4096 characters, and the footer.
/// The body must hold key material: a run of 16 base64 characters within its first 272
/// (after `Proc-Type:`/`DEK-Info:`/`Version:` lines), so an empty BEGIN/END pair (a test
/// fixture, a parser's format string) is not a key. 4096 covers RSA-4096 keys in PKCS#1,
/// PKCS#8 and OpenSSH form (about 3.4k characters) even indented or with escaped newlines; a
/// larger bound makes the regex engine's lazy DFA overflow its cache and fall back to a ten
/// times slower search on every key.
const PRIVATE_KEY: &str = r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=:,.\\ \t\r\n-]{0,256}?[A-Za-z0-9+/=]{16}[A-Za-z0-9+/=:,.\\ \t\r\n-]{0,3824}?-----END (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----";
/// A signed JWT: base64url header and payload that both start with `{"` (`eyJ`), and a
/// signature of 16 to 1536 characters.
const JWT: &str =
    r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,512}\.eyJ[A-Za-z0-9_-]{5,4096}\.[A-Za-z0-9_-]{16,1536}";

impl Detector {
    pub const ALL: [Detector; 6] = [
        Detector::Email,
        Detector::AwsAccessKey,
        Detector::GithubToken,
        Detector::OpenaiKey,
        Detector::PrivateKey,
        Detector::Jwt,
    ];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::GithubToken => "github_token",
            Detector::OpenaiKey => "openai_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
        }
    }

    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The detector's regex, in `regex` crate syntax.
    pub fn pattern(self) -> &'static str {
        match self {
            Detector::Email => EMAIL,
            Detector::AwsAccessKey => AWS_ACCESS_KEY,
            Detector::GithubToken => GITHUB_TOKEN,
            Detector::OpenaiKey => OPENAI_KEY,
            Detector::PrivateKey => PRIVATE_KEY,
            Detector::Jwt => JWT,
        }
    }

    /// An upper bound on the length of any match of [`Detector::pattern`], in characters (and,
    /// the patterns being ASCII-only, in bytes).
    pub fn max_len(self) -> usize {
        match self {
            // 64 + "@" + 6 × 64 + 24
            Detector::Email => 473,
            Detector::AwsAccessKey => 20,
            // "ghp_" + 255
            Detector::GithubToken => 259,
            // "sk-" + "svcacct-" + 256
            Detector::OpenaiKey => 267,
            // header ≤ 84, body ≤ 4096, footer ≤ 82
            Detector::PrivateKey => 4262,
            // "eyJ" + 512 + ".eyJ" + 4096 + "." + 1536
            Detector::Jwt => 6152,
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

/// Parses and validates one file's text. `file` is only used in error messages and
/// [`Rule::source`].
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Rule>, Vec<RuleError>> {
    let mut parsed = parse_text(file, text);
    let ids: Vec<_> = parsed
        .ids
        .iter()
        .map(|(id, line)| (file, id.as_str(), *line))
        .collect();
    parsed.errors.extend(duplicate_ids(&ids));
    finish(parsed.rules, parsed.errors)
}

/// Every `*.toml` in `dir` (sorted by name, not recursive), validated together; also rejects
/// ids duplicated across files. A missing directory is an empty rule set. Files whose names
/// start with `.` (editor lock files such as `.#a.toml`) are skipped.
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, Vec<RuleError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(vec![RuleError::in_file(
                dir,
                None,
                format!("cannot read the rule directory: {e}"),
            )])
        }
    };
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(RuleError::in_file(
                    dir,
                    None,
                    format!("cannot list the rule directory: {e}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let toml = path.extension().is_some_and(|ext| ext == "toml");
        // Follows symlinks, so a link to a rule file counts and a link to a directory does not.
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        if toml && !hidden && !is_dir {
            files.push(path);
        }
    }
    files.sort();

    let mut parsed_files = Vec::new();
    for path in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let parsed = parse_text(&path, &text);
                parsed_files.push((path, parsed));
            }
            Err(e) => errors.push(RuleError::in_file(&path, None, format!("cannot read: {e}"))),
        }
    }
    let ids: Vec<_> = parsed_files
        .iter()
        .flat_map(|(path, parsed)| {
            parsed
                .ids
                .iter()
                .map(move |(id, line)| (path.as_path(), id.as_str(), *line))
        })
        .collect();
    let duplicates = duplicate_ids(&ids);
    let mut rules = Vec::new();
    for (_, parsed) in parsed_files {
        rules.extend(parsed.rules);
        errors.extend(parsed.errors);
    }
    errors.extend(duplicates);
    tracing::debug!(
        dir = %dir.display(),
        rules = rules.len(),
        errors = errors.len(),
        "rule directory read"
    );
    finish(rules, errors)
}

/// Validates one spec (the admin API's entry point). `line` is reported with every error.
pub fn validate_spec(
    file: &Path,
    line: Option<usize>,
    spec: &RuleSpec,
) -> Result<Rule, Vec<RuleError>> {
    validate_located(file, line, spec, &HashMap::new(), &HashSet::new())
}

fn finish(rules: Vec<Rule>, mut errors: Vec<RuleError>) -> Result<Vec<Rule>, Vec<RuleError>> {
    if errors.is_empty() {
        Ok(rules)
    } else {
        // Stable: file order first (files are read in order), then by line.
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(errors)
    }
}

/// An error for every id that was already used, naming where it was first defined.
fn duplicate_ids(ids: &[(&Path, &str, Option<usize>)]) -> Vec<RuleError> {
    let mut first: HashMap<&str, (&Path, Option<usize>)> = HashMap::new();
    let mut errors = Vec::new();
    for &(file, id, line) in ids {
        match first.get(id) {
            Some(&(first_file, first_line)) => {
                let at = match first_line {
                    Some(l) => format!("{}:{l}", first_file.display()),
                    None => first_file.display().to_string(),
                };
                errors.push(RuleError {
                    file: file.to_path_buf(),
                    line,
                    rule_id: Some(id.to_string()),
                    field: Some("id".into()),
                    message: format!("duplicate id; first defined at {at}"),
                });
            }
            None => {
                first.insert(id, (file, line));
            }
        }
    }
    errors
}

/// One file, parsed: its valid rules, the line-tagged ids of all its rules (valid or not, for
/// the duplicate check) and its errors.
struct ParsedFile {
    rules: Vec<Rule>,
    ids: Vec<(String, Option<usize>)>,
    errors: Vec<RuleError>,
}

type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The second pass over a file whose top level is known to be fine: keeps the position of
/// every rule table and of every key in it.
#[derive(Deserialize)]
struct RuleTables {
    #[serde(default)]
    rule: Vec<Spanned<SpannedTable>>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    LineIndex::new(text).line(offset)
}

/// Byte offset → 1-based line number, in O(log lines) after one pass over the text (a file
/// of thousands of rules asks for thousands of line numbers).
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

fn parse_text(file: &Path, text: &str) -> ParsedFile {
    let mut out = ParsedFile {
        rules: Vec::new(),
        ids: Vec::new(),
        errors: Vec::new(),
    };
    let syntax_error = |e: toml::de::Error| {
        RuleError::in_file(
            file,
            e.span().map(|span| line_of(text, span.start)),
            format!("TOML: {}", e.message().trim_end()),
        )
    };
    // First pass: the top level, to name stray keys and a `[rule]` written for `[[rule]]`.
    let top: SpannedTable = match toml::from_str(text) {
        Ok(top) => top,
        Err(e) => {
            out.errors.push(syntax_error(e));
            return out;
        }
    };
    let lines = LineIndex::new(text);
    let mut rules_ok = true;
    for (key, value) in &top {
        let line = Some(lines.line(key.span().start));
        if key.get_ref() != "rule" {
            out.errors.push(RuleError::in_file(
                file,
                line,
                format!(
                    "unknown top-level key `{}`; a rule file holds only [[rule]] tables",
                    key.get_ref()
                ),
            ));
            continue;
        }
        let is_tables = match value.get_ref() {
            toml::Value::Array(items) => items.iter().all(toml::Value::is_table),
            _ => false,
        };
        if !is_tables {
            rules_ok = false;
            out.errors.push(RuleError::in_file(
                file,
                line,
                "`rule` must be an array of tables: start each rule with [[rule]] (not [rule])",
            ));
        }
    }
    if !rules_ok {
        return out;
    }
    let tables = match toml::from_str::<RuleTables>(text) {
        Ok(tables) => tables.rule,
        Err(e) => {
            out.errors.push(syntax_error(e));
            return out;
        }
    };
    for table in &tables {
        let rule_line = Some(lines.line(table.span().start));
        let (spec, field_lines, invalid, mut errors) =
            spec_from_table(file, &lines, rule_line, table.get_ref());
        if let Some(id) = spec.id.as_deref().filter(|id| id_problem(id).is_none()) {
            let id_line = field_lines.get("id").copied().or(rule_line);
            out.ids.push((id.to_string(), id_line));
        }
        match validate_located(file, rule_line, &spec, &field_lines, &invalid) {
            Ok(rule) if errors.is_empty() => out.rules.push(rule),
            Ok(_) => {}
            Err(more) => errors.extend(more),
        }
        out.errors.extend(errors);
    }
    out
}

/// Builds a [`RuleSpec`] from one table field by field, so that a field of the wrong type or
/// an unknown field is one error among others rather than the end of parsing. Returns the
/// spec, each field's line, the fields that were present but unusable, and the errors.
fn spec_from_table(
    file: &Path,
    line_index: &LineIndex,
    rule_line: Option<usize>,
    table: &SpannedTable,
) -> (
    RuleSpec,
    HashMap<String, usize>,
    HashSet<String>,
    Vec<RuleError>,
) {
    let mut spec = RuleSpec::default();
    let mut lines = HashMap::new();
    let mut invalid = HashSet::new();
    let mut errors = Vec::new();
    let rule_id = table
        .get("id")
        .and_then(|v| v.get_ref().as_str())
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    for (key, value) in table {
        let field = key.get_ref().as_str();
        let line = line_index.line(key.span().start);
        lines.insert(field.to_string(), line);
        let v = value.get_ref();
        let result = match field {
            "id" => string(v).map(|s| spec.id = Some(s)),
            "kind" => string(v).map(|s| spec.kind = Some(s)),
            "find" => string(v).map(|s| spec.find = Some(s)),
            "replace" => string(v).map(|s| spec.replace = Some(s)),
            "case_insensitive" => boolean(v).map(|b| spec.case_insensitive = Some(b)),
            "whole_word" => boolean(v).map(|b| spec.whole_word = Some(b)),
            "enabled" => boolean(v).map(|b| spec.enabled = Some(b)),
            "mode" => string(v).map(|s| spec.mode = Some(s)),
            "models" => strings(v).map(|s| spec.models = Some(s)),
            "endpoints" => strings(v).map(|s| spec.endpoints = Some(s)),
            "pattern" => string(v).map(|s| spec.pattern = Some(s)),
            "max_len" => count(v).map(|n| spec.max_len = Some(n)),
            "detector" => string(v).map(|s| spec.detector = Some(s)),
            "mask" => string(v).map(|s| spec.mask = Some(s)),
            "message" => string(v).map(|s| spec.message = Some(s)),
            "roots" => strings(v).map(|s| spec.roots = Some(s)),
            "min_confidence" => number(v).map(|n| spec.min_confidence = Some(n)),
            "action" => string(v).map(|s| spec.action = Some(s)),
            "text" => string(v).map(|s| spec.text = Some(s)),
            "position" => string(v).map(|s| spec.position = Some(s)),
            "name" => string(v).map(|s| spec.name = Some(s)),
            "value" => {
                spec.value = Some(v.clone());
                Ok(())
            }
            "op" => string(v).map(|s| spec.op = Some(s)),
            "sequences" => strings(v).map(|s| spec.sequences = Some(s)),
            "description" => string(v).map(|s| spec.description = Some(s)),
            unknown => Err(unknown_field_message(unknown)),
        };
        if let Err(message) = result {
            invalid.insert(field.to_string());
            errors.push(RuleError {
                file: file.to_path_buf(),
                line: Some(line).or(rule_line),
                rule_id: rule_id.clone(),
                field: Some(field.to_string()),
                message,
            });
        }
    }
    (spec, lines, invalid, errors)
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn string(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, found {}", type_name(other))),
    }
}

fn boolean(v: &toml::Value) -> Result<bool, String> {
    match v {
        toml::Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "expected true or false, found {}",
            type_name(other)
        )),
    }
}

fn count(v: &toml::Value) -> Result<usize, String> {
    match v {
        toml::Value::Integer(n) => {
            usize::try_from(*n).map_err(|_| format!("must be between 1 and {MAX_MAX_LEN}, not {n}"))
        }
        other => Err(format!("expected an integer, found {}", type_name(other))),
    }
}

fn number(v: &toml::Value) -> Result<f64, String> {
    match v {
        toml::Value::Float(f) => Ok(*f),
        // Exact for every integer a confidence could sensibly be written as.
        toml::Value::Integer(n) => Ok(*n as f64),
        other => Err(format!("expected a number, found {}", type_name(other))),
    }
}

fn strings(v: &toml::Value) -> Result<Vec<String>, String> {
    let toml::Value::Array(items) = v else {
        return Err(format!(
            "expected an array of strings such as [\"a\", \"b\"], found {}",
            type_name(v)
        ));
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "expected an array of strings, found {} in it",
                type_name(other)
            )),
        })
        .collect()
}

fn unknown_field_message(field: &str) -> String {
    let closest = ALL_FIELDS
        .iter()
        .map(|known| (edit_distance(field, known), *known))
        .min();
    match closest {
        Some((distance, known)) if distance <= 2 => {
            format!("unknown field (did you mean `{known}`?)")
        }
        _ => format!("unknown field; rule fields are: {}", ALL_FIELDS.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("must not be empty".into())
    } else if id.chars().count() > MAX_ID_LEN {
        Some(format!("must be at most {MAX_ID_LEN} characters"))
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Some(format!(
            "{id:?} may only contain letters, digits, `_`, `.` and `-`"
        ))
    } else {
        None
    }
}

fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// Collects the errors of one rule, each placed at its field's line when known.
struct Report<'a> {
    file: &'a Path,
    line: Option<usize>,
    rule_id: Option<String>,
    field_lines: &'a HashMap<String, usize>,
    /// Fields that were present but already reported as unusable: not "missing" as well.
    invalid: &'a HashSet<String>,
    errors: Vec<RuleError>,
}

impl Report<'_> {
    fn at(&mut self, field: Option<&str>, message: impl Into<String>) {
        let line = field
            .and_then(|f| self.field_lines.get(f).copied())
            .or(self.line);
        self.errors.push(RuleError {
            file: self.file.to_path_buf(),
            line,
            rule_id: self.rule_id.clone(),
            field: field.map(str::to_string),
            message: message.into(),
        });
    }

    fn field(&mut self, field: &str, message: impl Into<String>) {
        self.at(Some(field), message);
    }

    fn missing(&mut self, field: &str, kind: Kind) {
        if !self.invalid.contains(field) {
            self.field(
                field,
                format!("missing (required by kind `{}`)", kind.name()),
            );
        }
    }

    /// A string field the kind requires, which must not be empty unless `may_be_empty`.
    fn required(
        &mut self,
        field: &str,
        value: &Option<String>,
        kind: Kind,
        may_be_empty: bool,
    ) -> Option<String> {
        match value {
            None => {
                self.missing(field, kind);
                None
            }
            Some(s) if s.is_empty() && !may_be_empty => {
                self.field(field, "must not be empty");
                None
            }
            Some(s) => Some(s.clone()),
        }
    }

    /// Checks `max_len` against its range.
    fn max_len(&mut self, max_len: Option<usize>) -> Option<Option<usize>> {
        match max_len {
            Some(n) if !(1..=MAX_MAX_LEN).contains(&n) => {
                self.field(
                    "max_len",
                    format!("must be between 1 and {MAX_MAX_LEN}, not {n}"),
                );
                None
            }
            other => Some(other),
        }
    }

    /// Compiles a pattern and checks that it cannot match the empty string and that its
    /// longest match (when bounded) fits in `max_len`.
    fn pattern(
        &mut self,
        pattern: &str,
        case_insensitive: bool,
        max_len: Option<usize>,
        max_len_given: bool,
    ) -> Option<Regex> {
        let regex = match RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .build()
        {
            Ok(regex) => regex,
            Err(e) => {
                self.field("pattern", e.to_string());
                return None;
            }
        };
        if can_match_empty(pattern, &regex) {
            self.field(
                "pattern",
                format!(
                    "{pattern:?} can match the empty string, so it would match everywhere; \
                     make it consume at least one character (e.g. `a+` rather than `a*`)"
                ),
            );
            return None;
        }
        if let (Some(max_len), Some(longest)) =
            (max_len, longest_match_chars(pattern, case_insensitive))
        {
            if longest > max_len {
                let field = if max_len_given { "max_len" } else { "pattern" };
                self.field(
                    field,
                    format!(
                        "the pattern can match up to {longest} characters but max_len is \
                         {max_len}, so longer matches would be cut short; set max_len = \
                         {longest} or more"
                    ),
                );
                return None;
            }
        }
        Some(regex)
    }
}

fn can_match_empty(pattern: &str, regex: &Regex) -> bool {
    match syntax::parse(pattern) {
        // Also catches patterns that match nothing but an empty string at a boundary (`\b`).
        Ok(hir) => hir.properties().minimum_len() == Some(0),
        Err(_) => regex.is_match(""),
    }
}

/// The longest match of `pattern` in characters, when bounded and computable: parsed without
/// Unicode, every class matches one byte where the real regex matches one character, so the
/// byte bound of that parse bounds the real match's characters. Patterns that need Unicode
/// mode (`\p{Greek}`) give `None`.
fn longest_match_chars(pattern: &str, case_insensitive: bool) -> Option<usize> {
    let config = syntax::Config::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(case_insensitive);
    syntax::parse_with(pattern, &config)
        .ok()?
        .properties()
        .maximum_len()
}

/// Checks that every `$name`, `${name}` and `$1` in a replacement names a group of the regex,
/// following the `regex` crate's rules: `$$` is a literal `$`, and an unbraced name runs as
/// far as `[A-Za-z0-9_]` does, so `$1a` means group `1a`, not group 1 and then `a`.
fn check_replacement(regex: &Regex, replacement: &str) -> Result<(), String> {
    let mut rest = replacement;
    while let Some(dollar) = rest.find('$') {
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        }
        let (name, braced) = if let Some(inner) = rest.strip_prefix('{') {
            match inner.find('}') {
                Some(close) => {
                    let name = &inner[..close];
                    rest = &inner[close + 1..];
                    (name, true)
                }
                // No closing brace: the `$` is literal.
                None => continue,
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            (name, false)
        };
        if name.is_empty() {
            continue;
        }
        let exists = match name.parse::<usize>() {
            Ok(index) => index < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if !exists {
            let mut message =
                format!("`replace` refers to group `{name}`, which the pattern does not have");
            let digits = name.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
            if !braced && digits > 0 {
                let (number, tail) = name.split_at(digits);
                message.push_str(&format!(
                    " (write `${{{number}}}{tail}` for group {number} followed by `{tail}`)"
                ));
            }
            return Err(message);
        }
    }
    Ok(())
}

/// Converts a TOML value to the JSON a request carries.
fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(n) => serde_json::Value::from(*n),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{f} cannot be sent as JSON"))?,
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn validate_located(
    file: &Path,
    line: Option<usize>,
    spec: &RuleSpec,
    field_lines: &HashMap<String, usize>,
    invalid: &HashSet<String>,
) -> Result<Rule, Vec<RuleError>> {
    let mut r = Report {
        file,
        line,
        rule_id: spec.id.clone().filter(|id| !id.is_empty()),
        field_lines,
        invalid,
        errors: Vec::new(),
    };

    let id = match spec.id.as_deref() {
        None => {
            if !invalid.contains("id") {
                r.field("id", "missing; every rule needs a unique id");
            }
            None
        }
        Some(id) => match id_problem(id) {
            Some(problem) => {
                r.field("id", problem);
                None
            }
            None => Some(id.to_string()),
        },
    };

    let kinds = || one_of(Kind::ALL.map(Kind::name));
    let kind = match spec.kind.as_deref() {
        None => {
            if !invalid.contains("kind") {
                r.field("kind", format!("missing; one of: {}", kinds()));
            }
            None
        }
        Some(name) => {
            let kind = Kind::parse(name);
            if kind.is_none() {
                r.field(
                    "kind",
                    format!("unknown kind {name:?}; expected one of: {}", kinds()),
                );
            }
            kind
        }
    };
    if let Some(kind) = kind {
        for field in spec.present_fields() {
            if !COMMON_FIELDS.contains(&field) && !kind.fields().contains(&field) {
                r.field(
                    field,
                    format!(
                        "does not apply to kind `{}` (its fields: {})",
                        kind.name(),
                        kind.fields().join(", ")
                    ),
                );
            }
        }
    }

    let mode = match spec.mode.as_deref() {
        None => Some(Mode::Enforce),
        Some(name) => {
            let mode = Mode::parse(name);
            if mode.is_none() {
                r.field(
                    "mode",
                    format!("unknown mode {name:?}; expected enforce or shadow"),
                );
            }
            mode
        }
    };

    let models = match &spec.models {
        None => vec!["*".to_string()],
        Some(models) => {
            if models.is_empty() {
                r.field(
                    "models",
                    "must not be empty; leave it out to cover every model (or set enabled = false)",
                );
            }
            if models.iter().any(String::is_empty) {
                r.field("models", "contains an empty pattern");
            }
            models.clone()
        }
    };

    let endpoints = match &spec.endpoints {
        None => Vec::new(),
        Some(names) => {
            if names.is_empty() {
                r.field(
                    "endpoints",
                    "must not be empty; leave it out or write [\"*\"] for every endpoint",
                );
            }
            let mut all = false;
            let mut endpoints = Vec::new();
            for name in names {
                match (name.as_str(), Endpoint::parse(name)) {
                    ("*", _) => all = true,
                    (_, Some(e)) if !endpoints.contains(&e) => endpoints.push(e),
                    (_, Some(_)) => {}
                    (_, None) => r.field(
                        "endpoints",
                        format!(
                            "unknown endpoint {name:?}; expected one of: {}, *",
                            one_of(Endpoint::ALL.map(Endpoint::name))
                        ),
                    ),
                }
            }
            if all {
                endpoints.clear();
            }
            endpoints
        }
    };

    let action = kind.and_then(|kind| build_action(&mut r, kind, spec));

    match (id, mode, action) {
        (Some(id), Some(mode), Some(action)) if r.errors.is_empty() => Ok(Rule {
            id,
            enabled: spec.enabled.unwrap_or(true),
            mode,
            models,
            endpoints,
            action,
            source: file.to_path_buf(),
            description: spec.description.clone(),
        }),
        _ => Err(r.errors),
    }
}

/// The kind-specific half of validation. Returns `None` when anything is wrong (and then
/// `r` holds at least one error).
fn build_action(r: &mut Report<'_>, kind: Kind, spec: &RuleSpec) -> Option<Action> {
    let case_insensitive = spec.case_insensitive.unwrap_or(false);
    match kind {
        Kind::Replace => {
            let find = r.required("find", &spec.find, kind, false);
            let replace = r.required("replace", &spec.replace, kind, true);
            Some(Action::Replace {
                find: find?,
                replace: replace?,
                case_insensitive,
                whole_word: spec.whole_word.unwrap_or(false),
            })
        }
        Kind::Regex => {
            let max_len = r
                .max_len(spec.max_len)
                .map(|m| m.unwrap_or(DEFAULT_MAX_LEN));
            let pattern = r.required("pattern", &spec.pattern, kind, true);
            let replace = r.required("replace", &spec.replace, kind, true);
            let regex = r.pattern(pattern.as_deref()?, false, max_len, spec.max_len.is_some())?;
            let replace = replace?;
            if let Err(message) = check_replacement(&regex, &replace) {
                r.field("replace", message);
                return None;
            }
            Some(Action::Regex {
                pattern: pattern?,
                replace,
                max_len: max_len?,
            })
        }
        Kind::Redact => {
            let max_len = r.max_len(spec.max_len);
            let mask = spec.mask.clone().unwrap_or_else(|| DEFAULT_MASK.into());
            match (&spec.detector, &spec.pattern) {
                (Some(_), Some(_)) => {
                    r.field("pattern", "give either `detector` or `pattern`, not both");
                    None
                }
                (None, None) => {
                    if !r.invalid.contains("detector") && !r.invalid.contains("pattern") {
                        r.at(
                            None,
                            "kind `redact` needs `detector` (a built-in) or `pattern` (a regex)",
                        );
                    }
                    None
                }
                (Some(name), None) => {
                    let Some(detector) = Detector::parse(name) else {
                        r.field(
                            "detector",
                            format!(
                                "unknown detector {name:?}; known detectors: {}",
                                one_of(Detector::ALL.map(Detector::name))
                            ),
                        );
                        return None;
                    };
                    let max_len = max_len?.unwrap_or(detector.max_len());
                    if max_len < detector.max_len() {
                        r.field(
                            "max_len",
                            format!(
                                "detector `{}` can match up to {} characters; max_len must not \
                                 be smaller (leave it out to use that)",
                                detector.name(),
                                detector.max_len()
                            ),
                        );
                        return None;
                    }
                    Some(Action::Redact {
                        detector: Some(detector),
                        pattern: None,
                        mask,
                        max_len,
                    })
                }
                (None, Some(pattern)) => {
                    let max_len = max_len.map(|m| m.unwrap_or(DEFAULT_MAX_LEN));
                    r.pattern(pattern, false, max_len, spec.max_len.is_some())?;
                    Some(Action::Redact {
                        detector: None,
                        pattern: Some(pattern.clone()),
                        mask,
                        max_len: max_len?,
                    })
                }
            }
        }
        Kind::Block => {
            let max_len = r.max_len(spec.max_len);
            let message = r.required("message", &spec.message, kind, false);
            let (find, pattern, max_len) = match (&spec.find, &spec.pattern) {
                (Some(_), Some(_)) => {
                    r.field("pattern", "give either `find` or `pattern`, not both");
                    return None;
                }
                (None, None) => {
                    if !r.invalid.contains("find") && !r.invalid.contains("pattern") {
                        r.at(
                            None,
                            "kind `block` needs `find` (literal text) or `pattern` (a regex)",
                        );
                    }
                    return None;
                }
                (Some(find), None) => {
                    if find.is_empty() {
                        r.field("find", "must not be empty");
                        return None;
                    }
                    let length = find.chars().count();
                    let max_len = max_len?.unwrap_or(length);
                    if max_len < length {
                        r.field(
                            "max_len",
                            format!(
                                "`find` is {length} characters long; max_len must not be smaller \
                                 (leave it out to use that)"
                            ),
                        );
                        return None;
                    }
                    (Some(find.clone()), None, max_len)
                }
                (None, Some(pattern)) => {
                    let max_len = max_len.map(|m| m.unwrap_or(DEFAULT_MAX_LEN));
                    r.pattern(pattern, case_insensitive, max_len, spec.max_len.is_some())?;
                    (None, Some(pattern.clone()), max_len?)
                }
            };
            Some(Action::Block {
                find,
                pattern,
                case_insensitive,
                message: message?,
                max_len,
            })
        }
        Kind::Path => {
            let roots = match &spec.roots {
                None => Some(vec![".".to_string()]),
                Some(roots) if roots.is_empty() => {
                    r.field(
                        "roots",
                        "must not be empty; leave it out for the working directory",
                    );
                    None
                }
                Some(roots) if roots.iter().any(String::is_empty) => {
                    r.field("roots", "contains an empty path");
                    None
                }
                Some(roots) => Some(roots.clone()),
            };
            let min_confidence = match spec.min_confidence {
                None => Some(DEFAULT_MIN_CONFIDENCE),
                Some(c) if (0.0..=1.0).contains(&c) => Some(c),
                Some(c) => {
                    r.field(
                        "min_confidence",
                        format!("must be between 0 and 1, not {c}"),
                    );
                    None
                }
            };
            let fix = match spec.action.as_deref() {
                None | Some("fix") => Some(true),
                Some("flag") => Some(false),
                Some(other) => {
                    r.field(
                        "action",
                        format!("unknown action {other:?}; expected fix or flag"),
                    );
                    None
                }
            };
            Some(Action::Path {
                roots: roots?,
                min_confidence: min_confidence?,
                fix: fix?,
            })
        }
        Kind::SystemPrompt => {
            let position = match spec.position.as_deref() {
                None => Some(Position::Prepend),
                Some(name) => {
                    let position = Position::parse(name);
                    if position.is_none() {
                        r.field(
                            "position",
                            format!(
                                "unknown position {name:?}; expected prepend, append or replace"
                            ),
                        );
                    }
                    position
                }
            };
            // An empty text only makes sense as "replace the system prompt with nothing".
            let may_be_empty = position == Some(Position::Replace);
            let text = r.required("text", &spec.text, kind, may_be_empty);
            Some(Action::SystemPrompt {
                text: text?,
                position: position?,
            })
        }
        Kind::Param => {
            let name = r.required("name", &spec.name, kind, false);
            let op = match spec.op.as_deref() {
                None => Some(ParamOp::Set),
                Some(name) => {
                    let op = ParamOp::parse(name);
                    if op.is_none() {
                        r.field(
                            "op",
                            format!("unknown op {name:?}; expected set, default, max or min"),
                        );
                    }
                    op
                }
            };
            let value = match &spec.value {
                None => {
                    r.missing("value", kind);
                    None
                }
                Some(value) => match toml_to_json(value) {
                    Ok(json) => Some(json),
                    Err(message) => {
                        r.field("value", message);
                        None
                    }
                },
            };
            if let (Some(op @ (ParamOp::Max | ParamOp::Min)), Some(value)) = (op, &value) {
                if !value.is_number() {
                    r.field(
                        "value",
                        format!("op `{}` needs a number, not {value}", op.name()),
                    );
                    return None;
                }
            }
            Some(Action::Param {
                name: name?,
                value: value?,
                op: op?,
            })
        }
        Kind::Stop => match &spec.sequences {
            None => {
                r.missing("sequences", kind);
                None
            }
            Some(sequences) if sequences.is_empty() => {
                r.field("sequences", "must not be empty");
                None
            }
            Some(sequences) if sequences.iter().any(String::is_empty) => {
                r.field("sequences", "contains an empty string");
                None
            }
            Some(sequences) => Some(Action::Stop {
                sequences: sequences.clone(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Vec<Rule>, Vec<RuleError>> {
        parse_file(Path::new("rules/t.toml"), text)
    }

    fn errors(text: &str) -> Vec<RuleError> {
        parse(text).expect_err("expected errors")
    }

    fn rendered(errors: &[RuleError]) -> String {
        errors
            .iter()
            .map(RuleError::render)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn one(text: &str) -> Rule {
        let mut rules = parse(text).unwrap_or_else(|e| panic!("{}", rendered(&e)));
        assert_eq!(rules.len(), 1);
        rules.remove(0)
    }

    fn fixture(dir: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rules")
            .join(dir)
    }

    /// Every match of `detector` in `text`.
    fn matches(detector: Detector, text: &str) -> Vec<String> {
        Regex::new(detector.pattern())
            .unwrap()
            .find_iter(text)
            .map(|m| m.as_str().to_string())
            .collect()
    }

    fn alnum(n: usize) -> String {
        "aZ3kQ9xB7mP2".chars().cycle().take(n).collect::<String>()
    }

    fn pem(kind: &str, body_len: usize) -> String {
        let body: String = alnum(body_len);
        format!("-----BEGIN {kind}-----{body}-----END {kind}-----")
    }

    const RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi+Q4lWXk1jPlL8vA2xUzKqbFHd
v3H2lD3bBkc9Zx0rJ2X3mF1Jq9bQ7Vw9B6nq8Tq0Zr3z5Y+1T7Xl5gX0/9pZ1Q==
-----END RSA PRIVATE KEY-----";

    const JWT_EXAMPLE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    /// Ordinary code and prose that no detector may touch.
    const INNOCENT: &[&str] = &[
        "Thanks @alice and @bob for the review; ping @carol-dev on Slack.",
        "Use the sk- prefix for secret keys and the pk- prefix for public ones.",
        "We migrated sk-learn pipelines to the sk-this-is-a-very-long-kebab-case-identifier-name.",
        "The key AKIA1234 is too short, AKIAIOSFODNN7 too, and XAKIAIOSFODNN7EXAMPLE is glued.",
        "AKIAIOSFODNN7EXAMPLEXYZW is too long to be an access key id.",
        "ghp_short and gho_ are prefixes, not tokens; github_pat_ alone is a prefix.",
        "risk-assessment-for-monorepos-with-many-packages-and-long-names-0123456789",
        "task-0123456789abcdef0123456789abcdef0123456789",
        "The header eyJhbGciOiJIUzI1NiJ9 decodes to {\"alg\":\"HS256\"}.",
        "eyJfoo.eyJbar.baz is not a token.",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----",
        "-----BEGIN RSA PRIVATE KEY----- is how the header line starts.",
        r#"
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Config { pub api_key: Option<String>, pub retries: u32 }

fn main() -> anyhow::Result<()> {
    let key = std::env::var("OPENAI_API_KEY")?; // sk-... from the environment
    let mut map: HashMap<&str, usize> = HashMap::new();
    map.insert("AKIA", 4);
    println!("{key:?} {:?}", map.get("sk-"));
    let jwt_header = "eyJ";
    let s = format!("{}@{}", user, host);
    Ok(())
}
"#,
        r#"
import numpy as np

@dataclass
class Layer:
    weights: np.ndarray

    @property
    def shape(self):
        return self.weights.shape

def forward(x, layer):
    y = x @ layer.weights
    return y  # see user@localhost and pip install requests==2.31.0
"#,
        "npm i @scope/pkg@latest && pip install foo@1.2.3 && node@18.x",
        "A base64 blob: dGhpcyBpcyBub3QgYSBzZWNyZXQsIGp1c3QgYSBsb25nIHN0cmluZw==",
        "uuid 123e4567-e89b-12d3-a456-426614174000 and sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ];

    #[test]
    fn detectors_match_realistic_examples() {
        let aws = "AKIAIOSFODNN7EXAMPLE";
        let sts = "ASIAY34FZKBOKMUTVV7A";
        assert_eq!(
            matches(
                Detector::AwsAccessKey,
                &format!("aws_access_key_id = {aws}\nkey={sts}.")
            ),
            [aws, sts]
        );

        let classic = format!("ghp_{}", alnum(36));
        let app = format!("ghs_{}", alnum(36));
        let fine = format!("github_pat_{}_{}", alnum(22), alnum(59));
        let text = format!("token: {classic}\nGITHUB_TOKEN={app} \"{fine}\"");
        assert_eq!(
            matches(Detector::GithubToken, &text),
            [classic.as_str(), &app, &fine]
        );

        let legacy = format!("sk-{}T3BlbkFJ{}", alnum(20), alnum(20));
        let project = format!("sk-proj-{}T3BlbkFJ{}-{}", alnum(70), alnum(60), alnum(20));
        let service = format!("sk-svcacct-{}", alnum(40));
        let compatible = format!("sk-{}", alnum(32));
        let text = format!(
            "OPENAI_API_KEY={legacy}\nclient = OpenAI(api_key=\"{project}\")\n{service} and {compatible}."
        );
        assert_eq!(
            matches(Detector::OpenaiKey, &text),
            [legacy.as_str(), &project, &service, &compatible]
        );

        let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----";
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\n-----END RSA PRIVATE KEY-----";
        let in_code = r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
        let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0Y3ZQBCAC6\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----";
        let text = format!(
            "{RSA_KEY}\n\nkey = \"\"\"\n{openssh}\n\"\"\"\n{encrypted}\nKEY = \"{in_code}\"\n{pgp}"
        );
        assert_eq!(
            matches(Detector::PrivateKey, &text),
            [RSA_KEY, openssh, encrypted, in_code, pgp]
        );
        // Two keys in a row are two matches, not one spanning both.
        let two = format!("{RSA_KEY}\n{RSA_KEY}");
        assert_eq!(matches(Detector::PrivateKey, &two).len(), 2);

        assert_eq!(
            matches(
                Detector::Jwt,
                &format!("Authorization: Bearer {JWT_EXAMPLE}\n")
            ),
            [JWT_EXAMPLE]
        );

        assert_eq!(
            matches(
                Detector::Email,
                "Write to jane.doe+news@mail.example.co.uk or ops@example.org."
            ),
            ["jane.doe+news@mail.example.co.uk", "ops@example.org"]
        );
    }

    #[test]
    fn detectors_ignore_look_alikes() {
        for detector in Detector::ALL {
            for text in INNOCENT {
                assert_eq!(
                    matches(detector, text),
                    Vec::<String>::new(),
                    "{} in {text:?}",
                    detector.name()
                );
            }
        }
        // Bodies that are too long or too short are not keys, nor a BEGIN/END pair around no
        // key material (reqwest's test fixture, in a Rust string).
        assert!(matches(Detector::PrivateKey, &pem("PRIVATE KEY", 4097)).is_empty());
        assert!(matches(
            Detector::PrivateKey,
            "\"-----BEGIN RSA PRIVATE KEY-----\\n\\\n            -----END RSA PRIVATE KEY-----\\n\""
        )
        .is_empty());
        assert!(matches(
            Detector::PrivateKey,
            "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----"
        )
        .is_empty());
        assert!(matches(Detector::GithubToken, &format!("ghp_{}", alnum(35))).is_empty());
        assert!(matches(Detector::OpenaiKey, &format!("sk-{}", alnum(31))).is_empty());
        assert!(matches(Detector::Email, "see a@b.c and x@self.T").is_empty());
    }

    #[test]
    fn detector_patterns_are_bounded_and_max_len_holds() {
        for detector in Detector::ALL {
            let name = detector.name();
            assert_eq!(Detector::parse(name), Some(detector));
            Regex::new(detector.pattern()).unwrap();
            let hir = syntax::parse(detector.pattern()).unwrap();
            let props = hir.properties();
            assert!(
                props.minimum_len().unwrap_or(0) > 0,
                "{name} can match empty"
            );
            let bytes = props.maximum_len();
            assert!(
                bytes.is_some_and(|n| n <= detector.max_len()),
                "{name}: longest match is {bytes:?} bytes, max_len {}",
                detector.max_len()
            );
            let chars = longest_match_chars(detector.pattern(), false);
            assert_eq!(chars, bytes, "{name} is not ASCII-only");
        }
        assert_eq!(Detector::parse("ssn"), None);
    }

    #[test]
    fn detector_max_len_is_reached_by_a_maximal_example() {
        let label = format!("a{}.", alnum(62));
        let email = format!("{}@{}{}", alnum(64), label.repeat(6), "z".repeat(24));
        let cases = [
            (Detector::Email, email),
            (Detector::AwsAccessKey, format!("AKIA{}", "Z9".repeat(8))),
            (Detector::GithubToken, format!("ghp_{}", alnum(255))),
            (Detector::OpenaiKey, format!("sk-svcacct-{}", alnum(256))),
            (
                Detector::PrivateKey,
                format!(
                    "-----BEGIN AAAAAAAAAAAAAAAA BBBBBBBBBBBBBBBB CCCCCCCCCCCCCCCC PRIVATE KEY BLOCK-----{}-----END AAAAAAAAAAAAAAAA BBBBBBBBBBBBBBBB CCCCCCCCCCCCCCCC PRIVATE KEY BLOCK-----",
                    alnum(4096)
                ),
            ),
            (
                Detector::Jwt,
                format!("eyJ{}.eyJ{}.{}", alnum(512), alnum(4096), alnum(1536)),
            ),
        ];
        for (detector, example) in cases {
            assert_eq!(
                matches(detector, &example),
                [example.as_str()],
                "{}",
                detector.name()
            );
            assert_eq!(
                example.chars().count(),
                detector.max_len(),
                "{}",
                detector.name()
            );
        }
    }

    #[test]
    fn design_example_parses_into_the_expected_rule() {
        let text = r#"
[[rule]]
id = "no-confidential"      # unique across all files; required
kind = "replace"            # replace | regex | redact | block | path | system_prompt | param | stop
find = "confidential"       # replace: literal text
replace = "[redacted]"
case_insensitive = false    # optional
whole_word = false          # optional
enabled = true              # optional, default true
mode = "enforce"            # enforce | shadow (shadow: audit only, output unchanged)
models = ["*"]              # optional globs on the request's model name
endpoints = ["*"]           # optional: generate | chat | openai_chat | openai_completions
"#;
        assert_eq!(
            one(text),
            Rule {
                id: "no-confidential".into(),
                enabled: true,
                mode: Mode::Enforce,
                models: vec!["*".into()],
                endpoints: vec![],
                action: Action::Replace {
                    find: "confidential".into(),
                    replace: "[redacted]".into(),
                    case_insensitive: false,
                    whole_word: false,
                },
                source: PathBuf::from("rules/t.toml"),
                description: None,
            }
        );
    }

    #[test]
    fn every_kind_parses_with_its_defaults() {
        let text = r#"
[[rule]]
id = "r"
kind = "regex"
pattern = '(\w+)@example\.com'
replace = "$1@example.org"
mode = "shadow"
endpoints = ["chat", "openai_chat", "chat"]

[[rule]]
id = "d"
kind = "redact"
detector = "jwt"

[[rule]]
id = "rp"
kind = "redact"
pattern = 'secret-[0-9]{4}'
mask = "****"

[[rule]]
id = "b"
kind = "block"
find = "rm -rf /"
message = "blocked"
case_insensitive = true

[[rule]]
id = "bp"
kind = "block"
pattern = 'DROP TABLE \w+'
message = "no SQL"
max_len = 64

[[rule]]
id = "p"
kind = "path"
action = "flag"
min_confidence = 1

[[rule]]
id = "s"
kind = "system_prompt"
text = "Be brief."
enabled = false

[[rule]]
id = "t"
kind = "param"
name = "temperature"
value = 0.7
op = "max"
models = ["llama3*"]

[[rule]]
id = "o"
kind = "param"
name = "options"
value = { num_ctx = 8192, stop = ["a"] }
op = "default"

[[rule]]
id = "st"
kind = "stop"
sequences = ["</answer>"]
description = "stop after the answer"
"#;
        let rules = parse(text).unwrap_or_else(|e| panic!("{}", rendered(&e)));
        let actions: Vec<_> = rules.iter().map(|r| r.action.clone()).collect();
        assert_eq!(
            actions,
            [
                Action::Regex {
                    pattern: r"(\w+)@example\.com".into(),
                    replace: "$1@example.org".into(),
                    max_len: DEFAULT_MAX_LEN,
                },
                Action::Redact {
                    detector: Some(Detector::Jwt),
                    pattern: None,
                    mask: DEFAULT_MASK.into(),
                    max_len: Detector::Jwt.max_len(),
                },
                Action::Redact {
                    detector: None,
                    pattern: Some("secret-[0-9]{4}".into()),
                    mask: "****".into(),
                    max_len: DEFAULT_MAX_LEN,
                },
                Action::Block {
                    find: Some("rm -rf /".into()),
                    pattern: None,
                    case_insensitive: true,
                    message: "blocked".into(),
                    max_len: 8,
                },
                Action::Block {
                    find: None,
                    pattern: Some(r"DROP TABLE \w+".into()),
                    case_insensitive: false,
                    message: "no SQL".into(),
                    max_len: 64,
                },
                Action::Path {
                    roots: vec![".".into()],
                    min_confidence: 1.0,
                    fix: false,
                },
                Action::SystemPrompt {
                    text: "Be brief.".into(),
                    position: Position::Prepend,
                },
                Action::Param {
                    name: "temperature".into(),
                    value: serde_json::json!(0.7),
                    op: ParamOp::Max,
                },
                Action::Param {
                    name: "options".into(),
                    value: serde_json::json!({"num_ctx": 8192, "stop": ["a"]}),
                    op: ParamOp::Default,
                },
                Action::Stop {
                    sequences: vec!["</answer>".into()],
                },
            ]
        );
        let kinds: Vec<_> = rules.iter().map(Rule::kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Regex,
                Kind::Redact,
                Kind::Redact,
                Kind::Block,
                Kind::Block,
                Kind::Path,
                Kind::SystemPrompt,
                Kind::Param,
                Kind::Param,
                Kind::Stop
            ]
        );
        assert_eq!(rules[0].mode, Mode::Shadow);
        assert_eq!(rules[0].endpoints, [Endpoint::Chat, Endpoint::OpenaiChat]);
        assert!(!rules[6].enabled);
        assert_eq!(rules[7].models, ["llama3*"]);
        assert_eq!(
            rules[9].description.as_deref(),
            Some("stop after the answer")
        );
    }

    #[test]
    fn a_file_reports_every_error_with_its_line() {
        let text = r#"[[rule]]
id = "bad id!"
kind = "replace"
find = "x"
pattern = "y"

[[rule]]
id = "re"
kind = "regex"
pattern = "a("
replace = "$1"
max_len = 0

[[rule]]
kind = "redact"
detector = "ssn"
mode = "loud"
endpoints = ["chat", "grpc"]

[[rule]]
id = "empty"
kind = "block"
pattern = "a*"
case_insensitive = "yes"

[[rule]]
id = "p"
kind = "path"
min_confidence = 1.5
action = "fix-it"
patern = "x"

[[rule]]
id = "re"
kind = "teleport"
"#;
        let errors = errors(text);
        insta::assert_snapshot!(rendered(&errors), @r###"
        rules/t.toml:1: rule "bad id!": field `replace`: missing (required by kind `replace`)
        rules/t.toml:2: rule "bad id!": field `id`: "bad id!" may only contain letters, digits, `_`, `.` and `-`
        rules/t.toml:5: rule "bad id!": field `pattern`: does not apply to kind `replace` (its fields: find, replace, case_insensitive, whole_word)
        rules/t.toml:10: rule "re": field `pattern`: regex parse error:
            a(
             ^
        error: unclosed group
        rules/t.toml:12: rule "re": field `max_len`: must be between 1 and 65536, not 0
        rules/t.toml:14: field `id`: missing; every rule needs a unique id
        rules/t.toml:16: field `detector`: unknown detector "ssn"; known detectors: email, aws_access_key, github_token, openai_key, private_key, jwt
        rules/t.toml:17: field `mode`: unknown mode "loud"; expected enforce or shadow
        rules/t.toml:18: field `endpoints`: unknown endpoint "grpc"; expected one of: generate, chat, openai_chat, openai_completions, *
        rules/t.toml:20: rule "empty": field `message`: missing (required by kind `block`)
        rules/t.toml:23: rule "empty": field `pattern`: "a*" can match the empty string, so it would match everywhere; make it consume at least one character (e.g. `a+` rather than `a*`)
        rules/t.toml:24: rule "empty": field `case_insensitive`: expected true or false, found a string
        rules/t.toml:29: rule "p": field `min_confidence`: must be between 0 and 1, not 1.5
        rules/t.toml:30: rule "p": field `action`: unknown action "fix-it"; expected fix or flag
        rules/t.toml:31: rule "p": field `patern`: unknown field (did you mean `pattern`?)
        rules/t.toml:34: rule "re": field `id`: duplicate id; first defined at rules/t.toml:8
        rules/t.toml:35: rule "re": field `kind`: unknown kind "teleport"; expected one of: replace, regex, redact, block, path, system_prompt, param, stop
        "###);
    }

    #[test]
    fn toml_syntax_errors_have_a_line() {
        let errors = errors("[[rule]]\nid = \"a\"\nkind = \n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(3));
        assert!(errors[0].message.starts_with("TOML: "), "{}", errors[0]);
        assert!(errors[0].rule_id.is_none());
    }

    #[test]
    fn top_level_keys_other_than_rule_are_errors() {
        let errors = errors("version = 2\n\n[[rule]]\nid = \"a\"\nkind = \"stop\"\nsequences = [\"x\"]\n\n[meta]\nx = 1\n");
        assert_eq!(errors.len(), 2, "{}", rendered(&errors));
        assert_eq!(errors[0].line, Some(1));
        assert!(errors[0].message.contains("`version`"));
        assert_eq!(errors[1].line, Some(8));
        assert!(errors[1].message.contains("`meta`"));

        let errors = errors_of("[rule]\nid = \"a\"\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("[[rule]]"), "{}", errors[0]);
        assert_eq!(errors[0].line, Some(1));
    }

    fn errors_of(text: &str) -> Vec<RuleError> {
        errors(text)
    }

    #[test]
    fn a_file_without_rules_is_valid_and_empty() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("# only comments\n\n"), Ok(vec![]));
    }

    #[test]
    fn inline_rule_arrays_work_too() {
        let rules =
            parse("rule = [{ id = \"a\", kind = \"stop\", sequences = [\"x\"] }]\n").unwrap();
        assert_eq!(rules[0].id, "a");
    }

    #[test]
    fn fields_of_other_kinds_are_named_with_the_kind() {
        let errors = errors(
            "[[rule]]\nid = \"x\"\nkind = \"regex\"\npattern = \"a\"\nreplace = \"b\"\ncase_insensitive = true\nmask = \"m\"\n",
        );
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, [Some("case_insensitive"), Some("mask")]);
        assert_eq!(errors[0].line, Some(6));
        assert!(errors[0].message.contains("kind `regex`"), "{}", errors[0]);
    }

    #[test]
    fn patterns_are_compiled_and_bounded() {
        let rule = |pattern: &str, extra: &str| {
            format!("[[rule]]\nid = \"x\"\nkind = \"redact\"\npattern = '{pattern}'\n{extra}")
        };
        let message = |text: String| {
            let errors = errors(&text);
            assert_eq!(errors.len(), 1, "{}", rendered(&errors));
            (errors[0].field.clone().unwrap(), errors[0].message.clone())
        };
        for empty in ["a*", "", "(?:)", r"\b", "x|", "(?m)^"] {
            let (field, text) = message(rule(empty, ""));
            assert_eq!(field, "pattern");
            assert!(text.contains("empty string"), "{empty}: {text}");
        }
        let (_, text) = message(rule("[a-z", ""));
        assert!(text.starts_with("regex parse error"), "{text}");
        // Bounded longer than max_len (explicit or default): the field at fault is named.
        let (field, text) = message(rule("[A-Z]{300}", ""));
        assert_eq!(field, "pattern");
        assert!(text.contains("up to 300 characters"), "{text}");
        let (field, _) = message(rule("[A-Z]{30}", "max_len = 20\n"));
        assert_eq!(field, "max_len");
        parse(&rule("[A-Z]{30}", "max_len = 30\n")).unwrap();
        // Unbounded patterns are cut at max_len by the pipeline; that is the user's call.
        parse(&rule("token=[A-Z]+", "")).unwrap();
        let (_, text) = message(rule("x", "max_len = 70000\n"));
        assert!(text.contains("between 1 and 65536"));
        let (_, text) = message(rule("x", "max_len = -1\n"));
        assert!(text.contains("between 1 and 65536"));
        // A detector's own bound is the floor for max_len.
        let (field, _) = message(
            "[[rule]]\nid = \"x\"\nkind = \"redact\"\ndetector = \"jwt\"\nmax_len = 100\n".into(),
        );
        assert_eq!(field, "max_len");
    }

    #[test]
    fn replacement_groups_must_exist() {
        let rule = |pattern: &str, replace: &str| {
            format!("[[rule]]\nid = \"x\"\nkind = \"regex\"\npattern = '{pattern}'\nreplace = '{replace}'\n")
        };
        for ok in [
            "$1", "${1}x", "$$1", "$0", "${word}", "$word!", "cost: $", "${",
        ] {
            parse(&rule(r"(?P<word>\w+)", ok)).unwrap_or_else(|e| panic!("{ok}: {}", rendered(&e)));
        }
        let errors = errors(&rule(r"(\w+)", "$1st"));
        assert_eq!(errors[0].field.as_deref(), Some("replace"));
        assert!(errors[0].message.contains("${1}st"), "{}", errors[0]);
        let errors = errors_of(&rule(r"(\w+)", "$2"));
        assert!(errors[0].message.contains("group `2`"), "{}", errors[0]);
    }

    #[test]
    fn either_or_fields_and_required_fields() {
        let errors = errors("[[rule]]\nid = \"x\"\nkind = \"redact\"\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, None);
        assert!(errors[0].message.contains("`detector`"));
        let errors = errors_of(
            "[[rule]]\nid = \"x\"\nkind = \"block\"\nfind = \"a\"\npattern = \"b\"\nmessage = \"m\"\n",
        );
        assert_eq!(errors.len(), 1, "{}", rendered(&errors));
        assert_eq!(errors[0].field.as_deref(), Some("pattern"));
        let missing = |kind: &str| {
            errors_of(&format!("[[rule]]\nid = \"x\"\nkind = \"{kind}\"\n"))
                .into_iter()
                .map(|e| e.field.unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(missing("replace"), ["find", "replace"]);
        assert_eq!(missing("regex"), ["pattern", "replace"]);
        assert_eq!(missing("block"), ["message", ""]);
        assert_eq!(missing("system_prompt"), ["text"]);
        assert_eq!(missing("param"), ["name", "value"]);
        assert_eq!(missing("stop"), ["sequences"]);
        parse("[[rule]]\nid = \"x\"\nkind = \"path\"\n").unwrap();
        // A field of the wrong type is reported once, not also as missing.
        let errors = errors_of("[[rule]]\nid = \"x\"\nkind = \"stop\"\nsequences = \"x\"\n");
        assert_eq!(errors.len(), 1, "{}", rendered(&errors));
        assert!(errors[0].message.contains("array of strings"));
    }

    #[test]
    fn value_checks() {
        let errors = errors(
            r#"[[rule]]
id = "a"
kind = "param"
name = "num_ctx"
value = "big"
op = "max"

[[rule]]
id = "b"
kind = "param"
name = "x"
value = nan
op = "clamp"

[[rule]]
id = "c"
kind = "stop"
sequences = []

[[rule]]
id = "d"
kind = "stop"
sequences = ["", "x"]

[[rule]]
id = "e"
kind = "system_prompt"
text = ""
position = "middle"

[[rule]]
id = "f"
kind = "replace"
find = ""
replace = ""
models = []
endpoints = []
"#,
        );
        let summary: Vec<_> = errors
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.rule_id.as_deref().unwrap_or("-"),
                    e.line.unwrap_or(0),
                    e.field.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "a 5 value",
                "b 12 value",
                "b 13 op",
                "c 18 sequences",
                "d 23 sequences",
                "e 28 text",
                "e 29 position",
                "f 34 find",
                "f 36 models",
                "f 37 endpoints",
            ],
            "{}",
            rendered(&errors)
        );
        // Empty text is fine when it replaces the system prompt.
        let rule = one(
            "[[rule]]\nid = \"x\"\nkind = \"system_prompt\"\ntext = \"\"\nposition = \"replace\"\n",
        );
        assert_eq!(
            rule.action,
            Action::SystemPrompt {
                text: String::new(),
                position: Position::Replace
            }
        );
    }

    #[test]
    fn ids_are_checked() {
        for bad in ["", "has space", "ünï", "a/b", &"x".repeat(129)] {
            let text = format!("[[rule]]\nid = {bad:?}\nkind = \"stop\"\nsequences = [\"x\"]\n");
            let errors = errors(&text);
            assert_eq!(errors.len(), 1, "{bad}: {}", rendered(&errors));
            assert_eq!(errors[0].field.as_deref(), Some("id"));
            assert_eq!(errors[0].line, Some(2));
        }
        one("[[rule]]\nid = \"Ok_id-1.2\"\nkind = \"stop\"\nsequences = [\"x\"]\n");
    }

    #[test]
    fn duplicate_ids_in_one_file() {
        let rule = "[[rule]]\nid = \"same\"\nkind = \"stop\"\nsequences = [\"x\"]\n\n";
        let errors = errors(&rule.repeat(3));
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, Some(7));
        assert_eq!(errors[1].line, Some(12));
        assert!(
            errors[1].message.contains("rules/t.toml:2"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn load_dir_rejects_ids_duplicated_across_files() {
        let dir = fixture("dup");
        let errors = load_dir(&dir).unwrap_err();
        assert_eq!(errors.len(), 1, "{}", rendered(&errors));
        let error = &errors[0];
        assert_eq!(error.file, dir.join("b.toml"));
        assert_eq!(error.line, Some(9));
        assert_eq!(error.rule_id.as_deref(), Some("shared-id"));
        assert!(
            error
                .message
                .contains(&format!("{}:3", dir.join("a.toml").display())),
            "{error}"
        );
    }

    #[test]
    fn load_dir_reads_sorted_toml_files_and_tolerates_a_missing_dir() {
        assert_eq!(load_dir(&fixture("does-not-exist")), Ok(vec![]));
        let errors = load_dir(&fixture("unreadable")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].file.ends_with("latin1.toml"));
        assert!(
            errors[0].message.starts_with("cannot read"),
            "{}",
            errors[0]
        );
        let errors = load_dir(&fixture("dup/a.toml")).unwrap_err();
        assert!(
            errors[0].message.contains("rule directory"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn default_pack_loads_and_redacts_only_secrets() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let rules = load_dir(&dir).unwrap_or_else(|e| panic!("{}", rendered(&e)));
        let ids: Vec<_> = rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "redact-aws-access-key",
                "redact-github-token",
                "redact-openai-key",
                "redact-private-key",
                "redact-jwt"
            ]
        );
        let mut text = INNOCENT.concat();
        text.push_str("git config user.email dev@example.com\n");
        for rule in &rules {
            assert!(rule.applies_to("llama3.2", Some(Endpoint::Chat)));
            let Action::Redact {
                detector: Some(detector),
                mask,
                max_len,
                ..
            } = &rule.action
            else {
                panic!("{} is not a detector rule", rule.id);
            };
            assert_eq!(*mask, format!("[REDACTED:{}]", detector.name()));
            assert_eq!(*max_len, detector.max_len());
            assert_ne!(*detector, Detector::Email);
            assert!(matches(*detector, &text).is_empty(), "{}", rule.id);
        }
    }

    #[test]
    fn models_are_globs_and_latest_is_implied() {
        let rule = |models: &[&str]| Rule {
            id: "x".into(),
            enabled: true,
            mode: Mode::Enforce,
            models: models.iter().map(|m| m.to_string()).collect(),
            endpoints: vec![],
            action: Action::Stop {
                sequences: vec!["x".into()],
            },
            source: "<test>".into(),
            description: None,
        };
        let covers = |models: &[&str], model: &str| rule(models).applies_to(model, None);
        assert!(covers(&["*"], "anything:7b"));
        assert!(covers(&["*"], ""));
        assert!(covers(&["llama3"], "llama3:latest"));
        assert!(covers(&["llama3:latest"], "llama3"));
        assert!(!covers(&["llama3"], "llama3:8b"));
        assert!(covers(&["llama3:*"], "llama3:8b"));
        assert!(covers(&["llama3*"], "llama3.2:1b"));
        assert!(covers(&["Llama3"], "llama3"));
        assert!(covers(&["qwen?.5*"], "qwen2.5-coder:7b"));
        assert!(!covers(&["qwen?.5"], "qwen2.5-coder"));
        assert!(covers(&["gemma*", "phi*"], "phi4"));
        assert!(!covers(&["gemma*", "phi*"], "mistral"));
        assert!(covers(&["hf.co/*"], "hf.co/bartowski/model:Q4_K_M"));
        assert!(covers(&["registry:5000/x"], "registry:5000/x:latest"));
        assert!(covers(&["*b*c*"], "abxxc"));
        assert!(!covers(&["*b*c"], "abxxcd"));
        let mut disabled = rule(&["*"]);
        disabled.enabled = false;
        assert!(!disabled.applies_to("x", None));
    }

    #[test]
    fn endpoints_parse_and_restrict() {
        assert_eq!(Endpoint::of_path("/api/generate"), Some(Endpoint::Generate));
        assert_eq!(Endpoint::of_path("/api/chat"), Some(Endpoint::Chat));
        assert_eq!(
            Endpoint::of_path("/v1/chat/completions"),
            Some(Endpoint::OpenaiChat)
        );
        assert_eq!(
            Endpoint::of_path("/v1/completions"),
            Some(Endpoint::OpenaiCompletions)
        );
        assert_eq!(Endpoint::of_path("/api/tags"), None);
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::parse(e.name()), Some(e));
        }
        let with = |endpoints: &str| {
            one(&format!(
                "[[rule]]\nid = \"x\"\nkind = \"stop\"\nsequences = [\"x\"]\nendpoints = {endpoints}\n"
            ))
        };
        let all = with(r#"["*"]"#);
        assert!(all.endpoints.is_empty());
        assert!(all.applies_to("m", None));
        assert!(with(r#"["chat", "*"]"#).endpoints.is_empty());
        let chat = with(r#"["chat", "openai_chat"]"#);
        assert!(chat.applies_to("m", Some(Endpoint::Chat)));
        assert!(chat.applies_to("m", Some(Endpoint::OpenaiChat)));
        assert!(!chat.applies_to("m", Some(Endpoint::Generate)));
        assert!(!chat.applies_to("m", None));
    }

    #[test]
    fn specs_from_json_validate_like_files() {
        let spec: RuleSpec = serde_json::from_str(
            r#"{"id": "api-1", "kind": "param", "name": "temperature", "value": 0.2, "op": "min"}"#,
        )
        .unwrap();
        let rule = validate_spec(Path::new("<api>"), None, &spec).unwrap();
        assert_eq!(rule.source, PathBuf::from("<api>"));
        assert_eq!(
            rule.action,
            Action::Param {
                name: "temperature".into(),
                value: serde_json::json!(0.2),
                op: ParamOp::Min
            }
        );
        assert!(serde_json::from_str::<RuleSpec>(r#"{"id": "x", "nope": 1}"#).is_err());
        let spec = RuleSpec {
            kind: Some("replace".into()),
            pattern: Some("x".into()),
            ..RuleSpec::default()
        };
        let errors = validate_spec(Path::new("<api>"), Some(3), &spec).unwrap_err();
        assert_eq!(errors.len(), 4, "{}", rendered(&errors));
        assert!(errors.iter().all(|e| e.line == Some(3)));
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"kind":"replace","pattern":"x"}"#
        );
    }

    #[test]
    fn errors_render_the_known_parts() {
        let error = RuleError {
            file: "rules/a.toml".into(),
            line: Some(12),
            rule_id: Some("x".into()),
            field: Some("pattern".into()),
            message: "bad".into(),
        };
        assert_eq!(
            error.to_string(),
            "rules/a.toml:12: rule \"x\": field `pattern`: bad"
        );
        let bare = RuleError::in_file(Path::new("rules"), None, "cannot read");
        assert_eq!(bare.render(), "rules: cannot read");
    }

    proptest! {
        #[test]
        fn a_glob_without_wildcards_matches_only_itself(
            name in "[a-z0-9.:/-]{0,20}",
            other in "[a-z0-9.:/-]{0,20}",
        ) {
            let prefix_glob = format!("{name}*");
            let suffix_glob = format!("*{name}");
            let (longer, shorter) = (format!("{name}{other}"), format!("{other}{name}"));
            prop_assert!(glob_match(&name, &name));
            prop_assert!(glob_match("*", &name));
            prop_assert!(glob_match(&prefix_glob, &longer));
            prop_assert!(glob_match(&suffix_glob, &shorter));
            prop_assert_eq!(glob_match(&name, &other), name == other);
            let questions: String = name.chars().map(|_| '?').collect();
            prop_assert!(glob_match(&questions, &name));
        }

        #[test]
        fn parsing_never_panics(lines in proptest::collection::vec(prop_oneof![
            Just("[[rule]]".to_string()),
            Just("[rule]".to_string()),
            Just("id = \"a\"".to_string()),
            Just("kind = \"regex\"".to_string()),
            Just("kind = \"redact\"".to_string()),
            Just("pattern = '(a'".to_string()),
            Just("max_len = 99999999999".to_string()),
            Just("value = 1979-05-27T07:32:00Z".to_string()),
            "[a-z_]{1,10} = [0-9\"\\[\\]]{0,5}",
            ".{0,20}",
        ], 0..12)) {
            let _ = parse(&lines.join("\n"));
        }
    }
}
