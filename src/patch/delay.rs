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
#[derive(Debug, Default)]
pub struct Delay {
    bytes: Vec<u8>,
    texts: String,
    /// Where each waiting unit ends in `bytes` and in `texts`.
    ends: VecDeque<(usize, usize)>,
    /// Where the first waiting unit starts in `bytes` and in `texts`.
    head: (usize, usize),
    owed: String,
    /// Where the owed text starts in `owed`.
    owed_from: usize,
}

/// Consumed bytes a buffer may keep at its front before it is compacted.
const COMPACT_AT: usize = 4096;

impl Delay {
    /// True when nothing waits and nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty() && self.owed_from == self.owed.len()
    }

    fn owed(&self) -> &str {
        &self.owed[self.owed_from..]
    }

    /// Bytes of the units waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.len() - self.head.0
    }

    /// Bytes of text released but not sent yet.
    pub fn owed_bytes(&self) -> usize {
        self.owed.len() - self.owed_from
    }

    /// Characters of text released but not sent yet.
    pub fn owed_chars(&self) -> usize {
        self.owed().chars().count()
    }

    /// Queues a unit whose `text` the session was just given, with what the session
    /// `released` in return.
    pub fn push(&mut self, bytes: &[u8], text: &str, released: &str) {
        self.bytes.extend_from_slice(bytes);
        self.texts.push_str(text);
        self.ends.push_back((self.bytes.len(), self.texts.len()));
        self.owe(released);
    }

    /// Adds text the session released without a new unit (its end).
    pub fn owe(&mut self, released: &str) {
        self.owed.push_str(released);
    }

    fn front_text(&self) -> Option<&str> {
        let &(_, text_end) = self.ends.front()?;
        Some(&self.texts[self.head.1..text_end])
    }

    /// Sends the first unit as it came, when the released text begins with its text: its
    /// bytes are appended to `out`. Returns where they start in `out`.
    pub fn pop_unchanged(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        let text = self.front_text()?;
        if !self.owed().starts_with(text) {
            return None;
        }
        self.owed_from += text.len();
        let (bytes_end, text_end) = self.ends.pop_front()?;
        let at = out.len();
        out.extend_from_slice(&self.bytes[self.head.0..bytes_end]);
        self.head = (bytes_end, text_end);
        self.tidy();
        Some(at)
    }

    /// Drops consumed text and bytes: all of them once nothing waits, else now and then.
    fn tidy(&mut self) {
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
    pub fn diverged(&self) -> bool {
        let owed = self.owed();
        self.front_text()
            .is_some_and(|text| !text.starts_with(owed) && !owed.starts_with(text))
    }

    /// True when the released text is exactly the text of the units waiting (all of them
    /// can go as they came, and nothing else is owed).
    pub fn in_step(&self) -> bool {
        self.owed() == &self.texts[self.head.1..]
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
        let owed = self.owed().to_string();
        self.ends.clear();
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
