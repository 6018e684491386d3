//! The in-process worker pool: one scheduler task finds actors with due jobs and hands each
//! to a blocking worker (at most `concurrency` at once, one worker per actor at a time), which
//! runs that actor's jobs in creation order. A job in backoff holds back the later jobs of
//! its strategy for that actor, so per-actor order survives retries.

use super::batch::Batch;
use super::endpoints::LlmEndpoints;
use super::extractors::Extractors;
use super::job::{self, JobError, Step};
use super::namespaces::Namespaces;
use super::threads::ThreadPool;
use crate::error::ServiceError;
use crate::metrics::ExtractionMetrics;
use crate::store::Store;
use crate::time::now_us;
use memd_proto::v1::ExtractionJobStatus;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Jobs of one actor committed together at most.
const MAX_BATCH_JOBS: usize = 256;
/// How long the scheduler waits after a wake-up before it looks for due jobs.
const COALESCE: Duration = Duration::from_millis(10);
/// How long a batch stays open before it is committed (bounds the added lag).
const MAX_BATCH_TIME: Duration = Duration::from_millis(50);
use tokio::sync::Semaphore;

/// Settings of the worker pool.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Actors extracted at the same time (one thread each).
    pub concurrency: usize,
    /// Nice value of the worker threads (0-19): above zero, requests win the CPU whenever
    /// both want it, so extraction never slows the write path; it catches up when load drops.
    pub nice: i32,
    /// Attempts before a job is FAILED.
    pub max_attempts: u32,
    /// First retry delay; doubles with every attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The operator's LLM endpoints.
    pub llm: Arc<LlmEndpoints>,
    /// A directory of prompts replacing the built-in ones.
    pub prompts_dir: Option<std::path::PathBuf>,
}

/// Handle to the worker pool, shared with the gRPC side: which jobs run right now (for
/// listings and leases), the namespace locks and caches (which `CompleteExtractionJob` uses
/// too), and the retry settings.
#[derive(Clone)]
pub struct ExtractionWorkers {
    running: Arc<Mutex<HashSet<Vec<u8>>>>,
    namespaces: Arc<Namespaces>,
    options: Arc<WorkerOptions>,
}

impl std::fmt::Debug for ExtractionWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtractionWorkers").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ExtractionWorkers {
    pub fn new(options: WorkerOptions) -> Self {
        Self {
            running: Arc::default(),
            namespaces: Arc::default(),
            options: Arc::new(options),
        }
    }

    /// The namespace locks and consolidation caches.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    /// When a failed attempt runs again, or `None` when the job is out of attempts.
    pub fn retry_at(&self, attempts_after: u32, retryable: bool, now_us: u64) -> Option<u64> {
        let options = &self.options;
        (retryable && attempts_after < options.max_attempts).then(|| {
            let backoff = options
                .initial_backoff
                .saturating_mul(1 << attempts_after.saturating_sub(1).min(20))
                .min(options.max_backoff);
            now_us + backoff.as_micros() as u64
        })
    }

    /// Whether a worker holds this job now.
    pub fn is_running(&self, job_key: &[u8]) -> bool {
        lock(&self.running).contains(job_key)
    }

    /// Drains the queue until `stop` resolves; in-flight jobs finish first.
    pub async fn run(
        self,
        store: Arc<Store>,
        metrics: ExtractionMetrics,
        stop: impl Future<Output = ()>,
    ) {
        let options = (*self.options).clone();
        let ready = store.jobs_ready();
        let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let pool = match ThreadPool::start(options.concurrency.max(1), options.nice) {
            Ok(pool) => pool,
            Err(err) => {
                tracing::error!(%err, "cannot start extraction threads; extraction is off");
                return;
            }
        };
        let busy: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
        let extractors = match Extractors::new(options.llm.clone(), options.prompts_dir.as_deref())
        {
            Ok(extractors) => Arc::new(extractors),
            Err(err) => {
                tracing::error!(%err, "cannot read llm_prompts_dir; extraction is off");
                return;
            }
        };
        let namespaces = self.namespaces.clone();
        tokio::pin!(stop);
        loop {
            // Register interest before scanning, so a job queued mid-scan is not missed.
            let notified = ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let scan_store = store.clone();
            let now = now_us();
            let due = tokio::task::spawn_blocking(move || {
                Ok::<_, crate::error::ServiceError>((
                    scan_store.due_actors(now, 1024)?,
                    scan_store.next_due()?,
                ))
            })
            .await;
            let (actors, next_due) = match due {
                Ok(Ok(found)) => found,
                Ok(Err(err)) => {
                    tracing::error!(%err, "reading the extraction queue failed");
                    (Vec::new(), None)
                }
                Err(err) => {
                    tracing::error!(%err, "extraction scan task failed");
                    (Vec::new(), None)
                }
            };
            for actor in actors {
                if !lock(&busy).insert(actor.clone()) {
                    continue;
                }
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("never closed"),
                    () = &mut stop => return self.drain(&permits, options.concurrency).await,
                };
                let (store, extractors, namespaces, busy, running, ready, metrics, handle) = (
                    store.clone(),
                    extractors.clone(),
                    namespaces.clone(),
                    busy.clone(),
                    self.running.clone(),
                    ready.clone(),
                    metrics.clone(),
                    self.clone(),
                );
                pool.run(move || {
                    let worker = ActorWorker {
                        store: &store,
                        extractors: &extractors,
                        namespaces: &namespaces,
                        running: &running,
                        metrics: &metrics,
                        handle: &handle,
                    };
                    if let Err(err) = worker.run_actor(&actor) {
                        tracing::error!(%err, "extraction worker failed");
                    }
                    lock(&busy).remove(&actor);
                    drop(permit);
                    ready.notify_one();
                });
            }
            // Sleep until new work, the next retry, or a periodic re-check.
            let wait = next_due
                .map(|due| Duration::from_micros(due.saturating_sub(now_us())))
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(5), Duration::from_secs(1));
            tokio::select! {
                () = &mut notified => {
                    // Let a burst of appends queue up, so one scan and one batch serve many
                    // events instead of one each (adds at most COALESCE to the lag).
                    tokio::select! {
                        () = tokio::time::sleep(COALESCE) => {}
                        () = &mut stop => return self.drain(&permits, options.concurrency).await,
                    }
                }
                () = tokio::time::sleep(wait) => {}
                () = &mut stop => return self.drain(&permits, options.concurrency).await,
            }
        }
    }

    /// Waits for in-flight workers to finish their current actor.
    async fn drain(&self, permits: &Arc<Semaphore>, concurrency: usize) {
        let _all = permits.acquire_many(concurrency.max(1) as u32).await;
    }
}

