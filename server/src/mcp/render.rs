//! memd's replies as MCP content: a JSON document for programs (structured content,
//! resources) and a short plain-text form a model reads well.

use memd_proto::v1 as pb;
use serde_json::{Value, json};

/// RFC 3339 in UTC, or null.
pub fn time(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.and_then(|ts| chrono::DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32))
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}

/// The date part of [`time`], for the text forms ("" when unset).
fn day(ts: Option<&prost_types::Timestamp>) -> String {
    time(ts)
        .as_str()
        .map_or(String::new(), |t| t[..10].to_string())
}

pub fn record(record: &pb::MemoryRecord, score: Option<f64>) -> Value {
    let mut value = json!({
        "memory_record_id": record.memory_record_id,
        "text": record.text,
        "namespace": record.namespace,
        "strategy_id": record.strategy_id,
        "actor_id": record.actor_id,
        "session_id": record.session_id,
        "valid_from": time(record.valid_from.as_ref()),
        "update_time": time(record.update_time.as_ref()),
        "version": record.version,
        "source_event_ids": record.source_event_ids,
        "metadata": record.metadata,
    });
    if let Some(score) = score {
        value["score"] = json!(score);
    }
    value
}

/// `- [mr-…] (2026-11-02, /users/alice/facts) Alice is vegetarian.`
pub fn record_line(record: &pb::MemoryRecord) -> String {
    format!(
        "- [{}] ({}, {}) {}",
        record.memory_record_id,
        day(record.valid_from.as_ref()),
        record.namespace,
        record.text
    )
}

/// The conversational text of an event (its turns, one per line), else a note of what it
/// holds.
pub fn event_text(event: &pb::Event) -> String {
    use pb::payload_item::Content;
    let parts: Vec<String> = event
        .payload
        .iter()
        .map(|item| match &item.content {
            Some(Content::Conversational(turn)) => {
                let speaker = if turn.name.is_empty() {
                    role_name(turn.role).to_string()
                } else {
                    turn.name.clone()
                };
                format!("{speaker}: {}", turn.text)
            }
            Some(Content::Json(json)) => json.clone(),
            Some(Content::Blob(blob)) => format!("<{} bytes of binary data>", blob.len()),
            None => String::new(),
        })
        .collect();
    parts.join("\n")
}

pub fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::User => "user",
        pb::Role::Assistant => "assistant",
        pb::Role::Tool => "tool",
        pb::Role::Other | pb::Role::Unspecified => "other",
    }
}

pub fn event(event: &pb::Event, score: Option<f64>) -> Value {
    let mut value = json!({
        "event_id": event.event_id,
        "session_id": event.session_id,
        "event_timestamp": time(event.event_timestamp.as_ref()),
        "text": event_text(event),
        "metadata": event.metadata,
    });
    if let Some(score) = score {
        value["score"] = json!(score);
    }
    value
}

/// `- [event …] (2026-11-02, session s1) user: I moved to Lisbon.`
pub fn event_line(event: &pb::Event) -> String {
    format!(
        "- [event {}] ({}, session {}) {}",
        event.event_id,
        day(event.event_timestamp.as_ref()),
        event.session_id,
        event_text(event).replace('\n', " / ")
    )
}

pub fn session(session: &pb::Session) -> Value {
    let state = pb::SessionState::try_from(session.state)
        .map_or("UNSPECIFIED", |s| {
            s.as_str_name().trim_start_matches("SESSION_STATE_")
        })
        .to_string();
    json!({
        "session_id": session.session_id,
        "state": state,
        "event_count": session.event_count,
        "create_time": time(session.create_time.as_ref()),
        "last_event_time": time(session.last_event_time.as_ref()),
        "terminate_time": time(session.terminate_time.as_ref()),
    })
}

pub fn context_item(item: &pb::ContextItem) -> Value {
    use pb::context_item::Source;
    let source = match Source::try_from(item.source).unwrap_or(Source::Unspecified) {
        Source::RecentTurn => "recent_turn",
        Source::SessionSummary => "session_summary",
        Source::MemoryRecord => "memory_record",
        Source::PastEvent => "past_event",
        Source::Unspecified => "other",
    };
    json!({
        "source": source,
        "text": item.text,
        "score": item.score,
        "memory_record_id": item.memory_record_id,
        "event_id": item.event_id,
        "session_id": item.session_id,
        "namespace": item.namespace,
        "time": time(item.time.as_ref()),
        "tokens": item.tokens,
    })
}

/// GetContext's items in sections, as a model would want them in its prompt.
pub fn context_text(items: &[pb::ContextItem]) -> String {
    use pb::context_item::Source;
    let section = |source: Source, title: &str| {
        let lines: Vec<String> = items
            .iter()
            .filter(|item| item.source == source as i32)
            .map(|item| match source {
                Source::MemoryRecord => format!(
                    "- [{}] ({}) {}",
                    item.memory_record_id,
                    day(item.time.as_ref()),
                    item.text
                ),
                Source::PastEvent => format!(
                    "- [event {}] ({}, session {}) {}",
                    item.event_id,
                    day(item.time.as_ref()),
                    item.session_id,
                    item.text
                ),
                _ => format!("- {}", item.text),
            })
            .collect();
        (!lines.is_empty()).then(|| format!("{title}:\n{}", lines.join("\n")))
    };
    let sections: Vec<String> = [
        section(Source::SessionSummary, "Session summary"),
        section(Source::RecentTurn, "Recent turns (oldest first)"),
        section(
            Source::MemoryRecord,
            "What memory holds (most relevant first)",
        ),
        section(Source::PastEvent, "Earlier conversation"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if sections.is_empty() {
        "Nothing in memory yet for this actor.".to_string()
    } else {
        sections.join("\n\n")
    }
}
