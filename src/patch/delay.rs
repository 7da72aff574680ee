//! Lines and events held back whole while the pipeline holds their text.
//!
//! A rule that holds text (the start of a possible path, a partial match) would otherwise make
//! the re-framer rewrite every line: the line whose text is held goes out with less text, the
//! next one with more. Instead the line itself waits here, and leaves *as it came* once the
//! session has released its text unchanged. Only when the released text differs (a rule
//! rewrote something) are the waiting lines rewritten: the first carries everything released
//! so far, the others go out with empty text.
//!
//! The invariant: the text the client has been sent, followed by [`Delay`]'s `owed` text,
//! is exactly the text the session has released. A unit goes as it came when `owed` starts
//! with its text.

use std::borrow::Cow;
use std::collections::VecDeque;

/// One held NDJSON line or SSE event: its bytes as they came, and its text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unit {
    pub bytes: Vec<u8>,
    pub text: String,
}

/// The units waiting, and the text the session released that the client has not had yet.
///
/// The units' bytes and texts sit back to back in two buffers (consumed from the front,
/// compacted now and then), so a unit that waits costs two copies and no allocation.
///
/// The owed text is `texts[head.1..head.1 + matched]` followed by `owed[owed_from..]`: while
/// the session releases the units' own text (no rule changed it, the usual case) it is only
/// counted in `matched`, neither copied nor compared again. `matched > 0` only while `owed`
/// is empty.
#[derive(Debug, Default)]
pub struct Delay {
    bytes: Vec<u8>,
    texts: String,
    /// Where each waiting unit ends in `bytes` and in `texts`.
    ends: VecDeque<(usize, usize)>,
    /// Where the first waiting unit starts in `bytes` and in `texts`.
    head: (usize, usize),
    /// Bytes of owed text that are the waiting units' own text, from their start.
    matched: usize,
    owed: String,
    /// Where the owed text starts in `owed`.
    owed_from: usize,
}

