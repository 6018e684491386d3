//! Events: append (with idempotency, branching and session bookkeeping in one batch), point
//! reads, filtered and paginated listings, deletion.

use super::codec::{
    self, StoredActor, StoredBranch, StoredChange, StoredEvent, StoredSession, StoredToken,
};
use super::commit::Batch;
use super::keys::{self, EventSeq, cf};
use super::{SessionTransition, Store, outbox, page};
use crate::error::{Result, ServiceError};
use crate::lifecycle;
use memd_proto::v1::SessionState;
use rocksdb::WriteBatch;
use std::collections::BTreeMap;

/// A validated CreateEvent request.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    /// Event time; `None` means now.
    pub event_ts_us: Option<u64>,
    pub payload: Vec<codec::StoredPayload>,
    /// Branch name ("" = main) and the root event id it forks off.
    pub branch: String,
    pub branch_root: Option<EventSeq>,
    pub metadata: BTreeMap<String, String>,
    pub client_token: String,
    /// Hash of the request without its token (compared on token reuse).
    pub request_hash: Vec<u8>,
    /// Whether the memory's strategies extract from it (`extraction_mode` not SKIP).
    pub extract: bool,
}

/// An event as reads return it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub seq: EventSeq,
    pub stored: StoredEvent,
}

/// One condition on event metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataCondition {
    Equals(String, String),
    Exists(String),
    NotExists(String),
}

impl MetadataCondition {
    fn holds(&self, metadata: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals(key, value) => metadata.get(key) == Some(value),
            Self::Exists(key) => metadata.contains_key(key),
            Self::NotExists(key) => !metadata.contains_key(key),
        }
    }
}

/// Which events a listing returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilterSpec {
    /// `Some((name, include_parent_branches))` restricts to one branch ("" = main).
    pub branch: Option<(String, bool)>,
    pub metadata: Vec<MetadataCondition>,
}

/// A validated ListEvents request.
#[derive(Debug, Clone)]
pub struct EventListing {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub include_payloads: bool,
    pub filter: EventFilterSpec,
    pub page_size: usize,
    pub page_token: String,
    pub newest_first: bool,
}

/// A run of a listing: events of one branch (or of any, `None`) up to an inclusive bound.
#[derive(Debug)]
struct Segment {
    branch: Option<String>,
    upto: Option<EventSeq>,
}

const MAX_BRANCH_DEPTH: usize = 1000;

