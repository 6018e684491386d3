//! Event expiry: events older than their memory's `event_expiry_days` (by server write time)
//! are hidden from every read and physically dropped by a compaction filter, so nothing on
//! the hot path ever scans for them.

use super::codec::{self, StoredEvent, StoredToken};
use super::keys;
use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, RwLock};

/// Retention per memory id, in microseconds.
#[derive(Debug, Default)]
pub struct ExpiryTable {
    retention_us: RwLock<HashMap<String, u64>>,
}

impl ExpiryTable {
    /// Sets (or with `None`, forgets) a memory's retention.
    pub fn set(&self, memory_id: &str, days: Option<u32>) {
        let mut map = self.retention_us.write().unwrap_or_else(|p| p.into_inner());
        match days {
            Some(days) => map.insert(memory_id.to_string(), u64::from(days) * 86_400_000_000),
            None => map.remove(memory_id),
        };
    }

    /// Whether something written at `create_us` in `memory_id` has expired at `now_us`.
    /// Data of unknown memories is left alone: deleting memories is the range delete's job.
    pub fn expired(&self, memory_id: &str, create_us: u64, now_us: u64) -> bool {
        let map = self.retention_us.read().unwrap_or_else(|p| p.into_inner());
        map.get(memory_id)
            .is_some_and(|&ret| create_us.saturating_add(ret) <= now_us)
    }
}

/// Creates one [`ExpiryFilter`] per compaction run.
pub struct ExpiryFilterFactory {
    table: Arc<ExpiryTable>,
    kind: ExpiringKind,
    name: CString,
}

/// Which column family a filter runs on (their values differ).
#[derive(Debug, Clone, Copy)]
pub enum ExpiringKind {
    Events,
    Tokens,
}

impl ExpiryFilterFactory {
    pub fn new(table: Arc<ExpiryTable>, kind: ExpiringKind) -> Self {
        Self {
            table,
            kind,
            name: CString::new("memd.expiry.v1").expect("no NUL"),
        }
    }
}

impl CompactionFilterFactory for ExpiryFilterFactory {
    type Filter = ExpiryFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> ExpiryFilter {
        ExpiryFilter {
            table: self.table.clone(),
            kind: self.kind,
            now_us: crate::time::now_us(),
            name: self.name.clone(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// Drops expired events and event tokens.
pub struct ExpiryFilter {
    table: Arc<ExpiryTable>,
    kind: ExpiringKind,
    now_us: u64,
    name: CString,
}

impl ExpiryFilter {
    fn expired(&self, key: &[u8], value: &[u8]) -> Option<bool> {
        let (memory_id, _) = keys::decode_actor_key(key).ok()?;
        let create_us = match self.kind {
            ExpiringKind::Events => codec::decode::<StoredEvent>(value).ok()?.create_us,
            ExpiringKind::Tokens => codec::decode::<StoredToken>(value).ok()?.create_us,
        };
        Some(self.table.expired(memory_id, create_us, self.now_us))
    }
}

impl CompactionFilter for ExpiryFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Decision {
        // Anything undecodable is kept: a filter must never destroy what it does not understand.
        match self.expired(key, value) {
            Some(true) => Decision::Remove,
            _ => Decision::Keep,
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{StoredContent, StoredMemory, StoredPayload, StoredTurn};
    use super::super::keys::cf;
    use super::super::test_support::temp_store;
    use super::super::{EventFilterSpec, EventListing, NewEvent};
    use crate::error::ServiceError;

    const DAY_US: u64 = 86_400_000_000;

    #[test]
    fn expired_events_are_hidden_then_compacted_away() {
        let (_dir, store) = temp_store();
        let now = crate::time::now_us();
        let memory = StoredMemory {
            memory_id: "m-1".into(),
            name: "m".into(),
            event_expiry_days: 1,
            create_us: now,
            update_us: now,
            ..Default::default()
        };
        store.create_memory(memory, "", vec![]).unwrap();
        let event = |session: &str| NewEvent {
            memory_id: "m-1".into(),
            actor_id: "a".into(),
            session_id: session.into(),
            event_ts_us: None,
            payload: vec![StoredPayload {
                content: Some(StoredContent::Conversational(StoredTurn {
                    role: 1,
                    text: "x".into(),
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
        // Written three days ago (server time), and just now.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let old = runtime
            .block_on(store.append_event(event("old"), now - 3 * DAY_US))
            .unwrap();
        let fresh = runtime
            .block_on(store.append_event(event("new"), now))
            .unwrap();

        let get = |view: &super::super::EventView| {
            store.event(
                "m-1",
                "a",
                &view.session_id,
                view.seq,
                crate::time::now_us(),
            )
        };
        assert!(matches!(get(&old), Err(ServiceError::NotFound(_))));
        assert!(get(&fresh).is_ok());
        let listing = EventListing {
            memory_id: "m-1".into(),
            actor_id: "a".into(),
            session_id: "old".into(),
            include_payloads: true,
            filter: EventFilterSpec::default(),
            page_size: 10,
            page_token: String::new(),
            newest_first: false,
        };
        assert!(store.list_events(&listing, now).unwrap().0.is_empty());

        // Compaction drops the expired event for good and keeps the fresh one.
        let events = store.cf(cf::EVENTS);
        store.db.flush_cf(events).unwrap();
        store
            .db
            .compact_range_cf(events, None::<&[u8]>, None::<&[u8]>);
        let raw = |view: &super::super::EventView| {
            let key = super::super::keys::event_key(
                &super::super::keys::session_key("m-1", "a", &view.session_id),
                view.seq,
            );
            store.db.get_cf(events, key).unwrap()
        };
        assert!(raw(&old).is_none());
        assert!(raw(&fresh).is_some());
    }
}
