//! Long-term memory records: reads, listings by namespace prefix, deletion, history, and
//! the atomic commit of an extraction job's results. Writes through the API are in
//! `record_writes`.

use super::codec::{self, StoredChange, StoredJob, StoredRecord};
use super::keys::{self, cf};
use super::{Store, page};
use crate::error::{Result, ServiceError};
use rocksdb::WriteBatch;

/// What the change log says happened to a record.
pub(super) use memd_proto::v1::RecordChangeKind as Kind;

/// The change log entry for `r` undergoing `kind`.
fn record_change(memory_id: &str, r: &StoredRecord, kind: Kind) -> StoredChange {
    StoredChange {
        at_us: crate::time::now_us(),
        memory_id: memory_id.to_string(),
        actor_id: r.actor_id.clone(),
        record_id: r.record_id.clone(),
        namespace: r.namespace.clone(),
        strategy_id: r.strategy_id.clone(),
        version: r.version as i64,
        record_kind: kind as i32,
        ..Default::default()
    }
}

/// What a job does to one record; applied in one batch with the job's removal.
#[derive(Debug, Clone)]
pub enum RecordChange {
    /// A new record.
    Create(StoredRecord),
    /// The same record restated: more source events, same text and version (no history).
    Provenance(StoredRecord),
    /// A new version of a live record (`old` goes to history).
    Update {
        old: StoredRecord,
        new: StoredRecord,
    },
    /// `old` is superseded by the new record `new`: both are kept, `old` leaves the
    /// namespace index with its validity interval closed and shows in `new`'s history.
    Supersede {
        old: StoredRecord,
        new: StoredRecord,
    },
}

impl RecordChange {
    /// The records this change leaves in place (new or rewritten versions).
    pub fn written(&self) -> Vec<&StoredRecord> {
        match self {
            Self::Create(r) | Self::Provenance(r) => vec![r],
            Self::Update { new, .. } | Self::Supersede { new, .. } => vec![new],
        }
    }
}

/// A validated ListMemoryRecords request.
#[derive(Debug, Clone)]
pub struct RecordListing {
    pub memory_id: String,
    pub namespace_prefix: String,
    pub strategy_id: String,
    pub page_size: usize,
    pub page_token: String,
}

/// A record is readable: live, not expired.
pub(super) fn readable(record: &StoredRecord, now_us: u64) -> bool {
    record.invalid_from_us == 0 && (record.expire_us == 0 || record.expire_us > now_us)
}

impl Store {
    /// A record by id (superseded ones too, which carry `invalid_from`); expired records and
    /// records `visible` rejects are NOT_FOUND, so a denial reveals nothing.
    pub fn record(
        &self,
        memory_id: &str,
        record_id: &str,
        now_us: u64,
        visible: impl Fn(&StoredRecord) -> bool,
    ) -> Result<StoredRecord> {
        self.memory(memory_id)?;
        self.get_decoded::<StoredRecord>(cf::RECORDS, &keys::record_key(memory_id, record_id))?
            .filter(|r| (r.expire_us == 0 || r.expire_us > now_us) && visible(r))
            .ok_or_else(|| ServiceError::not_found(format!("memory record {record_id}")))
    }

    /// A stored record as is (superseded or expired ones too), for the extraction workers.
    pub fn stored_record(&self, memory_id: &str, record_id: &str) -> Result<Option<StoredRecord>> {
        self.get_decoded(cf::RECORDS, &keys::record_key(memory_id, record_id))
    }

