//! Session bookkeeping: reads with the derived state, and the sweep that announces
//! transitions durably (a transition is committed before it is broadcast, and its timer is
//! only deleted in the same batch, so a crash re-announces rather than forgets).

use super::codec::{self, StoredChange, StoredSession};
use super::keys::{self, cf};
use super::outbox::{Flush, timer_deadline};
use super::{Store, page};
use crate::error::{Result, ServiceError};
use crate::lifecycle;
use memd_proto::v1::SessionState;
use rocksdb::WriteBatch;

/// A session as reads return it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub state: SessionState,
    pub create_us: u64,
    pub last_event_us: u64,
    /// Zero if never pinged.
    pub last_ping_us: u64,
    pub event_count: u64,
    pub terminate_us: u64,
}

/// A change of a session's state, broadcast after it is committed. Subscribers (e.g.
/// extraction triggers) see every transition to TERMINATED at least once, also across
/// restarts; IDLE may be skipped when an event arrives before the sweeper runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionTransition {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    /// `Unspecified` for a session's first event.
    pub from: SessionState,
    pub to: SessionState,
    /// Server time of the transition, in microseconds.
    pub at_us: u64,
}

impl Store {
    pub(super) fn broadcast(&self, transition: SessionTransition) {
        // No subscribers is fine: transitions are also observable by reading sessions.
        let _ = self.transitions.send(transition);
    }

    /// Reads a session with its state at `now_us`.
    pub fn session(
        &self,
        memory_id: &str,
        actor_id: &str,
        session_id: &str,
        now_us: u64,
    ) -> Result<SessionView> {
        let memory = self.memory(memory_id)?;
        let key = keys::session_key(memory_id, actor_id, session_id);
        let stored: StoredSession = self.get_decoded(cf::SESSIONS, &key)?.ok_or_else(|| {
            ServiceError::not_found(format!("session {session_id} of actor {actor_id}"))
        })?;
        let policy = memory.session_policy.unwrap_or_default();
        Ok(view(
            memory_id, actor_id, session_id, &stored, &policy, now_us,
        ))
    }

    /// One page of an actor's sessions, in session id order.
    pub fn list_sessions(
        &self,
        memory_id: &str,
        actor_id: &str,
        page_size: usize,
        page_token: &str,
        now_us: u64,
    ) -> Result<(Vec<SessionView>, String)> {
        let memory = self.memory(memory_id)?;
        let prefix = keys::actor_prefix(memory_id, actor_id);
        if self.get(cf::ACTORS, &prefix)?.is_none() {
            return Err(ServiceError::not_found(format!("actor {actor_id}")));
        }
        let scope = [b"sessions\0".as_slice(), &prefix].concat();
        let start = match page::decode("page_token", page_token, &scope)? {
            // Resume just after the last key returned.
            Some(cursor) => [prefix.as_slice(), &cursor, &[0, 0]].concat(),
            None => prefix.clone(),
        };
        let policy = memory.session_policy.unwrap_or_default();
        let mut sessions = Vec::new();
        for item in self.range(cf::SESSIONS, &start, &keys::prefix_end(&prefix), false) {
            let (key, value) = item?;
            let (_, _, session_id) = keys::decode_session_key(&key)?;
            if sessions.len() == page_size {
                let last: &SessionView = sessions.last().expect("page_size >= 1");
                return Ok((
                    sessions.clone(),
                    page::encode(&scope, last.session_id.as_bytes()),
                ));
            }
            let stored: StoredSession = codec::decode(&value)?;
            sessions.push(view(
                memory_id, actor_id, session_id, &stored, &policy, now_us,
            ));
        }
        Ok((sessions, String::new()))
    }

    /// Keeps a session alive without an event (PingSession): its idle clocks restart from
    /// `now_us`, an IDLE session is ACTIVE again (a logged transition), max_duration still
    /// holds. FAILED_PRECONDITION once it is TERMINATED.
    pub fn ping_session(
        &self,
        memory_id: &str,
        actor_id: &str,
        session_id: &str,
        now_us: u64,
    ) -> Result<SessionView> {
        let _memory_gate = self.memory_gate.blocking_read();
        let memory = self.memory(memory_id)?;
        let _actor_gate = self.actor_gate(memory_id, actor_id).blocking_read();
        let _lock = self
            .session_lock(memory_id, actor_id, session_id)
            .blocking_lock();
        let key = keys::session_key(memory_id, actor_id, session_id);
        let mut stored: StoredSession = self.get_decoded(cf::SESSIONS, &key)?.ok_or_else(|| {
            ServiceError::not_found(format!("session {session_id} of actor {actor_id}"))
        })?;
        let policy = memory.session_policy.unwrap_or_default();
        if lifecycle::state_at(&stored, &policy, now_us) == SessionState::Terminated {
            return Err(ServiceError::FailedPrecondition(format!(
                "session {session_id} is terminated; a ping cannot revive it"
            )));
        }
        let announced = SessionState::try_from(stored.announced_state).unwrap_or_default();
        let mut batch = WriteBatch::default();
        if let Some(deadline) = timer_deadline(&stored, &policy, &memory) {
            batch.delete_cf(self.cf(cf::TIMERS), keys::timer_key(deadline, &key));
        }
        stored.last_ping_us = now_us;
        stored.announced_state = SessionState::Active as i32;
        batch.put_cf(self.cf(cf::SESSIONS), &key, codec::encode(&stored));
        if let Some(next) = timer_deadline(&stored, &policy, &memory) {
            batch.put_cf(self.cf(cf::TIMERS), keys::timer_key(next, &key), []);
        }
        let woke = announced == SessionState::Idle;
        if woke {
            self.log_change(
                &mut batch,
                &StoredChange {
                    at_us: now_us,
                    memory_id: memory_id.to_string(),
                    actor_id: actor_id.to_string(),
                    session_id: session_id.to_string(),
                    from_state: SessionState::Idle as i32,
                    to_state: SessionState::Active as i32,
                    ..Default::default()
                },
            );
        }
        self.commit(batch)?;
        if woke {
            self.broadcast(SessionTransition {
                memory_id: memory_id.to_string(),
                actor_id: actor_id.to_string(),
                session_id: session_id.to_string(),
                from: SessionState::Idle,
                to: SessionState::Active,
                at_us: now_us,
            });
        }
        Ok(view(
            memory_id, actor_id, session_id, &stored, &policy, now_us,
        ))
    }

