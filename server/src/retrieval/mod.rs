//! Retrieval: search indexes derived from RocksDB (the source of truth) and the searches the
//! API runs on them. The BM25 index over memory records ([`RecordIndex`]) follows the store's
//! index log ([`run_indexer`]); filters, including the caller's tenant policy, are part of
//! every search query, never applied to a result list afterwards.

mod index;
mod indexer;

pub use index::{Access, RecordHit, RecordIndex, RecordSearch};
pub use indexer::{catch_up, run_indexer};
