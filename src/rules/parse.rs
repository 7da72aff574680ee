//! Rule files → rules: TOML parsed with the line of every table and field, `load_dir` over a
//! directory, duplicate ids across files, and field-type checks with did-you-mean messages.

use super::*;

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

pub(super) fn finish(
    rules: Vec<Rule>,
    mut errors: Vec<RuleError>,
) -> Result<Vec<Rule>, Vec<RuleError>> {
    if errors.is_empty() {
        Ok(rules)
    } else {
        // Stable: file order first (files are read in order), then by line.
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(errors)
    }
}

/// An error for every id that was already used, naming where it was first defined.
pub(super) fn duplicate_ids(ids: &[(&Path, &str, Option<usize>)]) -> Vec<RuleError> {
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
pub(super) struct ParsedFile {
    rules: Vec<Rule>,
    ids: Vec<(String, Option<usize>)>,
    errors: Vec<RuleError>,
}

pub(super) type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The second pass over a file whose top level is known to be fine: keeps the position of
/// every rule table and of every key in it.
#[derive(Deserialize)]
pub(super) struct RuleTables {
    #[serde(default)]
    rule: Vec<Spanned<SpannedTable>>,
}

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    LineIndex::new(text).line(offset)
}

/// Byte offset → 1-based line number, in O(log lines) after one pass over the text (a file
/// of thousands of rules asks for thousands of line numbers).
pub(super) struct LineIndex {
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

pub(super) fn parse_text(file: &Path, text: &str) -> ParsedFile {
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
pub(super) fn spec_from_table(
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
            "from" => string(v).map(|s| spec.from = Some(s)),
            "to" => string(v).map(|s| spec.to = Some(s)),
            "max_retries" => count(v).map(|n| spec.max_retries = Some(n)),
            "correction" => string(v).map(|s| spec.correction = Some(s)),
            "retry_options" => match v {
                toml::Value::Table(_) => {
                    spec.retry_options = Some(v.clone());
                    Ok(())
                }
                other => Err(format!("expected a table, found {}", type_name(other))),
            },
            "repeats" => count(v).map(|n| spec.repeats = Some(n)),
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

pub(super) fn type_name(v: &toml::Value) -> &'static str {
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

pub(super) fn string(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, found {}", type_name(other))),
    }
}

pub(super) fn boolean(v: &toml::Value) -> Result<bool, String> {
    match v {
        toml::Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "expected true or false, found {}",
            type_name(other)
        )),
    }
}

pub(super) fn count(v: &toml::Value) -> Result<usize, String> {
    match v {
        toml::Value::Integer(n) => {
            usize::try_from(*n).map_err(|_| format!("must be between 1 and {MAX_MAX_LEN}, not {n}"))
        }
        other => Err(format!("expected an integer, found {}", type_name(other))),
    }
}

pub(super) fn number(v: &toml::Value) -> Result<f64, String> {
    match v {
        toml::Value::Float(f) => Ok(*f),
        // Exact for every integer a confidence could sensibly be written as.
        toml::Value::Integer(n) => Ok(*n as f64),
        other => Err(format!("expected a number, found {}", type_name(other))),
    }
}

pub(super) fn strings(v: &toml::Value) -> Result<Vec<String>, String> {
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

pub(super) fn unknown_field_message(field: &str) -> String {
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
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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

pub(super) fn id_problem(id: &str) -> Option<String> {
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

pub(super) fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}
