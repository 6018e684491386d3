//! The extraction outbox: every event that opts in is staged per strategy in its session's
//! bookkeeping, and a strategy's trigger turns the staged events into a job. Jobs are written
//! in the same batch as the event or session transition that fired them, so an acknowledged
//! event is never lost to extraction and never queued twice.

use super::Store;
use super::codec::{
    self, StoredContent, StoredJob, StoredMemory, StoredPayload, StoredPending, StoredSession,
    StoredSessionPolicy, StoredStrategy, StoredTriggers,
};
use super::keys::{self, EventSeq};
use crate::lifecycle;
use memd_proto::v1::{ExtractionJobStatus, StrategyType};
use std::sync::atomic::Ordering;

/// Staged events after which a job is cut whatever the triggers say, so a job stays small.
pub const MAX_PENDING: usize = 100;

/// The triggers in force for a strategy: its own, or its type's defaults.
pub fn triggers(strategy: &StoredStrategy) -> StoredTriggers {
    // CUSTOM strategies extract like the type they customise.
    let effective_type = if strategy.strategy_type == StrategyType::Custom as i32 {
        strategy.base_type
    } else {
        strategy.strategy_type
    };
    strategy
        .triggers
        .unwrap_or_else(|| default_triggers(effective_type))
}

/// Defaults per strategy type (documented on `memd.v1.ExtractionTriggers`).
pub fn default_triggers(strategy_type: i32) -> StoredTriggers {
    let every = |n| StoredTriggers {
        message_count: n,
        token_count: 0,
        idle_seconds: 0,
        on_session_end: false,
    };
    match StrategyType::try_from(strategy_type) {
        Ok(StrategyType::Summary) => StoredTriggers {
            idle_seconds: 60,
            on_session_end: true,
            ..every(10)
        },
        Ok(StrategyType::Episodic) => StoredTriggers {
            on_session_end: true,
            ..every(0)
        },
        _ => every(1),
    }
}

/// Whether jobs of this strategy are run by memd's own workers (they are queued) rather than
/// by an external worker (`SELF_MANAGED`).
pub fn runs_in_process(strategy_type: i32) -> bool {
    strategy_type != StrategyType::SelfManaged as i32
}

/// Estimated tokens of a text (about four characters each).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Estimated tokens of an event's extractable content (conversation turns and JSON), or
/// `None` when it has none (blobs only).
pub fn extractable_tokens(payload: &[StoredPayload]) -> Option<u64> {
    let mut tokens = None;
    for item in payload {
        let text = match &item.content {
            Some(StoredContent::Conversational(turn)) => &turn.text,
            Some(StoredContent::Json(json)) => json,
            _ => continue,
        };
        *tokens.get_or_insert(0) += estimate_tokens(text);
    }
    tokens
}

/// A job to write, with its queue entry.
pub struct NewJob {
    pub job_key: Vec<u8>,
    pub value: Vec<u8>,
    pub queue_key: Option<Vec<u8>>,
}

/// Why staged events become a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// The session has been quiet for a strategy's `idle_seconds`.
    Idle,
    /// The session terminated: everything staged goes, and end-of-session strategies run.
    SessionEnd,
}

