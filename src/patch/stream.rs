//! One pipeline stage applied to a stream of text chunks, leak-free.
//!
//! The stage keeps only the *undecided* tail: text from the first position where a match could
//! still start (or change) if more text came. Everything before it is decided — rewritten where
//! a decided match covers it, released unchanged otherwise — and leaves at once. So the output
//! for any split of the input equals the output for the whole text in one piece, and no byte of
//! a match ever leaves before its match is decided.
//!
//! A buffer `buf` holds `context + pending`: `buf[..start]` is already-released text — one char
//! for look-behind assertions (`\b`, `^`) and whole-word checks, or as many bytes as the
//! matcher's [`Matcher::context`] asks for (a path rule reads the words before a path).

use std::sync::Arc;

use super::matcher::{next_char_boundary, Found, Matcher, Scratch};
use super::PathNote;

/// What a decided match does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Replace the match with the matcher's rewrite.
    Rewrite,
    /// Cut the text before the match; the session ends with the rule's message.
    Block,
}

/// A decided match, reported to the session.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub rule: usize,
    pub detected: String,
    pub corrected: String,
    pub path: Option<PathNote>,
}

impl Drop for StageStream {
    fn drop(&mut self) {
        let scratch = std::mem::replace(&mut self.scratch, Scratch::None);
        self.matcher.recycle(scratch);
    }
}

/// The per-stream state of one stage.
pub struct StageStream {
    matcher: Arc<dyn Matcher>,
    effect: Effect,
    /// Shadow: matches are reported, the text passes through unchanged and undelayed.
    shadow: bool,
    scratch: Scratch,
    buf: String,
    start: usize,
    /// Positions in `start..frontier` are known not to start a match (dead stays dead).
    frontier: usize,
    /// Set once a block rule fired: everything after is swallowed.
    blocked: Option<usize>,
    /// The matcher's [`Matcher::context`] (asked once).
    context: usize,
    /// `buf[start..quick_checked]` was read by the last [`Matcher::quick`], which answered
    /// `start` (0: the last step took the general way).
    quick_checked: usize,
}

impl StageStream {
    pub fn new(matcher: Arc<dyn Matcher>, effect: Effect, shadow: bool) -> Self {
        StageStream {
            context: matcher.context(),
            scratch: matcher.scratch(),
            matcher,
            effect,
            shadow,
            buf: String::new(),
            start: 0,
            frontier: 0,
            blocked: None,
            quick_checked: 0,
        }
    }

    /// Bytes held back (undecided).
    pub fn held(&self) -> usize {
        if self.shadow {
            0
        } else {
            self.buf.len() - self.start
        }
    }

    /// Characters held back (undecided).
    pub fn held_chars(&self) -> usize {
        if self.shadow {
            0
        } else {
            self.buf[self.start..].chars().count()
        }
    }

    /// The rule that blocked the stream, if one did.
    pub fn blocked(&self) -> Option<usize> {
        self.blocked
    }

    /// Feeds `input`; appends what can be released to `out` and decided matches to `decided`.
    #[inline]
    pub fn push(&mut self, input: &str, out: &mut String, decided: &mut Vec<Decided>) {
        // The matcher's quick way, without the general step's call (most chunks of prose).
        if self.blocked.is_none() && !self.shadow {
            self.buf.push_str(input);
            if let Some(live) = self
                .matcher
                .quick(&self.buf, self.start, self.quick_checked)
            {
                out.push_str(&self.buf[self.start..live]);
                self.start = live;
                self.frontier = self.frontier.max(live);
                self.quick_checked = self.buf.len();
                if self.start >= 1024 {
                    self.compact();
                }
                return;
            }
            self.quick_checked = 0;
            self.general(false, out, decided);
            self.compact();
            return;
        }
        self.feed(input, false, out, decided);
    }

    /// The input is over: decides and releases everything held.
    pub fn finish(&mut self, out: &mut String, decided: &mut Vec<Decided>) {
        self.feed("", true, out, decided);
    }

    fn feed(&mut self, input: &str, eof: bool, out: &mut String, decided: &mut Vec<Decided>) {
        if self.blocked.is_some() {
            return;
        }
        self.buf.push_str(input);
        if self.shadow {
            out.push_str(input);
            let mut discard = String::new();
            self.advance(eof, &mut discard, decided);
        } else {
            self.advance(eof, out, decided);
        }
        self.compact();
    }

