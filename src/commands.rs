//! The offline `rawrxd rules …` commands: the same validation and pipeline the proxy uses,
//! on files and texts, without a server. Each returns the report to print; `main` prints it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::patch::Pipeline;
use crate::rules::{self, Endpoint, Rule, RuleError};

/// A command's printable outcome: `Err` means exit non-zero.
pub type Report = Result<String, String>;

fn render_errors(errors: &[RuleError]) -> String {
    let mut out = String::new();
    for error in errors {
        let _ = writeln!(out, "error: {error}");
    }
    let _ = write!(out, "{} problem(s) found", errors.len());
    out
}

/// Loads `files` (or every `*.toml` in `dir`), validated and compiled as the proxy would.
fn load(files: &[PathBuf], dir: &Path) -> Result<Vec<Rule>, Vec<RuleError>> {
    let rules = if files.is_empty() {
        rules::load_dir(dir)?
    } else {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            match std::fs::read_to_string(file) {
                Ok(text) => match rules::parse_file(file, &text) {
                    Ok(more) => rules.extend(more),
                    Err(more) => errors.extend(more),
                },
                Err(e) => errors.push(RuleError {
                    file: file.clone(),
                    line: None,
                    rule_id: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        let mut seen = std::collections::HashMap::new();
        for rule in &rules {
            if let Some(first) = seen.insert(rule.id.clone(), rule.source.clone()) {
                errors.push(RuleError {
                    file: rule.source.clone(),
                    line: None,
                    rule_id: Some(rule.id.clone()),
                    field: Some("id".into()),
                    message: format!("duplicate id (also in {})", first.display()),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        rules
    };
    // Compiling catches what only the automata builders can tell.
    Pipeline::new(rules.clone())?;
    Ok(rules)
}

/// `rawrxd rules check`.
pub fn check(files: &[PathBuf], dir: &Path) -> Report {
    let rules = load(files, dir).map_err(|errors| render_errors(&errors))?;
    let from = if files.is_empty() {
        dir.display().to_string()
    } else {
        format!("{} file(s)", files.len())
    };
    Ok(format!("ok: {} rule(s) in {from}", rules.len()))
}

/// `rawrxd rules list`.
pub fn list(dir: &Path) -> Report {
    let rules = load(&[], dir).map_err(|errors| render_errors(&errors))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<14} {:<8} {:<8} source",
        "id", "kind", "mode", "enabled"
    );
    for rule in &rules {
        let _ = writeln!(
            out,
            "{:<32} {:<14} {:<8} {:<8} {}",
            rule.id,
            rule.kind().name(),
            rule.mode.name(),
            rule.enabled,
            rule.source.display()
        );
    }
    let _ = write!(out, "{} rule(s)", rules.len());
    Ok(out)
}

/// `rawrxd rules test`: `input` is a text, or the path of a file holding one.
pub fn test(input: &str, dir: &Path, model: &str, endpoint: &str) -> Report {
    let endpoint = Endpoint::parse(endpoint).ok_or_else(|| {
        format!(
            "unknown endpoint {endpoint:?}; use generate, chat, openai_chat or openai_completions"
        )
    })?;
    let text = match Path::new(input).is_file() {
        true => std::fs::read_to_string(input).map_err(|e| format!("cannot read {input}: {e}"))?,
        false => input.to_string(),
    };
    let rules = load(&[], dir).map_err(|errors| render_errors(&errors))?;
    let pipeline = Pipeline::new(rules).map_err(|errors| render_errors(&errors))?;
    let Some(compiled) = pipeline.select(model, Some(endpoint)) else {
        return Ok(format!(
            "{text}\n--\nno rule applies to model {model:?} on {}",
            endpoint.name()
        ));
    };
    let patched = compiled.apply(&text);
    let mut out = patched.text.clone();
    let _ = write!(out, "\n--\n{} correction(s)", patched.hits.len());
    for hit in &patched.hits {
        let _ = write!(
            out,
            "\n{} ({}{}): {:?} -> {:?}",
            hit.rule_id,
            hit.kind.name(),
            if hit.shadow { ", shadow" } else { "" },
            hit.detected,
            hit.corrected
        );
    }
    if let Some(message) = &patched.blocked {
        let _ = write!(out, "\nblocked: the response would end with {message:?}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(rules: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rawrxd-commands-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.toml"), rules).unwrap();
        dir
    }

    #[test]
    fn check_lists_every_problem_or_counts_rules() {
        let good =
            dir_with("[[rule]]\nid = \"x\"\nkind = \"replace\"\nfind = \"a\"\nreplace = \"b\"\n");
        assert_eq!(
            check(&[], &good).unwrap(),
            format!("ok: 1 rule(s) in {}", good.display())
        );
        let bad = dir_with("[[rule]]\nid = \"x\"\nkind = \"regex\"\npattern = \"(\"\nreplace = \"b\"\n[[rule]]\nkind = \"replace\"\n");
        let report = check(&[], &bad).unwrap_err();
        assert!(report.contains("a.toml:4"), "{report}");
        assert!(report.ends_with("problem(s) found"), "{report}");
    }

    #[test]
    fn test_shows_the_patched_text_and_the_rules_that_fired() {
        let dir = dir_with(
            "[[rule]]\nid = \"conf\"\nkind = \"replace\"\nfind = \"confidential\"\nreplace = \"[x]\"\n",
        );
        let report = test("a confidential note", &dir, "m", "chat").unwrap();
        assert!(
            report.starts_with("a [x] note\n--\n1 correction(s)"),
            "{report}"
        );
        assert!(
            report.contains("conf (replace): \"confidential\" -> \"[x]\""),
            "{report}"
        );
        assert!(test("x", &dir, "m", "nope").is_err());
    }
}
