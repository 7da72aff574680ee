//! The `repetition` detector: the same span of tokens repeating many times in a row, the way
//! a small model degenerates into a loop.
//!
//! The text is cut into tokens: words (runs of letters, digits and `_`; a single character
//! counts as data, not a word; a number among the
//! first two tokens of a line counts as "a number", whatever its value, so a numbered list
//! that repeats one item — "1. Use it.", "2. Use it.", "Step 3: Run it again." — repeats),
//! and runs of one punctuation character (`----` is one token); whitespace is skipped, so a
//! loop that varies only its spacing is still a loop. Numbers elsewhere keep their value:
//! `check(1, 4); check(2, 4);` is not a loop. For every period `p` up to [`MAX_PERIOD`] tokens the tracker
//! keeps how many tokens in a row have equalled the token `p` before them; a run of `r` such
//! tokens means the last `r + p` tokens repeat a span of `p` tokens `(r + p) / p` times. That
//! is one comparison per period per token, whatever the length of the answer.
//!
//! It fires for the shortest period whose span has repeated `repeats` times in a row and
//! covers at least [`MIN_LOOP_TOKENS`] tokens, except where code repeats itself on purpose:
//! a span with a comma and no sentence end that reads as code or data (`0x00,`, `false,`,
//! `Token::U8(0),`, `b'_',` — a code mark, a number, or no capitalized word) is an element
//! of a list or table, never a loop, and neither is a multiple of it, nor a span of at most
//! three tokens with a code mark (`UInt<UInt<…`); a span of numbers and
//! punctuation only (`0 0 0`) is data, and so is a word after a backslash (`\x00`); a span of
//! punctuation alone (`}`, `|`) must repeat [`PUNCTUATION_FACTOR`] times as often. These exceptions were found on real code — the sources of every crate this build
//! pulls in (`tests/detect_quality.rs`): no trigger there, nor on the code answers of
//! `tests/fixtures/detect/labelled.jsonl`.

/// Longest span (in tokens) recognized as the unit of a loop.
pub const MAX_PERIOD: usize = 96;
/// `repeats` of a `repetition` rule that does not set it.
pub const DEFAULT_REPEATS: usize = 6;
/// A loop must cover at least this many tokens, however short its span.
pub const MIN_LOOP_TOKENS: usize = 24;
/// A span of punctuation only must repeat this many times `repeats`.
pub const PUNCTUATION_FACTOR: usize = 4;

const RING: usize = MAX_PERIOD + 1;
/// The hash every number has.
const NUMBER: u64 = 0x4e55_4d42_4552_0001 | 1 << 63;

/// Watches one answer's text for loops.
#[derive(Debug, Clone)]
pub struct Repeats {
    /// Hashes of the last [`RING`] tokens, by token number modulo [`RING`].
    ring: [u64; RING],
    /// `runs[p]`: tokens in a row equal to the token `p` before them.
    runs: [u32; RING],
    /// Tokens seen.
    count: usize,
    /// Token numbers (+1; 0: none yet) of the last token with a letter, the last comma and
    /// the last number.
    last_word: usize,
    last_comma: usize,
    last_number: usize,
    /// … of the last sentence end (`.` `!` `?` `;`), code mark (`::`, brackets, quotes,
    /// `=`), and word starting with a capital.
    last_end: usize,
    last_code: usize,
    last_capital: usize,
    /// The last token was a backslash: the word after it is an escape (`\x00`, `\n`), data.
    escaped: bool,
    /// A word cut by the end of the text so far.
    word: String,
    /// A run of one punctuation character not yet ended: the character and its length.
    punct: Option<(char, u32)>,
    /// Bytes of text consumed before the current piece.
    consumed: usize,
    /// Tokens since the last line break.
    on_line: usize,
}

/// A loop found: its span in tokens and how many times it repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loop {
    pub period: usize,
    pub repeats: usize,
    /// Bytes of the answer up to the token that completed the loop.
    pub at: usize,
}

impl Default for Repeats {
    fn default() -> Self {
        Repeats {
            ring: [0; RING],
            runs: [0; RING],
            count: 0,
            last_word: 0,
            last_comma: 0,
            last_number: 0,
            last_end: 0,
            last_code: 0,
            last_capital: 0,
            escaped: false,
            word: String::new(),
            punct: None,
            consumed: 0,
            on_line: 0,
        }
    }
}

/// What kind of token a hash stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Number,
    Comma,
    /// A single `.`, `!`, `?` or `;`: the end of a sentence or statement.
    End,
    /// `::`, a bracket, a quote, `=`, `<`, `>`: code or data.
    Code,
    Punctuation,
}

