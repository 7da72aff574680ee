//! Matchers: find the next match in a text, and tell whether a match starting at a given
//! position could still appear or change if more text were appended (the question streaming
//! needs answered to release text early).
//!
//! Semantics, shared by the one-shot and the streaming path:
//! * [`RegexMatcher`]: leftmost start; at that start the leftmost-first match (the `regex`
//!   crate's semantics) among those no longer than `max_len` characters. A pattern whose longest
//!   match is bounded (every built-in detector; validation requires the bound to fit in
//!   `max_len`) is never cut, and this is exactly `regex::Regex::find_iter`; an unbounded one
//!   (`[A-Z]+`) is cut at `max_len` characters, alike in one-shot and streaming use.
//! * [`LiteralMatcher`]: aho-corasick leftmost-longest; a `whole_word` literal only counts when
//!   neither neighbour is a word character, otherwise the search goes on from the next char.
//!
//! Liveness comes from automata: an anchored lazy DFA (regex) or anchored aho-corasick DFA
//! (literals) is run from the position to the end of the text; if it reaches its dead state,
//! nothing appended later can make or change a match there. When the automaton cannot say
//! (a Unicode word boundary meeting non-ASCII text), a position stays undecided until its whole
//! window (plus one byte of look-ahead) is visible, which is always exact.

use std::sync::{Arc, Mutex};

use aho_corasick::automaton::Automaton;
use aho_corasick::{AhoCorasick, Anchored as AcAnchored, MatchKind, StartKind};
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::start;
use regex_automata::{meta, Anchored, Input};

use super::PathNote;

/// A match: `text[start..end]` is to be rewritten by the rule with index `rule` (an index into
/// the pipeline's rule table); `pattern` is the matcher's own index of what matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub rule: usize,
    pub pattern: usize,
}

/// Per-stream mutable scratch space of a matcher (the lazy DFA's cache).
pub enum Scratch {
    None,
    Lazy(Box<Cache>),
}

pub trait Matcher: Send + Sync {
    /// The leftmost match starting at or after `from`; `text[..from]` is context for
    /// look-behind assertions only.
    fn find(&self, text: &str, from: usize) -> Option<Found>;

    /// As [`Matcher::find`], knowing whether `text` is complete (`eof`). A matcher whose
    /// decision needs the end of a candidate (a path token) skips an unfinished one unless
    /// `eof`; the stream holds it through [`Matcher::live_at`].
    fn find_in(&self, text: &str, from: usize, _eof: bool) -> Option<Found> {
        self.find(text, from)
    }

    /// Bytes of already released text a match decision may read before the match (beyond
    /// the one char every matcher gets).
    fn context(&self) -> usize {
        0
    }

    /// What the audit says about a match besides its text (path rules: confidence, reasoning,
    /// and whether it is only flagged).
    fn explain(&self, _text: &str, _found: &Found) -> Option<PathNote> {
        None
    }

    /// A shortcut through plain text, not at the end of the stream: `Some(p)` when no match
    /// starts in `text[from..p]`, no position there is live, and `p` is live (or the end of
    /// the text). The stage then releases `text[from..p]` and holds the rest without calling
    /// [`Matcher::find_in`] or [`Matcher::live_at`]. `None`: take the general way.
    ///
    /// `text[from..checked]` (when `checked > from`) was read by an earlier call that answered
    /// `Some(from)` on a shorter text: the open token has grown since, and only the text after
    /// `checked` is new.
    fn quick(&self, _text: &str, _from: usize, _checked: usize) -> Option<usize> {
        None
    }

    /// Could appending text create or change a match starting at `at`?
    fn live_at(&self, scratch: &mut Scratch, text: &str, at: usize) -> bool;

    fn scratch(&self) -> Scratch;

    /// Takes back a scratch space a stream is done with, for the next stream to reuse.
    fn recycle(&self, _scratch: Scratch) {}

    /// The longest match possible, in bytes: a position further than this (plus one byte of
    /// look-ahead) from the end of the text can no longer start a match.
    fn window(&self) -> usize;

