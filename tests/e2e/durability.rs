//! Crash durability: the real `memd` binary (sync_writes on, the default) is SIGKILLed while
//! several clients write; after a restart on the same directory every acknowledged event is
//! there and nothing is duplicated, also when clients retry their in-flight request.

use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use memd_tests::{ADMIN_KEY, create_memory, extraction_jobs, memory_records, text_event, text_of};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::process::Child;

const WRITERS: usize = 4;

/// Starts `memd` with the real embedding model from local files: semantic indexes crash and
/// recover too.
async fn spawn_memd(data_dir: &Path) -> (Child, String) {
    let (model_dir, runtime) = memd_tests::embedding_files();
    memd_tests::spawn_memd(
        data_dir,
        &[
            ("MEMD_EMBEDDING_MODEL_DIR", model_dir.as_os_str()),
            ("MEMD_ONNXRUNTIME_PATH", runtime.as_os_str()),
        ],
    )
    .await
}

fn request(memory_id: &str, writer: usize, i: usize) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        client_token: format!("w{writer}-{i}"),
        ..text_event(
            memory_id,
            &format!("writer-{writer}"),
            "s",
            &format!("w{writer}-{i}"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, endpoint) = spawn_memd(dir.path()).await;
    let admin = MemdClient::connect(endpoint.clone(), Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    let memory_id = create_memory(&admin, "durable", None).await.memory_id;

    let acked: Arc<Mutex<Vec<(usize, usize, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (client, acked, memory_id) = (admin.clone(), acked.clone(), memory_id.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                match client.create_event(request(&memory_id, writer, i)).await {
                    Ok(event) => acked.lock().unwrap().push((writer, i, event.event_id)),
                    // The kill: request i was in flight and may or may not have committed.
                    Err(_) => return i,
                }
            }
            unreachable!()
        }));
    }
    while acked.lock().unwrap().len() < 400 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    let mut in_flight = Vec::new();
    for writer in writers {
        in_flight.push(writer.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();

    let (mut child, endpoint) = spawn_memd(dir.path()).await;
    let client = MemdClient::connect(endpoint, Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    // Clients retry the request that was in flight, with the same token.
    for (writer, &i) in in_flight.iter().enumerate() {
        client
            .create_event(request(&memory_id, writer, i))
            .await
            .unwrap();
    }
    for (writer, &last) in in_flight.iter().enumerate() {
        let listing = pb::ListEventsRequest {
            memory_id: memory_id.clone(),
            actor_id: format!("writer-{writer}"),
            session_id: "s".into(),
            include_payloads: true,
            page_size: 100,
            ..Default::default()
        };
        let events: Vec<pb::Event> = client.all_events(listing).try_collect().await.unwrap();
        let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        for (_, i, id) in acked.iter().filter(|(w, _, _)| *w == writer) {
            assert!(
                ids.contains(id.as_str()),
                "acknowledged event {i} of writer {writer} was lost"
            );
        }
        let texts: Vec<&str> = events.iter().map(text_of).collect();
        let unique: HashSet<&str> = texts.iter().copied().collect();
        assert_eq!(
            unique.len(),
            texts.len(),
            "writer {writer}: duplicated events"
        );
        assert_eq!(
            texts.len(),
            last + 1,
            "writer {writer}: exactly requests 0..={last} are stored"
        );
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

fn fact(memory_id: &str, writer: usize, i: usize) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        client_token: format!("f{writer}-{i}"),
        ..text_event(
            memory_id,
            &format!("owner-{writer}"),
            "s",
            &format!("I adopted a cat named Tom{writer}x{i}, microchip number {writer}{i}77."),
        )
    }
}

/// SIGKILL while events are appended and extracted: after a restart every stored event is
/// extracted exactly once in effect (one record per fact, naming its event, no duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extraction_completes_exactly_once_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, endpoint) = spawn_memd(dir.path()).await;
    let admin = MemdClient::connect(endpoint.clone(), Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    let memory_id = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "extracting".into(),
            strategies: vec![pb::MemoryStrategy {
                strategy_id: "facts".into(),
                r#type: pb::StrategyType::Semantic as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .memory_id;

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (client, memory_id) = (admin.clone(), memory_id.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                if client
                    .create_event(fact(&memory_id, writer, i))
                    .await
                    .is_err()
                {
                    return i;
                }
            }
            unreachable!()
        }));
    }
    // Kill once extraction has committed some records while jobs are still queued.
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if memory_records(&admin, &memory_id, "").await.len() >= 100
            && !extraction_jobs(&admin, &memory_id).await.is_empty()
        {
            break;
        }
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    let mut in_flight = Vec::new();
    for writer in writers {
        in_flight.push(writer.await.unwrap());
    }

    let (mut child, endpoint) = spawn_memd(dir.path()).await;
    let client = MemdClient::connect(endpoint, Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    for (writer, &i) in in_flight.iter().enumerate() {
        client
            .create_event(fact(&memory_id, writer, i))
            .await
            .unwrap();
    }
    let mut settled = false;
    for _ in 0..600 {
        if extraction_jobs(&client, &memory_id).await.is_empty() {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(settled, "extraction did not drain after the restart");

    let records = memory_records(&client, &memory_id, "").await;
    let mut sources = std::collections::HashMap::new();
    let mut texts = HashSet::new();
    for record in &records {
        assert_eq!(record.source_event_ids.len(), 1, "{record:#?}");
        if let Some(other) = sources.insert(record.source_event_ids[0].clone(), record) {
            panic!("one event, two records: {other:#?} {record:#?}");
        }
        assert!(
            texts.insert(record.text.clone()),
            "duplicate record {record:#?}"
        );
    }
    let mut stored = 0;
    for writer in 0..WRITERS {
        let listing = pb::ListEventsRequest {
            memory_id: memory_id.clone(),
            actor_id: format!("owner-{writer}"),
            session_id: "s".into(),
            page_size: 100,
            ..Default::default()
        };
        let events: Vec<pb::Event> = client.all_events(listing).try_collect().await.unwrap();
        for event in &events {
            assert!(
                sources.contains_key(&event.event_id),
                "event {} of owner-{writer} was never extracted",
                event.event_id
            );
        }
        stored += events.len();
    }
    assert_eq!(records.len(), stored, "one record per event");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// Records committed right before a SIGKILL are searchable as soon as the server is back,
/// without a manual step: the index catches up from its log at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_searchable_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, endpoint) = spawn_memd(dir.path()).await;
    let admin = MemdClient::connect(endpoint, Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    let memory_id = create_memory(&admin, "searchable", None).await.memory_id;
    let items: Vec<pb::MemoryRecordInput> = (0..50)
        .map(|i| pb::MemoryRecordInput {
            namespace: "/facts".into(),
            text: format!("Invoice number {i} was paid by wire transfer."),
            ..Default::default()
        })
        .collect();
    admin
        .batch_create_memory_records(&memory_id, items)
        .await
        .unwrap();
    // No time for the indexer: kill at once.
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();

    let (mut child, endpoint) = spawn_memd(dir.path()).await;
    let client = MemdClient::connect(endpoint, Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    let found = client
        .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
            memory_id: memory_id.clone(),
            search_criteria: Some(pb::SearchCriteria {
                search_query: "wire transfer".into(),
                top_k: 100,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.memory_records.len(), 50);

    // The embeddings catch up from the log too, then survive the next SIGKILL: after it,
    // semantic search has all of them at once (stored in RocksDB, not recomputed).
    let semantic = pb::RetrieveMemoryRecordsRequest {
        memory_id: memory_id.clone(),
        search_criteria: Some(pb::SearchCriteria {
            search_query: "a bank payment settled the bill".into(),
            top_k: 100,
            mode: pb::SearchMode::Semantic as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut embedded = 0;
    for _ in 0..600 {
        embedded = client
            .retrieve_memory_records(semantic.clone())
            .await
            .unwrap()
            .memory_records
            .len();
        if embedded == 50 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(embedded, 50, "every record embedded after the restart");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (mut child, endpoint) = spawn_memd(dir.path()).await;
    let client = MemdClient::connect(endpoint, Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    let found = client.retrieve_memory_records(semantic).await.unwrap();
    assert_eq!(found.memory_records.len(), 50);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
