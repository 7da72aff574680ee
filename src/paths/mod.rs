//! The path fixer behind `kind = "path"` rules: decides, for one file reference the model
//! wrote, whether to leave it, fix it or flag it.
//!
//! **Rewrite only on unique evidence.** A reference is left alone when it exists on disk
//! (checked at decision time, not only in the index), when it lies outside every root
//! (`/etc/passwd`, `../x`, `~/.ssh/…`, `C:\…`), and when the model means to create it. A
//! missing one is looked up in steps, and the first step that finds anything decides:
//!
//! | step | finds | confidence |
//! |---|---|---|
//! | cleaned | the path with separators and look-alike characters fixed | 1.00 |
//! | case | the one file equal ignoring case | 0.95 |
//! | extension | `.yml` ↔ `.yaml` | 0.95 |
//! | suffix | the one file ending with the path (a missing leading directory), else with the path minus its first directories (an extra or wrong one), down to one directory and the name | 0.90 |
//! | typo | the one file one or two edits away (by path component, none in a name of under 4 characters, one under 6), strictly closer than any other | 0.90 (1 edit), 0.85 (2) |
//! | name | the one file with that name | 0.85 |
//!
//! More than one file at the deciding step — in one root or across roots — is ambiguous and
//! only flagged, as is anything found nowhere, below the rule's `min_confidence`, or under a
//! `flag` rule. The fix keeps the author's form: relative stays relative, absolute stays
//! absolute, `./` and `:line` suffixes stay.
//!
//! Pieces: [`index`] (the file index of one root, watched), [`text`] (tokens in model text,
//! cleaning), [`tools`] (tool-call arguments).
//!
//! May use: `rules`. Used by `patch` and above.

pub mod index;
#[cfg(test)]
mod tests;
pub mod text;
pub mod tools;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use index::{extension, split_last, IndexData, RootIndex, DEFAULT_FILE_LIMIT};

/// The most edits a typo fix may undo.
pub const MAX_EDITS: usize = 2;
/// Candidates named in a flag's reasoning.
const NAMED_CANDIDATES: usize = 3;

/// What to do with one reference.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not a path to fix: exists, outside every root, meant to be created, or not a file
    /// reference at all.
    Keep,
    /// Replace the reference with `text`.
    Fix {
        text: String,
        confidence: f64,
        class: &'static str,
    },
    /// Leave the text, report it (`fabricated_path`).
    Flag { confidence: f64, reason: String },
}

/// Where a reference was found, which says how sure it is to be a path at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    /// In model text; `quoted` when wrapped in backticks or quotes.
    Prose { quoted: bool },
    /// The value of a path argument of a tool call: a path by its key.
    Argument,
}

/// One `path` rule's roots and settings.
#[derive(Debug)]
pub struct PathFixer {
    roots: Vec<Arc<RootIndex>>,
    /// Each root as written (expanded), for absolute paths written that way.
    written_roots: Vec<PathBuf>,
    pub min_confidence: f64,
    pub fix: bool,
    home: Option<PathBuf>,
}

/// Where a reference is looked up: one root, below `prefix` (a workspace inside it).
#[derive(Debug, Clone)]
struct Target {
    root: usize,
    /// `""` or a relative directory ending without `/`.
    prefix: String,
}

/// A [`PathFixer`] for one request: the workspace it was given, if any.
#[derive(Debug, Clone)]
pub struct Scope {
    fixer: Arc<PathFixer>,
    workspace: Option<Target>,
}

/// The outcome of one lookup step in one target.
struct Found {
    target: usize,
    /// The first few candidates (at most [`KEPT_CANDIDATES`]) …
    candidates: Vec<String>,
    /// … of this many.
    total: usize,
    class: &'static str,
    confidence: f64,
}

/// Candidates a lookup step keeps (it counts the rest): one decides, more only get named.
const KEPT_CANDIDATES: usize = NAMED_CANDIDATES + 1;

/// What one lookup step found in one target.
struct StepFound {
    candidates: Vec<String>,
    total: usize,
    class: &'static str,
    confidence: f64,
}

impl StepFound {
    fn new<'a>(
        found: impl Iterator<Item = &'a str>,
        class: &'static str,
        confidence: f64,
    ) -> Option<StepFound> {
        let mut candidates = Vec::new();
        let mut total = 0;
        for file in found {
            if candidates.len() < KEPT_CANDIDATES {
                candidates.push(file.to_string());
            }
            total += 1;
        }
        (total > 0).then_some(StepFound {
            candidates,
            total,
            class,
            confidence,
        })
    }
}

