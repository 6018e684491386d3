//! ListMemoryExtractionJobs and StartMemoryExtractionJob on memd's extraction jobs.

use super::errors::AwsError;
use super::shapes::{self, compact};
use super::{Ctx, Reply, ids};
use memd_proto::v1 as pb;
use memd_proto::v1::memory_service_server::MemoryService;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListJobsInput {
    max_results: Option<i64>,
    filter: Option<JobFilterIn>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobFilterIn {
    strategy_id: Option<String>,
    session_id: Option<String>,
    actor_id: Option<String>,
    status: Option<String>,
}

fn job_status(status: i32) -> &'static str {
    match pb::ExtractionJobStatus::try_from(status) {
        Ok(pb::ExtractionJobStatus::Failed) => "FAILED",
        Ok(pb::ExtractionJobStatus::Running) => "RUNNING",
        _ => "PENDING",
    }
}

pub async fn list_jobs(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: ListJobsInput = shapes::parse(&ctx.body)?;
    let filter = input.filter.map(|f| -> Result<_, AwsError> {
        let status = match f.status.as_deref() {
            None => pb::ExtractionJobStatus::Unspecified,
            Some("FAILED") => pb::ExtractionJobStatus::Failed,
            Some(_) => return Err(AwsError::validation("filter.status", "must be FAILED")),
        };
        Ok(pb::ExtractionJobFilter {
            strategy_id: f.strategy_id.unwrap_or_default(),
            actor_id: f.actor_id.unwrap_or_default(),
            session_id: f.session_id.unwrap_or_default(),
            status: status as i32,
        })
    });
    let request = pb::ListMemoryExtractionJobsRequest {
        memory_id,
        filter: filter.transpose()?,
        page_size: shapes::page_size(input.max_results, 50)?,
        page_token: input.next_token.unwrap_or_default(),
    };
    let reply = ctx
        .api
        .memory
        .list_memory_extraction_jobs(ctx.request(request))
        .await?
        .into_inner();
    let jobs: Vec<Value> = reply
        .jobs
        .iter()
        .map(|job| {
            // memd extracts whole events; each is listed with its first message.
            let messages: Vec<Value> = job
                .event_ids
                .iter()
                .map(|id| json!({ "eventId": ids::rest_event_id(id), "messageIndex": 0 }))
                .collect();
            compact(json!({
                "jobID": job.job_id,
                "messages": { "messagesList": messages },
                "status": job_status(job.status),
                "failureReason": (!job.failure_reason.is_empty()).then_some(&job.failure_reason),
                "strategyId": job.strategy_id,
                "sessionId": job.session_id,
                "actorId": job.actor_id,
            }))
        })
        .collect();
    Ok((
        200,
        compact(json!({ "jobs": jobs, "nextToken": shapes::next_token(reply.next_page_token) })),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartJobInput {
    extraction_job: JobIn,
    /// Re-driving is idempotent by nature: a job that is already running again stays so.
    #[allow(dead_code)]
    client_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobIn {
    job_id: String,
}

pub async fn start_job(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: StartJobInput = shapes::parse(&ctx.body)?;
    let request = pb::StartMemoryExtractionJobRequest {
        memory_id,
        job_id: input.extraction_job.job_id,
    };
    let job = ctx
        .api
        .memory
        .start_memory_extraction_job(ctx.request(request))
        .await?
        .into_inner();
    Ok((200, json!({ "jobId": job.job_id })))
}
