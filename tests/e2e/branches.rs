use crate::assert_status;
use futures::TryStreamExt;
use memd_client::pb;
use memd_tests::{TestServer, create_memory, text_event, text_of};
use tonic::Code;

#[tokio::test]
async fn branches_fork_and_list_with_and_without_parents() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "branches", None).await;
    let m = memory.memory_id.as_str();
    let put = |text: &str, branch: Option<(&str, &str)>| {
        let client = client.clone();
        let request = pb::CreateEventRequest {
            branch: branch.map(|(name, root)| pb::Branch {
                name: name.into(),
                root_event_id: root.into(),
            }),
            ..text_event(m, "ann", "s1", text)
        };
        async move { client.create_event(request).await }
    };
    let m1 = put("m1", None).await.unwrap();
    let m2 = put("m2", None).await.unwrap();
    put("m3", None).await.unwrap();
    // "alt" forks off m2; later events on it may repeat or omit the root.
    let a1 = put("a1", Some(("alt", &m2.event_id))).await.unwrap();
    assert_eq!(a1.branch.as_ref().unwrap().root_event_id, m2.event_id);
    let a2 = put("a2", Some(("alt", ""))).await.unwrap();
    assert_eq!(a2.branch.as_ref().unwrap().root_event_id, m2.event_id);
    put("m4", None).await.unwrap();
    // "deep" forks off a1, on "alt".
    put("d1", Some(("deep", &a1.event_id))).await.unwrap();

    let list = |name: Option<&str>, parents: bool, newest_first: bool| {
        let client = client.clone();
        let request = pb::ListEventsRequest {
            memory_id: m.into(),
            actor_id: "ann".into(),
            session_id: "s1".into(),
            include_payloads: true,
            filter: name.map(|name| pb::EventFilter {
                branch: Some(pb::BranchFilter {
                    name: name.into(),
                    include_parent_branches: parents,
                }),
                metadata: vec![],
            }),
            page_size: 2,
            newest_first,
            ..Default::default()
        };
        async move {
            let events: Vec<pb::Event> = client.all_events(request).try_collect().await.unwrap();
            events
                .iter()
                .map(|e| text_of(e).to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(None, false, false).await,
        ["m1", "m2", "m3", "a1", "a2", "m4", "d1"]
    );
    assert_eq!(list(Some(""), false, false).await, ["m1", "m2", "m3", "m4"]);
    assert_eq!(list(Some("alt"), false, false).await, ["a1", "a2"]);
    assert_eq!(
        list(Some("alt"), true, false).await,
        ["m1", "m2", "a1", "a2"]
    );
    assert_eq!(
        list(Some("deep"), true, false).await,
        ["m1", "m2", "a1", "d1"]
    );
    assert_eq!(
        list(Some("deep"), true, true).await,
        ["d1", "a1", "m2", "m1"]
    );

    // Errors: a new branch needs a root; the root must be in the session; a branch's root is fixed.
    assert_status(
        put("x", Some(("new", ""))).await,
        Code::InvalidArgument,
        "branch.root_event_id",
    );
    let elsewhere = client
        .create_event(text_event(m, "ann", "s2", "other session"))
        .await
        .unwrap();
    assert_status(
        put("x", Some(("new", &elsewhere.event_id))).await,
        Code::NotFound,
        "branch.root_event_id",
    );
    assert_status(
        put("x", Some(("alt", &m1.event_id))).await,
        Code::InvalidArgument,
        "branch.root_event_id",
    );
    let unknown = pb::ListEventsRequest {
        memory_id: m.into(),
        actor_id: "ann".into(),
        session_id: "s1".into(),
        filter: Some(pb::EventFilter {
            branch: Some(pb::BranchFilter {
                name: "ghost".into(),
                include_parent_branches: true,
            }),
            metadata: vec![],
        }),
        ..Default::default()
    };
    assert_status(
        client.list_events(unknown).await,
        Code::NotFound,
        "branch ghost",
    );
}
