//! Extraction jobs: what the workers run (per actor, in creation order), retries with
//! backoff, failure, listing and re-driving.

use super::codec::{self, StoredEvent, StoredJob};
use super::keys::{self, EventSeq, cf};
use super::{Store, page};
use crate::error::{Result, ServiceError};
use memd_proto::v1::ExtractionJobStatus;
use rocksdb::WriteBatch;

/// A job as listings return it.
#[derive(Debug, Clone)]
pub struct JobView {
    pub memory_id: String,
    pub actor_id: String,
    pub job_id: String,
    pub job: StoredJob,
}

/// Which jobs a listing returns (empty fields match everything).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub strategy_id: String,
    pub actor_id: String,
    pub session_id: String,
    /// `None`: every status.
    pub status: Option<ExtractionJobStatus>,
}

/// An event loaded for extraction.
#[derive(Debug, Clone)]
pub struct LoadedEvent {
    pub seq: EventSeq,
    pub event: StoredEvent,
}

impl Store {
    /// Actor prefixes with a queue entry due at `now_us`, in due order, without repeats.
    pub fn due_actors(&self, now_us: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let end = keys::queue_key(now_us.saturating_add(1), &[]);
        let mut actors: Vec<Vec<u8>> = Vec::new();
        for item in self.range(cf::QUEUE, &[], &end, false) {
            let (key, _) = item?;
            let (_, job_key) = keys::decode_queue_key(&key)?;
            let actor = keys::actor_prefix_of(job_key).to_vec();
            if !actors.contains(&actor) {
                actors.push(actor);
                if actors.len() == limit {
                    break;
                }
            }
        }
        Ok(actors)
    }

    /// The earliest due time in the queue.
    pub fn next_due(&self) -> Result<Option<u64>> {
        let first = self.range(cf::QUEUE, &[], &[0xff; 9], false).next();
        first
            .transpose()?
            .map(|(key, _)| keys::decode_queue_key(&key).map(|(due, _)| due))
            .transpose()
    }

    /// The jobs of one actor (queued or failed), in creation order. A queue entry whose job
    /// is gone (the actor was erased) is dropped here.
    pub fn actor_jobs(&self, actor_prefix: &[u8]) -> Result<Vec<(Vec<u8>, StoredJob)>> {
        let mut jobs = Vec::new();
        for item in self.range(
            cf::JOBS,
            actor_prefix,
            &keys::prefix_end(actor_prefix),
            false,
        ) {
            let (key, value) = item?;
            jobs.push((key.to_vec(), codec::decode::<StoredJob>(&value)?));
        }
        if jobs.is_empty() {
            // Only stale queue entries point here.
            let mut batch = WriteBatch::default();
            self.unqueue_prefix(&mut batch, actor_prefix)?;
            self.commit(batch)?;
        }
        Ok(jobs)
    }

    /// Adds to `batch` the removal of every queue entry whose job key starts with `prefix`
    /// (an actor's or a memory's): queue keys lead with the due time, so this is a scan.
    pub(super) fn unqueue_prefix(&self, batch: &mut WriteBatch, prefix: &[u8]) -> Result<()> {
        for item in self.range(cf::QUEUE, &[], &[0xff; 9], false) {
            let (key, _) = item?;
            if keys::decode_queue_key(&key)?.1.starts_with(prefix) {
                batch.delete_cf(self.cf(cf::QUEUE), &key);
            }
        }
        Ok(())
    }

