//! The built-in extractor: useful records from conversation with no model and no network.
//!
//! Facts and preferences are the informative sentences of each turn ([`statements`]),
//! rewritten in the third person with absolute dates. Summaries and episodes are assembled
//! from the highest-scoring statements of the whole session.

mod attribute;
mod instructions;
mod reflection;
mod statements;
mod summary;

pub use attribute::attribute;
pub use reflection::{EpisodeNote, reflect};
pub use statements::{Statement, statements};

use crate::dates::format_day;

use crate::{Candidate, ExtractError, Extractor, Input, RecordKind, Role, Slot, Turn};
use chrono::{DateTime, NaiveTime, Utc};

/// The default extractor. Deterministic: the same input always gives the same candidates.
#[derive(Debug, Default, Clone)]
pub struct BuiltinExtractor;

impl Extractor for BuiltinExtractor {
    fn name(&self) -> &str {
        "builtin"
    }

    fn version(&self) -> &str {
        "1"
    }

    fn extract(&self, input: &Input<'_>) -> Result<Vec<Candidate>, ExtractError> {
        Ok(match input.kind {
            RecordKind::Fact => facts(input),
            RecordKind::Preference => preferences(input),
            RecordKind::Summary => summary::summary(input).into_iter().collect(),
            RecordKind::Episode => episode(input).into_iter().collect(),
        })
    }
}

/// A statement with the turn it came from.
pub(super) struct Sourced<'a> {
    pub turn: &'a Turn,
    pub statement: Statement,
    /// The turn before, when another participant said it.
    previous: Option<&'a Turn>,
}

/// Every statement of the input's turns; "you" resolves to the previous other speaker.
pub(super) fn sourced<'a>(input: &Input<'a>) -> Vec<Sourced<'a>> {
    let mut out = Vec::new();
    let mut previous: Option<&Turn> = input.context.last();
    for turn in input.turns {
        if turn.role != Role::Tool {
            let other = previous.filter(|p| p.speaker != turn.speaker);
            for statement in statements(turn, other.map(|p| p.speaker.as_str())) {
                out.push(Sourced {
                    turn,
                    statement,
                    previous: other,
                });
            }
        }
        previous = Some(turn);
    }
    out
}

fn valid_from(statement: &Statement, turn: &Turn) -> DateTime<Utc> {
    statement
        .date
        .filter(|d| *d <= turn.time.date_naive())
        .map_or(turn.time, |d| d.and_time(NaiveTime::MIN).and_utc())
}

fn facts(input: &Input<'_>) -> Vec<Candidate> {
    sourced(input)
        .into_iter()
        .map(|s| Candidate {
            slot: state_slot(&s.statement.text, &s.turn.speaker)
                .or_else(|| instruction_slot(&s.statement, &s.turn.speaker)),
            valid_from: valid_from(&s.statement, s.turn),
            source_event_ids: vec![s.turn.event_id.clone()],
            text: s.statement.text,
            state: None,
        })
        .collect()
}

/// Facts of which only one can hold at a time ("lives in", "works at", "is vegetarian"): a
/// new value supersedes the old one.
fn state_slot(text: &str, speaker: &str) -> Option<Slot> {
    const FRAMES: [(&str, &[&str]); 5] = [
        (
            "residence",
            &["lives in", "moved to", "is living in", "relocated to"],
        ),
        (
            "job",
            &[
                "works at",
                "works for",
                "works as",
                "is working at",
                "is working as",
                "is unemployed",
                "is retired",
                "is self-employed",
                "is not working",
            ],
        ),
        ("partner", &["is married to", "is engaged to", "is dating"]),
        ("age", &["is turning", "just turned"]),
        (
            "diet",
            &[
                "is vegetarian",
                "is a vegetarian",
                "is vegan",
                "is a vegan",
                "is pescatarian",
                "is a pescatarian",
                "is an omnivore",
                "eats meat",
                "is no longer vegetarian",
                "is no longer vegan",
                "is not vegetarian",
                "is not vegan",
                "is not a vegetarian",
                "is not a vegan",
            ],
        ),
    ];
    let lower = text.to_lowercase();
    let subject = speaker.to_lowercase();
    let after = |phrase: &str| {
        lower
            .strip_prefix(&format!("{subject} {phrase}"))
            .filter(|rest| !rest.starts_with(char::is_alphanumeric))
    };
    let frame = FRAMES
        .iter()
        .find_map(|(frame, phrases)| phrases.iter().any(|p| after(p).is_some()).then_some(*frame))
        .or_else(|| occupation(&lower, &subject).then_some("job"))?;
    Some(Slot::Exclusive(format!("{frame}:{subject}")))
}

/// A standing instruction holds until the next one on the same subject ("answer in French"
/// replaces "answer in German"), as a fact as well as a preference.
fn instruction_slot(statement: &Statement, speaker: &str) -> Option<Slot> {
    let object = &statement.preference.as_ref()?.object;
    object
        .starts_with("instruction ")
        .then(|| Slot::Exclusive(format!("{}:{object}", speaker.to_lowercase())))
}

