//! RetrieveMemoryRecords over the BM25 index: ranking, stemming, filters, pagination, tenant
//! policies inside the search, deletions, and recovery of the derived index.

use crate::assert_status;
use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, create_memory};
use std::time::Duration;
use tonic::Code;

fn record(namespace: &str, actor: &str, text: &str) -> pb::MemoryRecordInput {
    pb::MemoryRecordInput {
        namespace: namespace.into(),
        actor_id: actor.into(),
        text: text.into(),
        ..Default::default()
    }
}

fn request(memory_id: &str, namespace: &str, query: &str) -> pb::RetrieveMemoryRecordsRequest {
    pb::RetrieveMemoryRecordsRequest {
        memory_id: memory_id.into(),
        namespace: namespace.into(),
        search_criteria: Some(pb::SearchCriteria {
            search_query: query.into(),
            mode: pb::SearchMode::Keyword as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn texts(client: &MemdClient, request: pb::RetrieveMemoryRecordsRequest) -> Vec<String> {
    client
        .retrieve_memory_records(request)
        .await
        .unwrap()
        .memory_records
        .into_iter()
        .map(|r| r.memory_record.unwrap().text)
        .collect()
}

/// Waits until the query finds `expected` hits (records are searchable within a second).
async fn searchable(client: &MemdClient, memory_id: &str, query: &str, expected: usize) {
    for _ in 0..100 {
        if texts(client, request(memory_id, "", query)).await.len() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{query:?} never found {expected} records");
}

async fn seed(client: &MemdClient, memory_id: &str) -> Vec<String> {
    client
        .batch_create_memory_records(
            memory_id,
            vec![
                record(
                    "/users/ann/facts",
                    "acme/ann",
                    "Ann adopted a beagle named Max in June 2023.",
                ),
                record(
                    "/users/ann/facts",
                    "acme/ann",
                    "Ann's favourite food is ramen, especially tonkotsu.",
                ),
                record(
                    "/users/bob/facts",
                    "globex/bob",
                    "Bob adopted two cats from the shelter.",
                ),
                record(
                    "/users/ann/notes",
                    "acme/ann",
                    "Order A-1093 was refunded on 3 May 2023.",
                ),
            ],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.memory_record_id)
        .collect()
}

#[tokio::test]
async fn keyword_retrieval_ranks_filters_and_respects_policies() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "search", None).await.memory_id;
    let ids = seed(&admin, &m).await;
    searchable(&admin, &m, "adopted", 2).await;

    // Stemming: "adopting" finds "adopted"; ids and numbers are keywords too.
    assert_eq!(
        texts(&admin, request(&m, "", "adopting beagle")).await[0],
        "Ann adopted a beagle named Max in June 2023."
    );
    assert_eq!(
        texts(&admin, request(&m, "", "A-1093")).await,
        ["Order A-1093 was refunded on 3 May 2023."]
    );
    assert!(texts(&admin, request(&m, "", "zeppelin")).await.is_empty());

    // Scores come best first; a namespace prefix narrows the search.
    let found = admin
        .retrieve_memory_records(request(&m, "", "adopted beagle"))
        .await
        .unwrap();
    let scores: Vec<f64> = found.memory_records.iter().map(|r| r.score).collect();
    assert_eq!(scores.len(), 2);
    assert!(scores[0] > scores[1] && scores[1] > 0.0, "{scores:?}");
    assert_eq!(
        texts(&admin, request(&m, "/users/ann/", "adopted"))
            .await
            .len(),
        1
    );
    assert_eq!(
        texts(&admin, request(&m, "/users/a", "adopted"))
            .await
            .len(),
        1,
        "byte prefix"
    );
    let mut strict = request(&m, "", "adopted beagle");
    strict.search_criteria.as_mut().unwrap().min_score = scores[0] - 1e-6;
    assert_eq!(texts(&admin, strict).await.len(), 1);

    // Pages of one walk the same ranking.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let mut page = request(&m, "", "adopted beagle ramen");
        page.page_size = 1;
        page.page_token = token;
        let response = admin.retrieve_memory_records(page).await.unwrap();
        paged.extend(
            response
                .memory_records
                .into_iter()
                .map(|r| r.memory_record.unwrap().text),
        );
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        paged,
        texts(&admin, request(&m, "", "adopted beagle ramen")).await
    );
    assert_eq!(paged.len(), 3);

    // Policies apply inside the search: acme's key never sees Bob's record.
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
    assert_eq!(
        texts(&acme, request(&m, "", "adopted")).await,
        ["Ann adopted a beagle named Max in June 2023."]
    );
    let bob_ns_key = admin
        .create_api_key(
            "bob-ns",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["*".into()],
                namespace_prefixes: vec!["/users/bob/".into()],
                actions: vec![pb::api_key_policy::Action::Read as i32],
            },
        )
        .await
        .unwrap();
    let bob_ns = server.client(Some(&bob_ns_key.secret)).await;
    assert_eq!(
        texts(&bob_ns, request(&m, "", "adopted")).await,
        ["Bob adopted two cats from the shelter."]
    );

    // Bad input names the field; modes that need embeddings say so.
    assert_status(
        admin.retrieve_memory_records(request(&m, "", "  ")).await,
        Code::InvalidArgument,
        "search_criteria.search_query",
    );
    let mut hybrid = request(&m, "", "adopted");
    hybrid.search_criteria.as_mut().unwrap().mode = pb::SearchMode::Hybrid as i32;
    assert_status(
        admin.retrieve_memory_records(hybrid).await,
        Code::FailedPrecondition,
        "embedding_model",
    );
    let mut too_many = request(&m, "", "adopted");
    too_many.search_criteria.as_mut().unwrap().top_k = 101;
    assert_status(
        admin.retrieve_memory_records(too_many).await,
        Code::InvalidArgument,
        "top_k",
    );

    // A deleted record leaves the index.
    admin.delete_memory_record(&m, &ids[2]).await.unwrap();
    searchable(&admin, &m, "adopted", 1).await;
}

#[tokio::test]
async fn the_index_follows_restarts_and_rebuilds_when_lost() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "durable-search", None)
        .await
        .memory_id;
    seed(&admin, &m).await;
    // Restart right after the write: whatever the indexer had not applied is caught up
    // before the server serves again.
    let server = server.restart().await;
    let admin = server.admin().await;
    assert_eq!(texts(&admin, request(&m, "", "adopted")).await.len(), 2);

    // Lose the index entirely: it is rebuilt from RocksDB at start.
    let mut server = server;
    server.stop().await;
    std::fs::remove_dir_all(server.data_dir().join("index")).unwrap();
    let server = server.restart().await;
    let admin = server.admin().await;
    assert_eq!(texts(&admin, request(&m, "", "ramen")).await.len(), 1);
    assert_eq!(texts(&admin, request(&m, "", "adopted")).await.len(), 2);
}

