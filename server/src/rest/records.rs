//! Long-term memory operations of the AgentCore data plane: retrieve, list, get and delete
//! records, each converted onto memd's MemoryService (batch writes: `record_batches.rs`).

use super::errors::AwsError;
use super::shapes::{self, EpochSeconds, compact, epoch, metadata_out};
use super::{Ctx, Reply, ids};
use memd_proto::v1 as pb;
use memd_proto::v1::memory_service_server::MemoryService;
use serde::Deserialize;
use serde_json::{Value, json};

/// A record in the model's shape (`score` for retrieval results).
fn record_out(record: &pb::MemoryRecord, score: Option<f64>) -> Value {
    compact(json!({
        "memoryRecordId": ids::rest_record_id(&record.memory_record_id),
        "content": { "text": record.text },
        // Required by the model; records written through the API have no strategy.
        "memoryStrategyId": record.strategy_id,
        "namespaces": [record.namespace],
        "createdAt": epoch(record.create_time.as_ref()),
        "timestamp": epoch(record.valid_from.as_ref()),
        "metadata": metadata_out(&record.metadata),
        "score": score,
    }))
}

/// `namespace` (exact) or `namespacePath` (everything under it), as memd's namespace prefix
/// plus the exact namespace to keep, if any. A trailing '/' does not make a namespace
/// different.
fn namespace_scope(
    namespace: Option<String>,
    namespace_path: Option<String>,
) -> Result<(String, Option<String>), AwsError> {
    match (namespace, namespace_path) {
        (Some(_), Some(_)) => Err(AwsError::validation(
            "namespace",
            "give either namespace or namespacePath, not both",
        )),
        (Some(exact), None) => {
            let exact = exact.trim_end_matches('/').to_string();
            Ok((exact.clone(), Some(exact)))
        }
        (None, Some(path)) => Ok((path, None)),
        (None, None) => Ok((String::new(), None)),
    }
}

