//! Consolidation: what a candidate record does to the live records of its namespace.
//!
//! In order: the same statement (normal form) is a no-op; a candidate for a running slot
//! rewrites that slot's record; a candidate for an exclusive slot restates (no-op), refines
//! (update) or contradicts (supersede) the slot's record; otherwise lexical overlap decides
//! between no-op, refinement and a new record.

use crate::text::{content_words, jaccard, normalize};
use crate::{Candidate, Slot};
use std::collections::BTreeSet;

/// Word overlap at which two statements say the same thing.
const SAME: f64 = 0.8;

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

/// Decides what `candidate` does, given the live records of its namespace.
pub fn consolidate(candidate: &Candidate, existing: &[Existing<'_>]) -> Decision {
    let normal = normalize(&candidate.text);
    if let Some(same) = existing.iter().find(|e| normalize(e.text) == normal) {
        return Decision::Duplicate(same.id.to_string());
    }
    let words = content_words(&candidate.text);
    if let Some(slot) = &candidate.slot
        && let Some(holder) = existing.iter().find(|e| e.slot == Some(slot))
    {
        return match slot {
            Slot::Running(_) => Decision::Refine(holder.id.to_string()),
            Slot::Exclusive(_) => {
                let theirs = content_words(holder.text);
                if jaccard(&words, &theirs) >= SAME {
                    Decision::Duplicate(holder.id.to_string())
                } else if refines(&words, &theirs) {
                    Decision::Refine(holder.id.to_string())
                } else {
                    Decision::Supersede(holder.id.to_string())
                }
            }
        };
    }
    let mut best: Option<(f64, &Existing<'_>, BTreeSet<String>)> = None;
    for record in existing {
        let theirs = content_words(record.text);
        let similarity = jaccard(&words, &theirs);
        if best.as_ref().is_none_or(|(s, _, _)| similarity > *s) {
            best = Some((similarity, record, theirs));
        }
    }
    match best {
        Some((similarity, record, _)) if similarity >= SAME => {
            Decision::Duplicate(record.id.to_string())
        }
        Some((_, record, theirs)) if refines(&words, &theirs) => {
            Decision::Refine(record.id.to_string())
        }
        Some((_, record, theirs)) if !words.is_empty() && words.is_subset(&theirs) => {
            Decision::Duplicate(record.id.to_string())
        }
        _ => Decision::New,
    }
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
}
