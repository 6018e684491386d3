//! Request validation: API messages in, store inputs out. Every rejection is
//! INVALID_ARGUMENT naming the field; nothing is written for a rejected request.

use crate::error::{Result, ServiceError};
use crate::ids;
use crate::lifecycle;
use crate::store::codec::{
    StoredContent, StoredPayload, StoredPolicy, StoredSessionPolicy, StoredTurn,
};
use crate::store::keys::EventSeq;
use crate::store::{EventFilterSpec, MetadataCondition};
use memd_proto::v1 as pb;
use std::collections::BTreeMap;

mod strategies;
pub use strategies::strategies;

pub const MAX_PAYLOAD_ITEMS: usize = 100;
pub const MAX_TEXT_CHARS: usize = 100_000;
pub const MAX_EVENT_BYTES: usize = 10 * 1024 * 1024;
pub const MAX_METADATA_KEYS: usize = 15;
pub const MAX_METADATA_KEY_CHARS: usize = 128;
pub const MAX_METADATA_VALUE_CHARS: usize = 256;
pub const DEFAULT_EVENT_EXPIRY_DAYS: u32 = 90;
pub const MAX_EVENT_EXPIRY_DAYS: u32 = 3650;
pub const MAX_SPEAKER_CHARS: usize = 128;
/// Nesting of a JSON payload item (objects and arrays) at most: deeper documents are refused
/// before anything parses them recursively.
pub const MAX_JSON_DEPTH: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 4096;
const MAX_POLICY_ENTRIES: usize = 100;

/// An optional event timestamp.
pub fn event_timestamp(ts: Option<&prost_types::Timestamp>) -> Result<Option<u64>> {
    ts.map(|ts| {
        crate::time::from_timestamp(ts).ok_or_else(|| {
            ServiceError::invalid(
                "event_timestamp",
                "must be between 1970 and 9999 with nanos in 0..1e9",
            )
        })
    })
    .transpose()
}

/// An event id (NOT parsed means INVALID_ARGUMENT, never a lookup).
pub fn event_id(field: &str, id: &str) -> Result<EventSeq> {
    EventSeq::parse_event_id(id)
        .ok_or_else(|| ServiceError::invalid(field, "is not an event id (32 hex characters)"))
}