impl Repeats {
    /// Feeds more of the answer; returns the first loop that repeated `repeats` times.
    pub fn push(&mut self, text: &str, repeats: usize) -> Option<Loop> {
        let mut found = None;
        for (i, c) in text.char_indices() {
            let at = self.consumed + i;
            if is_word_char(c) {
                found = found.or(self.end_punct(repeats, at));
                self.word.push(c);
            } else if c.is_whitespace() {
                found = found.or(self.end_word(repeats, at));
                found = found.or(self.end_punct(repeats, at));
                if c == '\n' {
                    self.on_line = 0;
                }
            } else {
                found = found.or(self.end_word(repeats, at));
                match &mut self.punct {
                    Some((same, n)) if *same == c => *n += 1,
                    _ => {
                        found = found.or(self.end_punct(repeats, at));
                        self.punct = Some((c, 1));
                    }
                }
            }
        }
        self.consumed += text.len();
        found
    }

    /// The answer ended: a last word or run still open is a token.
    pub fn finish(&mut self, repeats: usize) -> Option<Loop> {
        let at = self.consumed;
        let word = self.end_word(repeats, at);
        word.or(self.end_punct(repeats, at))
    }

    fn end_word(&mut self, repeats: usize, at: usize) -> Option<Loop> {
        if self.word.is_empty() {
            return None;
        }
        let word = std::mem::take(&mut self.word);
        let digits = word.bytes().all(|b| b.is_ascii_digit());
        let (hash, class) = if digits && self.on_line < 2 {
            (NUMBER, Class::Number)
        } else if word.chars().nth(1).is_some()
            && word.chars().any(char::is_alphabetic)
            && !self.escaped
        {
            // "Yes" and "JSON" are capitalized words; `U` and `UU` (constant names) are not.
            let capital = word.starts_with(char::is_uppercase)
                && (word.chars().any(char::is_lowercase) || word.len() >= 4);
            if capital {
                self.last_capital = self.count + 1;
            }
            (hash_word(&word), Class::Word)
        } else {
            (hash_word(&word), Class::Number)
        };
        self.token(hash, class, repeats, at)
    }

    fn end_punct(&mut self, repeats: usize, at: usize) -> Option<Loop> {
        let (c, n) = self.punct.take()?;
        let class = match (c, n) {
            (',', _) => Class::Comma,
            ('.' | '!' | '?' | ';' | '。' | '！' | '？', 1) => Class::End,
            (':', 2..) | ('(' | ')' | '[' | ']' | '{' | '}' | '\'' | '"' | '=' | '<' | '>', _) => {
                Class::Code
            }
            _ => Class::Punctuation,
        };
        let hash = u64::from(c) | u64::from(n) << 32;
        self.token(hash, class, repeats, at)
    }

    fn token(&mut self, hash: u64, class: Class, repeats: usize, at: usize) -> Option<Loop> {
        self.on_line += 1;
        self.escaped = class == Class::Punctuation && hash == u64::from('\\') | 1 << 32;
        let n = self.count;
        let slot = n % RING;
        self.ring[slot] = hash;
        self.count += 1;
        match class {
            Class::Word => self.last_word = self.count,
            Class::Number => self.last_number = self.count,
            Class::Comma => self.last_comma = self.count,
            Class::End => self.last_end = self.count,
            Class::Code => self.last_code = self.count,
            Class::Punctuation => {}
        }
        let mut found = None;
        // The periods whose spans are data (list elements, numbers): a multiple of one of
        // them repeats only because it does.
        let mut data_periods = [0usize; 4];
        let mut data_count = 0;
        for p in 1..=MAX_PERIOD.min(n) {
            let before = if slot >= p { slot - p } else { slot + RING - p };
            if self.ring[before] == hash {
                self.runs[p] += 1;
            } else {
                self.runs[p] = 0;
                continue;
            }
            if found.is_some() {
                continue;
            }
            let covered = self.runs[p] as usize + p;
            let times = covered / p;
            if times < 2 {
                continue;
            }
            if data_periods[..data_count]
                .iter()
                .any(|&q| p % q == 0 && self.runs[q] as usize + q >= covered)
            {
                continue;
            }
            let within = |last: usize| last > 0 && self.count - last < p;
            // A span with a comma but no sentence end is an element of a list or table when
            // it reads as code (`Token::U8(0),`, `b'_',`) or has no capitalized word
            // (`false,`, `0x00,`); "Yes, Yes, …" and "JSON, YAML, …" are loops.
            let data = if within(self.last_word) {
                let list = within(self.last_comma)
                    && (within(self.last_code)
                        || within(self.last_number)
                        || !within(self.last_capital));
                // `UInt<UInt<UInt<…` (generated type nesting): a short span with a code mark.
                let nesting = p <= 3 && within(self.last_code);
                (list || nesting) && !within(self.last_end)
            } else {
                within(self.last_number)
            };
            if data {
                if data_count < data_periods.len() {
                    data_periods[data_count] = p;
                    data_count += 1;
                }
                continue;
            }
            let looped = if within(self.last_word) {
                times >= repeats && covered >= MIN_LOOP_TOKENS
            } else {
                times >= repeats * PUNCTUATION_FACTOR && covered >= MIN_LOOP_TOKENS
            };
            if looped {
                found = Some(Loop {
                    period: p,
                    repeats: times,
                    at,
                });
            }
        }
        found
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// FNV-1a; the high bit marks a word, so no word hashes like a punctuation run.
fn hash_word(word: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in word.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash | 1 << 63
}
