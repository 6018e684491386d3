//! The three ways of searching records and events, on top of the indexes: keyword (BM25),
//! semantic (embeddings), and hybrid (both, their normalised scores combined). Every filter
//! of a search applies inside each of them.

use super::fusion::{convex, demote_restated};
use super::index::{RecordHit, RecordSearch};
use super::source_turns::{read_sources, source_turn_scores};
use super::vectors::{NameFilter, TimeFilter, VectorFilter};
use super::{EventHit, EventSearch, Retrieval};
use crate::error::{Result, ServiceError};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use wildmatch::WildMatch;

/// How a search ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Keyword,
    Semantic,
    Hybrid,
}

/// Each ranking contributes this many candidates (at least) to a hybrid fusion: enough that
/// a document ranked well by one side only still makes it.
const FUSION_DEPTH: usize = 50;
/// The keyword ranking's share of a hybrid score (the semantic one has the rest). Equal, not
/// tuned to any dataset.
const KEYWORD_WEIGHT: f32 = 0.5;
/// Records' hybrid score where their source turns are embedded: keyword, record embedding and
/// source-turn embedding count equally.
const THIRD: f32 = 1.0 / 3.0;

impl Retrieval {
    /// The mode a request gets: `None` (unspecified) is hybrid where embeddings exist, else
    /// keyword; asking for semantic or hybrid without them is an error.
    pub fn mode(&self, requested: Option<Mode>) -> Result<Mode> {
        match (requested, self.semantic.is_some()) {
            (None, true) => Ok(Mode::Hybrid),
            (None, false) => Ok(Mode::Keyword),
            (Some(mode), true) => Ok(mode),
            (Some(Mode::Keyword), false) => Ok(Mode::Keyword),
            (Some(_), false) => Err(ServiceError::FailedPrecondition(
                "semantic and hybrid search need an embedding model, and this server runs with embedding_model = \"off\"; use SEARCH_MODE_KEYWORD".into(),
            )),
        }
    }

    /// The mode an event search gets: like [`Retrieval::mode`], but keyword-only where events
    /// are not embedded (`embedding_events = false`).
    pub fn event_mode(&self, requested: Option<Mode>) -> Result<Mode> {
        match (requested, &self.semantic) {
            (Some(Mode::Semantic | Mode::Hybrid), Some(semantic)) if !semantic.events => {
                Err(ServiceError::FailedPrecondition(
                    "this server does not embed events (embedding_events = false): SearchEvents is SEARCH_MODE_KEYWORD only".into(),
                ))
            }
            (None, Some(semantic)) if !semantic.events => Ok(Mode::Keyword),
            _ => self.mode(requested),
        }
    }

    /// The query's embedding when the mode needs one (async: embedding runs on its own
    /// threads).
    pub async fn query_vector(&self, mode: Mode, query: &str) -> Result<Option<Vec<f32>>> {
        match (&self.semantic, mode) {
            (Some(semantic), Mode::Semantic | Mode::Hybrid) => {
                Ok(Some(semantic.queries.embed(query).await?))
            }
            _ => Ok(None),
        }
    }

    /// The BM25 ranking of records, `limit` deep (blocking).
    fn keyword_records(&self, search: &RecordSearch, limit: usize) -> Result<Vec<RecordHit>> {
        let mut search = search.clone();
        search.limit = limit;
        self.indexes.records.search(&search)
    }

