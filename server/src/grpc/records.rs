//! Long-term memory records and extraction jobs of `memd.v1.MemoryService`. Every read is
//! filtered by the caller's namespace prefixes and actor patterns inside the store scan, and
//! a record the caller may not see is NOT_FOUND, exactly like a missing one.

use super::{blocking, convert, validate};
use crate::auth::Principal;
use crate::error::{Result, ServiceError};
use crate::extraction::ExtractionWorkers;
use crate::ids;
use crate::store::codec::StoredRecord;
use crate::store::{JobFilter, RecordListing, Store, page};
use crate::time::now_us;
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use std::sync::Arc;

pub(super) fn record_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ServiceError::invalid(
            "memory_record_id",
            "must be 1-64 ASCII letters and digits",
        ));
    }
    Ok(())
}

fn visible(caller: &Principal) -> impl Fn(&StoredRecord) -> bool + Copy + '_ {
    move |r: &StoredRecord| caller.sees_record(&r.namespace, &r.actor_id)
}

pub async fn get(
    store: Arc<Store>,
    caller: Principal,
    req: pb::GetMemoryRecordRequest,
) -> Result<pb::MemoryRecord> {
    ids::memory_id("memory_id", &req.memory_id)?;
    record_id(&req.memory_record_id)?;
    caller.require_memory(Action::Read, &req.memory_id)?;
    let memory_id = req.memory_id.clone();
    let record = blocking(move || {
        store.record(
            &req.memory_id,
            &req.memory_record_id,
            now_us(),
            visible(&caller),
        )
    })
    .await?;
    Ok(convert::record(record, &memory_id))
}

pub async fn list(
    store: Arc<Store>,
    caller: Principal,
    req: pb::ListMemoryRecordsRequest,
) -> Result<pb::ListMemoryRecordsResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Read, &req.memory_id)?;
    if !req.namespace.is_empty() {
        validate::namespace_prefix("namespace", &req.namespace)?;
    }
    if !req.strategy_id.is_empty() {
        ids::memory_id("strategy_id", &req.strategy_id)?;
    }
    let listing = RecordListing {
        memory_id: req.memory_id.clone(),
        namespace_prefix: req.namespace,
        strategy_id: req.strategy_id,
        page_size: page::page_size("page_size", req.page_size)?,
        page_token: req.page_token,
    };
    let (records, next_page_token) =
        blocking(move || store.list_records(&listing, now_us(), visible(&caller))).await?;
    Ok(pb::ListMemoryRecordsResponse {
        memory_records: records
            .into_iter()
            .map(|r| convert::record(r, &req.memory_id))
            .collect(),
        next_page_token,
    })
}

pub async fn delete(
    store: Arc<Store>,
    caller: Principal,
    req: pb::DeleteMemoryRecordRequest,
) -> Result<()> {
    ids::memory_id("memory_id", &req.memory_id)?;
    record_id(&req.memory_record_id)?;
    caller.require_memory(Action::Write, &req.memory_id)?;
    blocking(move || {
        let record = store.record(
            &req.memory_id,
            &req.memory_record_id,
            now_us(),
            visible(&caller),
        )?;
        store.delete_record(&record, &req.memory_id)
    })
    .await
}

pub async fn history(
    store: Arc<Store>,
    caller: Principal,
    req: pb::GetMemoryRecordHistoryRequest,
) -> Result<pb::GetMemoryRecordHistoryResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    record_id(&req.memory_record_id)?;
    caller.require_memory(Action::Read, &req.memory_id)?;
    let memory_id = req.memory_id.clone();
    let records = blocking(move || {
        store.record_history(
            &req.memory_id,
            &req.memory_record_id,
            now_us(),
            visible(&caller),
        )
    })
    .await?;
    Ok(pb::GetMemoryRecordHistoryResponse {
        memory_records: records
            .into_iter()
            .map(|r| convert::record(r, &memory_id))
            .collect(),
    })
}

pub async fn list_jobs(
    store: Arc<Store>,
    workers: ExtractionWorkers,
    caller: Principal,
    req: pb::ListMemoryExtractionJobsRequest,
) -> Result<pb::ListMemoryExtractionJobsResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Read, &req.memory_id)?;
    let filter = req.filter.unwrap_or_default();
    if !filter.actor_id.is_empty() {
        ids::actor_id("filter.actor_id", &filter.actor_id)?;
        caller.require_actor(Action::Read, &req.memory_id, &filter.actor_id)?;
    }
    if !filter.session_id.is_empty() {
        ids::session_id("filter.session_id", &filter.session_id)?;
    }
    let status = match pb::ExtractionJobStatus::try_from(filter.status) {
        Ok(pb::ExtractionJobStatus::Unspecified) => None,
        Ok(status) => Some(status),
        Err(_) => {
            return Err(ServiceError::invalid(
                "filter.status",
                "must be an EXTRACTION_JOB_STATUS_* value",
            ));
        }
    };
    let spec = JobFilter {
        strategy_id: filter.strategy_id,
        actor_id: filter.actor_id,
        session_id: filter.session_id,
        status,
    };
    let page_size = page::page_size("page_size", req.page_size)?;
    let memory_id = req.memory_id.clone();
    let (jobs, next_page_token) = blocking(move || {
        store.list_jobs(
            &memory_id,
            &spec,
            page_size,
            &req.page_token,
            |actor| caller.sees_actor(actor),
            |key| workers.is_running(key),
        )
    })
    .await?;
    Ok(pb::ListMemoryExtractionJobsResponse {
        jobs: jobs.into_iter().map(convert::job).collect(),
        next_page_token,
    })
}

pub async fn redrive(
    store: Arc<Store>,
    caller: Principal,
    req: pb::StartMemoryExtractionJobRequest,
) -> Result<pb::ExtractionJob> {
    ids::memory_id("memory_id", &req.memory_id)?;
    if req.job_id.is_empty() || req.job_id.len() > 64 {
        return Err(ServiceError::invalid("job_id", "must be 1-64 characters"));
    }
    caller.require_memory(Action::Write, &req.memory_id)?;
    blocking(move || {
        let (key, job) = store.find_job(&req.memory_id, &req.job_id)?;
        let (_, actor_id, _) = crate::store::keys::decode_job_key(&key)?;
        if !caller.sees_actor(actor_id) {
            return Err(ServiceError::not_found(format!(
                "extraction job {}",
                req.job_id
            )));
        }
        let actor_id = actor_id.to_string();
        let job = store.redrive_job(&key, &job, now_us())?;
        Ok(convert::job(crate::store::JobView {
            memory_id: req.memory_id,
            actor_id,
            job_id: req.job_id,
            job,
        }))
    })
    .await
}
