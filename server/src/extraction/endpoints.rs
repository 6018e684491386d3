//! The LLM endpoints the operator configured, by name. A strategy with the LLM extractor
//! names one (`LlmSettings.endpoint`, empty for `default`) and may pick one of the models the
//! operator allowed on it; it never carries a URL, a secret or the name of one. The server's
//! environment and outbound network are not an API (docs/security.md): a memory admin could
//! otherwise point memd at any address and have it send any environment variable there.

use memd_extractor::LlmConfig;
use memd_extractor::llm::Limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The endpoint a strategy gets when it names none: the server's `llm_*` settings.
pub const DEFAULT_ENDPOINT: &str = "default";

/// One `[llm_endpoints.<name>]` table of the server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// OpenAI-compatible, up to its version segment: `https://api.openai.com/v1`.
    pub base_url: String,
    /// The model used when a strategy names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Further models a strategy may choose (`LlmSettings.model`). Empty: only `model`, or any
    /// model when `model` is unset too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The key, sent as `Authorization: Bearer ...`; better given through `api_key_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The environment variable holding the key, read once at start (never a `MEMD_*` one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Defaults: the server's `llm_timeout_seconds`, `llm_max_concurrent_requests`,
    /// `llm_tokens_per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

/// A usable endpoint: where to call, with which key, the models strategies may pick, and the
/// limits every strategy on it shares.
struct Endpoint {
    config: LlmConfig,
    models: Vec<String>,
    limits: Arc<Limits>,
}

/// Every endpoint of this server, by name.
#[derive(Default)]
pub struct LlmEndpoints {
    endpoints: BTreeMap<String, Endpoint>,
}

// Names only: the endpoints hold keys, which logs must never show.
impl std::fmt::Debug for LlmEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.endpoints.keys()).finish()
    }
}

/// Why a strategy's LLM settings are refused: the field (under `llm.`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub message: String,
}

/// The per-strategy fields memd no longer honours, given their values: a URL, the name of an
/// environment variable, and limits that belong to the operator's endpoint. The name of the
/// first one that is set.
pub fn retired_field(
    base_url: &str,
    api_key_env: &str,
    timeout_seconds: u32,
    max_concurrent_requests: u32,
    tokens_per_minute: u32,
) -> Option<&'static str> {
    [
        ("base_url", !base_url.is_empty()),
        ("api_key_env", !api_key_env.is_empty()),
        ("timeout_seconds", timeout_seconds != 0),
        ("max_concurrent_requests", max_concurrent_requests != 0),
        ("tokens_per_minute", tokens_per_minute != 0),
    ]
    .into_iter()
    .find_map(|(field, set)| set.then_some(field))
}

/// Server-wide values an endpoint falls back on.
#[derive(Debug, Clone, Copy)]
pub struct EndpointDefaults {
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub tokens_per_minute: u32,
    pub max_output_tokens: u32,
}

