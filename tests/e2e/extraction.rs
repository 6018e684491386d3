//! Long-term memory through the public API: strategies extract records in the background,
//! with provenance, consolidation, idempotent re-ingestion, isolation and erasure.

use crate::assert_status;
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, extraction_jobs as jobs, memory_records as records};
use std::time::Duration;
use tonic::Code;

fn strategy(id: &str, kind: pb::StrategyType) -> pb::MemoryStrategy {
    pb::MemoryStrategy {
        strategy_id: id.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

fn said(
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    speaker: &str,
    text: &str,
    token: &str,
) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        memory_id: memory_id.into(),
        actor_id: actor_id.into(),
        session_id: session_id.into(),
        // 8 May 2023, 13:56 UTC: relative dates resolve against this.
        event_timestamp: Some(prost_types::Timestamp {
            seconds: 1_683_554_160,
            nanos: 0,
        }),
        payload: vec![memd_client::named_turn(pb::Role::User, speaker, text)],
        client_token: token.into(),
        ..Default::default()
    }
}

/// Polls until the job queue is empty and `done` holds (at most 20 s).
async fn settle<F, Fut>(client: &MemdClient, memory_id: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..400 {
        if jobs(client, memory_id).await.is_empty() && done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "extraction did not settle; jobs left: {:#?}",
        jobs(client, memory_id).await
    );
}

