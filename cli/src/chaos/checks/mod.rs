//! The invariants checked after every restart, against the ledger: acknowledged writes are
//! there once with the id they were given, acknowledged deletes stay deleted, in-flight
//! writes happened at most once (exactly once when retried with their token), extraction ran
//! once per stored event, and the search indexes agree with the store once caught up.
//! Each check also settles what the kill left unknown, so later cycles check it strictly.

mod derived;
mod stored;
#[cfg(test)]
mod tests;

use super::ledger::{Deleted, Ledger, Written};
use super::workload::{self, SESSION, lock};
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
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

impl<'a> Check<'a> {
    pub fn new(
        client: &'a MemdClient,
        memory_id: &'a str,
        ledger: &'a Mutex<Ledger>,
        workers: usize,
        semantic: bool,
    ) -> Self {
        Self {
            client,
            memory_id,
            ledger,
            workers,
            semantic,
            violations: Vec::new(),
        }
    }
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