fn event_search(memory_id: &str, actor: &str, query: &str) -> pb::SearchEventsRequest {
    pb::SearchEventsRequest {
        memory_id: memory_id.into(),
        actor_id: actor.into(),
        query: query.into(),
        ..Default::default()
    }
}

async fn event_texts(client: &MemdClient, request: pb::SearchEventsRequest) -> Vec<String> {
    client
        .search_events(request)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| memd_tests::text_of(e.event.as_ref().unwrap()).to_string())
        .collect()
}

#[tokio::test]
async fn search_events_finds_raw_turns_of_one_actor() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "event-search", None).await.memory_id;
    let put = |actor: &str, session: &str, text: &str, seconds: i64| pb::CreateEventRequest {
        event_timestamp: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        ..memd_tests::text_event(&m, actor, session, text)
    };
    let mut blob_only = memd_tests::text_event(&m, "acme/ann", "s1", "");
    blob_only.payload = vec![pb::PayloadItem {
        content: Some(pb::payload_item::Content::Blob(b"kayak".to_vec())),
    }];
    admin.create_event(blob_only).await.unwrap();
    admin
        .create_event(put(
            "acme/ann",
            "s1",
            "We booked the kayak tour for Saturday.",
            1_000,
        ))
        .await
        .unwrap();
    admin
        .create_event(put(
            "acme/ann",
            "s2",
            "The kayak rental shop closes at six.",
            2_000,
        ))
        .await
        .unwrap();
    let gone = admin
        .create_event(put(
            "acme/ann",
            "s2",
            "Kayak paddles are in the garage.",
            3_000,
        ))
        .await
        .unwrap();
    admin
        .create_event(put("globex/bob", "s1", "Bob sold his kayak.", 1_500))
        .await
        .unwrap();
    // Only the actor's own events with text; sessions and time ranges narrow it.
    let found = events_until(&admin, event_search(&m, "acme/ann", "kayak"), |t| {
        t.len() == 3
    })
    .await;
    assert_eq!(found.len(), 3, "{found:?}");
    let in_s1 = pb::SearchEventsRequest {
        session_ids: vec!["s1".into()],
        ..event_search(&m, "acme/ann", "kayak")
    };
    assert_eq!(
        event_texts(&admin, in_s1).await,
        ["We booked the kayak tour for Saturday."]
    );
    let early = pb::SearchEventsRequest {
        start_time: Some(prost_types::Timestamp {
            seconds: 1_500,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 2_500,
            nanos: 0,
        }),
        ..event_search(&m, "acme/ann", "kayak")
    };
    assert_eq!(
        event_texts(&admin, early).await,
        ["The kayak rental shop closes at six."]
    );
    assert_eq!(
        event_texts(&admin, event_search(&m, "acme/ann", "rental shop")).await[0],
        "The kayak rental shop closes at six."
    );

    // Another actor's key cannot search ann's events at all.
    let bob_key = admin
        .create_api_key(
            "bob",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["globex/*".into()],
                namespace_prefixes: vec!["/".into()],
                actions: vec![pb::api_key_policy::Action::Read as i32],
            },
        )
        .await
        .unwrap();
    let bob = server.client(Some(&bob_key.secret)).await;
    assert_status(
        bob.search_events(event_search(&m, "acme/ann", "kayak"))
            .await,
        Code::PermissionDenied,
        "acme/ann",
    );
    assert_eq!(
        event_texts(&bob, event_search(&m, "globex/bob", "kayak")).await,
        ["Bob sold his kayak."]
    );

    // Deleted events and erased actors leave the index.
    admin
        .delete_event(pb::DeleteEventRequest {
            memory_id: m.clone(),
            actor_id: "acme/ann".into(),
            session_id: "s2".into(),
            event_id: gone.event_id,
        })
        .await
        .unwrap();
    admin.delete_actor(&m, "globex/bob").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        event_texts(&admin, event_search(&m, "acme/ann", "kayak"))
            .await
            .len(),
        2
    );
    assert!(
        event_texts(&admin, event_search(&m, "globex/bob", "kayak"))
            .await
            .is_empty()
    );
    assert_status(
        admin.search_events(event_search(&m, "acme/ann", "")).await,
        Code::InvalidArgument,
        "query",
    );
}

