//! Keeps the embeddings in step with RocksDB. Embedding costs milliseconds per text where
//! BM25 indexing costs microseconds, so the embeddings follow the index log on their own
//! thread, with their own position (stored with them in RocksDB): a burst of writes delays
//! semantic hits by what it takes to embed it, never the keyword index. The log is trimmed
//! only up to what both followers have applied ([`LogCursors`]).

use super::embed_counts::{EmbedCounters, Embedded};
use super::embed_plan::{Op, embed, embed_record, latest_only, resolve};
pub use super::log_cursors::LogCursors;
use super::vectors::{Quantized, VectorEntry, VectorIndex};
use crate::embedding::{Embeddings, SharedModel};
use crate::error::{Result, ServiceError};
use crate::store::codec::{StoredIndexChange, StoredVector, StoredVectorState};
use crate::store::{Store, VectorWrite, keys};
use crate::time::now_us;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Kind byte of record embeddings in the `vectors` column family.
pub const RECORDS: u8 = b'r';
/// Kind byte of event embeddings.
pub const EVENTS: u8 = b'e';
/// Log entries per embedding round: a round is one RocksDB batch.
const ROUND: usize = 256;
/// Log entries read per page when looking ahead for records, and at most per round.
const LOOKAHEAD_PAGE: usize = 4096;
const LOOKAHEAD_MAX: usize = 65_536;
const POLL: Duration = Duration::from_millis(100);

/// What the embedding thread is doing, and asking it to start over.
#[derive(Debug, Default)]
pub struct VectorStatus {
    rebuild_requested: AtomicBool,
    rebuilding: AtomicBool,
    /// The model's fingerprint.
    pub model: String,
    /// What has been embedded since start.
    pub counts: EmbedCounters,
}

impl VectorStatus {
    /// Asks for every record and event to be embedded anew (in the background).
    pub fn request_rebuild(&self) {
        self.rebuild_requested.store(true, Ordering::Release);
    }

    /// Whether a full re-embedding is underway (or asked for).
    pub fn rebuilding(&self) -> bool {
        self.rebuilding.load(Ordering::Acquire) || self.rebuild_requested.load(Ordering::Acquire)
    }
}

/// The in-memory vector indexes of records and events.
#[derive(Debug)]
pub struct Vectors {
    pub records: VectorIndex,
    pub events: VectorIndex,
}

impl Vectors {
    fn of(&self, kind: u8) -> &VectorIndex {
        if kind == RECORDS {
            &self.records
        } else {
            &self.events
        }
    }
}

impl VectorEntry {
    /// The in-memory form of a stored vector.
    pub fn from_stored(doc_key: &[u8], vector: &StoredVector) -> Self {
        let tag = |i: usize| vector.tags.get(i).cloned().unwrap_or_default();
        Self {
            key: doc_key.to_vec(),
            tags: [tag(0), tag(1), tag(2)],
            time: vector.time,
            code: Quantized::from_bytes(vector.scale, &vector.codes),
        }
    }
}

/// Mirrors stored writes into the in-memory indexes.
fn apply(vectors: &Vectors, writes: &[VectorWrite]) {
    for write in writes {
        match write {
            VectorWrite::Put {
                kind,
                memory_id,
                doc_key,
                vector,
            } => vectors
                .of(*kind)
                .upsert(memory_id, &VectorEntry::from_stored(doc_key, vector)),
            VectorWrite::Delete {
                kind,
                memory_id,
                doc_key,
            } => vectors.of(*kind).delete(memory_id, doc_key),
            VectorWrite::DeletePrefix {
                kind,
                memory_id,
                doc_prefix,
            } => match keys::decode_actor_key(doc_prefix) {
                Ok((_, actor_id)) => vectors.of(*kind).delete_tagged(memory_id, actor_id),
                Err(_) => vectors.of(*kind).delete_memory(memory_id),
            },
        }
    }
}

