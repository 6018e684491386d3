//! The session `remember` writes to when neither the host nor the model names one.
//!
//! MCP hosts have no notion of memd's sessions, and a session terminates after its idle
//! timeout (then refuses appends). So each (memory, actor) gets a current default session,
//! named by when it started, and a fresh one once the current one has terminated.

use std::collections::HashMap;
use std::sync::Mutex;

/// Current default session per (memory, actor).
#[derive(Debug, Default)]
pub struct DefaultSessions {
    current: Mutex<HashMap<(String, String), String>>,
}

impl DefaultSessions {
    /// The actor's current default session, started now if it has none.
    pub fn current(&self, memory_id: &str, actor_id: &str) -> String {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current
            .entry((memory_id.to_string(), actor_id.to_string()))
            .or_insert_with(new_session_id)
            .clone()
    }

    /// Replaces `stale` (it terminated) with a new session and returns that; if another
    /// request already replaced it, returns the replacement.
    pub fn replace(&self, memory_id: &str, actor_id: &str, stale: &str) -> String {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let slot = current
            .entry((memory_id.to_string(), actor_id.to_string()))
            .or_insert_with(new_session_id);
        if slot == stale {
            *slot = new_session_id();
        }
        slot.clone()
    }
}

/// `mcp-20261205T031500Z-3f9a`: sortable by start, unique across processes.
fn new_session_id() -> String {
    format!(
        "mcp-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        crate::ids::random_suffix(4)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_current_session_per_actor_until_replaced() {
        let sessions = DefaultSessions::default();
        let first = sessions.current("m", "alice");
        assert!(first.starts_with("mcp-"), "{first}");
        assert_eq!(sessions.current("m", "alice"), first);
        assert_ne!(sessions.current("m", "bob"), first);
        let second = sessions.replace("m", "alice", &first);
        assert_ne!(second, first);
        // A second request that saw the same stale session gets the same replacement.
        assert_eq!(sessions.replace("m", "alice", &first), second);
        assert_eq!(sessions.current("m", "alice"), second);
    }
}
