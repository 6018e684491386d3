//! The LLM extractor: any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM,
//! llama.cpp's server, Bedrock behind a gateway). The model answers with JSON that must match
//! [`schema`]; anything else is a retryable failure, never a garbage record.
//!
//! Blocking by design: memd runs extractors on dedicated worker threads.

mod limits;
mod prompts;
pub mod schema;

pub use limits::Limits;
pub use prompts::{PromptMode, Prompts};

use crate::dates::format_day;
use crate::{Candidate, ExtractError, Extractor, Input, RecordKind, Role, running_slot};
use chrono::{NaiveDate, NaiveTime};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where and how to call the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LlmConfig {
    /// Up to and including the version segment, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// Requests in flight at once (across all jobs using this endpoint).
    pub max_concurrent: usize,
    /// Tokens (prompt + completion, estimated before the call) per minute; 0 = unlimited.
    pub tokens_per_minute: u32,
    /// Upper bound on the completion, sent as `max_tokens`.
    pub max_output_tokens: u32,
}

/// Extracts with a chat-completions model.
pub struct LlmExtractor {
    agent: ureq::Agent,
    config: LlmConfig,
    prompts: Prompts,
    limits: Arc<Limits>,
    tokens: AtomicU64,
}

impl std::fmt::Debug for LlmExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmExtractor")
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

impl LlmExtractor {
    /// An extractor with limits of its own (`config.max_concurrent`, `config.tokens_per_minute`).
    pub fn new(config: LlmConfig, prompts: Prompts) -> Self {
        let limits = Arc::new(Limits::new(config.max_concurrent, config.tokens_per_minute));
        Self::with_limits(config, prompts, limits)
    }

    /// An extractor that shares `limits` with every other extractor of the same endpoint, so
    /// that several prompts or models on one endpoint stay within one budget.
    pub fn with_limits(config: LlmConfig, prompts: Prompts, limits: Arc<Limits>) -> Self {
        // No redirects: the operator's endpoint is the only address a request may reach.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Self {
            agent,
            config,
            prompts,
            limits,
            tokens: AtomicU64::new(0),
        }
    }

    /// The conversation as the model sees it: numbered turns with their dates.
    fn transcript(input: &Input<'_>) -> String {
        let mut out = String::new();
        if !input.context.is_empty() {
            out.push_str("Earlier turns, for context only (do not extract from them):\n");
            for turn in input.context {
                out.push_str(&format!(
                    "[-] {} {}: {}\n",
                    format_day(turn.time.date_naive()),
                    turn.speaker,
                    turn.text
                ));
            }
            out.push('\n');
        }
        out.push_str("Turns to extract from:\n");
        for (i, turn) in input.turns.iter().enumerate() {
            let who = match turn.role {
                Role::Tool => format!("tool {}", turn.speaker),
                _ => turn.speaker.clone(),
            };
            out.push_str(&format!(
                "[{}] {} {who}: {}\n",
                i + 1,
                format_day(turn.time.date_naive()),
                turn.text
            ));
        }
        if let Some(state) = input.state {
            out.push_str(&format!("\nPrevious summary:\n{state}\n"));
        }
        if input.session_ended {
            out.push_str("\nThe session has ended.\n");
        }
        out
    }

    fn call(&self, system: &str, user: &str) -> Result<String, ExtractError> {
        let estimate =
            (system.len() + user.len()) as u64 / 4 + u64::from(self.config.max_output_tokens);
        let _permit = self.limits.acquire(estimate);
        let body = json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": 0,
            "max_tokens": self.config.max_output_tokens,
            "response_format": {"type": "json_object"},
        });
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send(body.to_string()).map_err(|err| match err {
            ureq::Error::Timeout(_) => ExtractError::Transient(format!(
                "the model did not answer within {:?}",
                self.config.timeout
            )),
            other => ExtractError::Transient(format!("calling {url}: {other}")),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|err| ExtractError::Transient(format!("reading the model's answer: {err}")))?;
        match status {
            200..=299 => {}
            408 | 409 | 425 | 429 | 500..=599 => {
                return Err(ExtractError::Transient(format!(
                    "model endpoint answered {status}: {}",
                    shorten(&text)
                )));
            }
            _ => {
                return Err(ExtractError::Permanent(format!(
                    "model endpoint answered {status} (check base_url, model and key): {}",
                    shorten(&text)
                )));
            }
        }
        let (content, used) = schema::completion_content(&text)?;
        self.tokens
            .fetch_add(used.unwrap_or(estimate), Ordering::Relaxed);
        Ok(content)
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(300).collect()
}

impl Extractor for LlmExtractor {
    fn name(&self) -> &str {
        "llm"
    }

    fn version(&self) -> &str {
        &self.config.model
    }

    fn extract(&self, input: &Input<'_>) -> Result<Vec<Candidate>, ExtractError> {
        if input.turns.is_empty() && input.state.is_none() {
            return Ok(Vec::new());
        }
        let system = format!(
            "{}\n\n{}",
            self.prompts.for_kind(input.kind),
            schema::INSTRUCTIONS
        );
        let content = self.call(&system, &Self::transcript(input))?;
        let memories = schema::parse_memories(&content, input.turns.len())?;
        let fallback_time = input
            .turns
            .last()
            .map(|t| t.time)
            .unwrap_or(chrono::DateTime::UNIX_EPOCH);
        let single = matches!(input.kind, RecordKind::Summary | RecordKind::Episode);
        let mut out: Vec<Candidate> = memories
            .into_iter()
            .map(|memory| {
                let sources: Vec<String> = if memory.source_turns.is_empty() {
                    input.turns.iter().map(|t| t.event_id.clone()).collect()
                } else {
                    memory
                        .source_turns
                        .iter()
                        .map(|&n| input.turns[n - 1].event_id.clone())
                        .collect()
                };
                let mut sources_dedup: Vec<String> = Vec::new();
                for source in sources {
                    if !sources_dedup.contains(&source) {
                        sources_dedup.push(source);
                    }
                }
                let valid_from = memory
                    .date
                    .as_deref()
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .map(|d| d.and_time(NaiveTime::MIN).and_utc())
                    .unwrap_or(fallback_time);
                Candidate {
                    text: memory.text.clone(),
                    source_event_ids: sources_dedup,
                    slot: running_slot(input.kind),
                    valid_from,
                    // A running summary's state is its text: the next call extends it.
                    state: single.then_some(memory.text),
                }
            })
            .collect();
        if single {
            out.truncate(1);
        }
        Ok(out)
    }

    fn tokens_used(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }
}
