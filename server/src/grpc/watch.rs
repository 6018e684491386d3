//! `WatchSessions` and `WatchMemoryRecords`: server streams fed from the change log (see
//! `store/changes.rs`), filtered by the request and the caller's policy before anything is
//! sent. One task per stream reads the log in batches; it never holds more than a batch and
//! the stream's small buffer, and a consumer that leaves the buffer full for
//! [`SLOW_CONSUMER`] gets RESOURCE_EXHAUSTED naming the cursor to resume from.

use super::convert;
use crate::auth::Principal;
use crate::error::{Result, ServiceError};
use crate::ids;
use crate::store::{ChangeReader, Store, StoredChange, cursor_too_old};
use crate::time::now_us;
use crate::time::to_timestamp;
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::Status;
use wildmatch::WildMatch;

/// A server stream of changes.
pub type ChangeStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// Messages buffered per stream (one slot stays free for the closing status).
const BUFFER: usize = 256;
/// How long a full buffer is tolerated before the stream ends.
pub const SLOW_CONSUMER: Duration = Duration::from_secs(30);
/// Log entries read per step.
const READ_BATCH: usize = 512;
/// How often an idle stream looks at the log even without a commit notification.
const POLL: Duration = Duration::from_millis(250);

/// Where a stream starts: after `cursor`, or at the log's head when it is empty.
fn start(store: &Store, cursor: &str) -> Result<ChangeReader> {
    if cursor.is_empty() {
        return Ok(ChangeReader::after(store.change_head()));
    }
    let seq: u64 = cursor
        .parse()
        .map_err(|_| ServiceError::invalid("cursor", "is not a cursor this server returned"))?;
    if seq == 0 {
        // "0": everything the log still holds.
        return Ok(ChangeReader::after(store.changes_trimmed_upto()?));
    }
    if seq > store.change_head() {
        return Err(ServiceError::invalid(
            "cursor",
            "is ahead of this server's change log",
        ));
    }
    if cursor_too_old(seq, store.changes_trimmed_upto()?) {
        return Err(ServiceError::OutOfRange(
            "cursor: older than the change log's retention (change_retention_hours); read the current state and watch from an empty cursor".into(),
        ));
    }
    Ok(ChangeReader::after(seq))
}

/// What a stream sends for one log entry, if anything.
type Select<T> = Box<dyn Fn(&Store, u64, &StoredChange) -> Option<T> + Send + Sync>;

/// Session transitions of `memory_id` whose actor matches the request and the caller's key.
pub async fn sessions(
    store: Arc<Store>,
    draining: Draining,
    caller: Principal,
    req: pb::WatchSessionsRequest,
) -> Result<ChangeStream<pb::SessionChange>> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Read, &req.memory_id)?;
    if req.actor_pattern.len() > 255 || req.actor_pattern.contains('\0') {
        return Err(ServiceError::invalid(
            "actor_pattern",
            "must be at most 255 characters",
        ));
    }
    let pattern = (!req.actor_pattern.is_empty()).then(|| WildMatch::new(&req.actor_pattern));
    let memory_id = req.memory_id.clone();
    let select: Select<pb::SessionChange> = Box::new(move |_, seq, c| {
        let wanted = !c.session_id.is_empty()
            && c.memory_id == memory_id
            && pattern.as_ref().is_none_or(|p| p.matches(&c.actor_id))
            && caller.sees_actor(&c.actor_id);
        wanted.then(|| pb::SessionChange {
            cursor: seq.to_string(),
            memory_id: c.memory_id.clone(),
            actor_id: c.actor_id.clone(),
            session_id: c.session_id.clone(),
            from: c.from_state,
            to: c.to_state,
            time: Some(to_timestamp(c.at_us)),
        })
    });
    open(store, draining, req.memory_id, req.cursor, select).await
}

