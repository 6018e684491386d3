//! Memories: the top-level containers. Their configurations are few and read on every
//! request, so the store keeps all of them in memory and writes through.

use super::codec::{self, StoredMemory, StoredToken};
use super::keys::{self, cf};
use super::{Store, page, read, write};
use crate::error::{Result, ServiceError};
use rocksdb::WriteBatch;
use std::sync::Arc;

impl Store {
    pub(super) fn load_memories(&self) -> Result<()> {
        let mut map = write(&self.memories);
        for item in self.range(cf::MEMORIES, &[], &[0xff], false) {
            let (_, value) = item?;
            let memory: StoredMemory = codec::decode(&value)?;
            self.expiry
                .set(&memory.memory_id, Some(memory.event_expiry_days));
            map.insert(memory.memory_id.clone(), Arc::new(memory));
        }
        Ok(())
    }

    /// The memory `memory_id`, or NOT_FOUND.
    pub fn memory(&self, memory_id: &str) -> Result<Arc<StoredMemory>> {
        read(&self.memories)
            .get(memory_id)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("memory {memory_id}")))
    }

    /// Creates `memory`. With a client token, a retry of the same request returns the memory
    /// created first, and reuse with another request is ALREADY_EXISTS.
    pub fn create_memory(
        &self,
        memory: StoredMemory,
        client_token: &str,
        request_hash: Vec<u8>,
    ) -> Result<Arc<StoredMemory>> {
        // Memory creation is rare: one global section keeps token check and write atomic.
        let _gate = self.memory_gate.blocking_write();
        let mut batch = WriteBatch::default();
        if !client_token.is_empty() {
            let token_key = keys::memory_token_key(client_token);
            if let Some(token) = self.get_decoded::<StoredToken>(cf::META, &token_key)? {
                let existing = String::from_utf8_lossy(&token.target).into_owned();
                match (token.request_hash == request_hash, self.memory(&existing)) {
                    (true, Ok(found)) => return Ok(found),
                    (false, Ok(_)) => {
                        return Err(ServiceError::AlreadyExists(
                            "client_token was already used with a different request".into(),
                        ));
                    }
                    // The memory was deleted since: the token is free again.
                    (_, Err(_)) => {}
                }
            }
            let token = StoredToken {
                request_hash,
                target: memory.memory_id.as_bytes().to_vec(),
                create_us: memory.create_us,
            };
            batch.put_cf(self.cf(cf::META), token_key, codec::encode(&token));
        }
        if self
            .get(cf::MEMORIES, memory.memory_id.as_bytes())?
            .is_some()
        {
            return Err(ServiceError::AlreadyExists(format!(
                "memory {}",
                memory.memory_id
            )));
        }
        batch.put_cf(
            self.cf(cf::MEMORIES),
            memory.memory_id.as_bytes(),
            codec::encode(&memory),
        );
        self.commit(batch)?;
        Ok(self.cache_memory(memory))
    }

    fn cache_memory(&self, memory: StoredMemory) -> Arc<StoredMemory> {
        let memory = Arc::new(memory);
        self.expiry
            .set(&memory.memory_id, Some(memory.event_expiry_days));
        write(&self.memories).insert(memory.memory_id.clone(), memory.clone());
        memory
    }

    /// Replaces a memory's configuration with what `change` makes of the current one.
    pub fn update_memory(
        &self,
        memory_id: &str,
        change: impl FnOnce(&mut StoredMemory) -> Result<()>,
    ) -> Result<Arc<StoredMemory>> {
        let _gate = self.memory_gate.blocking_write();
        let mut memory = (*self.memory(memory_id)?).clone();
        change(&mut memory)?;
        self.space.track(self.db.put_cf_opt(
            self.cf(cf::MEMORIES),
            memory_id.as_bytes(),
            codec::encode(&memory),
            &self.write_opts,
        ))?;
        Ok(self.cache_memory(memory))
    }

    /// Deletes a memory and everything under it.
    pub fn delete_memory(&self, memory_id: &str) -> Result<()> {
        let _gate = self.memory_gate.blocking_write();
        self.memory(memory_id)?;
        let prefix = keys::memory_prefix(memory_id);
        let end = keys::prefix_end(&prefix);
        let mut batch = WriteBatch::default();
        for name in cf::MEMORY_SCOPED {
            batch.delete_range_cf(self.cf(name), &prefix, &end);
        }
        self.unqueue_prefix(&mut batch, &prefix)?;
        // Indexes drop the whole memory (its records go by range delete, not one by one).
        self.log_record_change(&mut batch, memory_id, "");
        let tokens = keys::record_tokens_prefix(memory_id);
        batch.delete_range_cf(self.cf(cf::META), &tokens, &keys::prefix_end(&tokens));
        batch.delete_cf(self.cf(cf::MEMORIES), memory_id.as_bytes());
        self.commit(batch)?;
        self.bump_records_generation();
        write(&self.memories).remove(memory_id);
        self.expiry.set(memory_id, None);
        Ok(())
    }

    /// One page of the memories `visible` admits, in id order.
    pub fn list_memories(
        &self,
        page_size: usize,
        page_token: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(Vec<Arc<StoredMemory>>, String)> {
        const SCOPE: &[u8] = b"memories";
        let after = page::decode("page_token", page_token, SCOPE)?;
        let map = read(&self.memories);
        let mut ids: Vec<&String> = map
            .keys()
            .filter(|id| after.as_deref().is_none_or(|after| id.as_bytes() > after))
            .filter(|id| visible(id))
            .collect();
        ids.sort_unstable();
        let next = if ids.len() > page_size {
            ids.truncate(page_size);
            page::encode(SCOPE, ids[page_size - 1].as_bytes())
        } else {
            String::new()
        };
        Ok((ids.into_iter().map(|id| map[id].clone()).collect(), next))
    }
}
