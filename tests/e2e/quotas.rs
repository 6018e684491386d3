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

    let mut accepted = 0;
    let mut refusal = None;
    for i in 0..60 {
        match noisy
            .create_event(text_event(
                &memory_id,
                "acme/noisy",
                "s",
                &format!("flood {i}"),
            ))
            .await
        {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refusal.get_or_insert(status);
            }
        }
    }
    // The burst, plus what refilled while the flood ran (60 calls take well under a second).
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
