//! Which extractor runs a strategy: the shared built-in one, or an LLM extractor on one of
//! the operator's endpoints (see [`super::endpoints`]), created on first use and kept; every
//! extractor of one endpoint shares its limits.

use super::endpoints::{LlmEndpoints, retired_field};
use crate::store::codec::StoredStrategy;
use memd_extractor::llm::{PromptMode, Prompts};
use memd_extractor::{
    BuiltinExtractor, ExtractError, Extractor, LlmConfig, LlmExtractor, RecordKind,
};
use memd_proto::v1::{PromptMode as PbPromptMode, StrategyType};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The extractors of the worker pool.
pub struct Extractors {
    builtin: Arc<BuiltinExtractor>,
    endpoints: Arc<LlmEndpoints>,
    prompts: Prompts,
    llm: Mutex<HashMap<(LlmConfig, Prompts), Arc<LlmExtractor>>>,
}

/// The first LLM field of a stored strategy that memd refuses today (a URL, a variable name, a
/// limit), if it carries one: it was stored before the refusal and is never honoured.
pub fn retired_settings(strategy: &StoredStrategy) -> Option<&'static str> {
    let llm = strategy.llm.as_ref()?;
    retired_field(
        &llm.base_url,
        &llm.api_key_env,
        llm.timeout_seconds,
        llm.max_concurrent_requests,
        llm.tokens_per_minute,
    )
}

/// The record kind a strategy produces (CUSTOM: its base type's).
pub fn kind(strategy: &StoredStrategy) -> Result<RecordKind, ExtractError> {
    let strategy_type = match StrategyType::try_from(strategy.strategy_type) {
        Ok(StrategyType::Custom) => StrategyType::try_from(strategy.base_type),
        other => other,
    };
    match strategy_type {
        Ok(StrategyType::Semantic) => Ok(RecordKind::Fact),
        Ok(StrategyType::UserPreference) => Ok(RecordKind::Preference),
        Ok(StrategyType::Summary) => Ok(RecordKind::Summary),
        Ok(StrategyType::Episodic) => Ok(RecordKind::Episode),
        _ => Err(ExtractError::Permanent(format!(
            "strategy {} has no record type memd can extract",
            strategy.strategy_id
        ))),
    }
}

impl Extractors {
    /// Loads the prompts (defaults, overridden by `prompts_dir`).
    pub fn new(endpoints: Arc<LlmEndpoints>, prompts_dir: Option<&Path>) -> std::io::Result<Self> {
        let prompts = match prompts_dir {
            Some(dir) => Prompts::from_dir(dir)?,
            None => Prompts::default(),
        };
        Ok(Self {
            builtin: Arc::new(BuiltinExtractor),
            endpoints,
            prompts,
            llm: Mutex::default(),
        })
    }

    /// The extractor for a strategy.
    pub fn for_strategy(
        &self,
        strategy: &StoredStrategy,
    ) -> Result<Arc<dyn Extractor>, ExtractError> {
        if strategy.extractor != "llm" {
            return Ok(self.builtin.clone());
        }
        let settings = strategy.llm.clone().unwrap_or_default();
        // Stored before memd refused them: never honoured (docs/security.md).
        if let Some(field) = retired_settings(strategy) {
            return Err(ExtractError::Permanent(format!(
                "strategy {} carries llm.{field}, which memd no longer honours: LLM endpoints, their keys and limits are the operator's (llm_endpoints); update the strategy to name an endpoint with llm.endpoint",
                strategy.strategy_id
            )));
        }
        let (config, limits) = self
            .endpoints
            .choose(&settings.endpoint, &settings.model)
            .map_err(|refusal| {
                ExtractError::Permanent(format!(
                    "strategy {}: llm.{}: {}",
                    strategy.strategy_id, refusal.field, refusal.message
                ))
            })?;
        let mut prompts = self.prompts.clone();
        if !strategy.prompt.is_empty() {
            let mode = match PbPromptMode::try_from(strategy.prompt_mode) {
                Ok(PbPromptMode::Replace) => PromptMode::Replace,
                _ => PromptMode::Append,
            };
            prompts = prompts.customised(kind(strategy)?, &strategy.prompt, mode);
        }
        let mut cache = self.llm.lock().unwrap_or_else(|p| p.into_inner());
        let extractor = cache
            .entry((config.clone(), prompts.clone()))
            .or_insert_with(|| Arc::new(LlmExtractor::with_limits(config, prompts, limits)))
            .clone();
        Ok(extractor)
    }

    /// Model tokens spent by every LLM extractor so far.
    pub fn tokens_used(&self) -> u64 {
        let cache = self.llm.lock().unwrap_or_else(|p| p.into_inner());
        cache.values().map(|e| e.tokens_used()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::StoredLlmSettings;

    #[test]
    fn a_stored_url_or_variable_is_never_honoured() {
        let extractors = Extractors::new(Arc::new(LlmEndpoints::default()), None).unwrap();
        let strategy = StoredStrategy {
            strategy_id: "facts".into(),
            strategy_type: StrategyType::Semantic as i32,
            extractor: "llm".into(),
            llm: Some(StoredLlmSettings {
                base_url: "http://169.254.169.254/v1".into(),
                api_key_env: "MEMD_ADMIN_KEY".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(retired_settings(&strategy), Some("base_url"));
        match extractors.for_strategy(&strategy) {
            Err(ExtractError::Permanent(reason)) => {
                assert!(reason.contains("llm.base_url"), "{reason}")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a stored base_url was honoured"),
        }
        let builtin = StoredStrategy {
            extractor: "builtin".into(),
            ..strategy
        };
        assert!(extractors.for_strategy(&builtin).is_ok());
    }
}
