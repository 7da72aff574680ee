//! The phrase lists of the `refusal` and `abandonment` detectors, read from `phrases.toml`
//! (compiled in) and turned into automata once per process.

use std::sync::OnceLock;

use regex::Regex;
use regex_automata::dfa::{dense, Automaton};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::Anchored;

const PHRASES: &str = include_str!("phrases.toml");

#[derive(serde::Deserialize)]
struct File {
    refusal: Refusal,
    abandonment: Abandonment,
}

#[derive(serde::Deserialize)]
struct Refusal {
    confidence: f64,
    start: Vec<String>,
    #[serde(default)]
    start_patterns: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Abandonment {
    confidence: f64,
    anywhere: Vec<String>,
    #[serde(default)]
    anywhere_patterns: Vec<String>,
}

/// Bytes searched behind new text for an abandonment phrase that began earlier: longer than
/// any phrase (their repetitions are bounded).
const ABANDONMENT_WINDOW: usize = 320;

/// The compiled phrase lists.
pub struct Phrases {
    pub refusal: StartPattern,
    pub refusal_confidence: f64,
    pub abandonment: Regex,
    pub abandonment_confidence: f64,
    /// The window searched behind new text.
    pub abandonment_window: usize,
}

/// The built-in phrases, compiled on first use (an error only if `phrases.toml` is broken,
/// which a unit test rules out).
pub fn phrases() -> Result<&'static Phrases, String> {
    static PHRASES_COMPILED: OnceLock<Result<Phrases, String>> = OnceLock::new();
    PHRASES_COMPILED
        .get_or_init(compile)
        .as_ref()
        .map_err(Clone::clone)
}

fn compile() -> Result<Phrases, String> {
    let file: File =
        toml::from_str(PHRASES).map_err(|e| format!("src/detect/phrases.toml: {e}"))?;
    let refusal = join(
        alternation(&file.refusal.start),
        &file.refusal.start_patterns,
    );
    let abandonment = join(
        alternation(&file.abandonment.anywhere),
        &file.abandonment.anywhere_patterns,
    );
    Ok(Phrases {
        refusal: StartPattern::new(&refusal, true)?,
        refusal_confidence: file.refusal.confidence,
        abandonment: regex::RegexBuilder::new(&format!(r"(?i)\b(?:{abandonment})"))
            .build()
            .map_err(|e| format!("the abandonment phrases: {e}"))?,
        abandonment_confidence: file.abandonment.confidence,
        abandonment_window: ABANDONMENT_WINDOW,
    })
}

/// Literal alternatives and regex ones, as one alternation.
fn join(literal: String, patterns: &[String]) -> String {
    std::iter::once(literal)
        .chain(patterns.iter().map(|p| format!("(?:{p})")))
        .collect::<Vec<_>>()
        .join("|")
}

/// `a|b|…` of literal phrases: `'` also matches `’` or nothing, a space any whitespace run.
fn alternation(phrases: &[String]) -> String {
    phrases
        .iter()
        .map(|phrase| {
            phrase
                .split(' ')
                .map(|word| {
                    word.split('\'')
                        .map(regex::escape)
                        .collect::<Vec<_>>()
                        .join("['’]?")
                })
                .collect::<Vec<_>>()
                .join(r"\s+")
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// A pattern that must match at the start of the answer (after whitespace), run as an
/// anchored DFA one piece of text at a time, so each request keeps only a state id and knows
/// at every moment whether more text could still make it match.
#[derive(Debug, Clone)]
pub struct StartPattern {
    dfa: dense::DFA<Vec<u32>>,
}

/// Where a start pattern stands after the text so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartState {
    /// More text could still make it match (or not).
    Open(StateID),
    Matched,
    /// It cannot match any more.
    Failed,
}

/// The DFA size a custom start pattern may take.
const MAX_DFA_BYTES: usize = 8 << 20;

impl StartPattern {
    /// `\A\s*(?:pattern)`, compiled whole.
    pub fn new(pattern: &str, case_insensitive: bool) -> Result<Self, String> {
        let anchored = format!(r"\s*(?:{pattern})");
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(regex_automata::dfa::StartKind::Anchored)
                    .dfa_size_limit(Some(MAX_DFA_BYTES))
                    .determinize_size_limit(Some(MAX_DFA_BYTES)),
            )
            .syntax(regex_automata::util::syntax::Config::new().case_insensitive(case_insensitive))
            .build(&anchored)
            .map_err(|e| format!("cannot run as a start-of-answer detector: {e}"))?;
        Ok(StartPattern { dfa })
    }

    /// The state before any text.
    pub fn start(&self) -> StartState {
        let config = start::Config::new().anchored(Anchored::Yes);
        match self.dfa.start_state(&config) {
            Ok(state) => self.classify(state),
            Err(_) => StartState::Failed,
        }
    }

    /// Moves `state` over `text`.
    pub fn advance(&self, state: StartState, text: &str) -> StartState {
        let StartState::Open(mut id) = state else {
            return state;
        };
        for &byte in text.as_bytes() {
            id = self.dfa.next_state(id, byte);
            match self.classify(id) {
                StartState::Open(next) => id = next,
                decided => return decided,
            }
        }
        StartState::Open(id)
    }

    /// The answer ended: does what was seen match?
    pub fn finish(&self, state: StartState) -> bool {
        match state {
            StartState::Matched => true,
            StartState::Failed => false,
            StartState::Open(id) => {
                let id = self.dfa.next_eoi_state(id);
                self.dfa.is_match_state(id)
            }
        }
    }

    fn classify(&self, id: StateID) -> StartState {
        if self.dfa.is_match_state(id) {
            StartState::Matched
        } else if self.dfa.is_dead_state(id) || self.dfa.is_quit_state(id) {
            StartState::Failed
        } else {
            StartState::Open(id)
        }
    }
}
