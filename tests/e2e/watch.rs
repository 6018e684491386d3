//! PingSession, WatchSessions and WatchMemoryRecords against a real server: keep-alive,
//! transitions and record changes in commit order, resumable from a cursor (also across a
//! restart), filtered by the request and the key's policy.

use futures::StreamExt;
use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, create_memory, facts_memory, named_event, text_event};
use std::time::Duration;
use tonic::Code;

/// Session policy in seconds: IDLE after 1 s, TERMINATED after 3 s quiet.
fn quick_policy() -> Option<pb::SessionPolicy> {
    Some(pb::SessionPolicy {
        idle_after_seconds: 1,
        idle_timeout_seconds: 3,
        max_duration_seconds: 60,
    })
}

async fn key(
    admin: &MemdClient,
    memory_id: &str,
    actors: &str,
    actions: &[pb::api_key_policy::Action],
) -> String {
    admin
        .create_api_key(
            "watcher",
            pb::ApiKeyPolicy {
                memory_ids: vec![memory_id.into()],
                actor_patterns: vec![actors.into()],
                namespace_prefixes: vec!["*".into()],
                actions: actions.iter().map(|&a| a as i32).collect(),
            },
        )
        .await
        .unwrap()
        .secret
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("a change arrives")
        .expect("stream open")
        .expect("no error")
}

/// (actor, session, from, to) of a change.
fn shape(c: &pb::SessionChange) -> (String, String, pb::SessionState, pb::SessionState) {
    (
        c.actor_id.clone(),
        c.session_id.clone(),
        pb::SessionState::try_from(c.from).unwrap(),
        pb::SessionState::try_from(c.to).unwrap(),
    )
}

#[tokio::test]
async fn pings_keep_a_session_active_until_they_stop() {
    use pb::SessionState::*;
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "pings", quick_policy())
        .await
        .memory_id;
    admin
        .create_event(text_event(&m, "worker", "s1", "waiting on the bank"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        admin.get_session(&m, "worker", "s1").await.unwrap().state,
        Idle as i32
    );
    // Pinging for longer than the idle timeout keeps it alive, and wakes it from IDLE.
    for _ in 0..10 {
        let session = admin.ping_session(&m, "worker", "s1").await.unwrap();
        assert_eq!(session.state, Active as i32);
        assert!(session.last_ping_time.is_some());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let session = admin.get_session(&m, "worker", "s1").await.unwrap();
    assert_eq!(
        session.state, Active as i32,
        "5 s of pings outlast the 3 s idle timeout"
    );
    assert_eq!(session.event_count, 1, "a ping is not an event");
    // Once the pings stop, it goes IDLE and TERMINATED, and a ping cannot revive it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        admin.get_session(&m, "worker", "s1").await.unwrap().state,
        Terminated as i32
    );
    let err = admin.ping_session(&m, "worker", "s1").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = admin.ping_session(&m, "worker", "nope").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let reader = server
        .client(Some(
            &key(&admin, &m, "*", &[pb::api_key_policy::Action::Read]).await,
        ))
        .await;
    let err = reader.ping_session(&m, "worker", "s1").await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "a ping is a write: {err}"
    );
}

