//! `memd.v1.ExtractionWorkerService`: external workers lease jobs with their events, extract
//! wherever they run, and complete them with candidates that go through the same
//! consolidation and atomic commit as the server's own workers (`extraction::job::apply`).

use super::{blocking, convert};
use crate::auth::{Principal, principal};
use crate::error::{Result, ServiceError};
use crate::extraction::ExtractionWorkers;
use crate::extraction::batch::Batch;
use crate::extraction::extractors::kind;
use crate::extraction::job::{self, Step};
use crate::extraction::namespaces::parse_slot;
use crate::extraction::turns::turns;
use crate::ids;
use crate::store::codec::{StoredJob, StoredStrategy};
use crate::store::keys::{self, EventSeq};
use crate::store::{EventView, JobView, Lease, LoadedEvent, Store, page};
use crate::time::{from_timestamp, now_us, to_timestamp};
use chrono::{DateTime, Utc};
use memd_extractor::{Candidate, RecordKind};
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};

const MAX_LEASE: usize = 100;
const MAX_CANDIDATES: usize = 100;

/// The ExtractionWorkerService implementation.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    store: Arc<Store>,
    workers: ExtractionWorkers,
}

impl WorkerApi {
    pub fn new(store: Arc<Store>, workers: ExtractionWorkers) -> Self {
        Self { store, workers }
    }
}

fn lease_seconds(requested: u32) -> Result<u64> {
    match requested {
        0 => Ok(60),
        5..=3600 => Ok(requested.into()),
        _ => Err(ServiceError::invalid(
            "lease_seconds",
            "must be 5-3600 (0: 60)",
        )),
    }
}

fn strategy_of<'a>(
    memory: &'a crate::store::codec::StoredMemory,
    job: &StoredJob,
) -> Option<&'a StoredStrategy> {
    memory
        .strategies
        .iter()
        .find(|s| s.strategy_id == job.strategy_id)
}

fn events(
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    loaded: Vec<LoadedEvent>,
) -> Vec<pb::Event> {
    loaded
        .into_iter()
        .map(|e| {
            convert::event(EventView {
                memory_id: memory_id.to_string(),
                actor_id: actor_id.to_string(),
                session_id: session_id.to_string(),
                seq: e.seq,
                stored: e.event,
            })
        })
        .collect()
}

/// Everything a worker needs to run one leased job.
fn leased_job(store: &Store, memory_id: &str, lease: Lease) -> Result<pb::LeasedJob> {
    let (_, actor_id, job_id) = keys::decode_job_key(&lease.job_key)?;
    let memory = store.memory(memory_id)?;
    let job = &lease.job;
    let strategy = strategy_of(&memory, job)
        .ok_or_else(|| ServiceError::Internal(format!("job {job_id} has no strategy")))?;
    let kind = kind(strategy).unwrap_or(RecordKind::Fact);
    let (loaded, context) = job::load_events(store, memory_id, actor_id, job, kind)?;
    let namespace = job::namespace(strategy, actor_id, &job.session_id);
    let running = memd_extractor::running_slot(kind);
    let state = match running {
        Some(slot) => store
            .namespace_records(memory_id, &namespace, now_us())?
            .into_iter()
            .find(|r| parse_slot(&r.slot).as_ref() == Some(&slot))
            .map(|r| r.extractor_state)
            .unwrap_or_default(),
        None => String::new(),
    };
    Ok(pb::LeasedJob {
        lease_token: job.lease_token.clone(),
        lease_expire_time: Some(to_timestamp(job.lease_until_us)),
        strategy: Some(convert::strategy(strategy)),
        events: events(memory_id, actor_id, &job.session_id, loaded),
        context_events: events(memory_id, actor_id, &job.session_id, context),
        state,
        session_ended: job.session_ended,
        namespace,
        job: Some(convert::job(JobView {
            memory_id: memory_id.to_string(),
            actor_id: actor_id.to_string(),
            job_id: job_id.to_string(),
            job: lease.job.clone(),
        })),
    })
}

/// The caller may work on jobs of this actor writing to this namespace.
fn may_work(
    caller: &Principal,
    memory: &crate::store::codec::StoredMemory,
    actor_id: &str,
    job: &StoredJob,
) -> bool {
    caller.sees_actor(actor_id)
        && strategy_of(memory, job).is_some_and(|s| {
            caller.sees_record(&job::namespace(s, actor_id, &job.session_id), actor_id)
        })
}

