//! `RetrieveMemoryRecords`: ranked retrieval over long-term records. The caller's namespace
//! prefixes and actor globs are part of the search query itself, so a hit, a score or a
//! count never comes from a record the caller may not read.

use super::{blocking, convert, validate};
use crate::auth::Principal;
use crate::error::{Result, ServiceError};
use crate::ids;
use crate::retrieval::{
    Access, EventSearch, MetadataMatch, Mode, RecordSearch, Retrieval, metadata_number,
};
use crate::store::{Store, page};
use crate::time::now_us;
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use std::sync::Arc;

const MAX_TOP_K: i32 = 100;
const DEFAULT_TOP_K: i32 = 10;
const MAX_QUERY_CHARS: usize = 10_000;

/// The requested search mode (`None`: unspecified, the server's default).
pub(super) fn search_mode(field: &str, mode: i32) -> Result<Option<Mode>> {
    match pb::SearchMode::try_from(mode) {
        Ok(pb::SearchMode::Unspecified) => Ok(None),
        Ok(pb::SearchMode::Keyword) => Ok(Some(Mode::Keyword)),
        Ok(pb::SearchMode::Semantic) => Ok(Some(Mode::Semantic)),
        Ok(pb::SearchMode::Hybrid) => Ok(Some(Mode::Hybrid)),
        Err(_) => Err(ServiceError::invalid(
            field,
            "must be a SEARCH_MODE_* value",
        )),
    }
}

pub(super) fn top_k(field: &str, requested: i32) -> Result<usize> {
    match requested {
        0 => Ok(DEFAULT_TOP_K as usize),
        k if (1..=MAX_TOP_K).contains(&k) => Ok(k as usize),
        _ => Err(ServiceError::invalid(
            field,
            format!("must be 1-{MAX_TOP_K}"),
        )),
    }
}

pub(super) fn query_text(field: &str, query: &str) -> Result<String> {
    let query = query.trim();
    if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
        return Err(ServiceError::invalid(
            field,
            format!("must be 1-{MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(query.to_string())
}

/// Metadata filters as index conditions; comparison operators are not available yet.
pub(super) fn metadata_matches(filters: &[pb::RecordMetadataFilter]) -> Result<Vec<MetadataMatch>> {
    use pb::RecordMetadataOperator as Op;
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = |name: &str| format!("search_criteria.metadata_filters[{i}].{name}");
            if f.key.is_empty() || f.key.len() > 128 || f.key.contains('\0') {
                return Err(ServiceError::invalid(
                    field("key"),
                    "must be 1-128 characters without NUL",
                ));
            }
            let value = || -> Result<String> {
                if f.value.is_empty() || f.value.len() > 256 || f.value.contains('\0') {
                    return Err(ServiceError::invalid(
                        field("value"),
                        "must be 1-256 characters without NUL",
                    ));
                }
                Ok(f.value.clone())
            };
            match Op::try_from(f.operator) {
                Ok(Op::EqualsTo) => Ok(MetadataMatch::Equals(f.key.clone(), value()?)),
                Ok(Op::Exists) => Ok(MetadataMatch::Exists(f.key.clone())),
                Ok(Op::NotExists) => Ok(MetadataMatch::NotExists(f.key.clone())),
                Ok(Op::Contains) => Ok(MetadataMatch::Contains(f.key.clone(), value()?)),
                Ok(
                    op @ (Op::Before
                    | Op::After
                    | Op::GreaterThan
                    | Op::GreaterThanOrEquals
                    | Op::LessThan
                    | Op::LessThanOrEquals),
                ) => {
                    let raw = value()?;
                    let number = metadata_number(&raw).ok_or_else(|| {
                        ServiceError::invalid(
                            field("value"),
                            format!(
                                "{} needs a number or an RFC 3339 time, not {raw:?}",
                                op.as_str_name()
                            ),
                        )
                    })?;
                    use std::ops::Bound::{Excluded, Included, Unbounded};
                    let (lower, upper) = match op {
                        Op::After | Op::GreaterThan => (Excluded(number), Unbounded),
                        Op::GreaterThanOrEquals => (Included(number), Unbounded),
                        Op::Before | Op::LessThan => (Unbounded, Excluded(number)),
                        _ => (Unbounded, Included(number)),
                    };
                    Ok(MetadataMatch::Range(f.key.clone(), lower, upper))
                }
                _ => Err(ServiceError::invalid(
                    field("operator"),
                    "must be a RECORD_METADATA_OPERATOR_* value",
                )),
            }
        })
        .collect()
}

/// `SearchEvents`: one actor's events, so the key's actor patterns are checked up front and
/// the actor is a filter of the query.
pub async fn search_events(
    store: Arc<Store>,
    retrieval: Arc<Retrieval>,
    caller: Principal,
    req: pb::SearchEventsRequest,
) -> Result<pb::SearchEventsResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    ids::actor_id("actor_id", &req.actor_id)?;
    caller.require_actor(Action::Read, &req.memory_id, &req.actor_id)?;
    for (i, session) in req.session_ids.iter().enumerate() {
        ids::session_id(&format!("session_ids[{i}]"), session)?;
    }
    if req.session_ids.len() > 100 {
        return Err(ServiceError::invalid("session_ids", "at most 100"));
    }
    let query = query_text("query", &req.query)?;
    let mode = retrieval.event_mode(search_mode("mode", req.mode)?)?;
    let limit = top_k("top_k", req.top_k)?;
    let time = |field: &str, ts: &Option<prost_types::Timestamp>| {
        ts.as_ref()
            .map(|t| {
                crate::time::from_timestamp(t)
                    .ok_or_else(|| ServiceError::invalid(field, "is not a valid time"))
            })
            .transpose()
    };
    let search = EventSearch {
        memory_id: req.memory_id.clone(),
        actor_id: req.actor_id.clone(),
        session_ids: req.session_ids,
        query,
        limit,
        start_us: time("start_time", &req.start_time)?,
        end_us: time("end_time", &req.end_time)?,
    };
    store.memory(&search.memory_id)?;
    let vector = retrieval.query_vector(mode, &search.query).await?;
    blocking(move || {
        let now = now_us();
        let mut events = Vec::new();
        let mut bytes = 0;
        for hit in retrieval.search_events(&search, mode, vector.as_deref())? {
            // Deleted or expired since it was indexed: left out.
            if let Some(view) = store.event_by_key(&hit.event_key, now)?
                && view.memory_id == search.memory_id
                && view.actor_id == search.actor_id
            {
                let event = convert::event(view);
                // Payloads may be large: the least relevant hits give way to the bound.
                bytes += prost::Message::encoded_len(&event);
                if !events.is_empty() && bytes > page::MAX_PAGE_BYTES {
                    break;
                }
                events.push(pb::ScoredEvent {
                    event: Some(event),
                    score: f64::from(hit.score),
                });
            }
        }
        Ok(pb::SearchEventsResponse { events })
    })
    .await
}

