//! One chaos client: a seeded mix of appends (with and without client tokens), record writes,
//! deletes of events, records and whole actors, and searches, each noted in the ledger before
//! it is sent and settled when it is answered. It runs until a request fails after memd was
//! killed; a request that fails before the kill is an unexpected error.

use super::ledger::{self, Deleted, Disposable, Event, Ledger, Record, Written};
use memd_client::{MemdClient, pb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Status};

/// The session every chaos event goes into.
pub const SESSION: &str = "s";

/// Requests one client had acknowledged in a cycle.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub events: usize,
    pub records: usize,
    pub deletes: usize,
    pub searches: usize,
}

/// One client's cycle.
pub struct Client {
    pub client: MemdClient,
    pub memory_id: String,
    pub ledger: Arc<Mutex<Ledger>>,
    pub killed: Arc<AtomicBool>,
    pub cycle: usize,
    pub worker: usize,
    pub seed: u64,
}

/// The CreateEvent request of a ledger entry (sent again, with its token, after a restart).
pub fn event_request(memory_id: &str, event: &Event) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        memory_id: memory_id.into(),
        actor_id: event.actor.clone(),
        session_id: SESSION.into(),
        payload: vec![memd_client::turn(pb::Role::User, &event.text)],
        client_token: event.token.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// The one-record batch of a ledger entry.
pub fn record_input(record: &Record) -> pb::MemoryRecordInput {
    pb::MemoryRecordInput {
        namespace: record.namespace.clone(),
        text: record.text.clone(),
        client_token: record.token.clone(),
        ..Default::default()
    }
}

/// Whether a request's failure is the kill's doing (true) or memd's (noted, false).
fn failed(killed: &AtomicBool, ledger: &Mutex<Ledger>, what: &str, status: &Status) -> bool {
    if killed.load(Ordering::SeqCst) {
        return true;
    }
    lock(ledger).unexpected.push(format!("{what}: {status}"));
    false
}