/// `a` is where `b` begins (`a.len() <= b.len()`). Model text comes a few bytes at a time:
/// compared in place rather than through a `memcmp` call.
#[inline]
fn prefix_of(a: &[u8], b: &[u8]) -> bool {
    a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Consumed bytes a buffer may keep at its front before it is compacted.
const COMPACT_AT: usize = 4096;

impl Delay {
    /// True when nothing waits and nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty() && self.matched == 0 && self.owed_from == self.owed.len()
    }

    /// The owed text (copied together when part of it is only counted).
    fn owed_text(&self) -> Cow<'_, str> {
        let explicit = &self.owed[self.owed_from..];
        match self.matched {
            0 => Cow::Borrowed(explicit),
            n => Cow::Owned(format!(
                "{}{explicit}",
                &self.texts[self.head.1..self.head.1 + n]
            )),
        }
    }

    /// Bytes of the units waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.len() - self.head.0
    }

    /// Bytes of text released but not sent yet.
    pub fn owed_bytes(&self) -> usize {
        self.matched + self.owed.len() - self.owed_from
    }

    /// Characters of text released but not sent yet.
    pub fn owed_chars(&self) -> usize {
        self.owed_text().chars().count()
    }

    /// Queues a unit whose `text` the session was just given, with what the session
    /// `released` in return.
    #[inline]
    pub fn push(&mut self, bytes: &[u8], text: &str, released: &str) {
        self.bytes.extend_from_slice(bytes);
        self.texts.push_str(text);
        self.ends.push_back((self.bytes.len(), self.texts.len()));
        self.owe(released);
    }

    /// Adds text the session released (with a new unit, or without one at its end).
    #[inline]
    pub fn owe(&mut self, released: &str) {
        if self.owed_from == self.owed.len() {
            let from = self.head.1 + self.matched;
            if prefix_of(released.as_bytes(), &self.texts.as_bytes()[from..]) {
                self.matched += released.len();
                return;
            }
            // A rule changed the text: the owed text is kept as text from here on.
            self.owed.clear();
            self.owed_from = 0;
            self.owed.push_str(&self.texts[self.head.1..from]);
            self.matched = 0;
        }
        self.owed.push_str(released);
    }

    /// Sends the first unit as it came, when the released text begins with its text: its
    /// bytes are appended to `out`. Returns where they start in `out`.
    #[cfg(test)]
    pub fn pop_unchanged(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        let &(bytes_end, text_end) = self.ends.front()?;
        if !self.covers_front(text_end) {
            return None;
        }
        let at = out.len();
        self.pop_front(bytes_end, text_end, out);
        self.tidy();
        Some(at)
    }

    /// True when the owed text begins with the first unit's text (ending at `text_end`).
    #[inline]
    fn covers_front(&self, text_end: usize) -> bool {
        let len = text_end - self.head.1;
        self.matched >= len
            || self.matched == 0
                && prefix_of(
                    &self.texts.as_bytes()[self.head.1..text_end],
                    &self.owed.as_bytes()[self.owed_from..],
                )
    }

    /// Sends the first unit, whose text the owed text covers.
    #[inline]
    fn pop_front(&mut self, bytes_end: usize, text_end: usize, out: &mut Vec<u8>) {
        let len = text_end - self.head.1;
        if self.matched >= len {
            self.matched -= len;
        } else {
            self.owed_from += len;
        }
        self.ends.pop_front();
        out.extend_from_slice(&self.bytes[self.head.0..bytes_end]);
        self.head = (bytes_end, text_end);
    }

    /// Sends every unit that can go as it came (as [`Delay::pop_unchanged`] does, in one
    /// pass). Returns where the last one sent starts in `out`, and whether the first unit
    /// left waiting can no longer go as it came ([`Delay::diverged`]).
    pub fn release(&mut self, out: &mut Vec<u8>) -> (Option<usize>, bool) {
        let mut last = None;
        let mut diverged = false;
        while let Some(&(bytes_end, text_end)) = self.ends.front() {
            if !self.covers_front(text_end) {
                // Counted text is the unit's own beginning: it can still go as it came.
                // (`owed` is then empty, so the compare would say the same; the check skips it
                // on the common path, which measured ~2% per chunk on path_fix's prose case.)
                diverged = self.matched == 0
                    && !prefix_of(
                        &self.owed.as_bytes()[self.owed_from..],
                        &self.texts.as_bytes()[self.head.1..text_end],
                    );
                break;
            }
            last = Some(out.len());
            self.pop_front(bytes_end, text_end, out);
        }
        if last.is_some() {
            self.tidy();
        }
        (last, diverged)
    }

    /// Drops consumed text and bytes: all of them once nothing waits, else now and then.
    #[inline]
    fn tidy(&mut self) {
        if !self.ends.is_empty() && self.head.0 < COMPACT_AT && self.owed.is_empty() {
            return;
        }
        self.compact();
    }

    fn compact(&mut self) {
        if self.ends.is_empty() {
            self.bytes.clear();
            self.texts.clear();
            self.head = (0, 0);
        } else if self.head.0 >= COMPACT_AT {
            let (b, t) = self.head;
            self.bytes.drain(..b);
            self.texts.drain(..t);
            for end in &mut self.ends {
                *end = (end.0 - b, end.1 - t);
            }
            self.head = (0, 0);
        }
        if self.owed_from == self.owed.len() {
            self.owed.clear();
            self.owed_from = 0;
        } else if self.owed_from >= COMPACT_AT {
            self.owed.drain(..self.owed_from);
            self.owed_from = 0;
        }
    }

    /// True when the first unit can no longer go as it came: the released text parts from
    /// its text (a rule rewrote it).
    #[cfg(test)]
    pub fn diverged(&self) -> bool {
        let owed = self.owed_text();
        self.ends.front().is_some_and(|&(_, text_end)| {
            let text = &self.texts[self.head.1..text_end];
            !text.starts_with(&*owed) && !owed.starts_with(text)
        })
    }

    /// True when the released text is exactly the text of the units waiting (all of them
    /// can go as they came, and nothing else is owed).
    pub fn in_step(&self) -> bool {
        let waiting = self.texts.len() - self.head.1;
        if self.owed_from == self.owed.len() {
            return self.matched == waiting;
        }
        *self.owed_text() == self.texts[self.head.1..]
    }

    /// Takes every waiting unit and the owed text, for the caller to rewrite.
    pub fn spill(&mut self) -> (Vec<Unit>, String) {
        let mut units = Vec::with_capacity(self.ends.len());
        let mut from = self.head;
        for &(bytes_end, text_end) in &self.ends {
            units.push(Unit {
                bytes: self.bytes[from.0..bytes_end].to_vec(),
                text: self.texts[from.1..text_end].to_string(),
            });
            from = (bytes_end, text_end);
        }
        let owed = self.owed_text().into_owned();
        self.ends.clear();
        self.matched = 0;
        self.owed_from = self.owed.len();
        self.tidy();
        (units, owed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(units: &[Unit]) -> Vec<&str> {
        units.iter().map(|u| u.text.as_str()).collect()
    }

    #[test]
    fn a_held_word_waits_then_goes_unchanged() {
        let mut d = Delay::default();
        let mut out = Vec::new();
        d.push(b"1", "The", "");
        assert!(d.pop_unchanged(&mut out).is_none());
        assert!(!d.diverged());
        d.push(b"2", " meet", "The ");
        assert_eq!(d.pop_unchanged(&mut out), Some(0), "line 1 goes as it came");
        assert_eq!(out, b"1");
        // " " of line 2 is released; it waits for "meet".
        assert!(d.pop_unchanged(&mut out).is_none());
        assert!(!d.diverged());
        d.push(b"3", "ing", "");
        d.owe("meeting");
        assert!(d.in_step());
        assert_eq!(d.pop_unchanged(&mut out), Some(1));
        assert_eq!(d.pop_unchanged(&mut out), Some(2));
        assert_eq!(out, b"123");
        assert!(d.is_empty());
    }

    #[test]
    fn a_rewrite_spills_the_waiting_units() {
        let mut d = Delay::default();
        d.push(b"1", " main", " ");
        d.push(b"2", ".r", "");
        d.push(b"3", "s", "");
        assert!(!d.diverged());
        d.push(b"4", " now", "src/main.rs ");
        // " " of line 1 matches so far, then "src/…" parts from "main".
        assert!(d.pop_unchanged(&mut Vec::new()).is_none());
        assert!(d.diverged());
        assert!(!d.in_step());
        let (units, owed) = d.spill();
        assert_eq!(texts(&units), [" main", ".r", "s", " now"]);
        assert_eq!(owed, " src/main.rs ");
        assert!(d.is_empty());
    }

    #[test]
    fn empty_units_go_at_once_and_owed_text_outlives_the_queue() {
        let mut d = Delay::default();
        let mut out = Vec::new();
        d.push(b"1", "", "");
        assert_eq!(d.pop_unchanged(&mut out), Some(0), "empty text");
        assert_eq!(out, b"1");
        // Text released from earlier (rewritten) lines makes the new unit differ.
        d.push(b"2", "ab", "xyab");
        assert!(d.diverged());
        let (units, owed) = d.spill();
        assert_eq!((units.len(), owed.as_str()), (1, "xyab"));
    }

    proptest::proptest! {
        /// `release` sends what popping one unit at a time sends, and says `diverged` when
        /// that would.
        #[test]
        fn release_is_pop_unchanged_in_one_pass(steps in proptest::collection::vec(
            ("[ab]{0,3}", "[abx]{0,4}", proptest::bool::ANY), 1..24)) {
            let mut one = Delay::default();
            let mut each = Delay::default();
            for (i, (text, released, spill)) in steps.iter().enumerate() {
                let bytes = format!("{i}:{text}\n");
                one.push(bytes.as_bytes(), text, released);
                each.push(bytes.as_bytes(), text, released);
                let (mut out_one, mut out_each) = (Vec::new(), Vec::new());
                let (last, diverged) = one.release(&mut out_one);
                let mut last_each = None;
                while let Some(at) = each.pop_unchanged(&mut out_each) {
                    last_each = Some(at);
                }
                proptest::prop_assert_eq!(&out_one, &out_each);
                proptest::prop_assert_eq!(last, last_each);
                proptest::prop_assert_eq!(diverged, each.diverged());
                if *spill || diverged {
                    proptest::prop_assert_eq!(one.spill(), each.spill());
                }
            }
        }
    }

    /// The plain way to keep the delay (every owed byte copied and compared), for the property
    /// below.
    #[derive(Default)]
    struct Model {
        units: VecDeque<(Vec<u8>, String)>,
        owed: String,
    }

    impl Model {
        fn release(&mut self, out: &mut Vec<u8>) -> (Option<usize>, bool) {
            let mut last = None;
            while let Some((bytes, text)) = self.units.front() {
                if !self.owed.starts_with(text.as_str()) {
                    let diverged = !text.starts_with(self.owed.as_str());
                    return (last, diverged);
                }
                self.owed.drain(..text.len());
                last = Some(out.len());
                out.extend_from_slice(bytes);
                self.units.pop_front();
            }
            (last, false)
        }
    }

    proptest::proptest! {
        /// The delay sends, owes and spills exactly what the plain way does, whatever the
        /// session releases (its own text, or text a rule changed).
        #[test]
        fn counting_owed_text_is_the_plain_way(steps in proptest::collection::vec(
            ("[ab]{0,3}", "[ab]{0,4}|[abx]{0,4}", 0..6u8), 1..32)) {
            let mut delay = Delay::default();
            let mut model = Model::default();
            for (i, (text, released, op)) in steps.iter().enumerate() {
                let bytes = format!("{i}:{text}\n");
                match op {
                    0 => {
                        delay.owe(released);
                        model.owed.push_str(released);
                    }
                    _ => {
                        delay.push(bytes.as_bytes(), text, released);
                        model.units.push_back((bytes.clone().into_bytes(), text.clone()));
                        model.owed.push_str(released);
                    }
                }
                let (mut out, mut out_model) = (Vec::new(), Vec::new());
                proptest::prop_assert_eq!(delay.release(&mut out), model.release(&mut out_model));
                proptest::prop_assert_eq!(&out, &out_model);
                let waiting: String = model.units.iter().map(|u| u.1.as_str()).collect();
                proptest::prop_assert_eq!(delay.in_step(), model.owed == waiting);
                proptest::prop_assert_eq!(delay.owed_bytes(), model.owed.len());
                proptest::prop_assert_eq!(delay.owed_chars(), model.owed.chars().count());
                proptest::prop_assert_eq!(
                    delay.is_empty(),
                    model.units.is_empty() && model.owed.is_empty()
                );
                if *op == 5 {
                    let (units, owed) = delay.spill();
                    let units: Vec<(Vec<u8>, String)> =
                        units.into_iter().map(|u| (u.bytes, u.text)).collect();
                    let want: Vec<(Vec<u8>, String)> = model.units.drain(..).collect();
                    proptest::prop_assert_eq!(units, want);
                    proptest::prop_assert_eq!(owed, std::mem::take(&mut model.owed));
                }
            }
        }
    }

    #[test]
    fn long_waits_compact_the_buffers_and_keep_every_unit() {
        let mut d = Delay::default();
        let mut out = Vec::new();
        // Each unit waits for the next (a held word), for far more than `COMPACT_AT` bytes.
        let line = |i: usize| format!("{{\"n\":{i}}}\n");
        d.push(line(0).as_bytes(), "w0", "");
        for i in 1..2000 {
            let released = format!("w{}", i - 1);
            d.push(line(i).as_bytes(), &format!("w{i}"), &released);
            assert!(d.pop_unchanged(&mut out).is_some());
            assert!(d.pop_unchanged(&mut out).is_none());
        }
        d.owe("w1999");
        assert!(d.in_step());
        assert!(d.pop_unchanged(&mut out).is_some());
        let want: String = (0..2000).map(line).collect();
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert!(d.is_empty());
        assert!(d.bytes.capacity() < 3 * COMPACT_AT);
    }
}
