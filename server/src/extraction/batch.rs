//! A batch: the jobs of one actor whose results commit together in one write (with the
//! jobs' removal), so the extraction workers add one write per batch, not one per job.
//!
//! A batch holds the stripe locks of the namespaces its jobs wrote and their in-memory
//! indexes (which already include the uncommitted records), and gives the indexes back to the
//! cache only after the commit. It never blocks on a stripe while holding another: a job that
//! needs a busy stripe makes the worker commit first (see [`Batch::index`]).

use super::namespaces::Namespaces;
use crate::error::ServiceError;
use crate::store::codec::{StoredJob, StoredRecord};
use crate::store::{RecordChange, Store};
use memd_extractor::Namespace;
use std::collections::HashMap;
use std::sync::MutexGuard;

/// Uncommitted results of some jobs of one actor.
pub struct Batch<'a> {
    namespaces: &'a Namespaces,
    stripes: HashMap<usize, MutexGuard<'a, ()>>,
    indexes: HashMap<(String, String), (u64, Namespace)>,
    /// Records written by the batch so far, by id (newest version).
    pub written: HashMap<String, StoredRecord>,
    pub changes: Vec<RecordChange>,
    /// The jobs the commit removes, with their creation times.
    pub jobs: Vec<(Vec<u8>, StoredJob)>,
}

impl<'a> Batch<'a> {
    pub fn new(namespaces: &'a Namespaces) -> Self {
        Self {
            namespaces,
            stripes: HashMap::new(),
            indexes: HashMap::new(),
            written: HashMap::new(),
            changes: Vec::new(),
            jobs: Vec::new(),
        }
    }

    /// The namespace's index, locked for this batch; `None` when another worker holds its
    /// stripe and this batch already holds some: commit, then retry with a fresh batch.
    pub fn index(
        &mut self,
        store: &Store,
        memory_id: &str,
        namespace: &str,
        now_us: u64,
    ) -> Result<Option<&mut Namespace>, ServiceError> {
        let stripe = self.namespaces.stripe_of(memory_id, namespace);
        if !self.stripes.contains_key(&stripe) {
            let guard = if self.stripes.is_empty() {
                self.namespaces.lock(stripe)
            } else {
                match self.namespaces.try_lock(stripe) {
                    Some(guard) => guard,
                    None => return Ok(None),
                }
            };
            self.stripes.insert(stripe, guard);
        }
        let key = (memory_id.to_string(), namespace.to_string());
        if !self.indexes.contains_key(&key) {
            let taken = self.namespaces.take(store, memory_id, namespace, now_us)?;
            self.indexes.insert(key.clone(), taken);
        }
        Ok(self.indexes.get_mut(&key).map(|(_, index)| index))
    }

    /// The index [`Batch::index`] locked, with the batch's written records and changes.
    pub fn parts(
        &mut self,
        memory_id: &str,
        namespace: &str,
    ) -> (
        &mut Namespace,
        &mut HashMap<String, StoredRecord>,
        &mut Vec<RecordChange>,
    ) {
        let key = (memory_id.to_string(), namespace.to_string());
        let (_, index) = self
            .indexes
            .get_mut(&key)
            .expect("Batch::index locked this namespace first");
        (index, &mut self.written, &mut self.changes)
    }

    /// Commits the batch; the indexes go back to the cache only if the commit succeeded.
    pub fn commit(self, store: &Store) -> Result<(), ServiceError> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        store.complete_jobs(&self.jobs, &self.changes)?;
        for (key, (generation, index)) in self.indexes {
            self.namespaces.put(key, generation, index);
        }
        Ok(())
    }
}
