//! Running one job: load its events, extract, consolidate with the namespace, commit.

use super::turns::turns;
use crate::error::ServiceError;
use crate::store::codec::{StoredJob, StoredRecord, StoredStrategy};
use crate::store::keys::{self, EventSeq};
use crate::store::{RecordChange, Store};
use memd_extractor::{
    Candidate, Decision, Existing, ExtractError, Extractor, Input, RecordKind, Slot, consolidate,
};
use memd_proto::v1::StrategyType;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

/// Events of the session before a job's first event that the extractor sees as context.
const CONTEXT_EVENTS: usize = 4;
/// Events a summary or episode is built from at most (the latest ones).
const SESSION_EVENTS: usize = 2000;
const NAMESPACE_STRIPES: usize = 256;

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// Records committed; `lag_us` from the job's creation.
    Done { lag_us: u64, changes: usize },
    /// The strategy no longer exists; the job was dropped.
    Dropped,
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Store(#[from] ServiceError),
}

impl JobError {
    /// Whether another attempt can help.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::Extract(ExtractError::Permanent(_)))
    }
}

/// Serialises consolidation per namespace, so two jobs never both add the same fact.
pub struct NamespaceLocks(Box<[Mutex<()>]>);

impl Default for NamespaceLocks {
    fn default() -> Self {
        Self((0..NAMESPACE_STRIPES).map(|_| Mutex::new(())).collect())
    }
}