struct ActorWorker<'a> {
    store: &'a Store,
    extractors: &'a Extractors,
    namespaces: &'a Namespaces,
    running: &'a Mutex<HashSet<Vec<u8>>>,
    metrics: &'a ExtractionMetrics,
    handle: &'a ExtractionWorkers,
}

impl<'a> ActorWorker<'a> {
    fn run_actor(&self, actor_prefix: &[u8]) -> crate::error::Result<()> {
        let mut held_back: HashSet<String> = HashSet::new();
        let mut batch = Batch::new(self.namespaces);
        let mut opened = Instant::now();
        for (job_key, job) in self.store.actor_jobs(actor_prefix)? {
            let now = now_us();
            // Failed jobs wait for a re-drive; self-managed ones for an external worker.
            if job.status == ExtractionJobStatus::Failed as i32 || job.due_us == 0 {
                continue;
            }
            // A job in backoff, or leased by an external worker, holds back the later jobs of
            // its strategy.
            if held_back.contains(&job.strategy_id) || job.due_us > now || job.lease_until_us > now
            {
                held_back.insert(job.strategy_id.clone());
                continue;
            }
            lock(self.running).insert(job_key.clone());
            loop {
                match job::run(self.store, self.extractors, &mut batch, &job_key, &job, now) {
                    Ok(Step::Added) => break,
                    Ok(Step::Busy) => {
                        // Another worker holds a namespace this job needs: commit what we
                        // have (releasing our locks), then wait for it with a fresh batch.
                        batch = self.flush(batch)?;
                        opened = Instant::now();
                    }
                    Err(err) => {
                        if matches!(err, JobError::Tainted(_)) {
                            // The batch holds part of this job: drop it; its other jobs are
                            // still queued and run again.
                            self.release(&batch);
                            batch = Batch::new(self.namespaces);
                        }
                        lock(self.running).remove(&job_key);
                        held_back.insert(job.strategy_id.clone());
                        self.failed(&job_key, &job, &err, now)?;
                        break;
                    }
                }
            }
            if batch.jobs.len() >= MAX_BATCH_JOBS || opened.elapsed() >= MAX_BATCH_TIME {
                batch = self.flush(batch)?;
                opened = Instant::now();
            }
        }
        self.flush(batch)?;
        Ok(())
    }

    /// Commits a batch (recording each job's lag) and returns a fresh one.
    fn flush(&self, batch: Batch<'a>) -> crate::error::Result<Batch<'a>> {
        let namespaces = self.namespaces;
        let jobs: Vec<(Vec<u8>, crate::store::codec::StoredJob)> = batch.jobs.clone();
        let changes = batch.changes.len();
        let result = batch.commit(self.store);
        let now = now_us();
        for (key, job) in &jobs {
            lock(self.running).remove(key);
            match &result {
                Ok(()) => self.metrics.succeeded(now.saturating_sub(job.create_us)),
                Err(err) => {
                    let err = JobError::Store(ServiceError::Internal(err.to_string()));
                    self.failed(key, job, &err, now)?;
                }
            }
        }
        self.metrics.llm_tokens(self.extractors.tokens_used());
        if result.is_ok() && !jobs.is_empty() {
            tracing::debug!(jobs = jobs.len(), changes, "extraction batch committed");
        }
        Ok(Batch::new(namespaces))
    }

    fn release(&self, batch: &Batch<'a>) {
        for (key, _) in &batch.jobs {
            lock(self.running).remove(key);
        }
    }

    fn failed(
        &self,
        job_key: &[u8],
        job: &crate::store::codec::StoredJob,
        err: &JobError,
        now: u64,
    ) -> crate::error::Result<()> {
        let retry_at = self.handle.retry_at(job.attempts + 1, err.retryable(), now);
        tracing::warn!(%err, attempts = job.attempts + 1, retry = retry_at.is_some(), "extraction job failed");
        self.metrics.outcome(if retry_at.is_some() {
            "retried"
        } else {
            "failed"
        });
        self.store
            .fail_attempt(job_key, job, &err.to_string(), retry_at)
    }
}
