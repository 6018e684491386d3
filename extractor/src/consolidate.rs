//! Consolidation: what a candidate record does to the live records of its namespace.
//!
//! In order: the same statement (normal form) is a no-op; a candidate for a running slot
//! rewrites that slot's record; a candidate for an exclusive slot restates (no-op), refines
//! (update) or contradicts (supersede) the slot's record; otherwise lexical overlap decides
//! between no-op, refinement and a new record.
//!
//! [`Namespace`] keeps what the decisions need (normal forms, word sets, slots and an inverted
//! word index), so a worker can hold it across jobs and each decision only looks at records
//! that share a distinctive word with the candidate.

use crate::text::{content_words, jaccard, normalize};
use crate::{Candidate, Slot};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Word overlap at which two statements say the same thing.
const SAME: f64 = 0.8;
/// Below this many records every record is compared; above, only those sharing a word that
/// at most an eighth of the records contain.
const SCAN_ALL_BELOW: usize = 64;

/// A live record of the candidate's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Existing<'a> {
    pub id: &'a str,
    pub text: &'a str,
    pub slot: Option<&'a Slot>,
}

/// What to do with a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing new: the record already says it.
    Duplicate(String),
    /// Rewrite this record with the candidate's text (more detail, or a running summary).
    Refine(String),
    /// The candidate contradicts this record: it becomes invalid from the candidate's
    /// `valid_from` and the candidate is written as a new record.
    Supersede(String),
    /// Write the candidate as a new record.
    New,
}

#[derive(Debug, Clone)]
struct Known {
    normal: String,
    words: BTreeSet<String>,
    slot: Option<Slot>,
}

/// The live records of one namespace, indexed for consolidation decisions.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    records: HashMap<String, Known>,
    by_normal: HashMap<String, String>,
    by_slot: HashMap<Slot, String>,
    postings: HashMap<String, HashSet<String>>,
}

impl Namespace {
    /// Number of live records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds (or replaces) a live record.
    pub fn insert(&mut self, id: &str, text: &str, slot: Option<Slot>) {
        self.remove(id);
        let known = Known {
            normal: normalize(text),
            words: content_words(text),
            slot,
        };
        self.by_normal.insert(known.normal.clone(), id.to_string());
        if let Some(slot) = &known.slot {
            self.by_slot.insert(slot.clone(), id.to_string());
        }
        for word in &known.words {
            self.postings
                .entry(word.clone())
                .or_default()
                .insert(id.to_string());
        }
        self.records.insert(id.to_string(), known);
    }

    /// Removes a record (superseded or deleted).
    pub fn remove(&mut self, id: &str) {
        let Some(known) = self.records.remove(id) else {
            return;
        };
        if self.by_normal.get(&known.normal).is_some_and(|i| i == id) {
            self.by_normal.remove(&known.normal);
        }
        if let Some(slot) = &known.slot
            && self.by_slot.get(slot).is_some_and(|i| i == id)
        {
            self.by_slot.remove(slot);
        }
        for word in &known.words {
            if let Some(ids) = self.postings.get_mut(word) {
                ids.remove(id);
                if ids.is_empty() {
                    self.postings.remove(word);
                }
            }
        }
    }

    /// The live record holding a slot, if any.
    pub fn holder(&self, slot: &Slot) -> Option<&str> {
        self.by_slot.get(slot).map(String::as_str)
    }

    /// Decides what `candidate` does to this namespace.
    pub fn decide(&self, candidate: &Candidate) -> Decision {
        if let Some(id) = self.by_normal.get(&normalize(&candidate.text)) {
            return Decision::Duplicate(id.clone());
        }
        let words = content_words(&candidate.text);
        if let Some(slot) = &candidate.slot
            && let Some(holder) = self.by_slot.get(slot)
        {
            let theirs = &self.records[holder].words;
            return match slot {
                Slot::Running(_) => Decision::Refine(holder.clone()),
                Slot::Exclusive(_) if jaccard(&words, theirs) >= SAME => {
                    Decision::Duplicate(holder.clone())
                }
                Slot::Exclusive(_) if refines(&words, theirs) => Decision::Refine(holder.clone()),
                Slot::Exclusive(_) => Decision::Supersede(holder.clone()),
            };
        }
        let mut best: Option<(f64, &String, &Known)> = None;
        for id in self.neighbours(&words) {
            let known = &self.records[id];
            let similarity = jaccard(&words, &known.words);
            if best.as_ref().is_none_or(|(s, best_id, _)| {
                similarity > *s || (similarity == *s && id < *best_id)
            }) {
                best = Some((similarity, id, known));
            }
        }
        match best {
            Some((similarity, id, _)) if similarity >= SAME => Decision::Duplicate(id.clone()),
            Some((_, id, known)) if refines(&words, &known.words) => Decision::Refine(id.clone()),
            Some((_, id, known)) if !words.is_empty() && words.is_subset(&known.words) => {
                Decision::Duplicate(id.clone())
            }
            _ => Decision::New,
        }
    }

