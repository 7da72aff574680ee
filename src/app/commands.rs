//! The offline commands: `rawrxd rules …` (the same validation and pipeline the proxy uses,
//! on files, texts and request bodies, without a server) and `rawrxd audit …` (the audit log and table).
//! Each returns the report to print, and `main` prints it; `audit tail -f` writes as it goes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::patch::Pipeline;
use crate::request::{Outcome, RequestPatches};
use crate::rules::{self, Action, Endpoint, Mode, Rule, RuleError};

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

/// `rawrxd rules test`: `input` is a text, or the path of a file holding one. With `root`,
/// every `path` rule looks in that directory instead of its roots (one is added when there
/// is none).
pub fn test(input: &str, dir: &Path, model: &str, endpoint: &str, root: Option<&Path>) -> Report {
    let endpoint = self::endpoint(endpoint)?;
    let text = match Path::new(input).is_file() {
        true => std::fs::read_to_string(input).map_err(|e| format!("cannot read {input}: {e}"))?,
        false => input.to_string(),
    };
    let mut rules = match (load(&[], dir), root) {
        (Ok(rules), _) => rules,
        // No rule directory is fine when --root asks for a path rule alone.
        (Err(_), Some(_)) if !dir.exists() => Vec::new(),
        (Err(errors), _) => return Err(render_errors(&errors)),
    };
    if let Some(root) = root {
        let root = root.to_string_lossy().into_owned();
        let mut found = false;
        for rule in &mut rules {
            if let Action::Path { roots, .. } = &mut rule.action {
                *roots = vec![root.clone()];
                found = true;
            }
        }
        if !found {
            rules.push(Rule {
                id: "path".into(),
                enabled: true,
                mode: Mode::Enforce,
                models: vec!["*".into()],
                endpoints: Vec::new(),
                action: Action::Path {
                    roots: vec![root],
                    min_confidence: crate::rules::DEFAULT_MIN_CONFIDENCE,
                    fix: true,
                },
                source: "--root".into(),
                description: None,
            });
        }
    }
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
        let change = match &hit.path {
            Some(note) if note.flagged => format!(
                "flagged {:?}: {} (fabricated_path, confidence {:.2})",
                hit.detected, note.reasoning, note.confidence
            ),
            Some(note) => format!(
                "{:?} -> {:?} ({}, confidence {:.2})",
                hit.detected, hit.corrected, note.reasoning, note.confidence
            ),
            None => format!("{:?} -> {:?}", hit.detected, hit.corrected),
        };
        write_hit(&mut out, hit, &change);
    }
    if let Some(message) = &patched.blocked {
        let _ = write!(out, "\nblocked: the response would end with {message:?}");
    }
    Ok(out)
}

/// One line of a `rules test` report: the rule, its kind (and shadow mode), what it did.
fn write_hit(out: &mut String, hit: &crate::patch::Hit, change: &str) {
    let shadow = if hit.shadow { ", shadow" } else { "" };
    let _ = write!(
        out,
        "\n{} ({}{shadow}): {change}",
        hit.rule_id,
        hit.kind.name()
    );
}

/// An endpoint named on the command line.
fn endpoint(name: &str) -> Result<Endpoint, String> {
    Endpoint::parse(name).ok_or_else(|| {
        format!("unknown endpoint {name:?}; use generate, chat, openai_chat or openai_completions")
    })
}

/// `rawrxd rules test --request FILE`: the request-side rules on a request body, as the proxy
/// would apply them before forwarding; prints the body the upstream would get and the rules
/// that fired.
pub fn test_request(
    file: &Path,
    dir: &Path,
    model: Option<&str>,
    endpoint: Option<&str>,
) -> Report {
    let body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let endpoint = match endpoint {
        Some(name) => self::endpoint(name)?,
        None if json.as_ref().is_some_and(|j| j.get("messages").is_some()) => Endpoint::Chat,
        None => Endpoint::Generate,
    };
    let model = match model {
        Some(model) => model.to_string(),
        None => json
            .as_ref()
            .and_then(|j| j.get("model"))
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string(),
    };
    let rules = load(&[], dir).map_err(|errors| render_errors(&errors))?;
    let pipeline = Pipeline::new(rules).map_err(|errors| render_errors(&errors))?;
    let patches = RequestPatches::new(pipeline.table().clone());
    let original = String::from_utf8_lossy(&body);
    match patches.apply(endpoint, &model, &body) {
        Outcome::NotApplicable => Ok(format!(
            "{original}\n--\nno request-side rule applies to model {model:?} on {}",
            endpoint.name()
        )),
        Outcome::Skipped { reason } => Err(format!(
            "the proxy would forward this body unpatched: {reason}"
        )),
        Outcome::Patched(patched) => {
            let mut out = match &patched.body {
                Some(body) => String::from_utf8_lossy(body).into_owned(),
                None => original.into_owned(),
            };
            let _ = write!(
                out,
                "\n--\n{} patch(es); the upstream sees model {:?}",
                patched.hits.len(),
                patched.model
            );
            for hit in &patched.hits {
                write_hit(
                    &mut out,
                    hit,
                    &format!("{} -> {}", hit.detected, hit.corrected),
                );
            }
            Ok(out)
        }
    }
}

