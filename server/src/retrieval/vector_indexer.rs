//! Keeps the embeddings in step with RocksDB. Embedding costs milliseconds per text where
//! BM25 indexing costs microseconds, so the embeddings follow the index log on their own
//! thread, with their own position (stored with them in RocksDB): a burst of writes delays
//! semantic hits by what it takes to embed it, never the keyword index. The log is trimmed
//! only up to what both followers have applied ([`LogCursors`]).

use super::embed_counts::{EmbedCounters, Embedded};
use super::events_index::event_text;
pub use super::log_cursors::LogCursors;
use super::vectors::{Quantized, VectorEntry, VectorIndex};
use crate::embedding::{Embeddings, SharedModel};
use crate::error::{Result, ServiceError};
use crate::store::codec::{StoredIndexChange, StoredRecord, StoredVector, StoredVectorState};
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

/// One document to (re-)embed.
struct Pending {
    kind: u8,
    memory_id: String,
    doc_key: Vec<u8>,
    tags: [String; 3],
    time: u64,
    text: String,
}

enum Op {
    Embed(Pending),
    Write(VectorWrite),
}

fn embed_record(memory_id: String, record: StoredRecord) -> Op {
    Op::Embed(Pending {
        kind: RECORDS,
        doc_key: record.record_id.into_bytes(),
        tags: [record.namespace, record.strategy_id, record.actor_id],
        time: record.expire_us,
        text: record.text,
        memory_id,
    })
}

fn resolve(store: &Store, change: &StoredIndexChange, events: bool) -> Result<Vec<Op>> {
    let memory_id = change.memory_id.clone();
    Ok(if !change.record_id.is_empty() {
        match store.stored_record(&memory_id, &change.record_id)? {
            Some(record) if record.invalid_from_us == 0 => vec![embed_record(memory_id, record)],
            _ => vec![Op::Write(VectorWrite::Delete {
                kind: RECORDS,
                memory_id,
                doc_key: change.record_id.clone().into_bytes(),
            })],
        }
    } else if !change.event_key.is_empty() {
        if !events {
            return Ok(Vec::new());
        }
        let view = store.event_by_key(&change.event_key, now_us())?;
        match view.map(|v| (event_text(&v), v)) {
            Some((text, view)) if !text.trim().is_empty() => vec![Op::Embed(Pending {
                kind: EVENTS,
                doc_key: change.event_key.clone(),
                tags: [view.actor_id, view.session_id, String::new()],
                time: view.seq.ts_us,
                text,
                memory_id,
            })],
            _ => vec![Op::Write(VectorWrite::Delete {
                kind: EVENTS,
                memory_id,
                doc_key: change.event_key.clone(),
            })],
        }
    } else if !change.actor_id.is_empty() {
        // The actor's records were logged one by one; its events go by key prefix.
        vec![Op::Write(VectorWrite::DeletePrefix {
            kind: EVENTS,
            doc_prefix: keys::actor_prefix(&memory_id, &change.actor_id),
            memory_id,
        })]
    } else {
        [RECORDS, EVENTS]
            .map(|kind| {
                Op::Write(VectorWrite::DeletePrefix {
                    kind,
                    memory_id: memory_id.clone(),
                    doc_prefix: Vec::new(),
                })
            })
            .into_iter()
            .collect()
    })
}

/// Drops all but the last embedding of each document: each one reflects the document's
/// state now, so the earlier ones (a running summary rewritten ten times in one round) are the
/// same text embedded again.
fn latest_only(ops: Vec<Op>) -> Vec<Op> {
    let mut last = std::collections::HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Embed(p) = op {
            last.insert((p.kind, p.memory_id.as_str(), p.doc_key.as_slice()), i);
        }
    }
    let keep: std::collections::HashSet<usize> = last.into_values().collect();
    ops.into_iter()
        .enumerate()
        .filter(|(i, op)| matches!(op, Op::Write(_)) || keep.contains(i))
        .map(|(_, op)| op)
        .collect()
}

/// The first 8 bytes of the text's SHA-256: whether a stored vector is of this text.
fn text_hash(text: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// Embeds what `ops` ask for and turns everything into stored writes, in order. A document
/// whose stored vector is of the same text (a record whose metadata or expiry changed, an
/// event logged again) keeps that vector; the rest are embedded and counted (a document that
/// had a vector of another text is a re-embedding).
fn embed(
    model: &SharedModel,
    ops: Vec<Op>,
    store: &Store,
    counts: &EmbedCounters,
) -> Result<Vec<VectorWrite>> {
    let mut planned = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Embed(p) = op else {
            planned.push((op, 0, None));
            continue;
        };
        let hash = text_hash(&p.text);
        let stored = store.stored_vector(p.kind, &p.memory_id, &p.doc_key)?;
        let reuse = match stored {
            Some(vector) if vector.text_hash == hash => Some((vector.scale, vector.codes)),
            stored => {
                counts.count(match (p.kind, stored) {
                    (EVENTS, _) => Embedded::Event,
                    (_, Some(_)) => Embedded::RecordAgain,
                    (_, None) => Embedded::Record,
                });
                None
            }
        };
        planned.push((Op::Embed(p), hash, reuse));
    }
    let texts: Vec<&str> = planned
        .iter()
        .filter_map(|(op, _, reuse)| match (op, reuse) {
            (Op::Embed(p), None) => Some(p.text.as_str()),
            _ => None,
        })
        .collect();
    let started = std::time::Instant::now();
    let embedded = model.embed_documents(&texts)?;
    if !texts.is_empty() {
        counts.model_time(started.elapsed());
    }
    let mut vectors = embedded.into_iter();
    let mut writes = Vec::with_capacity(planned.len());
    for (op, text_hash, reuse) in planned {
        writes.push(match op {
            Op::Write(write) => write,
            Op::Embed(p) => {
                let (scale, codes) = match reuse {
                    Some(stored) => stored,
                    None => {
                        let vector = vectors.next().ok_or_else(|| {
                            ServiceError::Internal("the model skipped a text".into())
                        })?;
                        let code = Quantized::new(&vector);
                        (code.scale, code.code_bytes())
                    }
                };
                VectorWrite::Put {
                    kind: p.kind,
                    memory_id: p.memory_id,
                    doc_key: p.doc_key,
                    vector: StoredVector {
                        tags: p.tags.to_vec(),
                        time: p.time,
                        scale,
                        codes,
                        text_hash,
                    },
                }
            }
        });
    }
    Ok(writes)
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
    fn follow(&self, model: &SharedModel, applied: u64) -> Result<u64> {
        let changes = self.store.index_changes(applied, ROUND)?;
        let Some(&(last, _)) = changes.last() else {
            return Ok(applied);
        };
        let mut ops = Vec::new();
        for (_, change) in &changes {
            ops.extend(resolve(&self.store, change, self.events)?);
        }
        let writes = embed(model, latest_only(ops), &self.store, &self.status.counts)?;
        self.commit(&writes, last)?;
        self.cursors.vectors_applied(&self.store, last)?;
        Ok(last)
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
            None => (store.last_index_seq()?, true),
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
                        let upto = match follower.store.last_index_seq() {
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
