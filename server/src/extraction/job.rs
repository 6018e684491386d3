//! Running one job into a batch: load its events, extract, consolidate with the namespace.
//! The batch commits the results (see `batch`).

use super::batch::Batch;
use super::extractors::{Extractors, kind};
use super::namespaces::slot_string;
use super::turns::turns;
use crate::error::ServiceError;
use crate::store::codec::{StoredJob, StoredRecord, StoredStrategy};
use crate::store::keys::{self, EventSeq};
use crate::store::{LoadedEvent, RecordChange, Store};
use chrono::{DateTime, Utc};
use memd_extractor::builtin::EpisodeNote;
use memd_extractor::{Candidate, Decision, ExtractError, Input, RecordKind, Slot, Turn};
use sha2::{Digest, Sha256};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// Events of the session before a job's first event that the extractor sees as context.
const CONTEXT_EVENTS: usize = 4;
/// Events a summary or episode is built from at most (the latest ones).
const SESSION_EVENTS: usize = 2000;

/// What running a job did to the batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The job and its results are in the batch.
    Added,
    /// The namespace is locked by another worker: commit the batch, then run the job again.
    Busy,
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Store(#[from] ServiceError),
    /// A store error while the job was changing the batch: the batch must be dropped.
    #[error("{0}")]
    Tainted(ServiceError),
}

impl JobError {
    /// Whether another attempt can help.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::Extract(ExtractError::Permanent(_)))
    }
}

/// Where an episodic strategy keeps an actor's reflection, and the namespace prefix of the
/// actor's episodes: the template up to `{sessionId}` (without a trailing `/sessions/`).
pub fn reflection_namespaces(strategy: &StoredStrategy, actor_id: &str) -> (String, String) {
    let template = &strategy.namespace_template;
    let before = template
        .find("{sessionId}")
        .map_or(template.as_str(), |i| &template[..i]);
    let trimmed = before.trim_end_matches('/');
    let base = trimmed.strip_suffix("/sessions").unwrap_or(trimmed);
    let resolve = |t: &str| {
        t.replace("{actorId}", actor_id)
            .replace("{memoryStrategyId}", &strategy.strategy_id)
    };
    (format!("{}/reflections", resolve(base)), resolve(before))
}

/// The namespace a strategy writes to for an actor and session.
pub fn namespace(strategy: &StoredStrategy, actor_id: &str, session_id: &str) -> String {
    strategy
        .namespace_template
        .replace("{actorId}", actor_id)
        .replace("{sessionId}", session_id)
        .replace("{memoryStrategyId}", &strategy.strategy_id)
}

/// Record ids are derived from the job and the candidate's position, so a re-run after a
/// crash writes the same ids (and the job's removal in the same batch stops a second run).
fn record_id(job_key: &[u8], strategy_id: &str, index: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(job_key);
    hasher.update([0]);
    hasher.update(strategy_id.as_bytes());
    hasher.update(index.to_be_bytes());
    hex::encode(&hasher.finalize()[..16])
}

fn merge_sources(record: &mut StoredRecord, candidate: &Candidate) {
    for source in &candidate.source_event_ids {
        if !record.source_event_ids.contains(source) {
            record.source_event_ids.push(source.clone());
        }
    }
}

