//! Tenant isolation matrix: a key scoped to `acme/*` can never read, list or delete another
//! tenant's actors, sessions or events, through any RPC.

use crate::assert_status;
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, create_memory, text_event};
use tonic::Code;

use pb::api_key_policy::Action;

async fn key(
    admin: &MemdClient,
    memory_ids: &[&str],
    actors: &[&str],
    actions: &[Action],
) -> String {
    let policy = pb::ApiKeyPolicy {
        memory_ids: memory_ids.iter().map(|s| s.to_string()).collect(),
        actor_patterns: actors.iter().map(|s| s.to_string()).collect(),
        namespace_prefixes: vec!["/".into()],
        actions: actions.iter().map(|&a| a as i32).collect(),
    };
    admin.create_api_key("tenant", policy).await.unwrap().secret
}

#[tokio::test]
async fn tenants_cannot_touch_each_other() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let memory = create_memory(&admin, "shared", None).await;
    let other_memory = create_memory(&admin, "private", None).await;
    let m = memory.memory_id.as_str();
    let acme = server
        .client(Some(
            &key(&admin, &[m], &["acme/*"], &[Action::Read, Action::Write]).await,
        ))
        .await;
    let globex = server
        .client(Some(
            &key(&admin, &[m], &["globex/*"], &[Action::Read, Action::Write]).await,
        ))
        .await;

    let a_event = acme
        .create_event(text_event(m, "acme/alice", "s1", "acme secret"))
        .await
        .unwrap();
    let g_event = globex
        .create_event(text_event(m, "globex/bob", "s1", "globex secret"))
        .await
        .unwrap();

    for (attacker, victim, event) in [
        (&globex, "acme/alice", &a_event),
        (&acme, "globex/bob", &g_event),
    ] {
        let denied = Code::PermissionDenied;
        assert_status(
            attacker
                .create_event(text_event(m, victim, "s1", "inject"))
                .await,
            denied,
            "actor",
        );
        let get = pb::GetEventRequest {
            memory_id: m.into(),
            actor_id: victim.into(),
            session_id: "s1".into(),
            event_id: event.event_id.clone(),
        };
        assert_status(attacker.get_event(get).await, denied, "actor");
        let list = pb::ListEventsRequest {
            memory_id: m.into(),
            actor_id: victim.into(),
            session_id: "s1".into(),
            ..Default::default()
        };
        assert_status(attacker.list_events(list).await, denied, "actor");
        let sessions = pb::ListSessionsRequest {
            memory_id: m.into(),
            actor_id: victim.into(),
            ..Default::default()
        };
        assert_status(attacker.list_sessions(sessions).await, denied, "actor");
        assert_status(attacker.get_session(m, victim, "s1").await, denied, "actor");
        // Denied whether or not the target exists: no existence oracle.
        assert_status(
            attacker.get_session(m, victim, "no-such-session").await,
            denied,
            "actor",
        );
        let delete = pb::DeleteEventRequest {
            memory_id: m.into(),
            actor_id: victim.into(),
            session_id: "s1".into(),
            event_id: event.event_id.clone(),
        };
        assert_status(attacker.delete_event(delete).await, denied, "actor");
        assert_status(attacker.delete_actor(m, victim).await, denied, "actor");
    }
    // Listings show only the caller's own actors, and pages are full of them.
    for i in 0..30 {
        acme.create_event(text_event(m, &format!("acme/user{i:02}"), "s", "x"))
            .await
            .unwrap();
    }
    let seen: Vec<pb::Actor> = globex.all_actors(m).try_collect().await.unwrap();
    assert_eq!(
        seen.iter().map(|a| a.actor_id.as_str()).collect::<Vec<_>>(),
        ["globex/bob"]
    );
    // Neighbours just outside the glob's literal prefix stay invisible.
    admin
        .create_event(text_event(m, "acme0", "s", "x"))
        .await
        .unwrap();
    admin
        .create_event(text_event(m, "acme", "s", "x"))
        .await
        .unwrap();
    let mine: Vec<pb::Actor> = acme.all_actors(m).try_collect().await.unwrap();
    assert_eq!(mine.len(), 31, "acme/alice and acme/user00..29");
    assert!(mine.iter().all(|a| a.actor_id.starts_with("acme/")));
    let page = acme
        .list_actors(pb::ListActorsRequest {
            memory_id: m.into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(page.actors.len(), 10);
    assert!(page.actors.iter().all(|a| a.actor_id.starts_with("acme/")));

    // Memory scope, control plane and key management.
    let om = other_memory.memory_id.as_str();
    assert_status(
        acme.create_event(text_event(om, "acme/alice", "s1", "x"))
            .await,
        Code::PermissionDenied,
        "memory",
    );
    assert_status(acme.get_memory(om).await, Code::PermissionDenied, "memory");
    let memories: Vec<pb::Memory> = acme.all_memories().try_collect().await.unwrap();
    assert_eq!(
        memories
            .iter()
            .map(|mm| mm.memory_id.as_str())
            .collect::<Vec<_>>(),
        [m]
    );
    assert_status(
        acme.create_memory(pb::CreateMemoryRequest {
            name: "mine".into(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        acme.delete_memory(m).await,
        Code::PermissionDenied,
        "memory",
    );
    assert_status(
        acme.create_api_key("escalate", pb::ApiKeyPolicy::default())
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        acme.all_api_keys().try_collect::<Vec<_>>().await,
        Code::PermissionDenied,
        "",
    );

    // The victims' data is intact.
    assert_eq!(
        admin
            .get_session(m, "acme/alice", "s1")
            .await
            .unwrap()
            .event_count,
        1
    );
    assert_eq!(
        admin
            .get_session(m, "globex/bob", "s1")
            .await
            .unwrap()
            .event_count,
        1
    );
}

#[tokio::test]
async fn actions_keys_and_revocation() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let memory = create_memory(&admin, "acts", None).await;
    let m = memory.memory_id.as_str();
    admin
        .create_event(text_event(m, "acme/alice", "s1", "x"))
        .await
        .unwrap();

    let reader_secret = key(&admin, &[m], &["acme/*"], &[Action::Read]).await;
    let reader = server.client(Some(&reader_secret)).await;
    assert_eq!(
        reader
            .get_session(m, "acme/alice", "s1")
            .await
            .unwrap()
            .event_count,
        1
    );
    assert_status(
        reader
            .create_event(text_event(m, "acme/alice", "s1", "y"))
            .await,
        Code::PermissionDenied,
        "write",
    );
    assert_status(
        reader.delete_actor(m, "acme/alice").await,
        Code::PermissionDenied,
        "write",
    );

    // Without a key, with a wrong key, with a revoked key: unauthenticated.
    let anonymous = server.client(None).await;
    assert_status(
        anonymous.get_session(m, "acme/alice", "s1").await,
        Code::Unauthenticated,
        "authorization",
    );
    let wrong = server.client(Some("memd_kdoesnotexist_secret")).await;
    assert_status(
        wrong.get_session(m, "acme/alice", "s1").await,
        Code::Unauthenticated,
        "api key",
    );
    let keys: Vec<pb::ApiKey> = admin.all_api_keys().try_collect().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].revoke_time.is_none());
    admin.revoke_api_key(&keys[0].key_id).await.unwrap();
    assert_status(
        reader.get_session(m, "acme/alice", "s1").await,
        Code::Unauthenticated,
        "revoked",
    );

    // Keys and revocations survive a restart.
    let server = server.restart().await;
    let reader = server.client(Some(&reader_secret)).await;
    assert_status(
        reader.get_session(m, "acme/alice", "s1").await,
        Code::Unauthenticated,
        "revoked",
    );

    // Policies are validated.
    let admin = server.admin().await;
    assert_status(
        admin
            .create_api_key("bad", pb::ApiKeyPolicy::default())
            .await,
        Code::InvalidArgument,
        "policy.actions",
    );
}

#[tokio::test]
async fn development_mode_is_open_on_loopback_but_keys_still_bind() {
    let server = TestServer::start_with(|config| config.admin_key = None).await;
    let anonymous = server.client(None).await;
    let memory = create_memory(&anonymous, "dev", None).await;
    let m = memory.memory_id.as_str();
    anonymous
        .create_event(text_event(m, "globex/bob", "s1", "x"))
        .await
        .unwrap();
    let scoped = server
        .client(Some(
            &key(&anonymous, &[m], &["acme/*"], &[Action::Read]).await,
        ))
        .await;
    assert_status(
        scoped.get_session(m, "globex/bob", "s1").await,
        Code::PermissionDenied,
        "actor",
    );
}
