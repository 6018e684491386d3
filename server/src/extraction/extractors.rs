//! Which extractor runs a strategy: the shared built-in one, or an LLM extractor per
//! endpoint configuration (the server's `llm_*` settings with the strategy's overrides),
//! created on first use and kept so its limits are shared by every job using it.

use crate::store::codec::StoredStrategy;
use memd_extractor::llm::{PromptMode, Prompts};
use memd_extractor::{
    BuiltinExtractor, ExtractError, Extractor, LlmConfig, LlmExtractor, RecordKind,
};
use memd_proto::v1::{PromptMode as PbPromptMode, StrategyType};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The server-wide LLM settings (`llm_*` in the configuration).
#[derive(Debug, Clone, Default)]
pub struct LlmDefaults {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub tokens_per_minute: u32,
    pub max_output_tokens: u32,
    pub prompts_dir: Option<PathBuf>,
}

/// The extractors of the worker pool.
pub struct Extractors {
    builtin: Arc<BuiltinExtractor>,
    defaults: LlmDefaults,
    prompts: Prompts,
    llm: Mutex<HashMap<(LlmConfig, Prompts), Arc<LlmExtractor>>>,
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
    pub fn new(defaults: LlmDefaults) -> std::io::Result<Self> {
        let prompts = match &defaults.prompts_dir {
            Some(dir) => Prompts::from_dir(dir)?,
            None => Prompts::default(),
        };
        Ok(Self {
            builtin: Arc::new(BuiltinExtractor),
            defaults,
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
        let overrides = strategy.llm.clone().unwrap_or_default();
        let pick = |own: &str, default: &Option<String>| {
            Some(own.to_string())
                .filter(|s| !s.is_empty())
                .or_else(|| default.clone())
        };
        let base_url = pick(&overrides.base_url, &self.defaults.base_url).ok_or_else(|| {
            ExtractError::Permanent(format!(
                "strategy {} uses the llm extractor but no endpoint is configured (set llm_base_url on the server or llm.base_url on the strategy)",
                strategy.strategy_id
            ))
        })?;
        let model = pick(&overrides.model, &self.defaults.model).ok_or_else(|| {
            ExtractError::Permanent(format!(
                "strategy {} uses the llm extractor but no model is configured (llm_model / llm.model)",
                strategy.strategy_id
            ))
        })?;
        let api_key = if overrides.api_key_env.is_empty() {
            self.defaults.api_key.clone()
        } else {
            Some(std::env::var(&overrides.api_key_env).map_err(|_| {
                ExtractError::Permanent(format!(
                    "environment variable {} (the api key of strategy {}) is not set on the server",
                    overrides.api_key_env, strategy.strategy_id
                ))
            })?)
        };
        let config = LlmConfig {
            base_url,
            model,
            api_key,
            timeout: match overrides.timeout_seconds {
                0 => self.defaults.timeout,
                s => Duration::from_secs(s.into()),
            },
            max_concurrent: match overrides.max_concurrent_requests {
                0 => self.defaults.max_concurrent,
                n => n as usize,
            },
            tokens_per_minute: match overrides.tokens_per_minute {
                0 => self.defaults.tokens_per_minute,
                n => n,
            },
            max_output_tokens: self.defaults.max_output_tokens,
        };
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
            .or_insert_with(|| Arc::new(LlmExtractor::new(config, prompts)))
            .clone();
        Ok(extractor)
    }

    /// Model tokens spent by every LLM extractor so far.
    pub fn tokens_used(&self) -> u64 {
        let cache = self.llm.lock().unwrap_or_else(|p| p.into_inner());
        cache.values().map(|e| e.tokens_used()).sum()
    }
}
