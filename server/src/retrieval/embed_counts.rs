//! What the embedding thread has embedded since start, by kind, and the time spent inside
//! the model: read by `GetIndexStatus` and `/metrics`, so that ingest cost can be told apart
//! from the model's own (`memctl bench ingest`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one embedded document was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    /// An event's turns.
    Event,
    /// A record embedded for the first time.
    Record,
    /// A record that already had a vector (it was updated).
    RecordAgain,
    /// An event not embedded: it waited longer than `embedding_max_lag_seconds`.
    SkippedEvent,
}

/// Running totals, updated by the embedding thread.
#[derive(Debug, Default)]
pub struct EmbedCounters {
    events: AtomicU64,
    records: AtomicU64,
    records_again: AtomicU64,
    skipped_events: AtomicU64,
    model_us: AtomicU64,
}

/// A snapshot of [`EmbedCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EmbedCounts {
    pub events: u64,
    pub records: u64,
    /// Records embedded again after an update.
    pub records_again: u64,
    /// Events left unembedded because they waited too long (`embedding_max_lag_seconds`).
    pub skipped_events: u64,
    /// Wall time inside the model (tokenising and ONNX Runtime).
    pub model_seconds: f64,
}

impl EmbedCounters {
    /// Counts one document about to be embedded (or skipped).
    pub fn count(&self, document: Embedded) {
        let counter = match document {
            Embedded::Event => &self.events,
            Embedded::Record => &self.records,
            Embedded::RecordAgain => &self.records_again,
            Embedded::SkippedEvent => &self.skipped_events,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the time of one model call.
    pub fn model_time(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.model_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> EmbedCounts {
        EmbedCounts {
            events: self.events.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            records_again: self.records_again.load(Ordering::Relaxed),
            skipped_events: self.skipped_events.load(Ordering::Relaxed),
            model_seconds: self.model_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}
