//! Finding path references in model text, and cleaning one up before it is looked up.
//!
//! A *token* is a maximal run of path characters (letters and digits of any script, `_ - . ~ :`,
//! slashes and their look-alikes, zero-width characters; a no-break space only next to a
//! slash), starting where the previous character is not one. Quotes, backticks, brackets,
//! parentheses, `=`, `<`, `>` and whitespace end a token, so `` `src/x.rs` ``, `"src/x.rs"`,
//! `[text](src/x.rs)` and `--file=src/x.rs` all yield `src/x.rs`. Characters that only globs,
//! regexes, e-mail addresses and the like use (`* ? [ ] { } ^ $ | @ +`) stay inside the token
//! and make it "not a path" as a whole.
//!
//! The [`core`] of a token drops trailing sentence punctuation and a `:line` / `:line:col`
//! suffix, which stays in the text as written.

/// The longest token considered a path, in bytes; longer runs are never touched.
pub const MAX_TOKEN: usize = 512;

/// Bytes of text before a token read for create intent ("create a new file `x`").
pub const LOOKBACK: usize = 120;

fn is_slash(c: char) -> bool {
    matches!(
        c,
        '/' | '\\' | '\u{FF0F}' | '\u{2215}' | '\u{2044}' | '\u{29F8}' | '\u{FF3C}'
    )
}

fn is_zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

fn is_no_break_space(c: char) -> bool {
    matches!(c, '\u{00A0}' | '\u{202F}')
}

/// Characters that keep a token together but mean it is not a plain path.
fn is_poison(c: char) -> bool {
    matches!(
        c,
        '*' | '?' | '[' | ']' | '{' | '}' | '^' | '$' | '|' | '@' | '+'
    )
}

/// A path character regardless of its neighbours.
fn is_plain(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(c, '_' | '-' | '.' | '~' | ':')
        || is_slash(c)
        || is_zero_width(c)
        || is_poison(c)
        || c.is_ascii_digit()
}

/// Whether the char at byte `i` is part of a token; `None` when that depends on a character
/// not seen yet (a no-break space at the very end of unfinished text).
fn path_char_at(text: &str, i: usize, eof: bool) -> Option<bool> {
    let c = text[i..].chars().next()?;
    if is_plain(c) {
        return Some(true);
    }
    if !is_no_break_space(c) {
        return Some(false);
    }
    let before = text[..i].chars().next_back().is_some_and(is_slash);
    if before {
        return Some(true);
    }
    match text[i + c.len_utf8()..].chars().next() {
        Some(next) => Some(is_slash(next)),
        None if eof => Some(false),
        None => None,
    }
}

/// Whether a token can start at `at` (a path char whose predecessor is not one).
pub fn is_token_start(text: &str, at: usize) -> bool {
    let bytes = text.as_bytes();
    let Some(&here) = bytes.get(at) else {
        return false;
    };
    // ASCII fast path: most text is ASCII, and most positions are inside a word or on a
    // space.
    if here.is_ascii() {
        if !is_plain(here as char) {
            return false;
        }
        match at.checked_sub(1).map(|p| bytes[p]) {
            None => return true,
            Some(prev) if prev.is_ascii() => return !is_plain(prev as char),
            Some(_) => {}
        }
    }
    if !text.is_char_boundary(at) {
        return false;
    }
    let Some(c) = text[at..].chars().next() else {
        return false;
    };
    if !is_plain(c) || is_zero_width(c) {
        return false;
    }
    match text[..at].char_indices().next_back() {
        None => true,
        Some((prev, _)) => path_char_at(text, prev, true) == Some(false),
    }
}