    /// Events of a session by position (missing ones, deleted or expired, are skipped).
    pub fn events_at(&self, session_key: &[u8], seqs: &[EventSeq]) -> Result<Vec<LoadedEvent>> {
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(event) =
                self.get_decoded::<StoredEvent>(cf::EVENTS, &keys::event_key(session_key, seq))?
            {
                out.push(LoadedEvent { seq, event });
            }
        }
        Ok(out)
    }

    /// Up to `limit` events of a session before `before` (all of them when `None`), oldest
    /// first: the context of a job, or a whole session for summaries.
    pub fn session_events(
        &self,
        session_key: &[u8],
        before: Option<EventSeq>,
        limit: usize,
    ) -> Result<Vec<LoadedEvent>> {
        let end = match before {
            Some(seq) => keys::event_key(session_key, seq),
            None => keys::prefix_end(session_key),
        };
        let start = keys::event_key(session_key, EventSeq { ts_us: 0, seq: 0 });
        let mut out = Vec::new();
        for item in self.range(cf::EVENTS, &start, &end, true).take(limit) {
            let (key, value) = item?;
            let seq = EventSeq::from_bytes(&key[session_key.len()..])
                .ok_or_else(|| ServiceError::DataLoss("event key with a bad sequence".into()))?;
            out.push(LoadedEvent {
                seq,
                event: codec::decode(&value)?,
            });
        }
        out.reverse();
        Ok(out)
    }

    /// Records a failed attempt: the job runs again at `retry_at_us`, or, with `None`, is
    /// FAILED and leaves the queue until it is re-driven.
    pub fn fail_attempt(
        &self,
        job_key: &[u8],
        job: &StoredJob,
        reason: &str,
        retry_at_us: Option<u64>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        // Jobs of in-process strategies live in the queue; external ones (leased) do not.
        let queued = job.due_us != 0;
        if queued {
            batch.delete_cf(self.cf(cf::QUEUE), keys::queue_key(job.due_us, job_key));
        }
        let mut job = job.clone();
        job.attempts += 1;
        job.failure_reason = reason.chars().take(1000).collect();
        job.lease_token.clear();
        job.lease_until_us = 0;
        match retry_at_us {
            Some(due) if queued => {
                job.due_us = due;
                batch.put_cf(self.cf(cf::QUEUE), keys::queue_key(due, job_key), []);
            }
            Some(due) => job.not_before_us = due,
            None => {
                job.due_us = 0;
                job.status = ExtractionJobStatus::Failed as i32;
            }
        }
        // Only if the job still exists (its actor may have been erased meanwhile).
        if self.get(cf::JOBS, job_key)?.is_some() {
            batch.put_cf(self.cf(cf::JOBS), job_key, codec::encode(&job));
            self.commit(batch)?;
        }
        Ok(())
    }

    /// One page of a memory's jobs that `filter` and `visible` (by actor) admit, in
    /// (actor, creation) order. `running` tells which jobs a worker holds right now.
    pub fn list_jobs(
        &self,
        memory_id: &str,
        filter: &JobFilter,
        page_size: usize,
        page_token: &str,
        visible: impl Fn(&str) -> bool,
        running: impl Fn(&[u8]) -> bool,
    ) -> Result<(Vec<JobView>, String)> {
        self.memory(memory_id)?;
        let prefix = if filter.actor_id.is_empty() {
            keys::memory_prefix(memory_id)
        } else {
            keys::actor_prefix(memory_id, &filter.actor_id)
        };
        let scope = [b"jobs\0".as_slice(), &prefix].concat();
        let start = match page::decode("page_token", page_token, &scope)? {
            Some(cursor) => [cursor.as_slice(), &[0]].concat(),
            None => prefix.clone(),
        };
        let mut out: Vec<JobView> = Vec::new();
        for item in self.range(cf::JOBS, &start, &keys::prefix_end(&prefix), false) {
            let (key, value) = item?;
            let (_, actor_id, job_id) = keys::decode_job_key(&key)?;
            if !visible(actor_id) {
                continue;
            }
            let mut job: StoredJob = codec::decode(&value)?;
            if running(&key) {
                job.status = ExtractionJobStatus::Running as i32;
            }
            let matches = (filter.strategy_id.is_empty() || job.strategy_id == filter.strategy_id)
                && (filter.session_id.is_empty() || job.session_id == filter.session_id)
                && filter.status.is_none_or(|s| s as i32 == job.status);
            if !matches {
                continue;
            }
            if out.len() == page_size {
                let last = out.last().expect("page_size >= 1");
                let cursor = keys::job_key(memory_id, &last.actor_id, &last.job_id);
                return Ok((out, page::encode(&scope, &cursor)));
            }
            out.push(JobView {
                memory_id: memory_id.to_string(),
                actor_id: actor_id.to_string(),
                job_id: job_id.to_string(),
                job,
            });
        }
        Ok((out, String::new()))
    }

    /// Finds a job of a memory by id (jobs are few: completed ones are removed).
    pub fn find_job(&self, memory_id: &str, job_id: &str) -> Result<(Vec<u8>, StoredJob)> {
        self.memory(memory_id)?;
        let prefix = keys::memory_prefix(memory_id);
        for item in self.range(cf::JOBS, &prefix, &keys::prefix_end(&prefix), false) {
            let (key, value) = item?;
            if keys::decode_job_key(&key)?.2 == job_id {
                return Ok((key.to_vec(), codec::decode(&value)?));
            }
        }
        Err(ServiceError::not_found(format!("extraction job {job_id}")))
    }

    /// Re-drives a FAILED job: pending again, attempts reset, due now.
    pub fn redrive_job(&self, job_key: &[u8], job: &StoredJob, now_us: u64) -> Result<StoredJob> {
        if job.status != ExtractionJobStatus::Failed as i32 {
            return Err(ServiceError::FailedPrecondition(
                "only FAILED jobs can be re-driven; this one is still pending".into(),
            ));
        }
        let (memory_id, _, _) = keys::decode_job_key(job_key)?;
        let in_process = self
            .memory(memory_id)?
            .strategies
            .iter()
            .find(|s| s.strategy_id == job.strategy_id)
            .is_none_or(|s| super::outbox::runs_in_process(s.strategy_type));
        let mut job = job.clone();
        job.status = ExtractionJobStatus::Pending as i32;
        job.attempts = 0;
        job.trigger = "redrive".into();
        job.not_before_us = now_us;
        let mut batch = WriteBatch::default();
        if in_process {
            job.due_us = now_us;
            batch.put_cf(self.cf(cf::QUEUE), keys::queue_key(now_us, job_key), []);
        }
        batch.put_cf(self.cf(cf::JOBS), job_key, codec::encode(&job));
        self.commit(batch)?;
        self.jobs_ready.notify_one();
        Ok(job)
    }
}

