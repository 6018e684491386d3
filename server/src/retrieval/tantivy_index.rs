//! What the records and events indexes share: a tantivy index in a directory, opened (or
//! dropped and recreated when unusable: it is derived data), one writer thread, a manually
//! reloaded reader, and commits whose payload is the index-log position they applied.

use crate::error::{Result, ServiceError};
use std::path::Path;
use std::sync::LazyLock;
use std::sync::{Mutex, MutexGuard};
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    Language, LowerCaser, PreTokenizedString, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer, Token,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, Term};

pub fn error(err: tantivy::TantivyError) -> ServiceError {
    ServiceError::Internal(format!("search index: {err}"))
}

fn io_error(what: &str, dir: &Path, err: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("{what} {}: {err}", dir.display()))
}

/// The analyzer of searchable text, by the name the schema stores (a new analysis needs a
/// new name: indexes written with another are rebuilt).
const ENGLISH: &str = "en_stop_stem";

/// English function words: the Snowball project's English stop list without the
/// contractions. Questions and conversational turns are full of them ("What did you do when
/// ..."), and BM25 let them score: on LoCoMo turns, leaving them out raised keyword recall@10
/// from 0.680 to 0.718 (Lucene's shorter list, tantivy's English default, changed nothing;
/// the pieces contractions split into, "s", "t", "ll", ..., cost hybrid recall 0.002-0.005;
/// docs/benchmarks.md).
const STOP_WORDS: &str = "i me my myself we our ours ourselves you your yours yourself \
    yourselves he him his himself she her hers herself it its itself they them their theirs \
    themselves what which who whom this that these those am is are was were be been being have \
    has had having do does did doing would should could ought cannot a an the and but if or \
    because as until while of at by for with about against between into through during before \
    after above below to from up down in out on off over under again further then once here \
    there when where why how all any both each few more most other some such no nor not only \
    own same so than too very";

/// Indexing options of searchable text, which memd analyses itself ([`scoped_tokens`]): term
/// frequencies for BM25, no positions (no phrase queries: user text is not query syntax).
/// The schema names the analyzer, so an index written with another analysis is rebuilt.
pub fn scoped_text() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ENGLISH)
            .set_index_option(IndexRecordOption::WithFreqs),
    )
}

/// English analysis: words, at most 40 bytes, lower-cased, stop words dropped, stemmed.
static ANALYZER: LazyLock<TextAnalyzer> = LazyLock::new(|| {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            STOP_WORDS.split_whitespace().map(str::to_string),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
});

/// Registers [`ENGLISH`] with an index: the writer looks up the analyzer the schema names.
fn register_english(index: &Index) {
    index.tokenizers().register(ENGLISH, ANALYZER.clone());
}

/// The indexed form of a word of `scope`: `scope \0 word`. Scopes are memory ids, or a memory
/// id and an actor id, which never contain NUL (`ids`), so no two scopes share a term.
fn scoped_word(scope: &str, word: &str) -> String {
    format!("{scope}\0{word}")
}

/// `text` analysed into the terms of `scope`.
///
/// Why scopes: one index serves every memory (and every actor's events). Restricting a
/// search to a memory with a filter clause makes tantivy score every document of that memory
/// that holds any query word, where a query of scoped terms alone is a plain union of terms
/// that block-max WAND can prune (and the document frequencies behind BM25's weights are the
/// scope's own: another tenant's documents do not move a score).
pub fn scoped_tokens(scope: &str, text: &str) -> PreTokenizedString {
    let mut analyzer = ANALYZER.clone();
    let mut stream = analyzer.token_stream(text);
    let mut tokens = Vec::new();
    while let Some(token) = stream.next() {
        tokens.push(Token {
            text: scoped_word(scope, &token.text),
            ..token.clone()
        });
    }
    PreTokenizedString {
        text: String::new(),
        tokens,
    }
}