impl Store {
    /// Appends an event and returns it; an idempotent replay (same client token, same
    /// request) returns the original event and writes nothing.
    ///
    /// The reads are point lookups (memtable or block cache in the common case) and run on the
    /// caller's task; the write joins the next group commit. Callers must not cancel the
    /// future between those two steps (the server runs it as its own task).
    pub async fn append_event(&self, new: NewEvent, now_us: u64) -> Result<EventView> {
        let _memory_gate = self.memory_gate.read().await;
        // Under the gate: a DeleteMemory either finished (NOT_FOUND) or waits for this write,
        // so no event or job is ever written into a deleted memory.
        let memory = self.memory(&new.memory_id)?;
        let policy = memory.session_policy.unwrap_or_default();
        let _actor_gate = self.actor_gate(&new.memory_id, &new.actor_id).read().await;
        let _session = self
            .session_lock(&new.memory_id, &new.actor_id, &new.session_id)
            .lock()
            .await;

        let token_key = (!new.client_token.is_empty())
            .then(|| keys::event_token_key(&new.memory_id, &new.actor_id, &new.client_token));
        if let Some(token_key) = &token_key
            && let Some(replay) = self.replay_token(&new, token_key)?
        {
            return Ok(replay);
        }

        let session_key = keys::session_key(&new.memory_id, &new.actor_id, &new.session_id);
        let previous: Option<StoredSession> = self.get_decoded(cf::SESSIONS, &session_key)?;
        if let Some(session) = &previous
            && lifecycle::state_at(session, &policy, now_us) == SessionState::Terminated
        {
            return Err(ServiceError::FailedPrecondition(format!(
                "session {} is terminated; nothing was written. Append to a new session \
                     (leave session_id empty to have one generated)",
                new.session_id
            )));
        }

        let mut batch = Batch::default();
        let branch_root =
            self.resolve_branch(&new, &session_key, previous.is_some(), now_us, &mut batch)?;
        let seq = self.next_event_seq(new.event_ts_us.unwrap_or(now_us));
        let event = StoredEvent {
            create_us: now_us,
            payload: new.payload,
            branch: new.branch,
            metadata: new.metadata,
            client_token: new.client_token,
            branch_root_seq: branch_root
                .map(|root| root.to_bytes().to_vec())
                .unwrap_or_default(),
        };
        let event_key = keys::event_key(&session_key, seq);
        let tokens = new
            .extract
            .then(|| outbox::extractable_tokens(&event.payload))
            .flatten();
        batch.put(cf::EVENTS, &event_key, codec::encode(&event));
        if outbox::extractable_tokens(&event.payload).is_some() {
            // Searchable text: the events index picks it up from the log.
            let (log_key, log_value) = self.index_entry(codec::StoredIndexChange {
                memory_id: new.memory_id.clone(),
                event_key: event_key.clone(),
                ..Default::default()
            });
            batch.put(cf::INDEX_LOG, log_key, log_value);
        }

        let mut session = match &previous {
            Some(old) => {
                if let Some(deadline) = outbox::timer_deadline(old, &policy, &memory) {
                    batch.delete(cf::TIMERS, keys::timer_key(deadline, &session_key));
                }
                StoredSession {
                    last_event_us: now_us,
                    event_count: old.event_count + 1,
                    announced_state: SessionState::Active as i32,
                    ..old.clone()
                }
            }
            None => {
                let actor_key = keys::actor_prefix(&new.memory_id, &new.actor_id);
                if self.get(cf::ACTORS, &actor_key)?.is_none() {
                    batch.put(
                        cf::ACTORS,
                        &actor_key,
                        codec::encode(&StoredActor { create_us: now_us }),
                    );
                }
                StoredSession {
                    create_us: now_us,
                    last_event_us: now_us,
                    event_count: 1,
                    announced_state: SessionState::Active as i32,
                    terminated_us: 0,
                    pending: Vec::new(),
                    last_ping_us: 0,
                }
            }
        };
        let ids = (
            new.memory_id.as_str(),
            new.actor_id.as_str(),
            new.session_id.as_str(),
        );
        let jobs = match tokens {
            Some(tokens) => self.stage_event(ids, &memory, &mut session, seq, tokens, now_us),
            None => Vec::new(),
        };
        let queued = jobs.iter().any(|j| j.queue_key.is_some());
        for job in jobs {
            batch.put(cf::JOBS, &job.job_key, job.value);
            if let Some(queue_key) = job.queue_key {
                batch.put(cf::QUEUE, queue_key, []);
            }
        }
        batch.put(cf::SESSIONS, &session_key, codec::encode(&session));
        if let Some(deadline) = outbox::timer_deadline(&session, &policy, &memory) {
            batch.put(cf::TIMERS, keys::timer_key(deadline, &session_key), []);
        }
        if let Some(token_key) = token_key {
            let token = StoredToken {
                request_hash: new.request_hash,
                target: event_key,
                create_us: now_us,
            };
            batch.put(cf::TOKENS, token_key, codec::encode(&token));
        }
        // A new session, or an IDLE one woken: a transition, logged with the event.
        let from = match previous
            .as_ref()
            .map(|s| SessionState::try_from(s.announced_state))
        {
            None => Some(SessionState::Unspecified),
            Some(Ok(SessionState::Idle)) => Some(SessionState::Idle),
            _ => None,
        };
        if let Some(from) = from {
            self.log_change_grouped(
                &mut batch,
                &StoredChange {
                    at_us: now_us,
                    memory_id: new.memory_id.clone(),
                    actor_id: new.actor_id.clone(),
                    session_id: new.session_id.clone(),
                    from_state: from as i32,
                    to_state: SessionState::Active as i32,
                    ..Default::default()
                },
            );
        }
        self.committer.commit(batch).await?;
        self.changes_committed();
        if queued {
            self.jobs_ready.notify_one();
        }

        if let Some(from) = from {
            self.broadcast(SessionTransition {
                memory_id: new.memory_id.clone(),
                actor_id: new.actor_id.clone(),
                session_id: new.session_id.clone(),
                from,
                to: SessionState::Active,
                at_us: now_us,
            });
        }
        let view = EventView {
            memory_id: new.memory_id,
            actor_id: new.actor_id,
            session_id: new.session_id,
            seq,
            stored: event,
        };
        Ok(view)
    }