    /// Bumped by every change to records made outside the extraction workers (deletions),
    /// so the workers' namespace caches know to reload.
    pub fn records_generation(&self) -> u64 {
        self.records_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn bump_records_generation(&self) {
        self.records_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The live records of exactly one namespace (consolidation compares with them).
    pub fn namespace_records(
        &self,
        memory_id: &str,
        namespace: &str,
        now_us: u64,
    ) -> Result<Vec<StoredRecord>> {
        let prefix = keys::namespace_prefix(memory_id, namespace);
        let mut out = Vec::new();
        for item in self.range(cf::RECORD_NS, &prefix, &keys::prefix_end(&prefix), false) {
            let (key, _) = item?;
            let (_, record_id) = keys::decode_record_ns_key(&key)?;
            if let Some(record) = self
                .get_decoded::<StoredRecord>(cf::RECORDS, &keys::record_key(memory_id, record_id))?
                .filter(|r| readable(r, now_us))
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Every live record whose namespace starts with `prefix` (for reflections over an
    /// actor's episodes; not paginated, so callers keep the prefix narrow).
    pub fn records_under(
        &self,
        memory_id: &str,
        prefix: &str,
        now_us: u64,
    ) -> Result<Vec<StoredRecord>> {
        let memory = keys::memory_prefix(memory_id);
        let lower = [memory.as_slice(), prefix.as_bytes()].concat();
        let end = keys::prefix_successor(&lower).min(keys::prefix_end(&memory));
        let mut out = Vec::new();
        for item in self.range(cf::RECORD_NS, &lower, &end, false) {
            let (key, _) = item?;
            let (_, record_id) = keys::decode_record_ns_key(&key)?;
            if let Some(record) = self
                .get_decoded::<StoredRecord>(cf::RECORDS, &keys::record_key(memory_id, record_id))?
                .filter(|r| readable(r, now_us))
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// One page of live records whose namespace starts with the listing's prefix, in
    /// (namespace, record id) order; `visible` runs inside the scan.
    pub fn list_records(
        &self,
        listing: &RecordListing,
        now_us: u64,
        visible: impl Fn(&StoredRecord) -> bool,
    ) -> Result<(Vec<StoredRecord>, String)> {
        self.memory(&listing.memory_id)?;
        let memory = keys::memory_prefix(&listing.memory_id);
        let scope = [
            b"records\0".as_slice(),
            &memory,
            listing.namespace_prefix.as_bytes(),
            b"\0",
            listing.strategy_id.as_bytes(),
        ]
        .concat();
        let lower = [memory.as_slice(), listing.namespace_prefix.as_bytes()].concat();
        let start = match page::decode("page_token", &listing.page_token, &scope)? {
            // Resume just after the last key returned (its key ends in NUL).
            Some(cursor) => [memory.as_slice(), &cursor, &[0, 0]].concat(),
            None => lower.clone(),
        };
        let end = keys::prefix_successor(&lower).min(keys::prefix_end(&memory));
        let mut records: Vec<StoredRecord> = Vec::new();
        for item in self.range(cf::RECORD_NS, &start, &end, false) {
            let (key, _) = item?;
            let (namespace, record_id) = keys::decode_record_ns_key(&key)?;
            let Some(record) = self
                .get_decoded::<StoredRecord>(
                    cf::RECORDS,
                    &keys::record_key(&listing.memory_id, record_id),
                )?
                .filter(|r| readable(r, now_us))
                .filter(|r| listing.strategy_id.is_empty() || r.strategy_id == listing.strategy_id)
                .filter(&visible)
            else {
                continue;
            };
            if records.len() == listing.page_size {
                let last = records.last().expect("page_size >= 1");
                let cursor = [last.namespace.as_bytes(), b"\0", last.record_id.as_bytes()].concat();
                return Ok((records, page::encode(&scope, &cursor)));
            }
            debug_assert_eq!(namespace, record.namespace);
            records.push(record);
        }
        Ok((records, String::new()))
    }

    /// The record as it is now, its earlier versions, then (recursively) the records it
    /// superseded, each newest first.
    pub fn record_history(
        &self,
        memory_id: &str,
        record_id: &str,
        now_us: u64,
        visible: impl Fn(&StoredRecord) -> bool + Copy,
    ) -> Result<Vec<StoredRecord>> {
        let current = self.record(memory_id, record_id, now_us, visible)?;
        let mut out = Vec::new();
        let mut todo = vec![current];
        while let Some(record) = todo.pop() {
            let prefix = keys::record_key(memory_id, &record.record_id);
            let mut versions = Vec::new();
            for item in self.range(
                cf::RECORD_HISTORY,
                &prefix,
                &keys::prefix_end(&prefix),
                true,
            ) {
                let (_, value) = item?;
                versions.push(codec::decode::<StoredRecord>(&value)?);
            }
            for older in record.supersedes.iter().rev() {
                if let Some(old) = self
                    .get_decoded::<StoredRecord>(cf::RECORDS, &keys::record_key(memory_id, older))?
                    .filter(|r| visible(r))
                {
                    todo.push(old);
                }
            }
            out.push(record);
            out.extend(versions);
            if out.len() > 10_000 {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes a record with its history and index entries.
    pub fn delete_record(&self, record: &StoredRecord, memory_id: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.erase_record(&mut batch, memory_id, record, Kind::Deleted);
        self.commit(batch)?;
        self.bump_records_generation();
        Ok(())
    }

    /// Erases a record; `kind` (DELETED or EXPIRED) goes to the change log.
    pub(super) fn erase_record(
        &self,
        batch: &mut WriteBatch,
        memory_id: &str,
        r: &StoredRecord,
        kind: Kind,
    ) {
        self.log_record_change(batch, memory_id, &r.record_id);
        self.log_change(batch, &record_change(memory_id, r, kind));
        let key = keys::record_key(memory_id, &r.record_id);
        batch.delete_cf(self.cf(cf::RECORDS), &key);
        batch.delete_range_cf(self.cf(cf::RECORD_HISTORY), &key, &keys::prefix_end(&key));
        batch.delete_cf(
            self.cf(cf::RECORD_NS),
            keys::record_ns_key(memory_id, &r.namespace, &r.record_id),
        );
        if !r.actor_id.is_empty() {
            batch.delete_cf(
                self.cf(cf::ACTOR_RECORDS),
                keys::actor_record_key(memory_id, &r.actor_id, &r.record_id),
            );
        }
        if !r.client_token.is_empty() {
            let scope = keys::record_token_scope(&r.actor_id, &r.namespace);
            batch.delete_cf(
                self.cf(cf::META),
                keys::record_token_key(memory_id, &scope, &r.client_token),
            );
        }
    }

    /// Erases records whose strategy's `record_expiry_days` have passed (reads hide them
    /// already; this reclaims their space and index entries). Returns how many it erased.
    pub fn purge_expired_records(&self, now_us: u64) -> Result<usize> {
        let mut batch = WriteBatch::default();
        let mut erased = 0;
        for item in self.range(cf::RECORDS, &[], &[0xff; 1], false) {
            let (key, value) = item?;
            let record: StoredRecord = codec::decode(&value)?;
            if record.expire_us == 0 || record.expire_us > now_us {
                continue;
            }
            let (memory_id, _) = keys::decode_actor_key(&key)?;
            self.erase_record(&mut batch, memory_id, &record, Kind::Expired);
            erased += 1;
            if erased % 1000 == 0 {
                self.commit(std::mem::take(&mut batch))?;
            }
        }
        if erased > 0 {
            self.commit(batch)?;
            self.bump_records_generation();
        }
        Ok(erased)
    }

    /// Erases every record drawn from an actor's events (part of `DeleteActor`).
    pub(super) fn erase_actor_records(
        &self,
        batch: &mut WriteBatch,
        memory_id: &str,
        actor_id: &str,
    ) -> Result<()> {
        let prefix = keys::actor_prefix(memory_id, actor_id);
        for item in self.range(
            cf::ACTOR_RECORDS,
            &prefix,
            &keys::prefix_end(&prefix),
            false,
        ) {
            let (key, _) = item?;
            let record_id = keys::decode_actor_record_key(&key)?;
            if let Some(record) = self
                .get_decoded::<StoredRecord>(cf::RECORDS, &keys::record_key(memory_id, record_id))?
            {
                self.erase_record(batch, memory_id, &record, Kind::Deleted);
            }
        }
        Ok(())
    }

    /// Writes a record (`live`: in its namespace's listing; else superseded). `kind` goes to
    /// the change log; `None` for a change watchers need not see (more source events).
    pub(super) fn put_record(
        &self,
        batch: &mut WriteBatch,
        memory_id: &str,
        r: &StoredRecord,
        live: bool,
        kind: Option<Kind>,
    ) {
        self.log_record_change(batch, memory_id, &r.record_id);
        if let Some(kind) = kind {
            self.log_change(batch, &record_change(memory_id, r, kind));
        }
        batch.put_cf(
            self.cf(cf::RECORDS),
            keys::record_key(memory_id, &r.record_id),
            codec::encode(r),
        );
        let ns_key = keys::record_ns_key(memory_id, &r.namespace, &r.record_id);
        if live {
            batch.put_cf(self.cf(cf::RECORD_NS), ns_key, []);
        } else {
            batch.delete_cf(self.cf(cf::RECORD_NS), ns_key);
        }
        if !r.actor_id.is_empty() {
            batch.put_cf(
                self.cf(cf::ACTOR_RECORDS),
                keys::actor_record_key(memory_id, &r.actor_id, &r.record_id),
                [],
            );
        }
    }

    pub(super) fn archive(&self, batch: &mut WriteBatch, memory_id: &str, old: &StoredRecord) {
        batch.put_cf(
            self.cf(cf::RECORD_HISTORY),
            keys::record_history_key(memory_id, &old.record_id, old.version),
            codec::encode(old),
        );
    }

    /// Commits some jobs' record changes and removes the jobs and their queue entries,
    /// atomically: a crash before this commit re-runs the jobs; after it, they are gone. All
    /// jobs belong to one actor.
    pub fn complete_jobs(
        &self,
        jobs: &[(Vec<u8>, StoredJob)],
        changes: &[RecordChange],
    ) -> Result<()> {
        let Some((first, _)) = jobs.first() else {
            return Ok(());
        };
        let (memory_id, actor_id, _) = keys::decode_job_key(first)?;
        let _memory_gate = self.memory_gate.blocking_read();
        let _actor_gate = self.actor_gate(memory_id, actor_id).blocking_read();
        let mut batch = WriteBatch::default();
        for (job_key, job) in jobs {
            // A job vanishes only when its actor (or memory) is erased while the batch ran:
            // then nothing of the batch may be written.
            if self.get(cf::JOBS, job_key)?.is_none() {
                return Ok(());
            }
            batch.delete_cf(self.cf(cf::JOBS), job_key);
            if job.due_us != 0 {
                batch.delete_cf(self.cf(cf::QUEUE), keys::queue_key(job.due_us, job_key));
            }
        }
        for change in changes {
            match change {
                RecordChange::Create(new) => {
                    self.put_record(&mut batch, memory_id, new, true, Some(Kind::Created))
                }
                RecordChange::Provenance(new) => {
                    self.put_record(&mut batch, memory_id, new, true, None)
                }
                RecordChange::Update { old, new } => {
                    self.archive(&mut batch, memory_id, old);
                    self.put_record(&mut batch, memory_id, new, true, Some(Kind::Updated));
                }
                RecordChange::Supersede { old, new } => {
                    // The closed record keeps its text; only its validity ends.
                    let mut closed = old.clone();
                    closed.invalid_from_us = new.valid_from_us.max(old.valid_from_us);
                    closed.superseded_by = new.record_id.clone();
                    closed.update_us = new.update_us;
                    let superseded = Some(Kind::Superseded);
                    self.put_record(&mut batch, memory_id, &closed, false, superseded);
                    self.put_record(&mut batch, memory_id, new, true, Some(Kind::Created));
                }
            }
        }
        // No fsync of its own: the batch is atomic, and if a crash loses it, it loses the
        // jobs' removal too, so they run again. The next synced write persists it.
        self.commit_relaxed(batch)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::NewRecord;
    use super::super::codec::StoredMemory;
    use super::super::test_support::temp_store;
    use super::*;

    /// Creates memory `m-1`; returns the time it was created.
    pub(in crate::store) fn memory_m1(store: &Store) -> u64 {
        let now = crate::time::now_us();
        let memory = StoredMemory {
            memory_id: "m-1".into(),
            name: "m".into(),
            create_us: now,
            update_us: now,
            ..Default::default()
        };
        store.create_memory(memory, "", vec![]).unwrap();
        now
    }

    #[test]
    fn expired_records_are_hidden_then_purged() {
        let (_dir, store) = temp_store();
        let now = memory_m1(&store);
        let record = |id: &str, expire_us: u64| {
            Ok(NewRecord {
                record: StoredRecord {
                    record_id: id.into(),
                    namespace: "/ns".into(),
                    text: format!("record {id}"),
                    actor_id: "a".into(),
                    version: 1,
                    create_us: now,
                    update_us: now,
                    expire_us,
                    ..Default::default()
                },
                request_hash: vec![],
            })
        };
        store
            .create_records(
                "m-1",
                vec![record("old", now - 1), record("live", now + 86_400_000_000)],
            )
            .unwrap();
        let everyone = |_: &StoredRecord| true;
        assert!(matches!(
            store.record("m-1", "old", now, everyone),
            Err(ServiceError::NotFound(_))
        ));
        let listing = RecordListing {
            memory_id: "m-1".into(),
            namespace_prefix: "/".into(),
            strategy_id: String::new(),
            page_size: 10,
            page_token: String::new(),
        };
        let (listed, _) = store.list_records(&listing, now, everyone).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|r| r.record_id.as_str())
                .collect::<Vec<_>>(),
            ["live"]
        );

        let generation = store.records_generation();
        assert_eq!(store.purge_expired_records(now).unwrap(), 1);
        assert!(store.stored_record("m-1", "old").unwrap().is_none());
        assert!(store.stored_record("m-1", "live").unwrap().is_some());
        assert_eq!(store.namespace_records("m-1", "/ns", 0).unwrap().len(), 1);
        assert!(store.records_generation() > generation);
        assert_eq!(store.purge_expired_records(now).unwrap(), 0);
    }
}