/// What [`VectorIndexer::start`] hands out.
#[derive(Debug)]
pub struct StartedVectors {
    pub vectors: Arc<Vectors>,
    /// Positions in the index log, shared with the keyword indexer.
    pub cursors: Arc<LogCursors>,
    pub status: Arc<VectorStatus>,
    pub indexer: VectorIndexer,
}

/// The embedding thread.
#[derive(Debug)]
pub struct VectorIndexer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Follower {
    store: Arc<Store>,
    vectors: Arc<Vectors>,
    cursors: Arc<LogCursors>,
    fingerprint: String,
    stop: Arc<AtomicBool>,
    status: Arc<VectorStatus>,
    /// Whether events are embedded (records always are).
    events: bool,
    /// Events that waited longer than this are skipped (`embedding_max_lag_seconds`).
    max_lag_us: Option<u64>,
    /// When the thread started: a backlog found at start-up is given the whole window.
    started_us: u64,
}

impl Follower {
    fn commit(&self, writes: &[VectorWrite], applied: u64) -> Result<()> {
        let state = StoredVectorState {
            fingerprint: self.fingerprint.clone(),
            applied,
        };
        self.store.write_vectors(writes, &state)?;
        apply(&self.vectors, writes);
        Ok(())
    }

    /// Embeds every live record and event (the model changed, or nothing was stored yet);
    /// returns false when stopped midway.
    fn rebuild(&self, model: &SharedModel, upto: u64) -> Result<bool> {
        self.store.clear_vectors()?;
        self.vectors.records.clear();
        self.vectors.events.clear();
        let started = std::time::Instant::now();
        let mut pending = Vec::new();
        let mut count = 0usize;
        let mut flush = |pending: &mut Vec<Op>| -> Result<()> {
            if self.stop.load(Ordering::Acquire) {
                return Err(ServiceError::Unavailable("stopping".into()));
            }
            count += pending.len();
            let writes = embed(
                model,
                std::mem::take(pending),
                &self.store,
                &self.status.counts,
            )?;
            // The position is only stored at the end: an interrupted rebuild starts over.
            self.store.write_vectors(
                &writes,
                &StoredVectorState {
                    fingerprint: String::new(),
                    applied: 0,
                },
            )?;
            apply(&self.vectors, &writes);
            Ok(())
        };
        let scanned = (|| {
            self.store.for_each_live_record(|memory_id, record| {
                // The scan hands over live records: no need to read each one again.
                pending.push(embed_record(memory_id.to_string(), record));
                if pending.len() >= ROUND {
                    flush(&mut pending)?;
                }
                Ok(())
            })?;
            self.store.for_each_event(|key, _| {
                if !self.events {
                    return Ok(());
                }
                let memory_id = keys::decode_actor_key(key)?.0.to_string();
                pending.extend(resolve(
                    &self.store,
                    &StoredIndexChange {
                        memory_id,
                        event_key: key.to_vec(),
                        ..Default::default()
                    },
                    self.events,
                )?);
                if pending.len() >= ROUND {
                    flush(&mut pending)?;
                }
                Ok(())
            })?;
            flush(&mut pending)
        })();
        match scanned {
            Ok(()) => {}
            Err(_) if self.stop.load(Ordering::Acquire) => return Ok(false),
            Err(err) => return Err(err),
        }
        self.commit(&[], upto)?;
        tracing::info!(
            documents = count,
            seconds = started.elapsed().as_secs_f64(),
            "embedded every record and event"
        );
        Ok(true)
    }

