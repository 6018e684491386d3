//! Group commit for the append path. Handlers prepare a request's changes as a [`Batch`] and
//! await its commit; one committer thread drains whatever is queued, writes it as a single
//! RocksDB `WriteBatch` (one WAL write, and with `sync_writes` one fsync, for the whole group)
//! and wakes every waiter with the shared outcome. Waiting costs no thread, and RocksDB sees
//! one writer instead of one per in-flight request, which on a small machine is the
//! difference between doing work and switching threads (see docs/benchmarks.md).
//!
//! A group is atomic as a whole: on a write error every request in it fails and none of them
//! is written.

use crate::error::{Result, ServiceError};
use rocksdb::{DB, WriteBatch, WriteOptions};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most requests merged into one write.
const MAX_GROUP: usize = 512;

/// One change to apply.
#[derive(Debug)]
enum Op {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
}

/// The changes of one request, by column family name.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.ops
            .push(Op::Put(cf, key.as_ref().to_vec(), value.into()));
    }

    pub fn delete(&mut self, cf: &'static str, key: impl AsRef<[u8]>) {
        self.ops.push(Op::Delete(cf, key.as_ref().to_vec()));
    }

    fn apply(self, db: &DB, out: &mut WriteBatch) {
        for op in self.ops {
            let handle = |name| {
                db.cf_handle(name)
                    .expect("every column family is created at open")
            };
            match op {
                Op::Put(cf, key, value) => out.put_cf(handle(cf), key, value),
                Op::Delete(cf, key) => out.delete_cf(handle(cf), key),
            }
        }
    }
}

struct Pending {
    batch: Batch,
    done: oneshot::Sender<Result<(), String>>,
}

/// Handle to the committer thread. Dropping it lets the thread finish the queued groups
/// and waits for it, so the database is closed when the store is.
#[derive(Debug)]
pub struct Committer {
    queue: Option<mpsc::Sender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Committer {
    /// Starts the committer thread writing to `db` with `write_opts`.
    pub fn start(db: Arc<DB>, write_opts: WriteOptions) -> Self {
        let (queue, pending) = mpsc::channel::<Pending>();
        let thread = std::thread::Builder::new()
            .name("memd-commit".into())
            .spawn(move || run(&db, &pending, &write_opts))
            .expect("spawning the committer thread");
        Self {
            queue: Some(queue),
            thread: Some(thread),
        }
    }

    /// Commits `batch` with the next group; returns once it is durable (per `sync_writes`).
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .as_ref()
            .expect("the queue lives until drop")
            .send(Pending { batch, done })
            .map_err(|_| ServiceError::Internal("committer thread is gone".into()))?;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(ServiceError::Internal(format!(
                "rocksdb group write: {err}"
            ))),
            Err(_) => Err(ServiceError::Internal("committer dropped a request".into())),
        }
    }
}

fn run(db: &DB, pending: &mpsc::Receiver<Pending>, write_opts: &WriteOptions) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut write = WriteBatch::default();
        let mut waiters = Vec::with_capacity(group.len());
        for Pending { batch, done } in group {
            batch.apply(db, &mut write);
            waiters.push(done);
        }
        let outcome = db
            .write_opt(write, write_opts)
            .map_err(|err| err.to_string());
        for done in waiters {
            // A waiter that gave up (cancelled request) just misses the news.
            let _ = done.send(outcome.clone());
        }
    }
}
