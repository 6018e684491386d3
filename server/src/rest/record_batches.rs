//! The AgentCore batch record writes (BatchCreate/BatchUpdate/BatchDeleteMemoryRecords) on
//! memd's per-item batch calls, with the model's successful and failed lists.

use super::errors::AwsError;
use super::shapes::{self, EpochSeconds, StringValue, compact, metadata_in};
use super::{Ctx, Reply, ids};
use memd_proto::v1 as pb;
use memd_proto::v1::memory_service_server::MemoryService;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::records::fetch;

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
