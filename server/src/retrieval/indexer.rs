//! Keeps the search indexes in step with RocksDB by applying the store's index log. After a
//! crash each index resumes from the position its last commit recorded; an index without one
//! (new, or lost) is rebuilt from RocksDB first.

use super::events_index::EventIndex;
use super::index::RecordIndex;
use super::vector_indexer::LogCursors;
use crate::error::{Result, ServiceError};
use crate::store::Store;
use crate::store::codec::StoredIndexChange;
use crate::time::now_us;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Log entries applied per index commit at most.
const BATCH: usize = 2000;
/// How often the indexer looks for new changes: things are searchable within about this.
const POLL: Duration = Duration::from_millis(250);

/// The search indexes, which follow the index log together.
#[derive(Debug)]
pub struct Indexes {
    pub records: RecordIndex,
    pub events: EventIndex,
}

impl Indexes {
    fn apply(&self, store: &Store, change: &StoredIndexChange) -> Result<()> {
        let memory_id = &change.memory_id;
        if !change.record_id.is_empty() {
            // The record's state now, not at the time of the change: replays are idempotent.
            match store.stored_record(memory_id, &change.record_id)? {
                Some(record) if record.invalid_from_us == 0 => {
                    self.records.upsert(memory_id, &record)?
                }
                _ => self.records.delete(memory_id, &change.record_id),
            }
        } else if !change.event_key.is_empty() {
            let now = now_us();
            match store.event_by_key(&change.event_key, now)? {
                Some(view) => {
                    let before = store.events_before(&change.event_key, now)?;
                    self.events.upsert(&change.event_key, &view, &before)?
                }
                None => self.events.delete(&change.event_key),
            }
        } else if !change.actor_id.is_empty() {
            // The actor's records were logged one by one; its events go by actor.
            self.events.delete_actor(memory_id, &change.actor_id);
        } else {
            self.records.delete_memory(memory_id);
            self.events.delete_memory(memory_id);
        }
        Ok(())
    }

    fn commit(&self, applied: u64) -> Result<()> {
        self.records.commit(applied)?;
        self.events.commit(applied)
    }

    /// Both indexes back to their last commits, with working writers.
    fn rollback(&self) -> Result<()> {
        self.records.rollback()?;
        self.events.rollback()
    }
}

/// Applies what the log held when called, after the indexes' positions, and returns the
/// position both have reached; an index without a position is first rebuilt from RocksDB.
/// Changes that arrive meanwhile wait for the next call: under steady writes the log is never
/// empty, and the indexing thread must still get back to its stop flag and rebuild requests.
pub fn catch_up(
    store: &Store,
    indexes: &Indexes,
    cursors: &LogCursors,
    records_at: Option<u64>,
    events_at: Option<u64>,
) -> Result<u64> {
    let target = store.last_index_seq()?;
    catch_up_to(store, indexes, cursors, records_at, events_at, target)
}

/// [`catch_up`] to the log position `target` (at least; it applies whole batches).
fn catch_up_to(
    store: &Store,
    indexes: &Indexes,
    cursors: &LogCursors,
    records_at: Option<u64>,
    events_at: Option<u64>,
    target: u64,
) -> Result<u64> {
    let records_at = match records_at {
        Some(seq) => seq,
        None => rebuild_records(store, &indexes.records)?,
    };
    let events_at = match events_at {
        Some(seq) => seq,
        None => rebuild_events(store, &indexes.events)?,
    };
    // Replaying what one index already has is harmless (each change re-reads the state).
    let mut applied = records_at.min(events_at);
    loop {
        let changes = if applied < target {
            store.index_changes(applied, BATCH)?
        } else {
            Vec::new()
        };
        let Some(&(last, _)) = changes.last() else {
            cursors.note_text(applied);
            return Ok(applied);
        };
        for (_, change) in &changes {
            indexes.apply(store, change)?;
        }
        indexes.commit(last)?;
        cursors.text_applied(store, last)?;
        applied = last;
    }
}

fn rebuild_records(store: &Store, index: &RecordIndex) -> Result<u64> {
    rebuild_records_counted(store, index).map(|(upto, _)| upto)
}

fn rebuild_records_counted(store: &Store, index: &RecordIndex) -> Result<(u64, usize)> {
    // Read the log position first: changes made during the scan are replayed after it.
    let upto = store.committed_index_seq()?;
    index.clear()?;
    let mut count = 0usize;
    store.for_each_live_record(|memory_id, record| {
        count += 1;
        index.upsert(memory_id, &record)
    })?;
    index.commit(upto)?;
    tracing::info!(records = count, "rebuilt the records search index");
    Ok((upto, count))
}

fn rebuild_events(store: &Store, index: &EventIndex) -> Result<u64> {
    rebuild_events_counted(store, index).map(|(upto, _)| upto)
}