    /// The original event of a reused client token, or ALREADY_EXISTS for another request.
    fn replay_token(&self, new: &NewEvent, token_key: &[u8]) -> Result<Option<EventView>> {
        let Some(token) = self.get_decoded::<StoredToken>(cf::TOKENS, token_key)? else {
            return Ok(None);
        };
        if token.request_hash != new.request_hash {
            return Err(ServiceError::AlreadyExists(
                "client_token was already used with a different request".into(),
            ));
        }
        let (_, _, session_id) = keys::decode_session_key(&token.target)?;
        let seq = token
            .target
            .len()
            .checked_sub(EventSeq::LEN)
            .and_then(|start| EventSeq::from_bytes(&token.target[start..]))
            .ok_or_else(|| ServiceError::DataLoss("token target is not an event key".into()))?;
        let stored: StoredEvent =
            self.get_decoded(cf::EVENTS, &token.target)?
                .ok_or_else(|| {
                    ServiceError::not_found("the event created with this client_token (deleted)")
                })?;
        Ok(Some(EventView {
            memory_id: new.memory_id.clone(),
            actor_id: new.actor_id.clone(),
            session_id: session_id.to_string(),
            seq,
            stored,
        }))
    }

    /// Checks the event's branch and records a new one in `batch`; returns its root event.
    fn resolve_branch(
        &self,
        new: &NewEvent,
        session_key: &[u8],
        session_exists: bool,
        now_us: u64,
        batch: &mut Batch,
    ) -> Result<Option<EventSeq>> {
        if new.branch.is_empty() {
            return Ok(None);
        }
        let branch_key = keys::branch_key(session_key, &new.branch);
        if let Some(existing) = self.get_decoded::<StoredBranch>(cf::BRANCHES, &branch_key)? {
            let root = EventSeq::from_bytes(&existing.root_seq)
                .ok_or_else(|| ServiceError::DataLoss("branch root".into()))?;
            return match new.branch_root {
                Some(requested) if requested != root => Err(ServiceError::invalid(
                    "branch.root_event_id",
                    format!(
                        "branch {} already forks off event {}",
                        new.branch,
                        root.to_event_id()
                    ),
                )),
                _ => Ok(Some(root)),
            };
        }
        let root = new.branch_root.ok_or_else(|| {
            ServiceError::invalid("branch.root_event_id", "is required to start a new branch")
        })?;
        let root_event: Option<StoredEvent> = if session_exists {
            self.get_decoded(cf::EVENTS, &keys::event_key(session_key, root))?
        } else {
            None
        };
        let root_event = root_event.ok_or_else(|| {
            ServiceError::not_found(format!(
                "branch.root_event_id {} in this session",
                root.to_event_id()
            ))
        })?;
        let branch = StoredBranch {
            root_seq: root.to_bytes().to_vec(),
            parent: root_event.branch,
            create_us: now_us,
        };
        batch.put(cf::BRANCHES, branch_key, codec::encode(&branch));
        Ok(Some(root))
    }