pub fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// Sends requests until one fails after the kill.
    pub async fn run(self) -> Counts {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut counts = Counts::default();
        let (mut n, mut disposable) = (0usize, 0usize);
        loop {
            let ended = match rng.random_range(0..100) {
                0..55 => self.append(&mut rng, &mut n, None, &mut counts).await,
                55..63 => {
                    let actor = format!("chaos/c{}/d{}x{disposable}", self.cycle, self.worker);
                    self.append(&mut rng, &mut n, Some(actor), &mut counts)
                        .await
                }
                63..73 => self.write_record(&mut n, &mut counts).await,
                73..81 => self.delete_event(&mut rng, &mut counts).await,
                81..86 => self.delete_record(&mut rng, &mut counts).await,
                86..88 => {
                    let actor = format!("chaos/c{}/d{}x{disposable}", self.cycle, self.worker);
                    let ended = self.delete_actor(actor, &mut counts).await;
                    disposable += 1;
                    ended
                }
                _ => self.search(&mut rng, &mut counts).await,
            };
            if ended {
                return counts;
            }
            tokio::time::sleep(Duration::from_micros(rng.random_range(0..3000))).await;
        }
    }

    /// Appends one event (to `actor`, or the worker's own); true when the kill ended it.
    async fn append(
        &self,
        rng: &mut StdRng,
        n: &mut usize,
        actor: Option<String>,
        counts: &mut Counts,
    ) -> bool {
        let tag = format!("c{}w{}n{n}", self.cycle, self.worker);
        let event = Event {
            cycle: self.cycle,
            disposable: actor.is_some(),
            actor: actor.unwrap_or_else(|| ledger::worker_actor(self.cycle, self.worker)),
            text: ledger::event_text(&tag, *n),
            token: rng.random_bool(0.7).then(|| format!("tok-{tag}")),
            tag,
            id: None,
            written: Written::Unknown,
            deleted: Deleted::No,
        };
        *n += 1;
        let request = event_request(&self.memory_id, &event);
        let index = {
            let mut ledger = lock(&self.ledger);
            if event.disposable && !ledger.disposables.iter().any(|d| d.actor == event.actor) {
                ledger.disposables.push(Disposable {
                    actor: event.actor.clone(),
                    deleted: Deleted::No,
                });
            }
            ledger.events.push(event);
            ledger.events.len() - 1
        };
        match self.client.create_event(request).await {
            Ok(stored) => {
                let mut ledger = lock(&self.ledger);
                let event = &mut ledger.events[index];
                event.id = Some(stored.event_id);
                event.written = Written::Acked;
                counts.events += 1;
                false
            }
            Err(status) => {
                let ended = failed(&self.killed, &self.ledger, "CreateEvent", &status);
                let mut ledger = lock(&self.ledger);
                let event = &mut ledger.events[index];
                if event.token.is_some() && ended {
                    event.written = Written::Retry;
                }
                ended
            }
        }
    }

    async fn write_record(&self, n: &mut usize, counts: &mut Counts) -> bool {
        let tag = format!("c{}w{}r{n}", self.cycle, self.worker);
        let record = Record {
            cycle: self.cycle,
            namespace: ledger::record_namespace(self.cycle),
            text: ledger::record_text(&tag, *n),
            token: format!("tok-{tag}"),
            tag,
            id: None,
            written: Written::Unknown,
            deleted: Deleted::No,
        };
        *n += 1;
        let input = record_input(&record);
        let index = {
            let mut ledger = lock(&self.ledger);
            ledger.records.push(record);
            ledger.records.len() - 1
        };
        let result = self
            .client
            .batch_create_memory_records(&self.memory_id, vec![input])
            .await;
        let mut ledger = lock(&self.ledger);
        match result {
            Ok(results) if results.first().is_some_and(|r| r.code == 0) => {
                let record = &mut ledger.records[index];
                record.id = Some(results[0].memory_record_id.clone());
                record.written = Written::Acked;
                counts.records += 1;
                false
            }
            Ok(results) => {
                ledger
                    .unexpected
                    .push(format!("BatchCreateMemoryRecords item failed: {results:?}"));
                false
            }
            Err(status) => {
                drop(ledger);
                let ended = failed(
                    &self.killed,
                    &self.ledger,
                    "BatchCreateMemoryRecords",
                    &status,
                );
                if ended {
                    lock(&self.ledger).records[index].written = Written::Retry;
                }
                ended
            }
        }
    }

    /// Deletes a random acknowledged event of an earlier moment (any cycle).
    async fn delete_event(&self, rng: &mut StdRng, counts: &mut Counts) -> bool {
        let target = {
            let mut ledger = lock(&self.ledger);
            let count = ledger.events.len();
            (0..20)
                .map(|_| rng.random_range(0..count.max(1)))
                .find(|&i| {
                    ledger
                        .events
                        .get(i)
                        .is_some_and(|e| e.live() && !e.disposable)
                })
                .map(|i| {
                    let event = &mut ledger.events[i];
                    event.deleted = Deleted::Maybe;
                    (i, event.actor.clone(), event.id.clone().unwrap_or_default())
                })
        };
        let Some((index, actor_id, event_id)) = target else {
            return false;
        };
        let request = pb::DeleteEventRequest {
            memory_id: self.memory_id.clone(),
            actor_id,
            session_id: SESSION.into(),
            event_id,
        };
        match self.client.delete_event(request).await {
            Ok(()) => {
                lock(&self.ledger).events[index].deleted = Deleted::Yes { cycle: self.cycle };
                counts.deletes += 1;
                false
            }
            Err(status) => failed(&self.killed, &self.ledger, "DeleteEvent", &status),
        }
    }

    async fn delete_record(&self, rng: &mut StdRng, counts: &mut Counts) -> bool {
        let target = {
            let mut ledger = lock(&self.ledger);
            let count = ledger.records.len();
            (0..20)
                .map(|_| rng.random_range(0..count.max(1)))
                .find(|&i| ledger.records.get(i).is_some_and(Record::live))
                .map(|i| {
                    let record = &mut ledger.records[i];
                    record.deleted = Deleted::Maybe;
                    (i, record.id.clone().unwrap_or_default())
                })
        };
        let Some((index, record_id)) = target else {
            return false;
        };
        match self
            .client
            .delete_memory_record(&self.memory_id, record_id)
            .await
        {
            Ok(()) => {
                lock(&self.ledger).records[index].deleted = Deleted::Yes { cycle: self.cycle };
                counts.deletes += 1;
                false
            }
            Err(status) => failed(&self.killed, &self.ledger, "DeleteMemoryRecord", &status),
        }
    }

    /// Erases a disposable actor that holds events (its last use: later appends go to the
    /// next one).
    async fn delete_actor(&self, actor: String, counts: &mut Counts) -> bool {
        {
            let mut ledger = lock(&self.ledger);
            match ledger.disposables.iter_mut().find(|d| d.actor == actor) {
                Some(disposable) => disposable.deleted = Deleted::Maybe,
                None => return false,
            }
        }
        match self.client.delete_actor(&self.memory_id, &actor).await {
            Ok(()) => {
                let mut ledger = lock(&self.ledger);
                if let Some(d) = ledger.disposables.iter_mut().find(|d| d.actor == actor) {
                    d.deleted = Deleted::Yes { cycle: self.cycle };
                }
                counts.deletes += 1;
                false
            }
            Err(status) => failed(&self.killed, &self.ledger, "DeleteActor", &status),
        }
    }

    async fn search(&self, rng: &mut StdRng, counts: &mut Counts) -> bool {
        let query = ledger::event_text("", rng.random_range(0..36));
        let result = if rng.random_bool(0.5) {
            self.client
                .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                    memory_id: self.memory_id.clone(),
                    search_criteria: Some(pb::SearchCriteria {
                        search_query: query,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(drop)
        } else {
            self.client
                .search_events(pb::SearchEventsRequest {
                    memory_id: self.memory_id.clone(),
                    actor_id: ledger::worker_actor(self.cycle, self.worker),
                    query,
                    ..Default::default()
                })
                .await
                .map(drop)
        };
        match result {
            Ok(()) => {
                counts.searches += 1;
                false
            }
            // Query embeddings queue up to a bound: refusing more is correct under load.
            Err(status) if status.code() == Code::ResourceExhausted => false,
            Err(status) => failed(&self.killed, &self.ledger, "search", &status),
        }
    }
}