    /// Applies up to a round of log entries after `applied`; returns the new position.
    ///
    /// The backlog policy: a full round means more is waiting, so the records further on are
    /// embedded first ([`Self::records_first`]); and an event that has waited longer than
    /// `max_lag_us` is skipped (it stays keyword-searchable), so the events' lag is bounded.
    fn follow(&self, model: &SharedModel, applied: u64) -> Result<u64> {
        let changes = self.store.index_changes(applied, ROUND)?;
        let Some(&(last, _)) = changes.last() else {
            return Ok(applied);
        };
        if changes.len() == ROUND {
            self.records_first(model, applied, last)?;
        }
        let now = now_us();
        let mut ops = Vec::new();
        for (_, change) in &changes {
            let resolved = resolve(&self.store, change, self.events)?;
            if self.too_late(change, now) {
                for op in resolved {
                    match op {
                        Op::Embed(_) => self.status.counts.count(Embedded::SkippedEvent),
                        write => ops.push(write),
                    }
                }
            } else {
                ops.extend(resolved);
            }
        }
        let writes = embed(model, latest_only(ops), &self.store, &self.status.counts)?;
        self.commit(&writes, last)?;
        self.cursors.vectors_applied(&self.store, last)?;
        Ok(last)
    }

    /// Whether an event change has waited too long to be embedded.
    fn too_late(&self, change: &StoredIndexChange, now: u64) -> bool {
        let Some(max_lag) = self.max_lag_us else {
            return false;
        };
        !change.event_key.is_empty()
            && change.logged_us > 0
            && now.saturating_sub(change.logged_us.max(self.started_us)) > max_lag
    }

    /// Embeds the records changed beyond this round (and beyond what an earlier look ahead
    /// covered), so that semantic search over records, which agents retrieve most, trails
    /// their writes by about one round however many events wait. The position stays where it
    /// is: when the log reaches these entries, their documents keep the vectors stored now
    /// (same text), so nothing is embedded twice.
    fn records_first(&self, model: &SharedModel, applied: u64, round_end: u64) -> Result<()> {
        let mut after = round_end.max(self.cursors.records_ahead());
        let mut ops = Vec::new();
        let mut scanned = 0;
        loop {
            let changes = self.store.index_changes(after, LOOKAHEAD_PAGE)?;
            let Some(&(last, _)) = changes.last() else {
                break;
            };
            for (_, change) in changes.iter().filter(|(_, c)| !c.record_id.is_empty()) {
                ops.extend(resolve(&self.store, change, self.events)?);
            }
            after = last;
            scanned += changes.len();
            if changes.len() < LOOKAHEAD_PAGE || scanned >= LOOKAHEAD_MAX || ops.len() >= ROUND {
                break;
            }
        }
        if !ops.is_empty() {
            let writes = embed(model, latest_only(ops), &self.store, &self.status.counts)?;
            self.commit(&writes, applied)?;
        }
        self.cursors.note_records_ahead(after);
        Ok(())
    }
}