fn candidate(
    i: usize,
    record: pb::CandidateRecord,
    job: &StoredJob,
    kind: RecordKind,
) -> Result<Candidate> {
    let field = |f: &str| format!("records[{i}].{f}");
    let chars = record.text.chars().count();
    if chars == 0 || chars > memd_extractor::llm::schema::MAX_TEXT_CHARS {
        return Err(ServiceError::invalid(
            field("text"),
            format!(
                "must be 1-{} characters",
                memd_extractor::llm::schema::MAX_TEXT_CHARS
            ),
        ));
    }
    let own: Vec<EventSeq> = job
        .event_seqs
        .iter()
        .filter_map(|s| EventSeq::from_bytes(s))
        .collect();
    let mut newest = None;
    for id in &record.source_event_ids {
        let seq = EventSeq::parse_event_id(id).ok_or_else(|| {
            ServiceError::invalid(
                field("source_event_ids"),
                format!("{id} is not an event id"),
            )
        })?;
        // Episodes may cite any event of their session; everything else its job's events.
        if kind != RecordKind::Episode && !own.contains(&seq) {
            return Err(ServiceError::invalid(
                field("source_event_ids"),
                format!("{id} is not one of the job's events"),
            ));
        }
        newest = newest.max(Some(seq.ts_us));
    }
    let slot = if record.slot.is_empty() {
        None
    } else {
        Some(parse_slot(&record.slot).ok_or_else(|| {
            ServiceError::invalid(field("slot"), "must be empty, running:KEY or exclusive:KEY")
        })?)
    };
    let valid_from_us = match &record.valid_from {
        Some(ts) => from_timestamp(ts)
            .ok_or_else(|| ServiceError::invalid(field("valid_from"), "is not a valid time"))?,
        None => newest.unwrap_or_else(now_us),
    };
    Ok(Candidate {
        text: record.text,
        source_event_ids: record.source_event_ids,
        slot,
        valid_from: DateTime::<Utc>::from_timestamp_micros(valid_from_us as i64)
            .unwrap_or(DateTime::UNIX_EPOCH),
        state: Some(record.state).filter(|s| !s.is_empty()),
    })
}