fn in_namespace(record: &pb::MemoryRecord, exact: &Option<String>) -> bool {
    exact
        .as_deref()
        .is_none_or(|ns| record.namespace.trim_end_matches('/') == ns)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetrieveInput {
    namespace: Option<String>,
    namespace_path: Option<String>,
    search_criteria: SearchCriteriaIn,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SearchCriteriaIn {
    search_query: String,
    memory_strategy_id: Option<String>,
    top_k: Option<i64>,
    metadata_filters: Option<Vec<RecordFilterIn>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordFilterIn {
    left: shapes::LeftIn,
    operator: String,
    right: Option<RightIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RightIn {
    metadata_value: RecordValueIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordValueIn {
    string_value: Option<String>,
    string_list_value: Option<Vec<String>>,
    number_value: Option<f64>,
    date_time_value: Option<EpochSeconds>,
}

fn record_filter(i: usize, filter: RecordFilterIn) -> Result<pb::RecordMetadataFilter, AwsError> {
    use pb::RecordMetadataOperator as Op;
    let field = format!("searchCriteria.metadataFilters[{i}]");
    let operator = match filter.operator.as_str() {
        "EQUALS_TO" => Op::EqualsTo,
        "EXISTS" => Op::Exists,
        "NOT_EXISTS" => Op::NotExists,
        "CONTAINS" => Op::Contains,
        "BEFORE" => Op::Before,
        "AFTER" => Op::After,
        "GREATER_THAN" => Op::GreaterThan,
        "GREATER_THAN_OR_EQUALS" => Op::GreaterThanOrEquals,
        "LESS_THAN" => Op::LessThan,
        "LESS_THAN_OR_EQUALS" => Op::LessThanOrEquals,
        _ => {
            return Err(AwsError::validation(
                &format!("{field}.operator"),
                "is not an operator",
            ));
        }
    };
    let value = match filter.right.map(|r| r.metadata_value) {
        None => String::new(),
        Some(RecordValueIn {
            string_list_value: Some(_),
            ..
        }) => {
            return Err(AwsError::unsupported(
                &format!("{field}.right.metadataValue.stringListValue"),
                "record metadata values are strings",
            ));
        }
        Some(RecordValueIn {
            string_value: Some(s),
            number_value: None,
            date_time_value: None,
            ..
        }) => s,
        Some(RecordValueIn {
            string_value: None,
            number_value: Some(n),
            date_time_value: None,
            ..
        }) => n.to_string(),
        Some(RecordValueIn {
            string_value: None,
            number_value: None,
            date_time_value: Some(t),
            ..
        }) => {
            let ts = t.to_proto(&format!("{field}.right.metadataValue.dateTimeValue"))?;
            chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default()
        }
        Some(_) => {
            return Err(AwsError::validation(
                &format!("{field}.right.metadataValue"),
                "must have exactly one value",
            ));
        }
    };
    Ok(pb::RecordMetadataFilter {
        key: filter.left.metadata_key,
        operator: operator as i32,
        value,
    })
}

pub async fn retrieve(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: RetrieveInput = shapes::parse(&ctx.body)?;
    let (prefix, exact) = namespace_scope(input.namespace, input.namespace_path)?;
    let criteria = input.search_criteria;
    let top_k = match criteria.top_k {
        None => 10,
        Some(k) if (1..=100).contains(&k) => k as i32,
        Some(_) => return Err(AwsError::validation("searchCriteria.topK", "must be 1-100")),
    };
    let page_size = shapes::page_size(input.max_results, 100)?;
    let metadata_filters = criteria
        .metadata_filters
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, f)| record_filter(i, f))
        .collect::<Result<_, _>>()?;
    // An exact namespace is searched as a prefix, widely, and narrowed here: the top_k that
    // remain are the best of that namespace.
    let (search_k, page_size, page_token) = match exact {
        Some(_) => (100, 100, String::new()),
        None => (top_k, page_size, input.next_token.unwrap_or_default()),
    };
    let request = pb::RetrieveMemoryRecordsRequest {
        memory_id,
        namespace: prefix,
        search_criteria: Some(pb::SearchCriteria {
            search_query: criteria.search_query,
            top_k: search_k,
            strategy_id: criteria.memory_strategy_id.unwrap_or_default(),
            mode: pb::SearchMode::Unspecified as i32,
            min_score: 0.0,
            metadata_filters,
        }),
        page_size,
        page_token,
    };
    let reply = ctx
        .api
        .memory
        .retrieve_memory_records(ctx.request(request))
        .await?
        .into_inner();
    let exact_namespace = exact.is_some();
    let summaries: Vec<Value> = reply
        .memory_records
        .iter()
        .filter_map(|scored| scored.memory_record.as_ref().map(|r| (r, scored.score)))
        .filter(|(record, _)| in_namespace(record, &exact))
        .take(if exact_namespace {
            top_k as usize
        } else {
            usize::MAX
        })
        .map(|(record, score)| record_out(record, Some(score)))
        .collect();
    let next = if exact_namespace {
        String::new()
    } else {
        reply.next_page_token
    };
    Ok((
        200,
        compact(
            json!({ "memoryRecordSummaries": summaries, "nextToken": shapes::next_token(next) }),
        ),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    namespace: Option<String>,
    namespace_path: Option<String>,
    memory_strategy_id: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    metadata_filters: Option<Value>,
}

pub async fn list(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: ListInput = shapes::parse(&ctx.body)?;
    if input.metadata_filters.is_some() {
        return Err(AwsError::unsupported(
            "metadataFilters",
            "ListMemoryRecords lists by namespace and strategy; RetrieveMemoryRecords filters on metadata",
        ));
    }
    let (prefix, exact) = namespace_scope(input.namespace, input.namespace_path)?;
    let request = pb::ListMemoryRecordsRequest {
        memory_id,
        namespace: prefix,
        strategy_id: input.memory_strategy_id.unwrap_or_default(),
        page_size: shapes::page_size(input.max_results, 100)?,
        page_token: input.next_token.unwrap_or_default(),
    };
    let reply = ctx
        .api
        .memory
        .list_memory_records(ctx.request(request))
        .await?
        .into_inner();
    // Narrowing to an exact namespace can shorten a page; the token still walks them all.
    let summaries: Vec<Value> = reply
        .memory_records
        .iter()
        .filter(|r| in_namespace(r, &exact))
        .map(|r| record_out(r, None))
        .collect();
    Ok((
        200,
        compact(json!({
            "memoryRecordSummaries": summaries,
            "nextToken": shapes::next_token(reply.next_page_token),
        })),
    ))
}

/// Fetches a record, and checks the namespace the caller named (AgentCore's condition key),
/// if any: a record in another namespace is not found there.
pub(super) async fn fetch(
    ctx: &Ctx<'_>,
    memory_id: &str,
    rest_id: &str,
    namespace: Option<&str>,
) -> Result<pb::MemoryRecord, AwsError> {
    let request = pb::GetMemoryRecordRequest {
        memory_id: memory_id.to_string(),
        memory_record_id: ids::memd_record_id("memoryRecordId", rest_id)?,
    };
    let record = ctx
        .api
        .memory
        .get_memory_record(ctx.request(request))
        .await?
        .into_inner();
    if let Some(ns) = namespace
        && record.namespace.trim_end_matches('/') != ns.trim_end_matches('/')
    {
        return Err(AwsError::new(
            "ResourceNotFoundException",
            404,
            format!("memory record {rest_id} not found in namespace {ns}"),
        ));
    }
    Ok(record)
}

pub async fn get(ctx: &Ctx<'_>, memory_id: String, record_id: String) -> Reply {
    let namespace = ctx.query_param("namespace");
    let record = fetch(ctx, &memory_id, &record_id, namespace).await?;
    Ok((200, json!({ "memoryRecord": record_out(&record, None) })))
}

pub async fn delete(ctx: &Ctx<'_>, memory_id: String, record_id: String) -> Reply {
    if let Some(namespace) = ctx.query_param("namespace") {
        fetch(ctx, &memory_id, &record_id, Some(namespace)).await?;
    }
    let request = pb::DeleteMemoryRecordRequest {
        memory_id,
        memory_record_id: ids::memd_record_id("memoryRecordId", &record_id)?,
    };
    ctx.api
        .memory
        .delete_memory_record(ctx.request(request))
        .await?;
    Ok((200, json!({ "memoryRecordId": record_id })))
}
