//! Agent failure detection: `detect` rules watch the model's answer for the ways it fails an
//! agent — it refuses, hands the work back, answers nothing, runs out of tokens with nothing
//! to show, calls a tool it was not offered or with arguments that break the tool's schema,
//! or loops — and say what to do: audit it, retry the request, or stop the answer.
//!
//! This module is sans-IO: [`Detectors`] (the enabled `detect` rules of a snapshot) →
//! [`Detectors::select`] for one request → a [`Watch`] per answer, fed the answer's text,
//! tool calls and ending as they arrive, which reports [`Finding`]s and says whether the
//! start of the answer must still be held back because a retry could still happen
//! ([`Watch::holding`]). [`answer`] reads answers out of the client protocols (NDJSON lines,
//! SSE events, whole JSON) and writes the well-formed ending of a stopped one; [`retry`]
//! builds the retried request. Sending, holding and stopping are the proxy's
//! (`crate::proxy::detect`).
//!
//! Confidences: `empty`, `truncated`, `tool_not_offered`, `tool_args_invalid` and custom
//! patterns are facts (1.0); `refusal` and `abandonment` carry their phrase list's
//! (`phrases.toml`); `repetition` grows with the number of repeats (`1 - 1/repeats`).
//!
//! May use: `patch` (the rule table and counters), `rules`. Used by `live` and `proxy`.

pub mod answer;
mod phrases;
pub mod repeat;
pub mod retry;
#[cfg(test)]
mod tests;
pub mod tools;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};

use crate::patch::RuleTable;
use crate::rules::{Action, Anchor, Check, Detect, Endpoint, Failure, Mode, OnFailure, RuleError};
pub use phrases::{phrases, StartPattern, StartState};
use repeat::Repeats;
pub use tools::Tools;

/// Bytes of an answer's start within which a refusal phrase must have matched.
const MAX_REFUSAL_BYTES: usize = 512;

/// Answer text kept per answer for the detectors (and the audit); past it only the loop
/// tracker keeps reading.
pub const MAX_WATCHED_TEXT: usize = 1 << 20;

/// The enabled `detect` rules of a snapshot, compiled.
#[derive(Default)]
pub struct Detectors {
    table: Arc<RuleTable>,
    rules: Vec<Armed>,
}

/// One compiled `detect` rule.
pub struct Armed {
    /// Index in the rule table (for its id, globs and counters).
    pub index: usize,
    pub detect: Detect,
    pub shadow: bool,
    compiled: Compiled,
}

/// A rule's check, compiled: a start-of-answer pattern or an anywhere regex (with the window
/// searched behind new text) and the confidence of a match — the built-in phrase lists
/// compile to these too — or a built-in that needs no automaton.
enum Compiled {
    Builtin,
    Start(Box<StartPattern>, f64),
    Anywhere(Regex, usize, f64),
}

/// One failure seen in an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Index of the rule in the table.
    pub index: usize,
    pub rule_id: String,
    /// `refusal`, …, or `pattern`.
    pub detector: &'static str,
    pub confidence: f64,
    pub on_failure: OnFailure,
    pub shadow: bool,
    /// Where in the answer's text it showed (bytes): a stop cuts the answer there.
    pub at: usize,
    /// What it saw (the matched phrase, the loop's span, the bad call).
    pub evidence: String,
}

