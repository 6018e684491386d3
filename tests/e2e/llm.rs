//! The LLM extractor against a local chat-completions server that fails, stalls and talks
//! nonsense on cue: jobs retry, end FAILED with the reason, and re-drive to success. With
//! MEMD_TEST_LLM_URL set, one more test talks to that real endpoint.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use memd_client::pb;
use memd_tests::{TestServer, extraction_jobs as jobs};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the fake endpoint does with the next request.
#[derive(Clone)]
enum Reply {
    Status(u16),
    Stall(Duration),
    Content(String),
}

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Reply>>,
    requests: Mutex<Vec<(Option<String>, Value)>>,
}

async fn chat(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    fake.requests.lock().unwrap().push((auth, request));
    let next = fake.script.lock().unwrap().pop_front();
    let reply = next.or_else(|| fake.fallback.lock().unwrap().clone());
    match reply {
        Some(Reply::Status(code)) => (
            StatusCode::from_u16(code).unwrap(),
            json!({"error": {"message": "scripted failure"}}).to_string(),
        ),
        Some(Reply::Stall(wait)) => {
            tokio::time::sleep(wait).await;
            (StatusCode::OK, completion("{\"memories\": []}"))
        }
        Some(Reply::Content(content)) => (StatusCode::OK, completion(&content)),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no reply scripted".into()),
    }
}

fn completion(content: &str) -> String {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 30, "total_tokens": 120},
    })
    .to_string()
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, format!("http://{addr}/v1"))
}

async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn said(memory_id: &str, session: &str, text: &str) -> pb::CreateEventRequest {
    memd_tests::named_event(memory_id, "ann", session, "Ann", text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_failures_retry_fail_and_redrive_to_success() {
    let (fake, base_url) = start_fake().await;
    let server = TestServer::start_with(|config| {
        config.llm_base_url = Some(base_url.clone());
        config.llm_model = Some("fake-model".into());
        config.llm_api_key = Some("sk-test".into());
        config.llm_timeout_seconds = 1;
        config.extraction_max_attempts = 3;
        config.extraction_initial_backoff_ms = 50;
        config.extraction_max_backoff_ms = 200;
    })
    .await;
    let client = server.admin().await;
    let memory = client
        .create_memory(pb::CreateMemoryRequest {
            name: "llm".into(),
            strategies: vec![pb::MemoryStrategy {
                strategy_id: "pets".into(),
                r#type: pb::StrategyType::Custom as i32,
                base_type: pb::StrategyType::Semantic as i32,
                prompt: "Focus on pets.".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let m = memory.memory_id.clone();
    assert_eq!(memory.strategies[0].extractor, "llm");

    // A server error, a reply slower than the timeout, then prose instead of JSON.
    fake.script.lock().unwrap().extend([
        Reply::Status(500),
        Reply::Stall(Duration::from_secs(3)),
        Reply::Content("Sure! Ann has a dog.".into()),
    ]);
    let event = client
        .create_event(said(&m, "s1", "I adopted a dog named Luna yesterday."))
        .await
        .unwrap();
    let failed = wait_for("the job to fail", || async {
        jobs(&client, &m)
            .await
            .into_iter()
            .find(|j| j.status == pb::ExtractionJobStatus::Failed as i32)
    })
    .await;
    assert_eq!(failed.attempts, 3, "{failed:#?}");
    assert!(
        failed.failure_reason.contains("malformed model output"),
        "{failed:#?}"
    );
    let no_records = client
        .list_memory_records(pb::ListMemoryRecordsRequest {
            memory_id: m.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(no_records.memory_records.is_empty(), "garbage was written");

    // The endpoint recovers; re-driving the job writes the model's memory.
    *fake.fallback.lock().unwrap() = Some(Reply::Content(
        json!({"memories": [{"text": "Ann adopted a dog named Luna.", "source_turns": [1], "date": "2023-05-07"}]})
            .to_string(),
    ));
    client
        .start_extraction_job(&m, &failed.job_id)
        .await
        .unwrap();
    let record = wait_for("the record", || async {
        client
            .list_memory_records(pb::ListMemoryRecordsRequest {
                memory_id: m.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .memory_records
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(record.text, "Ann adopted a dog named Luna.");
    assert_eq!(record.source_event_ids, [event.event_id]);
    assert_eq!(
        (record.extractor.as_str(), record.extractor_version.as_str()),
        ("llm", "fake-model")
    );
    assert_eq!(record.valid_from.unwrap().seconds, 1_683_417_600);
    assert!(jobs(&client, &m).await.is_empty());

    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    let (auth, body) = &requests[3];
    assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
    assert_eq!(body["model"], "fake-model");
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.ends_with(memd_extractor::llm::schema::INSTRUCTIONS),
        "{system}"
    );
    assert!(system.contains("Focus on pets."), "{system}");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("[1]") && user.contains("Ann: I adopted a dog named Luna yesterday."),
        "{user}"
    );

    // A rejected key is not worth retrying: FAILED after one attempt.
    fake.script.lock().unwrap().push_back(Reply::Status(401));
    client
        .create_event(said(&m, "s2", "I also have a cat called Miso."))
        .await
        .unwrap();
    let rejected = wait_for("the rejected job", || async {
        jobs(&client, &m)
            .await
            .into_iter()
            .find(|j| j.status == pb::ExtractionJobStatus::Failed as i32)
    })
    .await;
    assert_eq!(rejected.attempts, 1);
    assert!(rejected.failure_reason.contains("401"), "{rejected:#?}");
}

/// Runs only with MEMD_TEST_LLM_URL (e.g. http://127.0.0.1:11434/v1), MEMD_TEST_LLM_MODEL
/// and, when the endpoint needs one, MEMD_TEST_LLM_KEY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_llm_endpoint_extracts_facts() {
    let Ok(url) = std::env::var("MEMD_TEST_LLM_URL") else {
        eprintln!("skipped: set MEMD_TEST_LLM_URL to test a real endpoint");
        return;
    };
    let model = std::env::var("MEMD_TEST_LLM_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
    let key = std::env::var("MEMD_TEST_LLM_KEY").ok();
    let server = TestServer::start_with(|config| {
        config.llm_base_url = Some(url);
        config.llm_model = Some(model);
        config.llm_api_key = key;
        config.llm_timeout_seconds = 120;
    })
    .await;
    let client = server.admin().await;
    let memory = client
        .create_memory(pb::CreateMemoryRequest {
            name: "real".into(),
            strategies: vec![pb::MemoryStrategy {
                strategy_id: "facts".into(),
                r#type: pb::StrategyType::Semantic as i32,
                extractor: "llm".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .create_event(said(
            &memory.memory_id,
            "s1",
            "I adopted a dog named Luna yesterday and I'm moving to Denver in June.",
        ))
        .await
        .unwrap();
    let record = wait_for("a record from the real model", || async {
        let page = client
            .list_memory_records(pb::ListMemoryRecordsRequest {
                memory_id: memory.memory_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        page.memory_records.into_iter().next()
    })
    .await;
    assert!(
        record.text.contains("Luna") || record.text.contains("Denver"),
        "{record:#?}"
    );
}
