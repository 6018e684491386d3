//! Regression tests for what a hostile-client probe found (issue 25): no request can make memd
//! call an address or read a secret the operator did not configure; leases, record tokens
//! and listings stay within their tenant and their limits; Reindex returns under load; an
//! oversized header fails its own call only; a deleted memory leaves no job behind.

use crate::assert_status;
use memd_client::{MemdClient, pb};
use memd_server::store::{Store, StoreOptions};
use memd_tests::{
    TestServer, extraction_jobs as jobs, facts_memory, memory_records, self_managed_memory,
    text_event,
};
use pb::api_key_policy::Action;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tonic::Code;

/// A TCP listener that counts every connection made to it (and never answers).
async fn trap() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, hits)
}

async fn key(admin: &MemdClient, memory_id: &str, actors: &str, actions: &[Action]) -> String {
    let policy = pb::ApiKeyPolicy {
        memory_ids: vec![memory_id.into()],
        actor_patterns: vec![actors.into()],
        namespace_prefixes: vec!["/".into()],
        actions: actions.iter().map(|&a| a as i32).collect(),
    };
    admin.create_api_key("tenant", policy).await.unwrap().secret
}

fn llm_strategy(llm: pb::LlmSettings) -> pb::MemoryStrategy {
    pb::MemoryStrategy {
        strategy_id: "facts".into(),
        r#type: pb::StrategyType::Semantic as i32,
        extractor: "llm".into(),
        llm: Some(llm),
        ..Default::default()
    }
}

fn update(memory_id: &str, strategy: pb::MemoryStrategy) -> pb::UpdateMemoryRequest {
    pb::UpdateMemoryRequest {
        memory_id: memory_id.into(),
        strategies: vec![strategy],
        update_mask: vec!["strategies".into()],
        ..Default::default()
    }
}

async fn wait_until<F, Fut>(what: &str, probe: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..400 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)] // the attack uses the retired fields
async fn a_memory_admin_cannot_make_memd_call_its_host_or_read_the_servers_environment() {
    let (trap_url, hits) = trap().await;
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_memory(&admin, "victim").await;
    let memory_admin = server
        .client(Some(
            &key(
                &admin,
                &m,
                "*",
                &[Action::Admin, Action::Read, Action::Write],
            )
            .await,
        ))
        .await;

    // The attack as reported: an endpoint the caller controls, keyed by the admin secret.
    let attack = llm_strategy(pb::LlmSettings {
        base_url: trap_url.clone(),
        model: "m".into(),
        api_key_env: "MEMD_ADMIN_KEY".into(),
        ..Default::default()
    });
    assert_status(
        memory_admin.update_memory(update(&m, attack)).await,
        Code::InvalidArgument,
        "strategies[0].llm.base_url",
    );
    let variable_only = llm_strategy(pb::LlmSettings {
        api_key_env: "HOME".into(),
        ..Default::default()
    });
    assert_status(
        memory_admin.update_memory(update(&m, variable_only)).await,
        Code::InvalidArgument,
        "strategies[0].llm.api_key_env",
    );
    let unknown_endpoint = llm_strategy(pb::LlmSettings {
        endpoint: "metadata".into(),
        ..Default::default()
    });
    assert_status(
        memory_admin
            .update_memory(update(&m, unknown_endpoint))
            .await,
        Code::InvalidArgument,
        "strategies[0].llm.endpoint",
    );
    // The memory is as it was: extraction still runs on the built-in strategy.
    memory_admin
        .create_event(text_event(
            &m,
            "ann",
            "s1",
            "I moved to Lisbon in May 2023.",
        ))
        .await
        .unwrap();
    wait_until("the built-in record", || async {
        !memory_records(&admin, &m, "").await.is_empty()
    })
    .await;

    // A strategy stored before the refusal (written straight into the store) is never
    // honoured: its job fails, naming the field, and nothing reaches the address.
    server.stop().await;
    let (dir, memory_id, url) = (server.data_dir().to_path_buf(), m.clone(), trap_url.clone());
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&dir, &StoreOptions::default()).unwrap();
        store
            .update_memory(&memory_id, |memory| {
                let strategy = &mut memory.strategies[0];
                strategy.extractor = "llm".into();
                strategy.llm = Some(memd_server::store::codec::StoredLlmSettings {
                    base_url: url,
                    model: "m".into(),
                    api_key_env: "MEMD_ADMIN_KEY".into(),
                    ..Default::default()
                });
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
    let server = server.restart().await;
    let admin = server.admin().await;
    admin
        .create_event(text_event(&m, "ann", "s2", "I adopted a cat named Miso."))
        .await
        .unwrap();
    wait_until("the stored strategy's job to fail", || async {
        jobs(&admin, &m).await.iter().any(|job| {
            job.status == pb::ExtractionJobStatus::Failed as i32
                && job.failure_reason.contains("llm.base_url")
        })
    })
    .await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "memd connected to the caller's address"
    );
}

