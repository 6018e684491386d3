//! The BM25 full-text index over live memory records (tantivy, English stemming).
//!
//! One index serves every memory. A document is a live record; its key
//! (`memory_id \0 record_id`) replaces or deletes it. Each commit carries, as its payload,
//! the sequence number of the last index-log entry it applied: that is where catching up
//! resumes after a restart.

use super::tantivy_index::{
    TantivyIndex, error as tantivy_error, filter, scoped_query, scoped_text, scoped_tokens,
    with_filters,
};
use crate::error::Result;
use crate::store::codec::StoredRecord;
use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery};
use tantivy::schema::{Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, Value};
use tantivy::{Searcher, TantivyDocument, Term, doc};

#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    memory_id: Field,
    record_id: Field,
    namespace: Field,
    strategy_id: Field,
    actor_id: Field,
    /// The record's words and those of its context, as terms of its memory.
    text: Field,
    expire_us: Field,
    /// Metadata keys, and `key \0 value` pairs.
    meta_key: Field,
    meta_pair: Field,
    /// `key \0 sortable(number)` for values that are numbers or RFC 3339 times (as epoch
    /// seconds): term ranges compare them numerically.
    meta_num: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        key: builder.add_text_field("key", STRING),
        memory_id: builder.add_text_field("memory_id", STRING),
        record_id: builder.add_text_field("record_id", STRING | STORED),
        namespace: builder.add_text_field("namespace", STRING),
        strategy_id: builder.add_text_field("strategy_id", STRING),
        actor_id: builder.add_text_field("actor_id", STRING),
        text: builder.add_text_field("memory_text", scoped_text()),
        expire_us: builder.add_u64_field("expire_us", INDEXED),
        meta_key: builder.add_text_field("meta_key", STRING),
        meta_pair: builder.add_text_field("meta_pair", STRING),
        meta_num: builder.add_text_field("meta_num", STRING),
    };
    (builder.build(), fields)
}

fn doc_key(memory_id: &str, record_id: &str) -> String {
    format!("{memory_id}\0{record_id}")
}

/// Who is searching: the namespace prefixes and actor globs of the caller's key (`None`:
/// unrestricted).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub namespace_prefixes: Option<Vec<String>>,
    pub actor_patterns: Option<Vec<String>>,
}

/// A condition on record metadata, applied inside the search.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataMatch {
    Equals(String, String),
    Exists(String),
    NotExists(String),
    Contains(String, String),
    /// The value, read as a number (or an RFC 3339 time, in epoch seconds), lies within the
    /// bounds.
    Range(String, Bound<f64>, Bound<f64>),
}

/// A metadata value as a number: a decimal number, or an RFC 3339 time in epoch seconds.
pub fn metadata_number(value: &str) -> Option<f64> {
    let value = value.trim();
    if let Ok(number) = value.parse::<f64>() {
        return number.is_finite().then_some(number);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

/// Documents whose `field` holds exactly `value`.
fn term(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

/// Order-preserving text for a number: byte order of the terms is numeric order.
fn numeric_term(key: &str, number: f64) -> String {
    let bits = number.to_bits();
    let sortable = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    format!("{key}\0{sortable:016x}")
}

/// One search over a memory's records.
#[derive(Debug, Clone)]
pub struct RecordSearch {
    pub memory_id: String,
    pub query: String,
    /// Byte prefix of namespaces ("" = all).
    pub namespace_prefix: String,
    pub strategy_id: Option<String>,
    /// Only records drawn from this actor's events.
    pub actor_id: Option<String>,
    pub limit: usize,
    pub access: Access,
    pub metadata: Vec<MetadataMatch>,
    pub now_us: u64,
}

impl RecordSearch {
    /// A search of a whole memory with no filters beyond the memory and expiry at `now_us`.
    pub fn whole_memory(memory_id: &str, query: &str, limit: usize, now_us: u64) -> Self {
        Self {
            memory_id: memory_id.into(),
            query: query.into(),
            namespace_prefix: String::new(),
            strategy_id: None,
            actor_id: None,
            limit,
            access: Access::default(),
            metadata: Vec::new(),
            now_us,
        }
    }
}

/// A matching record id and its BM25 score.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordHit {
    pub record_id: String,
    pub score: f32,
}

/// The records index.
pub struct RecordIndex {
    inner: TantivyIndex,
    fields: Fields,
}

impl std::fmt::Debug for RecordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordIndex").finish_non_exhaustive()
    }
}

/// The smallest string greater than every string starting with `prefix`, if any.
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// An actor glob ("*" any run, "?" one character) as an anchored regex.
fn glob_regex(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex_syntax_escape(c)),
        }
    }
    out
}

fn regex_escape_all(text: &str) -> String {
    text.chars().map(regex_syntax_escape).collect()
}