    /// Reads one event.
    pub fn event(
        &self,
        memory_id: &str,
        actor_id: &str,
        session_id: &str,
        seq: EventSeq,
        now_us: u64,
    ) -> Result<EventView> {
        self.memory(memory_id)?;
        let key = keys::event_key(&keys::session_key(memory_id, actor_id, session_id), seq);
        let stored: StoredEvent = self
            .get_decoded(cf::EVENTS, &key)?
            .filter(|event: &StoredEvent| !self.expiry.expired(memory_id, event.create_us, now_us))
            .ok_or_else(|| ServiceError::not_found(format!("event {}", seq.to_event_id())))?;
        Ok(EventView {
            memory_id: memory_id.into(),
            actor_id: actor_id.into(),
            session_id: session_id.into(),
            seq,
            stored,
        })
    }

    /// Deletes one event (and its idempotency token).
    pub fn delete_event(
        &self,
        memory_id: &str,
        actor_id: &str,
        session_id: &str,
        seq: EventSeq,
    ) -> Result<()> {
        self.memory(memory_id)?;
        let _session = self
            .session_lock(memory_id, actor_id, session_id)
            .blocking_lock();
        let key = keys::event_key(&keys::session_key(memory_id, actor_id, session_id), seq);
        let stored: StoredEvent = self
            .get_decoded(cf::EVENTS, &key)?
            .ok_or_else(|| ServiceError::not_found(format!("event {}", seq.to_event_id())))?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::EVENTS), &key);
        self.log_event_change(&mut batch, memory_id, &key);
        self.log_context_change(&mut batch, memory_id, &key)?;
        if !stored.client_token.is_empty() {
            batch.delete_cf(
                self.cf(cf::TOKENS),
                keys::event_token_key(memory_id, actor_id, &stored.client_token),
            );
        }
        self.commit(batch)
    }

    /// One page of a session's events.
    pub fn list_events(
        &self,
        listing: &EventListing,
        now_us: u64,
    ) -> Result<(Vec<EventView>, String)> {
        let (memory_id, actor_id, session_id) =
            (&listing.memory_id, &listing.actor_id, &listing.session_id);
        self.memory(memory_id)?;
        let session_key = keys::session_key(memory_id, actor_id, session_id);
        if self.get(cf::SESSIONS, &session_key)?.is_none() {
            return Err(ServiceError::not_found(format!(
                "session {session_id} of actor {actor_id}"
            )));
        }
        let mut segments = self.segments(&session_key, &listing.filter.branch)?;
        if listing.newest_first {
            segments.reverse();
        }
        let scope = format!(
            "events\0{}\0{:?}\0{}",
            hex::encode(&session_key),
            listing.filter,
            listing.newest_first
        );
        let (first_segment, after) =
            match page::decode("page_token", &listing.page_token, scope.as_bytes())? {
                Some(cursor) => decode_cursor(&cursor, segments.len())?,
                None => (0, None),
            };

        let mut events: Vec<(usize, EventView)> = Vec::new();
        let mut bytes = 0;
        for (index, segment) in segments.iter().enumerate().skip(first_segment) {
            let resume = if index == first_segment { after } else { None };
            let (start, end) = segment_bounds(&session_key, segment, resume, listing.newest_first);
            for item in self.range(cf::EVENTS, &start, &end, listing.newest_first) {
                let (key, value) = item?;
                let mut stored: StoredEvent = codec::decode(&value)?;
                if segment
                    .branch
                    .as_ref()
                    .is_some_and(|branch| *branch != stored.branch)
                    || !listing
                        .filter
                        .metadata
                        .iter()
                        .all(|c| c.holds(&stored.metadata))
                    || self.expiry.expired(memory_id, stored.create_us, now_us)
                {
                    continue;
                }
                let seq = EventSeq::from_bytes(&key[session_key.len()..])
                    .ok_or_else(|| ServiceError::DataLoss("event key".into()))?;
                // The stored size stands in for the encoded one (payload-free listings
                // carry a few hundred bytes per event and stop at page_size).
                let size = if listing.include_payloads {
                    value.len()
                } else {
                    0
                };
                if events.len() == listing.page_size
                    || (!events.is_empty() && bytes + size > page::MAX_PAGE_BYTES)
                {
                    let (last_index, last) = events.last().expect("page_size >= 1");
                    let token =
                        page::encode(scope.as_bytes(), &encode_cursor(*last_index, last.seq));
                    return Ok((events.into_iter().map(|(_, view)| view).collect(), token));
                }
                if !listing.include_payloads {
                    stored.payload.clear();
                }
                let view = EventView {
                    memory_id: memory_id.clone(),
                    actor_id: actor_id.clone(),
                    session_id: session_id.clone(),
                    seq,
                    stored,
                };
                // Remember the segment of each event: the next page resumes in it.
                events.push((index, view));
                bytes += size;
            }
        }
        Ok((
            events.into_iter().map(|(_, view)| view).collect(),
            String::new(),
        ))
    }

    /// The runs of events a branch filter selects, oldest first.
    fn segments(
        &self,
        session_key: &[u8],
        branch: &Option<(String, bool)>,
    ) -> Result<Vec<Segment>> {
        let Some((name, include_parents)) = branch else {
            return Ok(vec![Segment {
                branch: None,
                upto: None,
            }]);
        };
        let mut segments = vec![Segment {
            branch: Some(name.clone()),
            upto: None,
        }];
        let mut current = name.clone();
        while !current.is_empty() {
            let record: StoredBranch = self
                .get_decoded(cf::BRANCHES, &keys::branch_key(session_key, &current))?
                .ok_or_else(|| ServiceError::not_found(format!("branch {current}")))?;
            if !include_parents {
                break;
            }
            if segments.len() > MAX_BRANCH_DEPTH {
                return Err(ServiceError::DataLoss("branch chain does not end".into()));
            }
            let root = EventSeq::from_bytes(&record.root_seq)
                .ok_or_else(|| ServiceError::DataLoss("branch root".into()))?;
            segments.push(Segment {
                branch: Some(record.parent.clone()),
                upto: Some(root),
            });
            current = record.parent;
        }
        segments.reverse();
        Ok(segments)
    }
}

