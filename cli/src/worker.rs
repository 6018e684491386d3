//! `memctl worker`: an extraction worker outside the server. It leases jobs over gRPC, runs
//! the same extractors the server runs (built-in, or LLM with --llm-* flags), and completes
//! each job with its candidates; the server consolidates and commits them exactly as it
//! does for its own workers. Run several to scale out, or point one at SELF_MANAGED-style
//! strategies to see the protocol your own worker speaks.

use crate::Globals;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use memd_client::{MemdClient, pb};
use memd_extractor::llm::Prompts;
use memd_extractor::{
    BuiltinExtractor, Candidate, ExtractError, Extractor, Input, LlmConfig, LlmExtractor,
    RecordKind, Role, Slot, Turn,
};
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TypeArg {
    Semantic,
    UserPreference,
    Summary,
    Episodic,
    Custom,
}

impl From<TypeArg> for pb::StrategyType {
    fn from(arg: TypeArg) -> Self {
        match arg {
            TypeArg::Semantic => Self::Semantic,
            TypeArg::UserPreference => Self::UserPreference,
            TypeArg::Summary => Self::Summary,
            TypeArg::Episodic => Self::Episodic,
            TypeArg::Custom => Self::Custom,
        }
    }
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The memory whose jobs to work on.
    memory_id: String,
    /// Strategy types to serve. Repeatable.
    #[arg(long = "strategy-type", value_enum, required = true)]
    strategy_types: Vec<TypeArg>,
    /// Jobs leased per call.
    #[arg(long, default_value_t = 10)]
    max_jobs: i32,
    #[arg(long, default_value_t = 60)]
    lease_seconds: u32,
    /// Exit when no job is left instead of polling.
    #[arg(long)]
    once: bool,
    /// For strategies with extractor "llm": the endpoint, model and key (or MEMD_LLM_API_KEY).
    #[arg(long, env = "MEMD_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    #[arg(long, env = "MEMD_LLM_MODEL")]
    llm_model: Option<String>,
    #[arg(long, env = "MEMD_LLM_API_KEY", hide_env_values = true)]
    llm_api_key: Option<String>,
}

