//! The only code that talks to RocksDB: the source of truth for everything memd holds.
//! The key layout is documented in [`keys`]; values use the private format in [`codec`].
//!
//! Concurrency: every request's changes are one atomic batch. Read-modify-write sequences (a
//! session's counters, its timers) run under a striped per-session mutex; `DeleteActor` and
//! `DeleteMemory` take exclusive gates that appends hold shared, so an append can never
//! resurrect data inside a range that is being erased. Appends are group-committed by the
//! committer thread ([`commit`]): concurrent requests share one WAL write and one fsync.

pub mod codec;
pub mod keys;
pub mod page;
pub mod space;

mod actors;
mod apikeys;
mod changes;
mod checkpoint;
mod commit;
mod events;
mod expiry;
mod index_log;
mod jobs;
mod memories;
mod outbox;
mod record_writes;
mod records;
mod sessions;
mod vectors;

pub use changes::{ChangeReader, GAP_GRACE, cursor_too_old};
pub use codec::StoredChange;
pub use events::{EventFilterSpec, EventListing, EventView, MetadataCondition, NewEvent};
pub use jobs::{JobFilter, JobView, Lease, LoadedEvent};
pub use outbox::{default_triggers, estimate_tokens, runs_in_process, triggers};
pub use record_writes::{ItemResult, NewRecord, RecordEdit};
pub use records::{RecordChange, RecordListing};
pub use sessions::{SessionTransition, SessionView};
pub use vectors::VectorWrite;

/// The on-disk format's version: raised when a change to the key layout or the value codec
/// means an older memd cannot read the data. Backups record it; a restore refuses a newer one.
pub const FORMAT_VERSION: u32 = 1;

use crate::error::{Result, ServiceError};
use crate::time::now_us;
use codec::StoredMemory;
use keys::cf;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, Options, ReadOptions, SliceTransform,
    WriteBatch, WriteBufferManager, WriteOptions,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{Mutex as AsyncMutex, RwLock as AsyncRwLock, broadcast};

const LOCK_STRIPES: usize = 4096;

/// A raw key-value pair read from RocksDB.
type Entry = (Box<[u8]>, Box<[u8]>);

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the WAL before acknowledging a write (survives power loss).
    pub sync_writes: bool,
    /// Block cache size in bytes, memtables included.
    pub block_cache_bytes: usize,
    /// Memtables of all column families together: past this the largest is flushed.
    pub memtable_bytes: usize,
}

impl Default for StoreOptions {
    /// As the server's defaults have it.
    fn default() -> Self {
        let config = crate::config::Config::default();
        let budget = config
            .memory_budget()
            .expect("the default memory budget is valid");
        Self {
            sync_writes: config.sync_writes,
            block_cache_bytes: budget.rocksdb_bytes,
            memtable_bytes: budget.memtable_bytes,
        }
    }
}

/// The RocksDB-backed store.
pub struct Store {
    db: Arc<DB>,
    write_opts: WriteOptions,
    /// Group commit for appends (see [`commit`]).
    committer: commit::Committer,
    /// Whether the disk was full at the last write (see [`space`]).
    space: Arc<space::DiskSpace>,
    /// Memory configurations by id, loaded at open and kept in step with every change.
    memories: RwLock<HashMap<String, Arc<StoredMemory>>>,
    /// Expiry horizon per memory, shared with the compaction filter.
    expiry: Arc<expiry::ExpiryTable>,
    /// Per-session mutexes for read-modify-write of session bookkeeping. Async locks: an
    /// append holds its stripe while it awaits its group commit; blocking paths (sweeper,
    /// deletes) take them with `blocking_*` from the blocking pool.
    session_locks: Box<[AsyncMutex<()>]>,
    /// Shared by appends, exclusive for `DeleteActor` of an actor hashing here.
    actor_gates: Box<[AsyncRwLock<()>]>,
    /// Shared by appends, exclusive for memory creation, update and deletion.
    memory_gate: AsyncRwLock<()>,
    /// Arrival counter for event ids; starts at the wall clock in ns so ids stay unique
    /// across restarts.
    next_seq: AtomicU64,
    /// Next change log sequence number (see `changes.rs`).
    next_change_seq: AtomicU64,
    /// Next index-log sequence number: contiguous within a run, so that a follower can tell
    /// an entry still being committed from none (see `index_log.rs`).
    next_index_seq: AtomicU64,
    /// The first index-log number of this run: below it nothing can still be in flight.
    index_seq_base: AtomicU64,
    /// Index-log numbers found missing (handed out, not yet committed), and since when.
    index_gaps: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    /// Woken after commits, for the watch streams.
    changes_notify: tokio::sync::Notify,
    transitions: broadcast::Sender<SessionTransition>,
    /// Woken after a commit that queued extraction jobs.
    jobs_ready: Arc<tokio::sync::Notify>,
    /// See [`Store::records_generation`].
    records_generation: AtomicU64,
    /// Serialises record writes through the API (idempotency tokens are checked, then set).
    record_api_lock: std::sync::Mutex<()>,
    /// Serialises leasing, so two workers never lease the same job.
    lease_lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stripe(parts: &[&str]) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut hasher);
    (hasher.finish() as usize) % LOCK_STRIPES
}

