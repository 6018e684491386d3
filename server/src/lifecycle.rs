//! The session lifecycle as pure functions of a session's times, its memory's policy and the
//! clock: ACTIVE while events arrive, IDLE after `idle_after_seconds` of quiet, TERMINATED after
//! `idle_timeout_seconds` of quiet or `max_duration_seconds` after the first event.
//!
//! Reads compute the state from stored times, so they are right even if the sweeper lags.
//! The sweeper (see [`run_sweeper`]) only *announces* transitions to subscribers and makes
//! TERMINATED final. All times are server times: client `event_timestamp`s may be historical
//! (imported conversations) and must not age sessions.

use crate::error::{Result, ServiceError};
use crate::store::Store;
use crate::store::codec::{StoredSession, StoredSessionPolicy};
use memd_proto::v1::{SessionPolicy, SessionState};
use std::sync::Arc;
use std::time::Duration;

/// Default silence before a session terminates.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u32 = 900;
/// Default lifetime of a session after its first event.
pub const DEFAULT_MAX_DURATION_SECONDS: u32 = 28_800;
/// Default silence before an active session shows as idle.
pub const DEFAULT_IDLE_AFTER_SECONDS: u32 = 60;
/// Upper bound for every policy duration (one year).
const MAX_POLICY_SECONDS: u32 = 366 * 86_400;

const US: u64 = 1_000_000;

/// Applies defaults to a requested policy and validates it.
pub fn effective_policy(requested: Option<&SessionPolicy>) -> Result<StoredSessionPolicy> {
    let requested = requested.copied().unwrap_or_default();
    let or_default = |value: u32, default: u32| if value == 0 { default } else { value };
    let idle_timeout = or_default(requested.idle_timeout_seconds, DEFAULT_IDLE_TIMEOUT_SECONDS);
    let max_duration = or_default(requested.max_duration_seconds, DEFAULT_MAX_DURATION_SECONDS);
    let idle_after = match requested.idle_after_seconds {
        0 => DEFAULT_IDLE_AFTER_SECONDS.min(idle_timeout),
        n => n,
    };
    for (field, value) in [
        ("session_policy.idle_timeout_seconds", idle_timeout),
        ("session_policy.max_duration_seconds", max_duration),
        ("session_policy.idle_after_seconds", idle_after),
    ] {
        if value > MAX_POLICY_SECONDS {
            return Err(ServiceError::invalid(
                field,
                format!("must be at most {MAX_POLICY_SECONDS}"),
            ));
        }
    }
    if idle_after > idle_timeout {
        return Err(ServiceError::invalid(
            "session_policy.idle_after_seconds",
            "must not exceed idle_timeout_seconds",
        ));
    }
    Ok(StoredSessionPolicy {
        idle_timeout_seconds: idle_timeout,
        max_duration_seconds: max_duration,
        idle_after_seconds: idle_after,
    })
}

/// The latest sign of life: an event or a ping.
pub fn last_activity(session: &StoredSession) -> u64 {
    session.last_event_us.max(session.last_ping_us)
}

/// When the session terminates (or terminated) if no further event or ping arrives.
pub fn terminate_at(session: &StoredSession, policy: &StoredSessionPolicy) -> u64 {
    if session.terminated_us != 0 {
        return session.terminated_us;
    }
    let idle = last_activity(session) + u64::from(policy.idle_timeout_seconds) * US;
    let max = session.create_us + u64::from(policy.max_duration_seconds) * US;
    idle.min(max)
}

/// The state of `session` at `now_us`.
pub fn state_at(
    session: &StoredSession,
    policy: &StoredSessionPolicy,
    now_us: u64,
) -> SessionState {
    if session.announced_state == SessionState::Terminated as i32
        || now_us >= terminate_at(session, policy)
    {
        SessionState::Terminated
    } else if now_us >= last_activity(session) + u64::from(policy.idle_after_seconds) * US {
        SessionState::Idle
    } else {
        SessionState::Active
    }
}

/// When the sweeper should next look at a session whose announced state is its stored one.
pub fn next_deadline(session: &StoredSession, policy: &StoredSessionPolicy) -> Option<u64> {
    let terminate = terminate_at(session, policy);
    match SessionState::try_from(session.announced_state) {
        Ok(SessionState::Active) => Some(
            (last_activity(session) + u64::from(policy.idle_after_seconds) * US).min(terminate),
        ),
        Ok(SessionState::Idle) => Some(terminate),
        _ => None,
    }
}

