//! `memctl export` and `memctl import`: a memory moved between two real servers keeps its
//! configuration, every event (payloads, times, metadata, branches with their roots) and
//! every record (text, namespace, provenance, the versions of its history in order); an
//! import run twice writes nothing twice; a truncated file is refused with nothing written.

use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use memd_tests::{
    ADMIN_KEY, TestServer, extraction_jobs, facts_memory, memctl_binary, memory_records,
    named_event, text_of,
};
use std::collections::HashMap;
use std::time::Duration;

async fn memctl(endpoint: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    // Not std::process: the servers run on this test's threads.
    let output = tokio::process::Command::new(memctl_binary())
        .args(["--endpoint", endpoint, "--api-key", ADMIN_KEY, "--json"])
        .args(args)
        .output()
        .await
        .unwrap();
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A memory with two actors, a branch forking off an event that sorts after it, metadata,
/// extracted facts and a hand-written record rewritten twice.
async fn fill(client: &MemdClient) -> String {
    let memory_id = facts_memory(client, "source").await;
    let say =
        |actor: &str, session: &str, speaker: &str, text: &str, at: i64| pb::CreateEventRequest {
            event_timestamp: ts(at),
            ..named_event(&memory_id, actor, session, speaker, text)
        };
    client
        .create_event(say("ann", "s1", "Ann", "I moved to Porto in March.", 1_000))
        .await
        .unwrap();
    let root = client
        .create_event(pb::CreateEventRequest {
            metadata: [("channel".to_string(), "email".to_string())].into(),
            ..say("ann", "s1", "Ann", "My manager is Rui Costa.", 2_000)
        })
        .await
        .unwrap();
    client
        .create_event(pb::CreateEventRequest {
            branch: Some(pb::Branch {
                name: "retry".into(),
                root_event_id: root.event_id.clone(),
            }),
            // Earlier than its root: the file lists it first, the import must wait for the root.
            ..say(
                "ann",
                "s1",
                "Ann",
                "Actually my manager is Ines Sousa.",
                1_500,
            )
        })
        .await
        .unwrap();
    client
        .create_event(say("bob", "s9", "Bob", "I am allergic to peanuts.", 3_000))
        .await
        .unwrap();
    let written = client
        .batch_create_memory_records(
            memory_id.clone(),
            vec![pb::MemoryRecordInput {
                namespace: "/notes/ann".into(),
                text: "Ann prefers tea.".into(),
                actor_id: "ann".into(),
                source_event_ids: vec![root.event_id.clone()],
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    let note = written[0].memory_record_id.clone();
    for text in ["Ann prefers green tea.", "Ann prefers jasmine tea."] {
        let results = client
            .batch_update_memory_records(
                memory_id.clone(),
                vec![pb::MemoryRecordUpdate {
                    memory_record_id: note.clone(),
                    text: text.into(),
                    ..Default::default()
                }],
            )
            .await
            .unwrap();
        assert_eq!(results[0].code, 0, "{results:?}");
    }
    for _ in 0..600 {
        let facts = memory_records(client, &memory_id, "/strategies/facts/").await;
        if facts.len() >= 3 && extraction_jobs(client, &memory_id).await.is_empty() {
            return memory_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the facts were never extracted");
}

/// Every event of the test's actors, by actor and session, oldest first.
async fn all_events(client: &MemdClient, memory_id: &str) -> Vec<pb::Event> {
    let mut all = vec![];
    for actor in ["ann", "bob"] {
        let sessions: Vec<pb::Session> = client
            .all_sessions(memory_id, actor)
            .try_collect()
            .await
            .unwrap();
        for session in sessions {
            let listed: Vec<pb::Event> = client
                .all_events(pb::ListEventsRequest {
                    memory_id: memory_id.into(),
                    actor_id: actor.into(),
                    session_id: session.session_id,
                    include_payloads: true,
                    ..Default::default()
                })
                .try_collect()
                .await
                .unwrap();
            all.extend(listed);
        }
    }
    all
}

/// Each event's text by its id.
fn texts(events: &[pb::Event]) -> HashMap<String, String> {
    events
        .iter()
        .map(|e| (e.event_id.clone(), text_of(e).to_owned()))
        .collect()
}

/// Every event of a memory by (actor, session), oldest first, without its ids; branch roots
/// named by their root's text.
async fn events(client: &MemdClient, memory_id: &str) -> Vec<(String, String, String)> {
    let all = all_events(client, memory_id).await;
    let texts = texts(&all);
    let mut out = vec![];
    for event in all {
        let branch = match &event.branch {
            Some(b) if !b.name.is_empty() => {
                format!("{} from {:?}", b.name, texts[&b.root_event_id])
            }
            _ => String::new(),
        };
        let described = format!(
            "{}/{} at {:?} {:?} {:?}",
            event.actor_id, event.session_id, event.event_timestamp, event.metadata, event.payload
        );
        out.push((described, branch, text_of(&event).to_owned()));
    }
    out
}

/// Every live record without its ids and server times; sources named by their events' text,
/// and each record's history texts oldest first.
async fn records(client: &MemdClient, memory_id: &str) -> Vec<String> {
    let texts = texts(&all_events(client, memory_id).await);
    let mut out = vec![];
    for record in memory_records(client, memory_id, "").await {
        let mut history = client
            .get_memory_record_history(memory_id, record.memory_record_id.clone())
            .await
            .unwrap();
        history.reverse();
        let sources: Vec<&str> = record
            .source_event_ids
            .iter()
            .map(|id| texts[id].as_str())
            .collect();
        out.push(format!(
            "{} {:?} strategy {:?} actor {} session {:?} valid {:?} version {} from {sources:?} history {:?}",
            record.namespace,
            record.text,
            record.strategy_id,
            record.actor_id,
            record.session_id,
            record.valid_from,
            record.version,
            history.iter().map(|r| r.text.as_str()).collect::<Vec<_>>()
        ));
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_memory_moves_between_servers_whole_and_a_damaged_file_writes_nothing() {
    let (source, target) = (TestServer::start().await, TestServer::start().await);
    let (from, to) = (source.admin().await, target.admin().await);
    let memory_id = fill(&from).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.jsonl");
    let exported = memctl(
        &source.endpoint(),
        &["export", &memory_id, "--output", file.to_str().unwrap()],
    )
    .await
    .unwrap();
    assert_eq!(exported["events"], 4, "{exported}");
    assert_eq!(exported["sessions"], 2, "{exported}");

    let imported = memctl(
        &target.endpoint(),
        &["import", file.to_str().unwrap(), "--name", "copy"],
    )
    .await
    .unwrap();
    assert_eq!(imported["events"], 4, "{imported}");
    assert_eq!(imported["recordVersions"], 2, "{imported}");
    assert_eq!(
        imported["eventsSkipped"],
        serde_json::json!([]),
        "{imported}"
    );
    let copy = imported["memoryId"].as_str().unwrap().to_owned();

    let (original, moved) = (
        from.get_memory(&memory_id).await.unwrap(),
        to.get_memory(&copy).await.unwrap(),
    );
    assert_eq!(moved.name, "copy");
    assert_eq!(moved.strategies, original.strategies);
    assert_eq!(moved.session_policy, original.session_policy);
    let before = events(&from, &memory_id).await;
    assert_eq!(events(&to, &copy).await, before);
    assert!(
        before
            .iter()
            .any(|(_, branch, _)| branch == "retry from \"My manager is Rui Costa.\"")
    );
    let records_before = records(&from, &memory_id).await;
    assert!(records_before.len() >= 4, "{records_before:#?}");
    assert!(
        records_before.iter().any(|r| r.contains(
            "history [\"Ann prefers tea.\", \"Ann prefers green tea.\", \"Ann prefers jasmine tea.\"]"
        )),
        "{records_before:#?}"
    );
    assert_eq!(records(&to, &copy).await, records_before);
    // Imported events are not extracted again: the file brought their records.
    assert!(extraction_jobs(&to, &copy).await.is_empty());

    // Again: idempotent, nothing doubles.
    let again = memctl(
        &target.endpoint(),
        &["import", file.to_str().unwrap(), "--name", "copy"],
    )
    .await
    .unwrap();
    assert_eq!(again["memoryId"], copy.as_str());
    assert_eq!(again["recordVersions"], 0, "{again}");
    assert_eq!(events(&to, &copy).await, before);
    assert_eq!(records(&to, &copy).await, records_before);

    // Under another name: a second copy beside the first, not the first found again.
    let second = memctl(
        &target.endpoint(),
        &["import", file.to_str().unwrap(), "--name", "copy-2"],
    )
    .await
    .unwrap();
    let second = second["memoryId"].as_str().unwrap().to_owned();
    assert_ne!(second, copy);
    assert_eq!(events(&to, &second).await, before);
    assert_eq!(records(&to, &second).await, records_before);
    assert_eq!(events(&to, &copy).await, before);

    // A file cut short is refused before anything is written.
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = dir.path().join("cut.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n")).unwrap();
    let refused = memctl(
        &target.endpoint(),
        &["import", cut.to_str().unwrap(), "--name", "broken"],
    )
    .await
    .unwrap_err();
    assert!(refused.contains("truncated"), "{refused}");
    let names: Vec<String> = to
        .all_memories()
        .map_ok(|m| m.name)
        .try_collect()
        .await
        .unwrap();
    assert!(!names.contains(&"broken".to_string()), "{names:?}");
}