/// Payload items into their stored form.
pub fn payload(items: Vec<pb::PayloadItem>) -> Result<Vec<StoredPayload>> {
    use pb::payload_item::Content;
    if items.is_empty() {
        return Err(ServiceError::invalid(
            "payload",
            "must contain at least one item",
        ));
    }
    if items.len() > MAX_PAYLOAD_ITEMS {
        return Err(ServiceError::invalid(
            "payload",
            format!("must contain at most {MAX_PAYLOAD_ITEMS} items"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let content = match item.content {
                None => {
                    return Err(ServiceError::invalid(
                        format!("payload[{i}]"),
                        "has no content",
                    ));
                }
                Some(Content::Conversational(turn)) => {
                    let role = pb::Role::try_from(turn.role)
                        .ok()
                        .filter(|r| *r != pb::Role::Unspecified);
                    if role.is_none() {
                        return Err(ServiceError::invalid(
                            format!("payload[{i}].conversational.role"),
                            "must be a ROLE_* value other than ROLE_UNSPECIFIED",
                        ));
                    }
                    if turn.text.chars().count() > MAX_TEXT_CHARS {
                        return Err(ServiceError::invalid(
                            format!("payload[{i}].conversational.text"),
                            format!("must be at most {MAX_TEXT_CHARS} characters"),
                        ));
                    }
                    if turn.name.chars().count() > MAX_SPEAKER_CHARS
                        || turn.name.chars().any(char::is_control)
                    {
                        return Err(ServiceError::invalid(
                            format!("payload[{i}].conversational.name"),
                            format!(
                                "must be at most {MAX_SPEAKER_CHARS} characters without control characters"
                            ),
                        ));
                    }
                    StoredContent::Conversational(StoredTurn {
                        role: turn.role,
                        text: turn.text,
                        name: turn.name,
                    })
                }
                Some(Content::Blob(bytes)) => StoredContent::Blob(bytes),
                Some(Content::Json(json)) => {
                    if json_depth(&json) > MAX_JSON_DEPTH {
                        return Err(ServiceError::invalid(
                            format!("payload[{i}].json"),
                            format!("nests objects and arrays deeper than {MAX_JSON_DEPTH} levels"),
                        ));
                    }
                    if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(&json) {
                        return Err(ServiceError::invalid(
                            format!("payload[{i}].json"),
                            format!("is not valid JSON: {err}"),
                        ));
                    }
                    StoredContent::Json(json)
                }
            };
            Ok(StoredPayload {
                content: Some(content),
            })
        })
        .collect()
}

/// How deeply a JSON text nests objects and arrays (brackets inside strings do not count);
/// a linear scan, whatever the depth.
fn json_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Event metadata limits.
pub fn metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ServiceError::invalid(
            "metadata",
            format!("must have at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (key, value) in metadata {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_METADATA_KEY_CHARS {
            return Err(ServiceError::invalid(
                "metadata",
                format!("keys must be 1-{MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(ServiceError::invalid(
                format!("metadata[{key}]"),
                format!("must be at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// A CreateEvent branch: (name, root).
pub fn branch(branch: Option<&pb::Branch>) -> Result<(String, Option<EventSeq>)> {
    let Some(branch) = branch else {
        return Ok((String::new(), None));
    };
    if branch.name.is_empty() {
        if !branch.root_event_id.is_empty() {
            return Err(ServiceError::invalid(
                "branch.name",
                "is required with branch.root_event_id",
            ));
        }
        return Ok((String::new(), None));
    }
    ids::branch_name("branch.name", &branch.name)?;
    let root = (!branch.root_event_id.is_empty())
        .then(|| event_id("branch.root_event_id", &branch.root_event_id))
        .transpose()?;
    Ok((branch.name.clone(), root))
}

/// A ListEvents filter.
pub fn event_filter(filter: Option<pb::EventFilter>) -> Result<EventFilterSpec> {
    let Some(pb::EventFilter { branch, metadata }) = filter else {
        return Ok(EventFilterSpec::default());
    };
    let branch = match branch {
        Some(pb::BranchFilter {
            name,
            include_parent_branches,
        }) => {
            if !name.is_empty() {
                ids::branch_name("filter.branch.name", &name)?;
            }
            Some((name, include_parent_branches))
        }
        None => None,
    };
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ServiceError::invalid(
            "filter.metadata",
            format!("must have at most {MAX_METADATA_KEYS} conditions"),
        ));
    }
    let metadata = metadata
        .into_iter()
        .enumerate()
        .map(
            |(
                i,
                pb::MetadataFilter {
                    key,
                    operator,
                    value,
                },
            )| {
                if key.is_empty() {
                    return Err(ServiceError::invalid(
                        format!("filter.metadata[{i}].key"),
                        "must not be empty",
                    ));
                }
                match pb::MetadataOperator::try_from(operator) {
                    Ok(pb::MetadataOperator::EqualsTo) => Ok(MetadataCondition::Equals(key, value)),
                    Ok(pb::MetadataOperator::Exists) => Ok(MetadataCondition::Exists(key)),
                    Ok(pb::MetadataOperator::NotExists) => Ok(MetadataCondition::NotExists(key)),
                    _ => Err(ServiceError::invalid(
                        format!("filter.metadata[{i}].operator"),
                        "must be EQUALS_TO, EXISTS or NOT_EXISTS",
                    )),
                }
            },
        )
        .collect::<Result<_>>()?;
    Ok(EventFilterSpec { branch, metadata })
}

pub fn description(field: &str, text: &str) -> Result<()> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ServiceError::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

/// `event_expiry_days`: 0 takes the default.
pub fn event_expiry_days(days: i32) -> Result<u32> {
    match days {
        0 => Ok(DEFAULT_EVENT_EXPIRY_DAYS),
        d if d < 0 || d as u32 > MAX_EVENT_EXPIRY_DAYS => Err(ServiceError::invalid(
            "event_expiry_days",
            format!(
                "must be 1-{MAX_EVENT_EXPIRY_DAYS} (0 for the default {DEFAULT_EVENT_EXPIRY_DAYS})"
            ),
        )),
        d => Ok(d as u32),
    }
}

/// `extraction_mode`: whether strategies extract from the event.
pub fn extraction_mode(mode: i32) -> Result<bool> {
    match pb::ExtractionMode::try_from(mode) {
        Ok(pb::ExtractionMode::Unspecified | pb::ExtractionMode::Extract) => Ok(true),
        Ok(pb::ExtractionMode::Skip) => Ok(false),
        Err(_) => Err(ServiceError::invalid(
            "extraction_mode",
            "must be an EXTRACTION_MODE_* value",
        )),
    }
}

pub fn session_policy(policy: Option<&pb::SessionPolicy>) -> Result<StoredSessionPolicy> {
    lifecycle::effective_policy(policy)
}

/// A namespace prefix to list or search under: at most 512 characters, no NUL.
pub fn namespace_prefix(field: &str, prefix: &str) -> Result<()> {
    if prefix.len() > 512 || prefix.contains('\0') {
        return Err(ServiceError::invalid(
            field,
            "must be at most 512 characters without NUL",
        ));
    }
    Ok(())
}

/// A namespace template: 1-512 characters, only known placeholders. A leading '/' is
/// customary but, as in AgentCore, not required.
fn namespace(field: &str, template: &str) -> Result<()> {
    if template.is_empty() || template.len() > 512 || template.contains('\0') {
        return Err(ServiceError::invalid(
            field,
            "must be 1-512 characters without NUL",
        ));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| ServiceError::invalid(field, "has an unclosed '{'"))?;
        let name = &rest[open + 1..open + close];
        if !matches!(name, "actorId" | "sessionId" | "memoryStrategyId") {
            return Err(ServiceError::invalid(
                field,
                format!(
                    "unknown placeholder {{{name}}} (use actorId, sessionId, memoryStrategyId)"
                ),
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// An API key policy.
pub fn api_key_policy(policy: Option<pb::ApiKeyPolicy>) -> Result<StoredPolicy> {
    let pb::ApiKeyPolicy {
        memory_ids,
        actor_patterns,
        namespace_prefixes,
        actions,
    } = policy.ok_or_else(|| ServiceError::invalid("policy", "is required"))?;
    for (field, list) in [
        ("policy.memory_ids", &memory_ids),
        ("policy.actor_patterns", &actor_patterns),
        ("policy.namespace_prefixes", &namespace_prefixes),
    ] {
        if list.len() > MAX_POLICY_ENTRIES {
            return Err(ServiceError::invalid(
                field,
                format!("at most {MAX_POLICY_ENTRIES} entries"),
            ));
        }
    }
    for id in memory_ids.iter().filter(|id| *id != "*") {
        ids::memory_id("policy.memory_ids", id)?;
    }
    for pattern in &actor_patterns {
        if pattern.is_empty() || pattern.len() > 255 || pattern.contains('\0') {
            return Err(ServiceError::invalid(
                "policy.actor_patterns",
                "patterns must be 1-255 characters",
            ));
        }
    }
    for prefix in &namespace_prefixes {
        if prefix.is_empty() || prefix.len() > 512 || prefix.contains('\0') {
            return Err(ServiceError::invalid(
                "policy.namespace_prefixes",
                "prefixes must be 1-512 characters without NUL (\"*\" for all)",
            ));
        }
    }
    if actions.is_empty() {
        return Err(ServiceError::invalid(
            "policy.actions",
            "must name at least one action",
        ));
    }
    for &action in &actions {
        let known = pb::api_key_policy::Action::try_from(action)
            .is_ok_and(|a| a != pb::api_key_policy::Action::Unspecified);
        if !known {
            return Err(ServiceError::invalid(
                "policy.actions",
                format!("unknown action {action}"),
            ));
        }
    }
    Ok(StoredPolicy {
        memory_ids,
        actor_patterns,
        namespace_prefixes,
        actions,
    })
}

/// Longest server path a request may name (Linux's PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;

/// A directory on the server's filesystem (`CreateBackup.dir`): absolute, no NUL, bounded.
pub fn server_dir(field: &str, dir: &str) -> Result<()> {
    let reason = if dir.is_empty() {
        "is required"
    } else if dir.len() > MAX_PATH_BYTES {
        "must be at most 4096 bytes"
    } else if dir.contains('\0') {
        "must not contain NUL"
    } else if !std::path::Path::new(dir).is_absolute() {
        "must be an absolute path on the server"
    } else if std::path::Path::new(dir)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        "must not contain '..'"
    } else {
        return Ok(());
    };
    Err(ServiceError::invalid(field, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_templates() {
        assert!(namespace("f", "/users/{actorId}/facts").is_ok());
        assert!(namespace("f", "support/{actorId}/facts").is_ok());
        assert!(namespace("f", "").is_err());
        assert!(namespace("f", "/x/{nope}").is_err());
        assert!(namespace("f", "/x/{actorId").is_err());
    }

    #[test]
    fn payload_limits() {
        let turn = |text: String| pb::PayloadItem {
            content: Some(pb::payload_item::Content::Conversational(
                pb::Conversational {
                    role: pb::Role::User as i32,
                    text,
                    name: String::new(),
                },
            )),
        };
        assert!(payload(vec![turn("hi".into())]).is_ok());
        assert!(payload(vec![]).is_err());
        let err = payload(vec![turn("x".repeat(MAX_TEXT_CHARS + 1))]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("payload[0].conversational.text"),
            "{err}"
        );
        let bad_json = pb::PayloadItem {
            content: Some(pb::payload_item::Content::Json("{".into())),
        };
        assert!(
            payload(vec![bad_json])
                .unwrap_err()
                .to_string()
                .starts_with("payload[0].json")
        );
    }

    #[test]
    fn json_payloads_nest_at_most_64_deep() {
        let json = |text: String| pb::PayloadItem {
            content: Some(pb::payload_item::Content::Json(text)),
        };
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(json_depth(&nested(MAX_JSON_DEPTH)), MAX_JSON_DEPTH);
        assert_eq!(json_depth(r#"{"a": "[[[{{{", "b": [{"c": "\"]"}]}"#), 3);
        assert!(payload(vec![json(nested(MAX_JSON_DEPTH))]).is_ok());
        let err = payload(vec![json(nested(100_000))]).unwrap_err();
        assert!(
            err.to_string().starts_with("payload[0].json") && err.to_string().contains("64"),
            "{err}"
        );
    }
}
