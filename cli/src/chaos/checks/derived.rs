//! Checks of what memd derives from the store: extraction records and the search indexes.

use super::{Check, SAMPLE, SETTLE, sample};
use crate::chaos::ledger::{self, Deleted};
use crate::chaos::workload::lock;
use futures::TryStreamExt;
use memd_client::pb;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;

impl Check<'_> {
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
