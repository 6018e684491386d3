//! The invariants checked after every restart, against the ledger: acknowledged writes are
//! there once with the id they were given, acknowledged deletes stay deleted, in-flight
//! writes happened at most once (exactly once when retried with their token), extraction ran
//! once per stored event, and the search indexes agree with the store once caught up.
//! Each check also settles what the kill left unknown, so later cycles check it strictly.

use super::ledger::{self, Deleted, Ledger, Written};
use super::workload::{self, SESSION, lock};
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Code;

/// How many older entries each cycle re-reads by id, and how many of the cycle's entries
/// each search check samples (every deleted one is searched for).
const SAMPLE: usize = 50;
/// Longest wait for extraction to drain and the indexes to catch up.
const SETTLE: Duration = Duration::from_secs(300);

/// One cycle's checks.
pub struct Check<'a> {
    pub client: &'a MemdClient,
    pub memory_id: &'a str,
    pub ledger: &'a Mutex<Ledger>,
    pub workers: usize,
    pub semantic: bool,
    pub violations: Vec<String>,
}

impl Check<'_> {
    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Sends again every write that was in flight with a client token: each must succeed.
    pub async fn retry(&mut self) {
        let events: Vec<(usize, pb::CreateEventRequest)> = {
            let ledger = lock(self.ledger);
            ledger
                .events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.written == Written::Retry)
                .map(|(i, e)| (i, workload::event_request(self.memory_id, e)))
                .collect()
        };
        for (index, request) in events {
            match self.client.create_event(request).await {
                Ok(event) => {
                    let mut ledger = lock(self.ledger);
                    ledger.events[index].id = Some(event.event_id);
                    ledger.events[index].written = Written::Acked;
                }
                Err(status) => self.violation(format!("retrying CreateEvent failed: {status}")),
            }
        }
        let records: Vec<(usize, pb::MemoryRecordInput)> = {
            let ledger = lock(self.ledger);
            ledger
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.written == Written::Retry)
                .map(|(i, r)| (i, workload::record_input(r)))
                .collect()
        };
        for (index, input) in records {
            match self
                .client
                .batch_create_memory_records(self.memory_id, vec![input])
                .await
            {
                Ok(results) if results.first().is_some_and(|r| r.code == 0) => {
                    let mut ledger = lock(self.ledger);
                    ledger.records[index].id = Some(results[0].memory_record_id.clone());
                    ledger.records[index].written = Written::Acked;
                }
                other => self.violation(format!("retrying a record write failed: {other:?}")),
            }
        }
    }

    /// Lists `actor`'s events: text → ids.
    async fn listed(&mut self, actor: &str) -> HashMap<String, Vec<String>> {
        let listing = pb::ListEventsRequest {
            memory_id: self.memory_id.into(),
            actor_id: actor.into(),
            session_id: SESSION.into(),
            include_payloads: true,
            page_size: 100,
            ..Default::default()
        };
        let mut found: HashMap<String, Vec<String>> = HashMap::new();
        match self
            .client
            .all_events(listing)
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(events) => {
                for event in events {
                    let text = event
                        .payload
                        .first()
                        .and_then(|item| match &item.content {
                            Some(pb::payload_item::Content::Conversational(turn)) => {
                                Some(turn.text.clone())
                            }
                            _ => None,
                        })
                        .unwrap_or_default();
                    found.entry(text).or_default().push(event.event_id);
                }
            }
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => self.violation(format!("listing {actor}'s events failed: {status}")),
        }
        found
    }

    /// Every event written in `cycle`, against what memd lists.
    pub async fn events_of(&mut self, cycle: usize) {
        let mut actors: Vec<String> = (0..self.workers)
            .map(|w| ledger::worker_actor(cycle, w))
            .collect();
        actors.extend(
            lock(self.ledger)
                .disposables
                .iter()
                .filter(|d| d.actor.starts_with(&format!("chaos/c{cycle}/")))
                .map(|d| d.actor.clone()),
        );
        for actor in actors {
            let mut found = self.listed(&actor).await;
            let mut ledger = lock(self.ledger);
            let erased = ledger
                .disposables
                .iter()
                .position(|d| d.actor == actor)
                .map(|i| (i, ledger.disposables[i].deleted));
            let mine: Vec<usize> = (0..ledger.events.len())
                .filter(|&i| ledger.events[i].actor == actor)
                .collect();
            // An erasure in flight at the kill happened whole or not at all.
            if let Some((i, Deleted::Maybe)) = erased {
                let any_live = mine.iter().any(|&e| {
                    let event = &ledger.events[e];
                    event.live() && found.contains_key(&event.text)
                });
                ledger.disposables[i].deleted = if any_live {
                    Deleted::No
                } else {
                    Deleted::Yes { cycle }
                };
            }
            let erased = erased.is_some_and(|(i, _)| ledger.disposables[i].deleted != Deleted::No);
            let mut violations = Vec::new();
            for &index in &mine {
                let event = &mut ledger.events[index];
                let ids = found.remove(&event.text).unwrap_or_default();
                if ids.len() > 1 {
                    violations.push(format!("event {} is stored {} times", event.tag, ids.len()));
                }
                if erased {
                    if !ids.is_empty() {
                        violations.push(format!(
                            "event {} of erased actor {actor} is back",
                            event.tag
                        ));
                    }
                    continue;
                }
                match (event.written, event.deleted) {
                    (_, Deleted::Yes { .. }) if !ids.is_empty() => {
                        violations.push(format!("deleted event {} is back", event.tag));
                    }
                    (_, Deleted::Maybe) => {
                        event.deleted = if ids.is_empty() {
                            Deleted::Yes { cycle }
                        } else {
                            Deleted::No
                        };
                    }
                    (Written::Acked, Deleted::No) if ids.first() != event.id.as_ref() => {
                        violations.push(format!(
                            "acknowledged event {} ({:?}) is missing or changed id: {ids:?}",
                            event.tag, event.id
                        ));
                    }
                    (Written::Unknown, _) => {
                        if let Some(id) = ids.first() {
                            event.id = Some(id.clone());
                            event.written = Written::Acked;
                        } else {
                            event.written = Written::Lost;
                        }
                    }
                    _ => {}
                }
            }
            for (text, _) in found {
                violations.push(format!("{actor} holds an event nobody wrote: {text:?}"));
            }
            drop(ledger);
            self.violations.extend(violations);
        }
    }

    /// Every record written in `cycle`, against what memd lists.
    pub async fn records_of(&mut self, cycle: usize) {
        let listing = pb::ListMemoryRecordsRequest {
            memory_id: self.memory_id.into(),
            namespace: ledger::record_namespace(cycle),
            ..Default::default()
        };
        let mut found: HashMap<String, Vec<String>> = HashMap::new();
        match self
            .client
            .all_memory_records(listing)
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(records) => {
                for record in records {
                    found
                        .entry(record.text)
                        .or_default()
                        .push(record.memory_record_id);
                }
            }
            Err(status) => self.violation(format!("listing records failed: {status}")),
        }
        let mut ledger = lock(self.ledger);
        let mut violations = Vec::new();
        for record in ledger.records.iter_mut().filter(|r| r.cycle == cycle) {
            let ids = found.remove(&record.text).unwrap_or_default();
            if ids.len() > 1 {
                violations.push(format!(
                    "record {} is stored {} times",
                    record.tag,
                    ids.len()
                ));
            }
            match (record.written, record.deleted) {
                (_, Deleted::Yes { .. }) if !ids.is_empty() => {
                    violations.push(format!("deleted record {} is back", record.tag));
                }
                (_, Deleted::Maybe) => {
                    record.deleted = if ids.is_empty() {
                        Deleted::Yes { cycle }
                    } else {
                        Deleted::No
                    };
                }
                (Written::Acked, Deleted::No) if ids.first() != record.id.as_ref() => {
                    violations.push(format!(
                        "acknowledged record {} ({:?}) is missing or changed id: {ids:?}",
                        record.tag, record.id
                    ));
                }
                (Written::Unknown, _) => {
                    if let Some(id) = ids.first() {
                        record.id = Some(id.clone());
                        record.written = Written::Acked;
                    } else {
                        record.written = Written::Lost;
                    }
                }
                _ => {}
            }
        }
        for (text, _) in found {
            violations.push(format!("a record nobody wrote: {text:?}"));
        }
        drop(ledger);
        self.violations.extend(violations);
    }

    /// Entries of earlier cycles: those deleted in `cycle` are gone by id, a sample of the
    /// live ones is there by id.
    pub async fn earlier(&mut self, cycle: usize, rng: &mut StdRng) {
        let (deleted, live, records_deleted, records_live) = {
            let ledger = lock(self.ledger);
            let older = |c: usize| c < cycle;
            let deleted: Vec<(usize, String, String)> = ledger
                .events
                .iter()
                .enumerate()
                .filter(|(_, e)| older(e.cycle) && e.id.is_some() && deleted_now(e.deleted, cycle))
                .map(|(i, e)| (i, e.actor.clone(), e.id.clone().unwrap_or_default()))
                .collect();
            let live: Vec<usize> = (0..ledger.events.len())
                .filter(|&i| older(ledger.events[i].cycle) && ledger.events[i].live())
                .filter(|&i| !ledger.events[i].disposable)
                .collect();
            let live = sample(rng, live)
                .into_iter()
                .map(|i| {
                    (
                        i,
                        ledger.events[i].actor.clone(),
                        ledger.events[i].id.clone().unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>();
            let records_deleted: Vec<(usize, String)> = ledger
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| older(r.cycle) && r.id.is_some() && deleted_now(r.deleted, cycle))
                .map(|(i, r)| (i, r.id.clone().unwrap_or_default()))
                .collect();
            let records_live: Vec<usize> = (0..ledger.records.len())
                .filter(|&i| older(ledger.records[i].cycle) && ledger.records[i].live())
                .collect();
            let records_live = sample(rng, records_live)
                .into_iter()
                .map(|i| (i, ledger.records[i].id.clone().unwrap_or_default()))
                .collect::<Vec<_>>();
            (deleted, live, records_deleted, records_live)
        };
        for (index, actor, id) in deleted.into_iter().chain(live) {
            let got = self
                .client
                .get_event(pb::GetEventRequest {
                    memory_id: self.memory_id.into(),
                    actor_id: actor,
                    session_id: SESSION.into(),
                    event_id: id.clone(),
                })
                .await;
            self.settle_by_id(cycle, index, &id, got.map(drop), true);
        }
        for (index, id) in records_deleted.into_iter().chain(records_live) {
            let got = self.client.get_memory_record(self.memory_id, &id).await;
            self.settle_by_id(cycle, index, &id, got.map(drop), false);
        }
    }

    fn settle_by_id(
        &mut self,
        cycle: usize,
        index: usize,
        id: &str,
        got: Result<(), tonic::Status>,
        event: bool,
    ) {
        let present = match got {
            Ok(()) => true,
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => {
                self.violation(format!("reading {id} failed: {status}"));
                return;
            }
        };
        let mut ledger = lock(self.ledger);
        let deleted = if event {
            &mut ledger.events[index].deleted
        } else {
            &mut ledger.records[index].deleted
        };
        let what = if event { "event" } else { "record" };
        match (*deleted, present) {
            (Deleted::Maybe, present) => {
                *deleted = if present {
                    Deleted::No
                } else {
                    Deleted::Yes { cycle }
                }
            }
            (Deleted::Yes { .. }, true) => {
                drop(ledger);
                self.violation(format!("deleted {what} {id} is back"));
            }
            (Deleted::No, false) => {
                drop(ledger);
                self.violation(format!("acknowledged {what} {id} is missing"));
            }
            _ => {}
        }
    }

    /// Waits for extraction to drain, then: one record per stored event of `cycle`, none
    /// twice.
    pub async fn extraction(&mut self, cycle: usize) {
        let started = Instant::now();
        loop {
            let jobs = self
                .client
                .all_extraction_jobs(pb::ListMemoryExtractionJobsRequest {
                    memory_id: self.memory_id.into(),
                    ..Default::default()
                })
                .try_collect::<Vec<_>>()
                .await;
            match jobs {
                Ok(jobs) if jobs.is_empty() => break,
                Ok(jobs) if started.elapsed() > SETTLE => {
                    self.violation(format!(
                        "extraction did not drain: {} jobs left",
                        jobs.len()
                    ));
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(status) => {
                    self.violation(format!("listing extraction jobs failed: {status}"));
                    return;
                }
            }
        }
        let listing = pb::ListMemoryRecordsRequest {
            memory_id: self.memory_id.into(),
            namespace: ledger::extracted_namespace(cycle),
            ..Default::default()
        };
        let records = match self
            .client
            .all_memory_records(listing)
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(records) => records,
            Err(status) => {
                self.violation(format!("listing extracted records failed: {status}"));
                return;
            }
        };
        let mut per_event: HashMap<String, usize> = HashMap::new();
        for record in &records {
            match record.source_event_ids.as_slice() {
                [source] => *per_event.entry(source.clone()).or_default() += 1,
                sources => self.violation(format!(
                    "extracted record {} cites {} events",
                    record.memory_record_id,
                    sources.len()
                )),
            }
        }
        let ledger = lock(self.ledger);
        let erased = |actor: &str| {
            ledger
                .disposables
                .iter()
                .any(|d| d.actor == actor && d.deleted != Deleted::No)
        };
        let mut violations = Vec::new();
        for (source, count) in &per_event {
            if *count > 1 {
                violations.push(format!("event {source} was extracted {count} times"));
            }
        }
        for event in ledger
            .events
            .iter()
            .filter(|e| e.cycle == cycle && e.live())
        {
            let id = event.id.clone().unwrap_or_default();
            if !erased(&event.actor) && !per_event.contains_key(&id) {
                violations.push(format!(
                    "stored event {} ({id}) was never extracted",
                    event.tag
                ));
            }
        }
        drop(ledger);
        self.violations.extend(violations);
    }

    /// Waits for both indexes to catch up, then searches for `cycle`'s entries by their tag
    /// (and by meaning with a model): live ones are found, deleted ones are not.
    pub async fn indexes(&mut self, cycle: usize, rng: &mut StdRng) {
        let started = Instant::now();
        loop {
            match self.client.index_status().await {
                Ok(s)
                    if s.keyword_pending == 0
                        && s.vectors_pending == 0
                        && !s.vectors_rebuilding =>
                {
                    break;
                }
                Ok(s) if started.elapsed() > SETTLE => {
                    self.violation(format!("the indexes did not catch up: {s:?}"));
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(status) => {
                    self.violation(format!("GetIndexStatus failed: {status}"));
                    return;
                }
            }
        }
        let (events, records) = {
            let ledger = lock(self.ledger);
            let erased = |actor: &str| {
                ledger
                    .disposables
                    .iter()
                    .any(|d| d.actor == actor && matches!(d.deleted, Deleted::Yes { .. }))
            };
            let mut events = Vec::new();
            let live: Vec<usize> = (0..ledger.events.len())
                .filter(|&i| {
                    let e = &ledger.events[i];
                    e.cycle == cycle && e.live() && !erased(&e.actor)
                })
                .collect();
            for i in sample(rng, live) {
                events.push((ledger.events[i].clone(), true));
            }
            for e in ledger.events.iter().filter(|e| e.id.is_some()) {
                let gone =
                    e.deleted == Deleted::Yes { cycle } || (e.cycle == cycle && erased(&e.actor));
                if gone {
                    events.push((e.clone(), false));
                }
            }
            let mut records = Vec::new();
            let live: Vec<usize> = (0..ledger.records.len())
                .filter(|&i| ledger.records[i].cycle == cycle && ledger.records[i].live())
                .collect();
            for i in sample(rng, live) {
                records.push((ledger.records[i].clone(), true));
            }
            for r in ledger
                .records
                .iter()
                .filter(|r| r.id.is_some() && r.deleted == Deleted::Yes { cycle })
            {
                records.push((r.clone(), false));
            }
            (events, records)
        };
        let mut modes = vec![pb::SearchMode::Keyword];
        if self.semantic {
            modes.push(pb::SearchMode::Semantic);
        }
        for (i, (event, live)) in events.iter().enumerate() {
            for &mode in &modes {
                // By meaning: a sample of the live ones (the whole text), every deleted one.
                if mode == pb::SearchMode::Semantic && *live && i >= SAMPLE / 5 {
                    continue;
                }
                let query = match mode {
                    pb::SearchMode::Keyword => event.tag.clone(),
                    _ => event.text.clone(),
                };
                let found = self
                    .client
                    .search_events(pb::SearchEventsRequest {
                        memory_id: self.memory_id.into(),
                        actor_id: event.actor.clone(),
                        query,
                        mode: mode as i32,
                        top_k: 10,
                        ..Default::default()
                    })
                    .await
                    .map(|r| {
                        r.events
                            .into_iter()
                            .filter_map(|s| s.event.map(|e| e.event_id))
                            .any(|id| Some(&id) == event.id.as_ref())
                    });
                self.compare("event", &event.tag, mode, *live, found);
            }
        }
        for (i, (record, live)) in records.iter().enumerate() {
            for &mode in &modes {
                if mode == pb::SearchMode::Semantic && *live && i >= SAMPLE / 5 {
                    continue;
                }
                let query = match mode {
                    pb::SearchMode::Keyword => record.tag.clone(),
                    _ => record.text.clone(),
                };
                let found = self
                    .client
                    .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                        memory_id: self.memory_id.into(),
                        namespace: record.namespace.clone(),
                        search_criteria: Some(pb::SearchCriteria {
                            search_query: query,
                            mode: mode as i32,
                            top_k: 10,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .map(|r| {
                        r.memory_records
                            .into_iter()
                            .filter_map(|s| s.memory_record.map(|m| m.memory_record_id))
                            .any(|id| Some(&id) == record.id.as_ref())
                    });
                self.compare("record", &record.tag, mode, *live, found);
            }
        }
    }

    fn compare(
        &mut self,
        what: &str,
        tag: &str,
        mode: pb::SearchMode,
        live: bool,
        found: Result<bool, tonic::Status>,
    ) {
        let mode = mode.as_str_name();
        match found {
            Ok(found) if found == live => {}
            Ok(true) => self.violation(format!("{mode} search finds deleted {what} {tag}")),
            Ok(false) => self.violation(format!("{mode} search misses live {what} {tag}")),
            // An erased actor may be unknown to the search.
            Err(status) if status.code() == Code::NotFound && !live => {}
            Err(status) => {
                self.violation(format!("{mode} search for {what} {tag} failed: {status}"))
            }
        }
    }
}

/// Whether a delete was acknowledged in `cycle` or is still unknown.
fn deleted_now(deleted: Deleted, cycle: usize) -> bool {
    match deleted {
        Deleted::Maybe => true,
        Deleted::Yes { cycle: when } => when == cycle,
        Deleted::No => false,
    }
}

/// Up to [`SAMPLE`] of `items`, chosen with `rng`.
fn sample(rng: &mut StdRng, mut items: Vec<usize>) -> Vec<usize> {
    while items.len() > SAMPLE {
        let i = rng.random_range(0..items.len());
        items.swap_remove(i);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::LocalServer;
    use crate::chaos::ledger::Event;
    use rand::SeedableRng;

    fn event(n: usize) -> Event {
        let tag = format!("c0w0n{n}");
        Event {
            cycle: 0,
            actor: ledger::worker_actor(0, 0),
            text: ledger::event_text(&tag, n),
            tag,
            token: None,
            id: None,
            written: Written::Acked,
            deleted: Deleted::No,
            disposable: false,
        }
    }

    /// The checks report what the ledger and memd disagree on, and only that: a lost
    /// acknowledged event, a deleted one that is back, a duplicate, an event nobody wrote.
    #[tokio::test]
    async fn the_checks_report_each_kind_of_disagreement() {
        let server = LocalServer::start_with(|config| config.embedding_model = "off".into())
            .await
            .unwrap();
        let client = MemdClient::connect(server.endpoint.clone(), None)
            .await
            .unwrap();
        let memory_id = client
            .create_memory(pb::CreateMemoryRequest {
                name: "checked".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .memory_id;
        let mut ledger = Ledger::default();
        for n in 0..5 {
            let mut entry = event(n);
            let stored = client
                .create_event(workload::event_request(&memory_id, &entry))
                .await
                .unwrap();
            entry.id = Some(stored.event_id);
            ledger.events.push(entry);
        }
        // 0 and 1 are as the ledger says. 2 is lost behind the ledger's back; 3 is "deleted"
        // but still there; 4 is stored twice; and one event nobody noted.
        let delete = |e: &Event| pb::DeleteEventRequest {
            memory_id: memory_id.clone(),
            actor_id: e.actor.clone(),
            session_id: SESSION.into(),
            event_id: e.id.clone().unwrap(),
        };
        client
            .delete_event(delete(&ledger.events[2]))
            .await
            .unwrap();
        ledger.events[3].deleted = Deleted::Yes { cycle: 0 };
        let again = workload::event_request(&memory_id, &ledger.events[4]);
        client.create_event(again).await.unwrap();
        let stranger = event(9);
        client
            .create_event(workload::event_request(&memory_id, &stranger))
            .await
            .unwrap();

        let ledger = Mutex::new(ledger);
        let mut check = Check {
            client: &client,
            memory_id: &memory_id,
            ledger: &ledger,
            workers: 1,
            semantic: false,
            violations: Vec::new(),
        };
        check.events_of(0).await;
        check.earlier(1, &mut StdRng::seed_from_u64(1)).await;
        let violations = check.violations.join("\n");
        assert!(
            violations.contains("acknowledged event c0w0n2"),
            "{violations}"
        );
        assert!(
            violations.contains("deleted event c0w0n3 is back"),
            "{violations}"
        );
        assert!(
            violations.contains("event c0w0n4 is stored 2 times"),
            "{violations}"
        );
        assert!(violations.contains("nobody wrote"), "{violations}");
        assert!(
            !violations.contains("c0w0n0") && !violations.contains("c0w0n1"),
            "{violations}"
        );
        server.stop().await;
    }
}
