//! Consolidation state per namespace, kept across jobs: stripe locks serialise the jobs that
//! write one namespace (so two jobs never both add the same fact), and each namespace's index
//! of live records is cached until the store reports a change made outside the workers.
//! Such a change (a record written through the API, an actor or a memory deleted) makes every
//! cached index stale at once, so the cache is emptied then rather than left to hold indexes
//! that no job can use (a deleted memory's namespaces stayed cached until evicted: ~10 MiB
//! per deleted LoCoMo-sized memory, the growth `memctl bench ingest --cycles` showed).

use crate::error::ServiceError;
use crate::store::Store;
use memd_extractor::{Namespace, Slot};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;
/// Namespaces whose consolidation index stays in memory.
const CACHED: usize = 1024;

/// The shared namespace locks and index cache of the worker pool.
pub struct Namespaces {
    stripes: Box<[Mutex<()>]>,
    cache: Mutex<Cache>,
}

/// Indexes by (memory, namespace), all built at `generation` of the store's records.
#[derive(Default)]
struct Cache {
    generation: u64,
    indexes: HashMap<(String, String), Namespace>,
}

impl Cache {
    /// Empties the cache when the store's records have moved past its generation.
    fn move_to(&mut self, generation: u64) {
        if generation > self.generation {
            self.indexes.clear();
            // Give the memory back too: a burst of namespaces must not stay reserved.
            self.indexes.shrink_to_fit();
            self.generation = generation;
        }
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            cache: Mutex::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A record's stored slot ("running:KEY" / "exclusive:KEY").
pub fn parse_slot(text: &str) -> Option<Slot> {
    if let Some(key) = text.strip_prefix("running:") {
        Some(Slot::Running(key.to_string()))
    } else {
        text.strip_prefix("exclusive:")
            .map(|key| Slot::Exclusive(key.to_string()))
    }
}

/// The stored form of a slot.
pub fn slot_string(slot: &Option<Slot>) -> String {
    match slot {
        Some(Slot::Running(key)) => format!("running:{key}"),
        Some(Slot::Exclusive(key)) => format!("exclusive:{key}"),
        None => String::new(),
    }
}

impl Namespaces {
    /// The stripe a namespace's lock lives in.
    pub fn stripe_of(&self, memory_id: &str, namespace: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (memory_id, namespace).hash(&mut hasher);
        (hasher.finish() as usize) % STRIPES
    }

    /// Waits for a stripe (callers hold no other stripe, so this cannot deadlock).
    pub fn lock(&self, stripe: usize) -> MutexGuard<'_, ()> {
        lock(&self.stripes[stripe])
    }

    /// Takes a stripe if it is free.
    pub fn try_lock(&self, stripe: usize) -> Option<MutexGuard<'_, ()>> {
        match self.stripes[stripe].try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Takes the namespace's index out of the cache (or builds it from the store). Callers
    /// hold the namespace's stripe and give the index back with [`Namespaces::put`] once
    /// their changes are committed.
    pub fn take(
        &self,
        store: &Store,
        memory_id: &str,
        namespace: &str,
        now_us: u64,
    ) -> Result<(u64, Namespace), ServiceError> {
        let generation = store.records_generation();
        let key = (memory_id.to_string(), namespace.to_string());
        {
            let mut cache = lock(&self.cache);
            cache.move_to(generation);
            if cache.generation == generation
                && let Some(index) = cache.indexes.remove(&key)
            {
                return Ok((generation, index));
            }
        }
        let mut index = Namespace::default();
        for record in store.namespace_records(memory_id, namespace, now_us)? {
            index.insert(&record.record_id, &record.text, parse_slot(&record.slot));
        }
        Ok((generation, index))
    }

    /// Returns a committed index to the cache, built at the store's records `generation`.
    /// A newer generation empties the cache first; an index from an older one is dropped.
    pub fn put(&self, key: (String, String), generation: u64, index: Namespace) {
        let mut cache = lock(&self.cache);
        if generation < cache.generation {
            return;
        }
        cache.move_to(generation);
        if cache.indexes.len() >= CACHED && !cache.indexes.contains_key(&key) {
            // Evict an arbitrary entry: it is rebuilt from the store when needed.
            if let Some(old) = cache.indexes.keys().next().cloned() {
                cache.indexes.remove(&old);
            }
        }
        cache.indexes.insert(key, index);
    }

    /// Indexes cached now.
    #[cfg(test)]
    fn cached(&self) -> usize {
        lock(&self.cache).indexes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(memory: &str, namespace: &str) -> (String, String) {
        (memory.to_string(), namespace.to_string())
    }

    #[test]
    fn a_newer_generation_empties_the_cache_and_an_older_index_is_dropped() {
        let namespaces = Namespaces::default();
        namespaces.put(key("m1", "/a"), 3, Namespace::default());
        namespaces.put(key("m1", "/b"), 3, Namespace::default());
        assert_eq!(namespaces.cached(), 2);
        // A memory was deleted (the generation moved on): nothing cached before is usable.
        namespaces.put(key("m2", "/a"), 4, Namespace::default());
        assert_eq!(namespaces.cached(), 1);
        // A job that started before the change hands back a stale index: not kept.
        namespaces.put(key("m1", "/c"), 3, Namespace::default());
        assert_eq!(namespaces.cached(), 1);
        namespaces.put(key("m2", "/a"), 4, Namespace::default());
        assert_eq!(namespaces.cached(), 1, "the same key replaces its entry");
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let namespaces = Namespaces::default();
        for i in 0..CACHED + 10 {
            namespaces.put(key("m", &format!("/n{i}")), 1, Namespace::default());
        }
        assert_eq!(namespaces.cached(), CACHED);
    }
}