impl Detectors {
    /// The `detect` rules of `table`.
    pub fn new(table: Arc<RuleTable>) -> Result<Self, Vec<RuleError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (index, rule) in table.rules.iter().enumerate() {
            let Action::Detect(detect) = &rule.action else {
                continue;
            };
            if !rule.enabled {
                continue;
            }
            let compiled = match &detect.check {
                Check::Builtin(Failure::Refusal) => phrases()
                    .map(|p| Compiled::Start(Box::new(p.refusal.clone()), p.refusal_confidence)),
                Check::Builtin(Failure::Abandonment) => phrases().map(|p| {
                    Compiled::Anywhere(
                        p.abandonment.clone(),
                        p.abandonment_window,
                        p.abandonment_confidence,
                    )
                }),
                Check::Builtin(_) => Ok(Compiled::Builtin),
                Check::Pattern {
                    pattern,
                    position: Anchor::Start,
                    case_insensitive,
                    ..
                } => StartPattern::new(pattern, *case_insensitive)
                    .map(|p| Compiled::Start(Box::new(p), 1.0)),
                Check::Pattern {
                    pattern,
                    position: Anchor::Anywhere,
                    case_insensitive,
                    max_len,
                } => RegexBuilder::new(pattern)
                    .case_insensitive(*case_insensitive)
                    .build()
                    .map(|regex| Compiled::Anywhere(regex, *max_len, 1.0))
                    .map_err(|e| e.to_string()),
            };
            match compiled {
                Ok(compiled) => rules.push(Armed {
                    index,
                    detect: detect.clone(),
                    shadow: rule.mode == Mode::Shadow,
                    compiled,
                }),
                Err(message) => errors.push(RuleError {
                    file: rule.source.clone(),
                    line: None,
                    rule_id: Some(rule.id.clone()),
                    field: Some("pattern".into()),
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Detectors { table, rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that apply to one request, or `None` when none does.
    pub fn select(self: &Arc<Self>, model: &str, endpoint: Endpoint) -> Option<Selected> {
        let chosen: Vec<usize> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, armed)| self.table.rules[armed.index].applies_to(model, Some(endpoint)))
            .map(|(i, _)| i)
            .collect();
        (!chosen.is_empty()).then(|| Selected {
            detectors: self.clone(),
            chosen: chosen.into(),
        })
    }

    /// Counts a finding in its rule's counters: a hit, and applied when it was acted on.
    pub fn count(&self, finding: &Finding, acted: bool) {
        let Some(counters) = self.table.counters.get(finding.index) else {
            return;
        };
        counters.hits.fetch_add(1, Ordering::Relaxed);
        if finding.shadow {
            counters.shadowed.fetch_add(1, Ordering::Relaxed);
        } else if acted {
            counters.applied.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `detect` rules that apply to one request.
#[derive(Clone)]
pub struct Selected {
    detectors: Arc<Detectors>,
    chosen: Arc<[usize]>,
}

impl Selected {
    fn armed(&self) -> impl Iterator<Item = &Armed> + '_ {
        self.chosen.iter().map(|&i| &self.detectors.rules[i])
    }

    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// The rule at table `index`, when it is one of these.
    pub fn rule(&self, index: usize) -> Option<&Armed> {
        self.armed().find(|a| a.index == index)
    }

    /// Whether a rule checks tool calls (the proxy then reads the request's `tools`).
    pub fn checks_tools(&self) -> bool {
        self.armed().any(|a| {
            matches!(
                a.detect.check,
                Check::Builtin(Failure::ToolNotOffered | Failure::ToolArgsInvalid)
            )
        })
    }

    /// Whether any enforced rule may retry (the proxy then keeps the request to re-send).
    pub fn may_retry(&self) -> bool {
        self.armed()
            .any(|a| !a.shadow && a.detect.on_failure == OnFailure::Retry)
    }

    /// A watch for one answer; `tools` are the request's tools.
    pub fn watch(&self, tools: Arc<Tools>) -> Watch {
        let armed: Vec<&Armed> = self.armed().collect();
        let states = armed
            .iter()
            .map(|a| match (&a.compiled, &a.detect.check) {
                (Compiled::Start(pattern, _), _) => RuleState::Start(pattern.start()),
                (_, Check::Builtin(Failure::Repetition)) => RuleState::Repeats(Box::default()),
                _ => RuleState::Plain,
            })
            .collect();
        Watch {
            selected: self.clone(),
            states,
            fired: vec![false; armed.len()],
            text: String::new(),
            length: 0,
            searched: 0,
            visible: false,
            thinking: false,
            calls: Vec::new(),
            tools,
            findings: Vec::new(),
        }
    }
}

enum RuleState {
    Plain,
    Start(StartState),
    Repeats(Box<Repeats>),
}

/// One answer under watch.
pub struct Watch {
    selected: Selected,
    /// Per chosen rule, in `selected.chosen` order.
    states: Vec<RuleState>,
    fired: Vec<bool>,
    /// The answer's text so far (up to [`MAX_WATCHED_TEXT`]).
    text: String,
    /// Bytes of text seen (also past the cap).
    length: usize,
    /// How far the anywhere patterns have searched.
    searched: usize,
    /// Text other than whitespace has come.
    visible: bool,
    /// Thinking text has come.
    thinking: bool,
    calls: Vec<tools::Call>,
    tools: Arc<Tools>,
    findings: Vec<Finding>,
}

/// How an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `done_reason`/`finish_reason` `length`: it ran out of tokens.
    Length,
    /// Any other ending (stop, tool calls, none given).
    Other,
}

impl Watch {
    /// More of the answer's text (`message.content`, `response`, `delta.content`, `text`).
    pub fn text(&mut self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        if !self.visible && piece.chars().any(|c| !c.is_whitespace()) {
            self.visible = true;
        }
        let before = self.length;
        self.length += piece.len();
        if self.text.len() + piece.len() <= MAX_WATCHED_TEXT {
            self.text.push_str(piece);
        }
        let selected = self.selected.clone();
        for slot in 0..self.states.len() {
            if self.fired[slot] {
                continue;
            }
            let armed = &selected.detectors.rules[selected.chosen[slot]];
            let found = match (&mut self.states[slot], &armed.compiled, &armed.detect.check) {
                (RuleState::Start(state), Compiled::Start(pattern, confidence), check) => {
                    *state = pattern.advance(*state, piece);
                    // A start pattern matches within its first `max_len` characters (the
                    // refusal phrases within far fewer): past that it has failed, so an
                    // open-ended pattern cannot hold an answer back for ever.
                    let bound = match check {
                        Check::Pattern { max_len, .. } => max_len.saturating_mul(4),
                        Check::Builtin(_) => MAX_REFUSAL_BYTES,
                    };
                    if self.length > bound && *state != StartState::Matched {
                        *state = StartState::Failed;
                    }
                    (*state == StartState::Matched).then(|| {
                        (
                            *confidence,
                            before + piece.len(),
                            start_evidence(&self.text),
                        )
                    })
                }
                (RuleState::Repeats(repeats), _, _) => {
                    let k = armed.detect.repeats.unwrap_or(repeat::DEFAULT_REPEATS);
                    repeats.push(piece, k).map(|found| {
                        (
                            1.0 - 1.0 / found.repeats as f64,
                            found.at,
                            format!(
                                "a span of {} tokens repeated {} times",
                                found.period, found.repeats
                            ),
                        )
                    })
                }
                (RuleState::Plain, Compiled::Anywhere(regex, window, confidence), _) => {
                    search(regex, &self.text, self.searched, *window)
                        .map(|(at, seen)| (*confidence, at, seen))
                }
                _ => None,
            };
            if let Some((confidence, at, evidence)) = found {
                self.fire(slot, confidence, at, evidence);
            }
        }
        self.searched = self.text.len();
    }

    /// Thinking text (`message.thinking`, `reasoning_content`): not the answer, but it shows
    /// the client something, so the answer's start is no longer held for empty/tool checks.
    pub fn thinking(&mut self, piece: &str) {
        if !piece.is_empty() {
            self.thinking = true;
        }
    }

    /// A whole tool call.
    pub fn tool_call(&mut self, call: tools::Call) {
        for slot in 0..self.states.len() {
            if self.fired[slot] {
                continue;
            }
            let finding = match self.armed(slot).detect.check {
                Check::Builtin(Failure::ToolNotOffered) if !self.tools.offers(&call.name) => {
                    Some(format!("{} (offered: {})", call.name, self.tools.names()))
                }
                Check::Builtin(Failure::ToolArgsInvalid) if self.tools.offers(&call.name) => {
                    self.tools.check_arguments(&call).err()
                }
                _ => None,
            };
            if let Some(evidence) = finding {
                self.fire(slot, 1.0, self.length, evidence);
            }
        }
        self.calls.push(call);
    }

    /// The answer ended.
    pub fn end(&mut self, ending: Ending) {
        let selected = self.selected.clone();
        for slot in 0..self.states.len() {
            if self.fired[slot] {
                continue;
            }
            let armed = &selected.detectors.rules[selected.chosen[slot]];
            let found = match (&mut self.states[slot], &armed.compiled, &armed.detect.check) {
                (RuleState::Start(state), Compiled::Start(pattern, confidence), _) => pattern
                    .finish(*state)
                    .then(|| (*confidence, start_evidence(&self.text))),
                (RuleState::Repeats(repeats), _, _) => {
                    let k = armed.detect.repeats.unwrap_or(repeat::DEFAULT_REPEATS);
                    repeats.finish(k).map(|found| {
                        (
                            1.0 - 1.0 / found.repeats as f64,
                            format!(
                                "a span of {} tokens repeated {} times",
                                found.period, found.repeats
                            ),
                        )
                    })
                }
                (_, _, Check::Builtin(Failure::Empty))
                    if ending == Ending::Other && !self.visible && self.calls.is_empty() =>
                {
                    Some((1.0, "no text and no tool call".to_string()))
                }
                (_, _, Check::Builtin(Failure::Truncated))
                    if ending == Ending::Length && !self.visible && self.calls.is_empty() =>
                {
                    let what = if self.thinking {
                        "ran out of tokens while thinking: no text and no tool call"
                    } else {
                        "ran out of tokens with no text and no tool call"
                    };
                    Some((1.0, what.to_string()))
                }
                _ => None,
            };
            if let Some((confidence, evidence)) = found {
                self.fire(slot, confidence, self.length, evidence);
            }
        }
    }

    /// Whether the answer must still be held back from the client: an enforced `retry` rule
    /// could still fire on what the client has not seen — a start-of-answer pattern that the
    /// text so far could still match, or, while no text (nor thinking) has come, a check of
    /// the ending or of a tool call. An ordinary answer is released as soon as its first
    /// words rule the start patterns out.
    pub fn holding(&self) -> bool {
        let quiet = !self.visible && !self.thinking;
        self.states.iter().enumerate().any(|(slot, state)| {
            let armed = self.armed(slot);
            if armed.shadow || armed.detect.on_failure != OnFailure::Retry || self.fired[slot] {
                return false;
            }
            match (state, &armed.detect.check) {
                (RuleState::Start(StartState::Open(_)), _) => true,
                (
                    _,
                    Check::Builtin(
                        Failure::Empty
                        | Failure::Truncated
                        | Failure::ToolNotOffered
                        | Failure::ToolArgsInvalid,
                    ),
                ) => quiet,
                _ => false,
            }
        })
    }

    /// Whether an enforced `retry` or `stop` rule found this answer failing.
    pub fn failed(&self) -> bool {
        self.fired.iter().enumerate().any(|(slot, fired)| {
            let armed = self.armed(slot);
            *fired && !armed.shadow && armed.detect.on_failure != OnFailure::Audit
        })
    }

    /// Findings not yet taken.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// The answer's text so far (up to [`MAX_WATCHED_TEXT`]).
    pub fn answer(&self) -> &str {
        &self.text
    }

    /// The tool calls so far.
    pub fn calls(&self) -> &[tools::Call] {
        &self.calls
    }

    fn armed(&self, slot: usize) -> &Armed {
        &self.selected.detectors.rules[self.selected.chosen[slot]]
    }

    fn fire(&mut self, slot: usize, confidence: f64, at: usize, evidence: String) {
        self.fired[slot] = true;
        let armed = self.armed(slot);
        let rule_id = self.selected.detectors.table.rules[armed.index].id.clone();
        let detector = match armed.detect.check {
            Check::Builtin(failure) => failure.name(),
            Check::Pattern { .. } => "pattern",
        };
        self.findings.push(Finding {
            index: armed.index,
            rule_id,
            detector,
            confidence,
            on_failure: armed.detect.on_failure,
            shadow: armed.shadow,
            at,
            evidence,
        });
    }
}

/// The first match of `regex` in `text` that ends past `searched`, looking back `window`
/// bytes for one that began earlier: (where it ends, what it matched).
fn search(regex: &Regex, text: &str, searched: usize, window: usize) -> Option<(usize, String)> {
    let mut from = searched.saturating_sub(window);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    regex
        .find_iter(&text[from..])
        .find(|m| from + m.end() > searched)
        .map(|m| (from + m.end(), m.as_str().to_string()))
}

/// The start of the answer, as the evidence of a start-anchored match.
fn start_evidence(text: &str) -> String {
    text.trim_start().chars().take(120).collect()
}