/// Where the token starting at `start` ends: `None` while it may still grow (it reaches the
/// end of unfinished text, or its last char depends on the next one).
pub fn token_end(text: &str, start: usize, eof: bool) -> Option<usize> {
    let mut i = start;
    while i < text.len() {
        match path_char_at(text, i, eof) {
            Some(true) => {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
            Some(false) => return Some(i),
            None => return None,
        }
    }
    if eof {
        Some(i)
    } else {
        None
    }
}

/// The next token starting at or after `from`: `(start, end)`, with `end == None` when the
/// token is not finished yet.
pub fn next_token(text: &str, from: usize, eof: bool) -> Option<(usize, Option<usize>)> {
    let mut at = from;
    while at < text.len() {
        if is_token_start(text, at) {
            return Some((at, token_end(text, at, eof)));
        }
        at += text[at..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// Whether a token holds a separator, a dot or a look-alike slash (the cheap pre-filter:
/// plain words never reach the index).
pub fn has_path_mark(token: &str) -> bool {
    token.bytes().any(|b| matches!(b, b'/' | b'\\' | b'.'))
        || (!token.is_ascii() && token.chars().any(is_slash))
}

/// The quick way through plain prose (see [`crate::patch::matcher::Matcher::quick`]): from
/// `from`, which must not be inside a token, words of ASCII letters, digits, `_` and `-` —
/// with sentence punctuation (`.` `:` `?`) at their end only — between spaces, newlines,
/// tabs, `,`, `;`, `!` and `)`. Returns where the last, unfinished token starts (or the end
/// of the text when none is open): nothing before it can be a path reference, since an
/// unquoted token whose core has no separator or dot is never one. `None` as soon as the text
/// has anything else (a quote, a slash, a dot inside a word, non-ASCII, …).
///
/// `text[from..checked]` has passed an earlier call that answered `from` (the open token
/// then, grown since): only the text after it is read. `checked <= from` reads it all.
#[inline]
pub fn plain_run(text: &str, from: usize, checked: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    if from > bytes.len() || from > 0 && PLAIN[bytes[from - 1] as usize] != SEPARATOR {
        return None;
    }
    let scan_from = checked.clamp(from, bytes.len());
    let mut prev = match scan_from {
        0 => SEPARATOR,
        _ => PLAIN[bytes[scan_from - 1] as usize],
    };
    let rest = &bytes[scan_from..];
    // One pass without branches on the text: anything else, a word after sentence
    // punctuation (`e.g`, `main.rs`, `a:b`) or punctuation opening a token (`.rs`) is a bad
    // pair of classes. The open token starts after the last separator (`text[from..checked]`
    // has none).
    let mut bad = false;
    let mut start = from;
    for (i, &b) in rest.iter().enumerate() {
        let class = PLAIN[b as usize];
        bad |= BAD_PAIR[(prev << 2 | class) as usize];
        start = if class == SEPARATOR {
            scan_from + i + 1
        } else {
            start
        };
        prev = class;
    }
    (!bad && text.len() - start <= MAX_TOKEN).then_some(start)
}

/// Pairs of [`PLAIN`] classes (`previous << 2 | next`) that end the quick way.
static BAD_PAIR: [bool; 16] = {
    let mut table = [false; 16];
    let mut pair = 0;
    while pair < 16 {
        let (prev, next) = ((pair >> 2) as u8, (pair & 3) as u8);
        table[pair] = next == OTHER
            || prev == OTHER
            || (prev == TRAIL && next == WORD)
            || (prev == SEPARATOR && next == TRAIL);
        pair += 1;
    }
    table
};

const OTHER: u8 = 0;
const WORD: u8 = 1;
const TRAIL: u8 = 2;
const SEPARATOR: u8 = 3;

/// Byte classes of [`plain_run`].
static PLAIN: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
            WORD
        } else if matches!(c, b'.' | b':' | b'?') {
            TRAIL
        } else if matches!(c, b' ' | b'\n' | b'\r' | b'\t' | b',' | b';' | b'!' | b')') {
            SEPARATOR
        } else {
            OTHER
        };
        b += 1;
    }
    table
};

/// The part of a token that is looked up: `token[start..end]`, and the end of the
/// `:line[:col]` suffix after it (kept as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Core {
    pub start: usize,
    pub end: usize,
}

/// The core of `token` (relative offsets), or `None` when the token cannot be a path.
pub fn core(token: &str) -> Option<Core> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    let trail = |c: char| matches!(c, '.' | ',' | ':' | ';' | '!' | '?' | '*') || is_zero_width(c);
    let lead = |c: char| matches!(c, ':' | '*') || is_zero_width(c);
    let trimmed_end = token.trim_end_matches(trail);
    let start = trimmed_end.len() - trimmed_end.trim_start_matches(lead).len();
    let mut end = trimmed_end.len();
    // `:line` or `:line:col`.
    for _ in 0..2 {
        let body = &token[start..end];
        let digits = body.len() - body.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && body[..body.len() - digits].ends_with(':') {
            end -= digits + 1;
        } else {
            break;
        }
    }
    let core = &token[start..end];
    if core.is_empty()
        || core.chars().any(is_poison)
        || core.contains("://")
        || core.contains("::")
        || core.to_ascii_lowercase().starts_with("www.")
    {
        return None;
    }
    Some(Core { start, end })
}

/// What cleaning a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cleaned {
    pub separators: bool,
    pub unicode: bool,
}

