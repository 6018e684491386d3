//! AgentCore memory strategies (semantic, summary, user preference, episodic, custom with
//! overrides) to memd's `MemoryStrategy` and back.

use super::errors::AwsError;
use memd_proto::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

/// One of the model's strategy kinds (exactly one member set).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct StrategyIn {
    semantic_memory_strategy: Option<BuiltInStrategyIn>,
    summary_memory_strategy: Option<BuiltInStrategyIn>,
    user_preference_memory_strategy: Option<BuiltInStrategyIn>,
    episodic_memory_strategy: Option<BuiltInStrategyIn>,
    custom_memory_strategy: Option<CustomStrategyIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BuiltInStrategyIn {
    name: String,
    description: Option<String>,
    namespaces: Option<Vec<String>>,
    namespace_templates: Option<Vec<String>>,
    record_expiry_specification: Option<ExpiryIn>,
    memory_record_schema: Option<Value>,
    reflection_configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CustomStrategyIn {
    name: String,
    description: Option<String>,
    namespaces: Option<Vec<String>>,
    namespace_templates: Option<Vec<String>>,
    configuration: Option<CustomConfigurationIn>,
    record_expiry_specification: Option<ExpiryIn>,
    memory_record_schema: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ExpiryIn {
    record_expiry_duration_days: i32,
    action: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CustomConfigurationIn {
    semantic_override: Option<OverrideIn>,
    summary_override: Option<OverrideIn>,
    user_preference_override: Option<OverrideIn>,
    episodic_override: Option<OverrideIn>,
    self_managed_configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OverrideIn {
    extraction: Option<PromptIn>,
    consolidation: Option<PromptIn>,
    reflection: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PromptIn {
    append_to_prompt: String,
    model_id: String,
}

const NO_SCHEMA: &str = "record metadata is free-form string pairs";

/// `namespaces` or `namespaceTemplates` (the same thing under two names), one template.
pub(super) fn namespace_in(
    field: &str,
    a: Option<Vec<String>>,
    b: Option<Vec<String>>,
) -> Result<String, AwsError> {
    match (a, b) {
        (Some(_), Some(_)) => Err(AwsError::validation(
            &format!("{field}.namespaces"),
            "give namespaces or namespaceTemplates, not both",
        )),
        (Some(list), None) | (None, Some(list)) => {
            let [one] = <[String; 1]>::try_from(list).map_err(|_| {
                AwsError::validation(
                    &format!("{field}.namespaces"),
                    "must hold exactly one namespace",
                )
            })?;
            Ok(one)
        }
        (None, None) => Ok(String::new()),
    }
}

pub(super) fn expiry_in(field: &str, expiry: Option<ExpiryIn>) -> Result<i32, AwsError> {
    let Some(expiry) = expiry else { return Ok(0) };
    if expiry.action.as_deref().is_some_and(|a| a != "REMOVE") {
        return Err(AwsError::validation(
            &format!("{field}.recordExpirySpecification.action"),
            "must be REMOVE",
        ));
    }
    Ok(expiry.record_expiry_duration_days)
}

/// A new strategy id in the model's pattern (`name-` and 10 characters).
fn new_strategy_id(name: &str) -> String {
    format!("{name}-{}", crate::ids::random_suffix(10))
}

pub(super) fn strategy_in(
    field: String,
    strategy: StrategyIn,
) -> Result<pb::MemoryStrategy, AwsError> {
    use pb::StrategyType as T;
    let StrategyIn {
        semantic_memory_strategy,
        summary_memory_strategy,
        user_preference_memory_strategy,
        episodic_memory_strategy,
        custom_memory_strategy,
    } = strategy;
    let built_in = [
        (
            T::Semantic,
            "semanticMemoryStrategy",
            semantic_memory_strategy,
        ),
        (T::Summary, "summaryMemoryStrategy", summary_memory_strategy),
        (
            T::UserPreference,
            "userPreferenceMemoryStrategy",
            user_preference_memory_strategy,
        ),
        (
            T::Episodic,
            "episodicMemoryStrategy",
            episodic_memory_strategy,
        ),
    ];
    let mut chosen: Vec<pb::MemoryStrategy> = Vec::new();
    for (kind, member, given) in built_in {
        let Some(s) = given else { continue };
        let field = format!("{field}.{member}");
        if s.memory_record_schema.is_some() {
            return Err(AwsError::unsupported(
                &format!("{field}.memoryRecordSchema"),
                NO_SCHEMA,
            ));
        }
        if s.reflection_configuration.is_some() {
            return Err(AwsError::unsupported(
                &format!("{field}.reflectionConfiguration"),
                "episodes are extracted without a separate reflection step",
            ));
        }
        chosen.push(pb::MemoryStrategy {
            strategy_id: new_strategy_id(&s.name),
            r#type: kind as i32,
            namespace_template: namespace_in(&field, s.namespaces, s.namespace_templates)?,
            record_expiry_days: expiry_in(&field, s.record_expiry_specification)?,
            name: s.name,
            description: s.description.unwrap_or_default(),
            ..Default::default()
        });
    }
    if let Some(custom) = custom_memory_strategy {
        chosen.push(custom_in(&format!("{field}.customMemoryStrategy"), custom)?);
    }
    match <[pb::MemoryStrategy; 1]>::try_from(chosen) {
        Ok([one]) => Ok(one),
        Err(_) => Err(AwsError::validation(
            &field,
            "must set exactly one strategy kind",
        )),
    }
}

/// A custom strategy: an LLM extraction prompt appended to a built-in type's.
fn custom_in(field: &str, custom: CustomStrategyIn) -> Result<pb::MemoryStrategy, AwsError> {
    use pb::StrategyType as T;
    if custom.memory_record_schema.is_some() {
        return Err(AwsError::unsupported(
            &format!("{field}.memoryRecordSchema"),
            NO_SCHEMA,
        ));
    }
    let configuration = custom
        .configuration
        .ok_or_else(|| AwsError::validation(&format!("{field}.configuration"), "is required"))?;
    let field = format!("{field}.configuration");
    if configuration.self_managed_configuration.is_some() {
        return Err(AwsError::unsupported(
            &format!("{field}.selfManagedConfiguration"),
            "memd delivers self-managed jobs through its ExtractionWorkerService (gRPC), not SNS and S3",
        ));
    }
    let overrides = [
        (
            T::Semantic,
            "semanticOverride",
            configuration.semantic_override,
        ),
        (
            T::Summary,
            "summaryOverride",
            configuration.summary_override,
        ),
        (
            T::UserPreference,
            "userPreferenceOverride",
            configuration.user_preference_override,
        ),
        (
            T::Episodic,
            "episodicOverride",
            configuration.episodic_override,
        ),
    ];
    let mut chosen = overrides.into_iter().filter(|(_, _, o)| o.is_some());
    let (Some((base, member, Some(o))), None) = (chosen.next(), chosen.next()) else {
        return Err(AwsError::validation(
            &field,
            "must set exactly one override",
        ));
    };
    let field = format!("{field}.{member}");
    if o.reflection.is_some() {
        return Err(AwsError::unsupported(
            &format!("{field}.reflection"),
            "episodes are extracted without a separate reflection step",
        ));
    }
    // memd extracts in one LLM call per batch: the extraction prompt is the one to extend.
    // A summary has no extraction step of its own, so its consolidation prompt is that call's.
    let prompt = match (base, o.extraction, o.consolidation) {
        (_, Some(extraction), None) => extraction,
        (T::Summary, None, Some(consolidation)) => consolidation,
        (_, _, Some(_)) => {
            return Err(AwsError::unsupported(
                &format!("{field}.consolidation"),
                "memd consolidates without an LLM prompt (supersession by key); extend the extraction prompt",
            ));
        }
        (_, None, None) => {
            return Err(AwsError::validation(
                &format!("{field}.extraction"),
                "is required",
            ));
        }
    };
    Ok(pb::MemoryStrategy {
        strategy_id: new_strategy_id(&custom.name),
        r#type: T::Custom as i32,
        namespace_template: namespace_in(&field, custom.namespaces, custom.namespace_templates)?,
        record_expiry_days: expiry_in(&field, custom.record_expiry_specification)?,
        name: custom.name,
        description: custom.description.unwrap_or_default(),
        extractor: "llm".into(),
        llm: Some(pb::LlmSettings {
            model: prompt.model_id,
            ..Default::default()
        }),
        base_type: base as i32,
        prompt: prompt.append_to_prompt,
        prompt_mode: pb::PromptMode::Append as i32,
        ..Default::default()
    })
}

pub(super) fn strategy_type_out(strategy: &pb::MemoryStrategy) -> &'static str {
    match pb::StrategyType::try_from(strategy.r#type) {
        Ok(pb::StrategyType::Semantic) => "SEMANTIC",
        Ok(pb::StrategyType::Summary) => "SUMMARIZATION",
        Ok(pb::StrategyType::UserPreference) => "USER_PREFERENCE",
        Ok(pb::StrategyType::Episodic) => "EPISODIC",
        _ => "CUSTOM",
    }
}

pub(super) fn custom_configuration_out(strategy: &pb::MemoryStrategy) -> Value {
    use pb::StrategyType as T;
    let prompt = json!({
        "appendToPrompt": strategy.prompt,
        "modelId": strategy.llm.as_ref().map(|l| l.model.clone()).unwrap_or_default(),
    });
    match (
        pb::StrategyType::try_from(strategy.r#type),
        pb::StrategyType::try_from(strategy.base_type),
    ) {
        (Ok(T::SelfManaged), _) => json!({ "type": "SELF_MANAGED" }),
        (Ok(T::Custom), Ok(T::Summary)) => json!({
            "type": "SUMMARY_OVERRIDE",
            "consolidation": { "customConsolidationConfiguration": { "summaryConsolidationOverride": prompt } },
        }),
        (Ok(T::Custom), Ok(base)) => {
            let (kind, member) = match base {
                T::UserPreference => (
                    "USER_PREFERENCE_OVERRIDE",
                    "userPreferenceExtractionOverride",
                ),
                T::Episodic => ("EPISODIC_OVERRIDE", "episodicExtractionOverride"),
                _ => ("SEMANTIC_OVERRIDE", "semanticExtractionOverride"),
            };
            json!({ "type": kind, "extraction": { "customExtractionConfiguration": { member: prompt } } })
        }
        _ => Value::Null,
    }
}