/// A BM25 query for any of the words of `query` in `scope`; `None` when nothing is left to
/// match (only stop words or punctuation), where a search would otherwise admit everything.
pub fn scoped_query(field: Field, scope: &str, query: &str) -> Option<Box<dyn Query>> {
    let clauses: Vec<(Occur, Box<dyn Query>)> = scoped_tokens(scope, query)
        .tokens
        .into_iter()
        .map(|token| {
            let term = Term::from_field_text(field, &token.text);
            let query: Box<dyn Query> =
                Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
            (Occur::Should, query)
        })
        .collect();
    (!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>)
}

/// The text query alone when nothing else restricts the search (so tantivy can prune),
/// else the text query and the filter clauses.
pub fn with_filters(
    text: Box<dyn Query>,
    mut filters: Vec<(Occur, Box<dyn Query>)>,
) -> Box<dyn Query> {
    if filters.is_empty() {
        return text;
    }
    filters.push((Occur::Must, text));
    Box::new(BooleanQuery::new(filters))
}

/// A filter clause: must match, adds nothing to the score.
pub fn filter(query: Box<dyn Query>) -> (Occur, Box<dyn Query>) {
    (Occur::Must, Box::new(BoostQuery::new(query, 0.0)))
}

/// A tantivy index with its single writer and reader.
pub struct TantivyIndex {
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
}

impl std::fmt::Debug for TantivyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyIndex").finish_non_exhaustive()
    }
}

fn open_dir(dir: &Path, schema: Schema) -> Result<tantivy::Result<Index>> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
    let directory =
        tantivy::directory::MmapDirectory::open(dir).map_err(|e| io_error("opening", dir, e))?;
    Ok(Index::open_or_create(directory, schema))
}

impl TantivyIndex {
    /// Opens (creating) the index in `dir`, with the log position its last commit applied
    /// (`None`: nothing applied yet, the index must be rebuilt).
    /// `writer_heap` bytes of documents are buffered before they are written out as a segment
    /// (at least [`crate::budget::MIN_INDEX_WRITER_BYTES`]).
    pub fn open(dir: &Path, schema: Schema, writer_heap: usize) -> Result<(Self, Option<u64>)> {
        let index = match open_dir(dir, schema.clone())? {
            Ok(index) => index,
            Err(err) => {
                // Derived data: an index from another schema (an older memd) or a damaged one
                // is dropped and rebuilt from RocksDB.
                tracing::warn!(%err, dir = %dir.display(), "search index unusable; rebuilding it");
                std::fs::remove_dir_all(dir).map_err(|e| io_error("removing", dir, e))?;
                open_dir(dir, schema)?.map_err(error)?
            }
        };
        register_english(&index);
        let applied = index
            .load_metas()
            .map_err(error)?
            .payload
            .and_then(|p| p.parse::<u64>().ok());
        // One indexing thread and one merging thread: indexing is background work, and a
        // sidecar's cores belong to the agent beside it (tantivy starts four merge threads).
        let writer = index
            .writer_with_options(
                IndexWriterOptions::builder()
                    .memory_budget_per_thread(writer_heap)
                    .num_worker_threads(1)
                    .num_merge_threads(1)
                    .build(),
            )
            .map_err(error)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(error)?;
        Ok((
            Self {
                writer: Mutex::new(writer),
                reader,
            },
            applied,
        ))
    }

    pub fn writer(&self) -> MutexGuard<'_, IndexWriter> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// Commits, remembering the log position `applied`, and makes it visible to searches.
    pub fn commit(&self, applied: u64) -> Result<()> {
        {
            let mut writer = self.writer();
            let mut prepared = writer.prepare_commit().map_err(error)?;
            prepared.set_payload(&applied.to_string());
            prepared.commit().map_err(error)?;
        }
        self.reader.reload().map_err(error)
    }

    /// Drops what was added since the last commit and starts a fresh writer. After a failed
    /// write (a full disk) tantivy's writer threads have stopped and the writer refuses
    /// every document; this makes it usable again, and the caller replays from the last
    /// committed position.
    pub fn rollback(&self) -> Result<()> {
        self.writer().rollback().map_err(error)?;
        Ok(())
    }

    /// Drops every document (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.writer().delete_all_documents().map_err(error)?;
        Ok(())
    }
}
