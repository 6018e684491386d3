//! `memctl export`: one memory, read through the public API page by page, written as an
//! export file (see [`super::file`]).

use super::file::{Counts, Line};
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use std::io::Write;

/// Writes the memory to `out` and returns what it wrote. Reads see the memory as each page
/// is read (writes may continue meanwhile); a backup is the way to a point-in-time copy.
pub async fn export(
    client: &MemdClient,
    memory_id: &str,
    out: &mut impl Write,
) -> anyhow::Result<Counts> {
    let memory = client.get_memory(memory_id).await?;
    let mut counts = Counts::default();
    let mut write = |line: Line| -> anyhow::Result<()> {
        serde_json::to_writer(&mut *out, &line.to_json())?;
        out.write_all(b"\n")?;
        Ok(())
    };
    write(Line::Header {
        memory_id: memory_id.to_owned(),
        memd_version: env!("CARGO_PKG_VERSION").to_owned(),
    })?;
    write(Line::Memory(Box::new(memory)))?;

    let actors: Vec<pb::Actor> = client.all_actors(memory_id).try_collect().await?;
    for actor in actors {
        let sessions: Vec<pb::Session> = client
            .all_sessions(memory_id, actor.actor_id.clone())
            .try_collect()
            .await?;
        for session in sessions {
            let mut events = client.all_events(pb::ListEventsRequest {
                memory_id: memory_id.to_owned(),
                actor_id: actor.actor_id.clone(),
                session_id: session.session_id.clone(),
                include_payloads: true,
                page_size: 100,
                ..Default::default()
            });
            write(Line::Session(session))?;
            counts.sessions += 1;
            while let Some(event) = events.try_next().await? {
                write(Line::Event(Box::new(event)))?;
                counts.events += 1;
            }
        }
    }

    let mut records = client.all_memory_records(pb::ListMemoryRecordsRequest {
        memory_id: memory_id.to_owned(),
        page_size: 100,
        ..Default::default()
    });
    while let Some(record) = records.try_next().await? {
        let mut history = client
            .get_memory_record_history(memory_id, record.memory_record_id.clone())
            .await?;
        // The history starts with the record as it is now, which the line already holds.
        history.retain(|r| {
            !(r.memory_record_id == record.memory_record_id && r.version == record.version)
        });
        write(Line::Record {
            record: Box::new(record),
            history,
        })?;
        counts.records += 1;
    }
    write(Line::End(counts))?;
    out.flush()?;
    Ok(counts)
}
