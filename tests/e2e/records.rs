//! Records written through the API: per-item results, idempotent tokens, updates with
//! history, deletions, namespace authorisation.

use crate::assert_status;
use memd_client::pb;
use memd_tests::{ADMIN_KEY, TestServer, create_memory, memctl_binary};
use tonic::Code;

fn item(namespace: &str, text: &str, token: &str) -> pb::MemoryRecordInput {
    pb::MemoryRecordInput {
        namespace: namespace.into(),
        text: text.into(),
        client_token: token.into(),
        ..Default::default()
    }
}

fn code(result: &pb::BatchItemResult) -> Code {
    Code::from_i32(result.code)
}

#[tokio::test]
async fn batch_writes_report_per_item_and_are_idempotent() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = create_memory(&admin, "imports", None).await.memory_id;

    let mut with_strategy = item("/acme/facts", "Unknown strategy", "");
    with_strategy.strategy_id = "nope".into();
    let results = admin
        .batch_create_memory_records(
            &m,
            vec![
                item("/acme/facts", "Ann prefers aisle seats.", "t1"),
                item("/acme/facts", "", ""),
                with_strategy,
                // (A namespace without a leading '/' is fine, as in AgentCore; an empty one is not.)
                item("", "Bad namespace", ""),
            ],
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(code(&results[0]), Code::Ok);
    assert_eq!(
        (code(&results[1]), results[1].index),
        (Code::InvalidArgument, 1)
    );
    assert!(
        results[1].message.contains("records[1].text"),
        "{results:#?}"
    );
    assert!(
        results[2].message.contains("records[2].strategy_id"),
        "{results:#?}"
    );
    assert!(
        results[3].message.contains("records[3].namespace"),
        "{results:#?}"
    );
    let id = results[0].memory_record_id.clone();
    let record = admin.get_memory_record(&m, &id).await.unwrap();
    assert_eq!(
        (
            record.text.as_str(),
            record.extractor.as_str(),
            record.version
        ),
        ("Ann prefers aisle seats.", "api", 1)
    );

    // The same token: the same record, nothing new; with other content: ALREADY_EXISTS.
    let again = admin
        .batch_create_memory_records(
            &m,
            vec![
                item("/acme/facts", "Ann prefers aisle seats.", "t1"),
                item("/acme/facts", "Ann prefers window seats.", "t1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        (code(&again[0]), again[0].memory_record_id.as_str()),
        (Code::Ok, id.as_str())
    );
    assert_eq!(code(&again[1]), Code::AlreadyExists);

    // Updates keep history; unknown ids fail alone.
    let updated = admin
        .batch_update_memory_records(
            &m,
            vec![
                pb::MemoryRecordUpdate {
                    memory_record_id: id.clone(),
                    text: "Ann prefers window seats now.".into(),
                    update_mask: vec!["text".into()],
                    ..Default::default()
                },
                pb::MemoryRecordUpdate {
                    memory_record_id: "0123456789abcdef0123456789abcdef".into(),
                    text: "x".into(),
                    ..Default::default()
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(code(&updated[0]), Code::Ok);
    assert_eq!(code(&updated[1]), Code::NotFound);
    let history = admin.get_memory_record_history(&m, &id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| (r.version, r.text.as_str()))
            .collect::<Vec<_>>(),
        [
            (2, "Ann prefers window seats now."),
            (1, "Ann prefers aisle seats.")
        ]
    );

    // A key limited to /acme/ writes only there.
    let acme_key = admin
        .create_api_key(
            "acme-writer",
            pb::ApiKeyPolicy {
                memory_ids: vec![m.clone()],
                actor_patterns: vec!["acme/*".into()],
                namespace_prefixes: vec!["/acme/".into()],
                actions: vec![pb::api_key_policy::Action::Write as i32],
            },
        )
        .await
        .unwrap();
    let acme = server.client(Some(&acme_key.secret)).await;
    let scoped = acme
        .batch_create_memory_records(
            &m,
            vec![
                item("/acme/notes", "Quarterly review is in May.", ""),
                item("/globex/notes", "Not mine.", ""),
            ],
        )
        .await
        .unwrap();
    assert_eq!(code(&scoped[0]), Code::Ok);
    assert_eq!(code(&scoped[1]), Code::PermissionDenied);

    // Deletion is per item, frees the token, and a second delete is NOT_FOUND.
    let deleted = admin
        .batch_delete_memory_records(&m, vec![id.clone(), id.clone(), "bad id".into()])
        .await
        .unwrap();
    assert_eq!(
        deleted.iter().map(code).collect::<Vec<_>>(),
        [Code::Ok, Code::NotFound, Code::InvalidArgument]
    );
    assert_status(
        admin.get_memory_record(&m, &id).await,
        Code::NotFound,
        "memory record",
    );
    let recreated = admin
        .batch_create_memory_records(
            &m,
            vec![item("/acme/facts", "Ann prefers window seats.", "t1")],
        )
        .await
        .unwrap();
    assert_eq!(code(&recreated[0]), Code::Ok);

    // Whole-call limits.
    let too_many: Vec<pb::MemoryRecordInput> = (0..101)
        .map(|i| item("/acme/x", &format!("fact {i}"), ""))
        .collect();
    assert_status(
        admin.batch_create_memory_records(&m, too_many).await,
        Code::InvalidArgument,
        "records",
    );
    assert_status(
        admin.batch_delete_memory_records(&m, vec![]).await,
        Code::InvalidArgument,
        "records",
    );
}

/// Runs memctl against the test server and returns its stdout (panics on failure).
/// What `memctl ARGS` against the server, as the admin, exited with and printed.
fn memctl_output(server: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(memctl_binary())
        .args(["--endpoint", &server.endpoint(), "--api-key", ADMIN_KEY])
        .args(args)
        .output()
        .expect("memctl runs")
}

/// The output of `memctl ARGS`, which must succeed.
fn memctl(server: &TestServer, args: &[&str]) -> String {
    let output = memctl_output(server, args);
    assert!(
        output.status.success(),
        "memctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memctl_exports_and_imports_records_idempotently() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let source = create_memory(&admin, "source", None).await.memory_id;
    let target = create_memory(&admin, "target", None).await.memory_id;
    let mut dated = item("/team/notes", "The launch moved to 3 March.", "");
    dated.metadata.insert("topic".into(), "launch".into());
    dated.actor_id = "ann".into();
    admin
        .batch_create_memory_records(
            &source,
            vec![dated, item("/team/notes", "Budget approved: 40k EUR.", "")],
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    let file = file.to_str().unwrap();
    memctl(&server, &["records", "export", &source, "--output", file]);
    assert_eq!(std::fs::read_to_string(file).unwrap().lines().count(), 2);
    for _ in 0..2 {
        let out = memctl(&server, &["records", "import", &target, file]);
        assert!(out.contains("imported 2 records, 0 failed"), "{out}");
    }
    let listing = memctl(&server, &["--json", "records", "list", &target]);
    let imported: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let mut texts: Vec<&str> = imported
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        ["Budget approved: 40k EUR.", "The launch moved to 3 March."]
    );
    let launch = imported
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["text"] == "The launch moved to 3 March.")
        .unwrap();
    assert_eq!(
        (
            launch["metadata"]["topic"].as_str(),
            launch["actorId"].as_str()
        ),
        (Some("launch"), Some("ann"))
    );
    let namespaces = memctl(&server, &["--json", "namespaces", "list", &target]);
    let namespaces: serde_json::Value = serde_json::from_str(&namespaces).unwrap();
    assert_eq!(
        namespaces,
        serde_json::json!([{ "namespace": "/team/notes", "recordCount": 2 }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memctl_eval_locomo_reports_recall_on_any_locomo_format_directory() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conversation = serde_json::json!({
        "conversation": {
            "speaker_a": "Ana", "speaker_b": "Ben",
            "session_1_date_time": "10:00 am on 2 March, 2024",
            "session_1": [
                {"speaker": "Ana", "dia_id": "D1:1", "text": "Hi Ben! I adopted a greyhound named Comet yesterday."},
                {"speaker": "Ben", "dia_id": "D1:2", "text": "Wow, congrats! I started learning the cello last month."}
            ],
            "session_2_date_time": "6:30 pm on 9 March, 2024",
            "session_2": [
                {"speaker": "Ana", "dia_id": "D2:1", "text": "Comet and I ran our first 10k race in Porto today."},
                {"speaker": "Ben", "dia_id": "D2:2", "text": "Amazing! My cello teacher is called Mrs. Ilse."}
            ]
        },
        "qa": [
            {"question": "What is the name of Ana's greyhound?", "answer": "Comet", "evidence": ["D1:1"], "category": 4},
            {"question": "Which instrument is Ben learning?", "answer": "cello", "evidence": ["D1:2", "D2:2"], "category": 1},
            {"question": "An adversarial question", "answer": "n/a", "evidence": ["D2:1"], "category": 5}
        ]
    });
    std::fs::write(dir.path().join("tiny.json"), conversation.to_string()).unwrap();
    let path = dir.path().to_str().unwrap();
    // The evaluation runs for a while: block_in_place lets the server's tasks move off this
    // worker meanwhile.
    let eval = |extra: &[&str]| {
        let mut args = vec!["--json", "eval", "locomo", path, "--k", "1,5"];
        args.extend(extra);
        tokio::task::block_in_place(|| memctl(&server, &args))
    };
    let output = eval(&[]);
    let report: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(report["questions"], 2, "category 5 is left out: {report}");
    assert_eq!(report["by_category"]["4"]["recall@5"], 1.0, "{report}");
    assert_eq!(report["by_category"]["1"]["recall@5"], 1.0, "{report}");
    // Raw events: the greyhound question's evidence turn is found by SearchEvents too.
    assert_eq!(
        report["events"]["by_category"]["4"]["recall@5"], 1.0,
        "{report}"
    );
    assert!(report["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // Asked again on the memory the first run left: same questions, same evidence, and the
    // turns sent again are the stored ones, not new events.
    let memory_id = report["memory_id"].as_str().unwrap().to_string();
    let again: serde_json::Value =
        serde_json::from_str(&eval(&["--memory-id", &memory_id])).unwrap();
    assert_eq!(again["memory_id"], report["memory_id"]);
    assert_eq!(again["questions"], 2, "{again}");
    assert_eq!(again["by_category"], report["by_category"], "{again}");
    let client = server.client(Some(ADMIN_KEY)).await;
    for session in ["session_1", "session_2"] {
        let events = client
            .list_events(pb::ListEventsRequest {
                memory_id: memory_id.clone(),
                actor_id: "locomo/tiny".into(),
                session_id: session.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(events.events.len(), 2, "{session}: {events:?}");
    }
    let unknown = tokio::task::block_in_place(|| {
        memctl_output(
            &server,
            &["eval", "locomo", path, "--memory-id", "no-such-memory"],
        )
    });
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no-such-memory"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
