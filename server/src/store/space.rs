//! Disk full. A write that fails because the data directory's filesystem has no space left
//! is refused with RESOURCE_EXHAUSTED ([`ServiceError::StorageFull`]) instead of a bare
//! internal error, and the store remembers that its last write failed that way, so that
//! `memd_storage_full` shows it until a write succeeds again.
//!
//! Nothing else is needed to recover: RocksDB stops accepting writes after such an error
//! (reads go on), and the SstFileManager it creates at open polls the free space every
//! five seconds and resumes the database once there is room. Writes refused meanwhile were
//! never acknowledged, so nothing acknowledged is lost.

use crate::error::{Result, ServiceError};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether RocksDB's `err` means the filesystem is full. RocksDB reports both an ENOSPC
/// from the OS and its own `Status::NoSpace` (which writes return while the database is
/// stopped after one) with strerror's text; the Rust binding keeps only the message.
pub fn is_no_space(err: &rocksdb::Error) -> bool {
    says_no_space(err.as_ref())
}

fn says_no_space(message: &str) -> bool {
    message.contains("No space left on device")
}

/// The store's view of its disk: full since a write failed for lack of space, until one
/// succeeds.
#[derive(Debug, Default)]
pub struct DiskSpace {
    full: AtomicBool,
}

impl DiskSpace {
    /// Notes what a write's outcome says about the disk and converts its error.
    pub fn track<T>(&self, outcome: std::result::Result<T, rocksdb::Error>) -> Result<T> {
        match outcome {
            Ok(value) => {
                if self.full.swap(false, Ordering::AcqRel) {
                    tracing::info!("storage accepts writes again");
                }
                Ok(value)
            }
            Err(err) => {
                if is_no_space(&err) && !self.full.swap(true, Ordering::AcqRel) {
                    tracing::error!(%err, "storage is full: writes are refused until disk space is freed; reads go on");
                }
                Err(ServiceError::from(err))
            }
        }
    }

    /// Whether the last write failed for lack of space.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages RocksDB gives on a full disk are told apart from other failures, which
    /// stay internal errors and do not mark the disk full.
    #[test]
    fn no_space_is_told_apart_from_other_storage_errors() {
        // A WAL append on a full tmpfs, and a write while the database is stopped after it.
        assert!(says_no_space(
            "IO error: No space left on device: While appending to file: /data/000009.log: No space left on device"
        ));
        assert!(says_no_space("IO error: No space left on device"));
        // A real RocksDB error of another kind: a path that cannot be a directory.
        let other = rocksdb::DB::open_default("/dev/null/memd").unwrap_err();
        assert!(!is_no_space(&other), "{other}");
        let space = DiskSpace::default();
        let err = space.track::<()>(Err(other)).unwrap_err();
        assert!(matches!(err, ServiceError::Internal(_)), "{err:?}");
        assert!(!space.is_full());
        space.track(Ok(())).unwrap();
        assert!(!space.is_full());
    }
}
