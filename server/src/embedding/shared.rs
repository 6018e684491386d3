//! The copy of the model that embeds documents (records and events) in the background, and
//! with `embedding_query_threads = 0` (the default) search queries too: one copy instead of
//! two saves ~60 MiB of resident memory.
//!
//! Queries go first: the indexer embeds one batch at a time and, between batches, waits
//! while a query is waiting, so a query waits at most for the batch in progress. Batches are
//! [`BATCH`] texts (the least CPU per text) while nobody searches, and
//! [`BATCH_WHILE_QUERIED`] for a second after any query, so that a search under a heavy
//! ingest waits for ~2 texts instead of 8 (~10 ms instead of ~40 on 2 cores; `memctl bench
//! tenants`: a quiet tenant's p99 under another tenant's flood 62-79 ms -> 29-35 ms) for ~11%
//! more CPU per document meanwhile. The copy is loaded on a thread at `indexing_nice`, so
//! ONNX Runtime's threads, which inherit that, yield the CPU to request handlers.

use super::{BATCH, EmbeddingSettings, Model, by_length};
use crate::error::{Result, ServiceError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Texts per document batch for [`QUERIES_RECENT`] after a query.
pub const BATCH_WHILE_QUERIED: usize = 2;
const _: () = assert!(BATCH_WHILE_QUERIED < BATCH);

/// How long after a query documents are embedded in short batches.
const QUERIES_RECENT: Duration = Duration::from_secs(1);

/// One model behind a lock, with queries ahead of documents.
#[derive(Debug)]
pub struct SharedModel {
    model: Mutex<Model>,
    /// Queries waiting for the lock: the indexer holds back while there are any.
    queries_waiting: AtomicUsize,
    recent: RecentQueries,
    dims: usize,
}

impl SharedModel {
    /// Loads the model with `threads` ONNX Runtime threads on a thread at `nice`.
    pub fn load(settings: &EmbeddingSettings, threads: usize, nice: i32) -> Result<Arc<Self>> {
        let settings = settings.clone();
        let loading = std::thread::Builder::new()
            .name("memd-embed-model".into())
            .spawn(move || {
                // Before ONNX Runtime starts its threads, which inherit the nice value.
                crate::priority::lower_current_thread(nice, "embedding");
                Model::load(&settings, threads)
            })
            .map_err(|err| ServiceError::Internal(format!("starting the model loader: {err}")))?;
        let model = loading
            .join()
            .map_err(|_| ServiceError::Internal("loading the embedding model panicked".into()))??;
        Ok(Arc::new(Self {
            dims: model.dims(),
            model: Mutex::new(model),
            queries_waiting: AtomicUsize::new(0),
            recent: RecentQueries::new(),
        }))
    }

    /// Vector length.
    pub fn dims(&self) -> usize {
        self.dims
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Query embeddings, ahead of any documents.
    pub fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.queries_waiting.fetch_add(1, Ordering::AcqRel);
        let mut model = self.lock();
        self.queries_waiting.fetch_sub(1, Ordering::AcqRel);
        let embedded = model.embed(texts);
        drop(model);
        self.recent.seen();
        embedded
    }

    /// Document embeddings, in order: sorted by length and embedded a batch at a time,
    /// giving way to queries between batches.
    pub fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        by_length(texts, |mut rest| {
            let mut vectors = Vec::with_capacity(rest.len());
            while !rest.is_empty() {
                while self.queries_waiting.load(Ordering::Acquire) > 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let size = self.recent.document_batch().min(rest.len());
                let (now, later) = rest.split_at(size);
                vectors.extend(self.lock().embed_batched(now, size)?);
                rest = later;
            }
            Ok(vectors)
        })
    }
}

/// When the last query was embedded, to pick the document batch size.
#[derive(Debug)]
struct RecentQueries {
    epoch: Instant,
    /// Milliseconds from `epoch` to the end of the last query, plus one (0: none yet).
    last: AtomicU64,
}

impl RecentQueries {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn seen(&self) {
        self.last.store(self.now(), Ordering::Release);
    }

    /// [`BATCH_WHILE_QUERIED`] within [`QUERIES_RECENT`] of a query, else [`BATCH`].
    fn document_batch(&self) -> usize {
        self.batch_at(self.now())
    }

    fn batch_at(&self, now: u64) -> usize {
        let last = self.last.load(Ordering::Acquire);
        if last > 0 && now.saturating_sub(last) < QUERIES_RECENT.as_millis() as u64 {
            BATCH_WHILE_QUERIED
        } else {
            BATCH
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_go_in_short_batches_for_a_second_after_a_query() {
        let recent = RecentQueries::new();
        assert_eq!(recent.document_batch(), BATCH, "no query yet");
        recent.seen();
        assert_eq!(recent.document_batch(), BATCH_WHILE_QUERIED);
        let last = recent.last.load(Ordering::Acquire);
        assert_eq!(recent.batch_at(last + 999), BATCH_WHILE_QUERIED);
        assert_eq!(recent.batch_at(last + 1000), BATCH, "a second on");
    }
}
