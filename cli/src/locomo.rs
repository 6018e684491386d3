//! LoCoMo-format conversations (session_N, session_N_date_time, qa) loaded into memd through
//! the public API, for `memctl eval locomo` and `memctl bench ingest`: one memory with the
//! evaluation's strategies and sessions that end within seconds, one actor per conversation,
//! one session per LoCoMo session, each turn an event with its speaker and date.

use anyhow::Context;
use futures::TryStreamExt;
use memd_client::{MemdClient, named_turn, pb};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One ingested LoCoMo conversation.
pub(crate) struct Conversation {
    pub actor: String,
    /// dia_id → event id.
    pub events: BTreeMap<String, String>,
    /// event id → (dia_id, turn text as memd stores it: "Speaker: text").
    pub turns: BTreeMap<String, (String, String)>,
    pub questions: Vec<Question>,
}

/// A question of categories 1-4 with the events of its evidence turns.
pub(crate) struct Question {
    pub text: String,
    pub category: u64,
    pub evidence: BTreeSet<String>,
    /// The answer's content words (`answer_rank`): empty when it has none.
    pub answer: BTreeSet<String>,
}

fn strategies() -> Vec<pb::MemoryStrategy> {
    let strategy = |id: &str, kind: pb::StrategyType, template: &str| pb::MemoryStrategy {
        strategy_id: id.into(),
        r#type: kind as i32,
        namespace_template: template.into(),
        ..Default::default()
    };
    // One namespace prefix per conversation, so a search covers exactly its actor.
    vec![
        strategy(
            "facts",
            pb::StrategyType::Semantic,
            "/conversations/{actorId}/facts",
        ),
        strategy(
            "preferences",
            pb::StrategyType::UserPreference,
            "/conversations/{actorId}/preferences",
        ),
        strategy(
            "summaries",
            pb::StrategyType::Summary,
            "/conversations/{actorId}/sessions/{sessionId}/summary",
        ),
        strategy(
            "episodes",
            pb::StrategyType::Episodic,
            "/conversations/{actorId}/sessions/{sessionId}/episode",
        ),
    ]
}

/// A fresh memory for the evaluation; its id.
/// A fresh memory with the evaluation's strategies, whose sessions end within seconds.
pub(crate) async fn create_memory(client: &MemdClient) -> anyhow::Result<String> {
    let memory = client
        .create_memory(pb::CreateMemoryRequest {
            name: "locomo_eval".into(),
            description: "memctl eval locomo".into(),
            strategies: strategies(),
            session_policy: Some(pb::SessionPolicy {
                idle_after_seconds: 1,
                idle_timeout_seconds: 2,
                max_duration_seconds: 86_400,
            }),
            ..Default::default()
        })
        .await?;
    Ok(memory.memory_id)
}

/// "1:56 pm on 8 May, 2023" in seconds since the epoch.
fn session_seconds(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%I:%M %p on %d %B, %Y")
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(0)
}

/// Stores every turn of the conversation in `path` as an event, one at a time.
pub(crate) async fn ingest(
    client: &MemdClient,
    memory_id: &str,
    path: &Path,
) -> anyhow::Result<Conversation> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let conversation = doc.get("conversation").unwrap_or(&doc);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("conversation");
    let actor = format!(
        "locomo/{}",
        stem.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
    );
    let mut events = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for n in 1.. {
        let Some(turns) = conversation[format!("session_{n}")].as_array() else {
            break;
        };
        let start = session_seconds(
            conversation[format!("session_{n}_date_time")]
                .as_str()
                .unwrap_or(""),
        );
        for (i, turn) in turns.iter().enumerate() {
            let Some(dia_id) = turn["dia_id"].as_str() else {
                continue;
            };
            let mut text = turn["text"].as_str().unwrap_or_default().to_string();
            if let Some(caption) = turn["blip_caption"].as_str() {
                text.push_str(&format!(" [shares {caption}]"));
            }
            let shown = format!("{}: {text}", turn["speaker"].as_str().unwrap_or("speaker"));
            let event = client
                .create_event(pb::CreateEventRequest {
                    memory_id: memory_id.into(),
                    actor_id: actor.clone(),
                    session_id: format!("session_{n}"),
                    event_timestamp: Some(prost_types::Timestamp {
                        seconds: start + i as i64,
                        nanos: 0,
                    }),
                    payload: vec![named_turn(
                        pb::Role::User,
                        turn["speaker"].as_str().unwrap_or("speaker"),
                        text,
                    )],
                    client_token: format!("{stem}-{dia_id}"),
                    ..Default::default()
                })
                .await?;
            texts.insert(event.event_id.clone(), (dia_id.to_string(), shown));
            events.insert(dia_id.to_string(), event.event_id);
        }
    }
    let mut questions = Vec::new();
    for qa in doc["qa"].as_array().into_iter().flatten() {
        let category = qa["category"].as_u64().unwrap_or(0);
        if !(1..=4).contains(&category) {
            continue;
        }
        let evidence: BTreeSet<String> = qa["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .flat_map(|e| {
                e.split(';')
                    .map(|p| p.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter_map(|id| events.get(&id).cloned())
            .collect();
        if evidence.is_empty() {
            continue;
        }
        questions.push(Question {
            text: qa["question"].as_str().unwrap_or_default().to_string(),
            category,
            evidence,
            answer: crate::answer_rank::content_words(&match &qa["answer"] {
                Value::String(answer) => answer.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            }),
        });
    }
    Ok(Conversation {
        actor,
        events,
        turns: texts,
        questions,
    })
}

/// The `.json` files in `dir`, in name order (at least one).
pub(crate) fn conversation_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .json files in {}", dir.display());
    Ok(files)
}

/// LoCoMo sessions in all the conversations (dia_ids are "D<session>:<turn>").
pub(crate) fn session_count(conversations: &[Conversation]) -> usize {
    conversations
        .iter()
        .map(|c| {
            c.events
                .keys()
                .filter_map(|d| d.split(':').next())
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum()
}

/// Whether extraction is done: no job queued, and every session ended and summarised.
pub(crate) async fn drained(
    client: &MemdClient,
    memory_id: &str,
    sessions: usize,
) -> anyhow::Result<bool> {
    let jobs: Vec<pb::ExtractionJob> = client
        .all_extraction_jobs(pb::ListMemoryExtractionJobsRequest {
            memory_id: memory_id.into(),
            ..Default::default()
        })
        .try_collect()
        .await?;
    if !jobs.is_empty() {
        return Ok(false);
    }
    // Every session's episode means every session ended and was summarised.
    let episodes: Vec<pb::MemoryRecord> = client
        .all_memory_records(pb::ListMemoryRecordsRequest {
            memory_id: memory_id.into(),
            strategy_id: "episodes".into(),
            page_size: 100,
            ..Default::default()
        })
        .try_collect()
        .await?;
    Ok(episodes.len() >= sessions)
}
