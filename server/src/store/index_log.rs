//! The index log: every change to a record or a searchable event (and every actor or memory
//! erasure) appends an entry in the same batch as the change, so the derived search indexes
//! can follow RocksDB exactly. An entry with only a memory id means the memory was deleted;
//! with a memory and an actor id, the actor was erased.
//! An index remembers the last entry it applied (in its own commit); entries every index has
//! applied are trimmed.

use super::Store;
use super::codec::{self, StoredIndexChange, StoredRecord};
use super::keys::cf;
use crate::error::Result;
use rocksdb::WriteBatch;
use std::sync::atomic::Ordering;

/// Events before an event in its session that the events index also finds it by.
pub const EVENT_CONTEXT_BEFORE: usize = 2;

impl Store {
    /// The key and value of a new log entry, stamped with the time.
    pub(super) fn index_entry(&self, mut change: StoredIndexChange) -> ([u8; 8], Vec<u8>) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        change.logged_us = crate::time::now_us();
        (seq.to_be_bytes(), codec::encode(&change))
    }

    fn log(&self, batch: &mut WriteBatch, change: StoredIndexChange) {
        let (key, value) = self.index_entry(change);
        batch.put_cf(self.cf(cf::INDEX_LOG), key, value);
    }

    /// Appends "this record changed" (or, with an empty id, "this memory is gone").
    pub(super) fn log_record_change(
        &self,
        batch: &mut WriteBatch,
        memory_id: &str,
        record_id: &str,
    ) {
        self.log(
            batch,
            StoredIndexChange {
                memory_id: memory_id.to_string(),
                record_id: record_id.to_string(),
                ..Default::default()
            },
        );
    }

    /// Appends "this event changed".
    pub(super) fn log_event_change(
        &self,
        batch: &mut WriteBatch,
        memory_id: &str,
        event_key: &[u8],
    ) {
        self.log(
            batch,
            StoredIndexChange {
                memory_id: memory_id.to_string(),
                event_key: event_key.to_vec(),
                ..Default::default()
            },
        );
    }

    /// Appends "this actor was erased".
    pub(super) fn log_actor_erased(&self, batch: &mut WriteBatch, memory_id: &str, actor_id: &str) {
        self.log(
            batch,
            StoredIndexChange {
                memory_id: memory_id.to_string(),
                actor_id: actor_id.to_string(),
                ..Default::default()
            },
        );
    }

    /// A stored event by its key, unless it expired (for the events index).
    pub fn event_by_key(&self, key: &[u8], now_us: u64) -> Result<Option<super::EventView>> {
        let (memory_id, seq) = super::keys::decode_event_key(key)?;
        let Some(stored) = self.get_decoded::<super::codec::StoredEvent>(cf::EVENTS, key)? else {
            return Ok(None);
        };
        if self.expiry.expired(memory_id, stored.create_us, now_us) {
            return Ok(None);
        }
        let (_, actor_id, session_id) = super::keys::decode_session_key(key)?;
        Ok(Some(super::EventView {
            memory_id: memory_id.to_string(),
            actor_id: actor_id.to_string(),
            session_id: session_id.to_string(),
            seq,
            stored,
        }))
    }

    /// The live events of the session just before the event at `key` (at most
    /// [`EVENT_CONTEXT_BEFORE`], oldest first): the words the events index also finds it by.
    pub fn events_before(&self, key: &[u8], now_us: u64) -> Result<Vec<super::codec::StoredEvent>> {
        let (memory_id, seq) = super::keys::decode_event_key(key)?;
        let session_key = super::keys::session_of_event(key)?;
        Ok(self
            .session_events(session_key, Some(seq), EVENT_CONTEXT_BEFORE)?
            .into_iter()
            .map(|loaded| loaded.event)
            .filter(|event| !self.expiry.expired(memory_id, event.create_us, now_us))
            .collect())
    }

    /// Logs a change of the events whose context holds the event at `key` (the next
    /// [`EVENT_CONTEXT_BEFORE`] of its session), so that a deleted event's words stop finding
    /// its neighbours.
    pub(super) fn log_context_change(
        &self,
        batch: &mut WriteBatch,
        memory_id: &str,
        key: &[u8],
    ) -> Result<()> {
        let session_key = super::keys::session_of_event(key)?;
        let mut after = key.to_vec();
        after.push(0);
        let end = super::keys::prefix_end(session_key);
        for item in self
            .range(cf::EVENTS, &after, &end, false)
            .take(EVENT_CONTEXT_BEFORE)
        {
            let (next, _) = item?;
            self.log_event_change(batch, memory_id, &next);
        }
        Ok(())
    }

    /// Every stored event, for rebuilding the events index.
    pub fn for_each_event(
        &self,
        mut visit: impl FnMut(&[u8], super::codec::StoredEvent) -> Result<()>,
    ) -> Result<()> {
        for item in self.range(cf::EVENTS, &[], &[0xff; 1], false) {
            let (key, value) = item?;
            visit(&key, codec::decode(&value)?)?;
        }
        Ok(())
    }

    /// Up to `limit` log entries after `after`, oldest first.
    pub fn index_changes(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredIndexChange)>> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self
            .range(cf::INDEX_LOG, &start, &[0xff; 9], false)
            .take(limit)
        {
            let (key, value) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                crate::error::ServiceError::DataLoss("index log key is not 8 bytes".into())
            })?);
            out.push((seq, codec::decode(&value)?));
        }
        Ok(out)
    }

    /// How many log entries lie after `after` (counting stops at `limit`).
    pub fn index_changes_after(&self, after: u64, limit: usize) -> Result<usize> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut count = 0;
        for item in self
            .range(cf::INDEX_LOG, &start, &[0xff; 9], false)
            .take(limit)
        {
            item?;
            count += 1;
        }
        Ok(count)
    }

    /// How long the oldest entry after `after` has waited, in microseconds at `now_us` (0 when
    /// there is none, or it was logged before entries carried their time).
    pub fn index_log_age_us(&self, after: u64, now_us: u64) -> Result<u64> {
        Ok(match self.index_changes(after, 1)?.first() {
            Some((_, change)) if change.logged_us > 0 => now_us.saturating_sub(change.logged_us),
            _ => 0,
        })
    }

    /// The newest log entry's sequence number (0 when the log is empty).
    pub fn last_index_seq(&self) -> Result<u64> {
        let last = self.range(cf::INDEX_LOG, &[], &[0xff; 9], true).next();
        Ok(match last.transpose()? {
            Some((key, _)) => u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
    }

    /// Drops the entries up to and including `upto` (every index has applied them).
    pub fn trim_index_log(&self, upto: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(cf::INDEX_LOG),
            0u64.to_be_bytes(),
            upto.saturating_add(1).to_be_bytes(),
        );
        self.commit_relaxed(batch)
    }

    /// Every live record of every memory, for rebuilding an index from scratch.
    pub fn for_each_live_record(
        &self,
        mut visit: impl FnMut(&str, StoredRecord) -> Result<()>,
    ) -> Result<()> {
        for item in self.range(cf::RECORDS, &[], &[0xff; 1], false) {
            let (key, value) = item?;
            let record: StoredRecord = codec::decode(&value)?;
            if record.invalid_from_us != 0 {
                continue;
            }
            let (memory_id, _) = super::keys::decode_actor_key(&key)?;
            visit(memory_id, record)?;
        }
        Ok(())
    }

    /// Sequence numbers must stay above the log's even if the clock went back since the
    /// last run (an index would otherwise skip the new entries).
    pub(super) fn seed_sequence_above_log(&self) -> Result<()> {
        let last = self.last_index_seq()?;
        self.next_seq
            .fetch_max(last.saturating_add(1), Ordering::Relaxed);
        Ok(())
    }
}
