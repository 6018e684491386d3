use crate::assert_status;
use futures::TryStreamExt;
use memd_client::pb;
use memd_tests::TestServer;
use tonic::Code;

#[tokio::test]
async fn memory_crud_and_defaults() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let created = client
        .create_memory(pb::CreateMemoryRequest {
            name: "support".into(),
            description: "support agent".into(),
            strategies: vec![pb::MemoryStrategy {
                r#type: pb::StrategyType::Semantic as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(created.memory_id.starts_with("support-"));
    assert_eq!(created.event_expiry_days, 90);
    let policy = created.session_policy.unwrap();
    assert_eq!(
        (policy.idle_timeout_seconds, policy.max_duration_seconds),
        (900, 28_800)
    );
    let strategy = &created.strategies[0];
    assert_eq!(
        strategy.namespace_template,
        "/strategies/{memoryStrategyId}/actors/{actorId}"
    );
    assert!(!strategy.strategy_id.is_empty());

    assert_eq!(
        client.get_memory(&created.memory_id).await.unwrap(),
        created
    );

    let updated = client
        .update_memory(pb::UpdateMemoryRequest {
            memory_id: created.memory_id.clone(),
            description: "renamed".into(),
            update_mask: vec!["description".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.description, "renamed");
    assert_eq!(
        updated.strategies, created.strategies,
        "fields outside the mask are kept"
    );
    assert_status(
        client
            .update_memory(pb::UpdateMemoryRequest {
                memory_id: created.memory_id.clone(),
                update_mask: vec!["name".into()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "update_mask",
    );

    let listed: Vec<pb::Memory> = client.all_memories().try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    client.delete_memory(&created.memory_id).await.unwrap();
    assert_status(
        client.get_memory(&created.memory_id).await,
        Code::NotFound,
        "memory",
    );
    assert_status(
        client.delete_memory(&created.memory_id).await,
        Code::NotFound,
        "memory",
    );
}

#[tokio::test]
async fn create_memory_is_idempotent_with_a_client_token() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let request = pb::CreateMemoryRequest {
        name: "idem".into(),
        client_token: "tok-1".into(),
        ..Default::default()
    };
    let first = client.create_memory(request.clone()).await.unwrap();
    let again = client.create_memory(request.clone()).await.unwrap();
    assert_eq!(first.memory_id, again.memory_id);
    let other = pb::CreateMemoryRequest {
        description: "different".into(),
        ..request
    };
    assert_status(
        client.create_memory(other).await,
        Code::AlreadyExists,
        "client_token",
    );
    let listed: Vec<pb::Memory> = client.all_memories().try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn memory_validation_names_fields() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let cases = [
        (
            pb::CreateMemoryRequest {
                name: "".into(),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::CreateMemoryRequest {
                name: "9lives".into(),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::CreateMemoryRequest {
                name: "ok".into(),
                event_expiry_days: -1,
                ..Default::default()
            },
            "event_expiry_days",
        ),
        (
            pb::CreateMemoryRequest {
                name: "ok".into(),
                event_expiry_days: 4000,
                ..Default::default()
            },
            "event_expiry_days",
        ),
        (
            pb::CreateMemoryRequest {
                name: "ok".into(),
                session_policy: Some(pb::SessionPolicy {
                    idle_timeout_seconds: 10,
                    idle_after_seconds: 20,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "session_policy.idle_after_seconds",
        ),
        (
            pb::CreateMemoryRequest {
                name: "ok".into(),
                strategies: vec![pb::MemoryStrategy::default()],
                ..Default::default()
            },
            "strategies[0].type",
        ),
        (
            pb::CreateMemoryRequest {
                name: "ok".into(),
                strategies: vec![pb::MemoryStrategy {
                    r#type: 1,
                    namespace_template: "/x/{who}".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "strategies[0].namespace_template",
        ),
    ];
    for (request, field) in cases {
        assert_status(
            client.create_memory(request).await,
            Code::InvalidArgument,
            field,
        );
    }
    assert_status(
        client.get_memory("no-such-memory").await,
        Code::NotFound,
        "memory",
    );
    assert_status(
        client.get_memory("bad id").await,
        Code::InvalidArgument,
        "memory_id",
    );
}