/// Largest memtable of one column family (RocksDB's default).
const MAX_MEMTABLE_BYTES: usize = 64 << 20;

fn cf_options(name: &str, cache: &rocksdb::Cache, memtable_bytes: usize) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Two column families can each fill a memtable before the write buffer manager flushes.
    opts.set_write_buffer_size((memtable_bytes / 2).clamp(1 << 20, MAX_MEMTABLE_BYTES));
    if matches!(name, cf::SESSIONS | cf::BRANCHES | cf::EVENTS) {
        // One actor's data is one prefix: bloom filters skip files without it.
        opts.set_prefix_extractor(SliceTransform::create(
            "memd.actor_prefix.v1",
            keys::actor_prefix_of,
            Some(keys::has_actor_prefix),
        ));
        opts.set_memtable_prefix_bloom_ratio(0.1);
    }
    opts.set_block_based_table_factory(&table);
    opts
}

impl Store {
    /// Opens (creating if needed) the store in `path`.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self> {
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        let expiry = Arc::new(expiry::ExpiryTable::default());
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(
            std::thread::available_parallelism().map_or(2, |n| n.get() as i32),
        );
        db_opts.set_keep_log_file_num(10);
        // Memtables are charged to the block cache: the two share one bound.
        db_opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager_with_cache(
            options.memtable_bytes,
            false,
            cache.clone(),
        ));
        let descriptors = cf::ALL.iter().map(|&name| {
            let mut opts = cf_options(name, &cache, options.memtable_bytes);
            let expiring = match name {
                cf::EVENTS => Some(expiry::ExpiringKind::Events),
                cf::TOKENS => Some(expiry::ExpiringKind::Tokens),
                _ => None,
            };
            if let Some(kind) = expiring {
                // Expired events and their tokens are dropped by compaction; periodic
                // compaction makes sure that happens even on files nothing writes over.
                opts.set_compaction_filter_factory(expiry::ExpiryFilterFactory::new(
                    expiry.clone(),
                    kind,
                ));
                opts.set_periodic_compaction_seconds(24 * 3600);
            }
            ColumnFamilyDescriptor::new(name, opts)
        });
        let db = Arc::new(DB::open_cf_descriptors(&db_opts, path, descriptors)?);
        let write_opts = || {
            let mut opts = WriteOptions::default();
            opts.set_sync(options.sync_writes);
            opts
        };
        let (transitions, _) = broadcast::channel(4096);
        let space = Arc::new(space::DiskSpace::default());
        let store = Self {
            committer: commit::Committer::start(db.clone(), options.sync_writes, space.clone()),
            space,
            db,
            write_opts: write_opts(),
            memories: RwLock::default(),
            expiry,
            session_locks: (0..LOCK_STRIPES).map(|_| AsyncMutex::new(())).collect(),
            actor_gates: (0..LOCK_STRIPES).map(|_| AsyncRwLock::new(())).collect(),
            memory_gate: AsyncRwLock::new(()),
            next_seq: AtomicU64::new(now_us().saturating_mul(1000)),
            next_change_seq: AtomicU64::new(1),
            next_index_seq: AtomicU64::new(now_us().saturating_mul(1000)),
            index_seq_base: AtomicU64::new(0),
            index_gaps: std::sync::Mutex::default(),
            changes_notify: tokio::sync::Notify::new(),
            transitions,
            jobs_ready: Arc::default(),
            records_generation: AtomicU64::new(0),
            record_api_lock: std::sync::Mutex::new(()),
            lease_lock: std::sync::Mutex::new(()),
        };
        store.load_memories()?;
        store.seed_sequence_above_log()?;
        store.seed_change_sequence()?;
        let moved = store.scope_legacy_record_tokens()?;
        if moved > 0 {
            tracing::info!(
                moved,
                "record client tokens scoped to their actor or namespace"
            );
        }
        Ok(store)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// Commits one request's changes atomically, with the configured durability.
    fn commit(&self, batch: WriteBatch) -> Result<()> {
        self.space
            .track(self.db.write_opt(batch, &self.write_opts))?;
        self.changes_committed();
        Ok(())
    }

    /// Commits without waiting for an fsync: for writes that are re-derived after a crash
    /// (extraction results, which go together with their job's removal).
    fn commit_relaxed(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        self.space.track(self.db.write_opt(batch, &opts))?;
        self.changes_committed();
        Ok(())
    }

    fn get(&self, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf_name), key)?)
    }

    fn get_decoded<M: prost::Message + Default>(
        &self,
        cf_name: &str,
        key: &[u8],
    ) -> Result<Option<M>> {
        self.get(cf_name, key)?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
    }

    /// An iterator over `[start, end)` of a column family, forward or backward.
    fn range(
        &self,
        cf_name: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> impl Iterator<Item = Result<Entry>> + '_ {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(start.to_vec());
        opts.set_iterate_upper_bound(end.to_vec());
        // Bounds may cross prefixes (e.g. a memory's actors); don't let the prefix
        // extractor cut the scan short.
        opts.set_total_order_seek(true);
        let mode = if reverse {
            rocksdb::IteratorMode::End
        } else {
            rocksdb::IteratorMode::Start
        };
        self.db
            .iterator_cf_opt(self.cf(cf_name), opts, mode)
            .map(|item| item.map_err(ServiceError::from))
    }

    fn next_event_seq(&self, ts_us: u64) -> keys::EventSeq {
        keys::EventSeq {
            ts_us,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn session_lock(&self, memory_id: &str, actor_id: &str, session_id: &str) -> &AsyncMutex<()> {
        &self.session_locks[stripe(&[memory_id, actor_id, session_id])]
    }

    fn actor_gate(&self, memory_id: &str, actor_id: &str) -> &AsyncRwLock<()> {
        &self.actor_gates[stripe(&[memory_id, actor_id])]
    }

    /// Notified whenever a commit queued extraction jobs (the extraction workers wait on it).
    pub fn jobs_ready(&self) -> Arc<tokio::sync::Notify> {
        self.jobs_ready.clone()
    }

    /// Subscribes to session state transitions (see [`SessionTransition`]).
    pub fn subscribe_transitions(&self) -> broadcast::Receiver<SessionTransition> {
        self.transitions.subscribe()
    }

    /// Flushes memtables to disk (used at shutdown so restarts replay little WAL).
    pub fn flush(&self) -> Result<()> {
        let cfs: Vec<_> = cf::ALL.iter().map(|name| self.cf(name)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Whether the last write failed because the disk is full (see [`space`]).
    pub fn storage_full(&self) -> bool {
        self.space.is_full()
    }

    /// Integer RocksDB properties per column family, for metrics.
    pub fn int_properties(&self, names: &[&str]) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for &cf_name in cf::ALL.iter() {
            for &prop in names {
                if let Ok(Some(value)) = self.db.property_int_value_cf(self.cf(cf_name), prop) {
                    out.push((cf_name, prop.to_string(), value));
                }
            }
        }
        out
    }

    /// Raw put of `value` under a scratch key with the store's durability: the floor the
    /// write benchmark compares CreateEvent with.
    pub fn raw_put_batch(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (key, value) in entries {
            batch.put_cf(self.cf(cf::META), key, value);
        }
        self.commit(batch)
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A store in a fresh temp dir (kept alive by the returned guard).
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(
            dir.path(),
            &StoreOptions {
                sync_writes: false,
                ..Default::default()
            },
        )
        .expect("open store");
        (dir, store)
    }
}
