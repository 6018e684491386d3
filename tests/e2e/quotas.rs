//! Per-key quotas: a key that floods memd is refused with RESOURCE_EXHAUSTED and a
//! RetryInfo saying how long to wait, while another key and the operator go on unhindered;
//! the flooding key is served again once its bucket refills.

use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, create_memory, text_event};
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

async fn tenant_key(admin: &MemdClient, memory_id: &str, name: &str) -> String {
    admin
        .create_api_key(
            name,
            pb::ApiKeyPolicy {
                memory_ids: vec![memory_id.into()],
                actor_patterns: vec!["*".into()],
                namespace_prefixes: vec!["/".into()],
                actions: vec![
                    pb::api_key_policy::Action::Read as i32,
                    pb::api_key_policy::Action::Write as i32,
                ],
            },
        )
        .await
        .unwrap()
        .secret
}

#[tokio::test]
async fn a_flooding_key_is_throttled_and_others_are_not() {
    let server = TestServer::start_with(|config| {
        config.key_requests_per_second = 5;
        config.key_request_burst = 10;
    })
    .await;
    let admin = server.admin().await;
    let memory_id = create_memory(&admin, "quotas", None).await.memory_id;
    let noisy = server
        .client(Some(&tenant_key(&admin, &memory_id, "noisy").await))
        .await;
    let quiet = server
        .client(Some(&tenant_key(&admin, &memory_id, "quiet").await))
        .await;

    let (accepted, refusal) = flood(
        &noisy,
        &memory_id,
        "acme/noisy",
        (0..60).map(|i| format!("flood {i}")),
    )
    .await;
    // The burst, plus what refilled while the flood ran (60 concurrent calls: the refusals are
    // held for their retry delay, under a second).
    assert!((10..=20).contains(&accepted), "{accepted} of 60 accepted");
    let refusal = refusal.expect("the flood was refused");
    assert!(
        refusal.message().contains("key_requests_per_second"),
        "{refusal:?}"
    );
    let wait = refusal
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo detail");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );

    // Another key, and the operator, are not touched by it.
    for i in 0..8 {
        quiet
            .create_event(text_event(
                &memory_id,
                "acme/quiet",
                "s",
                &format!("calm {i}"),
            ))
            .await
            .unwrap();
    }
    for _ in 0..50 {
        admin.get_memory(&memory_id).await.unwrap();
    }
    // Refilled after the wait it was told.
    tokio::time::sleep(wait + Duration::from_millis(250)).await;
    noisy
        .create_event(text_event(&memory_id, "acme/noisy", "s", "after the wait"))
        .await
        .unwrap();
}

/// Appends `texts` into `memory_id` as `actor`, all at once (refusals are held for their retry
/// delay, so one after another a flood could never outrun the quota); returns how many were
/// accepted and the first refusal.
async fn flood(
    client: &MemdClient,
    memory_id: &str,
    actor: &str,
    texts: impl IntoIterator<Item = String>,
) -> (usize, Option<tonic::Status>) {
    let calls = texts.into_iter().map(|text| {
        let client = client.clone();
        let request = text_event(memory_id, actor, "s", &text);
        async move { client.create_event(request).await }
    });
    let mut accepted = 0;
    let mut refusal = None;
    for outcome in futures::future::join_all(calls).await {
        match outcome {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refusal.get_or_insert(status);
            }
        }
    }
    (accepted, refusal)
}

async fn stored_events(client: &MemdClient, memory_id: &str, actor: &str) -> usize {
    use futures::TryStreamExt;
    client
        .all_events(pb::ListEventsRequest {
            memory_id: memory_id.into(),
            actor_id: actor.into(),
            session_id: "s".into(),
            ..Default::default()
        })
        .try_collect::<Vec<_>>()
        .await
        .map_or(0, |events| events.len())
}