/// How often records past their strategy's `record_expiry_days` are erased.
const RECORD_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Announces due session transitions every `interval` until `shutdown` resolves; hourly,
/// erases expired records and change log entries older than `change_retention`.
pub async fn run_sweeper(
    store: Arc<Store>,
    interval: Duration,
    change_retention: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purged = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        if purged.elapsed() >= RECORD_PURGE_INTERVAL {
            purged = std::time::Instant::now();
            let purging = store.clone();
            match tokio::task::spawn_blocking(move || {
                purging.purge_expired_records(crate::time::now_us())
            })
            .await
            {
                Ok(Ok(count)) if count > 0 => tracing::info!(count, "erased expired records"),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::warn!(%err, "purging expired records failed"),
                Err(err) => tracing::error!(%err, "record purge panicked"),
            }
            // The change log keeps what watchers may still resume from.
            let trimming = store.clone();
            let before = crate::time::now_us().saturating_sub(change_retention.as_micros() as u64);
            match tokio::task::spawn_blocking(move || trimming.trim_changes(before)).await {
                Ok(Ok(count)) if count > 0 => tracing::debug!(count, "trimmed the change log"),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::warn!(%err, "trimming the change log failed"),
                Err(err) => tracing::error!(%err, "change log trim panicked"),
            }
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.sweep_due_sessions(crate::time::now_us()))
            .await
        {
            Ok(Ok(count)) if count > 0 => tracing::debug!(count, "announced session transitions"),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(%err, "session sweep failed; retrying next tick"),
            Err(err) => tracing::error!(%err, "session sweep panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> StoredSessionPolicy {
        StoredSessionPolicy {
            idle_timeout_seconds: 10,
            max_duration_seconds: 100,
            idle_after_seconds: 2,
        }
    }

    fn session(create_s: u64, last_s: u64) -> StoredSession {
        StoredSession {
            create_us: create_s * US,
            last_event_us: last_s * US,
            event_count: 1,
            announced_state: SessionState::Active as i32,
            terminated_us: 0,
            pending: Vec::new(),
            last_ping_us: 0,
        }
    }

    #[test]
    fn a_ping_restarts_the_idle_clocks_but_not_max_duration() {
        let mut pinged = session(0, 1);
        pinged.last_ping_us = 8 * US;
        assert_eq!(state_at(&pinged, &policy(), 9 * US), SessionState::Active);
        assert_eq!(state_at(&pinged, &policy(), 11 * US), SessionState::Idle);
        assert_eq!(terminate_at(&pinged, &policy()), 18 * US);
        pinged.last_ping_us = 95 * US;
        assert_eq!(
            terminate_at(&pinged, &policy()),
            100 * US,
            "max_duration still holds"
        );
    }

    #[test]
    fn states_follow_the_policy() {
        let p = policy();
        let s = session(0, 50);
        assert_eq!(state_at(&s, &p, 51 * US), SessionState::Active);
        assert_eq!(state_at(&s, &p, 52 * US), SessionState::Idle);
        assert_eq!(state_at(&s, &p, 60 * US), SessionState::Terminated);
        // Max duration wins over recent activity.
        let busy = session(0, 99);
        assert_eq!(state_at(&busy, &p, 100 * US), SessionState::Terminated);
        assert_eq!(next_deadline(&busy, &p), Some(100 * US));
        assert_eq!(next_deadline(&s, &p), Some(52 * US));
    }

    #[test]
    fn announced_termination_is_final() {
        let mut s = session(0, 0);
        s.announced_state = SessionState::Terminated as i32;
        s.terminated_us = 10 * US;
        assert_eq!(state_at(&s, &policy(), 0), SessionState::Terminated);
        assert_eq!(next_deadline(&s, &policy()), None);
    }

    #[test]
    fn policy_defaults_and_validation() {
        let p = effective_policy(None).unwrap();
        assert_eq!(
            (
                p.idle_timeout_seconds,
                p.max_duration_seconds,
                p.idle_after_seconds
            ),
            (900, 28_800, 60)
        );
        let short = effective_policy(Some(&SessionPolicy {
            idle_timeout_seconds: 5,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(short.idle_after_seconds, 5);
        let bad = SessionPolicy {
            idle_timeout_seconds: 5,
            idle_after_seconds: 6,
            ..Default::default()
        };
        let err = effective_policy(Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("idle_after_seconds"), "{err}");
    }
}
