//! A real conversation through the public API: the first sessions of a LoCoMo conversation
//! (from ../shared/data/locomo, or MEMD_LOCOMO_DIR; skipped when absent) are streamed in as
//! events; once extraction has drained, every record cites events of that conversation, the
//! built-in extractor covers most of the question evidence, and each session has its final
//! summary and episode.

use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, memory_records as all_records};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const SESSIONS: usize = 3;

fn locomo_file() -> Option<PathBuf> {
    let dir = std::env::var_os("MEMD_LOCOMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/locomo")
        });
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.into_iter().next()
}

/// "1:56 pm on 8 May, 2023" as seconds since the epoch.
fn session_time(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%I:%M %p on %d %B, %Y")
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(0)
}

fn strategy(id: &str, kind: pb::StrategyType) -> pb::MemoryStrategy {
    pb::MemoryStrategy {
        strategy_id: id.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locomo_conversation_becomes_long_term_memory() {
    let Some(file) = locomo_file() else {
        eprintln!("skipped: no LoCoMo data (../shared/data/locomo or MEMD_LOCOMO_DIR)");
        return;
    };
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let conversation = doc.get("conversation").unwrap_or(&doc);
    let server = TestServer::start().await;
    let client = server.admin().await;
    let m = client
        .create_memory(pb::CreateMemoryRequest {
            name: "locomo".into(),
            strategies: vec![
                strategy("facts", pb::StrategyType::Semantic),
                strategy("prefs", pb::StrategyType::UserPreference),
                strategy("summaries", pb::StrategyType::Summary),
                strategy("episodes", pb::StrategyType::Episodic),
            ],
            session_policy: Some(pb::SessionPolicy {
                idle_after_seconds: 1,
                idle_timeout_seconds: 2,
                max_duration_seconds: 3600,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .memory_id;
    let actor = "locomo/conv";
    let ingest = |client: MemdClient| {
        let (m, conversation) = (m.clone(), conversation.clone());
        async move {
            let mut event_ids: BTreeMap<String, String> = BTreeMap::new();
            for n in 1..=SESSIONS {
                let start = session_time(
                    conversation[format!("session_{n}_date_time")]
                        .as_str()
                        .unwrap(),
                );
                for (i, turn) in conversation[format!("session_{n}")]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                {
                    let dia_id = turn["dia_id"].as_str().unwrap().to_string();
                    let event = client
                        .create_event(pb::CreateEventRequest {
                            memory_id: m.clone(),
                            actor_id: actor.into(),
                            session_id: format!("session_{n}"),
                            event_timestamp: Some(prost_types::Timestamp {
                                seconds: start + i as i64,
                                nanos: 0,
                            }),
                            payload: vec![memd_client::named_turn(
                                pb::Role::User,
                                turn["speaker"].as_str().unwrap(),
                                turn["text"].as_str().unwrap(),
                            )],
                            client_token: dia_id.clone(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    event_ids.insert(dia_id, event.event_id);
                }
            }
            event_ids
        }
    };
    let event_ids = ingest(client.clone()).await;

    // Drained: no jobs left and every session's episode written (they come at session end).
    let mut settled = false;
    for _ in 0..400 {
        let jobs: Vec<pb::ExtractionJob> = client
            .all_extraction_jobs(pb::ListMemoryExtractionJobsRequest {
                memory_id: m.clone(),
                ..Default::default()
            })
            .try_collect()
            .await
            .unwrap();
        if jobs.is_empty()
            && all_records(
                &client,
                &m,
                &format!("/strategies/episodes/actors/{actor}/sessions/"),
            )
            .await
            .len()
                == SESSIONS
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "extraction did not drain");

    let ours: BTreeSet<&String> = event_ids.values().collect();
    let all = all_records(&client, &m, "").await;
    assert!(
        all.iter()
            .all(|r| r.source_event_ids.iter().all(|id| ours.contains(id)))
    );
    let facts = all_records(&client, &m, "/strategies/facts/actors/locomo/conv").await;
    assert!(facts.len() >= 20, "only {} facts", facts.len());
    assert!(
        facts
            .iter()
            .all(|r| !r.text.contains(" I ") && r.extractor == "builtin")
    );

    // Question evidence from the ingested sessions that records cite.
    let cited: BTreeSet<&String> = all
        .iter()
        .filter(|r| r.strategy_id == "facts" || r.strategy_id == "prefs")
        .flat_map(|r| &r.source_event_ids)
        .collect();
    let mut evidence = BTreeSet::new();
    for qa in doc["qa"].as_array().into_iter().flatten() {
        if !(1..=4).contains(&qa["category"].as_u64().unwrap_or(0)) {
            continue;
        }
        for id in qa["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let Some(event) = event_ids.get(id) {
                evidence.insert(event);
            }
        }
    }
    let covered = evidence.iter().filter(|e| cited.contains(*e)).count();
    assert!(!evidence.is_empty());
    assert!(
        covered as f64 / evidence.len() as f64 >= 0.7,
        "records cite {covered} of {} evidence turns",
        evidence.len()
    );

    for n in 1..=SESSIONS {
        let summaries = all_records(
            &client,
            &m,
            &format!("/strategies/summaries/actors/{actor}/sessions/session_{n}"),
        )
        .await;
        assert_eq!(summaries.len(), 1);
        assert!(
            summaries[0].text.starts_with("Conversation between "),
            "{}",
            summaries[0].text
        );
    }

    // Across the sessions' episodes, one reflection.
    let reflections = all_records(
        &client,
        &m,
        &format!("/strategies/episodes/actors/{actor}/reflections"),
    )
    .await;
    assert_eq!(reflections.len(), 1, "{reflections:#?}");
    assert!(
        reflections[0]
            .text
            .starts_with(&format!("Across {SESSIONS} episodes from ")),
        "{}",
        reflections[0].text
    );

    // Re-ingesting the same turns (same client tokens) changes nothing.
    let again = ingest(client.clone()).await;
    assert_eq!(again, event_ids);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(all_records(&client, &m, "").await, all);
}