fn regex_syntax_escape(c: char) -> String {
    if "\\.+*?()|[]{}^$#&-~".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}

fn any_of(queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    Box::new(BooleanQuery::new(
        queries.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

impl RecordIndex {
    /// Opens the index in `dir` (creating it); returns it with the log position it has applied
    /// (`None` for a new or unreadable index: it must be rebuilt from the store).
    pub fn open(dir: &Path, writer_heap: usize) -> Result<(Self, Option<u64>)> {
        let (schema, fields) = schema();
        let (inner, applied) = TantivyIndex::open(dir, schema, writer_heap)?;
        Ok((Self { inner, fields }, applied))
    }

    /// Adds or replaces a live record.
    pub fn upsert(&self, memory_id: &str, record: &StoredRecord) -> Result<()> {
        let f = self.fields;
        let key = doc_key(memory_id, &record.record_id);
        let mut document = doc!(
            f.key => key.as_str(),
            f.memory_id => memory_id,
            f.record_id => record.record_id.as_str(),
            f.namespace => record.namespace.as_str(),
            f.strategy_id => record.strategy_id.as_str(),
            f.actor_id => record.actor_id.as_str(),
            f.expire_us => record.expire_us,
        );
        document.add_pre_tokenized_text(f.text, scoped_tokens(memory_id, &record.text));
        if !record.search_context.is_empty() {
            // Found by the words around it too (the turn it came from and the two before).
            document
                .add_pre_tokenized_text(f.text, scoped_tokens(memory_id, &record.search_context));
        }
        for (name, value) in &record.metadata {
            document.add_text(f.meta_key, name);
            document.add_text(f.meta_pair, format!("{name}\0{value}"));
            if let Some(number) = metadata_number(value) {
                document.add_text(f.meta_num, numeric_term(name, number));
            }
        }
        let writer = self.inner.writer();
        writer.delete_term(Term::from_field_text(f.key, &key));
        writer.add_document(document).map_err(tantivy_error)?;
        Ok(())
    }

    /// Removes a record (deleted, superseded, or gone with its actor).
    pub fn delete(&self, memory_id: &str, record_id: &str) {
        let key = doc_key(memory_id, record_id);
        self.inner
            .writer()
            .delete_term(Term::from_field_text(self.fields.key, &key));
    }

    /// Removes every record of a memory.
    pub fn delete_memory(&self, memory_id: &str) {
        self.inner
            .writer()
            .delete_term(Term::from_field_text(self.fields.memory_id, memory_id));
    }

    /// Commits what was added and deleted, remembering the log position `applied`.
    pub fn commit(&self, applied: u64) -> Result<()> {
        self.inner.commit(applied)
    }

    /// Drops what was not committed and restarts the writer (see [`TantivyIndex::rollback`]).
    pub fn rollback(&self) -> Result<()> {
        self.inner.rollback()
    }

    /// Drops every document (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.inner.clear()
    }

    /// The filter clauses of a search: namespace, strategy, actor, metadata, expiry and the
    /// caller's access. The memory is not among them: the text query's terms are the memory's
    /// own, and [`Self::matching_ids`] adds it.
    fn filters(
        &self,
        search: &RecordSearch,
        searcher: &Searcher,
    ) -> Result<Vec<(Occur, Box<dyn Query>)>> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let prefix = |prefix: &str| -> Box<dyn Query> {
            let upper = match successor(prefix) {
                Some(end) => Bound::Excluded(Term::from_field_text(f.namespace, &end)),
                None => Bound::Unbounded,
            };
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_text(f.namespace, prefix)),
                upper,
            ))
        };
        // A filter that matches every document only stops tantivy from pruning: the expiry
        // filter is left out when no record expires (hydration re-checks expiry anyway).
        let live = searcher.num_docs();
        let matches_all =
            |t: &Term| -> Result<bool> { Ok(searcher.doc_freq(t).map_err(tantivy_error)? >= live) };
        if !search.namespace_prefix.is_empty() {
            clauses.push(filter(prefix(&search.namespace_prefix)));
        }
        if let Some(strategy) = &search.strategy_id {
            clauses.push(filter(term(f.strategy_id, strategy)));
        }
        if let Some(actor) = &search.actor_id {
            clauses.push(filter(term(f.actor_id, actor)));
        }
        for condition in &search.metadata {
            match condition {
                MetadataMatch::Equals(key, value) => {
                    clauses.push(filter(term(f.meta_pair, &format!("{key}\0{value}"))))
                }
                MetadataMatch::Exists(key) => clauses.push(filter(term(f.meta_key, key))),
                MetadataMatch::NotExists(key) => {
                    clauses.push((Occur::MustNot, term(f.meta_key, key)))
                }
                MetadataMatch::Range(key, lower, upper) => {
                    let at = |n: f64| Term::from_field_text(f.meta_num, &numeric_term(key, n));
                    // A key's numbers all lie in [`key \0`, `key \x01`).
                    let edge =
                        |suffix: &str| Term::from_field_text(f.meta_num, &format!("{key}{suffix}"));
                    let lower = match lower {
                        Bound::Included(n) => Bound::Included(at(*n)),
                        Bound::Excluded(n) => Bound::Excluded(at(*n)),
                        Bound::Unbounded => Bound::Included(edge("\0")),
                    };
                    let upper = match upper {
                        Bound::Included(n) => Bound::Included(at(*n)),
                        Bound::Excluded(n) => Bound::Excluded(at(*n)),
                        Bound::Unbounded => Bound::Excluded(edge("\u{1}")),
                    };
                    clauses.push(filter(Box::new(RangeQuery::new(lower, upper))));
                }
                MetadataMatch::Contains(key, value) => {
                    let pattern =
                        format!("{}\0.*{}.*", regex_escape_all(key), regex_escape_all(value));
                    let regex =
                        RegexQuery::from_pattern(&pattern, f.meta_pair).map_err(tantivy_error)?;
                    clauses.push(filter(Box::new(regex)));
                }
            }
        }
        if !matches_all(&Term::from_field_u64(f.expire_us, 0))? {
            clauses.push(filter(any_of(vec![
                Box::new(TermQuery::new(
                    Term::from_field_u64(f.expire_us, 0),
                    IndexRecordOption::Basic,
                )),
                Box::new(RangeQuery::new(
                    Bound::Excluded(Term::from_field_u64(f.expire_us, search.now_us)),
                    Bound::Unbounded,
                )),
            ])));
        }
        if let Some(prefixes) = &search.access.namespace_prefixes
            && !prefixes.iter().any(|p| p == "*" || p.is_empty())
        {
            clauses.push(filter(any_of(prefixes.iter().map(|p| prefix(p)).collect())));
        }
        if let Some(patterns) = &search.access.actor_patterns
            && !patterns.iter().any(|p| p == "*")
        {
            // Records without an actor (written through the API) only need the namespace.
            let mut allowed = vec![term(f.actor_id, "")];
            for pattern in patterns {
                let regex = RegexQuery::from_pattern(&glob_regex(pattern), f.actor_id)
                    .map_err(tantivy_error)?;
                allowed.push(Box::new(regex));
            }
            clauses.push(filter(any_of(allowed)));
        }
        Ok(clauses)
    }

    /// The ids of the live records that pass the search's filters (its text aside): what
    /// semantic search admits when filters only this index can evaluate (metadata) are set.
    pub fn matching_ids(&self, search: &RecordSearch) -> Result<HashSet<Vec<u8>>> {
        let searcher = self.inner.searcher();
        let mut clauses = self.filters(search, &searcher)?;
        clauses.push(filter(term(self.fields.memory_id, &search.memory_id)));
        clauses.push((Occur::Must, Box::new(AllQuery)));
        let found = searcher
            .search(&BooleanQuery::new(clauses), &DocSetCollector)
            .map_err(tantivy_error)?;
        let mut ids = HashSet::with_capacity(found.len());
        for address in found {
            let document: TantivyDocument = searcher.doc(address).map_err(tantivy_error)?;
            if let Some(id) = document
                .get_first(self.fields.record_id)
                .and_then(|v| v.as_str())
            {
                ids.insert(id.as_bytes().to_vec());
            }
        }
        Ok(ids)
    }

    /// The best `limit` live records of the memory for the query, filtered by namespace,
    /// strategy, expiry and the caller's access, all inside the query.
    pub fn search(&self, search: &RecordSearch) -> Result<Vec<RecordHit>> {
        let Some(text_query) = scoped_query(self.fields.text, &search.memory_id, &search.query)
        else {
            return Ok(Vec::new());
        };
        let searcher = self.inner.searcher();
        let query = with_filters(text_query, self.filters(search, &searcher)?);
        let top = searcher
            .search(
                query.as_ref(),
                &TopDocs::with_limit(search.limit.max(1)).order_by_score(),
            )
            .map_err(tantivy_error)?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let document: TantivyDocument = searcher.doc(address).map_err(tantivy_error)?;
            if let Some(id) = document
                .get_first(self.fields.record_id)
                .and_then(|v| v.as_str())
            {
                hits.push(RecordHit {
                    record_id: id.to_string(),
                    score,
                });
            }
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MIN_INDEX_WRITER_BYTES;

    fn record(id: &str, text: &str, expire_us: u64) -> StoredRecord {
        StoredRecord {
            record_id: id.into(),
            namespace: "/ns".into(),
            text: text.into(),
            expire_us,
            ..Default::default()
        }
    }

    fn search(memory_id: &str, query: &str) -> RecordSearch {
        RecordSearch::whole_memory(memory_id, query, 10, 1)
    }

    fn ids(index: &RecordIndex, memory_id: &str, query: &str, now_us: u64) -> Vec<String> {
        let mut found: Vec<String> = index
            .search(&RecordSearch::whole_memory(memory_id, query, 10, now_us))
            .unwrap()
            .into_iter()
            .map(|h| h.record_id)
            .collect();
        found.sort();
        found
    }

    #[test]
    fn function_words_neither_match_nor_score() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = RecordIndex::open(dir.path(), MIN_INDEX_WRITER_BYTES).unwrap();
        index
            .upsert(
                "m1",
                &record("fact", "Caroline went to a support group.", 0),
            )
            .unwrap();
        index
            .upsert(
                "m1",
                &record(
                    "chatter",
                    "What did you do? I did what I could do there.",
                    0,
                ),
            )
            .unwrap();
        index.commit(1).unwrap();
        let ranked = |query: &str| -> Vec<String> {
            index
                .search(&search("m1", query))
                .unwrap()
                .into_iter()
                .map(|h| h.record_id)
                .collect()
        };
        // Counting "what", "did" and "do" would put the chatter first.
        assert_eq!(ranked("What did Caroline do there?"), ["fact"]);
        assert!(
            ranked("what did you do").is_empty(),
            "{:?}",
            ranked("what did you do")
        );
        // Stemming still applies to what is left.
        assert_eq!(ranked("groups"), ["fact"]);
    }

    #[test]
    fn another_memory_does_not_move_a_score() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = RecordIndex::open(dir.path(), MIN_INDEX_WRITER_BYTES).unwrap();
        for (id, text) in [("a", "kayak"), ("b", "tour"), ("c", "tour guide")] {
            index.upsert("m1", &record(id, text, 0)).unwrap();
        }
        index.commit(1).unwrap();
        let best = |index: &RecordIndex| {
            index
                .search(&search("m1", "kayak tour"))
                .unwrap()
                .into_iter()
                .map(|h| h.record_id)
                .collect::<Vec<_>>()
        };
        // In m1 "kayak" is the rarer word, so its record comes first.
        assert_eq!(best(&index)[0], "a");
        for n in 0..20 {
            index
                .upsert("m2", &record(&format!("k{n}"), "kayak", 0))
                .unwrap();
        }
        index.commit(2).unwrap();
        // m2's twenty kayaks must not make the word common in m1.
        assert_eq!(best(&index)[0], "a", "{:?}", best(&index));
        assert_eq!(best(&index).len(), 3);
    }

    #[test]
    fn memory_and_expiry_filters_hold_whether_or_not_they_can_be_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (index, applied) = RecordIndex::open(dir.path(), MIN_INDEX_WRITER_BYTES).unwrap();
        assert_eq!(applied, None, "a new index has applied nothing");
        index.upsert("m1", &record("a", "kayak tour", 0)).unwrap();
        index.commit(1).unwrap();
        // One memory, nothing expiring: both filters match everything.
        assert_eq!(ids(&index, "m1", "kayak", 100), ["a"]);
        assert!(ids(&index, "m2", "kayak", 100).is_empty());
        index
            .upsert("m1", &record("b", "kayak rental", 50))
            .unwrap();
        index.upsert("m2", &record("c", "kayak shop", 0)).unwrap();
        index.commit(2).unwrap();
        assert_eq!(ids(&index, "m1", "kayak", 10), ["a", "b"]);
        assert_eq!(ids(&index, "m1", "kayak", 100), ["a"], "b expired at 50");
        assert_eq!(ids(&index, "m2", "kayak", 100), ["c"]);
        drop(index);
        let (_, applied) = RecordIndex::open(dir.path(), MIN_INDEX_WRITER_BYTES).unwrap();
        assert_eq!(
            applied,
            Some(2),
            "the commit payload is the applied log position"
        );
    }

    #[test]
    fn numeric_terms_sort_like_numbers() {
        let values = [-1e9, -2.5, -0.0, 0.0, 1.0, 2.5, 10.0, 1e12];
        let terms: Vec<String> = values.iter().map(|v| numeric_term("k", *v)).collect();
        let mut sorted = terms.clone();
        sorted.sort();
        assert_eq!(terms, sorted);
        assert_eq!(
            metadata_number("2024-03-01T00:00:00Z"),
            Some(1_709_251_200.0)
        );
        assert_eq!(metadata_number(" 42 "), Some(42.0));
        assert_eq!(metadata_number("pets"), None);
    }

    #[test]
    fn globs_become_anchored_regexes() {
        assert_eq!(glob_regex("acme/*"), "acme/.*");
        assert_eq!(glob_regex("a.b?"), "a\\.b.");
        assert_eq!(successor("/a/"), Some("/a0".into()));
    }
}