/// Runs one job into `batch`. Errors other than [`JobError::Tainted`] leave the batch as it
/// was.
pub fn run(
    store: &Store,
    extractors: &Extractors,
    batch: &mut Batch<'_>,
    job_key: &[u8],
    job: &StoredJob,
    now_us: u64,
) -> Result<Step, JobError> {
    let (memory_id, actor_id, _) = keys::decode_job_key(job_key)?;
    let memory = match store.memory(memory_id) {
        Ok(memory) => memory,
        // Deleted while the job waited: it is gone with its memory, never retried.
        Err(ServiceError::NotFound(_)) => {
            batch.jobs.push((job_key.to_vec(), job.clone()));
            return Ok(Step::Added);
        }
        Err(err) => return Err(err.into()),
    };
    let Some(strategy) = memory
        .strategies
        .iter()
        .find(|s| s.strategy_id == job.strategy_id)
    else {
        // The strategy was removed: the job goes with the batch, writing nothing.
        batch.jobs.push((job_key.to_vec(), job.clone()));
        return Ok(Step::Added);
    };
    let kind = kind(strategy)?;
    let extractor = extractors.for_strategy(strategy)?;
    let extractor = extractor.as_ref();
    let (events, context) = load_events(store, memory_id, actor_id, job, kind)?;
    let turns_now = turns(&events, actor_id);
    let context = turns(&context, actor_id);

    let namespace = namespace(strategy, actor_id, &job.session_id);
    // A finished episode also rewrites the actor's reflection: lock both namespaces first.
    let reflection = (kind == RecordKind::Episode && job.session_ended)
        .then(|| reflection_namespaces(strategy, actor_id));
    if let Some((reflection_ns, _)) = &reflection
        && batch
            .index(store, memory_id, reflection_ns, now_us)?
            .is_none()
    {
        return Ok(Step::Busy);
    }
    let running_id = {
        let Some(index) = batch.index(store, memory_id, &namespace, now_us)? else {
            return Ok(Step::Busy);
        };
        memd_extractor::running_slot(kind)
            .and_then(|slot| index.holder(&slot))
            .map(str::to_string)
    };
    let running = match running_id {
        Some(id) => match batch.written.get(&id) {
            Some(record) => Some(record.clone()),
            None => store.stored_record(memory_id, &id)?,
        },
        None => None,
    };
    // A final summary is still due when the session ends with nothing new to fold in.
    let finalise = job.session_ended && running.is_some() && kind == RecordKind::Summary;
    let candidates = if turns_now.is_empty() && !finalise {
        Vec::new()
    } else {
        extractor.extract(&Input {
            kind,
            turns: &turns_now,
            context: &context,
            session_ended: job.session_ended,
            state: running
                .as_ref()
                .map(|r| r.extractor_state.as_str())
                .filter(|s| !s.is_empty()),
        })?
    };
    let provenance = (extractor.name(), extractor.version());
    let reflected = match &reflection {
        Some((_, episodes_prefix)) => reflect_over(
            store,
            batch,
            memory_id,
            strategy,
            job,
            episodes_prefix,
            &candidates,
            now_us,
        )?,
        None => None,
    };
    let contexts = search_contexts(&context, &turns_now);
    let step = apply(
        store, batch, job_key, job, strategy, &namespace, candidates, &contexts, provenance, now_us,
    )?;
    if let (Some((reflection_ns, _)), Some(candidate)) = (&reflection, reflected) {
        apply_candidates(
            store,
            batch,
            job_key,
            job,
            strategy,
            reflection_ns,
            vec![candidate],
            &Contexts::new(),
            ("builtin", "1"),
            now_us,
            REFLECTION_INDEX,
        )?;
    }
    Ok(step)
}

/// Record-id index of a job's reflection (apart from its candidates' 0, 1, ...).
const REFLECTION_INDEX: usize = 1 << 20;

