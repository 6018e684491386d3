//! Semantic and hybrid search with the real ONNX model (all-MiniLM-L6-v2, int8, loaded from
//! local files): paraphrases are found without shared words, exact tokens by keyword, every
//! filter applies inside the vector search, and the embeddings survive restarts.

use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, create_memory, settled, with_embeddings};
use std::time::Duration;

const FACTS: [(&str, &str, &str); 6] = [
    (
        "/users/ann/facts",
        "acme/ann",
        "Ann is allergic to peanuts.",
    ),
    (
        "/users/ann/facts",
        "acme/ann",
        "Ann's flight to Lisbon has booking reference XJ42Q.",
    ),
    (
        "/users/ann/facts",
        "acme/ann",
        "Ann plays the cello in a string quartet.",
    ),
    (
        "/users/ann/notes",
        "acme/ann",
        "Ann's laptop is a ten-year-old ThinkPad.",
    ),
    (
        "/users/bob/facts",
        "globex/bob",
        "Bob cannot eat shellfish.",
    ),
    (
        "/users/bob/facts",
        "globex/bob",
        "Bob runs marathons every spring.",
    ),
];

fn request(
    memory_id: &str,
    namespace: &str,
    query: &str,
    mode: pb::SearchMode,
) -> pb::RetrieveMemoryRecordsRequest {
    pb::RetrieveMemoryRecordsRequest {
        memory_id: memory_id.into(),
        namespace: namespace.into(),
        search_criteria: Some(pb::SearchCriteria {
            search_query: query.into(),
            mode: mode as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn found(
    client: &MemdClient,
    request: pb::RetrieveMemoryRecordsRequest,
) -> Vec<(String, f64)> {
    client
        .retrieve_memory_records(request)
        .await
        .unwrap()
        .memory_records
        .into_iter()
        .map(|r| (r.memory_record.unwrap().text, r.score))
        .collect()
}

async fn texts(client: &MemdClient, request: pb::RetrieveMemoryRecordsRequest) -> Vec<String> {
    found(client, request)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

/// Waits until semantic search sees `count` records (embedding runs behind the write) and
/// the keyword index has every change.
async fn embedded(client: &MemdClient, memory_id: &str, count: usize) {
    let mut seen = Vec::new();
    for _ in 0..300 {
        let mut all = request(memory_id, "", "anything at all", pb::SearchMode::Semantic);
        all.search_criteria.as_mut().unwrap().top_k = 100;
        seen = texts(client, all).await;
        // The keyword index (commits every 250 ms) may trail the embedder: wait for both.
        if seen.len() == count && client.index_status().await.unwrap().keyword_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the records were never all embedded: {seen:?}");
}

async fn seed(client: &MemdClient, memory_id: &str) {
    let records = FACTS
        .iter()
        .map(|(namespace, actor, text)| pb::MemoryRecordInput {
            namespace: (*namespace).into(),
            actor_id: (*actor).into(),
            text: (*text).into(),
            ..Default::default()
        })
        .collect();
    let results = client
        .batch_create_memory_records(memory_id, records)
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.code == 0), "{results:?}");
    embedded(client, memory_id, FACTS.len()).await;
}

#[tokio::test]
async fn paraphrases_need_embeddings_and_exact_tokens_need_keywords() {
    let server = TestServer::start_with(with_embeddings).await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "semantic", None).await.memory_id;
    seed(&admin, &m).await;

    // No word in common with "Ann is allergic to peanuts": BM25 has nothing to go on.
    let query = "what food must she avoid eating";
    assert!(
        texts(
            &admin,
            request(&m, "/users/ann/", query, pb::SearchMode::Keyword)
        )
        .await
        .is_empty()
    );
    let semantic = found(
        &admin,
        request(&m, "/users/ann/", query, pb::SearchMode::Semantic),
    )
    .await;
    assert_eq!(semantic[0].0, "Ann is allergic to peanuts.", "{semantic:?}");
    assert!(
        semantic[0].1 > 0.2 && semantic[0].1 <= 1.0,
        "a cosine: {semantic:?}"
    );
    assert!(semantic.windows(2).all(|w| w[0].1 >= w[1].1));
    let hybrid = texts(
        &admin,
        request(&m, "/users/ann/", query, pb::SearchMode::Hybrid),
    )
    .await;
    assert_eq!(hybrid[0], "Ann is allergic to peanuts.");
    // The default mode is hybrid on a server with embeddings.
    let default = texts(
        &admin,
        request(&m, "/users/ann/", query, pb::SearchMode::Unspecified),
    )
    .await;
    assert_eq!(default, hybrid);

    // An opaque token: keyword finds it, and hybrid keeps it first.
    let token = "XJ42Q";
    let flight = "Ann's flight to Lisbon has booking reference XJ42Q.";
    assert_eq!(
        texts(&admin, request(&m, "", token, pb::SearchMode::Keyword)).await,
        [flight]
    );
    assert_eq!(
        texts(&admin, request(&m, "", token, pb::SearchMode::Hybrid)).await[0],
        flight
    );

    // Namespace prefix inside the vector search: Bob's dietary fact only under his prefix.
    let bob = texts(
        &admin,
        request(&m, "/users/bob/", query, pb::SearchMode::Semantic),
    )
    .await;
    assert_eq!(bob[0], "Bob cannot eat shellfish.");
    assert!(bob.iter().all(|t| t.starts_with("Bob")), "{bob:?}");
    let notes = texts(
        &admin,
        request(&m, "/users/ann/notes", "computer", pb::SearchMode::Semantic),
    )
    .await;
    assert_eq!(notes, ["Ann's laptop is a ten-year-old ThinkPad."]);

    // A key limited to acme's actors never gets Bob's record, not even as a far hit.
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
    for mode in [pb::SearchMode::Semantic, pb::SearchMode::Hybrid] {
        let mut all = request(&m, "", "shellfish marathon", mode);
        all.search_criteria.as_mut().unwrap().top_k = 100;
        let seen = texts(&acme, all).await;
        assert_eq!(seen.len(), 4, "{mode:?}: {seen:?}");
        assert!(
            seen.iter().all(|t| t.starts_with("Ann")),
            "{mode:?}: {seen:?}"
        );
    }

    // Pagination over a semantic ranking: pages concatenate to the full list.
    let mut full = request(&m, "", query, pb::SearchMode::Semantic);
    full.search_criteria.as_mut().unwrap().top_k = 5;
    let all = texts(&admin, full.clone()).await;
    let mut paged = Vec::new();
    let mut page = full;
    page.page_size = 2;
    loop {
        let reply = admin.retrieve_memory_records(page.clone()).await.unwrap();
        paged.extend(
            reply
                .memory_records
                .into_iter()
                .map(|r| r.memory_record.unwrap().text),
        );
        if reply.next_page_token.is_empty() {
            break;
        }
        page.page_token = reply.next_page_token;
    }
    assert_eq!(paged, all);
    assert_eq!(all.len(), 5);
}

#[tokio::test]
async fn metadata_strategy_and_deletes_apply_inside_the_vector_search() {
    let server = TestServer::start_with(with_embeddings).await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "semantic-filters", None)
        .await
        .memory_id;
    let record = |text: &str, topic: &str, priority: &str| pb::MemoryRecordInput {
        namespace: "/users/ann/facts".into(),
        actor_id: "acme/ann".into(),
        text: text.into(),
        metadata: [
            ("topic".to_string(), topic.to_string()),
            ("priority".to_string(), priority.to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let created = admin
        .batch_create_memory_records(
            &m,
            vec![
                record("Ann loves hiking in the Alps.", "travel", "3"),
                record("Ann goes trekking in Nepal every autumn.", "travel", "9"),
                record("Ann climbs mountains on weekends.", "sport", "5"),
            ],
        )
        .await
        .unwrap();
    embedded(&admin, &m, 3).await;
    let query = "mountain walking holidays";
    let filtered = |op: pb::RecordMetadataOperator, key: &str, value: &str| {
        let mut r = request(&m, "", query, pb::SearchMode::Semantic);
        r.search_criteria.as_mut().unwrap().metadata_filters = vec![pb::RecordMetadataFilter {
            key: key.into(),
            operator: op as i32,
            value: value.into(),
        }];
        r
    };
    use pb::RecordMetadataOperator as Op;
    let travel = texts(&admin, filtered(Op::EqualsTo, "topic", "travel")).await;
    assert_eq!(travel.len(), 2, "{travel:?}");
    assert!(!travel.contains(&"Ann climbs mountains on weekends.".to_string()));
    assert_eq!(
        texts(&admin, filtered(Op::GreaterThan, "priority", "4"))
            .await
            .len(),
        2
    );
    assert_eq!(
        texts(&admin, filtered(Op::LessThan, "priority", "4")).await,
        ["Ann loves hiking in the Alps."]
    );
    assert!(
        texts(&admin, filtered(Op::NotExists, "topic", ""))
            .await
            .is_empty()
    );

    // A strategy no record has: nothing, rather than someone else's records.
    let mut strategy = request(&m, "", query, pb::SearchMode::Semantic);
    strategy.search_criteria.as_mut().unwrap().strategy_id = "facts".into();
    assert!(texts(&admin, strategy).await.is_empty());

    // A deleted record leaves the vector index.
    let id = created[2].memory_record_id.clone();
    admin.delete_memory_record(&m, &id).await.unwrap();
    for _ in 0..100 {
        if texts(&admin, request(&m, "", query, pb::SearchMode::Semantic))
            .await
            .len()
            == 2
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the deleted record stayed in semantic results");
}

#[tokio::test]
async fn embeddings_are_stored_and_reloaded_after_a_restart() {
    let server = TestServer::start_with(with_embeddings).await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "semantic-restart", None)
        .await
        .memory_id;
    seed(&admin, &m).await;
    let query = "what food must she avoid eating";
    let before = texts(
        &admin,
        request(&m, "/users/ann/", query, pb::SearchMode::Semantic),
    )
    .await;
    let server = server.restart().await;
    let admin = server.admin().await;
    // Loaded from RocksDB at start, not re-embedded: there at once.
    let after = texts(
        &admin,
        request(&m, "/users/ann/", query, pb::SearchMode::Semantic),
    )
    .await;
    assert_eq!(after, before);
    assert_eq!(after[0], "Ann is allergic to peanuts.");

    // Reindex re-embeds everything in the background; the status shows it until done, and
    // the same ranking comes back.
    let status = admin.index_status().await.unwrap();
    assert!(status.embedding_model.starts_with("local:"), "{status:?}");
    let reindexed = admin.reindex().await.unwrap();
    assert!(reindexed.vectors_rebuilding);
    assert_eq!(reindexed.records_indexed, FACTS.len() as i64);
    let mut settled = false;
    for _ in 0..300 {
        let status = admin.index_status().await.unwrap();
        if !status.vectors_rebuilding && status.vectors_pending == 0 && status.keyword_pending == 0
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "re-embedding never finished");
    let again = texts(
        &admin,
        request(&m, "/users/ann/", query, pb::SearchMode::Semantic),
    )
    .await;
    assert_eq!(again, before);
}

#[tokio::test]
async fn search_events_and_context_use_meaning() {
    let server = TestServer::start_with(with_embeddings).await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "semantic-events", None)
        .await
        .memory_id;
    for (session, text) in [
        (
            "s1",
            "We finally adopted a puppy from the shelter last week!",
        ),
        ("s1", "The quarterly tax forms are due on Friday."),
        ("s2", "My sister is visiting from Toronto in March."),
    ] {
        admin
            .create_event(memd_tests::text_event(&m, "acme/ann", session, text))
            .await
            .unwrap();
    }
    admin
        .create_event(memd_tests::text_event(
            &m,
            "globex/bob",
            "s9",
            "Our new dog chews every shoe.",
        ))
        .await
        .unwrap();
    let search = |mode: pb::SearchMode, sessions: Vec<String>| pb::SearchEventsRequest {
        memory_id: m.clone(),
        actor_id: "acme/ann".into(),
        query: "new pet dog".into(),
        mode: mode as i32,
        session_ids: sessions,
        ..Default::default()
    };
    let mut hits = Vec::new();
    for _ in 0..300 {
        hits = admin
            .search_events(search(pb::SearchMode::Semantic, vec![]))
            .await
            .unwrap()
            .events;
        if hits.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = |e: &pb::ScoredEvent| memd_tests::text_of(e.event.as_ref().unwrap()).to_string();
    assert_eq!(hits.len(), 3, "only Ann's three events");
    assert_eq!(
        text(&hits[0]),
        "We finally adopted a puppy from the shelter last week!"
    );
    let keyword = admin
        .search_events(search(pb::SearchMode::Keyword, vec![]))
        .await
        .unwrap()
        .events;
    assert!(keyword.is_empty(), "no shared words: {keyword:?}");
    let in_s2 = admin
        .search_events(search(pb::SearchMode::Hybrid, vec!["s2".into()]))
        .await
        .unwrap()
        .events;
    assert_eq!(in_s2.len(), 1);
    assert_eq!(
        text(&in_s2[0]),
        "My sister is visiting from Toronto in March."
    );

    // GetContext ranks past events by meaning too.
    let context = admin
        .get_context(pb::GetContextRequest {
            memory_id: m.clone(),
            actor_id: "acme/ann".into(),
            session_id: "s3".into(),
            query: "does she have any animals at home".into(),
            token_budget: 100,
        })
        .await
        .unwrap();
    let first = context.items.first().expect("a past event");
    assert!(
        first
            .text
            .ends_with("We finally adopted a puppy from the shelter last week!"),
        "{first:?}"
    );
}

#[tokio::test]
async fn records_only_embedding_keeps_event_search_on_keywords() {
    let server = TestServer::start_with(|config| {
        with_embeddings(config);
        config.embedding_events = false;
    })
    .await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "records-only", None).await.memory_id;
    admin
        .create_event(memd_tests::text_event(
            &m,
            "acme/ann",
            "s1",
            "We finally adopted a puppy from the shelter last week!",
        ))
        .await
        .unwrap();
    seed(&admin, &m).await;
    let search = |mode: pb::SearchMode, query: &str| pb::SearchEventsRequest {
        memory_id: m.clone(),
        actor_id: "acme/ann".into(),
        query: query.into(),
        mode: mode as i32,
        ..Default::default()
    };
    crate::assert_status(
        admin
            .search_events(search(pb::SearchMode::Semantic, "new pet dog"))
            .await,
        tonic::Code::FailedPrecondition,
        "embedding_events",
    );
    // Unset mode is keyword for events here: the paraphrase is not found, the word is.
    let unset = admin
        .search_events(search(pb::SearchMode::Unspecified, "new pet dog"))
        .await
        .unwrap();
    assert!(unset.events.is_empty(), "{unset:?}");
    let word = admin
        .search_events(search(pb::SearchMode::Unspecified, "puppy"))
        .await
        .unwrap();
    assert_eq!(word.events.len(), 1);
    // Records are still embedded and searched by meaning; no event took an embedding.
    let query = "what food must she avoid eating";
    let found = texts(
        &admin,
        request(&m, "/users/ann/", query, pb::SearchMode::Semantic),
    )
    .await;
    assert_eq!(found[0], "Ann is allergic to peanuts.");
    let status = admin.index_status().await.unwrap();
    assert!(
        status.embedding_model.ends_with(":records-only"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_partitioned_memory_keeps_filters_inside_and_survives_a_restart() {
    // Partitioned from 150 vectors, so that a test can cross the threshold: the same lists
    // as a memory of 100k, built live by the embedder and again after a restart.
    let server = TestServer::start_with(|config| {
        with_embeddings(config);
        config.vector_partition_at = 150;
    })
    .await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "semantic-partitioned", None)
        .await
        .memory_id;
    seed(&admin, &m).await;
    const TOPICS: [&str; 8] = [
        "booked a kayak tour",
        "ordered ramen for dinner",
        "renewed a gym membership",
        "repaired the garden fence",
        "bought concert tickets",
        "painted the spare bedroom",
        "adopted a rescue cat",
        "started learning Italian",
    ];
    let fillers: Vec<pb::MemoryRecordInput> = (0..240)
        .map(|i| pb::MemoryRecordInput {
            namespace: format!("/users/filler{}/facts", i % 12),
            actor_id: "acme/filler".into(),
            text: format!("Filler {i} {} in week {}.", TOPICS[i % 8], i / 8),
            ..Default::default()
        })
        .collect();
    for chunk in fillers.chunks(100) {
        let results = admin
            .batch_create_memory_records(&m, chunk.to_vec())
            .await
            .unwrap();
        assert!(results.iter().all(|r| r.code == 0), "{results:?}");
    }
    settled(&admin).await;
    // Crossing the threshold partitioned the memory's records on the embedder's thread.
    assert_eq!(admin.index_status().await.unwrap().vectors_partitioned, 1);

    let ann_food = || {
        request(
            &m,
            "/users/ann/",
            "what food must she avoid eating",
            pb::SearchMode::Semantic,
        )
    };
    let cello = || {
        let mut r = request(
            &m,
            "",
            "who plays a string instrument",
            pb::SearchMode::Hybrid,
        );
        r.search_criteria.as_mut().unwrap().top_k = 5;
        r
    };
    let check = |ann: &[String], cello: &[String]| {
        // Four of 246 vectors pass the namespace filter: all four come back, best first.
        assert_eq!(ann.len(), 4, "{ann:?}");
        assert_eq!(ann[0], "Ann is allergic to peanuts.");
        assert!(
            FACTS
                .iter()
                .filter(|f| f.0.starts_with("/users/ann/"))
                .all(|f| ann.contains(&f.2.to_string()))
        );
        assert_eq!(cello.len(), 5);
        assert_eq!(cello[0], "Ann plays the cello in a string quartet.");
    };
    let before = (
        texts(&admin, ann_food()).await,
        texts(&admin, cello()).await,
    );
    check(&before.0, &before.1);
    let bob = texts(
        &admin,
        request(&m, "/users/bob/", "food allergy", pb::SearchMode::Semantic),
    )
    .await;
    assert_eq!(bob.len(), 2, "{bob:?}");
    assert!(bob.iter().all(|t| t.starts_with("Bob")), "{bob:?}");

    // After a restart the vectors are loaded flat and partitioned in the background: the
    // answers are the same before, during and after.
    let server = server.restart().await;
    let admin = server.admin().await;
    let mut partitioned = false;
    for _ in 0..1200 {
        let after = (
            texts(&admin, ann_food()).await,
            texts(&admin, cello()).await,
        );
        check(&after.0, &after.1);
        assert_eq!(after.0, before.0);
        if partitioned {
            break;
        }
        partitioned = admin.index_status().await.unwrap().vectors_partitioned == 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(partitioned, "the loaded vectors were never partitioned");
}

#[tokio::test]
async fn a_record_that_restates_a_better_ones_turn_moves_down() {
    let server = TestServer::start_with(with_embeddings).await;
    let admin = server.admin().await;
    let m = memd_tests::facts_memory(&admin, "restated").await;
    // The first turn gives two facts about the kayak; the second turn's fact is about a canoe,
    // less close to the query than either.
    for text in [
        "I bought a red kayak last week. I take my kayak out on the lake every morning.",
        "My brother Tom paddles a canoe on the river.",
        "The quarterly tax forms are due on Friday.",
        "I am learning to bake sourdough bread.",
    ] {
        admin
            .create_event(memd_tests::named_event(&m, "ann", "s1", "Ann", text))
            .await
            .unwrap();
    }
    let kayak = || {
        let mut req = request(&m, "", "kayak", pb::SearchMode::Hybrid);
        req.search_criteria.as_mut().unwrap().strategy_id = "facts".into();
        req
    };
    let mut hits = Vec::new();
    for _ in 0..600 {
        settled(&admin).await;
        hits = admin
            .retrieve_memory_records(kayak())
            .await
            .unwrap()
            .memory_records;
        // Hybrid search returns every record here (each has some similarity): wait for the
        // five facts of the four turns.
        if hits.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records: Vec<(String, Vec<String>, f64)> = hits
        .into_iter()
        .map(|r| {
            let record = r.memory_record.unwrap();
            (record.text, record.source_event_ids, r.score)
        })
        .collect();
    let from_first: Vec<usize> = (0..records.len())
        .filter(|i| records[*i].0.contains("kayak") && !records[*i].0.contains("Tom"))
        .collect();
    let brother = records.iter().position(|r| r.0.contains("Tom"));
    assert_eq!(
        from_first.len(),
        2,
        "two facts of the first turn: {records:#?}"
    );
    assert_eq!(
        records[from_first[0]].1, records[from_first[1]].1,
        "both cite the first turn: {records:#?}"
    );
    // The second fact of the first turn only restates its turn: the other turn's fact takes
    // the place before it (without the demotion it ranks third).
    let brother = brother.unwrap_or_else(|| panic!("the brother's fact: {records:#?}"));
    assert!(
        from_first[0] < brother && brother < from_first[1],
        "{records:#?}"
    );
    assert!(
        records.windows(2).all(|w| w[0].2 >= w[1].2),
        "scores still descend: {records:#?}"
    );
}