#[tokio::test]
async fn a_lease_token_does_not_work_for_another_tenant() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = self_managed_memory(&admin, "workers").await;
    let acme = server
        .client(Some(&key(&admin, &m, "acme/*", &[Action::Write]).await))
        .await;
    let globex = server
        .client(Some(&key(&admin, &m, "globex/*", &[Action::Write]).await))
        .await;
    globex
        .create_event(text_event(&m, "globex/bob", "s1", "I work nights."))
        .await
        .unwrap();
    let lease = |client: MemdClient| {
        let m = m.clone();
        async move {
            client
                .workers()
                .lease_extraction_jobs(pb::LeaseExtractionJobsRequest {
                    memory_id: m,
                    strategy_types: vec![pb::StrategyType::SelfManaged as i32],
                    max_jobs: 10,
                    lease_seconds: 5,
                    worker_id: "test".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .jobs
        }
    };
    let leased = lease(globex.clone()).await;
    assert_eq!(leased.len(), 1);
    let token = leased[0].lease_token.clone();

    // Another tenant's heartbeat with the stolen token: reported lost, lease untouched.
    let hostage = acme
        .workers()
        .heartbeat_extraction_jobs(pb::HeartbeatExtractionJobsRequest {
            memory_id: m.clone(),
            lease_tokens: vec![token.clone()],
            lease_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hostage.lost_lease_tokens, std::slice::from_ref(&token));
    // The lease ran out after its own 5 s, so the job can be leased again.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let again = lease(globex.clone()).await;
    assert_eq!(again.len(), 1, "the job is still held hostage");
    assert_ne!(again[0].lease_token, token);
    // Its owner's heartbeat works as before.
    let owner = globex
        .workers()
        .heartbeat_extraction_jobs(pb::HeartbeatExtractionJobsRequest {
            memory_id: m.clone(),
            lease_tokens: vec![again[0].lease_token.clone()],
            lease_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(owner.lost_lease_tokens.is_empty());
}

fn record_input(actor: &str, text: &str, token: &str) -> pb::MemoryRecordInput {
    pb::MemoryRecordInput {
        namespace: format!("/users/{actor}"),
        text: text.into(),
        actor_id: actor.into(),
        client_token: token.into(),
        ..Default::default()
    }
}

async fn create_record(
    client: &MemdClient,
    memory_id: &str,
    input: pb::MemoryRecordInput,
) -> pb::BatchItemResult {
    client
        .batch_create_memory_records(memory_id, vec![input])
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test]
async fn record_client_tokens_are_scoped_to_their_tenant() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_memory(&admin, "shared").await;
    let acme = server
        .client(Some(
            &key(&admin, &m, "acme/*", &[Action::Read, Action::Write]).await,
        ))
        .await;
    let globex = server
        .client(Some(
            &key(&admin, &m, "globex/*", &[Action::Read, Action::Write]).await,
        ))
        .await;
    let mine = create_record(&acme, &m, record_input("acme/ann", "Ann likes tea.", "t-1")).await;
    assert_eq!(mine.code, 0, "{mine:?}");
    // The same token in another tenant: its own record, no hint that the token exists.
    let theirs = create_record(
        &globex,
        &m,
        record_input("globex/bob", "Bob likes coffee.", "t-1"),
    )
    .await;
    assert_eq!(theirs.code, 0, "{theirs:?}");
    assert_ne!(theirs.memory_record_id, mine.memory_record_id);
    // Within a tenant the token still means what it did: a retry returns the same record,
    // another record under it is refused.
    let retry = create_record(&acme, &m, record_input("acme/ann", "Ann likes tea.", "t-1")).await;
    assert_eq!(retry.memory_record_id, mine.memory_record_id);
    let reuse = create_record(
        &acme,
        &m,
        record_input("acme/ann", "Ann likes milk.", "t-1"),
    )
    .await;
    assert_eq!(reuse.code, Code::AlreadyExists as i32, "{reuse:?}");
    let texts: Vec<String> = memory_records(&admin, &m, "")
        .await
        .into_iter()
        .map(|r| r.text)
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_returns_while_clients_keep_writing() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_memory(&admin, "busy").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, m, stop) = (admin.clone(), m.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut written = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("Writer {w} notes that turn {written} mentions Lisbon.");
                client
                    .create_event(text_event(&m, &format!("actor-{w}"), "s1", &text))
                    .await
                    .unwrap();
                written += 1;
                // A steady load like the one that stalled it (about 300 writes/s in all),
                // which the indexer keeps up with but whose log is never empty.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            written
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Generous: it only tells a hang from a slow machine (idle, a rebuild takes ~1 s).
    let reindexed = tokio::time::timeout(Duration::from_secs(60), admin.reindex()).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    let reindexed = reindexed.expect("Reindex never returned under steady writes");
    assert!(reindexed.unwrap().events_indexed > 0);
    assert!(written > 0);
}

#[tokio::test]
async fn oversized_metadata_fails_its_own_call_not_the_connection() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    for size in [20_000, 100_000] {
        let huge = admin.with_key(Some("k".repeat(size))).unwrap();
        let mut calls = Vec::new();
        for _ in 0..40 {
            let (admin, huge) = (admin.clone(), huge.clone());
            calls.push(tokio::spawn(async move {
                (
                    admin
                        .list_memories(pb::ListMemoriesRequest::default())
                        .await,
                    huge.list_memories(pb::ListMemoriesRequest::default()).await,
                )
            }));
        }
        for call in calls {
            let (valid, oversized) = call.await.unwrap();
            valid.expect("a valid call on the shared connection failed");
            assert_status(oversized, Code::InvalidArgument, "authorization");
        }
    }
}

#[tokio::test]
async fn listings_stay_within_their_bounds() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_memory(&admin, "big").await;
    // 15 MB of events in one session: more than one gRPC message may carry.
    let blob = |i: u8| pb::PayloadItem {
        content: Some(pb::payload_item::Content::Blob(vec![i; 5 * 1024 * 1024])),
    };
    for i in 0..3 {
        admin
            .create_event(pb::CreateEventRequest {
                memory_id: m.clone(),
                actor_id: "ann".into(),
                session_id: "s1".into(),
                payload: vec![blob(i)],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut page_token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = admin
            .list_events(pb::ListEventsRequest {
                memory_id: m.clone(),
                actor_id: "ann".into(),
                session_id: "s1".into(),
                include_payloads: true,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page of large events");
        assert!(!page.events.is_empty());
        for event in page.events {
            let Some(pb::payload_item::Content::Blob(bytes)) = &event.payload[0].content else {
                panic!("payload missing");
            };
            seen.push(bytes[0]);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, [0, 1, 2]);

    assert_status(
        admin
            .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                memory_id: m.clone(),
                search_criteria: Some(pb::SearchCriteria {
                    search_query: "anything".into(),
                    ..Default::default()
                }),
                page_size: i32::MAX,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_size",
    );
    let deep = format!("{}0{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_status(
        admin
            .create_event(pb::CreateEventRequest {
                memory_id: m.clone(),
                actor_id: "ann".into(),
                session_id: "s1".into(),
                payload: vec![pb::PayloadItem {
                    content: Some(pb::payload_item::Content::Json(deep)),
                }],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "payload[0].json",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_memory_leaves_no_job_behind() {
    let mut server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_memory(&admin, "doomed").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, m, stop) = (admin.clone(), m.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut turn = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("Writer {w} moved to Porto in turn {turn}.");
                let written = client
                    .create_event(text_event(&m, &format!("actor-{w}"), "s1", &text))
                    .await;
                if let Err(status) = written {
                    // Refused once the memory is gone, never half-written.
                    assert_eq!(status.code(), Code::NotFound, "{status:?}");
                    return;
                }
                turn += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.delete_memory(m.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    // Give a worker holding a job of the memory time to run into its absence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop().await;
    let store = Store::open(server.data_dir(), &StoreOptions::default()).unwrap();
    let due = store.due_actors(u64::MAX, 10_000).unwrap();
    assert!(
        due.iter().all(|actor| !actor.starts_with(m.as_bytes())),
        "queued jobs of the deleted memory remain"
    );
    assert!(store.next_due().unwrap().is_none(), "a queue entry remains");
    let mut orphans = 0;
    store
        .for_each_event(|key, _| {
            orphans += usize::from(key.starts_with(m.as_bytes()));
            Ok(())
        })
        .unwrap();
    assert_eq!(orphans, 0, "events were written into the deleted memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_jobs_stay_within_a_message_and_the_rest_wait_unharmed() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = self_managed_memory(&admin, "heavy").await;
    // Five actors with a 3 MB turn each: 15 MB of jobs, more than one message may carry.
    let turn = memd_client::turn(pb::Role::User, "x".repeat(100_000));
    for actor in 0..5 {
        admin
            .create_event(pb::CreateEventRequest {
                memory_id: m.clone(),
                actor_id: format!("actor-{actor}"),
                session_id: "s1".into(),
                payload: vec![turn.clone(); 30],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut leased = Vec::new();
    for _ in 0..10 {
        let jobs = admin
            .workers()
            .lease_extraction_jobs(pb::LeaseExtractionJobsRequest {
                memory_id: m.clone(),
                strategy_types: vec![pb::StrategyType::SelfManaged as i32],
                max_jobs: 10,
                lease_seconds: 600,
                worker_id: "test".into(),
            })
            .await
            .expect("a lease response within the message limit")
            .into_inner()
            .jobs;
        if jobs.is_empty() {
            break;
        }
        assert_eq!(jobs.len(), 1, "3 MB jobs come one per response");
        leased.extend(jobs);
    }
    // Every job came once, and a job handed back was not counted as a failed attempt.
    assert_eq!(leased.len(), 5);
    assert!(leased.iter().all(|j| j.job.as_ref().unwrap().attempts == 0));
}
