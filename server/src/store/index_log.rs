//! The index log: every change to a record or a searchable event (and every actor or memory
//! erasure) appends an entry in the same batch as the change, so the derived search indexes
//! can follow RocksDB exactly. An entry with only a memory id means the memory was deleted;
//! with a memory and an actor id, the actor was erased.
//! An index remembers the last entry it applied (in its own commit); entries every index has
//! applied are trimmed.
//!
//! Numbers are taken when a batch is built, so a later one can commit before an earlier one
//! (two appends racing to the committer, or a record write beside an append). A follower that
//! applied the later one and moved its position past the earlier one would never index it.
//! So numbers are contiguous within a run, and [`Store::index_changes`] stops before a number
//! that was handed out but is not committed yet, until it commits or has been missing for
//! [`GAP_GRACE`] (only a batch abandoned before its write, a failed write, or a stall that
//! long leaves one), as the change log's readers do.

use super::Store;
use super::changes::GAP_GRACE;
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
        let seq = self.next_index_seq.fetch_add(1, Ordering::Relaxed);
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

    /// Up to `limit` log entries after `after`, oldest first, stopping before an entry whose
    /// predecessor of this run is still being committed (see the module docs).
    pub fn index_changes(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredIndexChange)>> {
        let start = after.saturating_add(1).to_be_bytes();
        let base = self.index_seq_base.load(Ordering::Acquire);
        let mut expected = after.saturating_add(1).max(base);
        let mut out = Vec::new();
        for item in self
            .range(cf::INDEX_LOG, &start, &[0xff; 9], false)
            .take(limit)
        {
            let (key, value) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                crate::error::ServiceError::DataLoss("index log key is not 8 bytes".into())
            })?);
            if seq > expected && seq >= base && !self.gap_passed(after, expected) {
                break;
            }
            expected = seq.saturating_add(1).max(base);
            out.push((seq, codec::decode(&value)?));
        }
        Ok(out)
    }

    /// Whether the missing entry `seq` has been missing for [`GAP_GRACE`] (noting when it was
    /// first found missing); forgets gaps at or below `after`, which readers have passed.
    fn gap_passed(&self, after: u64, seq: u64) -> bool {
        let mut gaps = self
            .index_gaps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gaps.retain(|&missing, _| missing > after);
        let since = *gaps.entry(seq).or_insert_with(std::time::Instant::now);
        if since.elapsed() < GAP_GRACE {
            return false;
        }
        tracing::warn!(
            seq,
            "index log entry missing for {GAP_GRACE:?}: passing it (a write that was abandoned or failed)"
        );
        true
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
        let start = after.saturating_add(1).to_be_bytes();
        let first = self.range(cf::INDEX_LOG, &start, &[0xff; 9], false).next();
        Ok(match first.transpose()? {
            Some((_, value)) => {
                let change: StoredIndexChange = codec::decode(&value)?;
                match change.logged_us {
                    0 => 0,
                    logged => now_us.saturating_sub(logged),
                }
            }
            None => 0,
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

    /// The position a rebuild may start from: the newest entry with no number of this run
    /// still being committed before it. A rebuild reads this, then scans the state: entries
    /// after it are replayed (harmless: each re-reads the state), and an entry committed
    /// late can never end up below the position the rebuild hands on. [`Self::last_index_seq`]
    /// could pass such an entry for good.
    pub fn committed_index_seq(&self) -> Result<u64> {
        let base = self.index_seq_base.load(Ordering::Acquire);
        let (mut expected, mut committed) = (base, 0);
        for item in self.range(cf::INDEX_LOG, &[], &[0xff; 9], false) {
            let (key, _) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                crate::error::ServiceError::DataLoss("index log key is not 8 bytes".into())
            })?);
            if seq > expected && seq >= base {
                break;
            }
            committed = seq;
            expected = seq.saturating_add(1).max(base);
        }
        Ok(committed)
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
        let base = self
            .next_index_seq
            .fetch_max(last.saturating_add(1), Ordering::Relaxed)
            .max(last.saturating_add(1));
        self.index_seq_base.store(base, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use crate::store::test_support::temp_store;

    /// A batch carrying one "record changed" entry, numbered now.
    fn logged(store: &Store, record_id: &str) -> WriteBatch {
        let mut batch = WriteBatch::default();
        store.log_record_change(&mut batch, "m", record_id);
        batch
    }

    fn record_ids(changes: Vec<(u64, StoredIndexChange)>) -> Vec<String> {
        changes.into_iter().map(|(_, c)| c.record_id).collect()
    }

    #[test]
    fn readers_hold_back_at_an_entry_still_being_committed() {
        let (_dir, store) = temp_store();
        let first = logged(&store, "r1");
        let second = logged(&store, "r2");
        // The later number commits first: a reader must not pass the earlier one.
        store.commit_relaxed(second).unwrap();
        assert!(store.index_changes(0, 10).unwrap().is_empty());
        assert_eq!(store.index_changes_after(0, 10).unwrap(), 1);
        store.commit_relaxed(first).unwrap();
        assert_eq!(
            record_ids(store.index_changes(0, 10).unwrap()),
            ["r1", "r2"]
        );
        // And from a position between them.
        let (r1, _) = store.index_changes(0, 1).unwrap()[0].clone();
        assert_eq!(record_ids(store.index_changes(r1, 10).unwrap()), ["r2"]);
    }

    #[test]
    fn a_rebuild_starts_below_an_entry_still_being_committed() {
        let (_dir, store) = temp_store();
        store.commit_relaxed(logged(&store, "r1")).unwrap();
        let r1 = store.last_index_seq().unwrap();
        assert_eq!(store.committed_index_seq().unwrap(), r1);
        let second = logged(&store, "r2");
        store.commit_relaxed(logged(&store, "r3")).unwrap();
        // r3 is the newest entry, but r2 may still commit below it.
        assert!(store.last_index_seq().unwrap() > r1);
        assert_eq!(store.committed_index_seq().unwrap(), r1);
        store.commit_relaxed(second).unwrap();
        assert_eq!(
            store.committed_index_seq().unwrap(),
            store.last_index_seq().unwrap()
        );
    }

    #[test]
    fn numbers_an_earlier_run_left_unused_are_not_waited_for() {
        let (dir, store) = temp_store();
        let _abandoned = logged(&store, "lost in a crash");
        store.commit_relaxed(logged(&store, "r2")).unwrap();
        assert!(store.index_changes(0, 10).unwrap().is_empty());
        drop(store);
        let options = StoreOptions {
            sync_writes: false,
            ..Default::default()
        };
        let store = Store::open(dir.path(), &options).unwrap();
        assert_eq!(record_ids(store.index_changes(0, 10).unwrap()), ["r2"]);
        // This run numbers above it, contiguously.
        store.commit_relaxed(logged(&store, "r3")).unwrap();
        assert_eq!(
            record_ids(store.index_changes(0, 10).unwrap()),
            ["r2", "r3"]
        );
    }
}