impl VectorIndexer {
    /// Loads the stored embeddings (when they come from this model) and starts following
    /// the log from their position; otherwise re-embeds everything in the background.
    /// Returns before the thread has caught up: keyword search covers what is not embedded
    /// yet.
    pub fn start(store: Arc<Store>, embeddings: &Embeddings, nice: i32) -> Result<StartedVectors> {
        let vectors = Arc::new(Vectors {
            records: VectorIndex::new(embeddings.dims)
                .partitioned_from(embeddings.settings.partition_at),
            events: VectorIndex::new(embeddings.dims)
                .partitioned_from(embeddings.settings.partition_at),
        });
        let state = store
            .vector_state()?
            .filter(|s| s.fingerprint == embeddings.fingerprint);
        let (mut applied, rebuild) = match state {
            Some(state) => {
                let started = std::time::Instant::now();
                let mut count = 0usize;
                store.for_each_vector(|kind, memory_id, doc_key, vector| {
                    count += 1;
                    vectors
                        .of(kind)
                        .load(memory_id, &VectorEntry::from_stored(doc_key, &vector));
                    Ok(())
                })?;
                tracing::info!(
                    vectors = count,
                    seconds = started.elapsed().as_secs_f64(),
                    "loaded stored embeddings"
                );
                // Large memories are searched flat until their partitions are built, which
                // takes seconds per million vectors: not on the start-up path.
                let loaded = vectors.clone();
                std::thread::Builder::new()
                    .name("memd-vector-partitions".into())
                    .spawn(move || {
                        loaded.records.partition_large();
                        loaded.events.partition_large();
                    })
                    .map_err(|err| ServiceError::Internal(format!("spawning a thread: {err}")))?;
                (state.applied, false)
            }
            // Hold the log from here on: the rebuild reads the state after this position.
            None => (store.committed_index_seq()?, true),
        };
        let cursors = Arc::new(LogCursors::new(Some(applied)));
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(VectorStatus {
            model: embeddings.fingerprint.clone(),
            ..Default::default()
        });
        status.rebuilding.store(rebuild, Ordering::Release);
        let follower = Follower {
            events: embeddings.settings.events,
            status: status.clone(),
            store,
            vectors: vectors.clone(),
            cursors: cursors.clone(),
            fingerprint: embeddings.fingerprint.clone(),
            stop: stop.clone(),
            max_lag_us: embeddings
                .settings
                .max_lag
                .map(|lag| u64::try_from(lag.as_micros()).unwrap_or(u64::MAX)),
            started_us: now_us(),
        };
        let model = embeddings.documents.clone();
        let thread = std::thread::Builder::new()
            .name("memd-embed-index".into())
            .spawn(move || {
                // The model's own threads were started at this nice value when it loaded.
                crate::priority::lower_current_thread(nice, "embedding");
                let mut rebuilt = !rebuild;
                while !follower.stop.load(Ordering::Acquire) {
                    if follower
                        .status
                        .rebuild_requested
                        .swap(false, Ordering::AcqRel)
                    {
                        rebuilt = false;
                        follower.status.rebuilding.store(true, Ordering::Release);
                    }
                    if !rebuilt {
                        // The scan embeds everything stored when it starts (writes may have
                        // come in since the server opened); only changes
                        // after this position are replayed after it, so none is embedded
                        // twice. The log stays held at `applied` until then.
                        let upto = match follower.store.committed_index_seq() {
                            Ok(position) => position.max(applied),
                            Err(err) => {
                                tracing::warn!(%err, "cannot start re-embedding; retrying");
                                sleep_unless_stopped(&follower.stop, Duration::from_secs(1));
                                continue;
                            }
                        };
                        match follower.rebuild(&model, upto) {
                            Ok(true) => {
                                rebuilt = true;
                                applied = upto;
                                follower.status.rebuilding.store(false, Ordering::Release);
                                if let Err(err) =
                                    follower.cursors.vectors_applied(&follower.store, applied)
                                {
                                    tracing::warn!(%err, "trimming the index log failed");
                                }
                            }
                            Ok(false) => return,
                            Err(err) => {
                                tracing::warn!(%err, "embedding everything failed; retrying");
                                sleep_unless_stopped(&follower.stop, Duration::from_secs(1));
                                continue;
                            }
                        }
                    }
                    match follower.follow(&model, applied) {
                        Ok(position) if position == applied => {
                            sleep_unless_stopped(&follower.stop, POLL);
                        }
                        Ok(position) => applied = position,
                        Err(err) => {
                            tracing::warn!(%err, "embedding failed; retrying");
                            sleep_unless_stopped(&follower.stop, Duration::from_secs(1));
                        }
                    }
                }
            })
            .map_err(|err| ServiceError::Internal(format!("starting the embedder: {err}")))?;
        Ok(StartedVectors {
            vectors,
            cursors,
            status,
            indexer: Self {
                stop,
                thread: Some(thread),
            },
        })
    }

    /// Stops after the current round (what is stored stays; the rest follows next start).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for VectorIndexer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Sleeps up to `period`; true when asked to stop.
fn sleep_unless_stopped(stop: &AtomicBool, period: Duration) -> bool {
    let deadline = std::time::Instant::now() + period;
    while std::time::Instant::now() < deadline {
        if stop.load(Ordering::Acquire) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20).min(period));
    }
    stop.load(Ordering::Acquire)
}
