//! Validation of one rule as written: every problem placed at its field's line, regexes and
//! replacements checked, longest matches bounded, the rule's [`Action`] built.

use super::*;

/// Collects the errors of one rule, each placed at its field's line when known.
pub(super) struct Report<'a> {
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

pub(super) fn can_match_empty(pattern: &str, regex: &Regex) -> bool {
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
pub(super) fn longest_match_chars(pattern: &str, case_insensitive: bool) -> Option<usize> {
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
pub(super) fn check_replacement(regex: &Regex, replacement: &str) -> Result<(), String> {
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
pub(super) fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
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

pub(super) fn validate_located(
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
pub(super) fn build_action(r: &mut Report<'_>, kind: Kind, spec: &RuleSpec) -> Option<Action> {
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
                None => {
                    r.missing("roots", Kind::Path);
                    None
                }
                Some(roots) if roots.is_empty() => {
                    r.field(
                        "roots",
                        "must name at least one workspace directory the fixer may look in",
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
            let ty = match name.as_deref() {
                Some(name) => {
                    let ty = param_type(name);
                    if ty.is_none() {
                        r.field(
                            "name",
                            format!(
                                "unknown parameter {name:?}; expected one of {}",
                                one_of(PARAMS.iter().map(|(n, _)| *n))
                            ),
                        );
                    }
                    ty
                }
                None => None,
            };
            let op = match spec.op.as_deref() {
                None => Some(ParamOp::Set),
                Some(name) => {
                    let op = ParamOp::parse(name);
                    if op.is_none() {
                        r.field(
                            "op",
                            format!(
                                "unknown op {name:?}; expected set, default, max, min or remove"
                            ),
                        );
                    }
                    op
                }
            };
            let value = match (&spec.value, op) {
                (None, Some(ParamOp::Remove)) => Some(serde_json::Value::Null),
                (Some(_), Some(ParamOp::Remove)) => {
                    r.field("value", "op `remove` takes no value");
                    None
                }
                (None, _) => {
                    r.missing("value", kind);
                    None
                }
                (Some(value), _) => match toml_to_json(value) {
                    Ok(json) => Some(json),
                    Err(message) => {
                        r.field("value", message);
                        None
                    }
                },
            };
            if let (Some(op), Some(value), Some(ty)) = (op, &value, ty) {
                let name = name.as_deref().unwrap_or_default();
                if matches!(op, ParamOp::Max | ParamOp::Min) && !ty.is_numeric() {
                    r.field(
                        "op",
                        format!(
                            "op `{}` needs a numeric parameter; {name} is not",
                            op.name()
                        ),
                    );
                    return None;
                }
                if op != ParamOp::Remove && !ty.admits(value) {
                    r.field(
                        "value",
                        format!("{name} must be {}, not {value}", ty.describe()),
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
        Kind::Alias => {
            let from = r.required("from", &spec.from, kind, false);
            let to = r.required("to", &spec.to, kind, false);
            if let Some(to) = &to {
                if to.contains('*') || to.contains('?') {
                    r.field("to", format!("{to:?} is a glob; `to` names one model"));
                    return None;
                }
            }
            Some(Action::Alias {
                from: from?,
                to: to?,
            })
        }
        Kind::Detect => detect(r, spec, case_insensitive),
    }
}

/// A `detect` rule: one check (`detector` or `pattern`) and what to do when it fires.
fn detect(r: &mut Report<'_>, spec: &RuleSpec, case_insensitive: bool) -> Option<Action> {
    let present = spec.present_fields();
    let on_failure = match spec.action.as_deref() {
        None => Some(OnFailure::Audit),
        Some(name) => {
            let action = OnFailure::parse(name);
            if action.is_none() {
                r.field(
                    "action",
                    format!("unknown action {name:?}; expected audit, retry or stop"),
                );
            }
            action
        }
    };
    let max_len = r.max_len(spec.max_len);
    let check = match (&spec.detector, &spec.pattern) {
        (Some(_), Some(_)) => {
            r.field("pattern", "give either `detector` or `pattern`, not both");
            None
        }
        (None, None) => {
            if !r.invalid.contains("detector") && !r.invalid.contains("pattern") {
                r.at(
                    None,
                    "kind `detect` needs `detector` (a built-in) or `pattern` (a regex)",
                );
            }
            None
        }
        (Some(name), None) => match Failure::parse(name) {
            Some(failure) => {
                for field in ["position", "max_len", "case_insensitive"] {
                    if present.contains(&field) {
                        r.field(field, "applies to a custom `pattern` only");
                    }
                }
                Some(Check::Builtin(failure))
            }
            None => {
                r.field(
                    "detector",
                    format!(
                        "unknown detector {name:?}; known detectors: {}",
                        one_of(Failure::ALL.map(Failure::name))
                    ),
                );
                None
            }
        },
        (None, Some(pattern)) => {
            let position = match spec.position.as_deref() {
                None | Some("anywhere") => Some(Anchor::Anywhere),
                Some("start") => Some(Anchor::Start),
                Some(other) => {
                    r.field(
                        "position",
                        format!("unknown position {other:?}; expected start or anywhere"),
                    );
                    None
                }
            };
            let max_len = max_len.map(|m| m.unwrap_or(DEFAULT_MAX_LEN));
            r.pattern(pattern, case_insensitive, max_len, spec.max_len.is_some());
            Some(Check::Pattern {
                pattern: pattern.clone(),
                position: position?,
                case_insensitive,
                max_len: max_len?,
            })
        }
    };
    if spec.repeats.is_some() && check != Some(Check::Builtin(Failure::Repetition)) {
        r.field("repeats", "applies to `detector = \"repetition\"` only");
    }
    let repeats = match spec.repeats {
        Some(n) if !(2..=1000).contains(&n) => {
            r.field("repeats", format!("must be between 2 and 1000, not {n}"));
            None
        }
        other => Some(other),
    };
    if on_failure != Some(OnFailure::Retry) {
        for field in ["max_retries", "correction", "retry_options"] {
            if present.contains(&field) {
                r.field(field, "applies to `action = \"retry\"` only");
            }
        }
    }
    // A stop ends the answer where the failure shows; a failure that shows only when the
    // answer has ended (or a start-of-answer phrase) has nothing left to stop.
    if on_failure == Some(OnFailure::Stop) {
        let stoppable = match &check {
            Some(Check::Builtin(failure)) => {
                matches!(failure, Failure::Repetition | Failure::Abandonment)
            }
            Some(Check::Pattern { .. }) => true,
            None => true,
        };
        if !stoppable {
            r.field(
                "action",
                "`stop` applies to `repetition`, `abandonment` and custom patterns; this \
                 detector fires when there is nothing left to stop (use audit or retry)",
            );
        }
    }
    let max_retries = match spec.max_retries {
        None => Some(1),
        Some(n) if (1..=MAX_RETRIES).contains(&n) => Some(n),
        Some(n) => {
            r.field(
                "max_retries",
                format!("must be between 1 and {MAX_RETRIES}, not {n}"),
            );
            None
        }
    };
    let retry_options = match &spec.retry_options {
        None => Some(serde_json::Map::new()),
        Some(value) => match toml_to_json(value) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            Ok(_) => {
                r.field("retry_options", "must be a table");
                None
            }
            Err(message) => {
                r.field("retry_options", message);
                None
            }
        },
    };
    if spec.correction.as_deref() == Some("") {
        r.field(
            "correction",
            "must not be empty (leave it out to retry as sent)",
        );
        return None;
    }
    Some(Action::Detect(Detect {
        check: check?,
        on_failure: on_failure?,
        max_retries: max_retries?,
        correction: spec.correction.clone(),
        retry_options: retry_options?,
        repeats: repeats?,
    }))
}
