//! `memctl bench ingest` on a conversation written here: it reaches every milestone, counts
//! what its in-process server embedded, measures the floor beside it, and ingests again after
//! deleting the first memory (the leak check).

use memd_tests::{embedding_files, memctl_binary};

#[test]
fn bench_ingest_reports_milestones_counts_and_the_floor() {
    embedding_files(); // fails with what to run when the model is missing
    let dir = tempfile::tempdir().unwrap();
    let turn = |speaker: &str, id: &str, text: &str| serde_json::json!({ "speaker": speaker, "dia_id": id, "text": text });
    let conversation = serde_json::json!({
        "conversation": {
            "speaker_a": "Ana", "speaker_b": "Ben",
            "session_1_date_time": "10:00 am on 2 March, 2024",
            "session_1": [
                turn("Ana", "D1:1", "I adopted a greyhound named Comet yesterday."),
                turn("Ben", "D1:2", "I started learning the cello last month."),
            ],
            "session_2_date_time": "6:30 pm on 9 March, 2024",
            "session_2": [
                turn("Ana", "D2:1", "Comet and I ran our first 10k race in Porto today."),
                turn("Ben", "D2:2", "My cello teacher is called Mrs. Ilse."),
            ]
        },
        "qa": []
    });
    std::fs::write(dir.path().join("tiny.json"), conversation.to_string()).unwrap();
    let output = std::process::Command::new(memctl_binary())
        .args(["--json", "bench", "ingest"])
        .arg(dir.path())
        .args([
            "--floor-sample",
            "8",
            "--floor-batches",
            "8",
            "--cycles",
            "2",
        ])
        .output()
        .expect("memctl runs");
    assert!(
        output.status.success(),
        "memctl bench ingest failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["turns"], 4, "{report}");
    assert_eq!(report["embedded"]["events"], 4, "{report}");
    let records = report["embedded"]["records"].as_i64().unwrap();
    assert!(records >= 1, "the turns yield records: {report}");
    // Every text counted once: the turns, then the records as they are now.
    let texts = report["texts"].as_i64().unwrap();
    assert!(texts > 4 && texts <= 4 + records, "{report}");
    let seconds = &report["seconds"];
    let at = |name: &str| {
        seconds[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: {report}"))
    };
    assert!(at("stored") <= at("turns_embedded"), "{report}");
    assert!(
        at("turns_embedded") <= at("everything_searchable"),
        "{report}"
    );
    assert!(at("extracted") <= at("everything_searchable"), "{report}");
    assert!(report["tokens"]["mean"].as_f64().unwrap() > 5.0, "{report}");
    let embedding: f64 = report["cpu_by_thread"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|group| group["threads"].as_str().unwrap().starts_with("memd-embed"))
        .map(|group| group["seconds"].as_f64().unwrap())
        .sum();
    assert!(embedding > 0.0, "no embedding thread CPU: {report}");
    let floor = report["floor"].as_array().unwrap();
    assert!(!floor.is_empty(), "{report}");
    assert!(
        floor
            .iter()
            .all(|run| run["texts"].as_i64() == Some(texts.min(8)))
    );
    assert!(report["ratio_searchable_wall_to_floor"].as_f64().unwrap() > 0.0);
    // The leak check: a second ingest after the first memory was deleted, which stays.
    let cycles = report["cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), 2, "{report}");
    // Each reading splits RSS: the allocator's live and held bytes, RocksDB's block cache.
    for reading in [
        &cycles[0]["loaded"],
        &cycles[0]["after_delete"],
        &cycles[1]["loaded"],
    ] {
        for field in ["rss_mib", "heap_live_mib", "rocksdb_block_cache_mib"] {
            assert!(reading[field].as_f64().unwrap() > 0.0, "{field}: {report}");
        }
        assert!(
            reading["heap_free_held_mib"].as_f64().unwrap() >= 0.0,
            "{report}"
        );
    }
    assert!(cycles[1]["after_delete"].is_null(), "{report}");
    assert!(
        cycles[1]["searchable_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}
