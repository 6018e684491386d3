//! Every documented limit is enforced with INVALID_ARGUMENT naming the field, and a rejected
//! request writes nothing.

use crate::assert_status;
use memd_client::{pb, turn};
use memd_tests::{TestServer, create_memory, text_event};
use tonic::Code;

#[tokio::test]
async fn create_event_limits() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "limits", None).await;
    let m = memory.memory_id.as_str();
    let base = || text_event(m, "acme/alice", "s1", "ok");
    let cases: Vec<(pb::CreateEventRequest, &str)> = vec![
        (
            pb::CreateEventRequest {
                payload: vec![],
                ..base()
            },
            "payload",
        ),
        (
            pb::CreateEventRequest {
                payload: vec![turn(pb::Role::User, "x"); 101],
                ..base()
            },
            "payload",
        ),
        (
            pb::CreateEventRequest {
                payload: vec![turn(pb::Role::User, "é".repeat(100_001))],
                ..base()
            },
            "payload[0].conversational.text",
        ),
        (
            pb::CreateEventRequest {
                payload: vec![turn(pb::Role::Unspecified, "x")],
                ..base()
            },
            "payload[0].conversational.role",
        ),
        (
            pb::CreateEventRequest {
                payload: vec![pb::PayloadItem { content: None }],
                ..base()
            },
            "payload[0]",
        ),
        (
            pb::CreateEventRequest {
                payload: vec![pb::PayloadItem {
                    content: Some(pb::payload_item::Content::Json("{not json".into())),
                }],
                ..base()
            },
            "payload[0].json",
        ),
        (
            pb::CreateEventRequest {
                payload: vec![pb::PayloadItem {
                    content: Some(pb::payload_item::Content::Blob(vec![
                        7;
                        10 * 1024 * 1024 + 1
                    ])),
                }],
                ..base()
            },
            "payload",
        ),
        (
            pb::CreateEventRequest {
                metadata: (0..16).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..base()
            },
            "metadata",
        ),
        (
            pb::CreateEventRequest {
                metadata: [("k".repeat(129), "v".into())].into(),
                ..base()
            },
            "metadata",
        ),
        (
            pb::CreateEventRequest {
                metadata: [("k".into(), "v".repeat(257))].into(),
                ..base()
            },
            "metadata[k]",
        ),
        (
            pb::CreateEventRequest {
                actor_id: "".into(),
                ..base()
            },
            "actor_id",
        ),
        (
            pb::CreateEventRequest {
                actor_id: "a".repeat(256),
                ..base()
            },
            "actor_id",
        ),
        (
            pb::CreateEventRequest {
                actor_id: "-leading".into(),
                ..base()
            },
            "actor_id",
        ),
        (
            pb::CreateEventRequest {
                actor_id: "sp ace".into(),
                ..base()
            },
            "actor_id",
        ),
        (
            pb::CreateEventRequest {
                session_id: "s".repeat(101),
                ..base()
            },
            "session_id",
        ),
        (
            pb::CreateEventRequest {
                session_id: "a/b".into(),
                ..base()
            },
            "session_id",
        ),
        (
            pb::CreateEventRequest {
                memory_id: "".into(),
                ..base()
            },
            "memory_id",
        ),
        (
            pb::CreateEventRequest {
                client_token: "has space".into(),
                ..base()
            },
            "client_token",
        ),
        (
            pb::CreateEventRequest {
                event_timestamp: Some(prost_types::Timestamp {
                    seconds: -5,
                    nanos: 0,
                }),
                ..base()
            },
            "event_timestamp",
        ),
        (
            pb::CreateEventRequest {
                branch: Some(pb::Branch {
                    name: "".into(),
                    root_event_id: "00".into(),
                }),
                ..base()
            },
            "branch.name",
        ),
        (
            pb::CreateEventRequest {
                branch: Some(pb::Branch {
                    name: "b1".into(),
                    root_event_id: "zz".into(),
                }),
                ..base()
            },
            "branch.root_event_id",
        ),
    ];
    for (request, field) in cases {
        assert_status(
            client.create_event(request).await,
            Code::InvalidArgument,
            field,
        );
    }
    // The boundaries themselves are accepted.
    let at_limits = pb::CreateEventRequest {
        actor_id: "a".repeat(255),
        session_id: "s".repeat(100),
        payload: vec![turn(pb::Role::User, "é".repeat(100_000)); 1]
            .into_iter()
            .chain(vec![turn(pb::Role::Tool, "x"); 99])
            .collect(),
        metadata: (0..15)
            .map(|i| (format!("{i:0>128}"), "v".repeat(256)))
            .collect(),
        ..base()
    };
    client.create_event(at_limits).await.unwrap();
    // Nothing from the rejected requests was written.
    assert_status(
        client.get_session(m, "acme/alice", "s1").await,
        Code::NotFound,
        "session",
    );
}

#[tokio::test]
async fn listing_limits_and_page_tokens() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "tokens", None).await;
    let m = memory.memory_id.as_str();
    for i in 0..5 {
        client
            .create_event(text_event(m, "alice", "s1", &format!("{i}")))
            .await
            .unwrap();
        client
            .create_event(text_event(m, "bob", "s1", &format!("{i}")))
            .await
            .unwrap();
    }
    let listing = |actor: &str, size: i32, token: &str| pb::ListEventsRequest {
        memory_id: m.into(),
        actor_id: actor.into(),
        session_id: "s1".into(),
        page_size: size,
        page_token: token.into(),
        ..Default::default()
    };
    assert_status(
        client.list_events(listing("alice", 101, "")).await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_status(
        client.list_events(listing("alice", -1, "")).await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_eq!(
        client
            .list_events(listing("alice", 100, ""))
            .await
            .unwrap()
            .events
            .len(),
        5
    );
    let alice_token = client
        .list_events(listing("alice", 2, ""))
        .await
        .unwrap()
        .next_page_token;
    assert!(!alice_token.is_empty());
    // A token from another actor's listing, a forged one, and garbage are all refused.
    assert_status(
        client.list_events(listing("bob", 2, &alice_token)).await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        client
            .list_events(listing("alice", 2, "bm90IGEgdG9rZW4"))
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        client.list_events(listing("alice", 2, "%%%")).await,
        Code::InvalidArgument,
        "page_token",
    );
    let sessions = pb::ListSessionsRequest {
        memory_id: m.into(),
        actor_id: "bob".into(),
        page_size: 1,
        page_token: alice_token.clone(),
    };
    assert_status(
        client.list_sessions(sessions).await,
        Code::InvalidArgument,
        "page_token",
    );
    let actors = pb::ListActorsRequest {
        memory_id: m.into(),
        page_size: 1,
        page_token: alice_token,
    };
    assert_status(
        client.list_actors(actors).await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        client
            .list_memories(pb::ListMemoriesRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "page_size",
    );
}