    /// Records worth comparing with a candidate of these words.
    fn neighbours<'a>(&'a self, words: &BTreeSet<String>) -> Vec<&'a String> {
        if self.records.len() < SCAN_ALL_BELOW {
            return self.records.keys().collect();
        }
        let rare = (self.records.len() / 8).max(SCAN_ALL_BELOW / 8);
        let mut out: HashSet<&String> = HashSet::new();
        for word in words {
            if let Some(ids) = self.postings.get(word)
                && ids.len() <= rare
            {
                out.extend(ids);
            }
        }
        out.into_iter().collect()
    }
}

/// Decides what `candidate` does, given the live records of its namespace (builds a
/// [`Namespace`]; workers that decide many candidates keep one instead).
pub fn consolidate(candidate: &Candidate, existing: &[Existing<'_>]) -> Decision {
    let mut namespace = Namespace::default();
    for record in existing {
        namespace.insert(record.id, record.text, record.slot.cloned());
    }
    namespace.decide(candidate)
}

/// The candidate keeps everything the record says and adds a little more.
fn refines(candidate: &BTreeSet<String>, record: &BTreeSet<String>) -> bool {
    record.len() >= 3 && record.is_subset(candidate) && candidate.len() <= record.len() * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(text: &str, slot: Option<Slot>) -> Candidate {
        Candidate {
            text: text.into(),
            source_event_ids: vec!["e".into()],
            slot,
            valid_from: chrono::DateTime::UNIX_EPOCH,
            state: None,
        }
    }

    fn existing<'a>(id: &'a str, text: &'a str, slot: Option<&'a Slot>) -> Existing<'a> {
        Existing { id, text, slot }
    }

    #[test]
    fn same_statement_is_a_no_op() {
        let records = [existing("r1", "Caroline adopted a dog named Luna.", None)];
        let c = candidate("caroline adopted a dog named luna", None);
        assert_eq!(consolidate(&c, &records), Decision::Duplicate("r1".into()));
        let fewer = candidate("Caroline adopted Luna.", None);
        assert_eq!(
            consolidate(&fewer, &records),
            Decision::Duplicate("r1".into())
        );
    }

    #[test]
    fn more_detail_refines() {
        let records = [existing("r1", "Caroline adopted a dog named Luna.", None)];
        let c = candidate("Caroline adopted a dog named Luna in June 2023.", None);
        assert_eq!(consolidate(&c, &records), Decision::Refine("r1".into()));
    }

    #[test]
    fn unrelated_is_new() {
        let records = [existing("r1", "Caroline adopted a dog named Luna.", None)];
        let c = candidate("Melanie ran a charity race for mental health.", None);
        assert_eq!(consolidate(&c, &records), Decision::New);
        assert_eq!(consolidate(&c, &[]), Decision::New);
    }

    #[test]
    fn exclusive_slot_supersedes_a_different_value() {
        let slot = Slot::Exclusive("residence:caroline".into());
        let records = [existing("r1", "Caroline lives in Boston.", Some(&slot))];
        let moved = candidate("Caroline lives in Denver now.", Some(slot.clone()));
        assert_eq!(
            consolidate(&moved, &records),
            Decision::Supersede("r1".into())
        );
        let again = candidate("Caroline lives in Boston!", Some(slot.clone()));
        assert_eq!(
            consolidate(&again, &records),
            Decision::Duplicate("r1".into())
        );
    }

    #[test]
    fn running_slot_rewrites_in_place() {
        let slot = Slot::Running("summary".into());
        let records = [existing(
            "r1",
            "Ongoing conversation about dogs.",
            Some(&slot),
        )];
        let c = candidate(
            "Conversation about dogs and cats, ended.",
            Some(slot.clone()),
        );
        assert_eq!(consolidate(&c, &records), Decision::Refine("r1".into()));
    }

    #[test]
    fn large_namespaces_find_duplicates_through_rare_words() {
        let mut namespace = Namespace::default();
        for i in 0..500 {
            namespace.insert(
                &format!("r{i}"),
                &format!("Caroline booked {i} tickets for the concert in city{i}."),
                None,
            );
        }
        let again = candidate(
            "Caroline booked 250 tickets for the concert in city250!",
            None,
        );
        assert_eq!(namespace.decide(&again), Decision::Duplicate("r250".into()));
        let more = candidate(
            "Caroline booked 250 tickets for the concert in city250 with her brother Sam.",
            None,
        );
        assert_eq!(namespace.decide(&more), Decision::Refine("r250".into()));
        let fresh = candidate("Caroline booked 7 tickets for the opera in Vienna.", None);
        assert_eq!(namespace.decide(&fresh), Decision::New);
        namespace.remove("r250");
        assert_eq!(namespace.decide(&again), Decision::New);
        assert_eq!(namespace.len(), 499);
    }
}
