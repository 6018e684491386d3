//! External extraction workers: leases respect per-actor order and key policies, completion
//! goes through the server's consolidation, failures and stale leases are handled, and
//! `memctl worker` runs the built-in extractor remotely.

use crate::assert_status;
use memd_client::{MemdClient, pb};
use memd_tests::{
    ADMIN_KEY, TestServer, extraction_jobs as jobs, memctl_binary, self_managed_memory,
};
use tonic::Code;

fn said(memory_id: &str, actor: &str, text: &str) -> pb::CreateEventRequest {
    memd_tests::named_event(memory_id, actor, "s1", "Ann", text)
}

async fn lease(client: &MemdClient, memory_id: &str) -> Result<Vec<pb::LeasedJob>, tonic::Status> {
    Ok(client
        .workers()
        .lease_extraction_jobs(pb::LeaseExtractionJobsRequest {
            memory_id: memory_id.into(),
            strategy_types: vec![pb::StrategyType::SelfManaged as i32],
            max_jobs: 10,
            lease_seconds: 60,
            worker_id: "test".into(),
        })
        .await?
        .into_inner()
        .jobs)
}

async fn complete(
    client: &MemdClient,
    request: pb::CompleteExtractionJobRequest,
) -> Result<pb::CompleteExtractionJobResponse, tonic::Status> {
    Ok(client
        .workers()
        .complete_extraction_job(request)
        .await?
        .into_inner())
}

#[tokio::test]
async fn self_managed_jobs_are_leased_in_order_and_completed() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = self_managed_memory(&admin, "external").await;
    let first = admin
        .create_event(said(&m, "acme/ann", "I drink green tea every morning."))
        .await
        .unwrap();
    let second = admin
        .create_event(said(&m, "acme/ann", "My dog is called Rex."))
        .await
        .unwrap();
    admin
        .create_event(said(&m, "globex/bob", "I work nights."))
        .await
        .unwrap();
    // Nothing in the server runs SELF_MANAGED jobs: they wait for a worker.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(jobs(&admin, &m).await.len(), 3);

    let key = admin
        .create_api_key(
            "acme-worker",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["acme/*".into()],
                namespace_prefixes: vec!["/".into()],
                actions: vec![pb::api_key_policy::Action::Write as i32],
            },
        )
        .await
        .unwrap();
    let acme = server.client(Some(&key.secret)).await;

    // Only acme's oldest job: the second waits behind it, bob's is not this key's.
    let leased = lease(&acme, &m).await.unwrap();
    assert_eq!(leased.len(), 1, "{leased:#?}");
    let job = &leased[0];
    assert_eq!(job.namespace, "/strategies/mine/actors/acme/ann");
    assert_eq!(job.events.len(), 1);
    assert_eq!(job.events[0].event_id, first.event_id);
    assert!(
        !job.events[0].payload.is_empty(),
        "events come with payloads"
    );
    assert!(lease(&acme, &m).await.unwrap().is_empty());

    // Candidates must cite the job's own events.
    let foreign = complete(
        &acme,
        pb::CompleteExtractionJobRequest {
            memory_id: m.clone(),
            lease_token: job.lease_token.clone(),
            records: vec![pb::CandidateRecord {
                text: "Ann has a dog called Rex.".into(),
                source_event_ids: vec![second.event_id.clone()],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    assert_status(
        foreign,
        Code::InvalidArgument,
        "records[0].source_event_ids",
    );

    let done = complete(
        &acme,
        pb::CompleteExtractionJobRequest {
            memory_id: m.clone(),
            lease_token: job.lease_token.clone(),
            records: vec![pb::CandidateRecord {
                text: "Ann drinks green tea every morning.".into(),
                source_event_ids: vec![first.event_id.clone()],
                ..Default::default()
            }],
            extractor: "tea-bot".into(),
            extractor_version: "0.1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(done.records_changed, 1);
    let records = admin
        .list_memory_records(pb::ListMemoryRecordsRequest {
            memory_id: m.clone(),
            namespace: "/strategies/mine/actors/acme/ann".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .memory_records;
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].text.as_str(),
            records[0].extractor.as_str(),
            records[0].source_event_ids.clone()
        ),
        (
            "Ann drinks green tea every morning.",
            "tea-bot",
            vec![first.event_id.clone()]
        )
    );
    // The lease is spent with its job.
    assert_status(
        complete(
            &acme,
            pb::CompleteExtractionJobRequest {
                memory_id: m.clone(),
                lease_token: job.lease_token.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::FailedPrecondition,
        "lease",
    );

    // The next job of the actor is now leasable; a permanent failure makes it FAILED.
    let next = lease(&acme, &m).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].events[0].event_id, second.event_id);
    complete(
        &acme,
        pb::CompleteExtractionJobRequest {
            memory_id: m.clone(),
            lease_token: next[0].lease_token.clone(),
            failure_reason: "model refused".into(),
            retryable: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let failed: Vec<pb::ExtractionJob> = jobs(&admin, &m)
        .await
        .into_iter()
        .filter(|j| j.status == pb::ExtractionJobStatus::Failed as i32)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].failure_reason, "model refused");

    // Bob's job is the admin's to take.
    let bob = lease(&admin, &m).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert!(bob[0].namespace.ends_with("/globex/bob"));
    assert_status(
        acme.workers()
            .lease_extraction_jobs(pb::LeaseExtractionJobsRequest {
                memory_id: m.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "strategy_types",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memctl_worker_runs_the_builtin_extractor_remotely() {
    let server = TestServer::start_with(|config| config.extraction_enabled = false).await;
    let admin = server.admin().await;
    let m = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "remote".into(),
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
    let event = admin
        .create_event(said(
            &m,
            "ann",
            "I moved to Lisbon last month for a job at a bakery.",
        ))
        .await
        .unwrap();
    assert_eq!(
        jobs(&admin, &m).await.len(),
        1,
        "the server's own workers are off"
    );
    let output = tokio::task::spawn_blocking({
        let endpoint = server.endpoint();
        let m = m.clone();
        move || {
            std::process::Command::new(memctl_binary())
                .args(["--endpoint", &endpoint, "--api-key", ADMIN_KEY])
                .args(["worker", &m, "--strategy-type", "semantic", "--once"])
                .output()
                .expect("memctl runs")
        }
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("completed 1 jobs"));
    assert!(jobs(&admin, &m).await.is_empty());
    let records = admin
        .list_memory_records(pb::ListMemoryRecordsRequest {
            memory_id: m.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .memory_records;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert!(
        records[0].text.starts_with("Ann moved to Lisbon in "),
        "{records:#?}"
    );
    assert_eq!(records[0].source_event_ids, [event.event_id]);
    assert_eq!(records[0].extractor, "builtin");
}
