//! Stored embeddings: derived from records and events like the search indexes, but costly to
//! recompute, so they are kept in RocksDB (`vectors`) with the index-log position they have
//! reached. A restart loads them instead of re-embedding everything.

use super::Store;
use super::codec::{self, StoredVector, StoredVectorState};
use super::keys::{self, cf};
use crate::error::Result;
use rocksdb::WriteBatch;

/// Where the embeddings' state lives in `meta`.
const STATE_KEY: &[u8] = b"v/state";

/// One change to the stored embeddings.
#[derive(Debug, Clone)]
pub enum VectorWrite {
    Put {
        kind: u8,
        memory_id: String,
        doc_key: Vec<u8>,
        vector: StoredVector,
    },
    Delete {
        kind: u8,
        memory_id: String,
        doc_key: Vec<u8>,
    },
    /// Every document of `kind` in the memory whose key starts with `doc_prefix`.
    DeletePrefix {
        kind: u8,
        memory_id: String,
        doc_prefix: Vec<u8>,
    },
}

impl Store {
    /// The embeddings' model fingerprint and log position, if any were stored.
    pub fn vector_state(&self) -> Result<Option<StoredVectorState>> {
        self.get_decoded(cf::META, STATE_KEY)
    }

    /// Applies `writes` and records `state`, atomically (no fsync: derived data, and the
    /// position only moves with what it covers).
    pub fn write_vectors(&self, writes: &[VectorWrite], state: &StoredVectorState) -> Result<()> {
        let mut batch = WriteBatch::default();
        let vectors = self.cf(cf::VECTORS);
        for write in writes {
            match write {
                VectorWrite::Put {
                    kind,
                    memory_id,
                    doc_key,
                    vector,
                } => batch.put_cf(
                    vectors,
                    keys::vector_key(*kind, memory_id, doc_key),
                    codec::encode(vector),
                ),
                VectorWrite::Delete {
                    kind,
                    memory_id,
                    doc_key,
                } => batch.delete_cf(vectors, keys::vector_key(*kind, memory_id, doc_key)),
                VectorWrite::DeletePrefix {
                    kind,
                    memory_id,
                    doc_prefix,
                } => {
                    let start = keys::vector_key(*kind, memory_id, doc_prefix);
                    let end = keys::prefix_successor(&start);
                    batch.delete_range_cf(vectors, start, end);
                }
            }
        }
        batch.put_cf(self.cf(cf::META), STATE_KEY, codec::encode(state));
        self.commit_relaxed(batch)
    }

    /// Forgets where the stored embeddings stand in the index log, so the next start with a
    /// model rebuilds them: a server running without one trims the log past them.
    pub fn forget_vector_state(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::META), STATE_KEY);
        self.commit_relaxed(batch)
    }

    /// Drops every stored embedding and the state (the model changed).
    pub fn clear_vectors(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(cf::VECTORS),
            [0u8].as_slice(),
            [0xffu8; 2].as_slice(),
        );
        batch.delete_cf(self.cf(cf::META), STATE_KEY);
        self.commit_relaxed(batch)
    }

    /// One stored embedding.
    pub fn stored_vector(
        &self,
        kind: u8,
        memory_id: &str,
        doc_key: &[u8],
    ) -> Result<Option<StoredVector>> {
        self.get_decoded(cf::VECTORS, &keys::vector_key(kind, memory_id, doc_key))
    }

    /// Every stored embedding: (kind, memory_id, doc_key, vector).
    pub fn for_each_vector(
        &self,
        mut visit: impl FnMut(u8, &str, &[u8], StoredVector) -> Result<()>,
    ) -> Result<()> {
        for item in self.range(cf::VECTORS, &[], &[0xff; 2], false) {
            let (key, value) = item?;
            let (kind, memory_id, doc_key) = keys::decode_vector_key(&key)?;
            visit(kind, memory_id, doc_key, codec::decode(&value)?)?;
        }
        Ok(())
    }
}
