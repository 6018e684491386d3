//! Group commit for the append path. Handlers prepare a request's changes as a [`Batch`] and
//! await its commit; one committer thread drains whatever is queued, writes it as a single
//! RocksDB `WriteBatch` (one WAL write, and with `sync_writes` one fsync, for the whole group)
//! and wakes every waiter with the shared outcome. Waiting costs no thread, and RocksDB sees
//! one writer instead of one per in-flight request, which on a small machine is the
//! difference between doing work and switching threads (see docs/benchmarks.md).
//!
//! Without `sync_writes`, when no write is in progress (the committer idle, nobody writing
//! inline), a request writes its own batch on its own thread instead: the hop to the
//! committer and back (two thread wake-ups) was most of an append's latency, and with no
//! fsync to share a group saves little. At most one request writes inline at a time, so a
//! write stall blocks at most one runtime thread; everyone arriving meanwhile queues for the
//! next group. With `sync_writes` every write goes through the committer: there the shared
//! fsync is the point (measured: inline writes cost a fifth of c=64 throughput).
//!
//! A group is atomic as a whole: on a write error every request in it fails and none of them
//! is written.

use super::space::DiskSpace;
use crate::error::{Result, ServiceError};
use rocksdb::{DB, WriteBatch, WriteOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    done: oneshot::Sender<Result<(), rocksdb::Error>>,
}

/// Handle to the committer thread. Dropping it lets the thread finish the queued groups
/// and waits for it, so the database is closed when the store is.
#[derive(Debug)]
pub struct Committer {
    queue: Option<mpsc::Sender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
    db: Arc<DB>,
    sync: bool,
    /// Writes in progress (the committer's group and an inline write).
    writing: Arc<AtomicUsize>,
    space: Arc<DiskSpace>,
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
    /// Starts the committer thread writing to `db`, with an fsync per write when `sync`;
    /// outcomes are noted in `space`.
    pub fn start(db: Arc<DB>, sync: bool, space: Arc<DiskSpace>) -> Self {
        let (queue, pending) = mpsc::channel::<Pending>();
        let writing = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (db, writing) = (db.clone(), writing.clone());
            let opts = write_options(sync);
            std::thread::Builder::new()
                .name("memd-commit".into())
                .spawn(move || run(&db, &pending, &opts, &writing))
                .expect("spawning the committer thread")
        };
        Self {
            queue: Some(queue),
            thread: Some(thread),
            db,
            sync,
            writing,
            space,
        }
    }

    /// Commits `batch` with the next group; returns once it is durable (per `sync_writes`).
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        if !self.sync
            && self
                .writing
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let mut write = WriteBatch::default();
            batch.apply(&self.db, &mut write);
            let outcome = self.db.write_opt(write, &write_options(self.sync));
            self.writing.fetch_sub(1, Ordering::AcqRel);
            return self.space.track(outcome);
        }
        let (done, outcome) = oneshot::channel();
        self.queue
            .as_ref()
            .expect("the queue lives until drop")
            .send(Pending { batch, done })
            .map_err(|_| ServiceError::Internal("committer thread is gone".into()))?;
        match outcome.await {
            Ok(outcome) => self.space.track(outcome),
            Err(_) => Err(ServiceError::Internal("committer dropped a request".into())),
        }
    }
}

fn write_options(sync: bool) -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(sync);
    opts
}

fn run(
    db: &DB,
    pending: &mpsc::Receiver<Pending>,
    write_opts: &WriteOptions,
    writing: &AtomicUsize,
) {
    while let Ok(first) = pending.recv() {
        writing.fetch_add(1, Ordering::AcqRel);
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
        let outcome = db.write_opt(write, write_opts);
        writing.fetch_sub(1, Ordering::AcqRel);
        for done in waiters {
            // A waiter that gave up (cancelled request) just misses the news.
            let _ = done.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent commits, some written inline and some queued for a group (without
    /// `sync_writes`), or all grouped (with it): every one lands, each exactly as given.
    #[test]
    fn concurrent_commits_all_land_whichever_way_they_are_written() {
        for sync in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = Arc::new(DB::open_cf(&opts, dir.path(), ["t"]).unwrap());
            let committer = Arc::new(Committer::start(db.clone(), sync, Arc::default()));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .build()
                .unwrap();
            runtime.block_on(async {
                let tasks: Vec<_> = (0..400u32)
                    .map(|i| {
                        let committer = committer.clone();
                        tokio::spawn(async move {
                            let mut batch = Batch::default();
                            batch.put("t", i.to_be_bytes(), format!("value {i}"));
                            committer.commit(batch).await
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap().unwrap();
                }
            });
            for i in 0..400u32 {
                let value = db
                    .get_cf(db.cf_handle("t").unwrap(), i.to_be_bytes())
                    .unwrap();
                assert_eq!(value.as_deref(), Some(format!("value {i}").as_bytes()));
            }
            assert_eq!(committer.writing.load(Ordering::Acquire), 0);
        }
    }
}
