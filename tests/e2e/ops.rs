//! Operational surface: health checking, reflection, metrics, graceful restart.

use memd_tests::{TestServer, create_memory, text_event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn health_reports_serving_for_each_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.admin().await.channel());
    for service in ["", "memd.v1.MemoryService", "memd.v1.ControlService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_memd_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let server = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(server.admin().await.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "memd.v1.MemoryService",
        "memd.v1.ControlService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_by_method_and_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server =
        TestServer::start_with(|config| config.metrics_listen = format!("127.0.0.1:{port}")).await;
    let client = server.admin().await;
    let memory = create_memory(&client, "metrics", None).await;
    client
        .create_event(text_event(&memory.memory_id, "a", "s", "x"))
        .await
        .unwrap();
    let _ = client.get_memory("missing-memory").await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    assert!(
        body.contains(
            r#"memd_grpc_requests_total{code="Ok",method="/memd.v1.MemoryService/CreateEvent"} 1"#
        ),
        "{body}"
    );
    assert!(body.contains(r#"memd_grpc_requests_total{code="NotFound",method="/memd.v1.ControlService/GetMemory"} 1"#), "{body}");
    assert!(
        body.contains("memd_grpc_request_duration_seconds_bucket"),
        "{body}"
    );
    assert!(
        body.contains(r#"memd_rocksdb_property{cf="events",property="rocksdb.estimate-num-keys"}"#),
        "{body}"
    );
    // The event's index-log entry, applied or not yet: the gauge is there either way.
    assert!(
        body.contains(r#"memd_index_pending_changes{index="keyword"}"#),
        "{body}"
    );
    assert!(body.contains("memd_index_vectors_rebuilding 0"), "{body}");
}

#[tokio::test]
async fn graceful_restart_keeps_everything() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let memory = create_memory(&client, "restart", None).await;
    let event = client
        .create_event(text_event(&memory.memory_id, "a", "s", "persisted"))
        .await
        .unwrap();
    let server = server.restart().await;
    let client = server.admin().await;
    let session = client
        .get_session(&memory.memory_id, "a", "s")
        .await
        .unwrap();
    assert_eq!(session.event_count, 1);
    let got = client
        .get_event(memd_client::pb::GetEventRequest {
            memory_id: memory.memory_id.clone(),
            actor_id: "a".into(),
            session_id: "s".into(),
            event_id: event.event_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got, event);
}