/// Polls `fetch` until `done` holds for the texts it returns (extraction and indexing run in
/// the background; the index commits four times a second).
async fn until<Fut: std::future::Future<Output = Vec<String>>>(
    fetch: impl Fn() -> Fut,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut found = Vec::new();
    for _ in 0..150 {
        found = fetch().await;
        if done(&found) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    found
}

/// [`until`] for a records search.
async fn records_until(
    client: &MemdClient,
    request: pb::RetrieveMemoryRecordsRequest,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    until(|| texts(client, request.clone()), done).await
}

/// [`until`] for an events search.
async fn events_until(
    client: &MemdClient,
    search: pb::SearchEventsRequest,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    until(|| event_texts(client, search.clone()), done).await
}

#[tokio::test]
async fn raw_turns_are_found_by_the_turns_before_them() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "event-context", None).await.memory_id;
    let say = |session: &str, speaker: &str, text: &str| {
        memd_tests::named_event(&m, "mel", session, speaker, text)
    };
    let question = admin
        .create_event(say(
            "party",
            "Caroline",
            "Who played at the birthday concert?",
        ))
        .await
        .unwrap();
    admin
        .create_event(say("party", "Melanie", "Guess!"))
        .await
        .unwrap();
    let answer = "It was Matt Patterson, he is so talented!";
    admin
        .create_event(say("party", "Melanie", answer))
        .await
        .unwrap();
    admin
        .create_event(say("later", "Melanie", "Matt also sang on Sunday."))
        .await
        .unwrap();
    // The answer says nothing of a concert: the question two turns before it does.
    let found = events_until(&admin, event_search(&m, "mel", "birthday concert"), |t| {
        t.iter().any(|t| t == answer)
    })
    .await;
    assert!(found.iter().any(|t| t == answer), "{found:?}");
    // Context runs forwards only and stays within the session.
    assert_eq!(
        events_until(&admin, event_search(&m, "mel", "Patterson"), |t| t.len()
            == 1)
        .await,
        [answer]
    );
    assert_eq!(
        event_texts(&admin, event_search(&m, "mel", "Sunday")).await,
        ["Matt also sang on Sunday."]
    );
    // A deleted turn's words stop finding the turns after it.
    admin
        .delete_event(pb::DeleteEventRequest {
            memory_id: m.clone(),
            actor_id: "mel".into(),
            session_id: "party".into(),
            event_id: question.event_id,
        })
        .await
        .unwrap();
    let left = events_until(&admin, event_search(&m, "mel", "birthday concert"), |t| {
        t.is_empty()
    })
    .await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn get_context_packs_summary_turns_records_and_past_events() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "context".into(),
            strategies: vec![
                pb::MemoryStrategy {
                    strategy_id: "facts".into(),
                    r#type: pb::StrategyType::Semantic as i32,
                    ..Default::default()
                },
                pb::MemoryStrategy {
                    strategy_id: "summary".into(),
                    r#type: pb::StrategyType::Summary as i32,
                    triggers: Some(pb::ExtractionTriggers {
                        message_count: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .memory_id;
    let say = |session: &str, text: &str| memd_tests::named_event(&m, "ann", session, "Ann", text);
    // An earlier session with facts, then the session being resumed.
    admin
        .create_event(say("trip", "I booked a kayak tour in Lisbon for the 14th."))
        .await
        .unwrap();
    admin
        .create_event(say("trip", "My passport expires in March so I renewed it."))
        .await
        .unwrap();
    admin
        .create_event(say("today", "Can you check the weather for my tour?"))
        .await
        .unwrap();
    admin
        .create_event(say("today", "I also need a packing list."))
        .await
        .unwrap();
    let context = |query: &str, budget: i32| pb::GetContextRequest {
        memory_id: m.clone(),
        actor_id: "ann".into(),
        session_id: "today".into(),
        query: query.into(),
        token_budget: budget,
    };
    // Wait for extraction and indexing: the kayak fact must be retrievable.
    let mut full = None;
    for _ in 0..150 {
        let got = admin
            .get_context(context("kayak tour", 2000))
            .await
            .unwrap();
        let sources: Vec<i32> = got.items.iter().map(|i| i.source).collect();
        if sources.contains(&(pb::context_item::Source::MemoryRecord as i32))
            && sources.contains(&(pb::context_item::Source::SessionSummary as i32))
        {
            full = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full = full.expect("summary and records in the context");
    let of = |source: pb::context_item::Source| -> Vec<&pb::ContextItem> {
        full.items
            .iter()
            .filter(|i| i.source == source as i32)
            .collect()
    };
    assert_eq!(of(pb::context_item::Source::SessionSummary).len(), 1);
    let turns: Vec<&str> = of(pb::context_item::Source::RecentTurn)
        .iter()
        .map(|i| i.text.as_str())
        .collect();
    assert_eq!(
        turns,
        [
            "Ann: Can you check the weather for my tour?",
            "Ann: I also need a packing list."
        ]
    );
    let records = of(pb::context_item::Source::MemoryRecord);
    assert!(
        records[0].text.contains("kayak tour in Lisbon"),
        "{records:#?}"
    );
    assert!(records[0].score > 0.0 && !records[0].memory_record_id.is_empty());
    // The kayak event is cited by its record, so it is not repeated as a past event.
    assert!(
        of(pb::context_item::Source::PastEvent)
            .iter()
            .all(|i| !i.text.contains("kayak")),
        "{full:#?}"
    );
    let total: i32 = full.items.iter().map(|i| i.tokens).sum();
    assert_eq!(total, full.tokens_used);
    assert!(full.tokens_used <= 2000);

    // A small budget keeps the most important items and stays within it.
    let small = admin.get_context(context("kayak tour", 100)).await.unwrap();
    assert!(
        small.tokens_used <= 100 && !small.items.is_empty(),
        "{small:#?}"
    );
    assert!(small.items.len() < full.items.len());

    // A key for other actors gets nothing of ann's, not even an empty context.
    let other_key = admin
        .create_api_key(
            "others",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["acme/*".into()],
                namespace_prefixes: vec!["/".into()],
                actions: vec![pb::api_key_policy::Action::Read as i32],
            },
        )
        .await
        .unwrap();
    let other = server.client(Some(&other_key.secret)).await;
    assert_status(
        other.get_context(context("kayak tour", 2000)).await,
        Code::PermissionDenied,
        "ann",
    );

    // Bad budgets are rejected.
    assert_status(
        admin.get_context(context("kayak", 50)).await,
        Code::InvalidArgument,
        "token_budget",
    );
}

#[tokio::test]
async fn metadata_filters_apply_inside_the_search() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "meta-search", None).await.memory_id;
    let with = |text: &str, pairs: &[(&str, &str)]| pb::MemoryRecordInput {
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..record("/facts", "", text)
    };
    admin
        .batch_create_memory_records(
            &m,
            vec![
                with(
                    "Ann adopted a beagle.",
                    &[
                        ("topic", "pets"),
                        ("source", "chat-2023-05"),
                        ("cost", "120"),
                        ("at", "2023-05-07T10:00:00Z"),
                    ],
                ),
                with(
                    "Bob adopted two cats.",
                    &[
                        ("topic", "pets"),
                        ("cost", "-5.5"),
                        ("at", "2024-01-02T00:00:00Z"),
                    ],
                ),
                with(
                    "Cy adopted a new diet.",
                    &[("topic", "health"), ("cost", "120.0")],
                ),
            ],
        )
        .await
        .unwrap();
    searchable(&admin, &m, "adopted", 3).await;
    let filtered = |filters: Vec<pb::RecordMetadataFilter>| {
        let mut request = request(&m, "", "adopted");
        request.search_criteria.as_mut().unwrap().metadata_filters = filters;
        request
    };
    let filter =
        |key: &str, op: pb::RecordMetadataOperator, value: &str| pb::RecordMetadataFilter {
            key: key.into(),
            operator: op as i32,
            value: value.into(),
        };
    use pb::RecordMetadataOperator as Op;
    let mut pets = texts(
        &admin,
        filtered(vec![filter("topic", Op::EqualsTo, "pets")]),
    )
    .await;
    pets.sort();
    assert_eq!(pets, ["Ann adopted a beagle.", "Bob adopted two cats."]);
    assert_eq!(
        texts(&admin, filtered(vec![filter("source", Op::Exists, "")])).await,
        ["Ann adopted a beagle."]
    );
    let mut without = texts(&admin, filtered(vec![filter("source", Op::NotExists, "")])).await;
    without.sort();
    assert_eq!(without, ["Bob adopted two cats.", "Cy adopted a new diet."]);
    assert_eq!(
        texts(
            &admin,
            filtered(vec![filter("source", Op::Contains, "2023-05")])
        )
        .await,
        ["Ann adopted a beagle."]
    );
    assert_eq!(
        texts(
            &admin,
            filtered(vec![
                filter("topic", Op::EqualsTo, "pets"),
                filter("source", Op::NotExists, "")
            ])
        )
        .await,
        ["Bob adopted two cats."]
    );
    // Comparisons read numbers and RFC 3339 times.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let by = |key: &str, op: Op, value: &str| filtered(vec![filter(key, op, value)]);
    assert_eq!(
        sorted(texts(&admin, by("cost", Op::GreaterThanOrEquals, "120")).await),
        ["Ann adopted a beagle.", "Cy adopted a new diet."]
    );
    assert!(
        texts(&admin, by("cost", Op::GreaterThan, "120"))
            .await
            .is_empty()
    );
    assert_eq!(
        texts(&admin, by("cost", Op::LessThan, "0")).await,
        ["Bob adopted two cats."]
    );
    assert_eq!(
        sorted(texts(&admin, by("cost", Op::LessThanOrEquals, "120")).await),
        [
            "Ann adopted a beagle.",
            "Bob adopted two cats.",
            "Cy adopted a new diet."
        ]
    );
    assert_eq!(
        texts(&admin, by("at", Op::Before, "2024-01-01T00:00:00Z")).await,
        ["Ann adopted a beagle."]
    );
    assert_eq!(
        texts(&admin, by("at", Op::After, "2024-01-01T00:00:00Z")).await,
        ["Bob adopted two cats."]
    );
    assert_status(
        admin
            .retrieve_memory_records(by("source", Op::Before, "soon"))
            .await,
        Code::InvalidArgument,
        "metadata_filters[0].value",
    );
    assert_status(
        admin
            .retrieve_memory_records(filtered(vec![filter("", Op::Exists, "")]))
            .await,
        Code::InvalidArgument,
        "metadata_filters[0].key",
    );
}

#[tokio::test]
async fn reindex_rebuilds_online_and_needs_a_global_admin() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "reindex", None).await.memory_id;
    seed(&admin, &m).await;
    admin
        .create_event(memd_tests::text_event(
            &m,
            "acme/ann",
            "s1",
            "The kayak tour is on Saturday.",
        ))
        .await
        .unwrap();
    let done = admin.reindex().await.unwrap();
    assert_eq!((done.records_indexed, done.events_indexed), (4, 1));
    assert_eq!(texts(&admin, request(&m, "", "adopted")).await.len(), 2);
    let key = admin
        .create_api_key(
            "reader",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["*".into()],
                namespace_prefixes: vec!["/".into()],
                actions: vec![pb::api_key_policy::Action::Admin as i32],
            },
        )
        .await
        .unwrap();
    let scoped_admin = server.client(Some(&key.secret)).await;
    assert_status(
        scoped_admin.reindex().await,
        Code::PermissionDenied,
        "manage",
    );
}

