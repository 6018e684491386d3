//! How `memory_budget_mb` is shared out among memd's caches and write buffers.
//!
//! One number bounds what would otherwise grow with use: RocksDB's block cache and
//! memtables (the memtables are charged to the cache, so the two together stay within the
//! RocksDB share) and the writer heaps of the two search indexes (records and events), which
//! tantivy flushes to a segment when full. What the budget does not cover is listed in
//! docs/operations.md ("Memory footprint"): the embedding model (~90 MB, fixed), the vectors
//! (384 bytes per embedded document, the data itself) and requests in flight.

use crate::config::ConfigError;

const MIB: usize = 1 << 20;

/// Tantivy refuses a writer heap under 15 MB; a little over it.
pub const MIN_INDEX_WRITER_BYTES: usize = 16 * MIB;
/// Beyond this a larger writer heap only means larger first segments.
const MAX_INDEX_WRITER_BYTES: usize = 64 * MIB;
/// The search indexes with a writer each (records, events).
const INDEX_WRITERS: usize = 2;
/// The smallest RocksDB share that still caches the index and filter blocks of a small store.
const MIN_ROCKSDB_BYTES: usize = 16 * MIB;
/// The smallest budget: two minimal writer heaps and the minimal RocksDB share.
pub const MIN_BUDGET_MB: usize = (INDEX_WRITERS * MIN_INDEX_WRITER_BYTES + MIN_ROCKSDB_BYTES) / MIB;

/// The budget, shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// RocksDB's block cache capacity, memtables included.
    pub rocksdb_bytes: usize,
    /// The part of `rocksdb_bytes` memtables may fill before the largest is flushed.
    pub memtable_bytes: usize,
    /// Each search index writer's heap.
    pub index_writer_bytes: usize,
}

impl MemoryBudget {
    /// An eighth of the budget (16-64 MiB) to each index writer, the rest to RocksDB, half
    /// of that at most in memtables. `block_cache_mb` replaces the RocksDB share when set
    /// (the setting of memd before the budget existed).
    pub fn split(budget_mb: usize, block_cache_mb: Option<usize>) -> Result<Self, ConfigError> {
        if budget_mb < MIN_BUDGET_MB {
            return Err(ConfigError(format!(
                "memory_budget_mb = {budget_mb} is too small: at least {MIN_BUDGET_MB} (two search index writers of 16 MiB and 16 MiB for RocksDB)"
            )));
        }
        let budget = budget_mb.saturating_mul(MIB);
        let index_writer_bytes = (budget / 8).clamp(MIN_INDEX_WRITER_BYTES, MAX_INDEX_WRITER_BYTES);
        let rocksdb_bytes = match block_cache_mb {
            Some(mb) if mb.saturating_mul(MIB) < MIN_ROCKSDB_BYTES => {
                return Err(ConfigError(format!(
                    "block_cache_mb = {mb} is too small: at least {}",
                    MIN_ROCKSDB_BYTES / MIB
                )));
            }
            Some(mb) => mb.saturating_mul(MIB),
            None => budget - INDEX_WRITERS * index_writer_bytes,
        };
        Ok(Self {
            rocksdb_bytes,
            memtable_bytes: rocksdb_bytes / 2,
            index_writer_bytes,
        })
    }

    /// Everything the budget bounds, in bytes.
    pub fn total_bytes(&self) -> usize {
        self.rocksdb_bytes + INDEX_WRITERS * self.index_writer_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_is_shared_out_within_itself() {
        let budget = MemoryBudget::split(128, None).unwrap();
        assert_eq!(budget.index_writer_bytes, 16 * MIB);
        assert_eq!(budget.rocksdb_bytes, 96 * MIB);
        assert_eq!(budget.memtable_bytes, 48 * MIB);
        assert_eq!(budget.total_bytes(), 128 * MIB);
    }

    #[test]
    fn writer_heaps_grow_with_the_budget_up_to_a_ceiling() {
        let budget = MemoryBudget::split(256, None).unwrap();
        assert_eq!(budget.index_writer_bytes, 32 * MIB);
        assert_eq!(budget.rocksdb_bytes, 192 * MIB);
        let large = MemoryBudget::split(4096, None).unwrap();
        assert_eq!(large.index_writer_bytes, 64 * MIB);
        assert_eq!(large.total_bytes(), 4096 * MIB);
    }

    #[test]
    fn block_cache_mb_sets_the_rocksdb_share() {
        let budget = MemoryBudget::split(128, Some(512)).unwrap();
        assert_eq!(budget.rocksdb_bytes, 512 * MIB);
        assert_eq!(budget.memtable_bytes, 256 * MIB);
        assert_eq!(budget.index_writer_bytes, 16 * MIB);
    }

    #[test]
    fn budgets_too_small_to_work_are_refused_by_name() {
        assert_eq!(MIN_BUDGET_MB, 48);
        assert!(MemoryBudget::split(48, None).is_ok());
        let err = MemoryBudget::split(47, None).unwrap_err().to_string();
        assert!(err.contains("memory_budget_mb = 47"), "{err}");
        let err = MemoryBudget::split(128, Some(8)).unwrap_err().to_string();
        assert!(err.contains("block_cache_mb = 8"), "{err}");
    }
}
