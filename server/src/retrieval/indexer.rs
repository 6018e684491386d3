//! Keeps the records index in step with RocksDB by applying the store's index log. After a
//! crash the index resumes from the position its last commit recorded; an index without one
//! (new, or lost) is rebuilt from the records themselves.

use super::index::RecordIndex;
use crate::error::Result;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Log entries applied per index commit at most.
const BATCH: usize = 2000;
/// How often the indexer looks for new changes: records are searchable within about this.
const POLL: Duration = Duration::from_millis(100);

/// Applies what the log holds after `applied`; returns the new position. With `None`
/// (no usable index) it first rebuilds the index from every live record.
pub fn catch_up(store: &Store, index: &RecordIndex, applied: Option<u64>) -> Result<u64> {
    let mut applied = match applied {
        Some(seq) => seq,
        None => rebuild(store, index)?,
    };
    loop {
        let changes = store.index_changes(applied, BATCH)?;
        let Some(&(last, _)) = changes.last() else {
            return Ok(applied);
        };
        for (_, change) in &changes {
            if change.record_id.is_empty() {
                index.delete_memory(&change.memory_id);
                continue;
            }
            // The record's state now, not at the time of the change: replays are idempotent.
            match store.stored_record(&change.memory_id, &change.record_id)? {
                Some(record) if record.invalid_from_us == 0 => {
                    index.upsert(&change.memory_id, &record)?
                }
                _ => index.delete(&change.memory_id, &change.record_id),
            }
        }
        index.commit(last)?;
        store.trim_index_log(last)?;
        applied = last;
    }
}

fn rebuild(store: &Store, index: &RecordIndex) -> Result<u64> {
    // Read the log position first: changes made during the scan are replayed after it.
    let upto = store.last_index_seq()?;
    index.clear()?;
    let mut count = 0usize;
    store.for_each_live_record(|memory_id, record| {
        count += 1;
        index.upsert(memory_id, &record)
    })?;
    index.commit(upto)?;
    store.trim_index_log(upto)?;
    tracing::info!(records = count, "rebuilt the records search index");
    Ok(upto)
}

/// Follows the log until `stop` resolves.
pub async fn run_indexer(
    store: Arc<Store>,
    index: Arc<RecordIndex>,
    mut applied: u64,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let (store, index) = (store.clone(), index.clone());
        match tokio::task::spawn_blocking(move || catch_up(&store, &index, Some(applied))).await {
            Ok(Ok(position)) => applied = position,
            Ok(Err(err)) => tracing::warn!(%err, "indexing records failed; retrying"),
            Err(err) => tracing::error!(%err, "the records indexer panicked"),
        }
    }
}
