//! The change log: session transitions and long-term record changes, each appended in the
//! same batch as the change itself, kept for a retention window, read by the watch streams
//! (`WatchSessions`, `WatchMemoryRecords`) from a cursor.
//!
//! Sequence numbers are taken when a batch is built, so a later number can commit before an
//! earlier one; readers therefore hold back at a gap (see [`ChangeReader`]) until it fills or
//! has stayed open for [`GAP_GRACE`], which only a write that failed (or a crash between
//! taking a number and committing) leaves. Within that, a reader that resumes after a cursor
//! misses nothing and sees nothing twice.

use super::Store;
use super::codec::{self, StoredChange};
use super::commit::Batch;
use super::keys::cf;
use crate::error::{Result, ServiceError};
use rocksdb::WriteBatch;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a reader waits for a missing sequence number before passing it.
pub const GAP_GRACE: Duration = Duration::from_secs(5);
/// META key of the highest sequence number trimmed away (cursors at or below it are too old).
const TRIMMED_KEY: &[u8] = b"changes_trimmed_upto";

impl Store {
    /// The key and value of a new change entry.
    fn change_entry(&self, change: &StoredChange) -> ([u8; 8], Vec<u8>) {
        let seq = self.next_change_seq.fetch_add(1, Ordering::Relaxed);
        (seq.to_be_bytes(), codec::encode(change))
    }

    /// Appends `change` to a blocking-path batch.
    pub(super) fn log_change(&self, batch: &mut WriteBatch, change: &StoredChange) {
        let (key, value) = self.change_entry(change);
        batch.put_cf(self.cf(cf::CHANGES), key, value);
    }

    /// Appends `change` to a group-commit batch.
    pub(super) fn log_change_grouped(&self, batch: &mut Batch, change: &StoredChange) {
        let (key, value) = self.change_entry(change);
        batch.put(cf::CHANGES, key, value);
    }

    /// Wakes watchers after a commit that may have carried changes.
    pub(super) fn changes_committed(&self) {
        self.changes_notify.notify_waiters();
    }

    /// Resolves once something may have been committed (watchers also poll).
    pub fn changes_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.changes_notify.notified()
    }

    /// The newest sequence number handed out (0 when none), for "from now" readers.
    pub fn change_head(&self) -> u64 {
        self.next_change_seq
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Up to `limit` entries after `after`, in sequence order.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredChange)>> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self
            .range(cf::CHANGES, &start, &[0xff; 9], false)
            .take(limit)
        {
            let (key, value) = item?;
            let seq = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| ServiceError::DataLoss("change log key is not 8 bytes".into()))?,
            );
            out.push((seq, codec::decode(&value)?));
        }
        Ok(out)
    }

    /// The highest sequence number retention has removed (0: none).
    pub fn changes_trimmed_upto(&self) -> Result<u64> {
        Ok(self
            .get(cf::META, TRIMMED_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Removes entries written before `before_us`; returns how many.
    pub fn trim_changes(&self, before_us: u64) -> Result<usize> {
        let mut last = None;
        let mut count = 0;
        for item in self.range(cf::CHANGES, &[], &[0xff; 9], false) {
            let (key, value) = item?;
            let change: StoredChange = codec::decode(&value)?;
            if change.at_us >= before_us {
                break;
            }
            last = Some(key);
            count += 1;
        }
        let Some(last) = last else { return Ok(0) };
        let upto = u64::from_be_bytes(last.as_ref().try_into().unwrap_or([0; 8]));
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(cf::CHANGES),
            [0u8; 8],
            upto.saturating_add(1).to_be_bytes(),
        );
        batch.put_cf(self.cf(cf::META), TRIMMED_KEY, upto.to_be_bytes());
        self.commit(batch)?;
        Ok(count)
    }

    /// Removes an erased actor's entries (its ids are personal data too).
    pub(super) fn erase_actor_changes(
        &self,
        batch: &mut WriteBatch,
        memory_id: &str,
        actor_id: &str,
    ) -> Result<()> {
        for item in self.range(cf::CHANGES, &[], &[0xff; 9], false) {
            let (key, value) = item?;
            let change: StoredChange = codec::decode(&value)?;
            if change.memory_id == memory_id && change.actor_id == actor_id {
                batch.delete_cf(self.cf(cf::CHANGES), key);
            }
        }
        Ok(())
    }

    /// Starts the counter above every stored entry.
    pub(super) fn seed_change_sequence(&self) -> Result<()> {
        let last = self.range(cf::CHANGES, &[], &[0xff; 9], true).next();
        let last = match last.transpose()? {
            Some((key, _)) => u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8])),
            None => self.changes_trimmed_upto()?,
        };
        self.next_change_seq
            .fetch_max(last.saturating_add(1), Ordering::Relaxed);
        Ok(())
    }
}

