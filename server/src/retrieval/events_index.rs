//! The BM25 full-text index over conversational (and JSON) events, so raw short-term memory
//! is searchable too. Same lifecycle as the records index: it follows the index log and
//! records the last applied entry in its commit payload.

use super::tantivy_index::{
    TantivyIndex, error, filter, scoped_query, scoped_text, scoped_tokens, with_filters,
};
use crate::error::Result;
use crate::store::EventView;
use crate::store::codec::{StoredContent, StoredEvent};
use std::ops::Bound;
use std::path::Path;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, Value};
use tantivy::{TantivyDocument, Term, doc};

#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    memory_id: Field,
    actor: Field,
    session: Field,
    /// The event's words and those of the events before it, as terms of its actor
    /// ([`actor_term`]).
    text: Field,
    ts_us: Field,
}

/// `memory \0 actor`: one term per actor, for actor-scoped searches and erasure.
fn actor_term(memory_id: &str, actor_id: &str) -> String {
    format!("{memory_id}\0{actor_id}")
}

/// One search over an actor's events.
#[derive(Debug, Clone)]
pub struct EventSearch {
    pub memory_id: String,
    pub actor_id: String,
    /// Empty: every session.
    pub session_ids: Vec<String>,
    pub query: String,
    pub limit: usize,
    /// Event timestamps in [start, end), µs.
    pub start_us: Option<u64>,
    pub end_us: Option<u64>,
}

/// The key of a matching event and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct EventHit {
    pub event_key: Vec<u8>,
    pub score: f32,
}

/// The events index.
pub struct EventIndex {
    inner: TantivyIndex,
    fields: Fields,
}

impl std::fmt::Debug for EventIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIndex").finish_non_exhaustive()
    }
}

/// The searchable text of an event.
pub fn event_text(view: &EventView) -> String {
    payload_text(&view.stored)
}

/// The text of an event's conversational turns and JSON items, one per line.
pub fn payload_text(event: &StoredEvent) -> String {
    let mut text = String::new();
    for item in &event.payload {
        match &item.content {
            Some(StoredContent::Conversational(turn)) => {
                if !turn.name.is_empty() {
                    text.push_str(&turn.name);
                    text.push_str(": ");
                }
                text.push_str(&turn.text);
                text.push('\n');
            }
            Some(StoredContent::Json(json)) => {
                text.push_str(json);
                text.push('\n');
            }
            _ => {}
        }
    }
    text
}

impl EventIndex {
    /// Opens (creating) the index in `dir`, with the log position it has applied.
    pub fn open(dir: &Path, writer_heap: usize) -> Result<(Self, Option<u64>)> {
        let mut builder = Schema::builder();
        let fields = Fields {
            key: builder.add_bytes_field("key", INDEXED | STORED),
            memory_id: builder.add_text_field("memory_id", STRING),
            actor: builder.add_text_field("actor", STRING),
            session: builder.add_text_field("session", STRING),
            text: builder.add_text_field("actor_text", scoped_text()),
            ts_us: builder.add_u64_field("ts_us", INDEXED | FAST),
        };
        let (inner, applied) = TantivyIndex::open(dir, builder.build(), writer_heap)?;
        Ok((Self { inner, fields }, applied))
    }

    /// Characters of each earlier event kept in an event's context.
    const CONTEXT_CHARS_PER_EVENT: usize = 1000;

    /// Adds or replaces an event (events without text are removed). `before` are the events
    /// of its session just before it: a turn is also found by the words of the turns it
    /// answers ("Who played at the concert?" → "It was Matt Patterson!"). On LoCoMo this took
    /// SearchEvents' recall@10 from 0.583 to 0.695 (keyword) and from 0.646 to 0.718
    /// (hybrid) (docs/benchmarks.md).
    pub fn upsert(&self, key: &[u8], view: &EventView, before: &[StoredEvent]) -> Result<()> {
        let f = self.fields;
        let writer = self.inner.writer();
        writer.delete_term(Term::from_field_bytes(f.key, key));
        let text = event_text(view);
        if text.trim().is_empty() {
            return Ok(());
        }
        let scope = actor_term(&view.memory_id, &view.actor_id);
        let mut document = doc!(
            f.key => key,
            f.memory_id => view.memory_id.as_str(),
            f.actor => scope.as_str(),
            f.session => view.session_id.as_str(),
            f.ts_us => view.seq.ts_us,
        );
        document.add_pre_tokenized_text(f.text, scoped_tokens(&scope, &text));
        for event in before {
            // A long one (a tool's JSON result) is cut: it is copied into the next events.
            let text: String = payload_text(event)
                .chars()
                .take(Self::CONTEXT_CHARS_PER_EVENT)
                .collect();
            if !text.trim().is_empty() {
                document.add_pre_tokenized_text(f.text, scoped_tokens(&scope, &text));
            }
        }
        writer.add_document(document).map_err(error)?;
        Ok(())
    }

    pub fn delete(&self, key: &[u8]) {
        self.inner
            .writer()
            .delete_term(Term::from_field_bytes(self.fields.key, key));
    }

    pub fn delete_actor(&self, memory_id: &str, actor_id: &str) {
        let term = actor_term(memory_id, actor_id);
        self.inner
            .writer()
            .delete_term(Term::from_field_text(self.fields.actor, &term));
    }

    pub fn delete_memory(&self, memory_id: &str) {
        self.inner
            .writer()
            .delete_term(Term::from_field_text(self.fields.memory_id, memory_id));
    }

    pub fn clear(&self) -> Result<()> {
        self.inner.clear()
    }

    /// Commits, remembering the log position `applied`.
    pub fn commit(&self, applied: u64) -> Result<()> {
        self.inner.commit(applied)
    }

    /// Drops what was not committed and restarts the writer (see [`TantivyIndex::rollback`]).
    pub fn rollback(&self) -> Result<()> {
        self.inner.rollback()
    }

    /// The best `limit` events of one actor for the query, within sessions and times.
    pub fn search(&self, search: &EventSearch) -> Result<Vec<EventHit>> {
        let f = self.fields;
        let scope = actor_term(&search.memory_id, &search.actor_id);
        let Some(text_query) = scoped_query(f.text, &scope, &search.query) else {
            return Ok(Vec::new());
        };
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        // The actor is the text's scope: only sessions and times are filters.
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !search.session_ids.is_empty() {
            clauses.push(filter(Box::new(BooleanQuery::new(
                search
                    .session_ids
                    .iter()
                    .map(|s| (Occur::Should, term(f.session, s)))
                    .collect(),
            ))));
        }
        if search.start_us.is_some() || search.end_us.is_some() {
            let lower = search.start_us.map_or(Bound::Unbounded, |s| {
                Bound::Included(Term::from_field_u64(f.ts_us, s))
            });
            let upper = search.end_us.map_or(Bound::Unbounded, |e| {
                Bound::Excluded(Term::from_field_u64(f.ts_us, e))
            });
            clauses.push(filter(Box::new(RangeQuery::new(lower, upper))));
        }
        let searcher = self.inner.searcher();
        let top = searcher
            .search(
                with_filters(text_query, clauses).as_ref(),
                &TopDocs::with_limit(search.limit.max(1)).order_by_score(),
            )
            .map_err(error)?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let document: TantivyDocument = searcher.doc(address).map_err(error)?;
            if let Some(key) = document.get_first(f.key).and_then(|v| v.as_bytes()) {
                hits.push(EventHit {
                    event_key: key.to_vec(),
                    score,
                });
            }
        }
        Ok(hits)
    }
}