/// Two keys writing into one memory share its request rate; a key on another memory does
/// not notice, and what was refused was not stored.
#[tokio::test]
async fn a_flooded_memory_is_throttled_whichever_key_writes() {
    let server = TestServer::start_with(|config| config.memory_requests_per_second = 10).await;
    let admin = server.admin().await;
    let busy = create_memory(&admin, "busy", None).await.memory_id;
    let calm = create_memory(&admin, "calm", None).await.memory_id;
    let first = server
        .client(Some(&tenant_key(&admin, &busy, "first").await))
        .await;
    let second = server
        .client(Some(&tenant_key(&admin, &busy, "second").await))
        .await;
    let other = server
        .client(Some(&tenant_key(&admin, &calm, "other").await))
        .await;

    // A key without access to the busy memory cannot use up its quota.
    for i in 0..30 {
        let status = other
            .create_event(text_event(
                &busy,
                "acme/other",
                "s",
                &format!("intruder {i}"),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let texts = |who: &str| {
        (0..15)
            .map(move |i| format!("{who} {i}"))
            .collect::<Vec<_>>()
    };
    let (a, _) = flood(&first, &busy, "acme/first", texts("first")).await;
    let (b, refusal) = flood(&second, &busy, "acme/second", texts("second")).await;
    // One bucket of 10 for both keys, plus what refilled meanwhile.
    assert!((10..=20).contains(&(a + b)), "{a} + {b} of 30 accepted");
    let refusal = refusal.expect("the memory's flood was refused");
    assert!(
        refusal.message().contains("memory_requests_per_second"),
        "{refusal:?}"
    );
    assert!(refusal.get_details_retry_info().is_some(), "{refusal:?}");
    assert_eq!(stored_events(&admin, &busy, "acme/first").await, a);
    assert_eq!(stored_events(&admin, &busy, "acme/second").await, b);

    let (calm_accepted, calm_refusal) =
        flood(&other, &calm, "acme/other", texts("calm")[..8].to_vec()).await;
    assert_eq!(
        (calm_accepted, calm_refusal.map(|s| s.to_string())),
        (8, None)
    );
}

/// A key over its bytes per second is refused, while small requests from another key pass.
#[tokio::test]
async fn a_key_sending_too_many_bytes_is_throttled() {
    let server = TestServer::start_with(|config| config.key_bytes_per_second = 20_000).await;
    let admin = server.admin().await;
    let memory_id = create_memory(&admin, "bytes", None).await.memory_id;
    let bulky = server
        .client(Some(&tenant_key(&admin, &memory_id, "bulky").await))
        .await;
    let small = server
        .client(Some(&tenant_key(&admin, &memory_id, "small").await))
        .await;
    let padding = "x".repeat(4_000);
    let (accepted, refusal) = flood(
        &bulky,
        &memory_id,
        "acme/bulky",
        (0..20).map(|i| format!("{i} {padding}")),
    )
    .await;
    // 20 kB a second of ~4 kB requests: about five, plus what refilled meanwhile.
    assert!((4..=12).contains(&accepted), "{accepted} of 20 accepted");
    let refusal = refusal.expect("the bulky key was refused");
    assert!(
        refusal.message().contains("key_bytes_per_second"),
        "{refusal:?}"
    );
    assert_eq!(
        stored_events(&admin, &memory_id, "acme/bulky").await,
        accepted
    );
    let (small_accepted, _) = flood(
        &small,
        &memory_id,
        "acme/small",
        (0..20).map(|i| format!("small {i}")),
    )
    .await;
    assert_eq!(small_accepted, 20);
}

/// A client that ignores the retry delay and asks again at once cannot spin on refusals: each
/// refusal is held for its delay, so the next call finds the bucket refilled. One after
/// another, at most about every other call of such a client is refused (without the hold,
/// every call past the burst would be).
#[tokio::test]
async fn refusals_are_held_so_a_client_ignoring_the_delay_cannot_spin() {
    let server = TestServer::start_with(|config| {
        config.key_requests_per_second = 5;
        config.key_request_burst = 10;
    })
    .await;
    let admin = server.admin().await;
    let memory_id = create_memory(&admin, "held", None).await.memory_id;
    let eager = server
        .client(Some(&tenant_key(&admin, &memory_id, "eager").await))
        .await;
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..40 {
        match eager
            .create_event(text_event(
                &memory_id,
                "acme/eager",
                "s",
                &format!("again {i}"),
            ))
            .await
        {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the quota never refused");
    assert!(
        refused <= accepted,
        "{refused} refused against {accepted} accepted: refusals were not held"
    );
}
