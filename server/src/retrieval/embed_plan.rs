//! What one round of the embedding thread does with the index-log entries it read: each
//! entry resolved against the store's current state into documents to embed or vectors to
//! drop, each document embedded once per round, and a document whose stored vector is of the
//! same text keeps it.

use super::embed_counts::{EmbedCounters, Embedded};
use super::events_index::event_text;
use super::vector_indexer::{EVENTS, RECORDS};
use super::vectors::Quantized;
use crate::embedding::SharedModel;
use crate::error::{Result, ServiceError};
use crate::store::codec::{StoredIndexChange, StoredRecord, StoredVector};
use crate::store::{Store, VectorWrite, keys};
use crate::time::now_us;

/// One document to (re-)embed.
pub(super) struct Pending {
    pub(super) kind: u8,
    memory_id: String,
    doc_key: Vec<u8>,
    tags: [String; 3],
    time: u64,
    text: String,
}

/// A document to embed, or a vector write that needs no model.
pub(super) enum Op {
    Embed(Pending),
    Write(VectorWrite),
}

pub(super) fn embed_record(memory_id: String, record: StoredRecord) -> Op {
    Op::Embed(Pending {
        kind: RECORDS,
        doc_key: record.record_id.into_bytes(),
        tags: [record.namespace, record.strategy_id, record.actor_id],
        time: record.expire_us,
        text: record.text,
        memory_id,
    })
}

pub(super) fn resolve(store: &Store, change: &StoredIndexChange, events: bool) -> Result<Vec<Op>> {
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
pub(super) fn latest_only(ops: Vec<Op>) -> Vec<Op> {
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
pub(super) fn embed(
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
