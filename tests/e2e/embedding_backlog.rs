//! The embedding backlog policy: when conversation turns arrive faster than the model embeds
//! them, records are embedded ahead of the turns logged before them (and not again when the
//! log reaches them), a turn that has waited longer than `embedding_max_lag_seconds` is
//! skipped rather than embedded late, and how far each index lags is reported.

use memd_client::{MemdClient, pb, turn};
use memd_tests::{TestServer, create_memory, with_embeddings};
use std::time::Duration;

/// Writes `count` turns of acme/ann (without extraction) from 8 concurrent clients, so that
/// they arrive faster than one model embeds them.
async fn flood(server: &TestServer, memory_id: &str, count: usize) {
    let mut writers = Vec::new();
    for writer in 0..8 {
        let client = server.admin().await;
        let memory_id = memory_id.to_string();
        writers.push(tokio::spawn(async move {
            for i in (writer..count).step_by(8) {
                client
                    .create_event(pb::CreateEventRequest {
                        memory_id: memory_id.clone(),
                        actor_id: "acme/ann".into(),
                        session_id: format!("s{writer}"),
                        payload: vec![turn(
                            pb::Role::User,
                            format!(
                                "Turn {i}: the shipment for warehouse {} is delayed.",
                                i % 13
                            ),
                        )],
                        extraction_mode: pb::ExtractionMode::Skip as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// Polls the index status until `done` holds.
async fn wait_for(
    client: &MemdClient,
    what: &str,
    done: impl Fn(&pb::IndexStatus) -> bool,
) -> pb::IndexStatus {
    let mut status = pb::IndexStatus::default();
    for _ in 0..1200 {
        status = client.index_status().await.unwrap();
        if done(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never {what}: {status:?}");
}

fn caught_up(status: &pb::IndexStatus) -> bool {
    status.vectors_pending == 0 && status.keyword_pending == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_embedded_ahead_of_a_backlog_of_turns_and_only_once() {
    const TURNS: usize = 1200;
    let server = TestServer::start_with(|config| {
        with_embeddings(config);
        config.embedding_max_lag_seconds = 0;
    })
    .await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "records-first", None).await.memory_id;
    flood(&server, &m, TURNS).await;
    let record = pb::MemoryRecordInput {
        namespace: "/users/ann/facts".into(),
        actor_id: "acme/ann".into(),
        text: "Ann's favourite composer is Hildegard von Bingen.".into(),
        ..Default::default()
    };
    admin
        .batch_create_memory_records(&m, vec![record])
        .await
        .unwrap();
    // Found by meaning while turns logged before it still wait.
    let mut found = false;
    for _ in 0..1200 {
        let answer = admin
            .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                memory_id: m.clone(),
                namespace: "/users/ann".into(),
                search_criteria: Some(pb::SearchCriteria {
                    search_query: "which music does she like".into(),
                    mode: pb::SearchMode::Semantic as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        found = answer
            .memory_records
            .iter()
            .filter_map(|r| r.memory_record.as_ref())
            .any(|r| r.text.contains("Hildegard"));
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "the record was never found by meaning");
    let status = admin.index_status().await.unwrap();
    assert!(
        status.embedded_events < TURNS as i64 && status.vectors_pending > 0,
        "the record waited for every turn logged before it: {status:?}"
    );
    assert!(
        status.record_vectors_lag_seconds <= status.vectors_lag_seconds,
        "{status:?}"
    );

    // When the log reaches the record it keeps its vector: every document embedded once.
    let status = wait_for(&admin, "caught up", |s| {
        caught_up(s) && s.embedded_events >= TURNS as i64
    })
    .await;
    assert_eq!(
        (
            status.embedded_events,
            status.embedded_records,
            status.reembedded_records
        ),
        (TURNS as i64, 1, 0),
        "{status:?}"
    );
    assert_eq!(status.skipped_events, 0, "{status:?}");
    assert_eq!(status.vectors_lag_seconds, 0.0, "{status:?}");
    assert_eq!(status.record_vectors_lag_seconds, 0.0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_that_waited_too_long_are_skipped_but_stay_keyword_searchable() {
    const TURNS: usize = 1500;
    let server = TestServer::start_with(|config| {
        with_embeddings(config);
        config.embedding_max_lag_seconds = 1;
    })
    .await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "bounded-lag", None).await.memory_id;
    flood(&server, &m, TURNS).await;
    let status = wait_for(&admin, "caught up", caught_up).await;
    // Embedding 1,500 turns takes far longer than a second on any CPU: most were skipped, and
    // every turn was either embedded or skipped, none both.
    assert!(status.skipped_events > 0, "{status:?}");
    assert_eq!(
        status.embedded_events + status.skipped_events,
        TURNS as i64,
        "{status:?}"
    );
    let all = admin
        .search_events(pb::SearchEventsRequest {
            memory_id: m.clone(),
            actor_id: "acme/ann".into(),
            query: "shipment warehouse delayed".into(),
            mode: pb::SearchMode::Keyword as i32,
            top_k: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.events.len(), 100, "keyword search lost skipped turns");

    // Once caught up, a new turn is embedded again: the lag is bounded, not the embedding off.
    super::embedding_counts::note(&admin, &m, "The invoice from Lisbon is paid.").await;
    let after = wait_for(&admin, "embedded the new turn", |s| {
        caught_up(s) && s.embedded_events > status.embedded_events
    })
    .await;
    assert_eq!(
        after.embedded_events,
        status.embedded_events + 1,
        "{after:?}"
    );
    assert_eq!(after.skipped_events, status.skipped_events, "{after:?}");
}