    fn advance(&mut self, eof: bool, out: &mut String, decided: &mut Vec<Decided>) {
        let cursor = self.start;
        if !eof {
            if let Some(live) = self.matcher.quick(&self.buf, cursor, self.quick_checked) {
                out.push_str(&self.buf[cursor..live]);
                self.start = live;
                self.frontier = self.frontier.max(live);
                self.quick_checked = self.buf.len();
                return;
            }
        }
        self.quick_checked = 0;
        self.general(eof, out, decided);
    }

    /// The general step: finds and decides matches, holds from the first live position.
    fn general(&mut self, eof: bool, out: &mut String, decided: &mut Vec<Decided>) {
        let mut cursor = self.start;
        loop {
            let found = self.matcher.find_in(&self.buf, cursor, eof);
            if !eof {
                // Hold from the first position that could still start a match.
                let limit = found.map_or(self.buf.len(), |f| f.start);
                if let Some(live) = self.first_live(cursor.max(self.frontier), limit) {
                    out.push_str(&self.buf[cursor..live]);
                    cursor = live;
                    break;
                }
                let Some(f) = found else {
                    out.push_str(&self.buf[cursor..]);
                    cursor = self.buf.len();
                    break;
                };
                if self.matcher.live_at(&mut self.scratch, &self.buf, f.start) {
                    out.push_str(&self.buf[cursor..f.start]);
                    cursor = f.start;
                    self.frontier = f.start;
                    break;
                }
            }
            let Some(f) = found else {
                out.push_str(&self.buf[cursor..]);
                cursor = self.buf.len();
                break;
            };
            out.push_str(&self.buf[cursor..f.start]);
            if self.apply(&f, out, decided) {
                cursor = self.buf.len();
                break;
            }
            cursor = if f.end > f.start {
                f.end
            } else {
                // An empty match (validation rejects them; be safe): keep one char.
                let next = next_char_boundary(&self.buf, f.start);
                out.push_str(&self.buf[f.start..next]);
                next
            };
            self.frontier = self.frontier.max(cursor);
        }
        self.start = cursor;
        self.frontier = self.frontier.max(cursor);
    }

    /// Rewrites (or blocks at) a decided match. Returns true when the stream is now blocked.
    fn apply(&mut self, f: &Found, out: &mut String, decided: &mut Vec<Decided>) -> bool {
        let detected = self.buf[f.start..f.end].to_string();
        let mut corrected = String::new();
        match self.effect {
            Effect::Rewrite => self.matcher.rewrite(&self.buf, f, &mut corrected),
            Effect::Block => {}
        }
        decided.push(Decided {
            rule: f.rule,
            detected,
            corrected: corrected.clone(),
            path: self.matcher.explain(&self.buf, f),
        });
        match self.effect {
            Effect::Rewrite => {
                out.push_str(&corrected);
                false
            }
            Effect::Block if self.shadow => {
                out.push_str(&self.buf[f.start..f.end]);
                false
            }
            Effect::Block => {
                self.blocked = Some(f.rule);
                true
            }
        }
    }

    /// The first char position in `from..to` where a match could still start.
    fn first_live(&mut self, from: usize, to: usize) -> Option<usize> {
        // Further back than the longest match (+1 byte of look-ahead) nothing is live.
        let horizon = self
            .buf
            .len()
            .saturating_sub(self.matcher.window().saturating_add(1));
        let mut at = from.max(horizon);
        while at < to {
            if self.buf.is_char_boundary(at)
                && self.matcher.live_at(&mut self.scratch, &self.buf, at)
            {
                self.frontier = at;
                return Some(at);
            }
            at += 1;
        }
        self.frontier = self.frontier.max(to);
        None
    }

    /// Drops released text, keeping one char of context (or the matcher's
    /// [`Matcher::context`] bytes, whichever reaches further back).
    fn compact(&mut self) {
        // Compacting a few bytes at a time would move the buffer on every chunk.
        if self.start == 0 || self.start < 1024 && self.context > 0 {
            return;
        }
        let one_char = self.buf[..self.start]
            .char_indices()
            .next_back()
            .map_or(self.start, |(i, _)| i);
        let mut keep_from = one_char.min(self.start.saturating_sub(self.context));
        while !self.buf.is_char_boundary(keep_from) {
            keep_from -= 1;
        }
        // Compacting a few bytes at a time would move the buffer on every chunk.
        if keep_from < 1024 && self.context > 0 {
            return;
        }
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.start -= keep_from;
            self.frontier -= keep_from;
            self.quick_checked = self.quick_checked.saturating_sub(keep_from);
        }
    }
}