impl PathFixer {
    /// Indexes every root now; a missing or unreadable root is an error.
    pub fn open(roots: &[String], min_confidence: f64, fix: bool) -> Result<PathFixer, String> {
        Self::open_with_limit(roots, min_confidence, fix, DEFAULT_FILE_LIMIT)
    }

    pub fn open_with_limit(
        roots: &[String],
        min_confidence: f64,
        fix: bool,
        limit: usize,
    ) -> Result<PathFixer, String> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut indexes = Vec::new();
        let mut written_roots = Vec::new();
        for written in roots {
            let expanded = expand_home(written, home.as_deref());
            let absolute = if expanded.is_absolute() {
                expanded
            } else {
                std::env::current_dir()
                    .map_err(|e| format!("root {written:?}: {e}"))?
                    .join(expanded)
            };
            indexes.push(RootIndex::shared(written, &absolute, limit)?);
            written_roots.push(absolute);
        }
        Ok(PathFixer {
            roots: indexes,
            written_roots,
            min_confidence,
            fix,
            home,
        })
    }

    /// Warnings for health (roots over the file limit, unwatched roots).
    pub fn warnings(&self) -> Vec<String> {
        self.roots
            .iter()
            .flat_map(|r| r.warnings.iter().cloned())
            .collect()
    }

    /// The canonical roots.
    pub fn roots(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|r| r.root.display().to_string())
            .collect()
    }

    /// Files indexed, over all roots.
    pub fn indexed_files(&self) -> usize {
        self.roots.iter().map(|r| r.load().len()).sum()
    }

    /// A scope for one request. `workspace` (from `x-rawrxd-workspace`, canonical) is honoured
    /// only when it is one of the roots or inside one; otherwise it is ignored (and `false` returned
    /// with the scope, for the caller to log).
    pub fn scope(self: &Arc<Self>, workspace: Option<&str>) -> (Scope, bool) {
        let Some(workspace) = workspace else {
            return (
                Scope {
                    fixer: self.clone(),
                    workspace: None,
                },
                true,
            );
        };
        // The caller canonicalized it once per request (`patch::Context::for_workspace`); a
        // path that is not absolute and plain (`..`, `.`) is refused, never resolved here.
        let dir = Path::new(workspace);
        let plain = dir.is_absolute()
            && dir
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let target = plain.then_some(dir).and_then(|dir| {
            self.roots.iter().enumerate().find_map(|(i, r)| {
                let rel = dir.strip_prefix(&r.root).ok()?;
                let prefix = rel.to_str()?.replace('\\', "/");
                Some(Target { root: i, prefix })
            })
        });
        let honoured = target.is_some();
        (
            Scope {
                fixer: self.clone(),
                workspace: target,
            },
            honoured,
        )
    }
}

fn expand_home(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if path == "~" => home.map_or_else(|| PathBuf::from(path), Path::to_path_buf),
        _ => PathBuf::from(path),
    }
}

/// How the author wrote a path.
enum Form {
    /// `src/x.rs` (and `./src/x.rs`: `dot` is the `./` kept).
    Relative { dot: String },
    /// Under a root: `prefix` is what the author wrote up to and including the root.
    Absolute { prefix: String },
}

impl Scope {
    pub fn fixer(&self) -> &PathFixer {
        &self.fixer
    }

