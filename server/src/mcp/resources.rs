//! MCP resources: a memory's namespaces and the long-term records in them, as JSON.
//!
//! - `memd://{memory}/namespaces`: every namespace in scope with its record count;
//! - `memd://{memory}/records?namespace={prefix}`: the records under a namespace prefix;
//! - `memd://{memory}/records/{record id}`: one record.
//!
//! Only the scope's memory, and namespaces under the scope's prefix, can be read; the key's
//! policy then decides record by record as for ListMemoryRecords.

use super::tools::code_name;
use super::{Backend, Scope, render};
use memd_proto::v1 as pb;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rmcp::ErrorData;
use rmcp::model::{
    ErrorCode, ListResourcesResult, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tonic::{Code, Status};

/// Records scanned to list namespaces; a larger memory's listing says it was cut short.
const MAX_SCAN: usize = 10_000;
/// Records one `records?namespace=` read returns.
const MAX_RECORDS: usize = 200;
const JSON: &str = "application/json";

/// A memd failure as a JSON-RPC error (resources have no error result of their own).
fn error(status: Status) -> ErrorData {
    let data = Some(json!({ "grpc_code": code_name(status.code()) }));
    let message = format!("{}: {}", code_name(status.code()), status.message());
    match status.code() {
        Code::NotFound => ErrorData::resource_not_found(message, data),
        Code::InvalidArgument => ErrorData::invalid_params(message, data),
        Code::PermissionDenied | Code::Unauthenticated => {
            ErrorData::new(ErrorCode::INVALID_REQUEST, message, data)
        }
        _ => ErrorData::internal_error(message, data),
    }
}

fn namespaces_uri(memory_id: &str) -> String {
    format!("memd://{memory_id}/namespaces")
}

fn records_uri(memory_id: &str, namespace: &str) -> String {
    format!(
        "memd://{memory_id}/records?namespace={}",
        utf8_percent_encode(namespace, NON_ALPHANUMERIC)
    )
}

/// The namespaces in scope with their record counts, and whether the scan was cut short.
async fn namespaces(
    scope: &Scope,
    backend: &dyn Backend,
) -> Result<(BTreeMap<String, u64>, bool), ErrorData> {
    super::check_actor(scope, backend).await.map_err(error)?;
    let mut counts = BTreeMap::new();
    let mut scanned = 0;
    let mut page_token = String::new();
    loop {
        let page = backend
            .list_memory_records(pb::ListMemoryRecordsRequest {
                memory_id: scope.memory_id.clone(),
                namespace: scope.namespace.clone(),
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(error)?;
        for record in page.memory_records.iter().filter(|r| scope.holds(r)) {
            *counts.entry(record.namespace.clone()).or_insert(0) += 1;
        }
        scanned += page.memory_records.len();
        if page.next_page_token.is_empty() {
            return Ok((counts, false));
        }
        if scanned >= MAX_SCAN {
            return Ok((counts, true));
        }
        page_token = page.next_page_token;
    }
}

/// The namespaces resource, and one records resource per namespace.
pub async fn list(scope: &Scope, backend: &dyn Backend) -> Result<ListResourcesResult, ErrorData> {
    let memory = &scope.memory_id;
    let (counts, _) = namespaces(scope, backend).await?;
    let mut resources = vec![
        Resource::new(namespaces_uri(memory), "namespaces")
            .with_title(format!("Namespaces of memory {memory}"))
            .with_description("Every namespace holding long-term records, with its record count")
            .with_mime_type(JSON),
    ];
    resources.extend(counts.iter().map(|(namespace, count)| {
        Resource::new(records_uri(memory, namespace), namespace.clone())
            .with_title(format!("Records in {namespace}"))
            .with_description(format!("{count} long-term records"))
            .with_mime_type(JSON)
    }));
    Ok(ListResourcesResult::with_all_items(resources))
}

/// The parameterised forms of the records resources.
pub fn templates(scope: &Scope) -> Vec<ResourceTemplate> {
    let memory = &scope.memory_id;
    vec![
        ResourceTemplate::new(format!("memd://{memory}/records{{?namespace}}"), "records")
            .with_title("Records under a namespace prefix")
            .with_description(format!(
                "Long-term records whose namespace starts with `namespace` (at most {MAX_RECORDS})"
            ))
            .with_mime_type(JSON),
        ResourceTemplate::new(format!("memd://{memory}/records/{{record_id}}"), "record")
            .with_title("One long-term record")
            .with_mime_type(JSON),
    ]
}

/// Reads one resource.
pub async fn read(
    scope: &Scope,
    backend: &dyn Backend,
    uri: &str,
) -> Result<ReadResourceResult, ErrorData> {
    let not_found = || ErrorData::resource_not_found(format!("no resource {uri}"), None);
    let rest = uri
        .strip_prefix("memd://")
        .and_then(|rest| rest.strip_prefix(scope.memory_id.as_str()))
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| {
            ErrorData::resource_not_found(
                format!(
                    "no resource {uri}: this host's resources are under memd://{}/",
                    scope.memory_id
                ),
                None,
            )
        })?;
    let document = if rest == "namespaces" {
        let (counts, truncated) = namespaces(scope, backend).await?;
        let list: Vec<Value> = counts
            .iter()
            .map(|(namespace, records)| json!({ "namespace": namespace, "records": records }))
            .collect();
        json!({ "memory_id": scope.memory_id, "namespaces": list, "truncated": truncated })
    } else if let Some(query) = rest.strip_prefix("records?") {
        let prefix = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("namespace="))
            .map(|value| percent_decode_str(value).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        records_under(scope, backend, &prefix).await?
    } else if let Some(id) = rest.strip_prefix("records/").filter(|id| !id.is_empty()) {
        super::check_actor(scope, backend).await.map_err(error)?;
        let id = percent_decode_str(id).decode_utf8_lossy().into_owned();
        let record = backend
            .get_memory_record(pb::GetMemoryRecordRequest {
                memory_id: scope.memory_id.clone(),
                memory_record_id: id,
            })
            .await
            .map_err(error)?;
        if !scope.holds(&record) {
            return Err(not_found());
        }
        render::record(&record, None)
    } else {
        return Err(not_found());
    };
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(document.to_string(), uri).with_mime_type(JSON),
    ]))
}

