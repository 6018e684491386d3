//! Seed inputs for each target: valid examples of what memd receives (the shapes its tests
//! send), which the mutations then damage, plus the regression inputs kept under
//! `fuzz/corpus/<target>/` (every crash found is saved there and replayed by `cargo test`).

use memd_proto::v1 as pb;
use prost::Message;
use std::path::{Path, PathBuf};

fn turn(text: &str) -> pb::PayloadItem {
    pb::PayloadItem {
        content: Some(pb::payload_item::Content::Conversational(
            pb::Conversational {
                role: pb::Role::User as i32,
                text: text.into(),
                name: "Ann".into(),
            },
        )),
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 5 })
}

fn record_filter(
    key: &str,
    op: pb::RecordMetadataOperator,
    value: &str,
) -> pb::RecordMetadataFilter {
    pb::RecordMetadataFilter {
        key: key.into(),
        operator: op as i32,
        value: value.into(),
    }
}

/// The built-in seeds of `target`.
fn built_in(target: &str) -> Vec<Vec<u8>> {
    let texts = |items: &[&str]| items.iter().map(|s| s.as_bytes().to_vec()).collect();
    match target {
        "create_event" => vec![
            pb::CreateEventRequest {
                memory_id: "support-k3j9x0a1b2".into(),
                actor_id: "acme/alice".into(),
                session_id: "trip-1".into(),
                event_timestamp: ts(1_700_000_000),
                payload: vec![
                    turn("I prefer window seats."),
                    pb::PayloadItem {
                        content: Some(pb::payload_item::Content::Json(
                            r#"{"tool":"search","results":[1,2,{"a":null}]}"#.into(),
                        )),
                    },
                    pb::PayloadItem {
                        content: Some(pb::payload_item::Content::Blob(vec![0, 159, 146, 150])),
                    },
                ],
                branch: Some(pb::Branch {
                    name: "alt".into(),
                    root_event_id: "00064c93c472aa5500000000000000ff".into(),
                }),
                metadata: [("channel".to_string(), "web".to_string())].into(),
                client_token: "w1-17".into(),
                extraction_mode: pb::ExtractionMode::Skip as i32,
            }
            .encode_to_vec(),
        ],
        "list_events" => vec![
            pb::ListEventsRequest {
                memory_id: "m".into(),
                actor_id: "acme/alice".into(),
                session_id: "trip-1".into(),
                include_payloads: true,
                filter: Some(pb::EventFilter {
                    branch: Some(pb::BranchFilter {
                        name: "alt".into(),
                        include_parent_branches: true,
                    }),
                    metadata: vec![pb::MetadataFilter {
                        key: "channel".into(),
                        operator: 1,
                        value: "web".into(),
                    }],
                }),
                page_size: 100,
                page_token: "AAECAwQFBgcICQ".into(),
                newest_first: true,
            }
            .encode_to_vec(),
        ],
        "retrieve_records" => {
            use pb::RecordMetadataOperator as Op;
            vec![
                pb::RetrieveMemoryRecordsRequest {
                    memory_id: "m".into(),
                    namespace: "/users/alice/".into(),
                    search_criteria: Some(pb::SearchCriteria {
                        search_query: "where does she like to sit".into(),
                        top_k: 10,
                        strategy_id: "facts".into(),
                        mode: pb::SearchMode::Hybrid as i32,
                        min_score: 0.2,
                        metadata_filters: vec![
                            record_filter("priority", Op::GreaterThan, "2.5"),
                            record_filter("due", Op::Before, "2026-12-06T10:00:00Z"),
                            record_filter("team", Op::Contains, "ops"),
                            record_filter("tag", Op::Exists, ""),
                        ],
                    }),
                    page_size: 5,
                    page_token: String::new(),
                }
                .encode_to_vec(),
            ]
        }
        "create_memory" => vec![
            pb::CreateMemoryRequest {
                name: "support".into(),
                description: "Customer support memory".into(),
                event_expiry_days: 30,
                strategies: vec![pb::MemoryStrategy {
                    strategy_id: "facts".into(),
                    r#type: pb::StrategyType::Semantic as i32,
                    namespace_template: "/users/{actorId}/facts/{sessionId}".into(),
                    triggers: Some(pb::ExtractionTriggers {
                        message_count: 3,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                session_policy: Some(pb::SessionPolicy {
                    idle_timeout_seconds: 900,
                    max_duration_seconds: 28_800,
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        ],
        "create_api_key" => vec![
            pb::CreateApiKeyRequest {
                name: "agent".into(),
                policy: Some(pb::ApiKeyPolicy {
                    memory_ids: vec!["*".into()],
                    actor_patterns: vec!["acme/*".into(), "b?b".into()],
                    namespace_prefixes: vec!["/users/acme/".into()],
                    actions: vec![1, 2],
                }),
            }
            .encode_to_vec(),
        ],
        "page_token" => texts(&["", "AAECAwQFBgcICQ", "bm90LWEtdG9rZW4", "%%%"]),
        "stored_values" => vec![
            vec![1, 10, 3, b'a', b'b', b'c'],
            vec![1, 8, 150, 1, 16, 1],
            vec![0],
            vec![],
        ],
        "store_keys" => vec![
            b"mem\0acme/alice\0".to_vec(),
            b"mem\0acme/alice\0trip-1\0\x00\x06\x4c\x93\xc4\x72\xaa\x55\0\0\0\0\0\0\0\xff".to_vec(),
            b"00064c93c472aa5500000000000000ff".to_vec(),
        ],
        "metadata_value" => texts(&[
            "2.5",
            "-1e308",
            "NaN",
            "2026-12-06T10:00:00Z",
            "2026-12-06T10:00:00.123+05:30",
        ]),
        "config_toml" => texts(&[
            "listen = \"127.0.0.1:6000\"\nsync_writes = false\nmemory_budget_mb = 128\n",
            "metrics_listen = \"off\"\nembedding_model = \"off\"\n[llm.default]\nurl = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n",
        ]),
        "rest_authorization" => texts(&[
            "AWS4-HMAC-SHA256 Credential=memd_k1/20261206/us-east-1/bedrock-agentcore/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ]),
        "rest_route" => texts(&[
            "/memories/mem-1/actor/acme%2Falice/sessions/s1/events",
            "/memories/mem-1/memoryRecords/mr-1",
            "/memories/mem-1/retrieve",
            "/memories/create",
        ]),
        "rest_create_event" => texts(&[
            r#"{"actorId":"acme/alice","sessionId":"s1","eventTimestamp":1700000000.5,"payload":[{"conversational":{"role":"USER","content":{"text":"I prefer window seats."}}},{"blob":{"k":[1,2]}}],"branch":{"name":"alt","rootEventId":"0000000000000001#aa"},"clientToken":"t1","metadata":{"channel":{"stringValue":"web"}}}"#,
        ]),
        "extractor" => texts(&[
            "I moved to Lisbon last week and I love it. My sister Maria visited yesterday.",
            "Remember that I'm allergic to peanuts! Please always book aisle seats for me.",
            "We met two days ago; next Friday I start at Acme as a data engineer.",
        ]),
        "grpc_timeout" => texts(&[
            "5S",
            "250m",
            "1n",
            "99999999H",
            "100000000S",
            "1x",
            "5\u{e9}",
        ]),
        _ => Vec::new(),
    }
}

/// Where a target's regression inputs live.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// The built-in seeds and the saved regression inputs of `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut seeds = built_in(target);
    if let Ok(entries) = std::fs::read_dir(corpus_dir(target)) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        files.sort();
        seeds.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    seeds
}