    /// The verdict on one reference as the model wrote it (`raw`: no `:line` suffix, no
    /// surrounding punctuation). `create` is true when the context says the model means to
    /// create the file.
    pub fn decide(&self, raw: &str, create: bool, found_in: Ref) -> Verdict {
        let fixer = &*self.fixer;
        if raw.starts_with("\\\\") || raw.starts_with("//") {
            return Verdict::Keep; // UNC or network path
        }
        let (clean, cleaned) = text::clean(raw);
        if has_drive(&clean) {
            return Verdict::Keep;
        }
        // Where the author's path starts, and which targets it may be looked up in.
        let (form, rel, targets) = if let Some(rest) = clean.strip_prefix("~/") {
            let Some(home) = &fixer.home else {
                return Verdict::Keep;
            };
            let absolute = home.join(rest);
            let Some(absolute) = absolute.to_str() else {
                return Verdict::Keep;
            };
            match self.under_root(absolute) {
                Some((root, rel, _)) => (
                    Form::Absolute {
                        prefix: format!("~/{}", strip_suffix_rel(rest, &rel)),
                    },
                    rel,
                    vec![Target {
                        root,
                        prefix: String::new(),
                    }],
                ),
                None => return Verdict::Keep,
            }
        } else if clean.starts_with('/') {
            match self.under_root(&clean) {
                Some((root, rel, prefix)) => (
                    Form::Absolute { prefix },
                    rel,
                    vec![Target {
                        root,
                        prefix: String::new(),
                    }],
                ),
                None => return Verdict::Keep,
            }
        } else {
            let mut rest = clean.as_str();
            let mut dot = String::new();
            while let Some(r) = rest.strip_prefix("./") {
                dot.push_str("./");
                rest = r;
            }
            let targets = match &self.workspace {
                Some(ws) => vec![ws.clone()],
                None => (0..fixer.roots.len())
                    .map(|root| Target {
                        root,
                        prefix: String::new(),
                    })
                    .collect(),
            };
            (Form::Relative { dot }, rest.to_string(), targets)
        };
        if rel.is_empty()
            || looks_like_domain(&rel)
            || rel.ends_with('/')
            || rel
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Verdict::Keep;
        }
        let snapshots: Vec<Arc<IndexData>> =
            targets.iter().map(|t| fixer.roots[t.root].load()).collect();
        if found_in != Ref::Argument && !file_like(&rel, &snapshots, found_in) {
            return Verdict::Keep;
        }
        // Exists as written (or as cleaned, when nothing but cleaning differs) → leave it.
        let raw_rel = match &form {
            Form::Relative { .. } => raw_relative(raw),
            Form::Absolute { .. } => None,
        };
        for target in &targets {
            let base = fixer.roots[target.root].root.join(&target.prefix);
            if let Some(raw_rel) = &raw_rel {
                if exists(&base.join(raw_rel)) {
                    return Verdict::Keep;
                }
            }
            if !(cleaned.separators || cleaned.unicode) && exists(&base.join(&rel)) {
                return Verdict::Keep;
            }
        }
        if let Form::Absolute { .. } = form {
            if Path::new(raw).exists() {
                return Verdict::Keep;
            }
        }
        if create {
            return Verdict::Keep;
        }
        // The file name alone is evidence enough only for a name that looks like a file's.
        let by_name = found_in == Ref::Argument || extension(split_last(&rel).1).is_some();
        // A bare word in prose with no directory ("Node.js", "setup.py") is a path only when
        // some file has exactly that name: no case or typo guesses, no flags.
        let bare_word = found_in == (Ref::Prose { quoted: false })
            && !clean.contains('/')
            && !clean.starts_with('.');
        let found = lookup(&rel, cleaned, &targets, &snapshots, by_name);
        let found = match found {
            Some(found) if bare_word => {
                let exact = found.iter().all(|f| {
                    f.candidates
                        .iter()
                        .all(|c| split_last(c).1 == rel && !matches!(f.class, "case" | "typo"))
                });
                if !exact {
                    return Verdict::Keep;
                }
                found
            }
            Some(found) => found,
            None if bare_word => return Verdict::Keep,
            None => {
                return Verdict::Flag {
                    confidence: 0.0,
                    reason: format!("no file within {MAX_EDITS} edits"),
                }
            }
        };
        let several_targets = found.len() > 1;
        let first = &found[0];
        if several_targets || first.total > 1 {
            let mut names: Vec<String> = found
                .iter()
                .flat_map(|f| {
                    let root = &fixer.roots[targets[f.target].root].written;
                    f.candidates.iter().map(move |c| {
                        if several_targets {
                            format!("{root}:{c}")
                        } else {
                            c.clone()
                        }
                    })
                })
                .collect();
            let total: usize = found.iter().map(|f| f.total).sum();
            names.truncate(NAMED_CANDIDATES);
            let more = if total > names.len() {
                format!(" and {} more", total - names.len())
            } else {
                String::new()
            };
            return Verdict::Flag {
                confidence: first.confidence / total as f64,
                reason: format!("ambiguous ({}): {}{more}", first.class, names.join(", ")),
            };
        }
        let target = &targets[first.target];
        let candidate = &first.candidates[0];
        let full = fixer.roots[target.root].root.join(candidate);
        if !exists(&full) {
            return Verdict::Flag {
                confidence: first.confidence,
                reason: format!("{candidate} is in the index but no longer on disk"),
            };
        }
        let shown = match target.prefix.as_str() {
            "" => candidate.as_str(),
            prefix => candidate
                .strip_prefix(prefix)
                .and_then(|c| c.strip_prefix('/'))
                .unwrap_or(candidate),
        };
        let text = match &form {
            Form::Relative { dot } => format!("{dot}{shown}"),
            Form::Absolute { prefix, .. } => format!("{prefix}/{candidate}"),
        };
        if text == raw {
            return Verdict::Keep;
        }
        if !fixer.fix || first.confidence < fixer.min_confidence {
            let why = if fixer.fix {
                "below min_confidence"
            } else {
                "flag-only rule"
            };
            return Verdict::Flag {
                confidence: first.confidence,
                reason: format!("{why}: would be {text} ({})", first.class),
            };
        }
        Verdict::Fix {
            text,
            confidence: first.confidence,
            class: first.class,
        }
    }

    /// Whether `raw` names a file or directory on disk under the scope's roots.
    pub fn exists(&self, raw: &str) -> bool {
        if raw.starts_with('/') {
            return self.under_root(raw).is_some() && exists(Path::new(raw));
        }
        let Some(rel) = raw_relative(raw) else {
            return false;
        };
        match &self.workspace {
            Some(ws) => exists(&self.fixer.roots[ws.root].root.join(&ws.prefix).join(rel)),
            None => self.fixer.roots.iter().any(|r| exists(&r.root.join(&rel))),
        }
    }

    /// The root an absolute path lies under: (root, the path relative to it, the author's
    /// text up to the root).
    fn under_root(&self, absolute: &str) -> Option<(usize, String, String)> {
        let fixer = &*self.fixer;
        let path = Path::new(absolute);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return None;
        }
        for (i, root) in fixer.roots.iter().enumerate() {
            for base in [&root.root, &fixer.written_roots[i]] {
                if let Ok(rel) = path.strip_prefix(base) {
                    let rel = rel.to_str()?.to_string();
                    let prefix = strip_suffix_rel(absolute, &rel).to_string();
                    return Some((i, rel, prefix));
                }
            }
        }
        None
    }
}

