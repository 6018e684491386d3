//! How much of LoCoMo's question evidence the built-in extractor turns into records.
//!
//! `cargo run --release -p memd-extractor --example locomo_coverage -- [DIR]` (default
//! `../shared/data/locomo`). Every conversation is fed turn by turn, as the server's jobs do,
//! and consolidated per speaker namespace. Coverage is the share of evidence turns (questions
//! of categories 1-4) that are a source of some record; precision is the share of records
//! drawn from an evidence turn; the base rate is the share of all turns that are evidence.

use chrono::{DateTime, NaiveDateTime, Utc};
use memd_extractor::{
    BuiltinExtractor, Candidate, Decision, Existing, Extractor, Input, RecordKind, Role, Turn,
    consolidate,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "../shared/data/locomo".into()),
    );
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("skipped: {} not found", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut totals = Totals::default();
    for file in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let conversation = load(&doc);
        let records = extract(&conversation);
        let evidence = evidence(&doc);
        totals.add(&file, &conversation, &records, &evidence);
    }
    totals.print();
}

fn load(doc: &Value) -> Vec<Vec<Turn>> {
    // Either the bare conversation or the LoCoMo release shape {conversation, qa}.
    let conv = doc.get("conversation").unwrap_or(doc);
    let mut sessions = Vec::new();
    for n in 1.. {
        let Some(turns) = conv[format!("session_{n}")].as_array() else {
            break;
        };
        let when = conv[format!("session_{n}_date_time")]
            .as_str()
            .unwrap_or("");
        let time = parse_time(when);
        sessions.push(
            turns
                .iter()
                .map(|t| Turn {
                    event_id: t["dia_id"].as_str().unwrap_or("").to_string(),
                    time,
                    role: Role::User,
                    speaker: t["speaker"].as_str().unwrap_or("").to_string(),
                    text: t["text"].as_str().unwrap_or("").to_string(),
                })
                .collect(),
        );
    }
    sessions
}

/// "1:56 pm on 8 May, 2023".
fn parse_time(text: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(text, "%I:%M %p on %d %B, %Y")
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::UNIX_EPOCH)
}

struct Record {
    kind: RecordKind,
    candidate: Candidate,
}

fn extract(sessions: &[Vec<Turn>]) -> Vec<Record> {
    let extractor = BuiltinExtractor;
    let mut namespaces: BTreeMap<(RecordKind, String), Vec<(String, Candidate)>> = BTreeMap::new();
    let mut next_id = 0;
    for turns in sessions {
        for (i, turn) in turns.iter().enumerate() {
            for kind in [RecordKind::Fact, RecordKind::Preference] {
                let input = Input {
                    kind,
                    turns: std::slice::from_ref(turn),
                    context: &turns[..i],
                    session_ended: false,
                    state: None,
                };
                for candidate in extractor.extract(&input).unwrap() {
                    let records = namespaces.entry((kind, turn.speaker.clone())).or_default();
                    let existing: Vec<Existing<'_>> = records
                        .iter()
                        .map(|(id, c)| Existing {
                            id,
                            text: &c.text,
                            slot: c.slot.as_ref(),
                        })
                        .collect();
                    match consolidate(&candidate, &existing) {
                        Decision::New | Decision::Supersede(_) => {
                            next_id += 1;
                            records.push((next_id.to_string(), candidate));
                        }
                        Decision::Duplicate(id) | Decision::Refine(id) => {
                            let record = records.iter_mut().find(|(i, _)| *i == id).unwrap();
                            record.1.source_event_ids.extend(candidate.source_event_ids);
                        }
                    }
                }
            }
        }
    }
    namespaces
        .into_iter()
        .flat_map(|((kind, _), records)| {
            records
                .into_iter()
                .map(move |(_, candidate)| Record { kind, candidate })
        })
        .collect()
}

/// Evidence turn ids per question category (1-4).
fn evidence(doc: &Value) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for qa in doc["qa"].as_array().into_iter().flatten() {
        let category = qa["category"].as_u64().unwrap_or(0);
        if !(1..=4).contains(&category) {
            continue;
        }
        for id in qa["evidence"].as_array().into_iter().flatten() {
            if let Some(id) = id.as_str() {
                // Some evidence lists join ids with ';'.
                for part in id.split(';') {
                    out.entry(category)
                        .or_default()
                        .insert(part.trim().to_string());
                }
            }
        }
    }
    out
}

#[derive(Default)]
struct Totals {
    turns: usize,
    turns_with_records: usize,
    evidence: BTreeMap<u64, (usize, usize)>,
    records: BTreeMap<&'static str, (usize, usize)>,
    evidence_turns: usize,
}

impl Totals {
    fn add(
        &mut self,
        file: &std::path::Path,
        sessions: &[Vec<Turn>],
        records: &[Record],
        evidence: &BTreeMap<u64, BTreeSet<String>>,
    ) {
        let all_evidence: BTreeSet<&String> = evidence.values().flatten().collect();
        let sourced: BTreeSet<&String> = records
            .iter()
            .flat_map(|r| &r.candidate.source_event_ids)
            .collect();
        let turns: usize = sessions.iter().map(Vec::len).sum();
        self.turns += turns;
        self.turns_with_records += sourced.len();
        self.evidence_turns += all_evidence.len();
        for (category, ids) in evidence {
            let entry = self.evidence.entry(*category).or_default();
            entry.0 += ids.iter().filter(|id| sourced.contains(id)).count();
            entry.1 += ids.len();
        }
        for record in records {
            let name = match record.kind {
                RecordKind::Fact => "facts",
                _ => "preferences",
            };
            let entry = self.records.entry(name).or_default();
            entry.1 += 1;
            if record
                .candidate
                .source_event_ids
                .iter()
                .any(|id| all_evidence.contains(id))
            {
                entry.0 += 1;
            }
        }
        let covered = all_evidence
            .iter()
            .filter(|id| sourced.contains(*id))
            .count();
        println!(
            "{}: {turns} turns, {} records, evidence coverage {:.3}",
            file.file_name().unwrap().to_string_lossy(),
            records.len(),
            covered as f64 / all_evidence.len().max(1) as f64
        );
    }

    fn print(&self) {
        let (covered, total) = self
            .evidence
            .values()
            .fold((0, 0), |(c, t), (a, b)| (c + a, t + b));
        println!("turns: {}", self.turns);
        println!(
            "turns that became a record source: {:.3}",
            self.turns_with_records as f64 / self.turns.max(1) as f64
        );
        println!(
            "base rate (evidence turns / all turns): {:.3}",
            self.evidence_turns as f64 / self.turns.max(1) as f64
        );
        for (category, (c, t)) in &self.evidence {
            println!(
                "coverage category {category}: {:.3} ({c}/{t})",
                *c as f64 / (*t).max(1) as f64
            );
        }
        println!(
            "coverage overall: {:.3} ({covered}/{total})",
            covered as f64 / total.max(1) as f64
        );
        for (name, (hits, n)) in &self.records {
            println!(
                "{name}: {n} records, precision {:.3}",
                *hits as f64 / (*n).max(1) as f64
            );
        }
    }
}
