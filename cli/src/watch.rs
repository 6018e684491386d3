//! `memctl sessions watch` and `memctl records watch`: follow the change streams, one line
//! per change (JSON lines with --json), reconnecting from the last cursor when the
//! connection drops or the server ends a slow stream.

use crate::{Globals, output};
use memd_client::{MemdClient, pb};
use serde_json::json;
use std::time::Duration;
use tonic::{Code, Status};

/// Errors after which resuming from the cursor cannot help.
fn final_error(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
    )
}

fn state(value: i32) -> &'static str {
    match pb::SessionState::try_from(value).unwrap_or_default() {
        pb::SessionState::Unspecified => "-",
        pb::SessionState::Active => "ACTIVE",
        pb::SessionState::Idle => "IDLE",
        pb::SessionState::Terminated => "TERMINATED",
    }
}

fn kind(value: i32) -> &'static str {
    match pb::RecordChangeKind::try_from(value).unwrap_or_default() {
        pb::RecordChangeKind::Created => "CREATED",
        pb::RecordChangeKind::Updated => "UPDATED",
        pb::RecordChangeKind::Superseded => "SUPERSEDED",
        pb::RecordChangeKind::Deleted => "DELETED",
        pb::RecordChangeKind::Expired => "EXPIRED",
        pb::RecordChangeKind::Unspecified => "?",
    }
}

/// Runs `open(cursor)` and prints what it streams until a final error; `Ok(())` never comes
/// back unless the server closes the stream cleanly.
async fn follow<T, F, Fut>(
    mut cursor: String,
    mut open: F,
    cursor_of: impl Fn(&T) -> String,
    print: impl Fn(&T),
) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Streaming<T>, Status>>,
{
    loop {
        let mut stream = match open(cursor.clone()).await {
            Ok(stream) => stream,
            Err(status) if final_error(&status) => return Err(status.into()),
            Err(status) => {
                eprintln!("memctl: {status}; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(change)) => {
                    cursor = cursor_of(&change);
                    print(&change);
                }
                Ok(None) => return Ok(()),
                Err(status) if final_error(&status) => return Err(status.into()),
                Err(status) => {
                    eprintln!("memctl: {status}; resuming after cursor {cursor:?}");
                    break;
                }
            }
        }
    }
}

pub async fn sessions(
    ctx: &Globals,
    memory_id: String,
    actor_pattern: String,
    cursor: String,
) -> anyhow::Result<()> {
    let client: MemdClient = ctx.client().await?;
    let json = ctx.json;
    follow(
        cursor,
        |cursor| {
            let client = client.clone();
            let request = pb::WatchSessionsRequest {
                memory_id: memory_id.clone(),
                actor_pattern: actor_pattern.clone(),
                cursor,
            };
            async move { client.watch_sessions(request).await }
        },
        |c: &pb::SessionChange| c.cursor.clone(),
        move |c| {
            if json {
                output::print_json_line(&json!({
                    "cursor": c.cursor, "memoryId": c.memory_id, "actorId": c.actor_id,
                    "sessionId": c.session_id, "from": state(c.from), "to": state(c.to),
                    "time": output::time(&c.time),
                }));
            } else {
                println!(
                    "{}  {} / {}  {} -> {}  (cursor {})",
                    output::time(&c.time),
                    c.actor_id,
                    c.session_id,
                    state(c.from),
                    state(c.to),
                    c.cursor
                );
            }
        },
    )
    .await
}

pub async fn records(
    ctx: &Globals,
    memory_id: String,
    namespace: String,
    cursor: String,
) -> anyhow::Result<()> {
    let client: MemdClient = ctx.client().await?;
    let json = ctx.json;
    follow(
        cursor,
        |cursor| {
            let client = client.clone();
            let request = pb::WatchMemoryRecordsRequest {
                memory_id: memory_id.clone(),
                namespace: namespace.clone(),
                cursor,
            };
            async move { client.watch_memory_records(request).await }
        },
        |c: &pb::MemoryRecordChange| c.cursor.clone(),
        move |c| {
            let text = c
                .memory_record
                .as_ref()
                .map(|r| r.text.clone())
                .unwrap_or_default();
            if json {
                output::print_json_line(&json!({
                    "cursor": c.cursor, "kind": kind(c.kind), "memoryRecordId": c.memory_record_id,
                    "namespace": c.namespace, "actorId": c.actor_id, "strategyId": c.strategy_id,
                    "version": c.version, "time": output::time(&c.time), "text": text,
                }));
            } else {
                println!(
                    "{}  {:<10} {} v{}  {}  {}",
                    output::time(&c.time),
                    kind(c.kind),
                    c.memory_record_id,
                    c.version,
                    c.namespace,
                    text
                );
            }
        },
    )
    .await
}
