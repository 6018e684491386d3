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