#[tokio::test]
async fn session_transitions_stream_in_order_filtered_and_resumable() {
    use pb::SessionState::*;
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "watch", quick_policy())
        .await
        .memory_id;
    let acme = server
        .client(Some(
            &key(&admin, &m, "acme/*", &[pb::api_key_policy::Action::Read]).await,
        ))
        .await;
    let watch = |client: &MemdClient, pattern: &str, cursor: String| {
        let (client, request) = (
            client.clone(),
            pb::WatchSessionsRequest {
                memory_id: m.clone(),
                actor_pattern: pattern.into(),
                cursor,
            },
        );
        async move { client.watch_sessions(request).await.unwrap() }
    };
    let mut everything = watch(&admin, "", String::new()).await;
    let mut acme_only = watch(&acme, "", String::new()).await;
    let mut one_actor = watch(&admin, "globex/*", String::new()).await;

    admin
        .create_event(text_event(&m, "acme/ann", "s1", "hello"))
        .await
        .unwrap();
    admin
        .create_event(text_event(&m, "globex/bob", "s1", "hello"))
        .await
        .unwrap();
    let first = next(&mut everything).await;
    assert_eq!(
        shape(&first),
        ("acme/ann".into(), "s1".into(), Unspecified, Active)
    );
    let second = next(&mut everything).await;
    assert_eq!(
        shape(&second),
        ("globex/bob".into(), "s1".into(), Unspecified, Active)
    );
    for to in [Idle, Terminated] {
        let mut seen: Vec<_> = vec![
            shape(&next(&mut everything).await),
            shape(&next(&mut everything).await),
        ];
        seen.sort();
        assert_eq!(seen.iter().map(|s| s.3).collect::<Vec<_>>(), [to, to]);
    }
    // The acme key never hears of globex, and a pattern narrows a stream.
    let acme_seen: Vec<_> = [
        next(&mut acme_only).await,
        next(&mut acme_only).await,
        next(&mut acme_only).await,
    ]
    .iter()
    .map(shape)
    .collect();
    assert!(acme_seen.iter().all(|s| s.0 == "acme/ann"), "{acme_seen:?}");
    assert_eq!(
        acme_seen.iter().map(|s| s.3).collect::<Vec<_>>(),
        [Active, Idle, Terminated]
    );
    assert_eq!(next(&mut one_actor).await.actor_id, "globex/bob");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), acme_only.next())
            .await
            .is_err(),
        "nothing more for acme"
    );

    // Resuming after the first change repeats nothing and misses nothing.
    let mut resumed = watch(&admin, "", first.cursor.clone()).await;
    let mut cursors = Vec::new();
    for _ in 0..5 {
        cursors.push(next(&mut resumed).await.cursor);
    }
    assert_eq!(cursors[0], second.cursor);
    let mut sorted = cursors.clone();
    sorted.sort_by_key(|c| c.parse::<u64>().unwrap());
    assert_eq!(cursors, sorted, "in commit order");

    for (cursor, code) in [
        ("nonsense", Code::InvalidArgument),
        ("999999999999", Code::InvalidArgument),
    ] {
        let err = admin
            .watch_sessions(pb::WatchSessionsRequest {
                memory_id: m.clone(),
                actor_pattern: String::new(),
                cursor: cursor.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{cursor}: {err}");
    }
    let err = acme
        .watch_sessions(pb::WatchSessionsRequest {
            memory_id: "other-0123456789".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
}

#[tokio::test]
async fn a_watcher_resumes_across_a_restart() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "restart", None).await.memory_id;
    let mut stream = admin
        .watch_sessions(pb::WatchSessionsRequest {
            memory_id: m.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_event(text_event(&m, "a", "s1", "x"))
        .await
        .unwrap();
    let seen = next(&mut stream).await;
    assert_eq!(seen.session_id, "s1");
    admin
        .create_event(text_event(&m, "a", "s2", "x"))
        .await
        .unwrap();
    admin
        .create_event(text_event(&m, "a", "s3", "x"))
        .await
        .unwrap();
    drop(stream);

    let server = server.restart().await;
    let admin = server.admin().await;
    admin
        .create_event(text_event(&m, "a", "s4", "x"))
        .await
        .unwrap();
    let mut resumed = admin
        .watch_sessions(pb::WatchSessionsRequest {
            memory_id: m.clone(),
            actor_pattern: String::new(),
            cursor: seen.cursor,
        })
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(next(&mut resumed).await.session_id);
    }
    assert_eq!(sessions, ["s2", "s3", "s4"]);
}

#[tokio::test]
async fn record_changes_stream_with_their_kind_and_scope() {
    use pb::RecordChangeKind::*;
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_memory(&admin, "records").await;
    let watch = |client: &MemdClient, namespace: &str| {
        let (client, request) = (
            client.clone(),
            pb::WatchMemoryRecordsRequest {
                memory_id: m.clone(),
                namespace: namespace.into(),
                cursor: String::new(),
            },
        );
        async move { client.watch_memory_records(request).await.unwrap() }
    };
    let acme = server
        .client(Some(
            &admin
                .create_api_key(
                    "acme",
                    pb::ApiKeyPolicy {
                        memory_ids: vec![m.clone()],
                        actor_patterns: vec!["*".into()],
                        namespace_prefixes: vec!["/kb/acme/".into()],
                        actions: vec![pb::api_key_policy::Action::Read as i32],
                    },
                )
                .await
                .unwrap()
                .secret,
        ))
        .await;
    let mut all = watch(&admin, "/kb/").await;
    let mut acme_only = watch(&acme, "").await;

    let input = |ns: &str, text: &str| pb::MemoryRecordInput {
        namespace: ns.into(),
        text: text.into(),
        ..Default::default()
    };
    let created = admin
        .batch_create_memory_records(
            &m,
            vec![
                input("/kb/acme/", "Acme ships on Fridays."),
                input("/kb/globex/", "Globex ships daily."),
            ],
        )
        .await
        .unwrap();
    let (acme_id, globex_id) = (
        created[0].memory_record_id.clone(),
        created[1].memory_record_id.clone(),
    );
    admin
        .batch_update_memory_records(
            &m,
            vec![pb::MemoryRecordUpdate {
                memory_record_id: acme_id.clone(),
                text: "Acme ships on Mondays.".into(),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    admin.delete_memory_record(&m, &globex_id).await.unwrap();

    let mut got = Vec::new();
    for _ in 0..4 {
        let c = next(&mut all).await;
        got.push((
            pb::RecordChangeKind::try_from(c.kind).unwrap(),
            c.memory_record_id.clone(),
            c.version,
            c,
        ));
    }
    assert_eq!(
        got.iter()
            .map(|g| (g.0, g.1.clone(), g.2))
            .collect::<Vec<_>>(),
        [
            (Created, acme_id.clone(), 1),
            (Created, globex_id.clone(), 1),
            (Updated, acme_id.clone(), 2),
            (Deleted, globex_id.clone(), 1)
        ]
    );
    // CREATED and UPDATED carry the record as it reads now.
    assert_eq!(
        got[2].3.memory_record.as_ref().unwrap().text,
        "Acme ships on Mondays."
    );
    assert!(got[3].3.memory_record.is_none());
    // The acme key sees only its namespace: no globex record, not even its deletion.
    let acme_seen: Vec<String> = [next(&mut acme_only).await, next(&mut acme_only).await]
        .iter()
        .map(|c| c.memory_record_id.clone())
        .collect();
    assert_eq!(acme_seen, [acme_id.clone(), acme_id]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), acme_only.next())
            .await
            .is_err()
    );

    // Extraction: a contradiction supersedes the old record and creates the new one.
    let mut facts = watch(&admin, "/strategies/").await;
    admin
        .create_event(named_event(&m, "maria", "s1", "Maria", "I'm vegetarian."))
        .await
        .unwrap();
    let first = next(&mut facts).await;
    assert_eq!(first.kind, Created as i32);
    tokio::time::sleep(Duration::from_millis(20)).await;
    admin
        .create_event(named_event(&m, "maria", "s1", "Maria", "I'm vegan now."))
        .await
        .unwrap();
    let mut later = vec![next(&mut facts).await, next(&mut facts).await];
    later.sort_by_key(|c| c.kind);
    assert_eq!(
        (later[0].kind, later[1].kind),
        (Created as i32, Superseded as i32),
        "{later:#?}"
    );
    assert_eq!(later[1].memory_record_id, first.memory_record_id);
    assert!(
        later[0]
            .memory_record
            .as_ref()
            .unwrap()
            .text
            .contains("vegan")
    );
}
