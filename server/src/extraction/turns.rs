//! Stored events as the extractor sees them.

use crate::store::LoadedEvent;
use crate::store::codec::StoredContent;
use chrono::{DateTime, Utc};
use memd_extractor::{Role, Turn};
use memd_proto::v1 as pb;

/// The turns of some events: one per conversational or JSON payload item.
pub fn turns(events: &[LoadedEvent], actor_id: &str) -> Vec<Turn> {
    let mut out = Vec::new();
    for loaded in events {
        let time = DateTime::<Utc>::from_timestamp_micros(loaded.seq.ts_us as i64)
            .unwrap_or(DateTime::UNIX_EPOCH);
        let event_id = loaded.seq.to_event_id();
        for item in &loaded.event.payload {
            let (role, speaker, text) = match &item.content {
                Some(StoredContent::Conversational(turn)) => {
                    let role = role(turn.role);
                    let speaker = if !turn.name.is_empty() {
                        turn.name.clone()
                    } else if role == Role::User {
                        actor_id.to_string()
                    } else {
                        role_name(role).to_string()
                    };
                    (role, speaker, turn.text.clone())
                }
                Some(StoredContent::Json(json)) => (Role::Tool, "tool".to_string(), json.clone()),
                _ => continue,
            };
            out.push(Turn {
                event_id: event_id.clone(),
                time,
                role,
                speaker,
                text,
            });
        }
    }
    out
}

fn role(number: i32) -> Role {
    match pb::Role::try_from(number) {
        Ok(pb::Role::User) => Role::User,
        Ok(pb::Role::Assistant) => Role::Assistant,
        Ok(pb::Role::Tool) => Role::Tool,
        _ => Role::Other,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Other => "other",
    }
}