/// A job handed to an external worker.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job_key: Vec<u8>,
    pub job: StoredJob,
}

impl Store {
    /// Leases up to `max` jobs of a memory to an external worker: for each actor and
    /// strategy only its oldest unfinished job, and only when it is pending, not in backoff,
    /// not running in-process (`running`) and not leased. A job whose lease ran out counts
    /// that as a failed attempt; out of attempts, it is FAILED instead of leased again.
    #[allow(clippy::too_many_arguments)]
    pub fn lease_jobs(
        &self,
        memory_id: &str,
        eligible: impl Fn(&str, &StoredJob) -> bool,
        running: impl Fn(&[u8]) -> bool,
        max: usize,
        lease_us: u64,
        max_attempts: u32,
        now_us: u64,
    ) -> Result<Vec<Lease>> {
        self.memory(memory_id)?;
        let _leasing = self.lease_lock.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = keys::memory_prefix(memory_id);
        let mut seen = std::collections::HashSet::new();
        let mut batch = WriteBatch::default();
        let mut leases = Vec::new();
        for item in self.range(cf::JOBS, &prefix, &keys::prefix_end(&prefix), false) {
            if leases.len() >= max {
                break;
            }
            let (key, value) = item?;
            let (_, actor_id, job_id) = keys::decode_job_key(&key)?;
            let mut job: StoredJob = codec::decode(&value)?;
            if job.status == ExtractionJobStatus::Failed as i32 {
                continue;
            }
            // Only the first unfinished job of each actor and strategy may run.
            if !seen.insert((actor_id.to_string(), job.strategy_id.clone())) {
                continue;
            }
            let due = job.not_before_us.max(job.due_us);
            if due > now_us
                || job.lease_until_us > now_us
                || running(&key)
                || !eligible(actor_id, &job)
            {
                continue;
            }
            if !job.lease_token.is_empty() {
                job.attempts += 1;
                job.failure_reason = "the worker's lease ran out".into();
                if job.attempts >= max_attempts {
                    job.status = ExtractionJobStatus::Failed as i32;
                    job.lease_token.clear();
                    job.lease_until_us = 0;
                    if job.due_us != 0 {
                        batch.delete_cf(self.cf(cf::QUEUE), keys::queue_key(job.due_us, &key));
                        job.due_us = 0;
                    }
                    batch.put_cf(self.cf(cf::JOBS), &key, codec::encode(&job));
                    // Failed jobs do not hold back the actor's next one.
                    seen.remove(&(actor_id.to_string(), job.strategy_id.clone()));
                    continue;
                }
            }
            let nonce: [u8; 8] = rand::random();
            job.lease_token = format!("{job_id}.{}", hex::encode(nonce));
            job.lease_until_us = now_us + lease_us;
            batch.put_cf(self.cf(cf::JOBS), &key, codec::encode(&job));
            leases.push(Lease {
                job_key: key.to_vec(),
                job,
            });
        }
        self.commit(batch)?;
        Ok(leases)
    }

    /// Hands leases back unused (the worker never saw them): each job whose token still holds
    /// it can be leased again at once, with no attempt counted.
    pub fn give_back_leases(&self, memory_id: &str, tokens: &[String]) -> Result<()> {
        let _leasing = self.lease_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        for token in tokens {
            if let Some(Lease { job_key, mut job }) = self.leased_job(memory_id, token)? {
                job.lease_token.clear();
                job.lease_until_us = 0;
                batch.put_cf(self.cf(cf::JOBS), &job_key, codec::encode(&job));
            }
        }
        self.commit(batch)
    }

