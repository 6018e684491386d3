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
    let port = free_port();
    let server =
        TestServer::start_with(|config| config.metrics_listen = format!("127.0.0.1:{port}")).await;
    let client = server.admin().await;
    let memory = create_memory(&client, "metrics", None).await;
    client
        .create_event(text_event(&memory.memory_id, "a", "s", "x"))
        .await
        .unwrap();
    let _ = client.get_memory("missing-memory").await;
    let body = scrape(port).await;
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
    // The event's index-log entry, applied or not yet: the gauges are there either way.
    assert!(
        body.contains(r#"memd_index_pending_changes{index="keyword"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"memd_index_lag_seconds{index="keyword"}"#),
        "{body}"
    );
    assert!(body.contains("memd_index_vectors_rebuilding 0"), "{body}");
}

/// The RocksDB share of `memory_budget_mb` is what its block cache (memtables charged to it)
/// is given: the budget less the two search index writers' heaps.
#[tokio::test]
async fn the_memory_budget_bounds_rocksdbs_block_cache() {
    for (budget_mb, rocksdb_mb) in [(128u64, 96u64), (256, 192)] {
        let port = free_port();
        let server = TestServer::start_with(|config| {
            config.metrics_listen = format!("127.0.0.1:{port}");
            config.memory_budget_mb = budget_mb as usize;
        })
        .await;
        let body = scrape(port).await;
        let capacity = format!(
            r#"memd_rocksdb_property{{cf="events",property="rocksdb.block-cache-capacity"}} {}"#,
            rocksdb_mb << 20
        );
        assert!(body.contains(&capacity), "{capacity} not in {body}");
        drop(server);
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The text of `/metrics` on the metrics port.
pub(crate) async fn scrape(port: u16) -> String {
    // The metrics listener may open a moment after the gRPC port.
    let mut conn = None;
    for _ in 0..100 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(open) => {
                conn = Some(open);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let mut conn = conn.expect("the metrics port never opened");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body
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