type Reply<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::extraction_worker_service_server::ExtractionWorkerService for WorkerApi {
    async fn lease_extraction_jobs(
        &self,
        request: Request<pb::LeaseExtractionJobsRequest>,
    ) -> Reply<pb::LeaseExtractionJobsResponse> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        ids::memory_id("memory_id", &req.memory_id)?;
        caller.require_memory(Action::Write, &req.memory_id)?;
        let types: Vec<i32> = req.strategy_types.clone();
        if types.is_empty()
            || types.iter().any(|t| {
                pb::StrategyType::try_from(*t).is_err()
                    || *t == pb::StrategyType::Unspecified as i32
            })
        {
            return Err(ServiceError::invalid(
                "strategy_types",
                "name at least one STRATEGY_TYPE_* value",
            )
            .into());
        }
        let max = match req.max_jobs {
            0 => 10,
            n if (1..=MAX_LEASE as i32).contains(&n) => n as usize,
            _ => return Err(ServiceError::invalid("max_jobs", "must be 1-100").into()),
        };
        let lease_us = lease_seconds(req.lease_seconds)? * 1_000_000;
        let (store, workers) = (self.store.clone(), self.workers.clone());
        let worker_id = req.worker_id.clone();
        let jobs = blocking(move || {
            let memory = store.memory(&req.memory_id)?;
            let leases = store.lease_jobs(
                &req.memory_id,
                |actor, job| {
                    strategy_of(&memory, job).is_some_and(|s| types.contains(&s.strategy_type))
                        && may_work(&caller, &memory, actor, job)
                },
                |key| workers.is_running(key),
                max,
                lease_us,
                workers.options().max_attempts,
                now_us(),
            )?;
            // Jobs carry their events' payloads: the response stops before 4 MiB of them
            // (the first job always comes) and the rest are handed back unused.
            let (mut jobs, mut bytes, mut unused) = (Vec::new(), 0, Vec::new());
            for lease in leases {
                let token = lease.job.lease_token.clone();
                if !unused.is_empty() {
                    unused.push(token);
                    continue;
                }
                let job = leased_job(&store, &req.memory_id, lease)?;
                bytes += prost::Message::encoded_len(&job);
                if !jobs.is_empty() && bytes > page::MAX_PAGE_BYTES {
                    unused.push(token);
                    continue;
                }
                jobs.push(job);
            }
            if !unused.is_empty() {
                store.give_back_leases(&req.memory_id, &unused)?;
            }
            Ok(jobs)
        })
        .await?;
        if !jobs.is_empty() {
            tracing::debug!(worker = %worker_id, jobs = jobs.len(), "leased extraction jobs");
        }
        Ok(Response::new(pb::LeaseExtractionJobsResponse { jobs }))
    }

    async fn heartbeat_extraction_jobs(
        &self,
        request: Request<pb::HeartbeatExtractionJobsRequest>,
    ) -> Reply<pb::HeartbeatExtractionJobsResponse> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        ids::memory_id("memory_id", &req.memory_id)?;
        caller.require_memory(Action::Write, &req.memory_id)?;
        if req.lease_tokens.len() > MAX_LEASE {
            return Err(ServiceError::invalid("lease_tokens", "at most 100").into());
        }
        let lease_us = lease_seconds(req.lease_seconds)? * 1_000_000;
        let store = self.store.clone();
        let lost = blocking(move || {
            let memory = store.memory(&req.memory_id)?;
            // Authorised like a completion: a token of a job the caller may not work on is
            // reported lost, exactly like an expired one, and its lease is left alone.
            let may = |job_key: &[u8], job: &StoredJob| {
                keys::decode_job_key(job_key)
                    .is_ok_and(|(_, actor_id, _)| may_work(&caller, &memory, actor_id, job))
            };
            let mut lost = Vec::new();
            for token in req.lease_tokens {
                if !store.extend_lease(&req.memory_id, &token, lease_us, now_us(), may)? {
                    lost.push(token);
                }
            }
            Ok(lost)
        })
        .await?;
        Ok(Response::new(pb::HeartbeatExtractionJobsResponse {
            lost_lease_tokens: lost,
        }))
    }

    async fn complete_extraction_job(
        &self,
        request: Request<pb::CompleteExtractionJobRequest>,
    ) -> Reply<pb::CompleteExtractionJobResponse> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        ids::memory_id("memory_id", &req.memory_id)?;
        caller.require_memory(Action::Write, &req.memory_id)?;
        if req.records.len() > MAX_CANDIDATES {
            return Err(ServiceError::invalid("records", "at most 100 per job").into());
        }
        let (store, workers) = (self.store.clone(), self.workers.clone());
        let changed = blocking(move || {
            let lost = || {
                ServiceError::FailedPrecondition(
                    "the lease is no longer held (it expired and was taken over, or the job is done); nothing was written".into(),
                )
            };
            let Lease { job_key, job } = store.leased_job(&req.memory_id, &req.lease_token)?.ok_or_else(lost)?;
            let memory = store.memory(&req.memory_id)?;
            let (_, actor_id, _) = keys::decode_job_key(&job_key)?;
            if !may_work(&caller, &memory, actor_id, &job) {
                return Err(lost());
            }
            let now = now_us();
            if !req.failure_reason.is_empty() {
                let retry_at = workers.retry_at(job.attempts + 1, req.retryable, now);
                store.fail_attempt(&job_key, &job, &req.failure_reason, retry_at)?;
                return Ok(0);
            }
            let strategy = strategy_of(&memory, &job).ok_or_else(lost)?.clone();
            // SELF_MANAGED records are taken as given, like facts.
            let kind = kind(&strategy).unwrap_or(RecordKind::Fact);
            let candidates = req
                .records
                .into_iter()
                .enumerate()
                .map(|(i, record)| candidate(i, record, &job, kind))
                .collect::<Result<Vec<_>>>()?;
            let namespace = job::namespace(&strategy, actor_id, &job.session_id);
            // The worker's records are found by their turns' context like the server's own.
            let (events, earlier) = job::load_events(&store, &req.memory_id, actor_id, &job, kind)
                .map_err(|err| ServiceError::Internal(err.to_string()))?;
            let contexts = job::search_contexts(
                &turns(&earlier, actor_id),
                &turns(&events, actor_id),
            );
            let extractor = if req.extractor.is_empty() { "external" } else { req.extractor.as_str() };
            let mut batch = Batch::new(workers.namespaces());
            let step = job::apply(
                &store,
                &mut batch,
                &job_key,
                &job,
                &strategy,
                &namespace,
                candidates,
                &contexts,
                (extractor, req.extractor_version.as_str()),
                now,
            )
            .map_err(|err| ServiceError::Internal(err.to_string()))?;
            debug_assert_eq!(step, Step::Added, "a fresh batch waits for its namespace");
            let changed = batch.changes.len();
            batch.commit(&store)?;
            Ok(changed as i32)
        })
        .await?;
        Ok(Response::new(pb::CompleteExtractionJobResponse {
            records_changed: changed,
        }))
    }
}
