//! The JSON the model must answer with, and its validation. Output that does not match is a
//! retryable failure: the job runs again, and after its attempts it is FAILED, never written.

use crate::ExtractError;
use serde::Deserialize;

/// Appended to every system prompt.
pub const INSTRUCTIONS: &str = r#"Answer with one JSON object and nothing else, in this shape:
{"memories": [{"text": "one self-contained sentence or paragraph", "source_turns": [1, 2], "date": "YYYY-MM-DD"}]}
"source_turns" lists the numbers of the turns the memory comes from. "date" (optional) is when the fact became true, if the turns say. Return {"memories": []} when there is nothing worth remembering."#;

/// Longest memory text accepted.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Most memories accepted from one call.
pub const MAX_MEMORIES: usize = 50;

/// One memory as the model returned it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    pub text: String,
    /// 1-based turn numbers, all within the input.
    pub source_turns: Vec<usize>,
    pub date: Option<String>,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Answer {
    memories: Vec<RawMemory>,
}

#[derive(Deserialize)]
struct RawMemory {
    text: String,
    #[serde(default)]
    source_turns: Vec<i64>,
    #[serde(default)]
    date: Option<String>,
}

fn malformed(what: impl std::fmt::Display) -> ExtractError {
    ExtractError::Transient(format!("malformed model output: {what}"))
}

/// The assistant message of a chat-completions response, and the tokens it reports.
pub fn completion_content(body: &str) -> Result<(String, Option<u64>), ExtractError> {
    let completion: Completion = serde_json::from_str(body)
        .map_err(|err| malformed(format!("not a chat completion: {err}")))?;
    let content = completion
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message.content)
        .ok_or_else(|| malformed("no message content"))?;
    Ok((content, completion.usage.and_then(|u| u.total_tokens)))
}

/// Parses and validates the model's answer for an input of `turns` turns.
pub fn parse_memories(content: &str, turns: usize) -> Result<Vec<Memory>, ExtractError> {
    // Some models wrap JSON in a Markdown fence despite being asked not to.
    let trimmed = content.trim();
    let json = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed);
    let answer: Answer = serde_json::from_str(json).map_err(malformed)?;
    if answer.memories.len() > MAX_MEMORIES {
        return Err(malformed(format!(
            "{} memories (at most {MAX_MEMORIES})",
            answer.memories.len()
        )));
    }
    answer
        .memories
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.text.trim().to_string();
            if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
                return Err(malformed(format!(
                    "memories[{i}].text must be 1-{MAX_TEXT_CHARS} characters"
                )));
            }
            let source_turns = raw
                .source_turns
                .iter()
                .map(|&n| {
                    usize::try_from(n)
                        .ok()
                        .filter(|n| (1..=turns).contains(n))
                        .ok_or_else(|| {
                            malformed(format!(
                                "memories[{i}].source_turns has {n}; turns are 1-{turns}"
                            ))
                        })
                })
                .collect::<Result<Vec<usize>, _>>()?;
            if let Some(date) = &raw.date
                && !date.is_empty()
                && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err()
            {
                return Err(malformed(format!(
                    "memories[{i}].date {date:?} is not YYYY-MM-DD"
                )));
            }
            Ok(Memory {
                text,
                source_turns,
                date: raw.date.filter(|d| !d.is_empty()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_answers_parse() {
        let got = parse_memories(
            r#"{"memories": [{"text": " Ann adopted Luna. ", "source_turns": [2], "date": "2023-05-07"}]}"#,
            2,
        )
        .unwrap();
        assert_eq!(
            got,
            [Memory {
                text: "Ann adopted Luna.".into(),
                source_turns: vec![2],
                date: Some("2023-05-07".into())
            }]
        );
        let fenced = parse_memories("```json\n{\"memories\": []}\n```", 1).unwrap();
        assert!(fenced.is_empty());
    }

    #[test]
    fn invalid_answers_are_transient_failures() {
        for bad in [
            "not json",
            r#"{"facts": []}"#,
            r#"{"memories": [{"text": ""}]}"#,
            r#"{"memories": [{"text": "x", "source_turns": [3]}]}"#,
            r#"{"memories": [{"text": "x", "source_turns": [0]}]}"#,
            r#"{"memories": [{"text": "x", "date": "May 7"}]}"#,
        ] {
            match parse_memories(bad, 2) {
                Err(ExtractError::Transient(reason)) => {
                    assert!(reason.starts_with("malformed model output"), "{reason}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn completions_yield_content_and_usage() {
        let (content, tokens) = completion_content(
            r#"{"choices": [{"message": {"role": "assistant", "content": "{}"}}], "usage": {"total_tokens": 42}}"#,
        )
        .unwrap();
        assert_eq!((content.as_str(), tokens), ("{}", Some(42)));
        assert!(completion_content(r#"{"choices": []}"#).is_err());
    }
}
