//! `BatchCreate/Update/DeleteMemoryRecords`: up to 100 items per call, each validated and
//! authorised on its own and reported in a per-item result; the accepted items are written
//! in one atomic batch.

use super::{blocking, validate};
use crate::auth::Principal;
use crate::error::{Result, ServiceError};
use crate::ids;
use crate::store::codec::StoredRecord;
use crate::store::keys;
use crate::store::{ItemResult, NewRecord, RecordEdit, Store};
use crate::time::now_us;
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use prost::Message;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tonic::Status;

const MAX_ITEMS: usize = 100;
const MAX_SOURCES: usize = 100;

fn item_count(n: usize) -> Result<()> {
    if n == 0 || n > MAX_ITEMS {
        return Err(ServiceError::invalid(
            "records",
            format!("must hold 1-{MAX_ITEMS} items (got {n})"),
        ));
    }
    Ok(())
}

fn response(results: Vec<ItemResult>, ids: &[String]) -> pb::BatchMemoryRecordsResponse {
    pb::BatchMemoryRecordsResponse {
        results: results
            .into_iter()
            .enumerate()
            .map(|(index, result)| match result {
                Ok(id) => pb::BatchItemResult {
                    index: index as i32,
                    memory_record_id: id,
                    code: 0,
                    message: String::new(),
                },
                Err(err) => {
                    let status = Status::from(err);
                    pb::BatchItemResult {
                        index: index as i32,
                        memory_record_id: ids.get(index).cloned().unwrap_or_default(),
                        code: status.code() as i32,
                        message: status.message().to_string(),
                    }
                }
            })
            .collect(),
    }
}

/// A record id: derived from the token, so a retried item lands on the same record.
/// A random id, or with a client token one derived from it within its scope (the record's
/// actor or namespace, see `keys::record_token_scope`), so a retry names the same record.
fn new_record_id(memory_id: &str, scope: &[u8], token: &str) -> String {
    if token.is_empty() {
        let bytes: [u8; 16] = rand::random();
        return hex::encode(bytes);
    }
    let digest =
        Sha256::digest([memory_id.as_bytes(), b"\0", scope, b"\0", token.as_bytes()].concat());
    hex::encode(&digest[..16])
}

fn text(field: &str, text: &str) -> Result<()> {
    let chars = text.chars().count();
    if chars == 0 || chars > validate::MAX_TEXT_CHARS {
        return Err(ServiceError::invalid(
            field,
            format!("must be 1-{} characters", validate::MAX_TEXT_CHARS),
        ));
    }
    Ok(())
}

/// A record's namespace: 1-512 characters without NUL. A leading '/' is customary
/// ("/users/alice/facts") but, as in AgentCore, not required ("support/alice/facts").
fn namespace(field: &str, namespace: &str) -> Result<()> {
    validate::namespace_prefix(field, namespace)?;
    if namespace.is_empty() {
        return Err(ServiceError::invalid(field, "must not be empty"));
    }
    Ok(())
}

fn create_item(
    store: &Store,
    caller: &Principal,
    memory_id: &str,
    i: usize,
    mut item: pb::MemoryRecordInput,
    now: u64,
) -> Result<NewRecord> {
    let field = |f: &str| format!("records[{i}].{f}");
    namespace(&field("namespace"), &item.namespace)?;
    text(&field("text"), &item.text)?;
    validate::metadata(
        &item
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )?;
    if !item.actor_id.is_empty() {
        ids::actor_id(&field("actor_id"), &item.actor_id)?;
    }
    if !item.session_id.is_empty() {
        ids::session_id(&field("session_id"), &item.session_id)?;
    }
    ids::client_token(&field("client_token"), &item.client_token)?;
    if !item.strategy_id.is_empty()
        && !store
            .memory(memory_id)?
            .strategies
            .iter()
            .any(|s| s.strategy_id == item.strategy_id)
    {
        return Err(ServiceError::invalid(
            field("strategy_id"),
            format!("memory {memory_id} has no strategy {}", item.strategy_id),
        ));
    }
    if item.source_event_ids.len() > MAX_SOURCES
        || item.source_event_ids.iter().any(|id| id.len() > 64)
    {
        return Err(ServiceError::invalid(
            field("source_event_ids"),
            format!("at most {MAX_SOURCES} ids of at most 64 characters"),
        ));
    }
    let valid_from_us = validate::event_timestamp(item.valid_from.as_ref())
        .map_err(|_| ServiceError::invalid(field("valid_from"), "is not a valid time"))?
        .unwrap_or(now);
    if !caller.sees_record(&item.namespace, &item.actor_id) {
        return Err(ServiceError::PermissionDenied(format!(
            "the api key may not write namespace {}{}",
            item.namespace,
            if item.actor_id.is_empty() {
                String::new()
            } else {
                format!(" for actor {}", item.actor_id)
            }
        )));
    }
    let token = std::mem::take(&mut item.client_token);
    let request_hash = Sha256::digest(item.encode_to_vec()).to_vec();
    Ok(NewRecord {
        record: StoredRecord {
            record_id: new_record_id(
                memory_id,
                &keys::record_token_scope(&item.actor_id, &item.namespace),
                &token,
            ),
            namespace: item.namespace,
            strategy_id: item.strategy_id,
            text: item.text,
            metadata: item.metadata.into_iter().collect(),
            create_us: now,
            update_us: now,
            valid_from_us,
            source_event_ids: item.source_event_ids,
            actor_id: item.actor_id,
            session_id: item.session_id,
            extractor: "api".into(),
            version: 1,
            client_token: token,
            ..Default::default()
        },
        request_hash,
    })
}