impl NamespaceLocks {
    fn lock(&self, memory_id: &str, namespace: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (memory_id, namespace).hash(&mut hasher);
        let stripe = &self.0[(hasher.finish() as usize) % NAMESPACE_STRIPES];
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn kind(strategy: &StoredStrategy) -> Result<RecordKind, ExtractError> {
    match StrategyType::try_from(strategy.strategy_type) {
        Ok(StrategyType::Semantic) => Ok(RecordKind::Fact),
        Ok(StrategyType::UserPreference) => Ok(RecordKind::Preference),
        Ok(StrategyType::Summary) => Ok(RecordKind::Summary),
        Ok(StrategyType::Episodic) => Ok(RecordKind::Episode),
        _ => Err(ExtractError::Permanent(format!(
            "strategy {} is {}: this server has no extractor for it (CUSTOM needs an LLM \
             extractor, SELF_MANAGED an external worker)",
            strategy.strategy_id,
            StrategyType::try_from(strategy.strategy_type)
                .map_or("an unknown type", |t| t.as_str_name())
        ))),
    }
}

/// The namespace a strategy writes to for an actor and session.
pub fn namespace(strategy: &StoredStrategy, actor_id: &str, session_id: &str) -> String {
    strategy
        .namespace_template
        .replace("{actorId}", actor_id)
        .replace("{sessionId}", session_id)
        .replace("{memoryStrategyId}", &strategy.strategy_id)
}

fn slot_string(slot: &Option<Slot>) -> String {
    match slot {
        Some(Slot::Running(key)) => format!("running:{key}"),
        Some(Slot::Exclusive(key)) => format!("exclusive:{key}"),
        None => String::new(),
    }
}

fn parse_slot(text: &str) -> Option<Slot> {
    if let Some(key) = text.strip_prefix("running:") {
        Some(Slot::Running(key.to_string()))
    } else {
        text.strip_prefix("exclusive:")
            .map(|key| Slot::Exclusive(key.to_string()))
    }
}

/// Record ids are derived from the job and the candidate's position, so a re-run after a
/// crash writes the same ids (and the job's removal in the same batch stops a second run).
fn record_id(job_key: &[u8], strategy_id: &str, index: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(job_key);
    hasher.update([0]);
    hasher.update(strategy_id.as_bytes());
    hasher.update(index.to_be_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Runs one job to completion (or error).
pub fn run(
    store: &Store,
    extractor: &dyn Extractor,
    locks: &NamespaceLocks,
    job_key: &[u8],
    job: &StoredJob,
    now_us: u64,
) -> Result<Outcome, JobError> {
    let (memory_id, actor_id, _) = keys::decode_job_key(job_key)?;
    let memory = store.memory(memory_id)?;
    let Some(strategy) = memory
        .strategies
        .iter()
        .find(|s| s.strategy_id == job.strategy_id)
    else {
        store.drop_job(job_key, job)?;
        return Ok(Outcome::Dropped);
    };
    let kind = kind(strategy)?;
    let session_key = keys::session_key(memory_id, actor_id, &job.session_id);
    let seqs: Vec<EventSeq> = job
        .event_seqs
        .iter()
        .filter_map(|s| EventSeq::from_bytes(s))
        .collect();
    let (events, context) = match kind {
        RecordKind::Fact | RecordKind::Preference => {
            let events = store.events_at(&session_key, &seqs)?;
            let context = match seqs.iter().min() {
                Some(&first) => store.session_events(&session_key, Some(first), CONTEXT_EVENTS)?,
                None => Vec::new(),
            };
            (events, context)
        }
        RecordKind::Summary | RecordKind::Episode => (
            store.session_events(&session_key, None, SESSION_EVENTS)?,
            Vec::new(),
        ),
    };
    let turns_now = turns(&events, actor_id);
    let context = turns(&context, actor_id);
    let candidates = if turns_now.is_empty() {
        Vec::new()
    } else {
        extractor.extract(&Input {
            kind,
            turns: &turns_now,
            context: &context,
            session_ended: job.session_ended,
        })?
    };

    let namespace = namespace(strategy, actor_id, &job.session_id);
    let _guard = locks.lock(memory_id, &namespace);
    let mut live = store.namespace_records(memory_id, &namespace, now_us)?;
    let mut changes = Vec::new();
    let expire_us = match strategy.record_expiry_days {
        0 => 0,
        days => now_us + u64::from(days) * 86_400 * 1_000_000,
    };
    for (index, candidate) in candidates.into_iter().enumerate() {
        let slots: Vec<Option<Slot>> = live.iter().map(|r| parse_slot(&r.slot)).collect();
        let existing: Vec<Existing<'_>> = live
            .iter()
            .zip(&slots)
            .map(|(r, slot)| Existing {
                id: &r.record_id,
                text: &r.text,
                slot: slot.as_ref(),
            })
            .collect();
        let decision = consolidate(&candidate, &existing);
        let fresh = |id: String, candidate: &Candidate| StoredRecord {
            record_id: id,
            namespace: namespace.clone(),
            strategy_id: strategy.strategy_id.clone(),
            text: candidate.text.clone(),
            metadata: Default::default(),
            create_us: now_us,
            update_us: now_us,
            valid_from_us: candidate.valid_from.timestamp_micros().max(0) as u64,
            invalid_from_us: 0,
            source_event_ids: candidate.source_event_ids.clone(),
            actor_id: actor_id.to_string(),
            session_id: job.session_id.clone(),
            extractor: extractor.name().to_string(),
            extractor_version: extractor.version().to_string(),
            version: 1,
            superseded_by: String::new(),
            supersedes: Vec::new(),
            slot: slot_string(&candidate.slot),
            expire_us,
        };
        let position = |id: &str| live.iter().position(|r| r.record_id == id);
        match decision {
            Decision::New => {
                let record = fresh(record_id(job_key, &strategy.strategy_id, index), &candidate);
                live.push(record.clone());
                changes.push(RecordChange::Create(record));
            }
            Decision::Duplicate(id) => {
                // Same statement again: only its provenance grows.
                let Some(at) = position(&id) else { continue };
                let mut new = live[at].clone();
                let before = new.source_event_ids.len();
                for source in &candidate.source_event_ids {
                    if !new.source_event_ids.contains(source) {
                        new.source_event_ids.push(source.clone());
                    }
                }
                if new.source_event_ids.len() != before {
                    live[at] = new.clone();
                    changes.push(RecordChange::Provenance(new));
                }
            }
            Decision::Refine(id) => {
                let Some(at) = position(&id) else { continue };
                let old = live[at].clone();
                let mut new = old.clone();
                new.text = candidate.text.clone();
                new.update_us = now_us;
                new.version += 1;
                new.extractor = extractor.name().to_string();
                new.extractor_version = extractor.version().to_string();
                for source in &candidate.source_event_ids {
                    if !new.source_event_ids.contains(source) {
                        new.source_event_ids.push(source.clone());
                    }
                }
                new.expire_us = expire_us;
                live[at] = new.clone();
                changes.push(RecordChange::Update { old, new });
            }
            Decision::Supersede(id) => {
                let Some(at) = position(&id) else { continue };
                let old = live.remove(at);
                let mut new = fresh(record_id(job_key, &strategy.strategy_id, index), &candidate);
                new.supersedes.push(old.record_id.clone());
                live.push(new.clone());
                changes.push(RecordChange::Supersede { old, new });
            }
        }
    }
    let count = changes.len();
    store.complete_job(job_key, job, &changes)?;
    Ok(Outcome::Done {
        lag_us: now_us.saturating_sub(job.create_us),
        changes: count,
    })
}
