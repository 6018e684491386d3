//! Session lifecycle with a short policy: ACTIVE → IDLE → TERMINATED, announced to
//! subscribers, observable through reads, and appends to a terminated session refused.

use crate::assert_status;
use memd_client::pb;
use memd_server::store::SessionTransition;
use memd_tests::{TestServer, create_memory, text_event};
use std::time::Duration;
use tonic::Code;

async fn next_transition(server: &mut TestServer, session: &str) -> SessionTransition {
    let wait = async {
        loop {
            let transition = server
                .transitions()
                .recv()
                .await
                .expect("transition channel open");
            if transition.session_id == session {
                return transition;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a transition within 10 s")
}

#[tokio::test]
async fn sessions_go_idle_then_terminate() {
    let mut server = TestServer::start().await;
    let client = server.admin().await;
    let policy = pb::SessionPolicy {
        idle_after_seconds: 1,
        idle_timeout_seconds: 2,
        max_duration_seconds: 3600,
    };
    let memory = create_memory(&client, "lifecycle", Some(policy)).await;
    let m = memory.memory_id.clone();

    client
        .create_event(text_event(&m, "ann", "s1", "hello"))
        .await
        .unwrap();
    let started = next_transition(&mut server, "s1").await;
    assert_eq!(
        (started.from, started.to),
        (pb::SessionState::Unspecified, pb::SessionState::Active)
    );
    let session = client.get_session(&m, "ann", "s1").await.unwrap();
    assert_eq!(session.state, pb::SessionState::Active as i32);

    let idle = next_transition(&mut server, "s1").await;
    assert_eq!(
        (idle.from, idle.to),
        (pb::SessionState::Active, pb::SessionState::Idle)
    );
    assert_eq!(
        client.get_session(&m, "ann", "s1").await.unwrap().state,
        pb::SessionState::Idle as i32
    );

    // An event while idle resumes the session.
    client
        .create_event(text_event(&m, "ann", "s1", "still here"))
        .await
        .unwrap();
    let resumed = next_transition(&mut server, "s1").await;
    assert_eq!(
        (resumed.from, resumed.to),
        (pb::SessionState::Idle, pb::SessionState::Active)
    );

    let idle_again = next_transition(&mut server, "s1").await;
    assert_eq!(idle_again.to, pb::SessionState::Idle);
    let terminated = next_transition(&mut server, "s1").await;
    assert_eq!(
        (terminated.from, terminated.to),
        (pb::SessionState::Idle, pb::SessionState::Terminated)
    );

    let session = client.get_session(&m, "ann", "s1").await.unwrap();
    assert_eq!(session.state, pb::SessionState::Terminated as i32);
    assert_eq!(session.event_count, 2);
    assert_status(
        client
            .create_event(text_event(&m, "ann", "s1", "too late"))
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    assert_eq!(
        client
            .get_session(&m, "ann", "s1")
            .await
            .unwrap()
            .event_count,
        2,
        "the refused append wrote nothing"
    );
    // A new session for the same actor works.
    client
        .create_event(text_event(&m, "ann", "s2", "new day"))
        .await
        .unwrap();
}

#[tokio::test]
async fn state_is_derived_on_read_without_the_sweeper() {
    // A sweeper that never runs in this test: reads must still be right.
    let server =
        TestServer::start_with(|config| config.session_sweep_interval_ms = 3_600_000).await;
    let client = server.admin().await;
    let policy = pb::SessionPolicy {
        idle_after_seconds: 1,
        idle_timeout_seconds: 1,
        max_duration_seconds: 3600,
    };
    let memory = create_memory(&client, "derived", Some(policy)).await;
    client
        .create_event(text_event(&memory.memory_id, "bo", "s1", "hi"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let session = client
        .get_session(&memory.memory_id, "bo", "s1")
        .await
        .unwrap();
    assert_eq!(session.state, pb::SessionState::Terminated as i32);
    assert_status(
        client
            .create_event(text_event(&memory.memory_id, "bo", "s1", "x"))
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
}

#[tokio::test]
async fn max_duration_terminates_busy_sessions_and_survives_restart() {
    let mut server = TestServer::start().await;
    let client = server.admin().await;
    let policy = pb::SessionPolicy {
        idle_after_seconds: 60,
        idle_timeout_seconds: 600,
        max_duration_seconds: 1,
    };
    let memory = create_memory(&client, "maxdur", Some(policy)).await;
    let m = memory.memory_id.clone();
    client
        .create_event(text_event(&m, "cy", "s1", "hi"))
        .await
        .unwrap();
    let started = next_transition(&mut server, "s1").await;
    assert_eq!(started.to, pb::SessionState::Active);
    let terminated = next_transition(&mut server, "s1").await;
    assert_eq!(terminated.to, pb::SessionState::Terminated);
    let server = server.restart().await;
    let client = server.admin().await;
    let session = client.get_session(&m, "cy", "s1").await.unwrap();
    assert_eq!(session.state, pb::SessionState::Terminated as i32);
    assert!(session.terminate_time.unwrap().seconds >= session.create_time.unwrap().seconds);
}