    /// The job a lease token names, if the token still holds it.
    pub fn leased_job(&self, memory_id: &str, token: &str) -> Result<Option<Lease>> {
        let Some((job_id, _)) = token.split_once('.') else {
            return Ok(None);
        };
        match self.find_job(memory_id, job_id) {
            Ok((job_key, job)) if job.lease_token == token => Ok(Some(Lease { job_key, job })),
            Ok(_) | Err(ServiceError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Extends a lease; `false` when the token no longer holds its job or `allowed` (given
    /// the job's key and the job) refuses the caller, who then learns nothing more.
    pub fn extend_lease(
        &self,
        memory_id: &str,
        token: &str,
        lease_us: u64,
        now_us: u64,
        allowed: impl Fn(&[u8], &StoredJob) -> bool,
    ) -> Result<bool> {
        let _leasing = self.lease_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Lease { job_key, mut job }) = self.leased_job(memory_id, token)? else {
            return Ok(false);
        };
        if !allowed(&job_key, &job) {
            return Ok(false);
        }
        // An expired lease nobody took over yet is still the worker's to extend.
        job.lease_until_us = now_us + lease_us;
        self.space.track(self.db.put_cf_opt(
            self.cf(cf::JOBS),
            &job_key,
            codec::encode(&job),
            &self.write_opts,
        ))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{
        StoredContent, StoredMemory, StoredPayload, StoredStrategy, StoredTurn,
    };
    use super::super::test_support::temp_store;
    use super::super::{NewEvent, Store};
    use super::*;
    use memd_proto::v1::StrategyType;

    const SECOND: u64 = 1_000_000;

    fn store_with_self_managed() -> (tempfile::TempDir, Store, u64) {
        let (dir, store) = temp_store();
        let now = crate::time::now_us();
        let memory = StoredMemory {
            memory_id: "m-1".into(),
            name: "m".into(),
            strategies: vec![StoredStrategy {
                strategy_id: "ext".into(),
                strategy_type: StrategyType::SelfManaged as i32,
                namespace_template: "/ext/{actorId}".into(),
                ..Default::default()
            }],
            session_policy: Some(crate::lifecycle::effective_policy(None).unwrap()),
            create_us: now,
            update_us: now,
            ..Default::default()
        };
        store.create_memory(memory, "", vec![]).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for text in ["first", "second"] {
            let event = NewEvent {
                memory_id: "m-1".into(),
                actor_id: "a".into(),
                session_id: "s".into(),
                event_ts_us: None,
                payload: vec![StoredPayload {
                    content: Some(StoredContent::Conversational(StoredTurn {
                        role: 1,
                        text: text.into(),
                        name: String::new(),
                    })),
                }],
                branch: String::new(),
                branch_root: None,
                metadata: Default::default(),
                client_token: String::new(),
                request_hash: vec![],
                extract: true,
            };
            runtime.block_on(store.append_event(event, now)).unwrap();
        }
        (dir, store, now)
    }

    fn lease(store: &Store, now: u64) -> Vec<Lease> {
        store
            .lease_jobs("m-1", |_, _| true, |_| false, 10, 30 * SECOND, 3, now)
            .unwrap()
    }

    #[test]
    fn leases_follow_order_expire_and_run_out_of_attempts() {
        let (_dir, store, now) = store_with_self_managed();
        // Two jobs of one actor and strategy: only the first is leasable.
        let first = lease(&store, now);
        assert_eq!(first.len(), 1);
        let token = first[0].job.lease_token.clone();
        assert!(lease(&store, now + SECOND).is_empty(), "held by its lease");
        assert!(
            store
                .extend_lease("m-1", &token, 30 * SECOND, now + 20 * SECOND, |_, _| true)
                .unwrap()
        );

        // Expired (after the extension): leased again, counting a failed attempt.
        let again = lease(&store, now + 51 * SECOND);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].job_key, first[0].job_key);
        assert_eq!(again[0].job.attempts, 1);
        assert_ne!(again[0].job.lease_token, token);
        assert!(
            !store
                .extend_lease("m-1", &token, 30 * SECOND, now, |_, _| true)
                .unwrap(),
            "old token lost"
        );
        assert!(store.leased_job("m-1", &token).unwrap().is_none());

        // Out of attempts (3): FAILED, and the actor's next job becomes leasable.
        assert_eq!(lease(&store, now + 82 * SECOND)[0].job.attempts, 2);
        let next = lease(&store, now + 113 * SECOND);
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].job_key, first[0].job_key);
        let (_, failed) = store
            .find_job("m-1", keys::decode_job_key(&first[0].job_key).unwrap().2)
            .unwrap();
        assert_eq!(failed.status, ExtractionJobStatus::Failed as i32);
        assert_eq!(failed.failure_reason, "the worker's lease ran out");
    }
}