/// `raw` with look-alike characters replaced, zero-width and no-break spaces removed,
/// backslashes turned into `/` and repeated slashes collapsed.
pub fn clean(raw: &str) -> (String, Cleaned) {
    let mut out = String::with_capacity(raw.len());
    let mut what = Cleaned::default();
    for c in raw.chars() {
        let mapped = if c == '\\' {
            what.separators = true;
            '/'
        } else if is_slash(c) && c != '/' {
            what.unicode = true;
            '/'
        } else if is_zero_width(c) || is_no_break_space(c) {
            what.unicode = true;
            continue;
        } else if let Some(latin) = latin_look_alike(c) {
            what.unicode = true;
            latin
        } else {
            c
        };
        if mapped == '/' && out.ends_with('/') {
            what.separators = true;
            continue;
        }
        out.push(mapped);
    }
    (out, what)
}

/// The Latin letter a Cyrillic, Greek or fullwidth character is mistaken for.
fn latin_look_alike(c: char) -> Option<char> {
    if ('\u{FF01}'..='\u{FF5E}').contains(&c) {
        return char::from_u32(c as u32 - 0xFEE0);
    }
    Some(match c {
        'а' => 'a',
        'е' => 'e',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'х' => 'x',
        'у' => 'y',
        'і' => 'i',
        'ѕ' => 's',
        'ј' => 'j',
        'ԁ' => 'd',
        'һ' => 'h',
        'ӏ' => 'l',
        'А' => 'A',
        'В' => 'B',
        'Е' => 'E',
        'К' => 'K',
        'М' => 'M',
        'Н' => 'H',
        'О' => 'O',
        'Р' => 'P',
        'С' => 'C',
        'Т' => 'T',
        'Х' => 'X',
        'І' => 'I',
        'Ѕ' => 'S',
        'ο' => 'o',
        'α' => 'a',
        'ε' => 'e',
        'ι' => 'i',
        'ρ' => 'p',
        'ν' => 'v',
        'κ' => 'k',
        'τ' => 't',
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        _ => return None,
    })
}

/// Whether the words before a path (same sentence, at most [`LOOKBACK`] bytes) say the
/// model means to create it.
pub fn create_intent(before: &str) -> bool {
    let mut from = before.len().saturating_sub(LOOKBACK);
    while !before.is_char_boundary(from) {
        from += 1;
    }
    let mut window = &before[from..];
    if let Some(i) = window.rfind(['\n', '\r']) {
        window = &window[i + 1..];
    }
    for end in [". ", "! ", "? "] {
        if let Some(i) = window.rfind(end) {
            window = &window[i + end.len()..];
        }
    }
    let lower = window.to_lowercase();
    const WORDS: &[&str] = &[
        "creat",
        "new file",
        "add file",
        "add a file",
        "add a new",
        "adding a new",
        "new module",
        "new test",
        "touch ",
        "mkdir ",
        "save it as",
        "save as",
        "write it to",
        "write a new",
        "generate a new",
        "scaffold",
    ];
    WORDS.iter().any(|w| lower.contains(w))
}

/// Bytes of text after a path read for create intent ("`x` (new file)").
pub const LOOKAHEAD: usize = 80;

/// The words after a path that belong to its sentence (at most [`LOOKAHEAD`] bytes), and
/// whether that is all of them (`false`: more text may still come).
pub fn sentence_after(after: &str, eof: bool) -> (&str, bool) {
    let mut end = after.len().min(LOOKAHEAD);
    while !after.is_char_boundary(end) {
        end -= 1;
    }
    let window = &after[..end];
    let stop = [". ", "! ", "? ", ".\n", "\n", "\r"]
        .iter()
        .filter_map(|s| window.find(s))
        .min();
    match stop {
        Some(i) => (&window[..i], true),
        None => (window, eof || after.len() >= LOOKAHEAD),
    }
}

/// Whether the words after a path say it is new ("as a new file", "(new)").
pub fn create_intent_after(after: &str) -> bool {
    let lower = after.to_lowercase();
    const WORDS: &[&str] = &[
        "new file",
        "(new)",
        "as a new",
        "will be created",
        "to be created",
        "doesn't exist yet",
        "does not exist yet",
        "not exist yet",
        "from scratch",
    ];
    WORDS.iter().any(|w| lower.contains(w))
}

/// Whether a token is wrapped in backticks or quotes (the char before `start` and the one at
/// `end`), or is a markdown link target (`](` before, `)` after).
pub fn quoted(text: &str, start: usize, end: usize) -> bool {
    const QUOTES: [char; 7] = ['`', '"', '\'', '“', '”', '‘', '’'];
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    if before.is_some_and(|c| QUOTES.contains(&c)) && after.is_some_and(|c| QUOTES.contains(&c)) {
        return true;
    }
    text[..start].ends_with("](") && after == Some(')')
}

