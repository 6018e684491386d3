//! Long-term memory extraction: background workers drain the job queue that appends and
//! session transitions fill (see `store::outbox`), run an extractor on each job's events,
//! consolidate the candidates with the namespace's records, and commit the results together
//! with the job's removal.

pub mod batch;
pub mod endpoints;
pub mod extractors;
pub mod job;
pub mod namespaces;
mod threads;
pub(crate) mod turns;
mod worker;

pub use endpoints::LlmEndpoints;
pub use worker::{ExtractionWorkers, WorkerOptions};
