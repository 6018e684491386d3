//! `memctl import`: an export file written back through the public API into a new memory.
//!
//! The file is read twice: once to check all of it (nothing is written if any line is bad
//! or the file is truncated), once to write, holding one session's events at a time. Every
//! write carries an idempotency token derived from the exported id, so an interrupted import
//! run again with the same name continues where it stopped instead of duplicating.

use super::file::{self, Counts, Line};
use anyhow::{Context, bail};
use memd_client::{MemdClient, pb};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// What an import wrote, and what it could not carry over.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    pub memory_id: String,
    pub file: Counts,
    pub events: u64,
    pub records: u64,
    /// Rewrites replayed so that each record's history has its versions in order.
    pub record_versions: u64,
    /// Records a contradiction superseded: kept in the file, not recreated (the API writes
    /// live records only).
    pub superseded_not_recreated: u64,
    /// Source-event links to events the file does not hold (deleted or expired).
    pub source_events_dropped: u64,
    /// Branch events whose root event is not in the file, so their branch cannot be rebuilt.
    pub events_skipped: Vec<String>,
}

/// Writes the file's memory into the server as a new memory named `name` (default: the
/// exported name), after checking the whole file first.
pub async fn import(
    client: &MemdClient,
    path: &Path,
    name: Option<String>,
) -> anyhow::Result<Imported> {
    let open = || -> anyhow::Result<_> {
        Ok(BufReader::new(
            File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let checked = open()?;
    let counts = tokio::task::spawn_blocking(move || file::read(checked, |_| Ok(())))
        .await?
        .context("the file was not imported")?;
    let mut writer = Writer {
        client,
        name,
        memory_id: None,
        events: HashMap::new(),
        out: Imported {
            file: counts,
            ..Default::default()
        },
    };
    // Events are written a session at a time: a branch's root may come after the events that
    // fork off it (when they were given earlier event times).
    let mut session: Vec<pb::Event> = vec![];
    for text in open()?.lines() {
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        match Line::parse(&text)? {
            Line::Header { .. } => {}
            Line::Memory(memory) => writer.memory(*memory).await?,
            Line::Event(event) => session.push(*event),
            Line::Session(_) | Line::End(_) => writer.session(std::mem::take(&mut session)).await?,
            Line::Record { record, history } => {
                writer.session(std::mem::take(&mut session)).await?;
                writer.record(*record, history).await?
            }
        }
    }
    Ok(writer.out)
}

struct Writer<'a> {
    client: &'a MemdClient,
    name: Option<String>,
    memory_id: Option<String>,
    /// Exported event id → the id it has now.
    events: HashMap<String, String>,
    out: Imported,
}

/// The idempotency token of an exported object (tokens allow 128 printable characters).
fn token(kind: &str, old_id: &str) -> String {
    let mut token = format!("import-{kind}-{old_id}");
    token.truncate(128);
    token
}

/// The memory's token: an import of the same export under the same name finds the memory an
/// earlier run created, one under another name creates another copy.
fn memory_token(old_id: &str, name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{old_id}\0{name}"));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("import-memory-{hex}")
}

impl Writer<'_> {
    fn memory_id(&self) -> anyhow::Result<&str> {
        self.memory_id
            .as_deref()
            .context("an export file has the memory before its events and records")
    }

    async fn memory(&mut self, memory: pb::Memory) -> anyhow::Result<()> {
        let name = self.name.clone().unwrap_or(memory.name.clone());
        let created = self
            .client
            .create_memory(pb::CreateMemoryRequest {
                name: name.clone(),
                description: memory.description,
                event_expiry_days: memory.event_expiry_days,
                strategies: memory.strategies,
                session_policy: memory.session_policy,
                client_token: memory_token(&memory.memory_id, &name),
            })
            .await
            .with_context(|| format!("creating memory {name} (choose another with --name)"))?;
        self.out.memory_id = created.memory_id.clone();
        self.memory_id = Some(created.memory_id);
        Ok(())
    }

    /// Writes one session's events in file order; a branch event whose root comes later
    /// waits until its root is written.
    async fn session(&mut self, mut waiting: Vec<pb::Event>) -> anyhow::Result<()> {
        while !waiting.is_empty() {
            let before = waiting.len();
            let mut later = vec![];
            for event in waiting {
                let root = event.branch.as_ref().map(|b| b.root_event_id.as_str());
                match root {
                    Some(root) if !root.is_empty() && !self.events.contains_key(root) => {
                        later.push(event)
                    }
                    _ => self.event(event).await?,
                }
            }
            if later.len() == before {
                self.out
                    .events_skipped
                    .extend(later.into_iter().map(|e| e.event_id));
                break;
            }
            waiting = later;
        }
        Ok(())
    }

    async fn event(&mut self, event: pb::Event) -> anyhow::Result<()> {
        let branch = event.branch.map(|b| pb::Branch {
            root_event_id: self
                .events
                .get(&b.root_event_id)
                .cloned()
                .unwrap_or_default(),
            name: b.name,
        });
        let created = self
            .client
            .create_event(pb::CreateEventRequest {
                memory_id: self.memory_id()?.to_owned(),
                actor_id: event.actor_id,
                session_id: event.session_id,
                event_timestamp: event.event_timestamp,
                payload: event.payload,
                branch,
                metadata: event.metadata,
                client_token: token("event", &event.event_id),
                // The file carries the records already drawn from these events.
                extraction_mode: pb::ExtractionMode::Skip as i32,
            })
            .await
            .with_context(|| format!("writing event {}", event.event_id))?;
        self.events.insert(event.event_id, created.event_id);
        self.out.events += 1;
        Ok(())
    }

    /// Writes a record as its oldest version, then replays each later version as an update,
    /// skipping those an earlier, interrupted run already applied.
    async fn record(
        &mut self,
        record: pb::MemoryRecord,
        history: Vec<pb::MemoryRecord>,
    ) -> anyhow::Result<()> {
        let memory_id = self.memory_id()?.to_owned();
        let (mut versions, superseded): (Vec<_>, Vec<_>) = history
            .into_iter()
            .partition(|r| r.memory_record_id == record.memory_record_id);
        self.out.superseded_not_recreated += superseded.len() as u64;
        versions.push(record);
        versions.sort_by_key(|r| r.version);
        let first = &versions[0];
        let mut source_event_ids = vec![];
        for old in &first.source_event_ids {
            match self.events.get(old) {
                Some(new) => source_event_ids.push(new.clone()),
                None => self.out.source_events_dropped += 1,
            }
        }
        let input = pb::MemoryRecordInput {
            namespace: first.namespace.clone(),
            text: first.text.clone(),
            metadata: first.metadata.clone(),
            strategy_id: first.strategy_id.clone(),
            actor_id: first.actor_id.clone(),
            session_id: first.session_id.clone(),
            valid_from: first.valid_from,
            source_event_ids,
            client_token: token("record", &first.memory_record_id),
        };
        let result = self
            .client
            .batch_create_memory_records(memory_id.clone(), vec![input])
            .await?
            .into_iter()
            .next()
            .context("the server answered a one-record batch with no result")?;
        if result.code != 0 {
            bail!(
                "writing record {}: {} (code {})",
                first.memory_record_id,
                result.message,
                result.code
            );
        }
        let new_id = result.memory_record_id;
        self.out.records += 1;
        if versions.len() > 1 {
            let now = self
                .client
                .get_memory_record(memory_id.clone(), new_id.clone())
                .await?;
            let done = usize::try_from(now.version).unwrap_or(1).max(1);
            for version in versions.iter().skip(done) {
                let update = pb::MemoryRecordUpdate {
                    memory_record_id: new_id.clone(),
                    text: version.text.clone(),
                    metadata: version.metadata.clone(),
                    valid_from: version.valid_from,
                    update_mask: vec!["text".into(), "metadata".into(), "valid_from".into()],
                };
                let result = self
                    .client
                    .batch_update_memory_records(memory_id.clone(), vec![update])
                    .await?;
                if let Some(failed) = result.iter().find(|r| r.code != 0) {
                    bail!(
                        "replaying version {} of record {}: {}",
                        version.version,
                        version.memory_record_id,
                        failed.message
                    );
                }
                self.out.record_versions += 1;
            }
        }
        Ok(())
    }
}