pub async fn create(
    store: Arc<Store>,
    caller: Principal,
    req: pb::BatchCreateMemoryRecordsRequest,
) -> Result<pb::BatchMemoryRecordsResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Write, &req.memory_id)?;
    item_count(req.records.len())?;
    let now = now_us();
    let memory_id = req.memory_id.clone();
    let results = blocking(move || {
        let items: Vec<Result<NewRecord>> = req
            .records
            .into_iter()
            .enumerate()
            .map(|(i, item)| create_item(&store, &caller, &memory_id, i, item, now))
            .collect();
        store.create_records(&memory_id, items)
    })
    .await?;
    Ok(response(results, &[]))
}

pub async fn update(
    store: Arc<Store>,
    caller: Principal,
    req: pb::BatchUpdateMemoryRecordsRequest,
) -> Result<pb::BatchMemoryRecordsResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Write, &req.memory_id)?;
    item_count(req.records.len())?;
    let ids: Vec<String> = req
        .records
        .iter()
        .map(|r| r.memory_record_id.clone())
        .collect();
    let items: Vec<Result<RecordEdit>> = req
        .records
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |f: &str| format!("records[{i}].{f}");
            super::records::record_id(&item.memory_record_id).map_err(|_| {
                ServiceError::invalid(field("memory_record_id"), "is not a record id")
            })?;
            let mask: Vec<&str> = if item.update_mask.is_empty() {
                vec!["text", "metadata"]
            } else {
                item.update_mask.iter().map(String::as_str).collect()
            };
            if let Some(unknown) = mask
                .iter()
                .find(|f| !matches!(**f, "text" | "metadata" | "valid_from"))
            {
                return Err(ServiceError::invalid(
                    field("update_mask"),
                    format!("unknown field {unknown} (text, metadata, valid_from)"),
                ));
            }
            let text_value = mask.contains(&"text").then_some(item.text);
            if let Some(value) = &text_value {
                text(&field("text"), value)?;
            }
            let metadata = mask
                .contains(&"metadata")
                .then(|| item.metadata.into_iter().collect());
            if let Some(metadata) = &metadata {
                validate::metadata(metadata)?;
            }
            let valid_from_us = if mask.contains(&"valid_from") {
                Some(
                    validate::event_timestamp(item.valid_from.as_ref())
                        .map_err(|_| {
                            ServiceError::invalid(field("valid_from"), "is not a valid time")
                        })?
                        .ok_or_else(|| {
                            ServiceError::invalid(field("valid_from"), "is required by the mask")
                        })?,
                )
            } else {
                None
            };
            Ok(RecordEdit {
                record_id: item.memory_record_id,
                text: text_value,
                metadata,
                valid_from_us,
            })
        })
        .collect();
    let memory_id = req.memory_id;
    let results = blocking(move || {
        store.update_records(&memory_id, items, now_us(), |r| {
            caller.sees_record(&r.namespace, &r.actor_id)
        })
    })
    .await?;
    Ok(response(results, &ids))
}

pub async fn delete(
    store: Arc<Store>,
    caller: Principal,
    req: pb::BatchDeleteMemoryRecordsRequest,
) -> Result<pb::BatchMemoryRecordsResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Write, &req.memory_id)?;
    item_count(req.memory_record_ids.len())?;
    let ids = req.memory_record_ids.clone();
    let items: Vec<Result<String>> = req
        .memory_record_ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            super::records::record_id(&id).map_err(|_| {
                ServiceError::invalid(format!("memory_record_ids[{i}]"), "is not a record id")
            })?;
            Ok(id)
        })
        .collect();
    let memory_id = req.memory_id;
    let results = blocking(move || {
        store.delete_records(&memory_id, items, now_us(), |r| {
            caller.sees_record(&r.namespace, &r.actor_id)
        })
    })
    .await?;
    Ok(response(results, &ids))
}
