//! Paths in tool calls: the string values under path-like keys of a call's arguments, and the
//! path tokens of a shell `command`. Everything else (`old_str`, `new_str`, `content`,
//! `pattern`, …) is never read.
//!
//! A call that creates a file is left alone: a tool whose name says so (`write_file`,
//! `create_file`, `new_file`, …), `command: "create"` (str_replace_editor), `*** Add File:`
//! in a patch, and shell commands that write (`touch`, `mkdir`, `>`, `tee`, `cp`, `mv`).

use serde_json::{Map, Value};

use super::{text, Ref, Scope, Verdict};

/// Argument keys whose string value is a path.
pub const PATH_KEYS: &[&str] = &[
    "path",
    "file",
    "filename",
    "file_name",
    "file_path",
    "filepath",
    "target_file",
    "relative_path",
    "absolute_path",
    "notebook_path",
    "source",
    "destination",
    "src",
    "dst",
];

/// Argument keys whose value is a list of paths.
pub const PATH_LIST_KEYS: &[&str] = &["paths", "files", "file_paths", "filenames"];

/// Argument keys holding a shell command line.
pub const COMMAND_KEYS: &[&str] = &["command", "cmd"];

/// One reference in a tool call and its verdict (not [`Verdict::Keep`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolFinding {
    pub detected: String,
    pub verdict: Verdict,
}

/// Whether a tool (by name) creates files.
pub fn creates(tool: &str) -> bool {
    let lower = tool.to_ascii_lowercase();
    [
        "write", "create", "new_file", "add_file", "touch", "mkdir", "save",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Fixes the paths in one call's arguments (an object) in place; returns what it found.
/// `enforce` false reports without changing anything (shadow mode).
pub fn fix_arguments(
    scope: &Scope,
    tool: &str,
    arguments: &mut Map<String, Value>,
    enforce: bool,
) -> Vec<ToolFinding> {
    let mut findings = Vec::new();
    if creates(tool) {
        return findings;
    }
    let command = arguments.get("command").and_then(Value::as_str);
    let creating = command.is_some_and(|c| {
        let c = c.trim().to_ascii_lowercase();
        c == "create" || c == "write" || c.starts_with("add")
    });
    for (key, value) in arguments.iter_mut() {
        let key = key.to_ascii_lowercase();
        if PATH_KEYS.contains(&key.as_str()) {
            if creating {
                continue;
            }
            if let Value::String(path) = value {
                fix_value(scope, path, enforce, &mut findings);
            }
        } else if PATH_LIST_KEYS.contains(&key.as_str()) {
            if creating {
                continue;
            }
            if let Value::Array(items) = value {
                for item in items {
                    if let Value::String(path) = item {
                        fix_value(scope, path, enforce, &mut findings);
                    }
                }
            }
        } else if COMMAND_KEYS.contains(&key.as_str()) {
            if let Value::String(line) = value {
                fix_command(scope, line, enforce, &mut findings);
            }
        }
    }
    findings
}

/// Typographic quotes a model wraps a path value in.
fn strip_quotes(value: &str) -> (&str, bool) {
    let trimmed = value.trim();
    for (open, close) in [('“', '”'), ('‘', '’'), ('«', '»'), ('„', '“'), ('`', '`')]
    {
        if let Some(inner) = trimmed
            .strip_prefix(open)
            .and_then(|v| v.strip_suffix(close))
        {
            return (inner, true);
        }
    }
    (value, false)
}

/// One string value that is a path as a whole (a `:line` suffix allowed).
fn fix_value(scope: &Scope, value: &mut String, enforce: bool, findings: &mut Vec<ToolFinding>) {
    let (inner, quoted) = strip_quotes(value);
    let Some(core) = text::core(inner) else {
        return;
    };
    let raw = &inner[core.start..core.end];
    let verdict = match scope.decide(raw, false, Ref::Argument) {
        // The quotes were the only thing wrong.
        Verdict::Keep if quoted && scope.exists(raw) => Verdict::Fix {
            text: raw.to_string(),
            confidence: 1.0,
            class: "unicode",
        },
        verdict => verdict,
    };
    let fixed = match &verdict {
        Verdict::Keep => return,
        Verdict::Fix { text, .. } => Some(format!(
            "{}{text}{}",
            &inner[..core.start],
            &inner[core.end..]
        )),
        Verdict::Flag { .. } => None,
    };
    findings.push(ToolFinding {
        detected: value.clone(),
        verdict,
    });
    if let (Some(fixed), true) = (fixed, enforce) {
        *value = fixed;
    }
}

/// Path tokens in a shell command line, unless the command writes files.
fn fix_command(scope: &Scope, line: &mut String, enforce: bool, findings: &mut Vec<ToolFinding>) {
    let lower = line.to_ascii_lowercase();
    let writes = lower.contains('>')
        || lower
            .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | '`'))
            .any(|word| {
                matches!(
                    word,
                    "touch" | "mkdir" | "tee" | "cp" | "mv" | "install" | "ln"
                )
            });
    if writes {
        return;
    }
    let mut out = String::with_capacity(line.len());
    let mut copied = 0;
    let mut at = 0;
    let mut changed = false;
    while let Some((start, Some(end))) = text::next_token(line, at, true) {
        at = end.max(start + 1);
        let token = &line[start..end];
        let Some(core) = text::core(token) else {
            continue;
        };
        let raw = &token[core.start..core.end];
        let quoted = text::quoted(line, start + core.start, start + core.end);
        let verdict = scope.decide(raw, false, Ref::Prose { quoted });
        match &verdict {
            Verdict::Keep => continue,
            Verdict::Fix { text, .. } => {
                out.push_str(&line[copied..start + core.start]);
                out.push_str(text);
                copied = start + core.end;
                changed = true;
            }
            Verdict::Flag { .. } => {}
        }
        findings.push(ToolFinding {
            detected: raw.to_string(),
            verdict,
        });
    }
    if changed && enforce {
        out.push_str(&line[copied..]);
        *line = out;
    }
}
