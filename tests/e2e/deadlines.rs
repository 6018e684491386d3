//! Deadlines: a request whose deadline (the client's `grpc-timeout`, or the server's
//! `request_timeout_seconds`) passes stops its work and is answered DEADLINE_EXCEEDED; a
//! shutdown abandons requests that outlast `shutdown_grace_seconds` instead of waiting for
//! them.

use crate::ops::{free_port, scrape};
use memd_tests::{TestServer, create_memory, text_event};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CreateEvent whose deadline has passed when it reaches the server is refused before it
/// writes: nothing is stored, and the refusal is counted.
#[tokio::test]
async fn a_write_past_its_deadline_stores_nothing() {
    let port = free_port();
    let server =
        TestServer::start_with(|config| config.metrics_listen = format!("127.0.0.1:{port}")).await;
    let client = server.admin().await;
    let memory = create_memory(&client, "deadlines", None).await;
    let counted = r#"memd_deadline_exceeded_total{method="/memd.v1.MemoryService/CreateEvent"}"#;
    // The client's own timer may cancel a 1 ns call before it is sent; repeat until the
    // server has seen (and refused) some.
    let mut seen = false;
    for i in 0..50 {
        let mut request = tonic::Request::new(text_event(
            &memory.memory_id,
            "a",
            "late",
            &format!("late {i}"),
        ));
        request.set_timeout(Duration::from_nanos(1));
        let status = client.memory().create_event(request).await.unwrap_err();
        assert!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{status:?}"
        );
        if scrape(port).await.contains(counted) {
            seen = true;
            break;
        }
    }
    assert!(seen, "the server never saw a request past its deadline");
    // Give a write that (wrongly) went ahead time to land before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = client
        .list_events(memd_client::pb::ListEventsRequest {
            memory_id: memory.memory_id.clone(),
            actor_id: "a".into(),
            session_id: "late".into(),
            ..Default::default()
        })
        .await;
    match listed {
        Ok(page) => assert!(page.events.is_empty(), "{:?}", page.events),
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
    }
    // With time to spare the same call succeeds.
    let mut request = tonic::Request::new(text_event(&memory.memory_id, "a", "late", "on time"));
    request.set_timeout(Duration::from_secs(10));
    client.memory().create_event(request).await.unwrap();
}

/// Opens the REST port and sends a request whose body never finishes.
async fn stalled_rest_request(port: u16) -> tokio::net::TcpStream {
    let mut conn = None;
    for _ in 0..100 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(open) => {
                conn = Some(open);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut conn = conn.expect("the REST port never opened");
    conn.write_all(
        b"POST /memories/m/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"actorId\":",
    )
    .await
    .unwrap();
    conn
}

/// The server's own limit: a REST request that cannot finish (its body never arrives) is
/// answered 504 RequestTimeoutException after `request_timeout_seconds`.
#[tokio::test]
async fn the_servers_request_timeout_ends_a_stalled_request() {
    let http = free_port();
    let server = TestServer::start_with(|config| {
        config.http_listen = format!("127.0.0.1:{http}");
        config.request_timeout_seconds = 1;
    })
    .await;
    let mut conn = stalled_rest_request(http).await;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_string(&mut answer))
        .await
        .expect("the stalled request was never answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("RequestTimeoutException"), "{answer}");
    drop(server);
}

/// A shutdown waits `shutdown_grace_seconds` for a request in flight, then abandons it and
/// stops (the request would otherwise hold the server for its whole 10-minute limit).
#[tokio::test]
async fn shutdown_abandons_requests_that_outlast_the_grace_period() {
    let http = free_port();
    let mut server = TestServer::start_with(|config| {
        config.http_listen = format!("127.0.0.1:{http}");
        config.request_timeout_seconds = 600;
        config.shutdown_grace_seconds = 1;
    })
    .await;
    let _conn = stalled_rest_request(http).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), server.stop())
        .await
        .expect("the server did not stop: the stalled request held it");
    // Bounded by the grace period, not by the request's 600 s limit.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
