//! The matcher of a `path` rule: path references in model text ([`crate::paths::text`]),
//! decided by the rule's [`Scope`] (one per request: the workspace header).
//!
//! A match is a reference the rule fixes or flags (a flag rewrites it to itself). An
//! unfinished token at the end of the text is live — held — until a character ends it, so a
//! path split across chunks is never half-released.

use std::sync::Mutex;

use crate::paths::text::{self, LOOKAHEAD, LOOKBACK, MAX_TOKEN};
use crate::paths::{Ref, Scope, Verdict};

use super::matcher::{Found, Matcher, Scratch};
use super::PathNote;

pub struct PathMatcher {
    scope: Scope,
    rule: usize,
    /// The last decision, so `rewrite` and `explain` do not look the path up again.
    last: Mutex<Option<(String, bool, Verdict)>>,
}

impl PathMatcher {
    pub fn new(scope: Scope, rule: usize) -> Self {
        PathMatcher {
            scope,
            rule,
            last: Mutex::new(None),
        }
    }

    fn verdict(&self, raw: &str, create: bool, quoted: bool) -> Verdict {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, seen_create, verdict)) = last.as_ref() {
            if seen == raw && *seen_create == create {
                return verdict.clone();
            }
        }
        let verdict = self.scope.decide(raw, create, Ref::Prose { quoted });
        *last = Some((raw.to_string(), create, verdict.clone()));
        verdict
    }

    fn remembered(&self, raw: &str) -> Option<Verdict> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_ref() {
            Some((seen, _, verdict)) if seen == raw => Some(verdict.clone()),
            _ => None,
        }
    }

    /// The finished token `text[start..end]` as a match (its core), if the rule fixes or flags
    /// it, and whether that is settled: the words after it that may say "new file" are all
    /// there (or `eof`).
    fn judge(&self, text: &str, start: usize, end: usize, eof: bool) -> Option<(Found, bool)> {
        let token = &text[start..end];
        let quoted = text::quoted(text, start, end);
        // Plain words never reach the index; a quoted one may be `LICENSE-MIT`.
        if !quoted && !text::has_path_mark(token) {
            return None;
        }
        let core = text::core(token)?;
        let raw = &token[core.start..core.end];
        // Sentence punctuation is no path mark: an unquoted `long.` or `Note:` is a word.
        if !quoted && !text::has_path_mark(raw) {
            return None;
        }
        let (after, settled) = text::sentence_after(&text[end..], eof);
        let create = text::create_intent(&text[..start]) || text::create_intent_after(after);
        match self.verdict(raw, create, quoted) {
            Verdict::Keep => None,
            Verdict::Fix { .. } | Verdict::Flag { .. } => Some((
                Found {
                    start: start + core.start,
                    end: start + core.end,
                    rule: self.rule,
                    pattern: 0,
                },
                settled,
            )),
        }
    }

    /// The start of the token whose match may start at `at` (`at` itself, or the token start
    /// before a leading `:` or `*` the core drops).
    fn token_start(text: &str, at: usize) -> Option<usize> {
        if text::is_token_start(text, at) {
            return Some(at);
        }
        let mut i = at;
        for _ in 0..4 {
            let (j, c) = text.get(..i)?.char_indices().next_back()?;
            if !matches!(c, ':' | '*') {
                return None;
            }
            if text::is_token_start(text, j) {
                return Some(j);
            }
            i = j;
        }
        None
    }
}

impl Matcher for PathMatcher {
    fn find(&self, text: &str, from: usize) -> Option<Found> {
        self.find_in(text, from, true)
    }

    fn find_in(&self, text: &str, from: usize, eof: bool) -> Option<Found> {
        let mut at = from;
        while let Some((start, end)) = text::next_token(text, at, eof) {
            // An unfinished token is held (live_at), not decided.
            let end = end?;
            at = end.max(start + 1);
            if let Some((found, _)) = self.judge(text, start, end, eof) {
                return Some(found);
            }
        }
        None
    }

    fn quick(&self, text: &str, from: usize, checked: usize) -> Option<usize> {
        text::plain_run(text, from, checked)
    }

