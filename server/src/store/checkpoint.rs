//! RocksDB checkpoints for backups (see `crate::backup`).

use super::Store;
use super::keys::cf;
use rocksdb::{DB, Options};
use std::path::Path;

impl Store {
    /// Writes a checkpoint of every column family, at one sequence number, into `path`
    /// (which must not exist) and returns that sequence number. Memtables are flushed first,
    /// so the checkpoint holds every write committed before the call; writes continue
    /// meanwhile.
    pub fn checkpoint(&self, path: &Path) -> Result<u64, rocksdb::Error> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(path)?;
        // The checkpoint's own sequence number, read back from it (which also proves it
        // opens).
        let checkpoint = DB::open_cf_for_read_only(&Options::default(), path, cf::ALL, false)?;
        Ok(checkpoint.latest_sequence_number())
    }
}
