//! Running session summaries, built incrementally: each job folds its new turns into the
//! summary's state (participants, dates, topic word counts, the best key points so far), so
//! refreshing a long session costs only its new turns.

use super::{Sourced, join_names, sourced};
use crate::dates::format_day;
use crate::text::{content_words, is_stopword};
use crate::{Candidate, Input, Role};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Key points a summary keeps.
const POINTS: usize = 10;
/// Topics a summary names.
const TOPICS: usize = 6;
/// Topic words whose counts the state keeps.
const TRACKED_WORDS: usize = 500;

/// What a summary remembers between jobs (stored with the record, opaque to the server).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SummaryState {
    turns: u64,
    first_us: Option<i64>,
    last_us: Option<i64>,
    people: Vec<String>,
    words: BTreeMap<String, u32>,
    points: Vec<Point>,
    /// Statements seen so far: orders key points as they were said.
    seen: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Point {
    text: String,
    score: f64,
    event_id: String,
    order: u64,
}

impl SummaryState {
    fn fold(&mut self, input: &Input<'_>, statements: Vec<Sourced<'_>>) {
        for turn in input.turns {
            self.turns += 1;
            let at = turn.time.timestamp_micros();
            self.first_us = Some(self.first_us.map_or(at, |f| f.min(at)));
            self.last_us = Some(self.last_us.map_or(at, |l| l.max(at)));
            if turn.role != Role::Tool && !self.people.contains(&turn.speaker) {
                self.people.push(turn.speaker.clone());
            }
            if turn.role == Role::Tool {
                continue;
            }
            for word in content_words(&turn.text) {
                if word.len() > 3 && !is_stopword(&word) && word.chars().all(char::is_alphabetic) {
                    *self.words.entry(word).or_default() += 1;
                }
            }
        }
        for sourced in statements {
            self.points.push(Point {
                text: sourced.statement.text,
                score: sourced.statement.score,
                event_id: sourced.turn.event_id.clone(),
                order: self.seen,
            });
            self.seen += 1;
        }
        // Keep the best points (ties: the earlier one) and the most frequent words.
        self.points
            .sort_by(|a, b| b.score.total_cmp(&a.score).then(a.order.cmp(&b.order)));
        self.points.truncate(POINTS);
        self.points.sort_by_key(|p| p.order);
        if self.words.len() > TRACKED_WORDS {
            let mut ranked: Vec<(String, u32)> =
                std::mem::take(&mut self.words).into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(TRACKED_WORDS);
            self.words = ranked.into_iter().collect();
        }
    }

    fn topics(&self) -> Vec<&str> {
        let names: Vec<String> = self.people.iter().map(|p| p.to_lowercase()).collect();
        let mut ranked: Vec<(&String, &u32)> = self
            .words
            .iter()
            .filter(|(w, n)| **n > 1 && !names.contains(w))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        ranked
            .into_iter()
            .take(TOPICS)
            .map(|(w, _)| w.as_str())
            .collect()
    }

    fn span(&self) -> String {
        let day = |us: Option<i64>| {
            us.and_then(DateTime::<Utc>::from_timestamp_micros)
                .map(|t| t.date_naive())
        };
        match (day(self.first_us), day(self.last_us)) {
            (Some(a), Some(b)) if a != b => format!("{} to {}", format_day(a), format_day(b)),
            (Some(a), _) => format_day(a),
            _ => String::new(),
        }
    }
}

/// Folds the input's turns into the previous state and renders the summary.
pub fn summary(input: &Input<'_>) -> Option<Candidate> {
    // An unreadable state (another extractor's, or none) starts the summary afresh.
    let mut state: SummaryState = input
        .state
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    state.fold(input, sourced(input));
    if state.turns == 0 {
        return None;
    }
    let people: Vec<&str> = state.people.iter().map(String::as_str).collect();
    let mut text = format!(
        "{} between {} on {} ({} turns{}).",
        if input.session_ended {
            "Conversation"
        } else {
            "Ongoing conversation"
        },
        join_names(&people),
        state.span(),
        state.turns,
        if input.session_ended { ", ended" } else { "" },
    );
    let topics = state.topics();
    if !topics.is_empty() {
        text.push_str(&format!(" Topics: {}.", topics.join(", ")));
    }
    if !state.points.is_empty() {
        text.push_str(" Key points: ");
        text.push_str(
            &state
                .points
                .iter()
                .map(|p| p.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let mut sources: Vec<String> = Vec::new();
    for point in &state.points {
        if !sources.contains(&point.event_id) {
            sources.push(point.event_id.clone());
        }
    }
    if sources.is_empty()
        && let Some(turn) = input.turns.first()
    {
        sources.push(turn.event_id.clone());
    }
    let valid_from = state
        .first_us
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .unwrap_or(DateTime::UNIX_EPOCH);
    Some(Candidate {
        text,
        source_event_ids: sources,
        slot: crate::running_slot(crate::RecordKind::Summary),
        valid_from,
        state: serde_json::to_string(&state).ok(),
    })
}