/// `rawrxd audit tail`: the last `lines` lines of `corrections.log`; with `follow`, then every
/// line appended (across rotations) until interrupted.
pub fn audit_tail(
    log_dir: &Path,
    lines: usize,
    follow: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let path = log_dir.join(crate::audit::CORRECTIONS_LOG);
    let open = || std::fs::File::open(&path);
    let mut file = match open() {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => {
            // Not written yet: wait for the proxy to create it.
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                if let Ok(file) = open() {
                    break file;
                }
            }
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let (text, mut position) =
        last_lines(&mut file, lines).map_err(|e| format!("{}: {e}", path.display()))?;
    let write_err = |e: std::io::Error| format!("cannot write: {e}");
    out.write_all(text.as_bytes()).map_err(write_err)?;
    out.flush().map_err(write_err)?;
    if !follow {
        return Ok(());
    }
    let mut partial = Vec::new();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < position {
            // Rotated (or truncated): start over on the new file.
            if let Ok(new) = open() {
                file = new;
                position = 0;
                partial.clear();
            }
        }
        let mut fresh = Vec::new();
        file.seek(SeekFrom::Start(position))
            .and_then(|_| file.read_to_end(&mut fresh))
            .map_err(|e| e.to_string())?;
        position += fresh.len() as u64;
        partial.extend_from_slice(&fresh);
        if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
            out.write_all(&partial[..=end]).map_err(write_err)?;
            out.flush().map_err(write_err)?;
            partial.drain(..=end);
        }
    }
}

/// The last `n` whole lines of `file`, read backwards in blocks, and where they end. A last
/// line without its newline (the writer is mid-write, or was killed mid-write) is not whole
/// and is left out.
fn last_lines(file: &mut std::fs::File, n: usize) -> std::io::Result<(String, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    let mut start = len;
    let mut tail = Vec::new();
    while start > 0 && tail.iter().filter(|&&b| b == b'\n').count() <= n {
        let block = start.min(64 << 10);
        start -= block;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; block as usize];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
    }
    let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let end = len - (tail.len() - whole) as u64;
    let text = String::from_utf8_lossy(&tail[..whole]);
    let all: Vec<&str> = text.lines().collect();
    let keep = &all[all.len().saturating_sub(n)..];
    Ok((keep.iter().map(|l| format!("{l}\n")).collect(), end))
}

/// `rawrxd audit search`: stored corrections matching the words of `query` (and the filters),
/// oldest first, as log lines or as JSON lines.
pub fn audit_search(
    db: &Path,
    query: &str,
    rule: Option<String>,
    since: Option<&str>,
    limit: usize,
    json: bool,
) -> Report {
    if !db.exists() {
        return Err(format!(
            "no database at {} (the proxy creates it; use --db to point elsewhere)",
            db.display()
        ));
    }
    let since_ms = match since {
        Some(text) => Some(
            crate::proxy::admin::parse_since(text, std::time::SystemTime::now())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let store = crate::store::Store::open_read_only(db).map_err(|e| e.to_string())?;
    let mut found = store
        .search_corrections(&crate::store::CorrectionQuery {
            text: Some(query.to_string()).filter(|q| !q.trim().is_empty()),
            rule,
            since_ms,
            limit,
        })
        .map_err(|e| e.to_string())?;
    found.reverse();
    let mut out = String::new();
    for correction in &found {
        if json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(correction).unwrap_or_default()
            );
        } else {
            out.push_str(&crate::audit::stored_line(correction));
        }
    }
    let _ = write!(out, "{} correction(s) found", found.len());
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
        let report = test("a confidential note", &dir, "m", "chat", None).unwrap();
        assert!(
            report.starts_with("a [x] note\n--\n1 correction(s)"),
            "{report}"
        );
        assert!(
            report.contains("conf (replace): \"confidential\" -> \"[x]\""),
            "{report}"
        );
        assert!(test("x", &dir, "m", "nope", None).is_err());
    }

    #[test]
    fn test_with_a_root_shows_what_a_path_rule_would_do() {
        let rules = dir_with("");
        let root = dir_with("");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.rs"), "").unwrap();
        let input = "see `src/mian.rs` and `src/quantum.rs`";
        let report = test(input, &rules, "m", "chat", Some(&root)).unwrap();
        assert!(
            report.starts_with("see `src/main.rs` and `src/quantum.rs`\n--\n2 correction(s)"),
            "{report}"
        );
        assert!(
            report.contains(
                "path (path): \"src/mian.rs\" -> \"src/main.rs\" (typo, confidence 0.90)"
            ),
            "{report}"
        );
        assert!(
            report.contains("flagged \"src/quantum.rs\": no file within 2 edits"),
            "{report}"
        );
        // Without --root there is no path rule: the text is left alone.
        let report = test(input, &rules, "m", "chat", None).unwrap();
        assert!(report.contains("no rule applies"), "{report}");
    }

    #[test]
    fn tail_shows_only_whole_lines() {
        let path = std::env::temp_dir().join(format!("rawrxd-tail-{}.log", std::process::id()));
        std::fs::write(&path, "one\ntwo\nthree\nhalf a li").unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let (text, end) = last_lines(&mut file, 2).unwrap();
        assert_eq!(text, "two\nthree\n");
        assert_eq!(end, "one\ntwo\nthree\n".len() as u64);
        let (text, _) = last_lines(&mut file, 10).unwrap();
        assert_eq!(text, "one\ntwo\nthree\n");
        let (text, _) = last_lines(&mut file, 0).unwrap();
        assert_eq!(text, "");
        std::fs::remove_file(&path).unwrap();
    }
}