fn time_of(ts: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    ts.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Events as extractor turns (the server's own workers do the same from storage).
fn turns(events: &[pb::Event]) -> Vec<Turn> {
    let mut out = Vec::new();
    for event in events {
        for item in &event.payload {
            let (role, speaker, text) = match &item.content {
                Some(pb::payload_item::Content::Conversational(turn)) => {
                    let role = match pb::Role::try_from(turn.role) {
                        Ok(pb::Role::User) => Role::User,
                        Ok(pb::Role::Assistant) => Role::Assistant,
                        Ok(pb::Role::Tool) => Role::Tool,
                        _ => Role::Other,
                    };
                    let speaker = match (turn.name.is_empty(), role) {
                        (false, _) => turn.name.clone(),
                        (true, Role::User) => event.actor_id.clone(),
                        (true, Role::Assistant) => "assistant".into(),
                        (true, Role::Tool) => "tool".into(),
                        (true, Role::Other) => "other".into(),
                    };
                    (role, speaker, turn.text.clone())
                }
                Some(pb::payload_item::Content::Json(json)) => {
                    (Role::Tool, "tool".into(), json.clone())
                }
                _ => continue,
            };
            out.push(Turn {
                event_id: event.event_id.clone(),
                time: time_of(&event.event_timestamp),
                role,
                speaker,
                text,
            });
        }
    }
    out
}

fn kind(strategy: &pb::MemoryStrategy) -> Option<RecordKind> {
    let t = match pb::StrategyType::try_from(strategy.r#type).ok()? {
        pb::StrategyType::Custom => pb::StrategyType::try_from(strategy.base_type).ok()?,
        other => other,
    };
    match t {
        pb::StrategyType::Semantic => Some(RecordKind::Fact),
        pb::StrategyType::UserPreference => Some(RecordKind::Preference),
        pb::StrategyType::Summary => Some(RecordKind::Summary),
        pb::StrategyType::Episodic => Some(RecordKind::Episode),
        _ => None,
    }
}

fn slot_string(slot: &Option<Slot>) -> String {
    match slot {
        Some(Slot::Running(key)) => format!("running:{key}"),
        Some(Slot::Exclusive(key)) => format!("exclusive:{key}"),
        None => String::new(),
    }
}

fn candidate_record(c: Candidate) -> pb::CandidateRecord {
    pb::CandidateRecord {
        text: c.text,
        source_event_ids: c.source_event_ids,
        valid_from: Some(prost_types::Timestamp {
            seconds: c.valid_from.timestamp(),
            nanos: c.valid_from.timestamp_subsec_nanos() as i32,
        }),
        slot: slot_string(&c.slot),
        state: c.state.unwrap_or_default(),
    }
}

struct Runner {
    builtin: BuiltinExtractor,
    llm: Option<LlmExtractor>,
}

impl Runner {
    fn extract(
        &self,
        leased: &pb::LeasedJob,
    ) -> Result<(Vec<Candidate>, String, String), ExtractError> {
        let strategy = leased.strategy.clone().unwrap_or_default();
        let kind = kind(&strategy).ok_or_else(|| {
            ExtractError::Permanent("the strategy has no record type this worker extracts".into())
        })?;
        let extractor: &dyn Extractor = if strategy.extractor == "llm" {
            self.llm.as_ref().map(|l| l as &dyn Extractor).ok_or_else(|| {
                ExtractError::Permanent("strategy uses the llm extractor; start the worker with --llm-base-url and --llm-model".into())
            })?
        } else {
            &self.builtin
        };
        let turns_now = turns(&leased.events);
        let context = turns(&leased.context_events);
        let state = Some(leased.state.as_str()).filter(|s| !s.is_empty());
        if turns_now.is_empty() && state.is_none() {
            return Ok((
                Vec::new(),
                extractor.name().into(),
                extractor.version().into(),
            ));
        }
        let candidates = extractor.extract(&Input {
            kind,
            turns: &turns_now,
            context: &context,
            session_ended: leased.session_ended,
            state,
        })?;
        Ok((
            candidates,
            extractor.name().into(),
            extractor.version().into(),
        ))
    }
}

pub async fn run(ctx: &Globals, args: WorkerArgs) -> anyhow::Result<()> {
    let client: MemdClient = ctx.client().await?;
    let llm = match (&args.llm_base_url, &args.llm_model) {
        (Some(base_url), Some(model)) => Some(LlmExtractor::new(
            LlmConfig {
                base_url: base_url.clone(),
                model: model.clone(),
                api_key: args.llm_api_key.clone(),
                timeout: Duration::from_secs(60),
                max_concurrent: 4,
                tokens_per_minute: 0,
                max_output_tokens: 1024,
            },
            Prompts::default(),
        )),
        _ => None,
    };
    let runner = std::sync::Arc::new(Runner {
        builtin: BuiltinExtractor,
        llm,
    });
    let types: Vec<i32> = args
        .strategy_types
        .iter()
        .map(|t| pb::StrategyType::from(*t) as i32)
        .collect();
    let worker_id = format!("memctl-{}", std::process::id());
    let (mut done, mut failed) = (0usize, 0usize);
    loop {
        let leased = client
            .workers()
            .lease_extraction_jobs(pb::LeaseExtractionJobsRequest {
                memory_id: args.memory_id.clone(),
                strategy_types: types.clone(),
                max_jobs: args.max_jobs,
                lease_seconds: args.lease_seconds,
                worker_id: worker_id.clone(),
            })
            .await?
            .into_inner()
            .jobs;
        if leased.is_empty() {
            if args.once {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        for job in leased {
            // Extractors block (LLM calls): keep them off the async runtime.
            let (runner, for_job) = (runner.clone(), job.clone());
            let outcome = tokio::task::spawn_blocking(move || runner.extract(&for_job)).await?;
            let request = match outcome {
                Ok((candidates, extractor, version)) => pb::CompleteExtractionJobRequest {
                    memory_id: args.memory_id.clone(),
                    lease_token: job.lease_token.clone(),
                    records: candidates.into_iter().map(candidate_record).collect(),
                    extractor,
                    extractor_version: version,
                    ..Default::default()
                },
                Err(err) => {
                    failed += 1;
                    pb::CompleteExtractionJobRequest {
                        memory_id: args.memory_id.clone(),
                        lease_token: job.lease_token.clone(),
                        failure_reason: err.to_string(),
                        retryable: matches!(err, ExtractError::Transient(_)),
                        ..Default::default()
                    }
                }
            };
            match client.workers().complete_extraction_job(request).await {
                Ok(_) => done += 1,
                // The lease was lost (expired and taken over): another worker has the job.
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    eprintln!(
                        "job {}: {}",
                        job.job.map(|j| j.job_id).unwrap_or_default(),
                        status.message()
                    );
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
    if ctx.json {
        crate::output::print_json(&serde_json::json!({ "completed": done, "failed": failed }));
    } else {
        println!("completed {done} jobs ({failed} reported as failed)");
    }
    Ok(())
}
