//! Records scored by the turns they were drawn from. A fact is one sentence, cut from its
//! turn and rewritten in the third person; the turn itself often says more of what a later
//! question asks about ("What did Caroline make for a local church?" → the turn with "I
//! made this stained glass window ..."). Hybrid search therefore adds a third ranking to
//! the keyword and the record-embedding ones: how close the query is to the embeddings of
//! the record's source events, which the events' vector index holds anyway. On LoCoMo this
//! (with a second turn of keyword context) took records' hybrid recall@10 from 0.738 to
//! 0.777 (docs/benchmarks.md).

use super::Vectors;
use crate::error::Result;
use crate::store::Store;
use crate::store::codec::StoredRecord;
use crate::store::keys::{self, EventSeq};

/// The event keys of a record's sources (those of its own actor and session).
fn source_keys(memory_id: &str, record: &StoredRecord) -> Vec<Vec<u8>> {
    let session = keys::session_key(memory_id, &record.actor_id, &record.session_id);
    record
        .source_event_ids
        .iter()
        .filter_map(|id| EventSeq::parse_event_id(id))
        .map(|seq| keys::event_key(&session, seq))
        .collect()
}

/// A candidate record and the event keys of the turns it was drawn from.
pub(super) struct Sourced {
    pub record_id: String,
    pub sources: Vec<Vec<u8>>,
}

/// The candidates that exist, with their sources (blocking; reads each record).
pub(super) fn read_sources<'a>(
    store: &Store,
    memory_id: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Sourced>> {
    let mut sourced = Vec::new();
    for record_id in candidates {
        if let Some(record) = store.stored_record(memory_id, record_id)? {
            sourced.push(Sourced {
                record_id: record_id.to_string(),
                sources: source_keys(memory_id, &record),
            });
        }
    }
    Ok(sourced)
}

/// Each candidate's best similarity between `query` and the embedding of one of its source
/// events, or of the record itself where none of them is embedded (a record written through
/// the API is its own source). Empty when no candidate has an embedded source: the ranking
/// would only repeat the record-embedding one.
pub(super) fn source_turn_scores(
    vectors: &Vectors,
    memory_id: &str,
    query: &[f32],
    candidates: &[Sourced],
) -> Vec<(String, f32)> {
    let mut scores = Vec::new();
    let mut any_turn = false;
    for candidate in candidates {
        let refs: Vec<&[u8]> = candidate.sources.iter().map(Vec::as_slice).collect();
        let best_turn = vectors
            .events
            .similarities_of(memory_id, query, &refs)
            .into_iter()
            .flatten()
            .reduce(f32::max);
        any_turn |= best_turn.is_some();
        let record_id = &candidate.record_id;
        let score = best_turn.or_else(|| {
            vectors
                .records
                .similarities_of(memory_id, query, &[record_id.as_bytes()])[0]
        });
        if let Some(score) = score {
            scores.push((record_id.clone(), score));
        }
    }
    if any_turn { scores } else { Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::{Quantized, VectorEntry, VectorIndex};
    use crate::store::NewRecord;
    use crate::store::codec::StoredMemory;
    use crate::store::test_support::temp_store;

    fn entry(key: &[u8], vector: &[f32]) -> VectorEntry {
        VectorEntry {
            key: key.to_vec(),
            tags: Default::default(),
            time: 0,
            code: Quantized::new(vector),
        }
    }

    #[test]
    fn records_score_by_their_best_embedded_turn_or_by_themselves() {
        let (_dir, store) = temp_store();
        let memory = StoredMemory {
            memory_id: "m-1".into(),
            name: "m".into(),
            ..Default::default()
        };
        store.create_memory(memory, "", vec![]).unwrap();
        let turns = [EventSeq { ts_us: 1, seq: 1 }, EventSeq { ts_us: 2, seq: 2 }];
        let record = |id: &str, actor: &str, sources: &[EventSeq]| {
            Ok(NewRecord {
                record: StoredRecord {
                    record_id: id.into(),
                    namespace: "/ns".into(),
                    text: format!("record {id}"),
                    actor_id: actor.into(),
                    session_id: "s".into(),
                    source_event_ids: sources.iter().map(|s| s.to_event_id()).collect(),
                    version: 1,
                    ..Default::default()
                },
                request_hash: vec![],
            })
        };
        store
            .create_records(
                "m-1",
                vec![
                    record("fact", "ann", &turns),
                    record("api", "", &[]),
                    record("far", "ann", &turns[..1]),
                ],
            )
            .unwrap();
        let vectors = Vectors {
            records: VectorIndex::new(2),
            events: VectorIndex::new(2),
        };
        let query = [1.0, 0.0];
        let session = keys::session_key("m-1", "ann", "s");
        // The fact's own text is far from the query; its second turn is close.
        vectors.records.upsert("m-1", &entry(b"fact", &[0.0, 1.0]));
        vectors.records.upsert("m-1", &entry(b"api", &[0.6, 0.8]));
        vectors.records.upsert("m-1", &entry(b"far", &[0.8, 0.6]));
        let far_turn = keys::event_key(&session, turns[0]);
        vectors
            .events
            .upsert("m-1", &entry(&far_turn, &[-1.0, 0.0]));
        vectors.events.upsert(
            "m-1",
            &entry(&keys::event_key(&session, turns[1]), &[1.0, 0.0]),
        );
        let candidates = read_sources(&store, "m-1", ["fact", "api", "far", "gone"]).unwrap();
        assert_eq!(candidates.len(), 3, "what does not exist is left out");
        assert_eq!(candidates[0].sources.len(), 2);
        let scores = source_turn_scores(&vectors, "m-1", &query, &candidates);
        let of = |id: &str| scores.iter().find(|(r, _)| r == id).map(|(_, s)| *s);
        assert!((of("fact").unwrap() - 1.0).abs() < 0.02, "{scores:?}");
        // Its only turn is embedded but far from the query: that is its score.
        assert!(of("far").unwrap() < -0.9, "{scores:?}");
        // A record without turns is its own source; one that does not exist is left out.
        assert!((of("api").unwrap() - 0.6).abs() < 0.02, "{scores:?}");
        assert_eq!(of("gone"), None);
        // Where no candidate has an embedded turn there is no third ranking.
        let api = read_sources(&store, "m-1", ["api"]).unwrap();
        assert!(source_turn_scores(&vectors, "m-1", &query, &api).is_empty());
    }
}