/// The reflection over the actor's episodes of this strategy, this session's new one included.
#[allow(clippy::too_many_arguments)]
fn reflect_over(
    store: &Store,
    batch: &Batch<'_>,
    memory_id: &str,
    strategy: &StoredStrategy,
    job: &StoredJob,
    episodes_prefix: &str,
    candidates: &[Candidate],
    now_us: u64,
) -> Result<Option<Candidate>, JobError> {
    let is_episode = |r: &StoredRecord| {
        r.strategy_id == strategy.strategy_id
            && r.slot == "running:episode"
            && r.session_id != job.session_id
            && r.namespace.starts_with(episodes_prefix)
    };
    let mut others: std::collections::BTreeMap<String, StoredRecord> = store
        .records_under(memory_id, episodes_prefix, now_us)?
        .into_iter()
        .filter(|r| is_episode(r))
        .map(|r| (r.record_id.clone(), r))
        .collect();
    // Episodes this batch wrote but has not committed yet.
    for record in batch.written.values().filter(|r| is_episode(r)) {
        others.insert(record.record_id.clone(), record.clone());
    }
    let mut notes: Vec<EpisodeNote> = others
        .into_values()
        .map(|r| EpisodeNote {
            text: r.text,
            valid_from: DateTime::<Utc>::from_timestamp_micros(r.valid_from_us as i64)
                .unwrap_or(DateTime::UNIX_EPOCH),
            source_event_ids: r.source_event_ids,
        })
        .collect();
    notes.extend(candidates.iter().map(|c| EpisodeNote {
        text: c.text.clone(),
        valid_from: c.valid_from,
        source_event_ids: c.source_event_ids.clone(),
    }));
    Ok(memd_extractor::builtin::reflect(&notes))
}

/// The events a job extracts from and the earlier events that give them context. Episodes
/// read the whole session; everything else reads the job's events (summaries fold them into
/// the state kept with their running record).
pub fn load_events(
    store: &Store,
    memory_id: &str,
    actor_id: &str,
    job: &StoredJob,
    kind: RecordKind,
) -> Result<(Vec<LoadedEvent>, Vec<LoadedEvent>), ServiceError> {
    let session_key = keys::session_key(memory_id, actor_id, &job.session_id);
    let seqs: Vec<EventSeq> = job
        .event_seqs
        .iter()
        .filter_map(|s| EventSeq::from_bytes(s))
        .collect();
    if kind == RecordKind::Episode {
        return Ok((
            store.session_events(&session_key, None, SESSION_EVENTS)?,
            Vec::new(),
        ));
    }
    let events = store.events_at(&session_key, &seqs)?;
    let context = match seqs.iter().min() {
        Some(&first) => store.session_events(&session_key, Some(first), CONTEXT_EVENTS)?,
        None => Vec::new(),
    };
    Ok((events, context))
}

/// Characters of each turn kept in a search context.
const CONTEXT_CHARS_PER_TURN: usize = 1000;

/// Turns before a record's own turn kept in its search context.
const CONTEXT_TURNS_BEFORE: usize = 2;

/// Event id → the words a record drawn from that turn alone is also found by.
pub type Contexts = HashMap<String, String>;

/// The search context of each of `turns`: the two turns before it (from `earlier` for the
/// first ones) and the turn itself, each as "speaker: text". A fact is one sentence with its
/// pronouns resolved; the question it answers and the rest of its turn are what a later
/// question shares words with ("What does John want to do after basketball?" → "I want to use
/// my platform..." in reply to "What are your plans after basketball?"), and the question is
/// often a turn further back ("Melanie: we had a concert for her birthday" → "Caroline: who
/// played?" → "Melanie: Matt Patterson"). On LoCoMo one turn before took the keyword
/// recall@10 of records from 0.633 to 0.730, hybrid from 0.659 to 0.738; a second turn before
/// left records' keyword recall where it was (0.727) but the same window took raw events'
/// from 0.583 to 0.695, so both indexes keep two (docs/benchmarks.md).
pub fn search_contexts(earlier: &[Turn], turns: &[Turn]) -> Contexts {
    // A long turn (a tool's JSON result) is cut: the context is copied into every record
    // drawn from the next turns.
    let said = |t: &Turn| {
        let text: String = t.text.chars().take(CONTEXT_CHARS_PER_TURN).collect();
        format!("{}: {text}", t.speaker)
    };
    let mut before: VecDeque<String> = earlier
        [earlier.len().saturating_sub(CONTEXT_TURNS_BEFORE)..]
        .iter()
        .map(said)
        .collect();
    let mut out = Contexts::new();
    for turn in turns {
        let own = said(turn);
        match out.entry(turn.event_id.clone()) {
            // An event with several payload items: its turns in order.
            Entry::Occupied(mut context) => {
                let context = context.get_mut();
                context.push('\n');
                context.push_str(&own);
            }
            Entry::Vacant(slot) => {
                let mut context = String::new();
                for text in before.iter().chain([&own]) {
                    if !context.is_empty() {
                        context.push('\n');
                    }
                    context.push_str(text);
                }
                slot.insert(context);
            }
        }
        before.push_back(own);
        if before.len() > CONTEXT_TURNS_BEFORE {
            before.pop_front();
        }
    }
    out
}