impl LlmEndpoints {
    /// Resolves the configured endpoints (reading each `api_key_env` now, so that a missing
    /// variable is a start-up error, not a failed job hours later).
    pub fn resolve(
        settings: &BTreeMap<String, EndpointSettings>,
        defaults: EndpointDefaults,
    ) -> Result<Self, String> {
        let mut endpoints = BTreeMap::new();
        for (name, s) in settings {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            {
                return Err(format!(
                    "llm_endpoints: {name:?} is not a valid endpoint name (1-64 of A-Z a-z 0-9 _ - .)"
                ));
            }
            let at = format!("llm_endpoints.{name}");
            if !(s.base_url.starts_with("http://") || s.base_url.starts_with("https://")) {
                return Err(format!("{at}.base_url must be an http:// or https:// URL"));
            }
            let api_key = match (&s.api_key, &s.api_key_env) {
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: set api_key or api_key_env, not both"));
                }
                (Some(key), None) => Some(key.clone()),
                (None, Some(var)) if var.to_ascii_uppercase().starts_with("MEMD_") => {
                    return Err(format!(
                        "{at}.api_key_env {var:?}: memd's own MEMD_* variables (the admin key among them) are never sent to a model; use another variable"
                    ));
                }
                (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                    format!("{at}.api_key_env: the environment variable {var} is not set")
                })?),
                (None, None) => None,
            };
            let config = LlmConfig {
                base_url: s.base_url.clone(),
                model: s.model.clone().unwrap_or_default(),
                api_key,
                timeout: s
                    .timeout_seconds
                    .map_or(defaults.timeout, |t| Duration::from_secs(t.max(1))),
                max_concurrent: s
                    .max_concurrent_requests
                    .unwrap_or(defaults.max_concurrent)
                    .max(1),
                tokens_per_minute: s.tokens_per_minute.unwrap_or(defaults.tokens_per_minute),
                max_output_tokens: defaults.max_output_tokens,
            };
            let limits = Arc::new(Limits::new(config.max_concurrent, config.tokens_per_minute));
            endpoints.insert(
                name.clone(),
                Endpoint {
                    config,
                    models: s.models.clone(),
                    limits,
                },
            );
        }
        Ok(Self { endpoints })
    }

    /// The configured endpoint names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.endpoints.keys().map(String::as_str)
    }

    /// Checks a strategy's choice of endpoint and model (both may be empty) and returns what
    /// its extractor calls: the endpoint's settings with the model filled in, and the limits
    /// it shares with every other strategy on that endpoint.
    pub fn choose(&self, endpoint: &str, model: &str) -> Result<(LlmConfig, Arc<Limits>), Refusal> {
        let name = if endpoint.is_empty() {
            DEFAULT_ENDPOINT
        } else {
            endpoint
        };
        let Some(found) = self.endpoints.get(name) else {
            let known: Vec<&str> = self.names().collect();
            let message = match (endpoint.is_empty(), known.is_empty()) {
                (_, true) => "this server has no LLM endpoint; the operator configures them (llm_base_url, or [llm_endpoints.<name>] tables)".to_string(),
                (true, false) => format!(
                    "this server has no default LLM endpoint (llm_base_url); name one of: {}",
                    known.join(", ")
                ),
                (false, false) => format!(
                    "no LLM endpoint named {endpoint:?} on this server; configured: {}",
                    known.join(", ")
                ),
            };
            return Err(Refusal {
                field: "endpoint",
                message,
            });
        };
        let mut config = found.config.clone();
        if !model.is_empty() && model != config.model {
            let any = config.model.is_empty() && found.models.is_empty();
            if !any && !found.models.iter().any(|m| m == model) {
                let mut allowed: Vec<&str> = found.models.iter().map(String::as_str).collect();
                if !config.model.is_empty() {
                    allowed.insert(0, &config.model);
                }
                return Err(Refusal {
                    field: "model",
                    message: format!(
                        "endpoint {name} does not allow model {model:?}; allowed: {}",
                        allowed.join(", ")
                    ),
                });
            }
            config.model = model.to_string();
        }
        if config.model.is_empty() {
            return Err(Refusal {
                field: "model",
                message: format!("endpoint {name} has no default model; name one"),
            });
        }
        Ok((config, found.limits.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> EndpointDefaults {
        EndpointDefaults {
            timeout: Duration::from_secs(60),
            max_concurrent: 4,
            tokens_per_minute: 0,
            max_output_tokens: 1024,
        }
    }

    fn endpoint(base_url: &str) -> EndpointSettings {
        EndpointSettings {
            base_url: base_url.into(),
            model: Some("small".into()),
            models: vec!["large".into()],
            api_key: Some("sk-1".into()),
            api_key_env: None,
            timeout_seconds: None,
            max_concurrent_requests: Some(2),
            tokens_per_minute: None,
        }
    }

    #[test]
    fn strategies_choose_among_what_the_operator_configured() {
        let settings = BTreeMap::from([
            ("default".to_string(), endpoint("http://127.0.0.1:11434/v1")),
            ("openai".to_string(), endpoint("https://api.openai.com/v1")),
        ]);
        let endpoints = LlmEndpoints::resolve(&settings, defaults()).unwrap();
        let (config, limits) = endpoints.choose("", "").unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(config.model, "small");
        assert_eq!(config.max_concurrent, 2);
        let (large, shared) = endpoints.choose("default", "large").unwrap();
        assert_eq!(large.model, "large");
        assert!(Arc::ptr_eq(&limits, &shared), "one budget per endpoint");
        assert_eq!(
            endpoints.choose("openai", "").unwrap().0.base_url,
            "https://api.openai.com/v1"
        );
        let refused = endpoints.choose("default", "huge").unwrap_err();
        assert_eq!(refused.field, "model");
        assert!(refused.message.contains("small, large"), "{refused:?}");
        let refused = endpoints.choose("metadata", "").unwrap_err();
        assert_eq!(refused.field, "endpoint");
        assert!(refused.message.contains("default, openai"), "{refused:?}");
        let none = LlmEndpoints::default().choose("", "").unwrap_err();
        assert!(none.message.contains("no LLM endpoint"), "{none:?}");
    }

    #[test]
    fn an_endpoint_without_a_model_takes_any_and_needs_one() {
        let mut open = endpoint("http://127.0.0.1:8000/v1");
        open.model = None;
        open.models.clear();
        let endpoints =
            LlmEndpoints::resolve(&BTreeMap::from([("default".into(), open)]), defaults()).unwrap();
        assert_eq!(endpoints.choose("", "m").unwrap().0.model, "m");
        assert_eq!(endpoints.choose("", "").unwrap_err().field, "model");
    }

    #[test]
    fn memd_variables_and_bad_urls_are_refused_at_start() {
        let mut leaky = endpoint("http://127.0.0.1:1/v1");
        leaky.api_key = None;
        leaky.api_key_env = Some("MEMD_ADMIN_KEY".into());
        let err =
            LlmEndpoints::resolve(&BTreeMap::from([("x".into(), leaky)]), defaults()).unwrap_err();
        assert!(err.contains("MEMD_"), "{err}");
        let err = LlmEndpoints::resolve(
            &BTreeMap::from([("x".into(), endpoint("file:///etc/passwd"))]),
            defaults(),
        )
        .unwrap_err();
        assert!(err.contains("base_url"), "{err}");
        let mut unset = endpoint("http://127.0.0.1:1/v1");
        unset.api_key = None;
        unset.api_key_env = Some("MEMD_TEST_SURELY_UNSET_VARIABLE_1".replace("MEMD_", "X_"));
        let err =
            LlmEndpoints::resolve(&BTreeMap::from([("x".into(), unset)]), defaults()).unwrap_err();
        assert!(err.contains("not set"), "{err}");
    }

    #[test]
    fn retired_fields_are_named() {
        assert_eq!(retired_field("", "", 0, 0, 0), None);
        assert_eq!(retired_field("http://x", "", 0, 0, 0), Some("base_url"));
        assert_eq!(retired_field("", "HOME", 0, 0, 0), Some("api_key_env"));
        assert_eq!(retired_field("", "", 0, 0, 9), Some("tokens_per_minute"));
    }
}