fn rebuild_events_counted(store: &Store, index: &EventIndex) -> Result<(u64, usize)> {
    let upto = store.committed_index_seq()?;
    index.clear()?;
    let now = now_us();
    let mut count = 0usize;
    store.for_each_event(|key, _| {
        if let Some(view) = store.event_by_key(key, now)? {
            count += 1;
            index.upsert(key, &view, &store.events_before(key, now)?)?;
        }
        Ok(())
    })?;
    index.commit(upto)?;
    tracing::info!(events = count, "rebuilt the events search index");
    Ok((upto, count))
}

/// Records and events indexed by a rebuild.
pub type Rebuilt = (usize, usize);

type ReindexReply = std::sync::mpsc::SyncSender<Result<Rebuilt>>;

/// Asks the indexing thread to rebuild both indexes from RocksDB.
#[derive(Debug, Clone)]
pub struct ReindexHandle(std::sync::mpsc::Sender<ReindexReply>);

impl ReindexHandle {
    /// Blocks until the rebuild is done.
    pub fn reindex(&self) -> Result<Rebuilt> {
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        self.0
            .send(reply)
            .map_err(|_| ServiceError::Internal("the indexer is not running".into()))?;
        done.recv()
            .map_err(|_| ServiceError::Internal("the indexer stopped during the rebuild".into()))?
    }
}

fn rebuild_both(store: &Store, indexes: &Indexes, cursors: &LogCursors) -> Result<(u64, Rebuilt)> {
    let (records_at, records) = rebuild_records_counted(store, &indexes.records)?;
    let (events_at, events) = rebuild_events_counted(store, &indexes.events)?;
    let applied = catch_up(store, indexes, cursors, Some(records_at), Some(events_at))?;
    Ok((applied, (records, events)))
}

/// Rolls both indexes back after a failed write, logging (the next round retries) when
/// even that fails.
fn restart_writers(indexes: &Indexes) {
    if let Err(err) = indexes.rollback() {
        tracing::warn!(%err, "restarting the index writers failed; retrying");
    }
}

/// The indexing thread: opens the indexes, brings them in line with RocksDB, then follows the
/// index log until stopped.
#[derive(Debug)]
pub struct Indexer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    reindex: ReindexHandle,
}

impl Indexer {
    /// Starts the thread (at nice value `nice`; tantivy's writer threads, started from it,
    /// inherit it) and returns once the indexes have caught up, so the server serves nothing
    /// stale after a crash.
    /// The log is trimmed up to what every follower in `cursors` has applied.
    pub fn start(
        store: Arc<Store>,
        dir: &Path,
        writer_heap: usize,
        nice: i32,
        cursors: Arc<LogCursors>,
    ) -> Result<(Arc<Indexes>, Self)> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (records_dir, events_dir) = (dir.join("records"), dir.join("events"));
        let stopping = stop.clone();
        let (reindex_tx, reindex_rx) = std::sync::mpsc::channel::<ReindexReply>();
        let thread = std::thread::Builder::new()
            .name("memd-index".into())
            .spawn(move || {
                crate::priority::lower_current_thread(nice, "indexing");
                let opened = (|| {
                    let (records, records_at) = RecordIndex::open(&records_dir, writer_heap)?;
                    let (events, events_at) = EventIndex::open(&events_dir, writer_heap)?;
                    let indexes = Arc::new(Indexes { records, events });
                    let applied = catch_up(&store, &indexes, &cursors, records_at, events_at)?;
                    Ok::<_, ServiceError>((indexes, applied))
                })();
                let (indexes, mut applied) = match opened {
                    Ok(opened) => opened,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(indexes.clone()));
                while !stopping.load(Ordering::Acquire) {
                    match reindex_rx.recv_timeout(POLL) {
                        Ok(reply) => {
                            let rebuilt = rebuild_both(&store, &indexes, &cursors).map(
                                |(position, counts)| {
                                    applied = position;
                                    counts
                                },
                            );
                            if rebuilt.is_err() {
                                // Back to the last commits, which `applied` still names.
                                restart_writers(&indexes);
                            }
                            let _ = reply.send(rebuilt);
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(POLL)
                        }
                    }
                    match catch_up(&store, &indexes, &cursors, Some(applied), Some(applied)) {
                        Ok(position) => applied = position,
                        Err(err) => {
                            // A failed write (a full disk) leaves tantivy's writers dead:
                            // restart them; the next round replays from `applied`, which
                            // both indexes have committed.
                            tracing::warn!(%err, "indexing failed; retrying");
                            restart_writers(&indexes);
                        }
                    }
                }
            })
            .map_err(|err| ServiceError::Internal(format!("starting the indexer: {err}")))?;
        let indexes = ready_rx
            .recv()
            .map_err(|_| ServiceError::Internal("the indexer stopped while starting".into()))??;
        Ok((
            indexes,
            Self {
                stop,
                thread: Some(thread),
                reindex: ReindexHandle(reindex_tx),
            },
        ))
    }

    /// A handle that asks this indexer for a full rebuild.
    pub fn reindex_handle(&self) -> ReindexHandle {
        self.reindex.clone()
    }

    /// Stops following the log (what is committed stays; the rest is replayed next start).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