    /// Appends what `found` is replaced with.
    fn rewrite(&self, text: &str, found: &Found, out: &mut String);
}

/// One regular expression (a `regex`, `redact` or pattern `block` rule).
pub struct RegexMatcher {
    regex: meta::Regex,
    /// `$1`-style template (regex rules) or fixed text (masks, block messages).
    rewrite: Rewrite,
    dfa: Option<Arc<DFA>>,
    /// Lazy-DFA caches of finished streams: building one costs tens of µs, and every
    /// request would otherwise build one per regex rule.
    caches: Mutex<Vec<Cache>>,
    window: Window,
    rule: usize,
}

/// Caches kept per regex for reuse; more concurrent streams than this build their own.
const KEPT_CACHES: usize = 64;

/// How far a regex match can reach from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// The pattern's own longest match, in bytes: nothing to cut.
    Bounded(usize),
    /// Unbounded pattern: matches are cut at this many characters.
    Chars(usize),
}

impl Window {
    /// The byte index `self` reaches from `start` in `text` (capped at the text's end).
    fn limit(self, text: &str, start: usize) -> usize {
        match self {
            Window::Bounded(bytes) => floor_char_boundary(text, (start + bytes).min(text.len())),
            Window::Chars(chars) => text[start..]
                .char_indices()
                .nth(chars)
                .map_or(text.len(), |(i, _)| start + i),
        }
    }

    /// An upper bound in bytes.
    fn bytes(self) -> usize {
        match self {
            Window::Bounded(bytes) => bytes,
            Window::Chars(chars) => chars.saturating_mul(4),
        }
    }
}

/// Why a pattern could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

impl RegexMatcher {
    /// `max_len` (characters) bounds the matches of an unbounded pattern.
    pub fn new(
        pattern: &str,
        max_len: usize,
        rule: usize,
        rewrite: Rewrite,
    ) -> Result<Self, CompileError> {
        let regex = meta::Regex::new(pattern).map_err(|e| CompileError(e.to_string()))?;
        let hir = regex_syntax::parse(pattern).map_err(|e| CompileError(e.to_string()))?;
        let window = match hir.properties().maximum_len() {
            Some(bytes) => Window::Bounded(bytes.max(1)),
            None => Window::Chars(max_len.max(1)),
        };
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(regex_automata::MatchKind::LeftmostFirst)
                    .unicode_word_boundary(true)
                    .cache_capacity(2 << 20)
                    .minimum_cache_clear_count(Some(8)),
            )
            .build(pattern)
            .ok()
            .map(Arc::new);
        Ok(RegexMatcher {
            regex,
            rewrite,
            dfa,
            caches: Mutex::new(Vec::new()),
            window,
            rule,
        })
    }
}

impl Matcher for RegexMatcher {
    fn find(&self, text: &str, mut from: usize) -> Option<Found> {
        while from <= text.len() {
            let found = self.regex.search(&Input::new(text).range(from..))?;
            let start = found.start();
            let limit = self.window.limit(text, start);
            if found.end() <= limit {
                return Some(Found {
                    start: found.start(),
                    end: found.end(),
                    rule: self.rule,
                    pattern: 0,
                });
            }
            // Longer than the window: the leftmost-first match inside the window, if any.
            let input = Input::new(text).range(start..limit).anchored(Anchored::Yes);
            if let Some(bounded) = self.regex.search(&input) {
                if !bounded.is_empty() {
                    return Some(Found {
                        start: bounded.start(),
                        end: bounded.end(),
                        rule: self.rule,
                        pattern: 0,
                    });
                }
            }
            from = next_char_boundary(text, start);
        }
        None
    }

