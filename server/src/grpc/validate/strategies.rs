//! A memory's strategies: ids, namespace templates, extractors, and the LLM endpoint a
//! strategy may choose (never a URL or a secret of its own: see `extraction::endpoints`).

use super::{MAX_EVENT_EXPIRY_DAYS, description, namespace};
use crate::error::{Result, ServiceError};
use crate::extraction::endpoints::{LlmEndpoints, retired_field};
use crate::ids;
use crate::store::codec::{StoredLlmSettings, StoredStrategy, StoredTriggers};
use memd_proto::v1 as pb;

const MAX_STRATEGIES: usize = 20;

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

#[cfg(test)]
mod tests {
    use super::*;

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
