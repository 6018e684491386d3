use crate::assert_status;
use futures::TryStreamExt;
use memd_client::{pb, turn};
use memd_tests::{TestServer, create_memory, text_event, text_of};
use std::collections::BTreeMap;
use tonic::Code;

fn listing(memory_id: &str, actor: &str, session: &str) -> pb::ListEventsRequest {
    pb::ListEventsRequest {
        memory_id: memory_id.into(),
        actor_id: actor.into(),
        session_id: session.into(),
        include_payloads: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn events_round_trip_in_order() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "events", None).await;
    let m = &memory.memory_id;

    // An empty session id is generated and returned.
    let first = client
        .create_event(text_event(m, "acme/alice", "", "hello"))
        .await
        .unwrap();
    assert!(!first.session_id.is_empty());
    let session = first.session_id.clone();
    let mut request = pb::CreateEventRequest {
        payload: vec![
            turn(pb::Role::Assistant, "hi there"),
            pb::PayloadItem {
                content: Some(pb::payload_item::Content::Json(
                    r#"{"tool":"search","hits":3}"#.into(),
                )),
            },
            pb::PayloadItem {
                content: Some(pb::payload_item::Content::Blob(vec![0, 159, 255])),
            },
        ],
        metadata: BTreeMap::from([("channel".to_string(), "web".to_string())]),
        ..text_event(m, "acme/alice", &session, "")
    };
    request.event_timestamp = Some(prost_types::Timestamp {
        seconds: first.event_timestamp.unwrap().seconds + 5,
        nanos: 0,
    });
    let second = client.create_event(request.clone()).await.unwrap();
    assert_eq!(second.payload, request.payload);
    assert_eq!(second.metadata, request.metadata);

    let got = client
        .get_event(pb::GetEventRequest {
            memory_id: m.clone(),
            actor_id: "acme/alice".into(),
            session_id: session.clone(),
            event_id: second.event_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got, second);

    // An event stamped in the past sorts first, whatever its arrival order.
    let mut past = text_event(m, "acme/alice", &session, "remembered from 2023");
    past.event_timestamp = Some(prost_types::Timestamp {
        seconds: 1_684_000_000,
        nanos: 0,
    });
    let old = client.create_event(past).await.unwrap();

    let events: Vec<pb::Event> = client
        .all_events(listing(m, "acme/alice", &session))
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            old.event_id.as_str(),
            first.event_id.as_str(),
            second.event_id.as_str()
        ]
    );
    let newest_first = client
        .list_events(pb::ListEventsRequest {
            newest_first: true,
            ..listing(m, "acme/alice", &session)
        })
        .await
        .unwrap();
    assert_eq!(
        newest_first.events.first().unwrap().event_id,
        second.event_id
    );

    let bare = client
        .list_events(pb::ListEventsRequest {
            include_payloads: false,
            ..listing(m, "acme/alice", &session)
        })
        .await
        .unwrap();
    assert!(bare.events.iter().all(|e| e.payload.is_empty()));

    let session_info = client.get_session(m, "acme/alice", &session).await.unwrap();
    assert_eq!(session_info.event_count, 3);
    assert_eq!(session_info.state, pb::SessionState::Active as i32);

    let delete = pb::DeleteEventRequest {
        memory_id: m.clone(),
        actor_id: "acme/alice".into(),
        session_id: session.clone(),
        event_id: first.event_id.clone(),
    };
    client.delete_event(delete.clone()).await.unwrap();
    assert_status(client.delete_event(delete).await, Code::NotFound, "event");
    let remaining: Vec<pb::Event> = client
        .all_events(listing(m, "acme/alice", &session))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(remaining.len(), 2);
}