    fn live_at(&self, scratch: &mut Scratch, text: &str, at: usize) -> bool {
        // The whole window and one byte of look-ahead visible: decided whatever comes next.
        if self.window.limit(text, at) < text.len() {
            return false;
        }
        let (Some(dfa), Scratch::Lazy(cache)) = (&self.dfa, scratch) else {
            return true;
        };
        let look_behind = at.checked_sub(1).map(|i| text.as_bytes()[i]);
        let config = start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(look_behind);
        let Ok(mut state) = dfa.start_state(cache, &config) else {
            return true;
        };
        for &byte in &text.as_bytes()[at..] {
            state = match dfa.next_state(cache, state, byte) {
                Ok(state) => state,
                Err(_) => return true,
            };
            if state.is_dead() {
                return false;
            }
            if state.is_quit() {
                return true;
            }
        }
        true
    }

    fn scratch(&self) -> Scratch {
        let Some(dfa) = &self.dfa else {
            return Scratch::None;
        };
        let kept = self.caches.lock().ok().and_then(|mut caches| caches.pop());
        Scratch::Lazy(Box::new(kept.unwrap_or_else(|| dfa.create_cache())))
    }

    fn recycle(&self, scratch: Scratch) {
        if let Scratch::Lazy(cache) = scratch {
            if let Ok(mut caches) = self.caches.lock() {
                if caches.len() < KEPT_CACHES {
                    caches.push(*cache);
                }
            }
        }
    }

    fn window(&self) -> usize {
        self.window.bytes()
    }

    fn rewrite(&self, text: &str, found: &Found, out: &mut String) {
        match &self.rewrite {
            Rewrite::Fixed(fixed) => out.push_str(fixed),
            Rewrite::Template(template) => {
                let mut caps = self.regex.create_captures();
                let input = Input::new(text)
                    .range(found.start..found.end)
                    .anchored(Anchored::Yes);
                self.regex.search_captures(&input, &mut caps);
                if caps.is_match() {
                    caps.interpolate_string_into(text, template, out);
                } else {
                    // Cannot happen: the span is a match of this regex. Keep the text.
                    out.push_str(&text[found.start..found.end]);
                }
            }
        }
    }
}

/// What a regex match becomes.
#[derive(Debug, Clone)]
pub enum Rewrite {
    /// `$1`, `${name}` expanded from the match's capture groups.
    Template(String),
    /// The same text every time.
    Fixed(String),
}

/// Many literals at once (the `replace` rules, literal `block` rules).
pub struct LiteralMatcher {
    searcher: AhoCorasick,
    anchored: aho_corasick::dfa::DFA,
    /// Per pattern: (rule index, whole_word, replacement).
    patterns: Vec<(usize, bool, String)>,
    /// Longest literal, bytes.
    window: usize,
}

impl LiteralMatcher {
    /// One literal per rule, all sharing `case_insensitive` (ASCII).
    pub fn new(literals: &[Literal], case_insensitive: bool) -> Result<Self, CompileError> {
        let texts: Vec<&str> = literals.iter().map(|l| l.find.as_str()).collect();
        let searcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(case_insensitive)
            .build(&texts)
            .map_err(|e| CompileError(e.to_string()))?;
        let anchored = aho_corasick::dfa::DFA::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(case_insensitive)
            .start_kind(StartKind::Anchored)
            .build(&texts)
            .map_err(|e| CompileError(e.to_string()))?;
        Ok(LiteralMatcher {
            window: texts.iter().map(|t| t.len()).max().unwrap_or(0),
            searcher,
            anchored,
            patterns: literals
                .iter()
                .map(|l| (l.rule, l.whole_word, l.replace.clone()))
                .collect(),
        })
    }
}

impl Matcher for LiteralMatcher {
    fn find(&self, text: &str, mut from: usize) -> Option<Found> {
        while from < text.len() {
            let input = aho_corasick::Input::new(text).range(from..);
            let found = self.searcher.find(input)?;
            let pattern = found.pattern().as_usize();
            let (rule, whole_word, _) = self.patterns[pattern];
            if !whole_word || is_whole_word(text, found.start(), found.end()) {
                return Some(Found {
                    start: found.start(),
                    end: found.end(),
                    rule,
                    pattern,
                });
            }
            from = next_char_boundary(text, found.start());
        }
        None
    }