/// `whole` without `/rel` at its end.
fn strip_suffix_rel<'a>(whole: &'a str, rel: &str) -> &'a str {
    whole
        .strip_suffix(rel)
        .map(|w| w.strip_suffix('/').unwrap_or(w))
        .unwrap_or(whole)
}

/// The raw reference as a relative path to test on disk (`None` if it is not one).
fn raw_relative(raw: &str) -> Option<PathBuf> {
    let path = Path::new(raw);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(path.to_path_buf())
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// `github.com/x/y.py`: a URL without its scheme, not a path.
fn looks_like_domain(rel: &str) -> bool {
    const TLDS: &[&str] = &[
        "com", "org", "net", "io", "dev", "rs", "ai", "co", "uk", "de", "edu", "gov", "app", "me",
        "info", "sh", "gg", "xyz", "us", "eu", "fr", "jp", "cn", "ru", "in", "so", "to", "ly",
    ];
    let Some((first, rest)) = rel.split_once('/') else {
        return false;
    };
    if rest.is_empty() {
        return false;
    }
    match first.rsplit_once('.') {
        Some((host, tld)) => !host.is_empty() && TLDS.contains(&tld.to_ascii_lowercase().as_str()),
        None => false,
    }
}

/// `C:/…` (after cleaning).
fn has_drive(clean: &str) -> bool {
    let b = clean.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Whether the last component of a path in prose names a file the workspace could have: an
/// extension some indexed file has (`.yml`/`.yaml` alike), a dotfile name some indexed file
/// has, an upper-case name like `LICENSE-MIT` or `COPYING` in backticks, quotes or after a
/// directory, or any name after a directory in backticks or quotes (`ci/test-complete`).
fn file_like(rel: &str, snapshots: &[Arc<IndexData>], found_in: Ref) -> bool {
    let (_, name) = split_last(rel);
    let lower = name.to_lowercase();
    match extension(&lower) {
        Some(ext) => {
            let stem = &lower[..lower.len() - ext.len() - 1];
            let ext_ok = ext.chars().any(|c| c.is_alphabetic())
                && ext.chars().all(char::is_alphanumeric)
                && ext.len() <= 12;
            let stem_ok = stem.chars().any(|c| c.is_alphabetic() || c == '_');
            ext_ok
                && stem_ok
                && snapshots
                    .iter()
                    .any(|s| s.has_ext(ext) || swap_yaml(ext).is_some_and(|other| s.has_ext(other)))
        }
        None if lower.starts_with('.') => snapshots.iter().any(|s| !s.by_name(&lower).is_empty()),
        None => {
            let quoted = found_in == (Ref::Prose { quoted: true });
            let in_dir = rel.contains('/');
            let upper = name.chars().filter(|c| c.is_alphabetic()).count() >= 3
                && name
                    .chars()
                    .all(|c| c.is_uppercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
            (upper && (quoted || in_dir)) || (quoted && in_dir)
        }
    }
}

fn swap_yaml(ext: &str) -> Option<&'static str> {
    match ext {
        "yml" => Some("yaml"),
        "yaml" => Some("yml"),
        _ => None,
    }
}

/// Runs the lookup steps over every target; returns the targets that found something at the
/// first step where any did (empty → none found).
fn lookup(
    rel: &str,
    cleaned: text::Cleaned,
    targets: &[Target],
    snapshots: &[Arc<IndexData>],
    by_name: bool,
) -> Option<Vec<Found>> {
    type Step = fn(&str, &IndexData, &str) -> Option<StepFound>;
    let exact: Step = |rel, data, prefix| {
        let full = join(prefix, rel);
        let ids = data.by_lower(&full.to_lowercase());
        ids.iter()
            .any(|&id| data.file(id) == full)
            .then(|| StepFound::new([full.as_str()].into_iter(), "cleaned", 1.0))
            .flatten()
    };
    let case: Step = |rel, data, prefix| {
        let full = join(prefix, rel);
        let ids = data.by_lower(&full.to_lowercase());
        StepFound::new(ids.iter().map(|&id| data.file(id)), "case", 0.95)
    };
    let yaml: Step = |rel, data, prefix| {
        let lower = join(prefix, rel).to_lowercase();
        let (_, name) = split_last(&lower);
        let ext = extension(name)?;
        let other = swap_yaml(ext)?;
        let swapped = format!("{}{other}", &lower[..lower.len() - ext.len()]);
        let ids = data.by_lower(&swapped);
        StepFound::new(ids.iter().map(|&id| data.file(id)), "extension", 0.95)
    };
    let suffix: Step = |rel, data, prefix| suffix_step(rel, data, prefix, false);
    let typo: Step = |rel, data, prefix| typo_step(rel, data, prefix);
    let name: Step = |rel, data, prefix| suffix_step(rel, data, prefix, true);
    // A typo that keeps the directories is stronger evidence than the file name alone.
    let steps: [Step; 6] = [exact, case, yaml, suffix, typo, name];
    for (n, step) in steps.iter().enumerate() {
        if n == 0 && !(cleaned.separators || cleaned.unicode) {
            continue;
        }
        if n == steps.len() - 1 && !by_name {
            continue;
        }
        let found: Vec<Found> = targets
            .iter()
            .zip(snapshots)
            .enumerate()
            .filter_map(|(i, (target, data))| {
                let step = step(rel, data, &target.prefix)?;
                let class = if n == 0 {
                    if cleaned.unicode {
                        "unicode"
                    } else {
                        "separator"
                    }
                } else {
                    step.class
                };
                Some(Found {
                    target: i,
                    candidates: step.candidates,
                    total: step.total,
                    class,
                    confidence: step.confidence,
                })
            })
            .collect();
        if !found.is_empty() {
            return Some(found);
        }
    }
    None
}

fn join(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

/// A missing, extra or wrong leading directory: the files ending with the path, else with
/// the path minus its first component(s) — while at least a directory and the file name are
/// left, or (`name_only`) the file name alone.
fn suffix_step(rel: &str, data: &IndexData, prefix: &str, name_only: bool) -> Option<StepFound> {
    let lower = rel.to_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let n = parts.len();
    let under = format!("{}/", prefix.to_lowercase());
    let inner = |id: u32| -> Option<&str> {
        let file = data.lower_file(id);
        if prefix.is_empty() {
            Some(file)
        } else {
            file.strip_prefix(under.as_str())
        }
    };
    if name_only {
        let ids = data.by_name(parts[n - 1]);
        let class = if n == 1 { "missing_dir" } else { "wrong_dir" };
        if prefix.is_empty() {
            // The name alone, in the whole root: every file of that name, counted at once.
            let kept = ids.iter().take(KEPT_CANDIDATES).map(|&id| data.file(id));
            let mut found = StepFound::new(kept, class, 0.85)?;
            found.total = ids.len();
            return Some(found);
        }
        let matching = ids.iter().filter(|&&id| inner(id).is_some());
        return StepFound::new(matching.map(|&id| data.file(id)), class, 0.85);
    }
    // The longest suffix (of two or more components) some file ends with decides. Each
    // suffix is a slice of `/` + the path: no string is built per suffix.
    let slashed = format!("/{lower}");
    let starts: Vec<usize> = slashed.match_indices('/').map(|(i, _)| i).collect();
    for k in 0..n.saturating_sub(1) {
        let ending = &slashed[starts[k]..];
        let tail = &ending[1..];
        let longer = data.by_suffix(tail);
        // With a leading directory dropped, a file may also be the rest itself.
        let equal = if k > 0 { data.by_lower(tail) } else { &[] };
        let ids = || longer.iter().chain(equal).copied();
        let valid = |id: &u32| {
            inner(*id).is_some_and(|inner| (k > 0 && inner == tail) || inner.ends_with(ending))
        };
        let class = if k == 0 { "missing_dir" } else { "wrong_dir" };
        let total = longer.len() + equal.len();
        if prefix.is_empty() && total > 0 {
            // Every id is a match (bar a hash collision): check the few kept, count the rest.
            let kept: Vec<String> = ids()
                .take(KEPT_CANDIDATES)
                .filter(valid)
                .map(|id| data.file(id).to_string())
                .collect();
            if kept.len() == total.min(KEPT_CANDIDATES) {
                return Some(StepFound {
                    candidates: kept,
                    total,
                    class,
                    confidence: 0.9,
                });
            }
        }
        let matching = ids().filter(valid).collect::<Vec<u32>>();
        if let Some(found) = StepFound::new(matching.iter().map(|&id| data.file(id)), class, 0.9) {
            return Some(found);
        }
    }
    None
}

/// How many edits a typo in this component may undo: none in a short name (`io.rs` is not a
/// typo of `os.rs`), one from a 4-character stem, two from 6.
fn edits_allowed(component: &str) -> usize {
    let stem = match extension(component) {
        Some(ext) => &component[..component.len() - ext.len() - 1],
        None => component,
    };
    match stem.chars().count() {
        0..=3 => 0,
        4..=5 => 1,
        _ => MAX_EDITS,
    }
}

/// One or two edits (case ignored), by path component from the workspace down, at most one
/// of them in directory names: the files at the smallest distance. The walk never spends more
/// edits than the best match found so far, and with no edit left it looks the rest of the
/// path up instead of scanning.
fn typo_step(rel: &str, data: &IndexData, prefix: &str) -> Option<StepFound> {
    let parts: Vec<String> = rel.split('/').map(str::to_lowercase).collect();
    let name = parts.last()?;
    if edits_allowed(name) == 0 && data.by_name(name).is_empty() {
        // The name itself may not change and no file has it: no walk can end anywhere.
        return None;
    }
    let hashes: Vec<u64> = parts.iter().map(|p| index::name_hash(p)).collect();
    let masks: Vec<u64> = parts.iter().map(|p| text::char_mask(p)).collect();
    let start = data.dir_id(prefix)?;
    let mut walk = TypoWalk {
        data,
        parts: &parts,
        hashes: &hashes,
        masks: &masks,
        budget: MAX_EDITS,
        best: None,
        found: Vec::new(),
        total: 0,
    };
    walk.visit(start, 0, 0);
    let best = walk.best?;
    let confidence = if best == 1 { 0.9 } else { 0.85 };
    Some(StepFound {
        candidates: walk
            .found
            .iter()
            .map(|&id| data.file(id).to_string())
            .collect(),
        total: walk.total,
        class: "typo",
        confidence,
    })
}

/// Whether the last component of `path`, lowercased, is `lower`.
fn last_is(path: &str, lower: &str) -> bool {
    let name = split_last(path).1;
    if name.is_ascii() {
        name.eq_ignore_ascii_case(lower)
    } else {
        name.to_lowercase() == lower
    }
}

/// One typo walk: at most `budget` edits, and never more than the best found so far.
struct TypoWalk<'a> {
    data: &'a IndexData,
    parts: &'a [String],
    /// [`index::name_hash`] and [`text::char_mask`] of each part.
    hashes: &'a [u64],
    masks: &'a [u64],
    budget: usize,
    best: Option<usize>,
    /// File ids (the first few) at the best distance …
    found: Vec<u32>,
    /// … of this many.
    total: usize,
}

impl TypoWalk<'_> {
    /// Component `i` in directory `dir`, `cost` edits spent (all of them in directory names).
    fn visit(&mut self, dir: u32, i: usize, cost: usize) {
        let data = self.data;
        let parts = self.parts;
        let last = i + 1 == parts.len();
        let want = &parts[i];
        let remaining = self.best.unwrap_or(self.budget).saturating_sub(cost);
        let mut allowed = remaining.min(edits_allowed(want));
        if !last {
            // At most one edit in all the directory names (`cost` so far is all theirs).
            allowed = allowed.min(1usize.saturating_sub(cost));
        }
        if !last && (cost > 0 || remaining == 0) {
            // No edit is left for any directory: the rest of them is one lookup.
            self.visit_exact_chain(dir, i, cost);
            return;
        }
        if allowed == 0 {
            // This component must match (ignoring case): look it up, no scan.
            if last {
                if cost > 0 {
                    for &id in data.child_files(dir, self.hashes[i]) {
                        if last_is(data.file(id), want) {
                            self.add(id, cost);
                        }
                    }
                }
            } else {
                for &child in data.child_dirs(dir, self.hashes[i]) {
                    // A hash names a key, not a proof: check the name.
                    if last_is(data.dir_path(child), want) {
                        self.visit(child, i + 1, cost);
                    }
                }
            }
            return;
        }
        if !last {
            // The directory as written first: what it finds bounds the walk everywhere else.
            for &child in data.child_dirs(dir, self.hashes[i]) {
                if last_is(data.dir_path(child), want) {
                    self.visit(child, i + 1, cost);
                }
            }
        }
        let mask = self.masks[i];
        for entry in data.entries(dir) {
            if entry.is_dir == last || !text::near_masks(mask, entry.mask, allowed) {
                continue;
            }
            let Some(d) = text::distance(want, &entry.lower, allowed) else {
                continue;
            };
            let total = cost + d;
            if last {
                if total > 0 {
                    self.add(entry.id, total);
                }
            } else if d > 0 && total <= self.best.unwrap_or(self.budget) {
                self.visit(entry.id, i + 1, total);
            }
        }
    }

    /// Visits the directories under `dir` at the written (lowercased) names `parts[i..]` but
    /// the last: one hashed lookup of the whole chain, each hit checked by its names.
    fn visit_exact_chain(&mut self, dir: u32, i: usize, cost: usize) {
        let data = self.data;
        let n = self.parts.len();
        let key = self.hashes[i..n - 1]
            .iter()
            .fold(data.dir_key(dir), |key, &name| {
                index::dir_key_child(key, name)
            });
        for &target in data.dirs_by_key(key) {
            if self.chain_matches(dir, target, i) {
                self.visit(target, n - 1, cost);
            }
        }
    }

    /// Whether directory `target` is `dir` followed by the names `parts[i..]` but the last.
    fn chain_matches(&self, dir: u32, target: u32, i: usize) -> bool {
        let data = self.data;
        let middle = &self.parts[i..self.parts.len() - 1];
        let Some(rest) = data.dir_path(target).strip_prefix(data.dir_path(dir)) else {
            return false;
        };
        let rest = if dir == 0 {
            rest
        } else {
            match rest.strip_prefix('/') {
                Some(rest) => rest,
                None => return false,
            }
        };
        let mut names = rest.split('/');
        middle
            .iter()
            .all(|part| names.next().is_some_and(|name| last_is(name, part)))
            && names.next().is_none()
    }

    fn add(&mut self, file: u32, cost: usize) {
        match self.best {
            Some(best) if cost > best => return,
            Some(best) if cost == best => {}
            _ => {
                self.best = Some(cost);
                self.found.clear();
                self.total = 0;
            }
        }
        if self.found.len() < KEPT_CANDIDATES {
            self.found.push(file);
        }
        self.total += 1;
    }
}
