//! A `memd` started by hand starts: without a usable embedding model it serves keyword search
//! and says why semantic search is off, instead of refusing to serve.

use memd_client::{MemdClient, pb};
use memd_tests::{ADMIN_KEY, facts_memory, text_event};
use std::ffi::OsStr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_onnx_runtime_memd_serves_keyword_search_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, _) = memd_tests::embedding_files();
    let (_child, endpoint) = memd_tests::spawn_memd(
        dir.path(),
        &[
            ("MEMD_EMBEDDING_MODEL_DIR", model_dir.as_os_str()),
            (
                "MEMD_ONNXRUNTIME_PATH",
                OsStr::new("/nonexistent/libonnxruntime.so"),
            ),
        ],
    )
    .await;
    let client = MemdClient::connect(endpoint, Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    let status = client.index_status().await.unwrap();
    assert!(
        status.embedding_model.starts_with("off: ")
            && status.embedding_model.contains("ONNX Runtime"),
        "{status:?}"
    );
    let m = facts_memory(&client, "offline").await;
    client
        .create_event(text_event(
            &m,
            "ann",
            "s1",
            "I adopted a greyhound named Pixel.",
        ))
        .await
        .unwrap();
    for _ in 0..100 {
        let hits = client
            .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                memory_id: m.clone(),
                search_criteria: Some(pb::SearchCriteria {
                    search_query: "greyhound".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("keyword search works without a model");
        if !hits.memory_records.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the record was never found by keyword search");
}

/// From the moment memd logs "memd starting", its port answers: health says NOT_SERVING while
/// the store, the model and the indexes open (other calls: UNAVAILABLE), then SERVING, and the
/// same connection carries on to the real services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_answers_health_while_memd_opens() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, runtime) = memd_tests::embedding_files();
    let (_child, endpoint) = memd_tests::spawn_memd_until(
        dir.path(),
        &[
            ("MEMD_EMBEDDING_MODEL_DIR", model_dir.as_os_str()),
            ("MEMD_ONNXRUNTIME_PATH", runtime.as_os_str()),
        ],
        "memd starting",
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .connect()
        .await
        .expect("the port accepts connections from the first log line");
    let mut health = HealthClient::new(channel.clone());
    let mut control = pb::control_service_client::ControlServiceClient::new(channel);
    let mut not_serving = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(std::time::Instant::now() < deadline, "never SERVING");
        // The connection is handed over when memd is open: a call caught in between is
        // refused as UNAVAILABLE, which clients retry.
        let status = match health
            .check(HealthCheckRequest {
                service: "memd.v1.MemoryService".into(),
            })
            .await
        {
            Ok(response) => response.into_inner().status(),
            Err(status) if status.code() == tonic::Code::Unavailable => continue,
            // A call sent as the stand-in's GOAWAY (NO_ERROR) crosses it was never processed:
            // grpc-go and grpcio retry it transparently; tonic reports it, so retry here.
            Err(status) if format!("{status:?}").contains("GoAway") => continue,
            Err(status) => panic!("health failed during start-up: {status:?}"),
        };
        match status {
            ServingStatus::Serving => break,
            ServingStatus::NotServing => {
                not_serving += 1;
                if not_serving == 1 {
                    let err = control
                        .list_memories(pb::ListMemoriesRequest::default())
                        .await
                        .expect_err("no control service before memd is open");
                    // Or the real service, already: it refuses the call without a key.
                    assert!(
                        matches!(
                            err.code(),
                            tonic::Code::Unavailable | tonic::Code::Unauthenticated
                        ),
                        "{err:?}"
                    );
                }
            }
            other => panic!("unexpected health status {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        not_serving > 0,
        "loading the model takes longer than a health check: NOT_SERVING was never seen"
    );
    let client = MemdClient::connect(endpoint, Some(ADMIN_KEY.into()))
        .await
        .unwrap();
    let status = client.index_status().await.unwrap();
    assert!(!status.embedding_model.starts_with("off"), "{status:?}");
}

/// A misspelt `MEMD_*` variable stops memd at start-up, naming it and the setting it
/// misspells, instead of being silently ignored.
#[tokio::test]
async fn a_misspelt_memd_variable_stops_memd_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(memd_tests::memd_binary())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(["--http-listen", "off"])
        .env("MEMD_ADMIN_KEY", ADMIN_KEY)
        .env("MEMD_SYNC_WRITE", "true")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "memd started: {stderr}");
    assert!(
        stderr.contains("MEMD_SYNC_WRITE (did you mean MEMD_SYNC_WRITES?)"),
        "{stderr}"
    );
}