    fn live_at(&self, _scratch: &mut Scratch, text: &str, at: usize) -> bool {
        let Ok(mut state) = self.anchored.start_state(AcAnchored::Yes) else {
            return true;
        };
        for &byte in &text.as_bytes()[at..] {
            state = self.anchored.next_state(AcAnchored::Yes, state, byte);
            if self.anchored.is_dead(state) {
                return false;
            }
        }
        true
    }

    fn scratch(&self) -> Scratch {
        Scratch::None
    }

    fn window(&self) -> usize {
        self.window
    }

    fn rewrite(&self, _text: &str, found: &Found, out: &mut String) {
        out.push_str(&self.patterns[found.pattern].2);
    }
}

/// One literal rule for a [`LiteralMatcher`].
#[derive(Debug, Clone)]
pub struct Literal {
    pub find: String,
    pub replace: String,
    pub whole_word: bool,
    pub rule: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_whole_word(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
}

/// The start of the char after the one at `i` (or `len`).
pub fn next_char_boundary(text: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    j.min(text.len())
}

/// The largest char boundary at or below `i`.
pub fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Rewrite {
        Rewrite::Fixed("X".into())
    }

    fn lit(find: &str, whole_word: bool) -> Literal {
        Literal {
            find: find.into(),
            replace: "X".into(),
            whole_word,
            rule: 0,
        }
    }

    #[test]
    fn regex_find_matches_the_regex_crate_for_bounded_patterns() {
        let m = RegexMatcher::new(r"\bfoo\d{1,3}\b", 256, 7, fixed()).unwrap();
        assert_eq!(m.window(), 15, "\\d is Unicode: up to 4 bytes a digit");
        let text = "xfoo1 foo12 foo1234 foo9";
        let mut from = 0;
        let mut got = Vec::new();
        while let Some(f) = m.find(text, from) {
            got.push(&text[f.start..f.end]);
            from = f.end;
        }
        let want: Vec<&str> = regex::Regex::new(r"\bfoo\d{1,3}\b")
            .unwrap()
            .find_iter(text)
            .map(|m| m.as_str())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn regex_matches_longer_than_the_window_are_cut_to_it() {
        let m = RegexMatcher::new(r"a+", 3, 0, fixed()).unwrap();
        let f = m.find("baaaaa", 0).unwrap();
        assert_eq!((f.start, f.end), (1, 4));
        // max_len counts characters, not bytes.
        let m = RegexMatcher::new(r"é+", 3, 0, fixed()).unwrap();
        let f = m.find("xéééé", 0).unwrap();
        assert_eq!((f.start, f.end), (1, 7));
        // A bounded pattern is never cut, whatever its length in bytes.
        let m = RegexMatcher::new(r"é{3}", 3, 0, fixed()).unwrap();
        let f = m.find("xééé", 0).unwrap();
        assert_eq!((f.start, f.end), (1, 7));
    }

    #[test]
    fn liveness_follows_the_automaton() {
        let m = RegexMatcher::new(r"confidential", 256, 0, fixed()).unwrap();
        let mut scratch = m.scratch();
        assert!(m.live_at(&mut scratch, "the confid", 4));
        assert!(!m.live_at(&mut scratch, "the confid", 0));
        assert!(!m.live_at(&mut scratch, "the confix", 4));
        let lit = LiteralMatcher::new(&[lit("confidential", false)], false).unwrap();
        let mut none = lit.scratch();
        assert!(lit.live_at(&mut none, "the confid", 4));
        assert!(!lit.live_at(&mut none, "the confid", 3));
        assert!(!lit.live_at(&mut none, "the confix", 4));
    }

    #[test]
    fn whole_word_literals_need_boundaries() {
        let lit = LiteralMatcher::new(&[lit("cat", true)], true).unwrap();
        assert_eq!(lit.find("concat Cat", 0).map(|f| f.start), Some(7));
        assert_eq!(lit.find("cats", 0), None);
    }
}