    fn live_at(&self, _scratch: &mut Scratch, text: &str, at: usize) -> bool {
        let Some(start) = Self::token_start(text, at) else {
            return false;
        };
        match text::token_end(text, start, false) {
            None => text.len() - start <= MAX_TOKEN,
            Some(end) => self
                .judge(text, start, end, false)
                .is_some_and(|(_, settled)| !settled),
        }
    }

    fn scratch(&self) -> Scratch {
        Scratch::None
    }

    fn window(&self) -> usize {
        MAX_TOKEN + LOOKAHEAD + 8
    }

    fn context(&self) -> usize {
        LOOKBACK + 4
    }

    fn rewrite(&self, text: &str, found: &Found, out: &mut String) {
        let raw = &text[found.start..found.end];
        let verdict = self.remembered(raw).unwrap_or(Verdict::Keep);
        match verdict {
            Verdict::Fix { text, .. } => out.push_str(&text),
            Verdict::Keep | Verdict::Flag { .. } => out.push_str(raw),
        }
    }

    fn explain(&self, text: &str, found: &Found) -> Option<PathNote> {
        let raw = &text[found.start..found.end];
        Some(match self.remembered(raw)? {
            Verdict::Fix {
                confidence, class, ..
            } => PathNote {
                confidence,
                reasoning: class.to_string(),
                flagged: false,
            },
            Verdict::Flag { confidence, reason } => PathNote {
                confidence,
                reasoning: reason,
                flagged: true,
            },
            Verdict::Keep => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::paths::PathFixer;

    /// A path matcher on a small tree whose names are also prose words (`long`, `notes`).
    fn matcher() -> (PathMatcher, std::path::PathBuf) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rawrxd-quick-{}-{n}", std::process::id()));
        for file in ["src/main.rs", "docs/long", "notes", "Makefile", "README.md"] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let dir = dir.canonicalize().unwrap();
        let fixer =
            Arc::new(PathFixer::open(&[dir.display().to_string()], 0.8, true).expect("fixer"));
        let (scope, _) = fixer.scope(None);
        (PathMatcher::new(scope, 0), dir)
    }

    /// Words, paths of the tree and near misses, and the punctuation around them.
    const PIECES: &[&str] = &[
        "main.rs",
        "main",
        ".rs",
        "long",
        "long.",
        "notes",
        "Notes:",
        "README.md",
        "readme.md",
        "src/main.rs",
        "src/mian.rs",
        "Makefile",
        "docs/long",
        " ",
        " ",
        "\n",
        ",",
        ".",
        ":",
        "?",
        "e.g",
        "(",
        ")",
        "'",
        "`",
        "\"",
        "é",
        "-",
        "12",
        "create a new file ",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        /// The shortcut through plain prose keeps the matcher's contract: wherever it answers,
        /// no match starts and nothing is live before its answer, and its answer is live (or
        /// the end).
        #[test]
        fn quick_agrees_with_the_general_way(text in prop_oneof![
            "[a-zA-Z .,:?!;`'/()\n_-]{0,40}|[a-z .,:?\né]{0,24}",
            proptest::collection::vec(proptest::sample::select(PIECES), 0..14).prop_map(|p| p.concat()),
        ]) {
            let (m, dir) = matcher();
            let mut scratch = m.scratch();
            for from in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                // Read in two steps (a shorter text first, then the rest from its answer, as
                // the stage does), the answer is the same as reading it all.
                for cut in (from..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                    if let Some(q) = m.quick(&text[..cut], from, 0) {
                        prop_assert_eq!(m.quick(&text, q, cut), m.quick(&text, q, 0), "{:?} cut at {}", text, cut);
                    }
                }
                let Some(p) = m.quick(&text, from, 0) else { continue };
                prop_assert!(p >= from && p <= text.len());
                if let Some(found) = m.find_in(&text, from, false) {
                    prop_assert!(found.start >= p, "{text:?} from {from}: match at {} before {p}", found.start);
                }
                for at in (from..p).filter(|&i| text.is_char_boundary(i)) {
                    prop_assert!(!m.live_at(&mut scratch, &text, at), "{text:?}: live at {at} before {p}");
                }
                prop_assert!(p == text.len() || m.live_at(&mut scratch, &text, p), "{text:?}: {p} not live");
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
