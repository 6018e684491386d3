//! Retrieval: search indexes derived from RocksDB (the source of truth) and the searches the
//! API runs on them. The BM25 indexes over memory records ([`RecordIndex`]) and events
//! ([`EventIndex`]) follow the store's index log on their own thread ([`Indexer`]); the
//! embeddings ([`Vectors`]) follow it on another ([`VectorIndexer`]). Filters, including the
//! caller's tenant policy, are part of every search, never applied to a result list
//! afterwards. Hybrid search combines the keyword and the semantic scores, each normalised.

mod embed_counts;
mod embed_plan;
mod events_index;
mod fusion;
mod hybrid;
mod index;
mod indexer;
mod log_cursors;
mod partitions;
mod scoring;
mod source_turns;
mod tantivy_index;
mod vector_indexer;
mod vectors;

pub use embed_counts::EmbedCounts;
pub use events_index::{EventHit, EventIndex, EventSearch};
pub use fusion::convex;
pub use hybrid::Mode;
pub use index::{Access, MetadataMatch, RecordHit, RecordIndex, RecordSearch, metadata_number};
pub use indexer::{Indexer, Indexes, Rebuilt, ReindexHandle, catch_up};
pub use vector_indexer::{
    EVENTS as EVENT_VECTORS, LogCursors, RECORDS as RECORD_VECTORS, StartedVectors, VectorIndexer,
    VectorStatus, Vectors,
};
pub use vectors::{
    CANDIDATES, NameFilter, PARTITION_AT, Quantized, TimeFilter, VectorEntry, VectorFilter,
    VectorHit, VectorIndex,
};

/// Semantic search: the query embedder and the vector indexes.
#[derive(Debug, Clone)]
pub struct Semantic {
    pub queries: crate::embedding::QueryEmbedder,
    pub vectors: std::sync::Arc<Vectors>,
    pub status: std::sync::Arc<VectorStatus>,
    /// Whether raw events are embedded (`embedding_events`).
    pub events: bool,
}

/// How far the indexes trail the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// Index-log entries the keyword indexes have not applied.
    pub keyword: usize,
    /// Entries the embeddings have not applied (0 without a model).
    pub vectors: usize,
    /// How long the oldest entry the keyword indexes have not applied has waited, in seconds
    /// (0 when caught up).
    pub keyword_lag_seconds: f64,
    /// The same for the embeddings (0 without a model).
    pub vectors_lag_seconds: f64,
    /// At most how long a changed record has waited for its embedding: records are embedded
    /// ahead of the events before them, so this stays small while events wait.
    pub record_vectors_lag_seconds: f64,
    /// Every document is being embedded anew.
    pub rebuilding: bool,
    /// The model's fingerprint, or "off".
    pub model: String,
    /// Vector spaces searched through partitions.
    pub partitioned: usize,
    /// What has been embedded since start (zeros without a model).
    pub embedded: EmbedCounts,
}

impl Retrieval {
    /// Counts the backlogs (blocking; reads the index log).
    pub fn backlog(&self, store: &crate::store::Store) -> crate::error::Result<Backlog> {
        // Counting stops here: beyond it the number only says "far behind", and counting a
        // million pending embeddings (a bulk load) took a scan of the whole log on every
        // status call or metrics scrape.
        const COUNT_LIMIT: usize = 100_000;
        let (keyword, vectors) = self.cursors.positions();
        let semantic = self.semantic.as_ref();
        // Counted before the lags are read: a snapshot that shows nothing pending shows no lag.
        let keyword_pending = store.index_changes_after(keyword, COUNT_LIMIT)?;
        let vectors_pending = match vectors {
            Some(position) => store.index_changes_after(position, COUNT_LIMIT)?,
            None => 0,
        };
        let now = crate::time::now_us();
        let lag = |after: Option<u64>| -> crate::error::Result<f64> {
            Ok(match after {
                Some(after) => store.index_log_age_us(after, now)? as f64 / 1e6,
                None => 0.0,
            })
        };
        Ok(Backlog {
            keyword: keyword_pending,
            vectors: vectors_pending,
            keyword_lag_seconds: lag(Some(keyword))?,
            vectors_lag_seconds: lag(vectors)?,
            record_vectors_lag_seconds: lag(vectors.map(|_| self.cursors.records_ahead()))?,
            rebuilding: semantic.is_some_and(|s| s.status.rebuilding()),
            model: match (semantic, &self.semantic_unavailable) {
                (Some(s), _) => s.status.model.clone(),
                (None, Some(reason)) => format!("off: {reason}"),
                (None, None) => "off".into(),
            },
            partitioned: semantic.map_or(0, |s| {
                s.vectors.records.partitioned() + s.vectors.events.partitioned()
            }),
            embedded: semantic.map_or_else(EmbedCounts::default, |s| s.status.counts.snapshot()),
        })
    }
}

/// Everything searches need: the BM25 indexes, and semantic search when an embedding model
/// is configured.
#[derive(Debug, Clone)]
pub struct Retrieval {
    pub indexes: std::sync::Arc<Indexes>,
    pub semantic: Option<Semantic>,
    /// Why semantic search is off although it was configured (the model or ONNX Runtime could
    /// not be loaded), for `GetIndexStatus`.
    pub semantic_unavailable: Option<String>,
    /// Where each index stands in the index log.
    pub cursors: std::sync::Arc<LogCursors>,
}