#[tokio::test]
async fn extracted_facts_are_found_by_the_turn_they_answer() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = memd_tests::facts_memory(&admin, "context").await;
    let say =
        |speaker: &str, text: &str| memd_tests::named_event(&m, "john", "chat", speaker, text);
    admin
        .create_event(say(
            "Tim",
            "What are your plans once your basketball career is over?",
        ))
        .await
        .unwrap();
    admin
        .create_event(say(
            "John",
            "I want to start a foundation and do charity work. Kids deserve a chance.",
        ))
        .await
        .unwrap();
    // The fact says nothing of basketball: the question it answered does.
    let facts = |query: &str| {
        let mut req = request(&m, "", query);
        req.search_criteria.as_mut().unwrap().strategy_id = "facts".into();
        req
    };
    let found = records_until(&admin, facts("plans after basketball"), |t| {
        t.iter().any(|t| t.contains("foundation"))
    })
    .await;
    let foundation = found
        .iter()
        .find(|t| t.contains("foundation"))
        .unwrap_or_else(|| panic!("the answer was not found by its question: {found:?}"));
    // The context only helps find a record: it is not part of what is returned.
    assert!(!foundation.contains("basketball"), "{foundation}");
    // Words of neither turn find nothing.
    assert!(texts(&admin, facts("volcano")).await.is_empty());
}