pub async fn retrieve(
    store: Arc<Store>,
    retrieval: Arc<Retrieval>,
    caller: Principal,
    req: pb::RetrieveMemoryRecordsRequest,
) -> Result<pb::RetrieveMemoryRecordsResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Read, &req.memory_id)?;
    if !req.namespace.is_empty() {
        validate::namespace_prefix("namespace", &req.namespace)?;
    }
    let criteria = req.search_criteria.unwrap_or_default();
    let query = query_text("search_criteria.search_query", &criteria.search_query)?;
    let mode = retrieval.mode(search_mode("search_criteria.mode", criteria.mode)?)?;
    let top_k = top_k("search_criteria.top_k", criteria.top_k)?;
    let page_size = match req.page_size {
        0 => top_k,
        n if n < 0 => return Err(ServiceError::invalid("page_size", "must not be negative")),
        n if n as usize > page::MAX_PAGE_SIZE => {
            return Err(ServiceError::invalid(
                "page_size",
                format!("must be at most {}", page::MAX_PAGE_SIZE),
            ));
        }
        n => (n as usize).min(top_k),
    };
    if !criteria.strategy_id.is_empty() {
        ids::memory_id("search_criteria.strategy_id", &criteria.strategy_id)?;
    }
    if !criteria.min_score.is_finite() {
        return Err(ServiceError::invalid(
            "search_criteria.min_score",
            "must be a number",
        ));
    }
    // A page token is only valid for the same search.
    let scope = [
        b"retrieve\0".as_slice(),
        req.memory_id.as_bytes(),
        b"\0",
        req.namespace.as_bytes(),
        b"\0",
        query.as_bytes(),
        b"\0",
        criteria.strategy_id.as_bytes(),
        &top_k.to_be_bytes(),
        format!("{mode:?}").as_bytes(),
    ]
    .concat();
    let offset = match page::decode("page_token", &req.page_token, &scope)? {
        Some(bytes) => {
            let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                ServiceError::invalid("page_token", "is not a token of this search")
            })?;
            u64::from_be_bytes(raw) as usize
        }
        None => 0,
    };
    let metadata = metadata_matches(&criteria.metadata_filters)?;
    let (namespace_prefixes, actor_patterns) = caller.search_scope();
    let search = RecordSearch {
        memory_id: req.memory_id.clone(),
        query,
        namespace_prefix: req.namespace,
        strategy_id: Some(criteria.strategy_id).filter(|s| !s.is_empty()),
        actor_id: None,
        limit: top_k,
        access: Access {
            namespace_prefixes,
            actor_patterns,
        },
        metadata,
        now_us: now_us(),
    };
    let min_score = criteria.min_score;
    let memory_id = req.memory_id;
    store.memory(&memory_id)?;
    let now = search.now_us;
    let hits: Vec<_> = retrieval
        .find_records(store.clone(), search, mode)
        .await?
        .into_iter()
        .filter(|hit| min_score == 0.0 || f64::from(hit.score) >= min_score)
        .collect();
    blocking(move || {
        let mut records = Vec::new();
        for hit in hits.iter().skip(offset).take(page_size) {
            // The index may lag a deletion by a moment: what is gone is left out.
            match store.record(&memory_id, &hit.record_id, now, |r| {
                r.invalid_from_us == 0 && caller.sees_record(&r.namespace, &r.actor_id)
            }) {
                Ok(record) => records.push(pb::ScoredMemoryRecord {
                    memory_record: Some(convert::record(record, &memory_id)),
                    score: f64::from(hit.score),
                }),
                Err(ServiceError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let next = offset + page_size;
        let next_page_token = if next < hits.len() {
            page::encode(&scope, &(next as u64).to_be_bytes())
        } else {
            String::new()
        };
        Ok(pb::RetrieveMemoryRecordsResponse {
            memory_records: records,
            next_page_token,
        })
    })
    .await
}
