//! Retrieval: search indexes derived from RocksDB (the source of truth) and the searches the
//! API runs on them. The BM25 indexes over memory records ([`RecordIndex`]) and events
//! ([`EventIndex`]) follow the store's index log on their own thread ([`Indexer`]); filters, including the caller's tenant policy, are part of
//! every search query, never applied to a result list afterwards.

mod events_index;
mod index;
mod indexer;
mod tantivy_index;

pub use events_index::{EventHit, EventIndex, EventSearch};
pub use index::{Access, MetadataMatch, RecordHit, RecordIndex, RecordSearch, metadata_number};
pub use indexer::{Indexer, Indexes, Rebuilt, ReindexHandle, catch_up};
