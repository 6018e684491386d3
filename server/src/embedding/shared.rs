//! The copy of the model that embeds documents (records and events) in the background, and
//! with `embedding_query_threads = 0` (the default) search queries too: one copy instead of
//! two saves ~110 MB of resident memory.
//!
//! Queries go first: the indexer embeds one batch at a time and, between batches, waits
//! while a query is waiting, so a query waits at most for the batch in progress (~30 ms for 8
//! texts on 2 cores). The copy is loaded on a thread at `indexing_nice`, so ONNX Runtime's
//! threads, which inherit that, yield the CPU to request handlers.

use super::{BATCH, EmbeddingSettings, Model, by_length};
use crate::error::{Result, ServiceError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One model behind a lock, with queries ahead of documents.
#[derive(Debug)]
pub struct SharedModel {
    model: Mutex<Model>,
    /// Queries waiting for the lock: the indexer holds back while there are any.
    queries_waiting: AtomicUsize,
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
        model.embed(texts)
    }

    /// Document embeddings, in order: sorted by length and embedded a batch at a time,
    /// giving way to queries between batches.
    pub fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        by_length(texts, |batch| {
            while self.queries_waiting.load(Ordering::Acquire) > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.lock().embed_batched(batch, BATCH)
        })
    }
}