fn encode_cursor(segment: usize, seq: EventSeq) -> Vec<u8> {
    [(segment as u32).to_be_bytes().as_slice(), &seq.to_bytes()].concat()
}

fn decode_cursor(cursor: &[u8], segments: usize) -> Result<(usize, Option<EventSeq>)> {
    let invalid = || ServiceError::invalid("page_token", "is not a page token of this listing");
    if cursor.len() != 4 + EventSeq::LEN {
        return Err(invalid());
    }
    let segment = u32::from_be_bytes(cursor[..4].try_into().expect("4 bytes")) as usize;
    if segment >= segments {
        return Err(invalid());
    }
    Ok((
        segment,
        Some(EventSeq::from_bytes(&cursor[4..]).ok_or_else(invalid)?),
    ))
}

/// Key bounds `[start, end)` of a segment scan, resuming after (or, newest first, before) `after`.
fn segment_bounds(
    session_key: &[u8],
    segment: &Segment,
    after: Option<EventSeq>,
    reverse: bool,
) -> (Vec<u8>, Vec<u8>) {
    let just_past = |seq: EventSeq| [keys::event_key(session_key, seq).as_slice(), &[0]].concat();
    let mut start = session_key.to_vec();
    let mut end = segment
        .upto
        .map_or_else(|| keys::prefix_end(session_key), just_past);
    if let Some(after) = after {
        if reverse {
            end = end.min(keys::event_key(session_key, after));
        } else {
            start = start.max(just_past(after));
        }
    }
    (start, end)
}