impl Store {
    fn new_job_id(&self) -> String {
        format!("{:016x}", self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    fn make_job(
        &self,
        ids: (&str, &str, &str),
        strategy: &StoredStrategy,
        event_seqs: Vec<Vec<u8>>,
        trigger: &str,
        session_ended: bool,
        now_us: u64,
    ) -> NewJob {
        let (memory_id, actor_id, session_id) = ids;
        let job_key = keys::job_key(memory_id, actor_id, &self.new_job_id());
        let queued = runs_in_process(strategy.strategy_type);
        let job = StoredJob {
            strategy_id: strategy.strategy_id.clone(),
            session_id: session_id.to_string(),
            event_seqs,
            session_ended,
            trigger: trigger.to_string(),
            status: ExtractionJobStatus::Pending as i32,
            attempts: 0,
            failure_reason: String::new(),
            create_us: now_us,
            due_us: if queued { now_us } else { 0 },
            ..Default::default()
        };
        NewJob {
            queue_key: queued.then(|| keys::queue_key(now_us, &job_key)),
            value: codec::encode(&job),
            job_key,
        }
    }

    /// Stages a new event for every strategy of `memory` and returns the jobs whose message
    /// or token triggers it fires.
    pub(super) fn stage_event(
        &self,
        ids: (&str, &str, &str),
        memory: &StoredMemory,
        session: &mut StoredSession,
        seq: EventSeq,
        tokens: u64,
        now_us: u64,
    ) -> Vec<NewJob> {
        let mut jobs = Vec::new();
        for strategy in &memory.strategies {
            let index = match session
                .pending
                .iter()
                .position(|p| p.strategy_id == strategy.strategy_id)
            {
                Some(i) => i,
                None => {
                    session.pending.push(StoredPending {
                        strategy_id: strategy.strategy_id.clone(),
                        ..Default::default()
                    });
                    session.pending.len() - 1
                }
            };
            let pending = &mut session.pending[index];
            pending.event_seqs.push(seq.to_bytes().to_vec());
            pending.tokens += tokens;
            let t = triggers(strategy);
            let count = pending.event_seqs.len();
            let trigger = if t.message_count > 0 && count >= t.message_count as usize {
                Some("messages")
            } else if t.token_count > 0 && pending.tokens >= u64::from(t.token_count) {
                Some("tokens")
            } else if count >= MAX_PENDING {
                Some("messages")
            } else {
                None
            };
            if let Some(trigger) = trigger {
                let seqs = std::mem::take(&mut pending.event_seqs);
                pending.tokens = 0;
                jobs.push(self.make_job(ids, strategy, seqs, trigger, false, now_us));
            }
        }
        // Also forget what was staged for strategies the memory no longer has.
        session.pending.retain(|p| {
            !p.event_seqs.is_empty()
                && memory
                    .strategies
                    .iter()
                    .any(|s| s.strategy_id == p.strategy_id)
        });
        jobs
    }

    /// Turns staged events into jobs: those of strategies whose idle trigger is due, or, at
    /// session end, all of them plus a job for every end-of-session strategy.
    pub(super) fn flush_session(
        &self,
        ids: (&str, &str, &str),
        memory: &StoredMemory,
        session: &mut StoredSession,
        flush: Flush,
        now_us: u64,
    ) -> Vec<NewJob> {
        let mut jobs = Vec::new();
        for strategy in &memory.strategies {
            let t = triggers(strategy);
            let pending = session
                .pending
                .iter_mut()
                .find(|p| p.strategy_id == strategy.strategy_id);
            let staged = pending.as_ref().is_some_and(|p| !p.event_seqs.is_empty());
            let fire = match flush {
                Flush::SessionEnd => staged || t.on_session_end,
                Flush::Idle => {
                    staged
                        && t.idle_seconds > 0
                        && now_us >= session.last_event_us + u64::from(t.idle_seconds) * 1_000_000
                }
            };
            if fire {
                let seqs = pending
                    .map(|p| std::mem::take(&mut p.event_seqs))
                    .unwrap_or_default();
                let (trigger, ended) = match flush {
                    Flush::SessionEnd => ("session_end", true),
                    Flush::Idle => ("idle", false),
                };
                jobs.push(self.make_job(ids, strategy, seqs, trigger, ended, now_us));
            }
        }
        session.pending.retain(|p| !p.event_seqs.is_empty());
        jobs
    }
}

/// The session's next timer: its lifecycle deadline or the earliest idle trigger of a
/// strategy with staged events, whichever comes first.
pub fn timer_deadline(
    session: &StoredSession,
    policy: &StoredSessionPolicy,
    memory: &StoredMemory,
) -> Option<u64> {
    let idle = session
        .pending
        .iter()
        .filter(|p| !p.event_seqs.is_empty())
        .filter_map(|p| {
            let strategy = memory
                .strategies
                .iter()
                .find(|s| s.strategy_id == p.strategy_id)?;
            let seconds = triggers(strategy).idle_seconds;
            (seconds > 0).then(|| session.last_event_us + u64::from(seconds) * 1_000_000)
        })
        .min();
    match (lifecycle::next_deadline(session, policy), idle) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