/// The set of characters in `lower` as bits (`a`–`z`, `0`–`9`, the rest hashed into the
/// remaining 28): `k` edits change at most `k` members each way, so two names whose masks
/// differ by more than `k` bits either way are more than `k` edits apart ([`near_masks`]).
pub fn char_mask(lower: &str) -> u64 {
    let mut mask = 0u64;
    for c in lower.chars() {
        let bit = match c {
            'a'..='z' => c as u32 - 'a' as u32,
            '0'..='9' => 26 + c as u32 - '0' as u32,
            _ => 36 + (c as u32).wrapping_mul(2_654_435_761) % 28,
        };
        mask |= 1 << bit;
    }
    mask
}

/// Whether names with these [`char_mask`]s can be within `max` edits.
pub fn near_masks(a: u64, b: u64, max: usize) -> bool {
    (a & !b).count_ones() as usize <= max && (b & !a).count_ones() as usize <= max
}

/// Longest ASCII name [`distance_ascii`] handles with rows on the stack.
const ASCII_MAX: usize = 64;

/// [`distance`] for ASCII text, `b` shorter than [`ASCII_MAX`]: no allocation.
fn distance_ascii(a: &[u8], b: &[u8], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    // Rows i-2, i-1 and i, in turn, of one byte per cell (`max` is small). Only the band
    // |i - j| <= max matters (a cell outside it is more than `max` edits away); cells just
    // outside the band hold `max + 1`.
    let far = u8::try_from(max + 1).unwrap_or(u8::MAX);
    let width = b.len() + 1;
    let mut rows = [[far; ASCII_MAX + 1]; 3];
    for (j, cell) in rows[0].iter_mut().enumerate().take(b.len().min(max) + 1) {
        *cell = j as u8;
    }
    for i in 1..=a.len() {
        let [r0, r1, r2] = &mut rows;
        let (two_back, prev, row) = match i % 3 {
            1 => (&r2[..width], &r0[..width], &mut r1[..width]),
            2 => (&r0[..width], &r1[..width], &mut r2[..width]),
            _ => (&r1[..width], &r2[..width], &mut r0[..width]),
        };
        let from = i.saturating_sub(max).max(1);
        let to = (i + max).min(b.len());
        row[0] = if i <= max { i as u8 } else { far };
        if from > 1 {
            row[from - 1] = far;
        }
        if to < b.len() {
            row[to + 1] = far;
        }
        let mut best = row[0];
        for j in from..=to {
            let cost = u8::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j - 1] + cost).min(prev[j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(two_back[j - 2] + 1);
            }
            let d = d.min(far);
            row[j] = d;
            best = best.min(d);
        }
        if usize::from(best) > max {
            return None;
        }
    }
    let d = usize::from(rows[a.len() % 3][b.len()]);
    (d <= max).then_some(d)
}

/// [`distance`] up to one edit, for ASCII: past the common prefix, one substitution,
/// swap, insertion or deletion must leave the rest equal.
fn within_one_ascii(a: &[u8], b: &[u8], max: usize) -> Option<usize> {
    if a == b {
        return Some(0);
    }
    if max == 0 || a.len().abs_diff(b.len()) > 1 {
        return None;
    }
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[same..], &b[same..]);
    let one = match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Equal => {
            a[1..] == b[1..] || (a.len() >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..])
        }
        std::cmp::Ordering::Greater => a[1..] == *b,
        std::cmp::Ordering::Less => *a == b[1..],
    };
    one.then_some(1)
}

/// Edit distance between `a` and `b` (by char: insertions, deletions, substitutions and
/// swaps of two neighbours each count one — optimal string alignment), or `None` when above
/// `max`.
pub fn distance(a: &str, b: &str, max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max * 4 {
        return None; // even in 4-byte chars, too many to insert
    }
    if max <= 1 && a.is_ascii() && b.is_ascii() {
        return within_one_ascii(a.as_bytes(), b.as_bytes(), max);
    }
    if a.is_ascii() && b.is_ascii() && b.len() < ASCII_MAX && max < 200 {
        return distance_ascii(a.as_bytes(), b.as_bytes(), max);
    }
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let width = b.len() + 1;
    // Three rows: i-2, i-1, i.
    let mut rows = vec![0usize; 3 * width];
    for (j, cell) in rows[width..2 * width].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        let (two_back, rest) = rows.split_at_mut(width);
        let (prev, row) = rest.split_at_mut(width);
        row[0] = i;
        let mut best = row[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j - 1] + cost).min(prev[j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(two_back[j - 2] + 1);
            }
            row[j] = d;
            best = best.min(d);
        }
        if best > max {
            return None;
        }
        rows.rotate_left(width);
    }
    let last = rows[width..2 * width][b.len()];
    (last <= max).then_some(last)
}
