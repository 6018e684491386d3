//! Records written through the API (`BatchCreate/Update/DeleteMemoryRecords`): one
//! serialised, atomic batch per call, each item succeeding or failing on its own, and the
//! client tokens that make a create retryable, scoped to the record's actor or namespace.

use super::Store;
use super::codec::{self, StoredRecord};
use super::keys::{self, cf};
use super::records::{Kind, readable};
use crate::error::{Result, ServiceError};
use rocksdb::WriteBatch;
use std::collections::BTreeMap;

/// A record to create through the API, validated.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub record: StoredRecord,
    /// SHA-256 of the item without its token (compared when the token is reused).
    pub request_hash: Vec<u8>,
}

/// A change to a live record through the API, validated.
#[derive(Debug, Clone)]
pub struct RecordEdit {
    pub record_id: String,
    pub text: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub valid_from_us: Option<u64>,
}

/// What one item of a batch call came to: the record id, or why it failed.
pub type ItemResult = Result<String>;

impl Store {
    /// The frame of every batch call on records: serialised API writes, items that failed
    /// validation passed through unchanged, the others applied by `apply` to one batch that
    /// commits atomically (`apply`'s own error aborts the whole call: storage failed).
    fn record_writes<T>(
        &self,
        memory_id: &str,
        items: Vec<Result<T>>,
        mut apply: impl FnMut(&mut WriteBatch, T) -> Result<ItemResult>,
    ) -> Result<Vec<ItemResult>> {
        let _memory_gate = self.memory_gate.blocking_read();
        self.memory(memory_id)?; // under the gate: never into a deleted memory
        let _writes = self
            .record_api_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            results.push(match item {
                Ok(item) => apply(&mut batch, item)?,
                Err(invalid) => Err(invalid),
            });
        }
        self.commit(batch)?;
        self.bump_records_generation();
        Ok(results)
    }

    /// Moves record tokens stored before they were scoped (`r/ memory_id \0 token`) under
    /// their record's scope, once, at open; a token whose record is gone is dropped. Returns
    /// how many it moved.
    pub(super) fn scope_legacy_record_tokens(&self) -> Result<usize> {
        let mut batch = WriteBatch::default();
        let mut moved = 0;
        let (start, end) = keys::all_record_tokens();
        for item in self.range(cf::META, &start, &end, false) {
            let (key, value) = item?;
            let Some((memory_id, token_text)) = keys::legacy_record_token(&key) else {
                continue;
            };
            let token: codec::StoredToken = codec::decode(&value)?;
            let record_id = String::from_utf8_lossy(&token.target).into_owned();
            let record: Option<StoredRecord> =
                self.get_decoded(cf::RECORDS, &keys::record_key(memory_id, &record_id))?;
            if let Some(record) = record {
                let scope = keys::record_token_scope(&record.actor_id, &record.namespace);
                batch.put_cf(
                    self.cf(cf::META),
                    keys::record_token_key(memory_id, &scope, token_text),
                    &value,
                );
                moved += 1;
            }
            batch.delete_cf(self.cf(cf::META), &key);
        }
        if !batch.is_empty() {
            self.commit(batch)?;
        }
        Ok(moved)
    }

    /// Creates records written through the API in one batch. Items that failed validation
    /// come in as errors and go out unchanged; each other item succeeds or fails on its own.
    pub fn create_records(
        &self,
        memory_id: &str,
        items: Vec<Result<NewRecord>>,
    ) -> Result<Vec<ItemResult>> {
        let mut tokens_in_call: BTreeMap<Vec<u8>, (Vec<u8>, String)> = BTreeMap::new();
        self.record_writes(memory_id, items, |batch, new| {
            let record = new.record;
            if !record.client_token.is_empty() {
                let scope = keys::record_token_scope(&record.actor_id, &record.namespace);
                let key = keys::record_token_key(memory_id, &scope, &record.client_token);
                let earlier = match tokens_in_call.get(&key) {
                    Some((hash, id)) => Some((hash.clone(), id.clone())),
                    None => self
                        .get_decoded::<codec::StoredToken>(cf::META, &key)?
                        .map(|t| {
                            (
                                t.request_hash,
                                String::from_utf8_lossy(&t.target).into_owned(),
                            )
                        }),
                };
                if let Some((hash, id)) = earlier {
                    return Ok(if hash == new.request_hash {
                        Ok(id)
                    } else {
                        Err(ServiceError::AlreadyExists(format!(
                            "client_token {} was used for a different record",
                            record.client_token
                        )))
                    });
                }
                let token = codec::StoredToken {
                    request_hash: new.request_hash.clone(),
                    target: record.record_id.as_bytes().to_vec(),
                    create_us: record.create_us,
                };
                batch.put_cf(self.cf(cf::META), &key, codec::encode(&token));
                tokens_in_call.insert(key, (new.request_hash, record.record_id.clone()));
            }
            self.put_record(batch, memory_id, &record, true, Some(Kind::Created));
            Ok(Ok(record.record_id))
        })
    }

    /// Rewrites live records the caller may see (`visible`); earlier versions go to history.
    pub fn update_records(
        &self,
        memory_id: &str,
        items: Vec<Result<RecordEdit>>,
        now_us: u64,
        visible: impl Fn(&StoredRecord) -> bool,
    ) -> Result<Vec<ItemResult>> {
        let mut touched: BTreeMap<String, StoredRecord> = BTreeMap::new();
        self.record_writes(memory_id, items, |batch, edit| {
            let current = match touched.get(&edit.record_id) {
                Some(record) => Some(record.clone()),
                None => self.stored_record(memory_id, &edit.record_id)?,
            };
            let Some(old) = current.filter(|r| readable(r, now_us) && visible(r)) else {
                return Ok(Err(ServiceError::not_found(format!(
                    "memory record {}",
                    edit.record_id
                ))));
            };
            let mut new = old.clone();
            if let Some(text) = edit.text {
                new.text = text;
            }
            if let Some(metadata) = edit.metadata {
                new.metadata = metadata;
            }
            if let Some(valid_from) = edit.valid_from_us {
                new.valid_from_us = valid_from;
            }
            new.version += 1;
            new.update_us = now_us;
            self.archive(batch, memory_id, &old);
            self.put_record(batch, memory_id, &new, true, Some(Kind::Updated));
            touched.insert(new.record_id.clone(), new);
            Ok(Ok(edit.record_id))
        })
    }

    /// Deletes records the caller may see, with their history and index entries.
    pub fn delete_records(
        &self,
        memory_id: &str,
        ids: Vec<Result<String>>,
        now_us: u64,
        visible: impl Fn(&StoredRecord) -> bool,
    ) -> Result<Vec<ItemResult>> {
        let mut deleted = std::collections::BTreeSet::new();
        self.record_writes(memory_id, ids, |batch, id| {
            let record = self
                .stored_record(memory_id, &id)?
                .filter(|r| r.expire_us == 0 || r.expire_us > now_us)
                .filter(|r| visible(r));
            Ok(match record {
                Some(record) if deleted.insert(id.clone()) => {
                    self.erase_record(batch, memory_id, &record, Kind::Deleted);
                    Ok(id)
                }
                _ => Err(ServiceError::not_found(format!("memory record {id}"))),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreOptions;
    use super::super::records::tests::memory_m1;
    use super::super::test_support::temp_store;
    use super::*;

    #[test]
    fn record_tokens_from_before_scoping_move_under_their_record_at_open() {
        let (dir, store) = temp_store();
        let now = memory_m1(&store);
        let record = StoredRecord {
            record_id: "r-1".into(),
            namespace: "/ns".into(),
            text: "Ann likes tea.".into(),
            actor_id: "acme/ann".into(),
            client_token: "t-1".into(),
            version: 1,
            create_us: now,
            update_us: now,
            ..Default::default()
        };
        let hash = vec![7u8; 32];
        store
            .create_records(
                "m-1",
                vec![Ok(NewRecord {
                    record: record.clone(),
                    request_hash: hash.clone(),
                })],
            )
            .unwrap();
        // Rewrite its token the way earlier versions stored it: per memory, unscoped.
        let scoped =
            keys::record_token_key("m-1", &keys::record_token_scope("acme/ann", "/ns"), "t-1");
        let token = store.get(cf::META, &scoped).unwrap().expect("token stored");
        let legacy = [keys::record_tokens_prefix("m-1"), b"t-1".to_vec()].concat();
        assert_eq!(keys::legacy_record_token(&legacy), Some(("m-1", "t-1")));
        assert_eq!(keys::legacy_record_token(&scoped), None);
        let mut batch = WriteBatch::default();
        batch.delete_cf(store.cf(cf::META), &scoped);
        batch.put_cf(store.cf(cf::META), &legacy, &token);
        store.commit(batch).unwrap();
        drop(store);

        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert!(store.get(cf::META, &legacy).unwrap().is_none());
        assert_eq!(store.get(cf::META, &scoped).unwrap(), Some(token));
        // A retry after the upgrade lands on the same record, as before it.
        let retry = store
            .create_records(
                "m-1",
                vec![Ok(NewRecord {
                    record: StoredRecord {
                        record_id: "r-other".into(),
                        ..record
                    },
                    request_hash: hash,
                })],
            )
            .unwrap();
        assert_eq!(retry[0].as_ref().unwrap(), "r-1");
        assert_eq!(store.scope_legacy_record_tokens().unwrap(), 0);
    }
}