/// The search context of a candidate: that of its turn when it was drawn from one turn
/// (summaries and episodes cite many and say enough themselves).
fn context_of(candidate: &Candidate, contexts: &Contexts) -> String {
    match candidate.source_event_ids.as_slice() {
        [id] => contexts.get(id).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Consolidates a job's candidates with its namespace and adds the results and the job to
/// `batch`: the one code path behind the server's own workers and `CompleteExtractionJob`.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    store: &Store,
    batch: &mut Batch<'_>,
    job_key: &[u8],
    job: &StoredJob,
    strategy: &StoredStrategy,
    namespace: &str,
    candidates: Vec<Candidate>,
    contexts: &Contexts,
    provenance: (&str, &str),
    now_us: u64,
) -> Result<Step, JobError> {
    let step = apply_candidates(
        store, batch, job_key, job, strategy, namespace, candidates, contexts, provenance, now_us,
        0,
    )?;
    if step == Step::Added {
        batch.jobs.push((job_key.to_vec(), job.clone()));
    }
    Ok(step)
}

/// Consolidates candidates into one namespace of the batch; record ids count from
/// `first_index`.
#[allow(clippy::too_many_arguments)]
fn apply_candidates(
    store: &Store,
    batch: &mut Batch<'_>,
    job_key: &[u8],
    job: &StoredJob,
    strategy: &StoredStrategy,
    namespace: &str,
    candidates: Vec<Candidate>,
    contexts: &Contexts,
    (extractor_name, extractor_version): (&str, &str),
    now_us: u64,
    first_index: usize,
) -> Result<Step, JobError> {
    let (memory_id, actor_id, _) = keys::decode_job_key(job_key)?;
    if batch.index(store, memory_id, namespace, now_us)?.is_none() {
        return Ok(Step::Busy);
    }
    let namespace = namespace.to_string();
    let expire_us = match strategy.record_expiry_days {
        0 => 0,
        days => now_us + u64::from(days) * 86_400 * 1_000_000,
    };
    let (index, written, changes) = batch.parts(memory_id, &namespace);
    for (index_in_job, candidate) in candidates.into_iter().enumerate() {
        let index_in_job = first_index + index_in_job;
        let fresh = |id: String, candidate: &Candidate| StoredRecord {
            record_id: id,
            namespace: namespace.clone(),
            strategy_id: strategy.strategy_id.clone(),
            text: candidate.text.clone(),
            metadata: Default::default(),
            create_us: now_us,
            update_us: now_us,
            valid_from_us: candidate.valid_from.timestamp_micros().max(0) as u64,
            invalid_from_us: 0,
            source_event_ids: candidate.source_event_ids.clone(),
            actor_id: actor_id.to_string(),
            session_id: job.session_id.clone(),
            extractor: extractor_name.to_string(),
            extractor_version: extractor_version.to_string(),
            version: 1,
            superseded_by: String::new(),
            supersedes: Vec::new(),
            slot: slot_string(&candidate.slot),
            expire_us,
            extractor_state: candidate.state.clone().unwrap_or_default(),
            client_token: String::new(),
            search_context: context_of(candidate, contexts),
        };
        // Decide; a decision against a record that has meanwhile expired is re-decided
        // without it.
        let (decision, old) = loop {
            let decision = index.decide(&candidate);
            let target = match &decision {
                Decision::New => break (decision, None),
                Decision::Duplicate(id) | Decision::Refine(id) | Decision::Supersede(id) => {
                    id.clone()
                }
            };
            let old = match written.get(&target) {
                Some(record) => Some(record.clone()),
                None => store
                    .stored_record(memory_id, &target)
                    .map_err(JobError::Tainted)?
                    .filter(|r| r.invalid_from_us == 0)
                    .filter(|r| r.expire_us == 0 || r.expire_us > now_us),
            };
            match old {
                Some(old) => break (decision, Some(old)),
                None => index.remove(&target),
            }
        };
        let change = match (decision, old) {
            (Decision::Duplicate(_), Some(mut record)) => {
                // Same statement again: only its provenance grows.
                let before = record.source_event_ids.len();
                merge_sources(&mut record, &candidate);
                if record.source_event_ids.len() == before {
                    continue;
                }
                RecordChange::Provenance(record)
            }
            (Decision::Refine(_), Some(old)) => {
                let mut new = old.clone();
                new.text = candidate.text.clone();
                new.update_us = now_us;
                new.version += 1;
                new.extractor = extractor_name.to_string();
                new.extractor_version = extractor_version.to_string();
                new.expire_us = expire_us;
                new.extractor_state = candidate.state.clone().unwrap_or_default();
                if matches!(candidate.slot, Some(Slot::Running(_))) {
                    // A rewritten summary cites what it says now.
                    new.source_event_ids = candidate.source_event_ids.clone();
                } else {
                    merge_sources(&mut new, &candidate);
                }
                index.insert(&new.record_id, &new.text, candidate.slot.clone());
                RecordChange::Update { old, new }
            }
            (Decision::Supersede(_), Some(old)) => {
                let mut new = fresh(
                    record_id(job_key, &strategy.strategy_id, index_in_job),
                    &candidate,
                );
                new.supersedes.push(old.record_id.clone());
                index.remove(&old.record_id);
                index.insert(&new.record_id, &new.text, candidate.slot.clone());
                RecordChange::Supersede { old, new }
            }
            _ => {
                let record = fresh(
                    record_id(job_key, &strategy.strategy_id, index_in_job),
                    &candidate,
                );
                index.insert(&record.record_id, &record.text, candidate.slot.clone());
                RecordChange::Create(record)
            }
        };
        for record in change.written() {
            written.insert(record.record_id.clone(), record.clone());
        }
        changes.push(change);
    }
    Ok(Step::Added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memd_extractor::Role;

    fn turn(event_id: &str, speaker: &str, text: &str) -> Turn {
        Turn {
            event_id: event_id.into(),
            time: DateTime::<Utc>::UNIX_EPOCH,
            role: Role::User,
            speaker: speaker.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_turn_is_found_with_the_two_before_it() {
        let earlier = [
            turn("e-1", "John", "Hi."),
            turn("e0", "Tim", "Any plans after basketball?"),
        ];
        let turns = [
            turn("e1", "John", "A foundation."),
            turn("e2", "Tim", "Nice."),
            turn("e2", "Tim", "Tell me more."),
            turn("e3", "John", &"x".repeat(5000)),
        ];
        let contexts = search_contexts(&earlier, &turns);
        assert_eq!(
            contexts["e1"],
            "John: Hi.\nTim: Any plans after basketball?\nJohn: A foundation."
        );
        // Two items of one event: both, after the turns before them.
        assert_eq!(
            contexts["e2"],
            "Tim: Any plans after basketball?\nJohn: A foundation.\nTim: Nice.\nTim: Tell me more."
        );
        assert_eq!(
            contexts["e3"].len(),
            "Tim: Nice.\nTim: Tell me more.\nJohn: ".len() + CONTEXT_CHARS_PER_TURN
        );
        // Without earlier turns the first has only itself.
        assert_eq!(
            search_contexts(&[], &turns[..1])["e1"],
            "John: A foundation."
        );
    }
}
