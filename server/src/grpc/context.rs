//! `GetContext`: the context an agent loads when it resumes a session — the session summary,
//! its latest turns, and the long-term records and past events most relevant to what it is
//! about to do — without repeats, packed into a token budget, each item tagged with its source.

use super::blocking;
use super::search::query_text;
use crate::auth::Principal;
use crate::error::{Result, ServiceError};
use crate::extraction::extractors::kind;
use crate::extraction::job::namespace;
use crate::ids;
use crate::retrieval::{Access, EventSearch, RecordSearch, Retrieval};
use crate::store::codec::StoredContent;
use crate::store::{EventFilterSpec, EventListing, EventView, Store, estimate_tokens};
use crate::time::{now_us, to_timestamp};
use memd_extractor::RecordKind;
use memd_extractor::text::normalize;
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use memd_proto::v1::context_item::Source;
use std::collections::HashSet;
use std::sync::Arc;

const DEFAULT_BUDGET: i32 = 2000;
/// Latest turns considered, and the share of the budget they may take.
const RECENT_TURNS: usize = 20;
const RECENT_SHARE: f64 = 0.5;
/// Records and past events considered.
const CANDIDATES: usize = 20;

/// "Speaker: text" for each conversational item of an event (JSON items as they are).
fn event_text(view: &EventView) -> Option<String> {
    let mut parts = Vec::new();
    for item in &view.stored.payload {
        match &item.content {
            Some(StoredContent::Conversational(turn)) => {
                let who = if turn.name.is_empty() {
                    pb::Role::try_from(turn.role)
                        .map(|r| r.as_str_name().trim_start_matches("ROLE_").to_lowercase())
                        .unwrap_or_else(|_| "speaker".into())
                } else {
                    turn.name.clone()
                };
                parts.push(format!("{who}: {}", turn.text));
            }
            Some(StoredContent::Json(json)) => parts.push(json.clone()),
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("\n"))
}

fn item(source: Source, text: String) -> pb::ContextItem {
    pb::ContextItem {
        source: source as i32,
        tokens: estimate_tokens(&text) as i32,
        text,
        ..Default::default()
    }
}

fn event_item(source: Source, view: &EventView, text: String, score: f64) -> pb::ContextItem {
    pb::ContextItem {
        event_id: view.seq.to_event_id(),
        session_id: view.session_id.clone(),
        time: Some(to_timestamp(view.seq.ts_us)),
        score,
        ..item(source, text)
    }
}

pub async fn get_context(
    store: Arc<Store>,
    retrieval: Arc<Retrieval>,
    caller: Principal,
    req: pb::GetContextRequest,
) -> Result<pb::GetContextResponse> {
    ids::memory_id("memory_id", &req.memory_id)?;
    ids::actor_id("actor_id", &req.actor_id)?;
    ids::session_id("session_id", &req.session_id)?;
    caller.require_actor(Action::Read, &req.memory_id, &req.actor_id)?;
    let budget = match req.token_budget {
        0 => DEFAULT_BUDGET,
        b if (100..=100_000).contains(&b) => b,
        _ => {
            return Err(ServiceError::invalid(
                "token_budget",
                "must be 100-100000 (0: 2000)",
            ));
        }
    } as usize;
    let query = if req.query.trim().is_empty() {
        None
    } else {
        Some(query_text("query", &req.query)?)
    };
    // Hybrid where the server has embeddings: a context query is natural language.
    let mode = retrieval.mode(None)?;
    let vector = match &query {
        Some(query) => retrieval.query_vector(mode, query).await?,
        None => None,
    };
    blocking(move || {
        let memory = store.memory(&req.memory_id)?;
        let now = now_us();
        let listing = EventListing {
            memory_id: req.memory_id.clone(),
            actor_id: req.actor_id.clone(),
            session_id: req.session_id.clone(),
            include_payloads: true,
            filter: EventFilterSpec::default(),
            page_size: RECENT_TURNS,
            page_token: String::new(),
            newest_first: true,
        };
        // A new session has no turns yet: its context is long-term memory only.
        let recent = match store.list_events(&listing, now) {
            Ok((events, _)) => events,
            Err(ServiceError::NotFound(_)) => Vec::new(),
            Err(err) => return Err(err),
        };
        let recent: Vec<(EventView, String)> = recent
            .into_iter()
            .filter_map(|v| event_text(&v).map(|t| (v, t)))
            .collect();
        // Without a query, what the session said last is what matters.
        let query = query.or_else(|| recent.first().map(|(_, text)| text.clone()));
        let visible =
            |r: &crate::store::codec::StoredRecord| caller.sees_record(&r.namespace, &r.actor_id);

        let mut seen_text: HashSet<String> = HashSet::new();
        let mut cited: HashSet<String> = HashSet::new();
        let mut items: Vec<pb::ContextItem> = Vec::new();
        let mut used = 0usize;

        // The session's summary, from every summary strategy.
        for strategy in &memory.strategies {
            if kind(strategy).ok() != Some(RecordKind::Summary) {
                continue;
            }
            let ns = namespace(strategy, &req.actor_id, &req.session_id);
            for record in store.namespace_records(&req.memory_id, &ns, now)? {
                if record.slot != "running:summary" || !visible(&record) {
                    continue;
                }
                let mut summary = item(Source::SessionSummary, record.text.clone());
                if used + summary.tokens as usize > budget {
                    continue;
                }
                used += summary.tokens as usize;
                seen_text.insert(normalize(&record.text));
                summary.memory_record_id = record.record_id.clone();
                summary.namespace = record.namespace.clone();
                summary.session_id = record.session_id.clone();
                summary.time = Some(to_timestamp(record.valid_from_us));
                items.push(summary);
            }
        }

        // The latest turns, newest first until their share of the budget is spent.
        let turn_budget = ((budget as f64 * RECENT_SHARE) as usize).min(budget - used);
        let mut turns = Vec::new();
        let mut turn_tokens = 0usize;
        let mut recent_ids = HashSet::new();
        for (view, text) in &recent {
            let turn = event_item(Source::RecentTurn, view, text.clone(), 0.0);
            if turn_tokens + turn.tokens as usize > turn_budget {
                break;
            }
            turn_tokens += turn.tokens as usize;
            recent_ids.insert(turn.event_id.clone());
            seen_text.insert(normalize(text));
            turns.push(turn);
        }
        turns.reverse();
        used += turn_tokens;
        items.extend(turns);

        let Some(query) = query else {
            return Ok(pb::GetContextResponse {
                items,
                tokens_used: used as i32,
            });
        };
        let (namespace_prefixes, actor_patterns) = caller.search_scope();
        let record_hits = retrieval.search_records(
            &store,
            &RecordSearch {
                memory_id: req.memory_id.clone(),
                query: query.clone(),
                namespace_prefix: String::new(),
                strategy_id: None,
                actor_id: Some(req.actor_id.clone()),
                limit: CANDIDATES,
                access: Access {
                    namespace_prefixes,
                    actor_patterns,
                },
                metadata: Vec::new(),
                now_us: now,
            },
            mode,
            vector.as_deref(),
        )?;
        for hit in record_hits {
            let Ok(record) = store.record(&req.memory_id, &hit.record_id, now, |r| {
                r.invalid_from_us == 0 && visible(r)
            }) else {
                continue;
            };
            let mut entry = item(Source::MemoryRecord, record.text.clone());
            if !seen_text.insert(normalize(&record.text)) || used + entry.tokens as usize > budget {
                continue;
            }
            used += entry.tokens as usize;
            cited.extend(record.source_event_ids.iter().cloned());
            entry.score = f64::from(hit.score);
            entry.time = Some(to_timestamp(record.valid_from_us));
            entry.session_id = record.session_id.clone();
            entry.namespace = record.namespace.clone();
            entry.memory_record_id = record.record_id;
            items.push(entry);
        }

        let event_mode = retrieval.event_mode(None)?;
        let event_hits = retrieval.search_events(
            &EventSearch {
                memory_id: req.memory_id.clone(),
                actor_id: req.actor_id.clone(),
                session_ids: Vec::new(),
                query,
                limit: CANDIDATES,
                start_us: None,
                end_us: None,
            },
            event_mode,
            vector.as_deref(),
        )?;
        for hit in event_hits {
            let Some(view) = store.event_by_key(&hit.event_key, now)? else {
                continue;
            };
            if view.memory_id != req.memory_id || view.actor_id != req.actor_id {
                continue;
            }
            let id = view.seq.to_event_id();
            // Already there as a recent turn, or as the source of a record included above.
            if recent_ids.contains(&id) || cited.contains(&id) {
                continue;
            }
            let Some(text) = event_text(&view) else {
                continue;
            };
            let entry = event_item(Source::PastEvent, &view, text.clone(), f64::from(hit.score));
            if !seen_text.insert(normalize(&text)) || used + entry.tokens as usize > budget {
                continue;
            }
            used += entry.tokens as usize;
            items.push(entry);
        }
        Ok(pb::GetContextResponse {
            items,
            tokens_used: used as i32,
        })
    })
    .await
}