/// Record changes of `memory_id` under the requested namespace prefix that the caller's key
/// may read.
pub async fn records(
    store: Arc<Store>,
    draining: Draining,
    caller: Principal,
    req: pb::WatchMemoryRecordsRequest,
) -> Result<ChangeStream<pb::MemoryRecordChange>> {
    ids::memory_id("memory_id", &req.memory_id)?;
    caller.require_memory(Action::Read, &req.memory_id)?;
    super::validate::namespace_prefix("namespace", &req.namespace)?;
    let (memory_id, prefix) = (req.memory_id.clone(), req.namespace.clone());
    let select: Select<pb::MemoryRecordChange> = Box::new(move |store, seq, c| {
        let wanted = !c.record_id.is_empty()
            && c.memory_id == memory_id
            && c.namespace.starts_with(&prefix)
            && caller.sees_record(&c.namespace, &c.actor_id);
        if !wanted {
            return None;
        }
        let kind = pb::RecordChangeKind::try_from(c.record_kind).unwrap_or_default();
        let current = matches!(
            kind,
            pb::RecordChangeKind::Created | pb::RecordChangeKind::Updated
        )
        .then(|| {
            store.record(&c.memory_id, &c.record_id, now_us(), |r| {
                r.invalid_from_us == 0
            })
        })
        .and_then(|r| r.ok())
        .map(|r| convert::record(r, &c.memory_id));
        Some(pb::MemoryRecordChange {
            cursor: seq.to_string(),
            kind: c.record_kind,
            memory_id: c.memory_id.clone(),
            memory_record_id: c.record_id.clone(),
            namespace: c.namespace.clone(),
            actor_id: c.actor_id.clone(),
            strategy_id: c.strategy_id.clone(),
            version: c.version,
            time: Some(to_timestamp(c.at_us)),
            memory_record: current,
        })
    });
    open(store, draining, req.memory_id, req.cursor, select).await
}

/// True once the server drains for shutdown.
pub type Draining = tokio::sync::watch::Receiver<bool>;

/// Starts the feeding task; returns the stream.
async fn open<T: Send + 'static>(
    store: Arc<Store>,
    draining: Draining,
    memory_id: String,
    cursor: String,
    select: Select<T>,
) -> Result<ChangeStream<T>> {
    let reader = {
        let store = store.clone();
        let memory_id = memory_id.clone();
        super::blocking(move || {
            store.memory(&memory_id)?;
            start(&store, &cursor)
        })
        .await?
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(feed(
        store,
        draining,
        memory_id,
        reader,
        Arc::new(select),
        tx,
    ));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Reads the log and sends what `select` picks until the client goes away, the memory is
/// deleted, or the client stops reading.
async fn feed<T: Send + 'static>(
    store: Arc<Store>,
    mut draining: Draining,
    memory_id: String,
    mut reader: ChangeReader,
    select: Arc<Select<T>>,
    tx: mpsc::Sender<Result<T, Status>>,
) {
    loop {
        let step = {
            let (store, select) = (store.clone(), select.clone());
            tokio::task::spawn_blocking(move || -> Result<_> {
                let batch = reader.next_batch(&store, READ_BATCH)?;
                let picked: Vec<T> = batch
                    .iter()
                    .filter_map(|(seq, change)| select(&store, *seq, change))
                    .collect();
                Ok((reader, batch.len(), picked))
            })
            .await
        };
        let (next, read, picked) = match step {
            Ok(Ok(step)) => step,
            Ok(Err(err)) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
            Err(err) => {
                let _ = tx.send(Err(ServiceError::from(err).into())).await;
                return;
            }
        };
        reader = next;
        for item in picked {
            if !deliver(&tx, item).await {
                return;
            }
        }
        if read == READ_BATCH {
            continue;
        }
        // Caught up: wait for a commit (or poll), and notice a deleted memory or a client
        // that hung up.
        let notified = store.changes_notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = tx.closed() => return,
            _ = draining.changed() => {}
        }
        let stopping = *draining.borrow();
        if stopping {
            let _ = tx
                .send(Err(Status::unavailable(
                    "memd is shutting down; reconnect with the cursor of the last change received",
                )))
                .await;
            return;
        }
        if store.memory(&memory_id).is_err() {
            let _ = tx
                .send(Err(Status::not_found(format!(
                    "memory {memory_id} was deleted"
                ))))
                .await;
            return;
        }
    }
}

/// Sends `item`, keeping one slot free for a closing status; false once the stream is over
/// (client gone, or too slow: then it is told so).
async fn deliver<T>(tx: &mpsc::Sender<Result<T, Status>>, item: T) -> bool {
    let since = Instant::now();
    while tx.capacity() <= 1 {
        if tx.is_closed() {
            return false;
        }
        if since.elapsed() > SLOW_CONSUMER {
            let _ = tx
                .send(Err(Status::resource_exhausted(
                    "the client did not read for 30 s with 255 changes waiting; reconnect with the cursor of the last change received",
                )))
                .await;
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(Ok(item)).await.is_ok()
}
