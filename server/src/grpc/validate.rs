//! Request validation: API messages in, store inputs out. Every rejection is
//! INVALID_ARGUMENT naming the field; nothing is written for a rejected request.

use crate::error::{Result, ServiceError};
use crate::extraction::endpoints::{LlmEndpoints, retired_field};
use crate::ids;
use crate::lifecycle;
use crate::store::codec::{
    StoredContent, StoredLlmSettings, StoredPayload, StoredPolicy, StoredSessionPolicy,
    StoredStrategy, StoredTriggers, StoredTurn,
};
use crate::store::keys::EventSeq;
use crate::store::{EventFilterSpec, MetadataCondition};
use memd_proto::v1 as pb;
use std::collections::BTreeMap;

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
const MAX_STRATEGIES: usize = 20;
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

fn default_namespace(strategy_type: pb::StrategyType) -> &'static str {
    match strategy_type {
        pb::StrategyType::Summary | pb::StrategyType::Episodic => {
            "/strategies/{memoryStrategyId}/actors/{actorId}/sessions/{sessionId}"
        }
        _ => "/strategies/{memoryStrategyId}/actors/{actorId}",
    }
}

/// Strategies, with ids and namespace templates filled in.
/// `endpoints` are the operator's LLM endpoints, which a strategy's `llm` chooses from.
pub fn strategies(
    strategies: Vec<pb::MemoryStrategy>,
    endpoints: &LlmEndpoints,
) -> Result<Vec<StoredStrategy>> {
    if strategies.len() > MAX_STRATEGIES {
        return Err(ServiceError::invalid(
            "strategies",
            format!("at most {MAX_STRATEGIES}"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    strategies
        .into_iter()
        .enumerate()
        .map(
            |(
                i,
                pb::MemoryStrategy {
                    strategy_id,
                    r#type,
                    namespace_template,
                    name,
                    description: text,
                    triggers,
                    record_expiry_days,
                    extractor,
                    llm,
                    base_type,
                    prompt,
                    prompt_mode,
                },
            )| {
                let field = |f: &str| format!("strategies[{i}].{f}");
                let strategy_type = pb::StrategyType::try_from(r#type)
                    .ok()
                    .filter(|t| *t != pb::StrategyType::Unspecified)
                    .ok_or_else(|| {
                        ServiceError::invalid(
                            field("type"),
                            "must be a STRATEGY_TYPE_* value other than UNSPECIFIED",
                        )
                    })?;
                let name = if name.is_empty() {
                    strategy_type
                        .as_str_name()
                        .trim_start_matches("STRATEGY_TYPE_")
                        .to_lowercase()
                } else {
                    name
                };
                let strategy_id = if strategy_id.is_empty() {
                    format!(
                        "{}-{}",
                        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
                        ids::random_suffix(8)
                    )
                } else {
                    strategy_id
                };
                ids::memory_id(&field("strategy_id"), &strategy_id)?;
                if !seen.insert(strategy_id.clone()) {
                    return Err(ServiceError::invalid(field("strategy_id"), "is used twice"));
                }
                description(&field("description"), &text)?;
                let namespace_template = if namespace_template.is_empty() {
                    default_namespace(strategy_type).to_string()
                } else {
                    namespace_template
                };
                namespace(&field("namespace_template"), &namespace_template)?;
                if !(0..=MAX_EVENT_EXPIRY_DAYS as i32).contains(&record_expiry_days) {
                    return Err(ServiceError::invalid(
                        field("record_expiry_days"),
                        format!("must be 0 (never) to {MAX_EVENT_EXPIRY_DAYS}"),
                    ));
                }
                let (extractor, base_type) =
                    strategy_extractor(&field, strategy_type, extractor, base_type, &prompt)?;
                if let Some(llm) = &llm {
                    llm_settings(&field("llm"), llm, strategy_type, &extractor, endpoints)?;
                }
                if pb::PromptMode::try_from(prompt_mode).is_err() {
                    return Err(ServiceError::invalid(
                        field("prompt_mode"),
                        "must be a PROMPT_MODE_* value",
                    ));
                }
                Ok(StoredStrategy {
                    extractor,
                    llm: llm.map(|l| StoredLlmSettings {
                        model: l.model,
                        endpoint: l.endpoint,
                        ..Default::default()
                    }),
                    base_type,
                    prompt,
                    prompt_mode,
                    strategy_id,
                    strategy_type: r#type,
                    namespace_template,
                    name,
                    description: text,
                    triggers: triggers.map(|t| StoredTriggers {
                        message_count: t.message_count,
                        token_count: t.token_count,
                        idle_seconds: t.idle_seconds,
                        on_session_end: t.on_session_end,
                    }),
                    record_expiry_days: record_expiry_days as u32,
                })
            },
        )
        .collect()
}

/// The extractor a strategy runs ("builtin" or "llm") and, for CUSTOM, its base type.
fn strategy_extractor(
    field: &dyn Fn(&str) -> String,
    strategy_type: pb::StrategyType,
    extractor: String,
    base_type: i32,
    prompt: &str,
) -> Result<(String, i32)> {
    if prompt.chars().count() > 20_000 {
        return Err(ServiceError::invalid(
            field("prompt"),
            "must be at most 20000 characters",
        ));
    }
    let extractor = match extractor.as_str() {
        "" | "builtin" if strategy_type != pb::StrategyType::Custom => "builtin".to_string(),
        "" | "llm" => "llm".to_string(),
        "builtin" => {
            return Err(ServiceError::invalid(
                field("extractor"),
                "CUSTOM strategies run on the llm extractor",
            ));
        }
        other => {
            return Err(ServiceError::invalid(
                field("extractor"),
                format!("must be \"builtin\" or \"llm\", not {other:?}"),
            ));
        }
    };
    let base = pb::StrategyType::try_from(base_type).unwrap_or(pb::StrategyType::Unspecified);
    if strategy_type == pb::StrategyType::Custom {
        if !matches!(
            base,
            pb::StrategyType::Semantic
                | pb::StrategyType::UserPreference
                | pb::StrategyType::Summary
                | pb::StrategyType::Episodic
        ) {
            return Err(ServiceError::invalid(
                field("base_type"),
                "a CUSTOM strategy needs SEMANTIC, USER_PREFERENCE, SUMMARY or EPISODIC",
            ));
        }
    } else if base != pb::StrategyType::Unspecified || !prompt.is_empty() {
        return Err(ServiceError::invalid(
            field("base_type"),
            "base_type and prompt are for CUSTOM strategies",
        ));
    }
    Ok((extractor, base_type))
}

/// A strategy's LLM settings: no URL, variable name or limits (the operator's, see
/// `extraction::endpoints`), and an endpoint and model the operator allows (SELF_MANAGED
/// strategies run on external workers, which bring their own).
#[allow(deprecated)] // reads the retired fields to refuse them
fn llm_settings(
    field: &str,
    llm: &pb::LlmSettings,
    strategy_type: pb::StrategyType,
    extractor: &str,
    endpoints: &LlmEndpoints,
) -> Result<()> {
    if let Some(retired) = retired_field(
        &llm.base_url,
        &llm.api_key_env,
        llm.timeout_seconds,
        llm.max_concurrent_requests,
        llm.tokens_per_minute,
    ) {
        return Err(ServiceError::invalid(
            format!("{field}.{retired}"),
            "is no longer accepted: LLM endpoints, their keys and limits are configured by the operator (llm_base_url, llm_endpoints); name one with llm.endpoint",
        ));
    }
    if llm.endpoint.len() > 64 || llm.model.len() > 256 {
        return Err(ServiceError::invalid(
            field,
            "endpoint or model is too long",
        ));
    }
    if extractor == "llm" && strategy_type != pb::StrategyType::SelfManaged {
        endpoints
            .choose(&llm.endpoint, &llm.model)
            .map_err(|refusal| {
                ServiceError::invalid(format!("{field}.{}", refusal.field), refusal.message)
            })?;
    } else if !llm.endpoint.is_empty() || !llm.model.is_empty() {
        return Err(ServiceError::invalid(
            field,
            "is for strategies whose extractor is \"llm\"",
        ));
    }
    Ok(())
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

/// A namespace template: starts with '/', only known placeholders.
fn namespace(field: &str, template: &str) -> Result<()> {
    if !template.starts_with('/') || template.len() > 512 {
        return Err(ServiceError::invalid(
            field,
            "must start with '/' and be at most 512 characters",
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
        if !prefix.starts_with('/') {
            return Err(ServiceError::invalid(
                "policy.namespace_prefixes",
                "prefixes must start with '/'",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_templates() {
        assert!(namespace("f", "/users/{actorId}/facts").is_ok());
        assert!(namespace("f", "users").is_err());
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

    #[test]
    #[allow(deprecated)]
    fn strategies_name_an_operator_endpoint_never_a_url_or_a_variable() {
        let llm_strategy = |llm: pb::LlmSettings| pb::MemoryStrategy {
            r#type: pb::StrategyType::Semantic as i32,
            name: "facts".into(),
            extractor: "llm".into(),
            llm: Some(llm),
            ..Default::default()
        };
        let none = LlmEndpoints::default();
        for (llm, field) in [
            (
                pb::LlmSettings {
                    base_url: "http://169.254.169.254/v1".into(),
                    ..Default::default()
                },
                "strategies[0].llm.base_url",
            ),
            (
                pb::LlmSettings {
                    api_key_env: "MEMD_ADMIN_KEY".into(),
                    ..Default::default()
                },
                "strategies[0].llm.api_key_env",
            ),
            (
                pb::LlmSettings {
                    tokens_per_minute: 1_000_000,
                    ..Default::default()
                },
                "strategies[0].llm.tokens_per_minute",
            ),
            (
                pb::LlmSettings {
                    endpoint: "elsewhere".into(),
                    ..Default::default()
                },
                "strategies[0].llm.endpoint",
            ),
        ] {
            let err = strategies(vec![llm_strategy(llm)], &none).unwrap_err();
            assert!(err.to_string().starts_with(field), "{err}");
        }
        let builtin_with_endpoint = pb::MemoryStrategy {
            extractor: "builtin".into(),
            ..llm_strategy(pb::LlmSettings {
                endpoint: "default".into(),
                ..Default::default()
            })
        };
        let err = strategies(vec![builtin_with_endpoint], &none).unwrap_err();
        assert!(err.to_string().starts_with("strategies[0].llm"), "{err}");
    }
}