/// Reads the change log in order from a cursor, holding back at gaps (see the module docs).
#[derive(Debug)]
pub struct ChangeReader {
    /// The last sequence number delivered or passed.
    cursor: u64,
    /// Since when the reader has waited on the gap right after `cursor`.
    gap_since: Option<Instant>,
}

/// Why a cursor cannot be resumed.
pub fn cursor_too_old(cursor: u64, trimmed_upto: u64) -> bool {
    cursor < trimmed_upto
}

impl ChangeReader {
    /// A reader that delivers entries after `cursor`.
    pub fn after(cursor: u64) -> Self {
        Self {
            cursor,
            gap_since: None,
        }
    }

    /// The last sequence number delivered or passed.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next entries in order, up to `limit`, and advances past them. Stops before a gap
    /// younger than [`GAP_GRACE`].
    pub fn next_batch(&mut self, store: &Store, limit: usize) -> Result<Vec<(u64, StoredChange)>> {
        let mut out = Vec::new();
        for (seq, change) in store.changes_after(self.cursor, limit)? {
            if seq != self.cursor + 1 {
                let since = *self.gap_since.get_or_insert_with(Instant::now);
                if since.elapsed() < GAP_GRACE {
                    break;
                }
            }
            self.gap_since = None;
            self.cursor = seq;
            out.push((seq, change));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    fn change(at_us: u64, session: &str) -> StoredChange {
        StoredChange {
            at_us,
            memory_id: "m".into(),
            actor_id: "a".into(),
            session_id: session.into(),
            ..Default::default()
        }
    }

    #[test]
    fn readers_wait_at_gaps_then_pass_them() {
        let (_dir, store) = temp_store();
        let base = store.change_head();
        let mut first = WriteBatch::default();
        store.log_change(&mut first, &change(1, "s1"));
        let mut second = WriteBatch::default();
        store.log_change(&mut second, &change(2, "s2"));
        // The later number commits first: a reader must not skip the earlier one.
        store.commit(second).unwrap();
        let mut reader = ChangeReader::after(base);
        assert!(reader.next_batch(&store, 10).unwrap().is_empty());
        store.commit(first).unwrap();
        let got: Vec<String> = reader
            .next_batch(&store, 10)
            .unwrap()
            .into_iter()
            .map(|(_, c)| c.session_id)
            .collect();
        assert_eq!(got, ["s1", "s2"]);
        // Resuming from the cursor repeats nothing.
        assert!(
            ChangeReader::after(reader.cursor())
                .next_batch(&store, 10)
                .unwrap()
                .is_empty()
        );
        // A number that never commits is passed after the grace period.
        let mut lost = WriteBatch::default();
        store.log_change(&mut lost, &change(3, "lost"));
        drop(lost);
        let mut third = WriteBatch::default();
        store.log_change(&mut third, &change(4, "s3"));
        store.commit(third).unwrap();
        assert!(reader.next_batch(&store, 10).unwrap().is_empty());
        reader.gap_since = Some(Instant::now() - GAP_GRACE);
        assert_eq!(reader.next_batch(&store, 10).unwrap()[0].1.session_id, "s3");
    }

    #[test]
    fn retention_trims_old_entries_and_remembers_where() {
        let (_dir, store) = temp_store();
        let mut batch = WriteBatch::default();
        for at in [10, 20, 30] {
            store.log_change(&mut batch, &change(at, "s"));
        }
        store.commit(batch).unwrap();
        let head = store.change_head();
        assert_eq!(store.trim_changes(25).unwrap(), 2);
        let trimmed = store.changes_trimmed_upto().unwrap();
        assert_eq!(trimmed, head - 1);
        assert!(cursor_too_old(head - 3, trimmed));
        assert!(!cursor_too_old(head - 1, trimmed));
        assert_eq!(store.changes_after(0, 10).unwrap().len(), 1);
    }
}