    /// Announces every session transition due at `now_us`; returns how many it announced.
    pub fn sweep_due_sessions(&self, now_us: u64) -> Result<usize> {
        let due_end = keys::timer_key(now_us.saturating_add(1), &[]);
        let due: Vec<Box<[u8]>> = self
            .range(cf::TIMERS, &[], &due_end, false)
            .map(|item| item.map(|(key, _)| key))
            .collect::<Result<_>>()?;
        let mut announced = 0;
        for timer in due {
            if self.fire_timer(&timer, now_us)? {
                announced += 1;
            }
        }
        Ok(announced)
    }

    fn fire_timer(&self, timer: &[u8], now_us: u64) -> Result<bool> {
        let (_, session_key) = keys::decode_timer_key(timer)?;
        let (memory_id, actor_id, session_id) = keys::decode_session_key(session_key)?;
        let _lock = self
            .session_lock(memory_id, actor_id, session_id)
            .blocking_lock();
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::TIMERS), timer);
        let (Ok(memory), Some(mut stored)) = (
            self.memory(memory_id),
            self.get_decoded::<StoredSession>(cf::SESSIONS, session_key)?,
        ) else {
            // The session (or its memory) was deleted: drop the stale timer.
            self.commit(batch)?;
            return Ok(false);
        };
        let policy = memory.session_policy.unwrap_or_default();
        let announced = SessionState::try_from(stored.announced_state).unwrap_or_default();
        let state = lifecycle::state_at(&stored, &policy, now_us);
        let changed = state != announced;
        let staged = stored.pending.clone();
        if changed {
            stored.announced_state = state as i32;
            if state == SessionState::Terminated {
                stored.terminated_us = lifecycle::terminate_at(&stored, &policy).min(now_us);
            }
        }
        // Extraction triggers: session end flushes everything, else idle triggers that are due.
        let flush = if changed && state == SessionState::Terminated {
            Flush::SessionEnd
        } else {
            Flush::Idle
        };
        let ids = (memory_id, actor_id, session_id);
        let jobs = self.flush_session(ids, &memory, &mut stored, flush, now_us);
        let queued = jobs.iter().any(|j| j.queue_key.is_some());
        for job in jobs {
            batch.put_cf(self.cf(cf::JOBS), &job.job_key, job.value);
            if let Some(queue_key) = job.queue_key {
                batch.put_cf(self.cf(cf::QUEUE), queue_key, []);
            }
        }
        if changed || stored.pending != staged {
            batch.put_cf(self.cf(cf::SESSIONS), session_key, codec::encode(&stored));
        }
        if changed {
            self.log_change(
                &mut batch,
                &StoredChange {
                    at_us: now_us,
                    memory_id: memory_id.to_string(),
                    actor_id: actor_id.to_string(),
                    session_id: session_id.to_string(),
                    from_state: announced as i32,
                    to_state: state as i32,
                    ..Default::default()
                },
            );
        }
        // Re-arm from the current policy (which may have changed since this timer was set);
        // the put comes after the delete above, so re-arming the same key keeps it.
        if let Some(next) = timer_deadline(&stored, &policy, &memory) {
            batch.put_cf(self.cf(cf::TIMERS), keys::timer_key(next, session_key), []);
        }
        self.commit(batch)?;
        if queued {
            self.jobs_ready.notify_one();
        }
        if changed {
            self.broadcast(SessionTransition {
                memory_id: memory_id.to_string(),
                actor_id: actor_id.to_string(),
                session_id: session_id.to_string(),
                from: announced,
                to: state,
                at_us: now_us,
            });
        }
        Ok(changed)
    }
}

fn view(
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    stored: &StoredSession,
    policy: &codec::StoredSessionPolicy,
    now_us: u64,
) -> SessionView {
    SessionView {
        memory_id: memory_id.to_string(),
        actor_id: actor_id.to_string(),
        session_id: session_id.to_string(),
        state: lifecycle::state_at(stored, policy, now_us),
        create_us: stored.create_us,
        last_event_us: stored.last_event_us,
        last_ping_us: stored.last_ping_us,
        event_count: stored.event_count,
        terminate_us: lifecycle::terminate_at(stored, policy),
    }
}