#[tokio::test]
async fn client_tokens_make_create_event_idempotent() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "idem", None).await;
    let m = &memory.memory_id;
    let request = pb::CreateEventRequest {
        client_token: "turn-0001".into(),
        metadata: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
        ..text_event(m, "bob", "", "only once")
    };
    let first = client.create_event(request.clone()).await.unwrap();
    let replay = client.create_event(request.clone()).await.unwrap();
    assert_eq!(first, replay, "a retry returns the original event");
    let events: Vec<pb::Event> = client
        .all_events(listing(m, "bob", &first.session_id))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "a retry writes nothing");
    assert_eq!(
        client
            .get_session(m, "bob", &first.session_id)
            .await
            .unwrap()
            .event_count,
        1
    );

    let changed = pb::CreateEventRequest {
        payload: vec![turn(pb::Role::User, "something else")],
        ..request
    };
    assert_status(
        client.create_event(changed).await,
        Code::AlreadyExists,
        "client_token",
    );
}

#[tokio::test]
async fn metadata_filters() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "meta", None).await;
    let m = &memory.memory_id;
    let tagged = |text: &str, meta: &[(&str, &str)]| pb::CreateEventRequest {
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..text_event(m, "carol", "s1", text)
    };
    client
        .create_event(tagged("a", &[("kind", "tool"), ("tool", "search")]))
        .await
        .unwrap();
    client
        .create_event(tagged("b", &[("kind", "chat")]))
        .await
        .unwrap();
    client.create_event(tagged("c", &[])).await.unwrap();
    let run = |filters: Vec<pb::MetadataFilter>| {
        let client = client.clone();
        let request = pb::ListEventsRequest {
            filter: Some(pb::EventFilter {
                branch: None,
                metadata: filters,
            }),
            ..listing(m, "carol", "s1")
        };
        async move {
            let events: Vec<pb::Event> = client.all_events(request).try_collect().await.unwrap();
            events
                .iter()
                .map(|e| text_of(e).to_string())
                .collect::<Vec<_>>()
        }
    };
    let cond = |key: &str, op: pb::MetadataOperator, value: &str| pb::MetadataFilter {
        key: key.into(),
        operator: op as i32,
        value: value.into(),
    };
    assert_eq!(
        run(vec![cond("kind", pb::MetadataOperator::EqualsTo, "tool")]).await,
        ["a"]
    );
    assert_eq!(
        run(vec![cond("kind", pb::MetadataOperator::Exists, "")]).await,
        ["a", "b"]
    );
    assert_eq!(
        run(vec![cond("kind", pb::MetadataOperator::NotExists, "")]).await,
        ["c"]
    );
    assert_eq!(
        run(vec![
            cond("kind", pb::MetadataOperator::Exists, ""),
            cond("tool", pb::MetadataOperator::NotExists, "")
        ])
        .await,
        ["b"]
    );
    assert_status(
        client
            .list_events(pb::ListEventsRequest {
                filter: Some(pb::EventFilter {
                    branch: None,
                    metadata: vec![cond("kind", pb::MetadataOperator::Unspecified, "")],
                }),
                ..listing(m, "carol", "s1")
            })
            .await,
        Code::InvalidArgument,
        "filter.metadata[0].operator",
    );
}

