//! Rendering: aligned tables for people, JSON (proto3 JSON field names) for scripts.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use memd_client::pb;
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 for a protobuf timestamp ("" when unset).
pub fn time(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(|ts| {
            let since = Duration::new(
                u64::try_from(ts.seconds).ok()?,
                u32::try_from(ts.nanos).ok()?,
            );
            Some(humantime::format_rfc3339_micros(UNIX_EPOCH + since).to_string())
        })
        .unwrap_or_default()
}

/// Prints rows as a table under `headers`.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.to_vec());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialise")
    );
}

/// Prints a JSON value on one line (for streams: JSON lines).
pub fn print_json_line(value: &Value) {
    println!("{value}");
}

fn enum_name(name: Option<&str>) -> Value {
    name.map_or(Value::Null, |n| Value::String(n.to_string()))
}

pub fn memory_json(m: &pb::Memory) -> Value {
    let policy = m.session_policy.unwrap_or_default();
    json!({
        "memoryId": m.memory_id,
        "name": m.name,
        "description": m.description,
        "eventExpiryDays": m.event_expiry_days,
        "strategies": m.strategies.iter().map(crate::strategies::to_json).collect::<Vec<_>>(),
        "sessionPolicy": {
            "idleTimeoutSeconds": policy.idle_timeout_seconds,
            "maxDurationSeconds": policy.max_duration_seconds,
            "idleAfterSeconds": policy.idle_after_seconds,
        },
        "createTime": time(&m.create_time),
        "updateTime": time(&m.update_time),
    })
}

pub fn memory_row(m: &pb::Memory) -> Vec<String> {
    vec![
        m.memory_id.clone(),
        m.name.clone(),
        m.event_expiry_days.to_string(),
        m.strategies.len().to_string(),
        time(&m.create_time),
        m.description.clone(),
    ]
}
pub const MEMORY_HEADERS: [&str; 6] = [
    "MEMORY ID",
    "NAME",
    "EXPIRY DAYS",
    "STRATEGIES",
    "CREATED",
    "DESCRIPTION",
];

fn payload_json(item: &pb::PayloadItem) -> Value {
    use pb::payload_item::Content;
    match &item.content {
        Some(Content::Conversational(turn)) => json!({"conversational": {
            "role": enum_name(pb::Role::try_from(turn.role).ok().map(|r| r.as_str_name())),
            "text": turn.text,
        }}),
        Some(Content::Blob(bytes)) => json!({ "blob": { "bytes": bytes.len() } }),
        Some(Content::Json(text)) => {
            json!({ "json": serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.clone())) })
        }
        None => Value::Null,
    }
}

pub fn event_json(e: &pb::Event) -> Value {
    json!({
        "memoryId": e.memory_id,
        "actorId": e.actor_id,
        "sessionId": e.session_id,
        "eventId": e.event_id,
        "eventTimestamp": time(&e.event_timestamp),
        "createTime": time(&e.create_time),
        "branch": e.branch.as_ref().map(|b| json!({"name": b.name, "rootEventId": b.root_event_id})),
        "metadata": e.metadata,
        "payload": e.payload.iter().map(payload_json).collect::<Vec<_>>(),
    })
}

/// One line summarising an event's payload.
fn payload_summary(e: &pb::Event) -> String {
    use pb::payload_item::Content;
    e.payload
        .iter()
        .map(|item| match &item.content {
            Some(Content::Conversational(turn)) => {
                let role = pb::Role::try_from(turn.role)
                    .map_or("?", |r| r.as_str_name())
                    .trim_start_matches("ROLE_")
                    .to_lowercase();
                format!("{role}: {}", turn.text)
            }
            Some(Content::Blob(bytes)) => format!("<blob {} bytes>", bytes.len()),
            Some(Content::Json(text)) => format!("json: {text}"),
            None => String::new(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn event_row(e: &pb::Event) -> Vec<String> {
    let branch = e.branch.as_ref().map_or(String::new(), |b| b.name.clone());
    let mut text = payload_summary(e);
    if text.chars().count() > 120 {
        text = text.chars().take(117).collect::<String>() + "...";
    }
    vec![e.event_id.clone(), time(&e.event_timestamp), branch, text]
}
pub const EVENT_HEADERS: [&str; 4] = ["EVENT ID", "TIMESTAMP", "BRANCH", "PAYLOAD"];

fn state_name(state: i32) -> String {
    pb::SessionState::try_from(state)
        .map_or("?", |s| s.as_str_name())
        .trim_start_matches("SESSION_STATE_")
        .to_string()
}

pub fn session_json(s: &pb::Session) -> Value {
    json!({
        "memoryId": s.memory_id,
        "actorId": s.actor_id,
        "sessionId": s.session_id,
        "state": enum_name(pb::SessionState::try_from(s.state).ok().map(|st| st.as_str_name())),
        "createTime": time(&s.create_time),
        "lastEventTime": time(&s.last_event_time),
        "terminateTime": time(&s.terminate_time),
        "eventCount": s.event_count,
    })
}

pub fn session_row(s: &pb::Session) -> Vec<String> {
    vec![
        s.session_id.clone(),
        state_name(s.state),
        s.event_count.to_string(),
        time(&s.create_time),
        time(&s.last_event_time),
        time(&s.terminate_time),
    ]
}
pub const SESSION_HEADERS: [&str; 6] = [
    "SESSION ID",
    "STATE",
    "EVENTS",
    "CREATED",
    "LAST EVENT",
    "TERMINATES",
];

pub fn actor_json(a: &pb::Actor) -> Value {
    json!({ "actorId": a.actor_id, "createTime": time(&a.create_time) })
}

pub fn api_key_json(k: &pb::ApiKey) -> Value {
    let policy = k.policy.clone().unwrap_or_default();
    json!({
        "keyId": k.key_id,
        "name": k.name,
        "policy": {
            "memoryIds": policy.memory_ids,
            "actorPatterns": policy.actor_patterns,
            "namespacePrefixes": policy.namespace_prefixes,
            "actions": policy.actions.iter().map(|&a| enum_name(pb::api_key_policy::Action::try_from(a).ok().map(|a| a.as_str_name()))).collect::<Vec<_>>(),
        },
        "createTime": time(&k.create_time),
        "revokeTime": k.revoke_time.as_ref().map(|_| time(&k.revoke_time)),
    })
}

pub fn api_key_row(k: &pb::ApiKey) -> Vec<String> {
    let policy = k.policy.clone().unwrap_or_default();
    let actions = policy
        .actions
        .iter()
        .map(|&a| {
            pb::api_key_policy::Action::try_from(a)
                .map_or("?", |a| a.as_str_name())
                .trim_start_matches("ACTION_")
                .to_lowercase()
        })
        .collect::<Vec<_>>()
        .join(",");
    let status = if k.revoke_time.is_some() {
        "revoked"
    } else {
        "active"
    };
    vec![
        k.key_id.clone(),
        k.name.clone(),
        status.into(),
        policy.memory_ids.join(","),
        policy.actor_patterns.join(","),
        actions,
        time(&k.create_time),
    ]
}
pub const API_KEY_HEADERS: [&str; 7] = [
    "KEY ID", "NAME", "STATUS", "MEMORIES", "ACTORS", "ACTIONS", "CREATED",
];
