//! Consolidation state per namespace, kept across jobs: stripe locks serialise the jobs that
//! write one namespace (so two jobs never both add the same fact), and each namespace's index
//! of live records is cached until the store reports a change made outside the workers.

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
    cache: Mutex<HashMap<(String, String), (u64, Namespace)>>,
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
        if let Some((cached_at, index)) = lock(&self.cache).remove(&key)
            && cached_at == generation
        {
            return Ok((generation, index));
        }
        let mut index = Namespace::default();
        for record in store.namespace_records(memory_id, namespace, now_us)? {
            index.insert(&record.record_id, &record.text, parse_slot(&record.slot));
        }
        Ok((generation, index))
    }

    /// Returns a committed index to the cache.
    pub fn put(&self, key: (String, String), generation: u64, index: Namespace) {
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHED {
            // Evict an arbitrary entry: it is rebuilt from the store when needed.
            if let Some(old) = cache.keys().next().cloned() {
                cache.remove(&old);
            }
        }
        cache.insert(key, (generation, index));
    }
}
