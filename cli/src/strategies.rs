//! Strategies as JSON, for `memctl memories create/update --strategies-file` and for output:
//! proto3 JSON field names; enum values by name, with or without their prefix
//! ("semantic", "SEMANTIC", "STRATEGY_TYPE_SEMANTIC").

use anyhow::{Context, bail};
use memd_client::pb;
use serde_json::{Value, json};
use std::path::Path;

fn enum_value<E>(
    field: &str,
    value: &Value,
    prefix: &str,
    parse: fn(&str) -> Option<E>,
) -> anyhow::Result<Option<E>> {
    match value {
        Value::Null => Ok(None),
        Value::String(name) => {
            let upper = name.to_uppercase().replace('-', "_");
            let full = if upper.starts_with(prefix) {
                upper
            } else {
                format!("{prefix}{upper}")
            };
            parse(&full)
                .map(Some)
                .with_context(|| format!("{field}: unknown value {name:?}"))
        }
        other => bail!("{field}: expected a name, got {other}"),
    }
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

fn number(value: &Value, key: &str) -> anyhow::Result<u32> {
    match &value[key] {
        Value::Null => Ok(0),
        v => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("{key}: expected a non-negative integer, got {v}")),
    }
}

/// One strategy from its JSON form. Retired LLM fields (`baseUrl`, `apiKeyEnv`, the limits)
/// are passed on, so that the server's refusal names them.
#[allow(deprecated)]
pub fn from_json(i: usize, value: &Value) -> anyhow::Result<pb::MemoryStrategy> {
    let at = |field: &str| format!("strategies[{i}].{field}");
    let kind = enum_value(
        &at("type"),
        &value["type"],
        "STRATEGY_TYPE_",
        pb::StrategyType::from_str_name,
    )?
    .with_context(|| format!("{} is required", at("type")))?;
    let base = enum_value(
        &at("baseType"),
        &value["baseType"],
        "STRATEGY_TYPE_",
        pb::StrategyType::from_str_name,
    )?;
    let mode = enum_value(
        &at("promptMode"),
        &value["promptMode"],
        "PROMPT_MODE_",
        pb::PromptMode::from_str_name,
    )?;
    let triggers = match &value["triggers"] {
        Value::Null => None,
        t => Some(pb::ExtractionTriggers {
            message_count: number(t, "messageCount")?,
            token_count: number(t, "tokenCount")?,
            idle_seconds: number(t, "idleSeconds")?,
            on_session_end: t["onSessionEnd"].as_bool().unwrap_or(false),
        }),
    };
    let llm = match &value["llm"] {
        Value::Null => None,
        l => Some(pb::LlmSettings {
            base_url: text(l, "baseUrl"),
            model: text(l, "model"),
            api_key_env: text(l, "apiKeyEnv"),
            timeout_seconds: number(l, "timeoutSeconds")?,
            max_concurrent_requests: number(l, "maxConcurrentRequests")?,
            tokens_per_minute: number(l, "tokensPerMinute")?,
            endpoint: text(l, "endpoint"),
        }),
    };
    Ok(pb::MemoryStrategy {
        strategy_id: text(value, "strategyId"),
        r#type: kind as i32,
        namespace_template: text(value, "namespaceTemplate"),
        name: text(value, "name"),
        description: text(value, "description"),
        triggers,
        record_expiry_days: number(value, "recordExpiryDays")? as i32,
        extractor: text(value, "extractor"),
        llm,
        base_type: base.map_or(0, |b| b as i32),
        prompt: text(value, "prompt"),
        prompt_mode: mode.map_or(0, |m| m as i32),
    })
}

/// A JSON array of strategies from a file (or `-` for stdin).
pub fn from_file(path: &Path) -> anyhow::Result<Vec<pb::MemoryStrategy>> {
    let raw = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let value: Value = serde_json::from_str(&raw).context("strategies file is not JSON")?;
    let items = value
        .as_array()
        .context("strategies file must hold a JSON array")?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| from_json(i, v))
        .collect()
}

fn name(shown: Option<&str>) -> Value {
    shown.map_or(Value::Null, |n| Value::String(n.to_string()))
}

fn type_name(value: i32) -> Value {
    name(
        pb::StrategyType::try_from(value)
            .ok()
            .map(|t| t.as_str_name()),
    )
}

/// A strategy's JSON form (what `from_json` reads back); retired LLM fields only when set.
#[allow(deprecated)]
pub fn to_json(s: &pb::MemoryStrategy) -> Value {
    let triggers = s.triggers.unwrap_or_default();
    json!({
        "strategyId": s.strategy_id,
        "type": type_name(s.r#type),
        "namespaceTemplate": s.namespace_template,
        "name": s.name,
        "description": s.description,
        "triggers": {
            "messageCount": triggers.message_count,
            "tokenCount": triggers.token_count,
            "idleSeconds": triggers.idle_seconds,
            "onSessionEnd": triggers.on_session_end,
        },
        "recordExpiryDays": s.record_expiry_days,
        "extractor": s.extractor,
        "llm": s.llm.as_ref().map(|l| {
            let mut llm = json!({"endpoint": l.endpoint, "model": l.model});
            for (key, set, value) in [
                ("baseUrl", !l.base_url.is_empty(), json!(l.base_url)),
                ("apiKeyEnv", !l.api_key_env.is_empty(), json!(l.api_key_env)),
                ("timeoutSeconds", l.timeout_seconds != 0, json!(l.timeout_seconds)),
                ("maxConcurrentRequests", l.max_concurrent_requests != 0, json!(l.max_concurrent_requests)),
                ("tokensPerMinute", l.tokens_per_minute != 0, json!(l.tokens_per_minute)),
            ] {
                if set {
                    llm[key] = value;
                }
            }
            llm
        }),
        "baseType": type_name(s.base_type),
        "prompt": s.prompt,
        "promptMode": name(pb::PromptMode::try_from(s.prompt_mode).ok().map(|m| m.as_str_name())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_names_errors() {
        let strategy = from_json(
            0,
            &json!({
                "strategyId": "pets",
                "type": "custom",
                "baseType": "semantic",
                "prompt": "Focus on pets.",
                "promptMode": "replace",
                "triggers": {"messageCount": 5, "onSessionEnd": true},
                "llm": {"endpoint": "local", "model": "llama3.1"}
            }),
        )
        .unwrap();
        assert_eq!(strategy.r#type, pb::StrategyType::Custom as i32);
        assert_eq!(strategy.base_type, pb::StrategyType::Semantic as i32);
        assert_eq!(strategy.prompt_mode, pb::PromptMode::Replace as i32);
        assert_eq!(strategy.triggers.unwrap().message_count, 5);
        assert_eq!(strategy.llm.as_ref().unwrap().endpoint, "local");
        assert_eq!(from_json(0, &to_json(&strategy)).unwrap(), strategy);
        let err = from_json(3, &json!({"type": "nonsense"})).unwrap_err();
        assert!(err.to_string().contains("strategies[3].type"), "{err}");
        assert!(
            from_json(0, &json!({}))
                .unwrap_err()
                .to_string()
                .contains("required")
        );
    }
}
