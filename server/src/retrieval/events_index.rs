//! The BM25 full-text index over conversational (and JSON) events, so raw short-term memory
//! is searchable too. Same lifecycle as the records index: it follows the index log and
//! records the last applied entry in its commit payload.

use crate::error::{Result, ServiceError};
use crate::store::EventView;
use crate::store::codec::StoredContent;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

const WRITER_HEAP: usize = 64 << 20;

#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    memory_id: Field,
    actor: Field,
    session: Field,
    text: Field,
    ts_us: Field,
}

fn error(err: tantivy::TantivyError) -> ServiceError {
    ServiceError::Internal(format!("events index: {err}"))
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
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
}

impl std::fmt::Debug for EventIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIndex").finish_non_exhaustive()
    }
}

/// The searchable text of an event.
fn event_text(view: &EventView) -> String {
    let mut text = String::new();
    for item in &view.stored.payload {
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
    pub fn open(dir: &Path) -> Result<(Self, Option<u64>)> {
        std::fs::create_dir_all(dir)
            .map_err(|err| ServiceError::Internal(format!("creating {}: {err}", dir.display())))?;
        let mut builder = Schema::builder();
        let english = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            key: builder.add_bytes_field("key", INDEXED | STORED),
            memory_id: builder.add_text_field("memory_id", STRING),
            actor: builder.add_text_field("actor", STRING),
            session: builder.add_text_field("session", STRING),
            text: builder.add_text_field("text", english),
            ts_us: builder.add_u64_field("ts_us", INDEXED | FAST),
        };
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|err| ServiceError::Internal(format!("opening {}: {err}", dir.display())))?;
        let schema = builder.build();
        let index = match Index::open_or_create(directory, schema.clone()) {
            Ok(index) => index,
            Err(err) => {
                // Derived data: an index from another schema (an older memd) or a damaged one
                // is dropped and rebuilt from RocksDB.
                tracing::warn!(%err, dir = %dir.display(), "search index unusable; rebuilding it");
                std::fs::remove_dir_all(dir).map_err(|e| {
                    ServiceError::Internal(format!("removing {}: {e}", dir.display()))
                })?;
                std::fs::create_dir_all(dir).map_err(|e| {
                    ServiceError::Internal(format!("creating {}: {e}", dir.display()))
                })?;
                let directory = tantivy::directory::MmapDirectory::open(dir).map_err(|e| {
                    ServiceError::Internal(format!("opening {}: {e}", dir.display()))
                })?;
                Index::open_or_create(directory, schema).map_err(error)?
            }
        };
        let applied = index
            .load_metas()
            .map_err(error)?
            .payload
            .and_then(|p| p.parse::<u64>().ok());
        // One indexing thread: indexing is background work on a small machine.
        let writer = index
            .writer_with_num_threads(1, WRITER_HEAP)
            .map_err(error)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(error)?;
        Ok((
            Self {
                index,
                writer: Mutex::new(writer),
                reader,
                fields,
            },
            applied,
        ))
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces an event (events without text are removed).
    pub fn upsert(&self, key: &[u8], view: &EventView) -> Result<()> {
        let f = self.fields;
        let writer = self.writer();
        writer.delete_term(Term::from_field_bytes(f.key, key));
        let text = event_text(view);
        if text.trim().is_empty() {
            return Ok(());
        }
        writer
            .add_document(doc!(
                f.key => key,
                f.memory_id => view.memory_id.as_str(),
                f.actor => actor_term(&view.memory_id, &view.actor_id),
                f.session => view.session_id.as_str(),
                f.text => text,
                f.ts_us => view.seq.ts_us,
            ))
            .map_err(error)?;
        Ok(())
    }

    pub fn delete(&self, key: &[u8]) {
        self.writer()
            .delete_term(Term::from_field_bytes(self.fields.key, key));
    }

    pub fn delete_actor(&self, memory_id: &str, actor_id: &str) {
        let term = actor_term(memory_id, actor_id);
        self.writer()
            .delete_term(Term::from_field_text(self.fields.actor, &term));
    }

    pub fn delete_memory(&self, memory_id: &str) {
        self.writer()
            .delete_term(Term::from_field_text(self.fields.memory_id, memory_id));
    }

    pub fn clear(&self) -> Result<()> {
        self.writer().delete_all_documents().map_err(error)?;
        Ok(())
    }

    /// Commits, remembering the log position `applied`.
    pub fn commit(&self, applied: u64) -> Result<()> {
        {
            let mut writer = self.writer();
            let mut prepared = writer.prepare_commit().map_err(error)?;
            prepared.set_payload(&applied.to_string());
            prepared.commit().map_err(error)?;
        }
        self.reader.reload().map_err(error)
    }

    /// The best `limit` events of one actor for the query, within sessions and times.
    pub fn search(&self, search: &EventSearch) -> Result<Vec<EventHit>> {
        let f = self.fields;
        let parser = QueryParser::for_index(&self.index, vec![f.text]);
        let (text_query, _) = parser.parse_query_lenient(&search.query);
        let filter = |q: Box<dyn Query>| -> (Occur, Box<dyn Query>) {
            (Occur::Must, Box::new(BoostQuery::new(q, 0.0)))
        };
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, text_query),
            filter(term(
                f.actor,
                &actor_term(&search.memory_id, &search.actor_id),
            )),
        ];
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
        let searcher = self.reader.searcher();
        let top = searcher
            .search(
                &BooleanQuery::new(clauses),
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
