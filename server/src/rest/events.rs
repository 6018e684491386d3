//! Short-term memory operations of the AgentCore data plane: CreateEvent, GetEvent,
//! ListEvents, DeleteEvent, ListActors, ListSessions. Each converts and calls memd's
//! MemoryService handler, which validates, authorises and does the work.

use super::errors::AwsError;
use super::shapes::{self, EpochSeconds, StringValue, compact, epoch, metadata_in, metadata_out};
use super::{Ctx, Reply, ids};
use base64::Engine;
use memd_proto::v1 as pb;
use memd_proto::v1::memory_service_server::MemoryService;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The branch memd calls "" (the main branch) under the name AgentCore's SDK gives it.
const MAIN_BRANCH: &str = "main";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateEventInput {
    actor_id: String,
    session_id: Option<String>,
    event_timestamp: Option<EpochSeconds>,
    #[serde(default)]
    payload: Vec<PayloadIn>,
    branch: Option<BranchIn>,
    client_token: Option<String>,
    metadata: Option<BTreeMap<String, StringValue>>,
    extraction_mode: Option<String>,
    extraction_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PayloadIn {
    conversational: Option<ConversationalIn>,
    blob: Option<Value>,
    json: Option<JsonIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConversationalIn {
    content: ContentIn,
    role: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContentIn {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonIn {
    content: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BranchIn {
    name: String,
    root_event_id: Option<String>,
}

fn role_in(field: &str, role: &str) -> Result<pb::Role, AwsError> {
    Ok(match role {
        "USER" => pb::Role::User,
        "ASSISTANT" => pb::Role::Assistant,
        "TOOL" => pb::Role::Tool,
        "OTHER" => pb::Role::Other,
        _ => {
            return Err(AwsError::validation(
                field,
                "must be USER, ASSISTANT, TOOL or OTHER",
            ));
        }
    })
}

fn role_out(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::User) => "USER",
        Ok(pb::Role::Assistant) => "ASSISTANT",
        Ok(pb::Role::Tool) => "TOOL",
        _ => "OTHER",
    }
}

fn payload_in(i: usize, item: PayloadIn) -> Result<pb::PayloadItem, AwsError> {
    use pb::payload_item::Content;
    let field = format!("payload[{i}]");
    let content = match (item.conversational, item.blob, item.json) {
        (Some(turn), None, None) => Content::Conversational(pb::Conversational {
            role: role_in(&format!("{field}.conversational.role"), &turn.role)? as i32,
            text: turn.content.text.ok_or_else(|| {
                AwsError::validation(
                    &format!("{field}.conversational.content.text"),
                    "is required",
                )
            })?,
            name: String::new(),
        }),
        // A blob is any JSON document; memd keeps its JSON text as the blob's bytes.
        (None, Some(blob), None) => Content::Blob(blob.to_string().into_bytes()),
        (None, None, Some(json)) => Content::Json(json.content.to_string()),
        _ => {
            return Err(AwsError::validation(
                &field,
                "must have exactly one of conversational, blob, json",
            ));
        }
    };
    Ok(pb::PayloadItem {
        content: Some(content),
    })
}

fn payload_out(item: &pb::PayloadItem) -> Value {
    use pb::payload_item::Content;
    match &item.content {
        Some(Content::Conversational(turn)) => json!({
            "conversational": { "content": { "text": turn.text }, "role": role_out(turn.role) }
        }),
        // Bytes written through gRPC need not be JSON: those come back as a base64 string.
        Some(Content::Blob(bytes)) => json!({
            "blob": serde_json::from_slice::<Value>(bytes).unwrap_or_else(|_| {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            })
        }),
        Some(Content::Json(text)) => json!({
            "json": { "content": serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.clone())) }
        }),
        None => json!({}),
    }
}

/// An event in the model's shape.
fn event_out(event: &pb::Event) -> Value {
    let branch = event.branch.as_ref().filter(|b| !b.name.is_empty()).map(|b| {
        json!({
            "name": b.name,
            "rootEventId": (!b.root_event_id.is_empty()).then(|| ids::rest_event_id(&b.root_event_id)),
        })
    });
    let mut out = compact(json!({
        "memoryId": event.memory_id,
        "actorId": event.actor_id,
        "sessionId": event.session_id,
        "eventId": ids::rest_event_id(&event.event_id),
        "eventTimestamp": epoch(event.event_timestamp.as_ref()),
        "branch": branch,
        "metadata": metadata_out(&event.metadata),
    }));
    // Added after `compact`: documents in payloads keep their nulls.
    out["payload"] = event.payload.iter().map(payload_out).collect();
    out
}

fn branch_in(branch: Option<BranchIn>) -> Result<Option<pb::Branch>, AwsError> {
    let Some(BranchIn {
        name,
        root_event_id,
    }) = branch
    else {
        return Ok(None);
    };
    let root_event_id = root_event_id
        .map(|id| ids::memd_event_id("branch.rootEventId", &id))
        .transpose()?
        .unwrap_or_default();
    let name = if name == MAIN_BRANCH && root_event_id.is_empty() {
        String::new()
    } else {
        name
    };
    Ok(Some(pb::Branch {
        name,
        root_event_id,
    }))
}

/// memd reports a session (or actor) without events as not found; to AgentCore it is an
/// empty list. A missing memory stays an error.
async fn empty_if_memory_exists<T: Default>(
    ctx: &Ctx<'_>,
    status: tonic::Status,
    memory_id: &str,
) -> Result<T, AwsError> {
    use memd_proto::v1::control_service_server::ControlService;
    if status.code() != tonic::Code::NotFound {
        return Err(status.into());
    }
    let memory = pb::GetMemoryRequest {
        memory_id: memory_id.to_string(),
    };
    ctx.api.control.get_memory(ctx.request(memory)).await?;
    Ok(T::default())
}

/// The gRPC request a REST CreateEvent body stands for.
pub(crate) fn create_event_request(
    memory_id: String,
    body: &[u8],
) -> Result<pb::CreateEventRequest, AwsError> {
    let input: CreateEventInput = shapes::parse(body)?;
    if input.extraction_config.is_some() {
        return Err(AwsError::unsupported(
            "extractionConfig",
            "namespace variables beyond actorId, sessionId and memoryStrategyId",
        ));
    }
    let extraction_mode = match input.extraction_mode.as_deref() {
        None => pb::ExtractionMode::Unspecified,
        Some("SKIP") => pb::ExtractionMode::Skip,
        Some(_) => return Err(AwsError::validation("extractionMode", "must be SKIP")),
    };
    let payload = input
        .payload
        .into_iter()
        .enumerate()
        .map(|(i, item)| payload_in(i, item))
        .collect::<Result<_, _>>()?;
    Ok(pb::CreateEventRequest {
        memory_id,
        actor_id: input.actor_id,
        session_id: input.session_id.unwrap_or_default(),
        event_timestamp: input
            .event_timestamp
            .map(|t| t.to_proto("eventTimestamp"))
            .transpose()?,
        payload,
        branch: branch_in(input.branch)?,
        metadata: metadata_in(input.metadata).into_iter().collect(),
        client_token: input.client_token.unwrap_or_default(),
        extraction_mode: extraction_mode as i32,
    })
}

pub async fn create_event(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let request = create_event_request(memory_id, &ctx.body)?;
    let reply = ctx
        .api
        .memory
        .create_event(ctx.request(request))
        .await?
        .into_inner();
    let event = reply.event.unwrap_or_default();
    Ok((201, json!({ "event": event_out(&event) })))
}

/// Path parameters that name one event.
pub struct EventPath {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub event_id: String,
}

pub async fn get_event(ctx: &Ctx<'_>, path: EventPath) -> Reply {
    let request = pb::GetEventRequest {
        memory_id: path.memory_id,
        actor_id: path.actor_id,
        session_id: path.session_id,
        event_id: ids::memd_event_id("eventId", &path.event_id)?,
    };
    let event = ctx
        .api
        .memory
        .get_event(ctx.request(request))
        .await?
        .into_inner();
    Ok((200, json!({ "event": event_out(&event) })))
}

pub async fn delete_event(ctx: &Ctx<'_>, path: EventPath) -> Reply {
    let rest_id = path.event_id.clone();
    let request = pb::DeleteEventRequest {
        memory_id: path.memory_id,
        actor_id: path.actor_id,
        session_id: path.session_id,
        event_id: ids::memd_event_id("eventId", &path.event_id)?,
    };
    ctx.api.memory.delete_event(ctx.request(request)).await?;
    Ok((200, json!({ "eventId": rest_id })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListEventsInput {
    include_payloads: Option<bool>,
    filter: Option<FilterIn>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilterIn {
    branch: Option<BranchFilterIn>,
    event_metadata: Option<Vec<MetadataFilterIn>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BranchFilterIn {
    name: String,
    include_parent_branches: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetadataFilterIn {
    left: shapes::LeftIn,
    operator: String,
    right: Option<RightIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RightIn {
    metadata_value: StringValue,
}

fn metadata_filter(i: usize, filter: MetadataFilterIn) -> Result<pb::MetadataFilter, AwsError> {
    use pb::MetadataOperator as Op;
    let field = format!("filter.eventMetadata[{i}]");
    let operator = match filter.operator.as_str() {
        "EQUALS_TO" => Op::EqualsTo,
        "EXISTS" => Op::Exists,
        "NOT_EXISTS" => Op::NotExists,
        _ => {
            return Err(AwsError::validation(
                &format!("{field}.operator"),
                "must be EQUALS_TO, EXISTS or NOT_EXISTS",
            ));
        }
    };
    let value = match (operator, filter.right) {
        (Op::EqualsTo, Some(right)) => right.metadata_value.string_value,
        (Op::EqualsTo, None) => {
            return Err(AwsError::validation(
                &format!("{field}.right"),
                "is required with EQUALS_TO",
            ));
        }
        (_, Some(_)) => {
            return Err(AwsError::validation(
                &format!("{field}.right"),
                "is only for EQUALS_TO",
            ));
        }
        (_, None) => String::new(),
    };
    Ok(pb::MetadataFilter {
        key: filter.left.metadata_key,
        operator: operator as i32,
        value,
    })
}

pub async fn list_events(
    ctx: &Ctx<'_>,
    memory_id: String,
    actor_id: String,
    session_id: String,
) -> Reply {
    let input: ListEventsInput = shapes::parse(&ctx.body)?;
    let filter = match input.filter {
        None => None,
        Some(filter) => Some(pb::EventFilter {
            branch: filter.branch.map(|b| pb::BranchFilter {
                name: if b.name == MAIN_BRANCH {
                    String::new()
                } else {
                    b.name
                },
                include_parent_branches: b.include_parent_branches.unwrap_or(false),
            }),
            metadata: filter
                .event_metadata
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, f)| metadata_filter(i, f))
                .collect::<Result<_, _>>()?,
        }),
    };
    let request = pb::ListEventsRequest {
        memory_id: memory_id.clone(),
        actor_id,
        session_id,
        // AgentCore includes payloads unless asked not to.
        include_payloads: input.include_payloads.unwrap_or(true),
        filter,
        page_size: shapes::page_size(input.max_results, 100)?,
        page_token: input.next_token.unwrap_or_default(),
        // AgentCore lists the most recent events first.
        newest_first: true,
    };
    let reply = match ctx.api.memory.list_events(ctx.request(request)).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => empty_if_memory_exists(ctx, status, &memory_id).await?,
    };
    // Not compacted: the events are, and their payload documents keep their nulls.
    let mut out = json!({ "events": reply.events.iter().map(event_out).collect::<Vec<_>>() });
    if !reply.next_page_token.is_empty() {
        out["nextToken"] = reply.next_page_token.into();
    }
    Ok((200, out))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageInput {
    max_results: Option<i64>,
    next_token: Option<String>,
}

pub async fn list_actors(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: PageInput = shapes::parse(&ctx.body)?;
    let request = pb::ListActorsRequest {
        memory_id,
        page_size: shapes::page_size(input.max_results, 100)?,
        page_token: input.next_token.unwrap_or_default(),
    };
    let reply = ctx
        .api
        .memory
        .list_actors(ctx.request(request))
        .await?
        .into_inner();
    let actors: Vec<Value> = reply
        .actors
        .iter()
        .map(|a| json!({ "actorId": a.actor_id }))
        .collect();
    Ok((
        200,
        compact(json!({
            "actorSummaries": actors,
            "nextToken": shapes::next_token(reply.next_page_token),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListSessionsInput {
    max_results: Option<i64>,
    next_token: Option<String>,
    filter: Option<SessionFilterIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionFilterIn {
    event_filter: Option<String>,
}

pub async fn list_sessions(ctx: &Ctx<'_>, memory_id: String, actor_id: String) -> Reply {
    let input: ListSessionsInput = shapes::parse(&ctx.body)?;
    // memd only knows sessions that have had events, so HAS_EVENTS holds for every one.
    if let Some(filter) = &input.filter
        && filter
            .event_filter
            .as_deref()
            .is_some_and(|f| f != "HAS_EVENTS")
    {
        return Err(AwsError::validation(
            "filter.eventFilter",
            "must be HAS_EVENTS",
        ));
    }
    let request = pb::ListSessionsRequest {
        memory_id: memory_id.clone(),
        actor_id,
        page_size: shapes::page_size(input.max_results, 100)?,
        page_token: input.next_token.unwrap_or_default(),
    };
    let reply = match ctx.api.memory.list_sessions(ctx.request(request)).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => empty_if_memory_exists(ctx, status, &memory_id).await?,
    };
    let sessions: Vec<Value> = reply
        .sessions
        .iter()
        .map(|s| {
            json!({
                "sessionId": s.session_id,
                "actorId": s.actor_id,
                "createdAt": epoch(s.create_time.as_ref()),
            })
        })
        .collect();
    Ok((
        200,
        compact(json!({
            "sessionSummaries": sessions,
            "nextToken": shapes::next_token(reply.next_page_token),
        })),
    ))
}
