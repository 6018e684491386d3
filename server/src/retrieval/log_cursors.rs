//! Where each follower of the index log stands (the keyword indexes and the embeddings):
//! entries are trimmed from the log only once both have applied them.

use crate::error::Result;
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where each follower of the index log stands; entries both have applied are trimmed.
#[derive(Debug)]
pub struct LogCursors {
    text: AtomicU64,
    vectors: AtomicU64,
    /// How far the embeddings have looked ahead for records (see `VectorIndexer`): records
    /// changed up to here are embedded although `vectors` has not reached them.
    records_ahead: AtomicU64,
}

impl LogCursors {
    /// `vectors`: `None` when there are no embeddings (they hold nothing back).
    pub fn new(vectors: Option<u64>) -> Self {
        Self {
            text: AtomicU64::new(0),
            vectors: AtomicU64::new(vectors.unwrap_or(u64::MAX)),
            records_ahead: AtomicU64::new(0),
        }
    }

    /// Records the keyword indexes' position without trimming (nothing new was applied).
    pub fn note_text(&self, applied: u64) {
        self.text.store(applied, Ordering::Release);
    }

    pub fn text_applied(&self, store: &Store, applied: u64) -> Result<()> {
        self.text.store(applied, Ordering::Release);
        self.trim(store)
    }

    pub(super) fn vectors_applied(&self, store: &Store, applied: u64) -> Result<()> {
        self.vectors.store(applied, Ordering::Release);
        self.trim(store)
    }

    pub(super) fn note_records_ahead(&self, position: u64) {
        self.records_ahead.store(position, Ordering::Release);
    }

    /// Up to where record changes are embedded (at least the embeddings' position).
    pub fn records_ahead(&self) -> u64 {
        self.records_ahead
            .load(Ordering::Acquire)
            .max(self.vectors.load(Ordering::Acquire))
    }

    /// The positions of the keyword indexes and of the embeddings (`None` without them).
    pub fn positions(&self) -> (u64, Option<u64>) {
        let vectors = self.vectors.load(Ordering::Acquire);
        (
            self.text.load(Ordering::Acquire),
            (vectors != u64::MAX).then_some(vectors),
        )
    }

    fn trim(&self, store: &Store) -> Result<()> {
        let upto = self
            .text
            .load(Ordering::Acquire)
            .min(self.vectors.load(Ordering::Acquire));
        if upto > 0 {
            store.trim_index_log(upto)?;
        }
        Ok(())
    }
}