#[tokio::test]
async fn a_conversation_becomes_facts_preferences_a_summary_and_an_episode() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = client
        .create_memory(pb::CreateMemoryRequest {
            name: "longterm".into(),
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
        .unwrap();
    let m = memory.memory_id.clone();
    let conversation = [
        ("Caroline", "Hey Mel! Good to see you! How have you been?"),
        (
            "Melanie",
            "Hey Caroline! I'm swamped with the kids & work. What's up with you?",
        ),
        (
            "Caroline",
            "I went to a LGBTQ support group yesterday and it was so powerful.",
        ),
        (
            "Melanie",
            "Wow, that's cool! What kind of music do you like?",
        ),
        (
            "Caroline",
            "I love classical music, especially Bach. Thanks for asking!",
        ),
        (
            "Melanie",
            "I ran a charity race for mental health last Saturday with 300 people.",
        ),
    ];
    let mut event_ids = Vec::new();
    for (i, (speaker, text)) in conversation.iter().enumerate() {
        let event = client
            .create_event(said(&m, "conv-1", "s1", speaker, text, &format!("t{i}")))
            .await
            .unwrap();
        event_ids.push(event.event_id);
    }

    let facts_ns = "/strategies/facts/actors/conv-1";
    let summary_ns = "/strategies/summaries/actors/conv-1/sessions/s1";
    let episode_ns = "/strategies/episodes/actors/conv-1/sessions/s1";
    // Summaries and episodes are final once the session has terminated (after 2 s idle).
    settle(&client, &m, || async {
        records(&client, &m, episode_ns).await.len() == 1
            && records(&client, &m, summary_ns)
                .await
                .first()
                .is_some_and(|r| r.text.starts_with("Conversation between"))
    })
    .await;

    let facts = records(&client, &m, facts_ns).await;
    let group = facts
        .iter()
        .find(|r| r.text.contains("support group"))
        .unwrap_or_else(|| panic!("no support-group fact in {facts:#?}"));
    assert_eq!(
        group.text,
        "Caroline went to a LGBTQ support group on 7 May 2023 and it was so powerful."
    );
    assert_eq!(group.source_event_ids, [event_ids[2].clone()]);
    assert_eq!(
        (
            group.strategy_id.as_str(),
            group.actor_id.as_str(),
            group.extractor.as_str()
        ),
        ("facts", "conv-1", "builtin")
    );
    assert_eq!(group.namespace, facts_ns);
    assert!(group.valid_from.is_some() && group.invalid_from.is_none());
    assert!(
        facts.iter().any(|r| r.text.contains("Melanie ran a charity race")
            && r.text.contains("300 people")),
        "{facts:#?}"
    );
    assert!(
        facts.iter().all(|r| !r.text.contains("Good to see you")),
        "small talk became a fact: {facts:#?}"
    );

    // Pages of one record each walk the same records in the same order.
    let all = records(&client, &m, "").await;
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_memory_records(pb::ListMemoryRecordsRequest {
                memory_id: m.clone(),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        paged.extend(page.memory_records);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, all);
    let strategy_only: Vec<pb::MemoryRecord> = client
        .all_memory_records(pb::ListMemoryRecordsRequest {
            memory_id: m.clone(),
            strategy_id: "facts".into(),
            page_size: 2,
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(strategy_only, facts);

    let prefs = records(&client, &m, "/strategies/prefs/").await;
    assert_eq!(prefs.len(), 1, "{prefs:#?}");
    assert!(
        prefs[0].text.starts_with("Caroline loves classical music"),
        "{prefs:#?}"
    );

    let summary = &records(&client, &m, summary_ns).await[0];
    assert!(
        summary.text.contains("Caroline and Melanie"),
        "{}",
        summary.text
    );
    assert!(summary.text.contains("support group"), "{}", summary.text);
    assert_eq!(summary.session_id, "s1");
    let fetched = client
        .get_memory_record(&m, &summary.memory_record_id)
        .await
        .unwrap();
    assert_eq!(&fetched, summary);

    // A second session's episode makes the first reflection across the actor's episodes.
    for (i, text) in [
        "I went to a pottery class on Tuesday and made a bowl.",
        "I signed up for a second pottery class next week.",
    ]
    .iter()
    .enumerate()
    {
        client
            .create_event(said(&m, "conv-1", "s2", "Caroline", text, &format!("u{i}")))
            .await
            .unwrap();
    }
    let reflections_ns = "/strategies/episodes/actors/conv-1/reflections";
    settle(&client, &m, || async {
        records(&client, &m, reflections_ns).await.len() == 1
    })
    .await;
    let reflection = &records(&client, &m, reflections_ns).await[0];
    assert!(
        reflection
            .text
            .starts_with("Across 2 episodes from 8 May 2023 to 8 May 2023"),
        "{}",
        reflection.text
    );
    assert_eq!(
        records(&client, &m, "/strategies/episodes/actors/conv-1/sessions/")
            .await
            .len(),
        2
    );

    // Re-ingesting the same events (same client tokens) writes nothing and queues nothing.
    let before = records(&client, &m, "").await;
    for (i, (speaker, text)) in conversation.iter().enumerate() {
        let again = client
            .create_event(said(&m, "conv-1", "s1", speaker, text, &format!("t{i}")))
            .await
            .unwrap();
        assert_eq!(again.event_id, event_ids[i]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs(&client, &m).await.is_empty());
    assert_eq!(records(&client, &m, "").await, before);
}

#[tokio::test]
async fn consolidation_skip_isolation_and_erasure() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let memory = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "tenants".into(),
            strategies: vec![strategy("facts", pb::StrategyType::Semantic)],
            ..Default::default()
        })
        .await
        .unwrap();
    let m = memory.memory_id.clone();
    let ann = [
        "I adopted a dog named Luna from the shelter.",
        "I live in Boston with my partner Sam.",
        "I adopted a dog named Luna from the shelter!",
        "I live in Denver now, since the move in March.",
    ];
    let mut ann_events = Vec::new();
    for (i, text) in ann.iter().enumerate() {
        let event = admin
            .create_event(said(&m, "acme/ann", "s1", "Ann", text, &format!("a{i}")))
            .await
            .unwrap();
        ann_events.push(event.event_id);
    }
    let mut secret = said(
        &m,
        "acme/ann",
        "s1",
        "Ann",
        "I secretly practice karaoke every Friday at the Blue Bar.",
        "",
    );
    secret.extraction_mode = pb::ExtractionMode::Skip as i32;
    admin.create_event(secret).await.unwrap();
    admin
        .create_event(said(
            &m,
            "globex/bob",
            "s1",
            "Bob",
            "I work at Initech as a database engineer since 2019.",
            "",
        ))
        .await
        .unwrap();
    let ann_ns = "/strategies/facts/actors/acme/ann";
    settle(&admin, &m, || async {
        records(&admin, &m, ann_ns).await.len() == 2
            && records(&admin, &m, "/strategies/facts/actors/globex/")
                .await
                .len()
                == 1
    })
    .await;

    // The same fact twice is one record with both events as provenance; the move
    // supersedes the old address, which stays in history with its validity closed.
    let ann_records = records(&admin, &m, ann_ns).await;
    let dog = ann_records
        .iter()
        .find(|r| r.text.contains("Luna"))
        .unwrap();
    assert_eq!(
        dog.source_event_ids,
        [ann_events[0].clone(), ann_events[2].clone()]
    );
    let home = ann_records
        .iter()
        .find(|r| r.text.contains("lives in"))
        .unwrap();
    assert!(home.text.starts_with("Ann lives in Denver"), "{home:#?}");
    let history = admin
        .get_memory_record_history(&m, &home.memory_record_id)
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert!(history[1].text.starts_with("Ann lives in Boston"));
    assert!(history[1].invalid_from.is_some());
    assert_eq!(history[1].superseded_by, home.memory_record_id);
    assert!(
        ann_records.iter().all(|r| !r.text.contains("karaoke")),
        "a SKIP event was extracted: {ann_records:#?}"
    );

    // A key for acme/* sees acme's records only; another's are NOT_FOUND, not DENIED.
    let acme_key = admin
        .create_api_key(
            "acme",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["acme/*".into()],
                namespace_prefixes: vec!["/".into()],
                actions: vec![pb::api_key_policy::Action::Read as i32],
            },
        )
        .await
        .unwrap();
    let acme = server.client(Some(&acme_key.secret)).await;
    let seen = records(&acme, &m, "").await;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.actor_id == "acme/ann"));
    let bob = records(&admin, &m, "/strategies/facts/actors/globex/").await;
    let bob_id = bob[0].memory_record_id.clone();
    assert_status(
        acme.get_memory_record(&m, &bob_id).await,
        Code::NotFound,
        "memory record",
    );
    assert_status(
        acme.get_memory_record_history(&m, &bob_id).await,
        Code::NotFound,
        "memory record",
    );
    assert_status(
        acme.delete_memory_record(&m, &dog.memory_record_id).await,
        Code::PermissionDenied,
        "write",
    );
    let narrow_key = admin
        .create_api_key(
            "narrow",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["*".into()],
                namespace_prefixes: vec!["/strategies/other/".into()],
                actions: vec![pb::api_key_policy::Action::Read as i32],
            },
        )
        .await
        .unwrap();
    let narrow = server.client(Some(&narrow_key.secret)).await;
    assert!(records(&narrow, &m, "").await.is_empty());

    // Bad input names the field.
    assert_status(
        admin.get_memory_record(&m, "not an id!").await,
        Code::InvalidArgument,
        "memory_record_id",
    );

    // DeleteActor erases the actor's records and their history; others stay.
    admin.delete_actor(&m, "acme/ann").await.unwrap();
    assert!(records(&admin, &m, ann_ns).await.is_empty());
    assert_status(
        admin
            .get_memory_record(&m, &history[1].memory_record_id)
            .await,
        Code::NotFound,
        "memory record",
    );
    assert_eq!(admin.get_memory_record(&m, &bob_id).await.unwrap(), bob[0]);

    // Deleting one record.
    admin.delete_memory_record(&m, &bob_id).await.unwrap();
    assert!(records(&admin, &m, "").await.is_empty());
}

