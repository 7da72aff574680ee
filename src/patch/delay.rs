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
#[derive(Debug, Default)]
pub struct Unit {
    pub bytes: Vec<u8>,
    pub text: String,
}

/// The units waiting, and the text the session released that the client has not had yet.
#[derive(Debug, Default)]
pub struct Delay {
    units: VecDeque<Unit>,
    /// Emptied units, kept for their buffers.
    spare: Vec<Unit>,
    owed: String,
    /// Bytes of the units waiting.
    queued: usize,
}

impl Delay {
    /// True when nothing waits and nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.owed.is_empty()
    }

    /// Bytes of the units waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes of text released but not sent yet.
    pub fn owed_bytes(&self) -> usize {
        self.owed.len()
    }

    /// Characters of text released but not sent yet.
    pub fn owed_chars(&self) -> usize {
        self.owed.chars().count()
    }

    /// Queues a unit whose `text` the session was just given, with what the session
    /// `released` in return.
    pub fn push(&mut self, bytes: &[u8], text: &str, released: &str) {
        let mut unit = self.spare.pop().unwrap_or_default();
        unit.bytes.extend_from_slice(bytes);
        unit.text.push_str(text);
        self.queued += bytes.len();
        self.units.push_back(unit);
        self.owed.push_str(released);
    }

    /// Adds text the session released without a new unit (its end).
    pub fn owe(&mut self, released: &str) {
        self.owed.push_str(released);
    }

    /// The first unit, when it can go as it came: the released text begins with its text.
    pub fn pop_unchanged(&mut self) -> Option<Unit> {
        let front = self.units.front()?;
        if !self.owed.starts_with(&front.text) {
            return None;
        }
        self.owed.drain(..front.text.len());
        self.queued -= front.bytes.len();
        self.units.pop_front()
    }

    /// True when the first unit can no longer go as it came: the released text parts from
    /// its text (a rule rewrote it).
    pub fn diverged(&self) -> bool {
        self.units
            .front()
            .is_some_and(|u| !u.text.starts_with(&self.owed) && !self.owed.starts_with(&u.text))
    }

    /// True when the released text is exactly the text of the units waiting (all of them
    /// can go as they came, and nothing else is owed).
    pub fn in_step(&self) -> bool {
        let mut rest = self.owed.as_str();
        for unit in &self.units {
            match rest.strip_prefix(unit.text.as_str()) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// Takes every waiting unit and the owed text, for the caller to rewrite.
    pub fn spill(&mut self) -> (Vec<Unit>, String) {
        self.queued = 0;
        (
            self.units.drain(..).collect(),
            std::mem::take(&mut self.owed),
        )
    }

    /// Gives back a unit's buffers once its bytes are out.
    pub fn recycle(&mut self, mut unit: Unit) {
        if self.spare.len() < 4 {
            unit.bytes.clear();
            unit.text.clear();
            self.spare.push(unit);
        }
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
        d.push(b"1", "The", "");
        assert!(d.pop_unchanged().is_none());
        assert!(!d.diverged());
        d.push(b"2", " meet", "The ");
        let first = d.pop_unchanged().expect("line 1 goes as it came");
        assert_eq!(first.bytes, b"1");
        d.recycle(first);
        // " " of line 2 is released; it waits for "meet".
        assert!(d.pop_unchanged().is_none());
        assert!(!d.diverged());
        d.push(b"3", "ing", "");
        d.owe("meeting");
        assert!(d.in_step());
        assert_eq!(d.pop_unchanged().expect("line 2").bytes, b"2");
        assert_eq!(d.pop_unchanged().expect("line 3").bytes, b"3");
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
        assert!(d.pop_unchanged().is_none());
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
        d.push(b"1", "", "");
        assert_eq!(d.pop_unchanged().expect("empty text").bytes, b"1");
        // Text released from earlier (rewritten) lines makes the new unit differ.
        d.push(b"2", "ab", "xyab");
        assert!(d.diverged());
        let (units, owed) = d.spill();
        assert_eq!((units.len(), owed.as_str()), (1, "xyab"));
    }
}