#[tokio::test]
async fn pagination_across_many_pages() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "pages", None).await;
    let m = &memory.memory_id;
    let mut written = Vec::new();
    for i in 0..230 {
        let event = client
            .create_event(text_event(m, "dave", "long", &format!("turn {i}")))
            .await
            .unwrap();
        written.push(event.event_id);
    }
    for newest_first in [false, true] {
        let mut token = String::new();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = client
                .list_events(pb::ListEventsRequest {
                    page_size: 7,
                    page_token: token.clone(),
                    newest_first,
                    ..listing(m, "dave", "long")
                })
                .await
                .unwrap();
            assert!(page.events.len() <= 7);
            seen.extend(page.events.into_iter().map(|e| e.event_id));
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut expected = written.clone();
        if newest_first {
            expected.reverse();
        }
        assert_eq!(seen, expected);
        assert_eq!(pages, 33);
    }
    // Default page size is 20.
    let page = client
        .list_events(listing(m, "dave", "long"))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 20);

    // Sessions and actors paginate too.
    for i in 0..45 {
        client
            .create_event(text_event(m, "erin", &format!("s{i:02}"), "x"))
            .await
            .unwrap();
        client
            .create_event(text_event(m, &format!("actor-{i:02}"), "s", "x"))
            .await
            .unwrap();
    }
    let sessions: Vec<pb::Session> = client.all_sessions(m, "erin").try_collect().await.unwrap();
    assert_eq!(sessions.len(), 45);
    let page = client
        .list_sessions(pb::ListSessionsRequest {
            memory_id: m.clone(),
            actor_id: "erin".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap();
    let next = client
        .list_sessions(pb::ListSessionsRequest {
            memory_id: m.clone(),
            actor_id: "erin".into(),
            page_size: 10,
            page_token: page.next_page_token,
        })
        .await
        .unwrap();
    assert_eq!(next.sessions.first().unwrap().session_id, "s10");
    let actors: Vec<pb::Actor> = client.all_actors(m).try_collect().await.unwrap();
    assert_eq!(actors.len(), 47, "45 + dave + erin");
    let mut ids: Vec<_> = actors.iter().map(|a| a.actor_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 47, "no actor is listed twice");
}

#[tokio::test]
async fn delete_actor_erases_everything() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "forget", None).await;
    let m = &memory.memory_id;
    let event = client
        .create_event(pb::CreateEventRequest {
            client_token: "t1".into(),
            ..text_event(m, "frank", "s1", "my ssn is ...")
        })
        .await
        .unwrap();
    client
        .create_event(text_event(m, "frank", "s2", "more"))
        .await
        .unwrap();
    client
        .create_event(text_event(m, "frankie", "s1", "a neighbour keeps data"))
        .await
        .unwrap();
    client.delete_actor(m, "frank").await.unwrap();

    assert_status(
        client.get_session(m, "frank", "s1").await,
        Code::NotFound,
        "session",
    );
    assert_status(
        client
            .get_event(pb::GetEventRequest {
                memory_id: m.clone(),
                actor_id: "frank".into(),
                session_id: "s1".into(),
                event_id: event.event_id.clone(),
            })
            .await,
        Code::NotFound,
        "event",
    );
    assert_status(
        client
            .list_sessions(pb::ListSessionsRequest {
                memory_id: m.clone(),
                actor_id: "frank".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "actor",
    );
    let actors: Vec<pb::Actor> = client.all_actors(m).try_collect().await.unwrap();
    assert_eq!(
        actors
            .iter()
            .map(|a| a.actor_id.as_str())
            .collect::<Vec<_>>(),
        ["frankie"]
    );
    assert_eq!(
        client
            .get_session(m, "frankie", "s1")
            .await
            .unwrap()
            .event_count,
        1
    );
    // The token was erased too: the same token now creates a fresh event.
    let again = client
        .create_event(pb::CreateEventRequest {
            client_token: "t1".into(),
            ..text_event(m, "frank", "s1", "new life")
        })
        .await
        .unwrap();
    assert_ne!(again.event_id, event.event_id);
    assert_status(
        client.delete_actor(m, "nobody").await,
        Code::NotFound,
        "actor",
    );
}

#[tokio::test]
async fn unknown_resources_are_not_found() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "nf", None).await;
    let m = &memory.memory_id;
    let event = client
        .create_event(text_event(m, "gina", "s1", "x"))
        .await
        .unwrap();
    assert_status(
        client
            .create_event(text_event("nope-123", "gina", "s1", "x"))
            .await,
        Code::NotFound,
        "memory",
    );
    assert_status(
        client.list_events(listing(m, "gina", "s2")).await,
        Code::NotFound,
        "session",
    );
    assert_status(
        client.list_events(listing(m, "nobody", "s1")).await,
        Code::NotFound,
        "session",
    );
    assert_status(
        client.get_session(m, "gina", "s2").await,
        Code::NotFound,
        "session",
    );
    let missing = format!("{}0", &event.event_id[..31]);
    let missing = if missing == event.event_id {
        format!("{}1", &event.event_id[..31])
    } else {
        missing
    };
    assert_status(
        client
            .get_event(pb::GetEventRequest {
                memory_id: m.clone(),
                actor_id: "gina".into(),
                session_id: "s1".into(),
                event_id: missing,
            })
            .await,
        Code::NotFound,
        "event",
    );
    assert_status(
        client
            .list_actors(pb::ListActorsRequest {
                memory_id: "nope-123".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "memory",
    );
}
