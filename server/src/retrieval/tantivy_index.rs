//! What the records and events indexes share: a tantivy index in a directory, opened (or
//! dropped and recreated when unusable: it is derived data), one writer thread, a manually
//! reloaded reader, and commits whose payload is the index-log position they applied.

use crate::error::{Result, ServiceError};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use tantivy::query::{BoostQuery, Occur, Query};
use tantivy::schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher};

/// Heap of the index writer.
const WRITER_HEAP: usize = 64 << 20;

pub fn error(err: tantivy::TantivyError) -> ServiceError {
    ServiceError::Internal(format!("search index: {err}"))
}

fn io_error(what: &str, dir: &Path, err: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("{what} {}: {err}", dir.display()))
}

/// The analyzer of searchable text, by the name the schema stores (a new analysis needs a
/// new name: indexes written with another are rebuilt).
const ENGLISH: &str = "en_stop_stem";

/// English function words (the Snowball project's English stop list, without the
/// contractions, which the tokenizer splits anyway). Questions and conversational turns are
/// full of them ("What did you do when ..."), and BM25 let them score: on LoCoMo turns, leaving
/// them out raised keyword recall@10 from 0.680 to 0.718 (Lucene's shorter list, tantivy's
/// English default, changed nothing; docs/benchmarks.md).
const STOP_WORDS: &str = "i me my myself we our ours ourselves you your yours yourself \
    yourselves he him his himself she her hers herself it its itself they them their theirs \
    themselves what which who whom this that these those am is are was were be been being have \
    has had having do does did doing would should could ought cannot a an the and but if or \
    because as until while of at by for with about against between into through during before \
    after above below to from up down in out on off over under again further then once here \
    there when where why how all any both each few more most other some such no nor not only \
    own same so than too very";

/// Indexing options of searchable text: English stop words dropped, stemming, positions.
pub fn english() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ENGLISH)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

/// Registers [`ENGLISH`] with an index (indexing and query parsing both use it).
fn register_english(index: &Index) {
    let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            STOP_WORDS.split_whitespace().map(str::to_string),
        ))
        .filter(Stemmer::new(Language::English))
        .build();
    index.tokenizers().register(ENGLISH, analyzer);
}

/// Whether a parsed text query has a term left to match: one of only stop words has none,
/// and as a clause of the search it would match every document the filters admit.
pub fn has_terms(query: &dyn Query) -> bool {
    let mut any = false;
    query.query_terms(&mut |_, _| any = true);
    any
}

/// A filter clause: must match, adds nothing to the score.
pub fn filter(query: Box<dyn Query>) -> (Occur, Box<dyn Query>) {
    (Occur::Must, Box::new(BoostQuery::new(query, 0.0)))
}

/// A tantivy index with its single writer and reader.
pub struct TantivyIndex {
    pub index: Index,
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
    pub fn open(dir: &Path, schema: Schema) -> Result<(Self, Option<u64>)> {
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

    /// Drops every document (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.writer().delete_all_documents().map_err(error)?;
        Ok(())
    }
}
