//! What the embedding thread reports having embedded (GetIndexStatus, /metrics): every event
//! and record once, a record again only when its text changes, and nothing again after a
//! restart, whose stored vectors are loaded instead.

use memd_client::{MemdClient, pb, turn};
use memd_tests::{TestServer, create_memory, with_embeddings};
use std::time::Duration;

/// Waits until nothing is pending and the counts reach `events` and `records` (first
/// embeddings) and `again` (re-embeddings); returns the status then.
async fn counted(client: &MemdClient, events: i64, records: i64, again: i64) -> pb::IndexStatus {
    let mut status = pb::IndexStatus::default();
    for _ in 0..400 {
        status = client.index_status().await.unwrap();
        let reached = status.embedded_events >= events
            && status.embedded_records >= records
            && status.reembedded_records >= again;
        if reached && status.vectors_pending == 0 && status.keyword_pending == 0 {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the embedding counts never reached {events}/{records}/{again}: {status:?}");
}

/// (events, records, records again) embedded since start.
fn counts(status: &pb::IndexStatus) -> (i64, i64, i64) {
    (
        status.embedded_events,
        status.embedded_records,
        status.reembedded_records,
    )
}

/// Stores one turn of acme/ann in session s1, without extraction.
pub(super) async fn note(admin: &MemdClient, memory_id: &str, text: impl Into<String>) {
    admin
        .create_event(pb::CreateEventRequest {
            memory_id: memory_id.into(),
            actor_id: "acme/ann".into(),
            session_id: "s1".into(),
            payload: vec![turn(pb::Role::User, text)],
            extraction_mode: pb::ExtractionMode::Skip as i32,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Applies one record update, which must succeed.
async fn update(admin: &MemdClient, memory_id: &str, record: pb::MemoryRecordUpdate) {
    let results = admin
        .batch_update_memory_records(memory_id, vec![record])
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.code == 0), "{results:?}");
}

#[tokio::test]
async fn each_document_is_embedded_once_and_again_only_when_its_text_changes() {
    let server = TestServer::start_with(with_embeddings).await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "embedding-counts", None)
        .await
        .memory_id;
    let fresh = admin.index_status().await.unwrap();
    assert_eq!(counts(&fresh), (0, 0, 0));
    for text in [
        "I moved to Porto in May.",
        "My sister is a vet.",
        "Book the 7:40 train.",
    ] {
        note(&admin, &m, text).await;
    }
    let records = ["Ann lives in Porto.", "Ann's sister is a vet."]
        .iter()
        .map(|text| pb::MemoryRecordInput {
            namespace: "/users/ann/facts".into(),
            actor_id: "acme/ann".into(),
            text: (*text).into(),
            ..Default::default()
        })
        .collect();
    let created = admin
        .batch_create_memory_records(&m, records)
        .await
        .unwrap();
    let status = counted(&admin, 3, 2, 0).await;
    assert_eq!(counts(&status), (3, 2, 0), "{status:?}");
    assert!(status.embedding_seconds > 0.0, "{status:?}");

    // An update that leaves the text alone keeps the vector: nothing is embedded.
    update(
        &admin,
        &m,
        pb::MemoryRecordUpdate {
            memory_record_id: created[1].memory_record_id.clone(),
            text: "Ann's sister is a vet.".into(),
            metadata: [("source".to_string(), "call".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    // A new text is embedded again, and counted as such.
    update(
        &admin,
        &m,
        pb::MemoryRecordUpdate {
            memory_record_id: created[0].memory_record_id.clone(),
            text: "Ann lives in Lisbon now.".into(),
            ..Default::default()
        },
    )
    .await;
    let status = counted(&admin, 3, 2, 1).await;
    // The metadata change (logged before the new text) was applied without embedding.
    assert_eq!(counts(&status), (3, 2, 1), "{status:?}");

    // After a restart the stored vectors are loaded: nothing is embedded again.
    let server = server.restart().await;
    let admin = server.admin().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = admin.index_status().await.unwrap();
    assert_eq!(counts(&status), (0, 0, 0), "{status:?}");
    assert_eq!(status.vectors_pending, 0);
}

/// A semantic search while the indexer works through a backlog is answered before the
/// backlog is through, whether queries share the indexer's copy of the model (the default,
/// where the indexer gives way between batches) or have threads and copies of their own.
async fn search_during_a_backlog(query_threads: usize) {
    let server = TestServer::start_with(|config| {
        with_embeddings(config);
        config.embedding_query_threads = query_threads;
    })
    .await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "busy-indexer", None).await.memory_id;
    for i in 0..400 {
        note(
            &admin,
            &m,
            format!(
                "Note {i}: the quarterly report for region {} is late again.",
                i % 7
            ),
        )
        .await;
    }
    let found = admin
        .search_events(pb::SearchEventsRequest {
            memory_id: m.clone(),
            actor_id: "acme/ann".into(),
            query: "which paperwork is overdue".into(),
            mode: pb::SearchMode::Semantic as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let status = admin.index_status().await.unwrap();
    assert!(
        status.vectors_pending > 0 && status.embedded_events < 400,
        "the query waited for the whole backlog ({query_threads} query threads): {status:?}"
    );
    // What is embedded already is searchable.
    assert!(
        found.events.len() as i64 <= status.embedded_events,
        "{found:?}"
    );
    let status = counted(&admin, 400, 0, 0).await;
    assert_eq!(status.embedded_events, 400, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_share_the_indexers_model_without_waiting_for_its_backlog() {
    search_during_a_backlog(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_with_their_own_threads_do_not_wait_for_the_backlog() {
    search_during_a_backlog(2).await;
}
