//! Checks against what the store holds: listings of a cycle's events and records, and
//! earlier entries read back by id.

use super::{Check, deleted_now, sample};
use crate::chaos::ledger::{self, Deleted, Written};
use crate::chaos::workload::{SESSION, lock};
use futures::TryStreamExt;
use memd_client::pb;
use rand::rngs::StdRng;
use std::collections::HashMap;
use tonic::Code;

impl Check<'_> {
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
}
