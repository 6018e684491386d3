//! Actors: listing and erasure. An actor exists from its first event until `DeleteActor`.

use super::codec::{self, StoredActor};
use super::keys::{self, cf};
use super::{Store, page};
use crate::error::{Result, ServiceError};
use rocksdb::WriteBatch;

/// An actor as listings return it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorView {
    pub actor_id: String,
    pub create_us: u64,
}

impl Store {
    /// One page of a memory's actors that `visible` admits, in actor id order. The policy
    /// filter runs inside the scan, so a page is never short because of hidden actors, and
    /// the scan covers only actor ids starting with `id_prefix` (the literal part the key's
    /// globs share), so a tenant's listing does not walk every other tenant's actors.
    pub fn list_actors(
        &self,
        memory_id: &str,
        page_size: usize,
        page_token: &str,
        id_prefix: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(Vec<ActorView>, String)> {
        self.memory(memory_id)?;
        let prefix = keys::memory_prefix(memory_id);
        let scope = [b"actors\0".as_slice(), &prefix].concat();
        let narrowed = [prefix.as_slice(), id_prefix.as_bytes()].concat();
        let start = match page::decode("page_token", page_token, &scope)? {
            Some(cursor) => [prefix.as_slice(), &cursor, &[0, 0]]
                .concat()
                .max(narrowed.clone()),
            None => narrowed.clone(),
        };
        let end = keys::prefix_successor(&narrowed).min(keys::prefix_end(&prefix));
        let mut actors: Vec<ActorView> = Vec::new();
        for item in self.range(cf::ACTORS, &start, &end, false) {
            let (key, value) = item?;
            let (_, actor_id) = keys::decode_actor_key(&key)?;
            if !visible(actor_id) {
                continue;
            }
            if actors.len() == page_size {
                let last = &actors[page_size - 1].actor_id;
                let token = page::encode(&scope, last.as_bytes());
                return Ok((actors, token));
            }
            let stored: StoredActor = codec::decode(&value)?;
            actors.push(ActorView {
                actor_id: actor_id.to_string(),
                create_us: stored.create_us,
            });
        }
        Ok((actors, String::new()))
    }

    /// Erases everything stored for an actor: events, sessions, branches, tokens, pending
    /// extraction jobs, and the long-term records drawn from its events with their history.
    pub fn delete_actor(&self, memory_id: &str, actor_id: &str) -> Result<()> {
        let _memory_gate = self.memory_gate.blocking_read();
        self.memory(memory_id)?;
        let _actor_gate = self.actor_gate(memory_id, actor_id).blocking_write();
        let prefix = keys::actor_prefix(memory_id, actor_id);
        if self.get(cf::ACTORS, &prefix)?.is_none() {
            return Err(ServiceError::not_found(format!("actor {actor_id}")));
        }
        let end = keys::prefix_end(&prefix);
        let mut batch = WriteBatch::default();
        // The actor's past change log entries go; the DELETED notices of its records stay
        // (until retention), so that mirrors fed by WatchMemoryRecords delete their copies.
        self.erase_actor_changes(&mut batch, memory_id, actor_id)?;
        self.erase_actor_records(&mut batch, memory_id, actor_id)?;
        self.log_actor_erased(&mut batch, memory_id, actor_id);
        for name in cf::ACTOR_SCOPED {
            batch.delete_range_cf(self.cf(name), &prefix, &end);
        }
        // Session timers and queue entries are keyed by time; they find their session or job
        // gone and drop out.
        self.commit(batch)?;
        self.bump_records_generation();
        Ok(())
    }
}
