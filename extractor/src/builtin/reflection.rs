//! Reflections: what an actor's episodes have in common, rewritten after each new episode.

use crate::dates::format_day;
use crate::text::{content_words, is_stopword};
use crate::{Candidate, Slot};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// Themes a reflection names.
const THEMES: usize = 5;
/// Source events a reflection cites at most (those of its latest episodes).
const SOURCES: usize = 20;

/// One completed episode, as a reflection sees it.
#[derive(Debug, Clone)]
pub struct EpisodeNote {
    pub text: String,
    pub valid_from: DateTime<Utc>,
    pub source_event_ids: Vec<String>,
}

/// Words of the episode format itself, never themes.
const FORMAT_WORDS: [&str; 8] = [
    "episode",
    "situation",
    "action",
    "outcome",
    "progress",
    "with",
    "turn",
    "conversation",
];

/// The running reflection over `episodes` (any order); `None` for fewer than two.
pub fn reflect(episodes: &[EpisodeNote]) -> Option<Candidate> {
    if episodes.len() < 2 {
        return None;
    }
    let mut sorted: Vec<&EpisodeNote> = episodes.iter().collect();
    sorted.sort_by_key(|e| e.valid_from);
    // Document frequency: a theme recurs across episodes, not within one.
    let mut frequency: BTreeMap<String, usize> = BTreeMap::new();
    for episode in &sorted {
        let words: BTreeSet<String> = content_words(&episode.text)
            .into_iter()
            .filter(|w| {
                w.len() > 3
                    && w.chars().all(char::is_alphabetic)
                    && !is_stopword(w)
                    && !FORMAT_WORDS.contains(&w.as_str())
                    && !is_month(w)
            })
            .collect();
        for word in words {
            *frequency.entry(word).or_default() += 1;
        }
    }
    // Words in every episode are usually the participants' names, not themes.
    let everywhere = sorted.len();
    let mut themes: Vec<(String, usize)> = frequency
        .into_iter()
        .filter(|(_, n)| *n >= 2 && (*n < everywhere || everywhere == 2))
        .collect();
    themes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    themes.truncate(THEMES);
    let first = sorted.first()?;
    let last = sorted.last()?;
    let mut text = format!(
        "Across {} episodes from {} to {}",
        sorted.len(),
        format_day(first.valid_from.date_naive()),
        format_day(last.valid_from.date_naive())
    );
    if themes.is_empty() {
        text.push_str(", no theme recurs.");
    } else {
        text.push_str(", recurring themes: ");
        text.push_str(
            &themes
                .iter()
                .map(|(w, n)| format!("{w} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        text.push('.');
    }
    if let Some(outcome) = last.text.split(" Outcome: ").nth(1) {
        text.push_str(&format!(" Latest outcome: {}", outcome.trim()));
    }
    let mut sources = Vec::new();
    for episode in sorted.iter().rev() {
        for id in &episode.source_event_ids {
            if sources.len() < SOURCES && !sources.contains(id) {
                sources.push(id.clone());
            }
        }
    }
    Some(Candidate {
        text,
        source_event_ids: sources,
        slot: Some(Slot::Running("reflection".into())),
        valid_from: last.valid_from,
        state: None,
    })
}

fn is_month(word: &str) -> bool {
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
    .contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn note(day: u32, text: &str, source: &str) -> EpisodeNote {
        EpisodeNote {
            text: text.into(),
            valid_from: Utc.with_ymd_and_hms(2023, 5, day, 9, 0, 0).unwrap(),
            source_event_ids: vec![source.into()],
        }
    }

    #[test]
    fn recurring_themes_and_the_latest_outcome() {
        let episodes = [
            note(
                3,
                "Episode on 3 May 2023 with Ana. Situation: Ana's flight was cancelled. Outcome: Ana got a refund.",
                "e1",
            ),
            note(
                9,
                "Episode on 9 May 2023 with Ana. Situation: Ana needed a hotel. Outcome: Ana booked a hotel.",
                "e2",
            ),
            note(
                20,
                "Episode on 20 May 2023 with Ana. Situation: Ana's flight was delayed. Outcome: Ana asked for a refund again.",
                "e3",
            ),
        ];
        let reflection = reflect(&episodes).unwrap();
        assert_eq!(
            reflection.text,
            "Across 3 episodes from 3 May 2023 to 20 May 2023, recurring themes: flight (2), refund (2). Latest outcome: Ana asked for a refund again."
        );
        assert_eq!(reflection.source_event_ids, ["e3", "e2", "e1"]);
        assert_eq!(reflection.slot, Some(Slot::Running("reflection".into())));
        assert!(reflect(&episodes[..1]).is_none());
    }
}
