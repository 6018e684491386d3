//! Long-term memory operations of the AgentCore data plane: records (retrieve, list, get,
//! delete, batch writes) and extraction jobs, each converted onto memd's MemoryService.

use super::errors::AwsError;
use super::shapes::{self, EpochSeconds, StringValue, compact, epoch, metadata_in, metadata_out};
use super::{Ctx, Reply, ids};
use memd_proto::v1 as pb;
use memd_proto::v1::memory_service_server::MemoryService;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

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
    left: LeftIn,
    operator: String,
    right: Option<RightIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeftIn {
    metadata_key: String,
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
async fn fetch(
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchCreateInput {
    records: Vec<RecordCreateIn>,
    client_token: Option<String>,
    record_expiry_specification: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordCreateIn {
    request_identifier: String,
    namespaces: Vec<String>,
    content: ContentIn,
    timestamp: Option<EpochSeconds>,
    memory_strategy_id: Option<String>,
    metadata: Option<BTreeMap<String, StringValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContentIn {
    text: Option<String>,
}

const RECORD_EXPIRY: &str = "record expiry is set per strategy (recordExpiryDurationDays)";

/// memd's per-item outcomes as the model's successful and failed lists.
fn batch_out(
    results: Vec<pb::BatchItemResult>,
    identifiers: &[Option<String>],
    rest_ids: &[String],
) -> Value {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for result in results {
        let i = result.index as usize;
        let id = if result.memory_record_id.is_empty() {
            rest_ids.get(i).cloned().unwrap_or_default()
        } else {
            ids::rest_record_id(&result.memory_record_id)
        };
        let identifier = identifiers.get(i).cloned().flatten();
        if result.code == 0 {
            ok.push(compact(json!({
                "memoryRecordId": id, "status": "SUCCEEDED", "requestIdentifier": identifier,
            })));
        } else {
            let err = AwsError::from(tonic::Status::new(
                tonic::Code::from(result.code),
                result.message,
            ));
            failed.push(compact(json!({
                "memoryRecordId": id, "status": "FAILED", "requestIdentifier": identifier,
                "errorCode": err.status, "errorMessage": err.message,
            })));
        }
    }
    json!({ "successfulRecords": ok, "failedRecords": failed })
}

pub async fn batch_create(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: BatchCreateInput = shapes::parse(&ctx.body)?;
    if input.record_expiry_specification.is_some() {
        return Err(AwsError::unsupported(
            "recordExpirySpecification",
            RECORD_EXPIRY,
        ));
    }
    let token = input.client_token.unwrap_or_default();
    let mut identifiers = Vec::new();
    let mut records = Vec::new();
    for (i, item) in input.records.into_iter().enumerate() {
        let field = |f: &str| format!("records[{i}].{f}");
        let [namespace] = <[String; 1]>::try_from(item.namespaces).map_err(|_| {
            AwsError::validation(&field("namespaces"), "must hold exactly one namespace")
        })?;
        let text = item
            .content
            .text
            .ok_or_else(|| AwsError::validation(&field("content.text"), "is required"))?;
        records.push(pb::MemoryRecordInput {
            namespace,
            text,
            metadata: metadata_in(item.metadata).into_iter().collect(),
            strategy_id: item.memory_strategy_id.unwrap_or_default(),
            valid_from: item
                .timestamp
                .map(|t| t.to_proto(&field("timestamp")))
                .transpose()?,
            // The batch's token and the item's identifier make the item's token: a retried
            // batch names the same records, another batch does not.
            client_token: if token.is_empty() {
                String::new()
            } else {
                format!("{token}:{}", item.request_identifier)
            },
            ..Default::default()
        });
        identifiers.push(Some(item.request_identifier));
    }
    let request = pb::BatchCreateMemoryRecordsRequest { memory_id, records };
    let reply = ctx
        .api
        .memory
        .batch_create_memory_records(ctx.request(request))
        .await?
        .into_inner();
    Ok((201, batch_out(reply.results, &identifiers, &[])))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchUpdateInput {
    records: Vec<RecordUpdateIn>,
    record_expiry_specification: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordUpdateIn {
    memory_record_id: String,
    timestamp: Option<EpochSeconds>,
    content: Option<ContentIn>,
    namespaces: Option<Value>,
    source_namespaces: Option<Value>,
    memory_strategy_id: Option<Value>,
    metadata: Option<BTreeMap<String, StringValue>>,
}

pub async fn batch_update(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: BatchUpdateInput = shapes::parse(&ctx.body)?;
    if input.record_expiry_specification.is_some() {
        return Err(AwsError::unsupported(
            "recordExpirySpecification",
            RECORD_EXPIRY,
        ));
    }
    let mut rest_ids = Vec::new();
    let mut records = Vec::new();
    for (i, item) in input.records.into_iter().enumerate() {
        let field = |f: &str| format!("records[{i}].{f}");
        for (name, given) in [
            ("namespaces", item.namespaces.is_some()),
            ("sourceNamespaces", item.source_namespaces.is_some()),
            ("memoryStrategyId", item.memory_strategy_id.is_some()),
        ] {
            if given {
                return Err(AwsError::unsupported(
                    &field(name),
                    "a record keeps its namespace and strategy; create a new record instead",
                ));
            }
        }
        let mut update_mask = Vec::new();
        let text = match item.content {
            Some(ContentIn { text: Some(text) }) => {
                update_mask.push("text".to_string());
                text
            }
            Some(ContentIn { text: None }) => {
                return Err(AwsError::validation(&field("content.text"), "is required"));
            }
            None => String::new(),
        };
        if item.metadata.is_some() {
            update_mask.push("metadata".to_string());
        }
        let valid_from = item
            .timestamp
            .map(|t| t.to_proto(&field("timestamp")))
            .transpose()?;
        if valid_from.is_some() {
            update_mask.push("valid_from".to_string());
        }
        if update_mask.is_empty() {
            return Err(AwsError::validation(&field("content"), "nothing to update"));
        }
        rest_ids.push(item.memory_record_id.clone());
        records.push(pb::MemoryRecordUpdate {
            memory_record_id: ids::memd_record_id(
                &field("memoryRecordId"),
                &item.memory_record_id,
            )?,
            text,
            metadata: metadata_in(item.metadata).into_iter().collect(),
            valid_from,
            update_mask,
        });
    }
    let request = pb::BatchUpdateMemoryRecordsRequest { memory_id, records };
    let reply = ctx
        .api
        .memory
        .batch_update_memory_records(ctx.request(request))
        .await?
        .into_inner();
    Ok((200, batch_out(reply.results, &[], &rest_ids)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchDeleteInput {
    records: Vec<RecordDeleteIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordDeleteIn {
    memory_record_id: String,
    namespace: Option<String>,
}

pub async fn batch_delete(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: BatchDeleteInput = shapes::parse(&ctx.body)?;
    let mut rest_ids = Vec::new();
    let mut memd_ids = Vec::new();
    let mut misplaced = Vec::new();
    for (i, item) in input.records.into_iter().enumerate() {
        let field = format!("records[{i}].memoryRecordId");
        memd_ids.push(ids::memd_record_id(&field, &item.memory_record_id)?);
        // A namespace that is not the record's fails the item, as AgentCore's condition would.
        if let Some(ns) = &item.namespace
            && let Err(err) = fetch(ctx, &memory_id, &item.memory_record_id, Some(ns)).await
            && err.status == 404
        {
            misplaced.push((i, err));
        }
        rest_ids.push(item.memory_record_id);
    }
    let keep: Vec<String> = memd_ids
        .iter()
        .enumerate()
        .filter(|(i, _)| !misplaced.iter().any(|(m, _)| m == i))
        .map(|(_, id)| id.clone())
        .collect();
    let positions: Vec<usize> = (0..memd_ids.len())
        .filter(|i| !misplaced.iter().any(|(m, _)| m == i))
        .collect();
    let request = pb::BatchDeleteMemoryRecordsRequest {
        memory_id,
        memory_record_ids: keep,
    };
    let reply = ctx
        .api
        .memory
        .batch_delete_memory_records(ctx.request(request))
        .await?
        .into_inner();
    let mut results: Vec<pb::BatchItemResult> = reply
        .results
        .into_iter()
        .map(|mut r| {
            r.index = positions.get(r.index as usize).copied().unwrap_or(0) as i32;
            r
        })
        .collect();
    for (i, err) in misplaced {
        results.push(pb::BatchItemResult {
            index: i as i32,
            memory_record_id: memd_ids[i].clone(),
            code: tonic::Code::NotFound as i32,
            message: err.message,
        });
    }
    results.sort_by_key(|r| r.index);
    Ok((200, batch_out(results, &[], &rest_ids)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListJobsInput {
    max_results: Option<i64>,
    filter: Option<JobFilterIn>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobFilterIn {
    strategy_id: Option<String>,
    session_id: Option<String>,
    actor_id: Option<String>,
    status: Option<String>,
}

fn job_status(status: i32) -> &'static str {
    match pb::ExtractionJobStatus::try_from(status) {
        Ok(pb::ExtractionJobStatus::Failed) => "FAILED",
        Ok(pb::ExtractionJobStatus::Running) => "RUNNING",
        _ => "PENDING",
    }
}

pub async fn list_jobs(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: ListJobsInput = shapes::parse(&ctx.body)?;
    let filter = input.filter.map(|f| -> Result<_, AwsError> {
        let status = match f.status.as_deref() {
            None => pb::ExtractionJobStatus::Unspecified,
            Some("FAILED") => pb::ExtractionJobStatus::Failed,
            Some(_) => return Err(AwsError::validation("filter.status", "must be FAILED")),
        };
        Ok(pb::ExtractionJobFilter {
            strategy_id: f.strategy_id.unwrap_or_default(),
            actor_id: f.actor_id.unwrap_or_default(),
            session_id: f.session_id.unwrap_or_default(),
            status: status as i32,
        })
    });
    let request = pb::ListMemoryExtractionJobsRequest {
        memory_id,
        filter: filter.transpose()?,
        page_size: shapes::page_size(input.max_results, 50)?,
        page_token: input.next_token.unwrap_or_default(),
    };
    let reply = ctx
        .api
        .memory
        .list_memory_extraction_jobs(ctx.request(request))
        .await?
        .into_inner();
    let jobs: Vec<Value> = reply
        .jobs
        .iter()
        .map(|job| {
            // memd extracts whole events; each is listed with its first message.
            let messages: Vec<Value> = job
                .event_ids
                .iter()
                .map(|id| json!({ "eventId": ids::rest_event_id(id), "messageIndex": 0 }))
                .collect();
            compact(json!({
                "jobID": job.job_id,
                "messages": { "messagesList": messages },
                "status": job_status(job.status),
                "failureReason": (!job.failure_reason.is_empty()).then_some(&job.failure_reason),
                "strategyId": job.strategy_id,
                "sessionId": job.session_id,
                "actorId": job.actor_id,
            }))
        })
        .collect();
    Ok((
        200,
        compact(json!({ "jobs": jobs, "nextToken": shapes::next_token(reply.next_page_token) })),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartJobInput {
    extraction_job: JobIn,
    /// Re-driving is idempotent by nature: a job that is already running again stays so.
    #[allow(dead_code)]
    client_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobIn {
    job_id: String,
}

pub async fn start_job(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: StartJobInput = shapes::parse(&ctx.body)?;
    let request = pb::StartMemoryExtractionJobRequest {
        memory_id,
        job_id: input.extraction_job.job_id,
    };
    let job = ctx
        .api
        .memory
        .start_memory_extraction_job(ctx.request(request))
        .await?
        .into_inner();
    Ok((200, json!({ "jobId": job.job_id })))
}