#[tokio::test]
async fn token_idle_and_skip_triggers_make_the_right_jobs() {
    // Workers off: the jobs stay queued, so the test sees exactly what the triggers made.
    let server = TestServer::start_with(|config| config.extraction_enabled = false).await;
    let client = server.admin().await;
    let memory = client
        .create_memory(pb::CreateMemoryRequest {
            name: "triggers".into(),
            strategies: vec![pb::MemoryStrategy {
                strategy_id: "facts".into(),
                r#type: pb::StrategyType::Semantic as i32,
                triggers: Some(pb::ExtractionTriggers {
                    message_count: 0,
                    token_count: 30,
                    idle_seconds: 1,
                    on_session_end: false,
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let m = memory.memory_id.clone();
    // ~10 tokens each (4 characters per token): the third crosses 30.
    let short = "I adopted a dog named Luna in May.";
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(
            client
                .create_event(said(&m, "ann", "s1", "Ann", short, &format!("a{i}")))
                .await
                .unwrap()
                .event_id,
        );
    }
    assert!(
        jobs(&client, &m).await.is_empty(),
        "below the token trigger"
    );
    let mut skipped = said(&m, "ann", "s1", "Ann", &"Not for memory. ".repeat(20), "");
    skipped.extraction_mode = pb::ExtractionMode::Skip as i32;
    client.create_event(skipped).await.unwrap();
    assert!(
        jobs(&client, &m).await.is_empty(),
        "skipped events count no tokens"
    );
    ids.push(
        client
            .create_event(said(
                &m,
                "ann",
                "s1",
                "Ann",
                "My sister Jo moved to Porto last year and opened a bakery there.",
                "a2",
            ))
            .await
            .unwrap()
            .event_id,
    );
    let queued = jobs(&client, &m).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(
        (queued[0].trigger.as_str(), queued[0].event_ids.clone()),
        ("tokens", ids.clone())
    );

    // One more short event, then silence: the idle trigger takes it after a second.
    let last = client
        .create_event(said(&m, "ann", "s1", "Ann", short, "a3"))
        .await
        .unwrap()
        .event_id;
    let idle = async {
        loop {
            let all = jobs(&client, &m).await;
            if let Some(job) = all.iter().find(|j| j.trigger == "idle") {
                return job.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let idle = tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .expect("an idle job");
    assert_eq!(idle.event_ids, [last]);
    assert_eq!(jobs(&client, &m).await.len(), 2);
}
