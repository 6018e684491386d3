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
        map.get(memory_id).is_some_and(|&ret| create_us.saturating_add(ret) <= now_us)
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
        Self { table, kind, name: CString::new("memd.expiry.v1").expect("no NUL") }
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