    /// The embedding ranking of records, `limit` deep, every filter inside (blocking).
    fn semantic_records(
        &self,
        search: &RecordSearch,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<RecordHit>> {
        let Some(semantic) = &self.semantic else {
            return Ok(Vec::new());
        };
        // Metadata conditions are evaluated by the keyword index, as the set they admit.
        let keys = if search.metadata.is_empty() {
            None
        } else {
            Some(self.indexes.records.matching_ids(search)?)
        };
        Ok(record_vectors(
            semantic,
            search,
            vector,
            keys.as_ref(),
            limit,
        ))
    }

    /// The best `search.limit` records (blocking). `vector` is the query's embedding from
    /// [`Retrieval::query_vector`].
    pub fn search_records(
        &self,
        store: &Store,
        search: &RecordSearch,
        mode: Mode,
        vector: Option<&[f32]>,
    ) -> Result<Vec<RecordHit>> {
        match (mode, vector) {
            (Mode::Semantic, Some(vector)) => self.semantic_records(search, vector, search.limit),
            (Mode::Hybrid, Some(vector)) => {
                let depth = search.limit.max(FUSION_DEPTH);
                self.fuse_records(
                    store,
                    search,
                    vector,
                    self.keyword_records(search, depth)?,
                    self.semantic_records(search, vector, depth)?,
                )
            }
            _ => self.keyword_records(search, search.limit),
        }
    }

    /// The hybrid ranking of records from the keyword and the semantic candidates, with the
    /// candidates' source turns as a third ranking where they are embedded (blocking).
    fn fuse_records(
        &self,
        store: &Store,
        search: &RecordSearch,
        vector: &[f32],
        keyword: Vec<RecordHit>,
        semantic: Vec<RecordHit>,
    ) -> Result<Vec<RecordHit>> {
        let scored = |hits: Vec<RecordHit>| -> Vec<(String, f32)> {
            hits.into_iter().map(|h| (h.record_id, h.score)).collect()
        };
        let (keyword, semantic) = (scored(keyword), scored(semantic));
        // Where the memory's turns are embedded its records come from extraction: read the
        // candidates' sources, for the source-turn ranking and to demote restatements.
        let sourced = match &self.semantic {
            Some(embeddings)
                if embeddings.events && embeddings.vectors.events.len(&search.memory_id) > 0 =>
            {
                let mut candidates: Vec<&str> = keyword
                    .iter()
                    .chain(&semantic)
                    .map(|(id, _)| id.as_str())
                    .collect();
                candidates.sort_unstable();
                candidates.dedup();
                let sourced = read_sources(store, &search.memory_id, candidates)?;
                let turns =
                    source_turn_scores(&embeddings.vectors, &search.memory_id, vector, &sourced);
                Some((sourced, turns))
            }
            _ => None,
        };
        let Some((sourced, turns)) = sourced.filter(|(_, turns)| !turns.is_empty()) else {
            let lists = [(KEYWORD_WEIGHT, keyword), (1.0 - KEYWORD_WEIGHT, semantic)];
            return Ok(hits(convex(&lists, search.limit)));
        };
        let lists = [(THIRD, keyword), (THIRD, semantic), (THIRD, turns)];
        let sources: HashMap<&str, &[Vec<u8>]> = sourced
            .iter()
            .map(|c| (c.record_id.as_str(), c.sources.as_slice()))
            .collect();
        let mut fused = demote_restated(convex(&lists, usize::MAX), |id: &String| {
            sources.get(id.as_str()).copied().unwrap_or_default()
        });
        fused.truncate(search.limit);
        Ok(hits(fused))
    }

    /// [`Retrieval::search_records`] for the API: in hybrid mode the keyword search runs on
    /// one blocking thread while the query is embedded and the vectors scanned on others.
    pub async fn find_records(
        self: &Arc<Self>,
        store: Arc<Store>,
        search: RecordSearch,
        mode: Mode,
    ) -> Result<Vec<RecordHit>> {
        if mode != Mode::Hybrid || self.semantic.is_none() {
            let vector = self.query_vector(mode, &search.query).await?;
            let this = self.clone();
            return blocking(move || this.search_records(&store, &search, mode, vector.as_deref()))
                .await;
        }
        let search = Arc::new(search);
        let depth = search.limit.max(FUSION_DEPTH);
        let keyword = {
            let (this, search) = (self.clone(), search.clone());
            blocking(move || this.keyword_records(&search, depth))
        };
        let semantic = async {
            let vector = self
                .query_vector(mode, &search.query)
                .await?
                .unwrap_or_default();
            let (this, search) = (self.clone(), search.clone());
            blocking(move || {
                let hits = this.semantic_records(&search, &vector, depth)?;
                Ok((hits, vector))
            })
            .await
        };
        let (keyword, (semantic, vector)) = tokio::try_join!(keyword, semantic)?;
        let this = self.clone();
        blocking(move || this.fuse_records(&store, &search, &vector, keyword, semantic)).await
    }

    /// The best `search.limit` events of one actor (blocking).
    pub fn search_events(
        &self,
        search: &EventSearch,
        mode: Mode,
        vector: Option<&[f32]>,
    ) -> Result<Vec<EventHit>> {
        let keyword = |limit: usize| {
            let mut search = search.clone();
            search.limit = limit;
            self.indexes.events.search(&search)
        };
        let (Some(semantic), Some(vector), Mode::Semantic | Mode::Hybrid) =
            (&self.semantic, vector, mode)
        else {
            return keyword(search.limit);
        };
        let actor = |a: &str| a == search.actor_id;
        let session = |s: &str| search.session_ids.iter().any(|id| id == s);
        let (start, end) = (search.start_us, search.end_us);
        let time = |t: u64| start.is_none_or(|s| t >= s) && end.is_none_or(|e| t < e);
        let filter = VectorFilter {
            tags: [
                Some(&actor),
                (!search.session_ids.is_empty()).then_some(&session as NameFilter<'_>),
                None,
            ],
            time: (start.is_some() || end.is_some()).then_some(&time as TimeFilter<'_>),
            keys: None,
        };
        let semantic_hits = |limit: usize| -> Vec<EventHit> {
            semantic
                .vectors
                .events
                .search(&search.memory_id, vector, &filter, limit)
                .into_iter()
                .map(|hit| EventHit {
                    event_key: hit.key,
                    score: hit.score,
                })
                .collect()
        };
        if mode == Mode::Semantic {
            return Ok(semantic_hits(search.limit));
        }
        let depth = search.limit.max(FUSION_DEPTH);
        let scored = |hits: Vec<EventHit>| -> Vec<(Vec<u8>, f32)> {
            hits.into_iter().map(|h| (h.event_key, h.score)).collect()
        };
        let lists = [
            (KEYWORD_WEIGHT, scored(keyword(depth)?)),
            (1.0 - KEYWORD_WEIGHT, scored(semantic_hits(depth))),
        ];
        Ok(convex(&lists, search.limit)
            .into_iter()
            .map(|(event_key, score)| EventHit { event_key, score })
            .collect())
    }
}

fn hits(fused: Vec<(String, f32)>) -> Vec<RecordHit> {
    fused
        .into_iter()
        .map(|(record_id, score)| RecordHit { record_id, score })
        .collect()
}

/// Runs one stage of a search on the blocking pool, unless the request's deadline has passed.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let deadline = crate::deadline::current();
    tokio::task::spawn_blocking(move || {
        crate::deadline::check_at(deadline, "the next search stage")?;
        work()
    })
    .await?
}

/// Semantic search over records with every filter of `search` inside the scan.
fn record_vectors(
    semantic: &super::Semantic,
    search: &RecordSearch,
    vector: &[f32],
    keys: Option<&std::collections::HashSet<Vec<u8>>>,
    limit: usize,
) -> Vec<RecordHit> {
    let prefixes = search
        .access
        .namespace_prefixes
        .as_ref()
        .filter(|p| !p.iter().any(|p| p == "*" || p.is_empty()));
    let namespace = |ns: &str| {
        ns.starts_with(search.namespace_prefix.as_str())
            && prefixes.is_none_or(|p| p.iter().any(|prefix| ns.starts_with(prefix.as_str())))
    };
    let strategy = |s: &str| search.strategy_id.as_deref().is_none_or(|id| id == s);
    let globs: Option<Vec<WildMatch>> = search
        .access
        .actor_patterns
        .as_ref()
        .filter(|p| !p.iter().any(|p| p == "*"))
        .map(|patterns| patterns.iter().map(|p| WildMatch::new(p)).collect());
    let actor = |a: &str| {
        search.actor_id.as_deref().is_none_or(|id| id == a)
            // Records without an actor (written through the API) only need the namespace.
            && globs
                .as_ref()
                .is_none_or(|globs| a.is_empty() || globs.iter().any(|g| g.matches(a)))
    };
    let now = search.now_us;
    let unexpired = |expire_us: u64| expire_us == 0 || expire_us > now;
    let filter = VectorFilter {
        tags: [Some(&namespace), Some(&strategy), Some(&actor)],
        time: Some(&unexpired),
        keys,
    };
    semantic
        .vectors
        .records
        .search(&search.memory_id, vector, &filter, limit)
        .into_iter()
        .filter_map(|hit| {
            Some(RecordHit {
                record_id: String::from_utf8(hit.key).ok()?,
                score: hit.score,
            })
        })
        .collect()
}