async fn records_under(
    scope: &Scope,
    backend: &dyn Backend,
    prefix: &str,
) -> Result<Value, ErrorData> {
    // An empty prefix means the whole scope; a prefix outside it reads nothing.
    let prefix = if prefix.is_empty() {
        scope.namespace.as_str()
    } else {
        prefix
    };
    if !prefix.starts_with(&scope.namespace) {
        return Err(ErrorData::invalid_params(
            format!(
                "namespace {prefix:?} is outside this host's scope ({:?})",
                scope.namespace
            ),
            None,
        ));
    }
    super::check_actor(scope, backend).await.map_err(error)?;
    let mut records = Vec::new();
    let mut page_token = String::new();
    let truncated = loop {
        let page = backend
            .list_memory_records(pb::ListMemoryRecordsRequest {
                memory_id: scope.memory_id.clone(),
                namespace: prefix.to_string(),
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(error)?;
        records.extend(
            page.memory_records
                .iter()
                .filter(|r| scope.holds(r))
                .map(|r| render::record(r, None)),
        );
        if page.next_page_token.is_empty() {
            break false;
        }
        if records.len() >= MAX_RECORDS {
            break true;
        }
        page_token = page.next_page_token;
    };
    records.truncate(MAX_RECORDS);
    Ok(json!({
        "memory_id": scope.memory_id,
        "namespace": prefix,
        "records": records,
        "truncated": truncated,
    }))
}