/// "Maria is a pharmacist", "Maria is a retired firefighter": an occupation, which a later one
/// replaces like "works as".
fn occupation(lower: &str, subject: &str) -> bool {
    const OCCUPATIONS: &[&str] = &[
        "accountant",
        "actor",
        "analyst",
        "architect",
        "artist",
        "baker",
        "banker",
        "barista",
        "bartender",
        "carpenter",
        "cashier",
        "chef",
        "cleaner",
        "coach",
        "consultant",
        "cook",
        "dentist",
        "designer",
        "developer",
        "doctor",
        "driver",
        "economist",
        "editor",
        "electrician",
        "engineer",
        "entrepreneur",
        "farmer",
        "firefighter",
        "freelancer",
        "hairdresser",
        "journalist",
        "judge",
        "lawyer",
        "lecturer",
        "librarian",
        "manager",
        "mechanic",
        "midwife",
        "musician",
        "nurse",
        "officer",
        "paramedic",
        "pharmacist",
        "photographer",
        "physician",
        "physiotherapist",
        "pilot",
        "plumber",
        "policeman",
        "professor",
        "programmer",
        "psychologist",
        "realtor",
        "receptionist",
        "researcher",
        "salesman",
        "saleswoman",
        "scientist",
        "secretary",
        "soldier",
        "student",
        "surgeon",
        "teacher",
        "technician",
        "therapist",
        "translator",
        "tutor",
        "veterinarian",
        "vet",
        "waiter",
        "waitress",
        "writer",
    ];
    let Some(rest) = lower
        .strip_prefix(&format!("{subject} is a "))
        .or_else(|| lower.strip_prefix(&format!("{subject} is an ")))
    else {
        return false;
    };
    rest.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .take(3)
        .any(|w| OCCUPATIONS.contains(&w))
}

fn preferences(input: &Input<'_>) -> Vec<Candidate> {
    sourced(input)
        .into_iter()
        .filter_map(|s| {
            let preference = s.statement.preference.as_ref()?;
            let mut context = format!("said on {}", format_day(s.turn.time.date_naive()));
            if let Some(question) = s.previous.and_then(|p| last_question(&p.text)) {
                context.push_str(&format!(", when asked \"{question}\""));
            }
            let text = format!(
                "{} ({context})",
                s.statement.text.trim_end_matches(['.', '!'])
            );
            Some(Candidate {
                slot: Some(Slot::Exclusive(format!(
                    "preference:{}:{}",
                    s.turn.speaker.to_lowercase(),
                    preference.object
                ))),
                valid_from: valid_from(&s.statement, s.turn),
                source_event_ids: vec![s.turn.event_id.clone()],
                text,
                state: None,
            })
        })
        .collect()
}

/// The last question in a turn, shortened.
fn last_question(text: &str) -> Option<String> {
    let question = crate::text::sentences(text)
        .into_iter()
        .rev()
        .find(|s| s.ends_with('?'))?;
    Some(if question.chars().count() > 120 {
        question.chars().take(117).collect::<String>() + "..."
    } else {
        question
    })
}

/// "8 May 2023" or "8 May 2023 to 10 May 2023".
pub(super) fn span(turns: &[Turn]) -> String {
    let first = turns.first().map(|t| t.time.date_naive());
    let last = turns.last().map(|t| t.time.date_naive());
    match (first, last) {
        (Some(a), Some(b)) if a != b => format!("{} to {}", format_day(a), format_day(b)),
        (Some(a), _) => format_day(a),
        _ => String::new(),
    }
}

pub(super) fn participants(turns: &[Turn]) -> Vec<&str> {
    let mut seen = Vec::new();
    for turn in turns {
        if turn.role != Role::Tool && !seen.contains(&turn.speaker.as_str()) {
            seen.push(turn.speaker.as_str());
        }
    }
    seen
}

pub(super) fn join_names(names: &[&str]) -> String {
    match names {
        [] => "unknown participants".into(),
        [one] => (*one).into(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn episode(input: &Input<'_>) -> Option<Candidate> {
    let turns = input.turns;
    let first = turns.first()?;
    let all = sourced(input);
    let situation = all
        .iter()
        .find(|s| s.turn.role == Role::User)
        .or(all.first())?;
    let outcome = all.last()?;
    let actions: Vec<&Sourced<'_>> = all
        .iter()
        .filter(|s| {
            !std::ptr::eq(*s, situation)
                && !std::ptr::eq(*s, outcome)
                && matches!(s.turn.role, Role::Assistant | Role::Tool)
        })
        .take(3)
        .collect();
    let mut text = format!(
        "Episode on {} with {}. Situation: {}",
        span(turns),
        join_names(&participants(turns)),
        situation.statement.text
    );
    if !actions.is_empty() {
        text.push_str(" Actions: ");
        text.push_str(
            &actions
                .iter()
                .map(|a| a.statement.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if !std::ptr::eq(outcome, situation) {
        text.push_str(" Outcome: ");
        text.push_str(&outcome.statement.text);
    }
    if !input.session_ended {
        text.push_str(" (in progress)");
    }
    let mut sources = vec![situation.turn.event_id.clone()];
    sources.extend(actions.iter().map(|a| a.turn.event_id.clone()));
    sources.push(outcome.turn.event_id.clone());
    sources.dedup();
    Some(Candidate {
        text,
        source_event_ids: sources,
        slot: crate::running_slot(RecordKind::Episode),
        valid_from: first.time,
        state: None,
    })
}

#[cfg(test)]
mod tests;
